// serve's flag table without a process: the defaults come from one place, each bad value or contradiction
// is a UsageError with the message the e2e test and users rely on, and the usage lists every flag.
import assert from "node:assert/strict";
import { UsageError } from "../cli/args.ts";
import { DEFAULT_CHECKPOINT_HELP } from "../model/checkpoints.ts";
import { parseServeOptions, SERVE_FLAGS, SERVE_USAGE } from "./options.ts";
import { DEFAULT_LIMITS } from "./schemas.ts";

function usageError(args: string[], message: RegExp, envPort?: string): void {
  assert.throws(() => parseServeOptions(args, envPort), (err) => {
    assert.ok(err instanceof UsageError, `${err}`);
    assert.match(err.message, message);
    return true;
  }, args.join(" "));
}

Deno.test("serve options: the defaults", () => {
  assert.deepEqual(parseServeOptions([]), {
    checkpoint: undefined,
    host: "127.0.0.1",
    port: 7860,
    device: "auto",
    limits: { ...DEFAULT_LIMITS },
    predictor: { maxBatchSize: 64, maxWaitMs: 5, maxQueue: 1024, maxLength: 128, bf16: false },
    threads: undefined,
    drainTimeoutMs: 30_000,
  });
  assert.equal(parseServeOptions(["--help"]), undefined);
  assert.equal(parseServeOptions(["-h"]), undefined);
});

Deno.test("serve options: every flag reaches its field", () => {
  const options = parseServeOptions([
    ...["--checkpoint", "ckpt", "--host", "0.0.0.0", "--port", "8080", "--device", "cpu"],
    ...["--max-batch", "8", "--max-wait-ms", "2.5", "--max-queue", "100", "--max-length", "64"],
    ...["--max-text-chars", "500", "--max-texts", "10", "--max-body-bytes", "4096"],
    ...["--bf16", "--threads", "2", "--drain-timeout-s", "0.5"],
  ]);
  assert.deepEqual(options, {
    checkpoint: "ckpt",
    host: "0.0.0.0",
    port: 8080,
    device: "cpu",
    limits: { maxTextChars: 500, maxTexts: 10, maxBodyBytes: 4096 },
    predictor: { maxBatchSize: 8, maxWaitMs: 2.5, maxQueue: 100, maxLength: 64, bf16: true },
    threads: 2,
    drainTimeoutMs: 500,
  });
});

Deno.test("serve options: --port, else $PORT (empty is unset), else 7860; decimal digits only", () => {
  assert.equal(parseServeOptions([], "9000")?.port, 9000);
  assert.equal(parseServeOptions([], "")?.port, 7860);
  assert.equal(parseServeOptions(["--port", "0"], "9000")?.port, 0);
  assert.equal(parseServeOptions(["--port", "65535"])?.port, 65535);
  for (const bad of ["0x1F90", "65536", "-1", "1e3", " 80", "80.0", "", "123456"]) {
    usageError([`--port=${bad}`], new RegExp(`^the port must be an integer in 0\\.\\.65535, got "${bad}"$`));
  }
  usageError([], /^the port must be an integer in 0\.\.65535, got "http"$/, "http");
});

Deno.test("serve options: bad values and contradictions are UsageErrors with their messages", () => {
  usageError(["--max-batch", "0"], /^--max-batch must be a positive integer, got "0"$/);
  usageError(["--max-queue", "1.5"], /^--max-queue must be a positive integer/);
  usageError(["--max-wait-ms=-1"], /^--max-wait-ms must be a number >= 0, got "-1"$/);
  usageError(["--drain-timeout-s", "soon"], /^--drain-timeout-s must be a number >= 0/);
  usageError(["--threads", "0"], /^--threads must be a positive integer/);
  usageError(
    ["--max-length", "2"],
    /^--max-length must be at least 3 \(\[CLS\], one token, \[SEP\]\), got 2$/,
  );
  assert.equal(parseServeOptions(["--max-length", "3"])?.predictor.maxLength, 3);
  usageError(
    ["--max-queue", "8", "--max-texts", "16"],
    /^--max-queue \(8\) must be at least --max-texts \(16\), or a full request could never be queued$/,
  );
  assert.equal(parseServeOptions(["--max-queue", "16", "--max-texts", "16"])?.predictor.maxQueue, 16);
  usageError(["--bogus"], /Unknown option '--bogus'/);
  usageError(["extra"], /^unexpected argument "extra"$/);
});

Deno.test("serve options: the usage lists every flag with its default, written once", () => {
  for (const name of Object.keys(SERVE_FLAGS)) assert.match(SERVE_USAGE, new RegExp(`\\n  --${name}\\b`));
  assert.ok(SERVE_USAGE.startsWith("Usage: deno task serve [options]\n"));
  const flat = SERVE_USAGE.replace(/\s+/g, " ");
  assert.ok(flat.includes(`(default ${DEFAULT_CHECKPOINT_HELP})`), "the checkpoint's default, from model/");
  assert.ok(flat.includes(`(default ${DEFAULT_LIMITS.maxTexts})`));
  assert.ok(flat.includes(`(default ${DEFAULT_LIMITS.maxBodyBytes})`));
  assert.ok(flat.includes("--max-batch N most texts per batch; 1 turns dynamic batching off (default 64)"));
});
