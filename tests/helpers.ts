/**
 * Shared test utilities: the reference Python (the project's venv), tiny configs, deterministic batches
 * and numeric comparisons. Tests only; not exported from mod.ts.
 * @module
 */

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { AG_NEWS_LABELS } from "../model/labels.ts";
import { DISTILBERT_BASE_UNCASED, type DistilBertConfig } from "../model/config.ts";
import type { LabeledBatch } from "../model/batch.ts";
import { findFreePort } from "../launch.ts";

/** Repository root. */
export const ROOT: string = dirname(dirname(fileURLToPath(import.meta.url)));
/** The reference script driven by the tests. */
export const REFERENCE_SCRIPT: string = join(ROOT, "tests", "reference", "hf_reference.py");

/** The venv's Python, where torch and transformers (the references) live. */
export function venvPython(): string {
  const python = join(ROOT, ".venv", "bin", "python");
  try {
    Deno.statSync(python);
  } catch {
    throw new Error(`${python} is missing: run \`deno task setup\` first (it makes the venv with torch)`);
  }
  return python;
}

/**
 * Runs Python `script` in the venv with `input` as JSON on stdin and returns its stdout parsed as JSON
 * (bigints are sent as decimal strings). Throws with Python's stderr on failure.
 */
export async function pythonJson(script: string, input: unknown): Promise<unknown> {
  const child = new Deno.Command(venvPython(), {
    args: ["-c", script],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { HF_HUB_OFFLINE: "1", TRANSFORMERS_VERBOSITY: "error", PYTHONWARNINGS: "ignore" },
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(
    new TextEncoder().encode(JSON.stringify(input, (_key, v) => typeof v === "bigint" ? `${v}` : v)),
  );
  await writer.close();
  const out = await child.output();
  if (!out.success) throw new Error(`python failed:\n${new TextDecoder().decode(out.stderr).slice(-4000)}`);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

/** Runs the reference script with `args`; throws with Python's stderr on failure. */
export async function reference(...args: string[]): Promise<void> {
  await runReferenceScript(REFERENCE_SCRIPT, ...args);
}

/** Runs a Python reference script in the venv with `args`; throws with Python's stderr on failure. */
export async function runReferenceScript(script: string, ...args: string[]): Promise<void> {
  const out = await new Deno.Command(venvPython(), {
    args: [script, ...args],
    stdout: "piped",
    stderr: "piped",
    env: { HF_HUB_OFFLINE: "1", TRANSFORMERS_VERBOSITY: "error", PYTHONWARNINGS: "ignore" },
  }).output();
  if (!out.success) {
    const what = `${script.split("/").at(-1)} ${args[0] ?? ""}`.trim();
    throw new Error(`${what} failed:\n${new TextDecoder().decode(out.stderr).slice(-4000)}`);
  }
}

/** Eval-mode logits of transformers' `from_pretrained(modelDir)` on the batch in `batchPath`. */
export async function referenceLogits(modelDir: string, batchPath: string): Promise<Float32Array> {
  const out = `${batchPath}.${crypto.randomUUID().slice(0, 8)}.logits.json`;
  await reference("logits", "--model", modelDir, "--batch", batchPath, "--out", out);
  return readLogits(out);
}

/** A random transformers model with `config` saved by save_pretrained into `dir`/hf. */
export async function makeReferenceModel(
  dir: string,
  config: DistilBertConfig = tinyConfig(),
  seed = 3,
): Promise<void> {
  await Deno.writeTextFile(join(dir, "cfg.json"), JSON.stringify(hfConfigJson(config)));
  await reference(
    "make",
    "--config",
    join(dir, "cfg.json"),
    "--seed",
    String(seed),
    "--out",
    join(dir, "hf"),
  );
}

/** A tiny DistilBERT for fast tests. */
export function tinyConfig(overrides: Partial<DistilBertConfig> = {}): DistilBertConfig {
  return {
    ...DISTILBERT_BASE_UNCASED,
    vocab_size: 120,
    max_position_embeddings: 32,
    dim: 32,
    n_layers: 2,
    n_heads: 4,
    hidden_dim: 64,
    id2label: [...AG_NEWS_LABELS],
    ...overrides,
  };
}

/** transformers' DistilBertConfig kwargs for `config`. */
export function hfConfigJson(c: DistilBertConfig): Record<string, unknown> {
  return {
    vocab_size: c.vocab_size,
    max_position_embeddings: c.max_position_embeddings,
    dim: c.dim,
    n_layers: c.n_layers,
    n_heads: c.n_heads,
    hidden_dim: c.hidden_dim,
    dropout: c.dropout,
    attention_dropout: c.attention_dropout,
    seq_classif_dropout: c.seq_classif_dropout,
    initializer_range: c.initializer_range,
    pad_token_id: c.pad_token_id,
    id2label: Object.fromEntries(c.id2label.map((l, i) => [i, l])),
    label2id: Object.fromEntries(c.id2label.map((l, i) => [l, i])),
  };
}

/** A deterministic xorshift generator, so batches are the same in every run. */
export function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
}

/**
 * A padded batch: rows of different lengths (the first row full), [CLS]=101-like first token kept
 * inside the vocabulary, ids in [1, vocab), padding id 0 with mask 0.
 */
export function makeBatch(
  config: DistilBertConfig,
  batchSize: number,
  seqLen: number,
  seed = 1,
): LabeledBatch {
  const rand = rng(seed);
  const inputIds = new Int32Array(batchSize * seqLen);
  const attentionMask = new Uint8Array(batchSize * seqLen);
  const labels = new Int32Array(batchSize);
  for (let b = 0; b < batchSize; b++) {
    const len = b === 0 ? seqLen : 1 + Math.floor(rand() * seqLen);
    for (let t = 0; t < len; t++) {
      inputIds[b * seqLen + t] = 1 + Math.floor(rand() * (config.vocab_size - 1));
      attentionMask[b * seqLen + t] = 1;
    }
    labels[b] = b % config.id2label.length;
  }
  return { inputIds, attentionMask, labels, batchSize, seqLen };
}

/** Rows [from, from + n) of a batch, as a batch of its own (one rank's slice of a global batch). */
export function sliceRows(b: LabeledBatch, from: number, n: number): LabeledBatch {
  const s = b.seqLen;
  return {
    inputIds: b.inputIds.slice(from * s, (from + n) * s),
    attentionMask: b.attentionMask.slice(from * s, (from + n) * s),
    labels: b.labels.slice(from, from + n),
    batchSize: n,
    seqLen: s,
  };
}

/** Writes a batch as the JSON the reference script reads. */
export async function writeBatchJson(path: string, b: LabeledBatch): Promise<void> {
  const rows = (a: ArrayLike<number>) =>
    Array.from({ length: b.batchSize }, (_, i) => Array.from(a).slice(i * b.seqLen, (i + 1) * b.seqLen));
  await Deno.writeTextFile(
    path,
    JSON.stringify({
      input_ids: rows(b.inputIds),
      attention_mask: rows(b.attentionMask),
      labels: Array.from(b.labels),
    }),
  );
}

/** Reads the reference's logits, flattened row-major. */
export async function readLogits(path: string): Promise<Float32Array> {
  const { logits } = JSON.parse(await Deno.readTextFile(path)) as { logits: number[][] };
  return Float32Array.from(logits.flat());
}

/** Largest absolute elementwise difference. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

/** Asserts |a - b| <= tol everywhere, naming `what` and the worst difference. */
export function assertClose(a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string): void {
  const diff = maxAbsDiff(a, b);
  if (!(diff <= tol)) throw new Error(`${what}: max |diff| ${diff} > ${tol}`);
}

/** A fresh temporary directory removed when disposed. */
export async function tempDir(): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix: "distrinews-test-" });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

