// The launcher's flag table: what parseLaunchArgs in tests/e2e/launch_test.ts does not already pin down.
import assert from "node:assert/strict";
import { UsageError } from "../cli/args.ts";
import { LAUNCH_USAGE, parseLaunchArgs } from "./options.ts";

Deno.test("options: everything after the first -- is train's, untouched, --help included", () => {
  const opts = parseLaunchArgs(["--cpu", "--", "--help", "--gpus", "9", "--"]);
  assert.deepEqual(opts?.args, ["--help", "--gpus", "9", "--"]);
  assert.equal(opts?.nprocPerNode, undefined);
  assert.equal(opts?.cpu, true);
  assert.deepEqual(parseLaunchArgs([])?.args, []);
  assert.equal(parseLaunchArgs(["-h", "--", "--epochs", "1"]), null);
});

Deno.test("options: errors name the flag as it was spelled", () => {
  const message = (args: string[]) => {
    try {
      parseLaunchArgs(args);
    } catch (err) {
      assert.ok(err instanceof UsageError, String(err));
      return err.message;
    }
    assert.fail(`${args.join(" ")} was accepted`);
  };
  assert.match(message(["--master_port", "70000"]), /^--master_port must be in \[1, 65535\], got 70000$/);
  assert.match(message(["--gpus", "two"]), /^--gpus must be a positive integer, got "two"$/);
  assert.match(message(["--nproc-per-node", "2", "--nproc_per_node", "3"]), /conflicting values/);
  assert.match(message(["--master-addr", "a", "--master_addr", "b"]), /--master-addr and --master_addr/);
  assert.match(message(["--node_rank", "1"]), /--node-rank must be below --nnodes \(1\), got 1/);
});

Deno.test("options: the usage lists each flag once, and torchrun's spellings in a footer", () => {
  for (
    const flag of ["--gpus N", "--nproc-per-node N", "--nnodes N", "--node-rank R", "--master-addr HOST"]
  ) {
    assert.ok(LAUNCH_USAGE.includes(flag), flag);
  }
  assert.match(LAUNCH_USAGE, /^Usage: deno run -A launch\.ts/);
  assert.doesNotMatch(LAUNCH_USAGE, /^\s+--nproc_per_node/m);
  assert.match(
    LAUNCH_USAGE,
    /torchrun's spellings --nproc_per_node, --node_rank, --master_addr and --master_port/,
  );
});
