// One rank of the DDP tests: joins the group from torchrun's environment, wraps a tiny model in DDP and
// trains on its slice of each global batch, then writes what it saw. Driven by ffi/process_group_test.ts.
import { ProcessGroup, processGroupOptionsFromEnv } from "../../ffi/process_group.ts";
import { DistilBertClassifier } from "../../ffi/model.ts";
import { writeSafetensors } from "../../weights/safetensors.ts";
import { makeBatch, sliceRows, tinyConfig } from "../helpers.ts";

const spec = JSON.parse(Deno.args[0]) as {
  steps: number;
  perRank: number;
  seqLen: number;
  lr: number;
  accumulate: number;
  out: string;
};
const options = processGroupOptionsFromEnv();
if (!options) throw new Error("WORLD_SIZE is not set");
const { rank, worldSize } = options;
const config = tinyConfig({ dropout: 0, attention_dropout: 0, seq_classif_dropout: 0 });

/** A cheap fingerprint of all parameters, to compare ranks after every step. */
function checksum(model: DistilBertClassifier): number {
  let sum = 0;
  for (const t of model.stateDict().values()) {
    const v = new Float32Array(t.data.buffer, t.data.byteOffset, t.data.byteLength / 4);
    for (let i = 0; i < v.length; i++) sum += v[i] * ((i % 7) + 1);
  }
  return sum;
}

// Each rank seeds differently on purpose: DDP must start them from rank 0's weights anyway.
using model = await DistilBertClassifier.create(config, { device: "cpu", seed: 100 + rank });
model.configureOptimizer({ weightDecay: 0.01 });
using group = await ProcessGroup.create(options);
await group.attachDdp(model);
const checksums = [checksum(model)];
const losses: number[] = [];
for (let step = 0; step < spec.steps; step++) {
  // The global batch of this step is the same on every rank; each trains on its own rows of it.
  const global = makeBatch(config, spec.perRank * worldSize * spec.accumulate, spec.seqLen, 1000 + step);
  for (let micro = 0; micro < spec.accumulate; micro++) {
    const first = (micro * worldSize + rank) * spec.perRank;
    const result = await model.trainStepAsync(sliceRows(global, first, spec.perRank), {
      lr: spec.lr,
      lossScale: 1 / spec.accumulate,
      apply: micro === spec.accumulate - 1,
    });
    losses.push(result.loss);
  }
  checksums.push(checksum(model));
}
// Metrics: every rank contributes its sums, every rank gets the global ones.
const summed = await group.allReduceSum(new Float64Array([rank + 1, 1]));
await group.barrier();
await Deno.writeFile(`${spec.out}.rank${rank}.safetensors`, writeSafetensors(model.stateDict()));
await Deno.writeTextFile(
  `${spec.out}.rank${rank}.json`,
  JSON.stringify({ checksums, losses, summed: [...summed] }),
);
