import assert from "node:assert/strict";
import { pythonJson as python } from "../tests/helpers.ts";
import {
  constantScheduleWithWarmup,
  cosineScheduleWithWarmup,
  linearScheduleWithWarmup,
  makeSchedule,
  type ScheduleName,
  warmupSteps,
} from "./schedule.ts";

interface Case {
  name: ScheduleName;
  baseLr: number;
  warmup: number;
  total: number;
  numCycles?: number;
}

const STEPS = 50;

// Drives the real transformers schedules through torch's LambdaLR exactly as the Trainer does: read the lr,
// optimizer.step(), scheduler.step(). Steps run past `total` to cover the tail (0, or the cosine climbing back).
const REFERENCE = `
import json, sys, types, torch
from transformers import get_scheduler
from transformers.training_args import TrainingArguments
req = json.load(sys.stdin)
out = {"lrs": [], "warmup": []}
for c in req["cases"]:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=c["baseLr"])
    kwargs = {"num_cycles": c["numCycles"]} if "numCycles" in c else None
    sched = get_scheduler(c["name"], opt, num_warmup_steps=c["warmup"], num_training_steps=c["total"],
                          scheduler_specific_kwargs=kwargs)
    lrs = []
    for _ in range(req["steps"]):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    out["lrs"].append(lrs)
for total, w in req["warmup"]:
    out["warmup"].append(TrainingArguments.get_warmup_steps(types.SimpleNamespace(warmup_steps=w), total))
print(json.dumps(out))
`;

const CASES: Case[] = [
  { name: "linear", baseLr: 5e-5, warmup: 0, total: 40 },
  { name: "linear", baseLr: 5e-5, warmup: 6, total: 40 },
  { name: "linear", baseLr: 2e-5, warmup: 1, total: 50 },
  { name: "linear", baseLr: 3e-4, warmup: 30, total: 30 }, // warmup == total: max(1, 0) guards the division
  { name: "linear", baseLr: 1e-3, warmup: 45, total: 30 }, // warmup > total: decay factor is negative, floored
  { name: "linear", baseLr: 5e-5, warmup: 0, total: 0 },
  { name: "linear", baseLr: 5e-5, warmup: 0, total: 1 },
  { name: "linear", baseLr: 0.1, warmup: 7, total: 13 },
  { name: "cosine", baseLr: 5e-5, warmup: 0, total: 40 },
  { name: "cosine", baseLr: 5e-5, warmup: 5, total: 37 },
  { name: "cosine", baseLr: 1e-4, warmup: 20, total: 20 },
  { name: "cosine", baseLr: 1e-4, warmup: 3, total: 30, numCycles: 1.5 },
  { name: "constant", baseLr: 5e-5, warmup: 10, total: 40 },
  { name: "constant_with_warmup", baseLr: 5e-5, warmup: 10, total: 40 },
  { name: "constant_with_warmup", baseLr: 5e-5, warmup: 0, total: 40 },
];

// (total, warmup) pairs for get_warmup_steps; 100 * 0.07 is 7.000000000000001 in doubles, so ceil gives 8.
const WARMUPS: [number, number][] = [
  [1000, 0],
  [1000, 0.1],
  [30, 0.1],
  [100, 0.07],
  [7, 0.5],
  [999, 0.06],
  [1, 0.999],
  [100, 1],
  [100, 12.7],
  [0, 0.5],
];

function relErr(a: number, b: number): number {
  if (a === b) return 0;
  return Math.abs(a - b) / Math.max(Math.abs(a), Math.abs(b));
}

Deno.test("schedules equal transformers' get_scheduler + LambdaLR, step by step", async () => {
  const ref = await python(REFERENCE, { cases: CASES, warmup: WARMUPS, steps: STEPS }) as {
    lrs: number[][];
    warmup: number[];
  };
  let worst = 0;
  CASES.forEach((c, i) => {
    const schedule = makeSchedule(c.name, {
      baseLr: c.baseLr,
      warmupSteps: c.warmup,
      totalSteps: c.total,
      numCycles: c.numCycles,
    });
    for (let k = 0; k < STEPS; k++) {
      const ours = schedule(k);
      const theirs = ref.lrs[i][k];
      // Near the floor of a cosine, 0.5 * (1 + cos) cancels; the absolute slack covers libm's last ulp there.
      const ok = relErr(ours, theirs) <= 1e-12 || Math.abs(ours - theirs) <= 1e-16 * c.baseLr;
      assert.ok(ok, `${JSON.stringify(c)} step ${k}: ours ${ours} transformers ${theirs}`);
      worst = Math.max(worst, relErr(ours, theirs));
      // Linear and constant are the same float operations in the same order: bit-identical.
      if (c.name !== "cosine") assert.equal(ours, theirs, `${JSON.stringify(c)} step ${k}`);
    }
  });
  assert.deepEqual(WARMUPS.map(([total, w]) => warmupSteps(total, w)), ref.warmup);
  assert.ok(worst <= 1e-12, `worst relative error ${worst}`);
});

Deno.test("the LambdaLR off-by-one: the first warmup update runs at lr 0, the last decay update above 0", () => {
  const s = linearScheduleWithWarmup({ baseLr: 1, warmupSteps: 4, totalSteps: 10 });
  assert.deepEqual(
    Array.from({ length: 11 }, (_, k) => s(k)),
    [0, 0.25, 0.5, 0.75, 1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0],
  );
  const c = cosineScheduleWithWarmup({ baseLr: 2, warmupSteps: 0, totalSteps: 4 });
  assert.equal(c(0), 2);
  assert.ok(Math.abs(c(2) - 1) < 1e-15);
  assert.equal(constantScheduleWithWarmup({ baseLr: 3, warmupSteps: 2 })(1), 1.5);
});

Deno.test("warmupSteps: ratios round up, counts truncate", () => {
  assert.equal(warmupSteps(1000, 0.1), 100);
  assert.equal(warmupSteps(30, 0.1), 3);
  assert.equal(warmupSteps(100, 0.07), 8); // 100 * 0.07 = 7.000000000000001 in doubles, as in Python
  assert.equal(warmupSteps(10, 0.01), 1);
  assert.equal(warmupSteps(10, 5.9), 5);
  assert.equal(warmupSteps(10, 0), 0);
  assert.throws(() => warmupSteps(10, -0.1), RangeError);
  assert.throws(() => warmupSteps(10.5, 0.1), RangeError);
});

Deno.test("bad arguments are refused", () => {
  assert.throws(() => linearScheduleWithWarmup({ baseLr: 1, warmupSteps: 1.5, totalSteps: 10 }), RangeError);
  assert.throws(() => linearScheduleWithWarmup({ baseLr: NaN, warmupSteps: 1, totalSteps: 10 }), RangeError);
  assert.throws(() => linearScheduleWithWarmup({ baseLr: 1, warmupSteps: 0, totalSteps: -1 }), RangeError);
  const s = linearScheduleWithWarmup({ baseLr: 1, warmupSteps: 0, totalSteps: 10 });
  assert.throws(() => s(-1), RangeError);
  assert.throws(() => s(0.5), RangeError);
  assert.throws(() =>
    makeSchedule("polynomial" as ScheduleName, { baseLr: 1, warmupSteps: 0, totalSteps: 1 })
  );
});
