// One rank of benchmarks/ddp_cpu.ts's all-reduce measurement: all-reduces a gradient-sized buffer over Gloo
// and reports the median time. Started by the launcher with torchrun's environment.
import { ProcessGroup, processGroupOptionsFromEnv } from "../ffi/process_group.ts";
import { median } from "./common.ts";

const [bytes, reps] = Deno.args.map(Number);
using group = await ProcessGroup.create(processGroupOptionsFromEnv()!);
// Doubles carry the same number of bytes as the fp32 gradients DDP reduces.
const values = new Float64Array(Math.ceil(bytes / 8));
const times: number[] = [];
for (let i = 0; i < reps + 2; i++) {
  await group.barrier();
  const t = performance.now();
  await group.allReduceSum(values);
  if (i >= 2) times.push(performance.now() - t);
}
if (group.rank === 0) console.log(JSON.stringify({ allreduce_ms: median(times) }));
