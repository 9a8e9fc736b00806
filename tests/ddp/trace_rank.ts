// One rank of the tracing tests (ffi/trace_test.ts): joins the group from torchrun's environment, optionally
// turns tracing on before DDP is attached, trains on its slice of each global batch with small buckets (so
// there are several), and writes its final parameters, every step's timing and every bucket event it saw.
import { ProcessGroup, processGroupOptionsFromEnv } from "../../ffi/process_group.ts";
import { type BucketEvent, DistilBertClassifier, type StepTiming } from "../../ffi/model.ts";
import { writeSafetensors } from "../../weights/safetensors.ts";
import { makeBatch, sliceRows, tinyConfig } from "../helpers.ts";

const spec = JSON.parse(Deno.args[0]) as {
  steps: number;
  perRank: number;
  seqLen: number;
  lr: number;
  accumulate: number;
  trace: boolean;
  out: string;
};
const options = processGroupOptionsFromEnv();
if (!options) throw new Error("WORLD_SIZE is not set");
const { rank, worldSize } = options;
const config = tinyConfig({ dropout: 0, attention_dropout: 0, seq_classif_dropout: 0 });

using model = await DistilBertClassifier.create(config, { device: "cpu", seed: 100 + rank });
model.configureOptimizer({ weightDecay: 0.01 });
if (spec.trace) model.enableTracing();
using group = await ProcessGroup.create(options);
// About 160 KiB of gradients in buckets of at most 40 KiB (the first 10 KiB): several buckets per step.
await group.attachDdp(model, { bucketCapMb: 40 / 1024, firstBucketCapMb: 10 / 1024 });
// Turning tracing on after DDP was attached without the hook is refused (the Reducer takes a hook once).
let lateEnable = "accepted";
if (!spec.trace) {
  try {
    model.enableTracing();
  } catch (err) {
    lateEnable = (err as Error).message;
  }
}
const micro: { step: number; micro: number; sync: boolean; timing: StepTiming; buckets: BucketEvent[] }[] =
  [];
for (let step = 0; step < spec.steps; step++) {
  const global = makeBatch(config, spec.perRank * worldSize * spec.accumulate, spec.seqLen, 1000 + step);
  for (let m = 0; m < spec.accumulate; m++) {
    const first = (m * worldSize + rank) * spec.perRank;
    const sync = m === spec.accumulate - 1;
    const result = await model.trainStepAsync(sliceRows(global, first, spec.perRank), {
      lr: spec.lr,
      lossScale: 1 / spec.accumulate,
      apply: sync,
    });
    micro.push({ step, micro: m, sync, timing: result.timing, buckets: model.drainTrace() });
  }
}
await group.barrier();
await Deno.writeFile(`${spec.out}.rank${rank}.safetensors`, writeSafetensors(model.stateDict()));
await Deno.writeTextFile(
  `${spec.out}.rank${rank}.json`,
  JSON.stringify({ parameters: model.parameterCount(), lateEnable, micro }),
);