/** A data folder for train.ts in `dir`: the committed AG News fixtures as train.csv and test.csv. */
export async function fixtureDataDir(dir: string): Promise<string> {
  const data = join(dir, "data");
  await Deno.mkdir(data);
  const fixtures = join(ROOT, "data", "fixtures", "ag_news");
  await Deno.copyFile(join(fixtures, "train_sample.csv"), join(data, "train.csv"));
  await Deno.copyFile(join(fixtures, "test_sample.csv"), join(data, "test.csv"));
  return data;
}

/**
 * Runs `worldSize` processes of the rank script tests/ddp/`script` with torchrun's environment on a free
 * local port, `spec` as their argument; fails naming the rank (and its stderr) when one does.
 */
export async function runRankScripts(
  script: string,
  worldSize: number,
  spec: Record<string, unknown>,
  env: Record<string, string> = {},
): Promise<void> {
  const port = findFreePort();
  const children = Array.from({ length: worldSize }, (_, rank) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", join(ROOT, "tests", "ddp", script), JSON.stringify(spec)],
      env: {
        RANK: String(rank),
        LOCAL_RANK: String(rank),
        WORLD_SIZE: String(worldSize),
        LOCAL_WORLD_SIZE: String(worldSize),
        MASTER_ADDR: "127.0.0.1",
        MASTER_PORT: String(port),
        ...env,
      },
      stdout: "piped",
      stderr: "piped",
    }).spawn());
  const outputs = await Promise.all(children.map((c) => c.output()));
  outputs.forEach((o, rank) => {
    if (!o.success) {
      throw new Error(`rank ${rank} failed:\n${new TextDecoder().decode(o.stderr).slice(-3000)}`);
    }
  });
}
