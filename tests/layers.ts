/**
 * The rooms of DistriNews and the one rule between them: a module imports only from its own room or from a
 * lower one. The table below is the architecture in one place; `layers_test.ts` holds the repository to
 * it, so a folder that starts importing a higher one (or two folders that import each other) fails CI.
 *
 * Run by hand: `deno run --allow-read tests/layers.ts` prints every violation (none, when green).
 * @module
 */

import { dirname, join, normalize, relative, sep } from "node:path";

/**
 * Every room and its height, lowest first. A room may import its own files and any room with a lower
 * number; equal numbers are peers that must not import each other. A new folder has to be placed here.
 */
export const LAYERS: Readonly<Record<string, number>> = {
  /** Small helpers with no knowledge of the model: files, bytes, random numbers, CPU facts. */
  util: 0,
  /** What every room agrees on: config, labels, tensor and batch types, where checkpoints live. */
  model: 1,
  /** Command-line parsing shared by the entry points. */
  cli: 1,
  /** The native library: the only room that knows the C ABI. */
  ffi: 2,
  /** Datasets, tokenizer, sampler (whose shuffle is libtorch's randperm), batching, the Hub client. */
  data: 3,
  /** Checkpoint and pretrained-weight formats, and moving weights in and out of the native model. */
  weights: 4,
  /** What a training run computes beside the step: schedules, metrics, evaluation, progress, charts. */
  training: 5,
  /** A checkpoint as a text classifier (predict and serve share it). */
  inference: 5,
  /** The HTTP API. */
  server: 6,
  /** The DDP launcher's parts (flags, plan, supervisor, summary); launch.ts is its entry point. */
  launcher: 6,
  /** The entry points at the repository root: train.ts, serve.ts, predict.ts, launch.ts, setup.ts, mod.ts. */
  ".": 7,
  /** Test helpers and end-to-end tests: they may use everything. */
  tests: 8,
  /** Deployment tooling (the image's build steps): it may use everything below the tests. */
  deploy: 8,
  /** Benchmarks: they use everything, test helpers included. */
  benchmarks: 9,
};

/** One import that breaks the rule. */
export interface LayerViolation {
  /** The importing file, relative to the root. */
  file: string;
  /** The imported file, relative to the root. */
  target: string;
  /** Why it breaks the rule. */
  reason: string;
}

/** The room of a root-relative path: its first folder, or "." for a file at the root. */
export function roomOf(path: string): string {
  const parts = normalize(path).split(sep);
  return parts.length === 1 ? "." : parts[0];
}

const IMPORT =
  /(?:^|\n)\s*(?:import|export)\b[^'"]*?\bfrom\s*["'](\.{1,2}\/[^"']+)["']|\bimport\s*\(\s*["'](\.{1,2}\/[^"']+)["']\s*\)|(?:^|\n)\s*import\s*["'](\.{1,2}\/[^"']+)["']/g;

/** The relative module specifiers a TypeScript source imports or re-exports (static and dynamic). */
export function relativeImports(source: string): string[] {
  const found: string[] = [];
  for (const m of source.matchAll(IMPORT)) found.push(m[1] ?? m[2] ?? m[3]);
  return found;
}

/**
 * Checks one import against {@link LAYERS}. Test files (`*_test.ts`) are exempt: they are leaves that
 * nothing imports, so they cannot make a cycle, and a test of a low room may compare it with a higher
 * one (the native model's weights written through weights/safetensors.ts, say).
 */
export function checkImport(file: string, target: string, layers = LAYERS): string | undefined {
  const from = roomOf(file), to = roomOf(target);
  if (from === to) return undefined;
  if (!(from in layers)) return `room "${from}" is not in the layer table (tests/layers.ts)`;
  if (!(to in layers)) return `room "${to}" is not in the layer table (tests/layers.ts)`;
  if (file.endsWith("_test.ts")) return undefined;
  if (layers[to] < layers[from]) return undefined;
  return layers[to] === layers[from]
    ? `"${from}" and "${to}" are peers (layer ${layers[from]}): neither may import the other`
    : `"${from}" (layer ${layers[from]}) imports the higher room "${to}" (layer ${layers[to]})`;
}

async function* typeScriptFiles(root: string, dir = root): AsyncGenerator<string> {
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) {
      if (entry.name.startsWith(".") || ["node_modules", "checkpoints", "build"].includes(entry.name)) {
        continue;
      }
      yield* typeScriptFiles(root, path);
    } else if (entry.isFile && entry.name.endsWith(".ts")) {
      yield relative(root, path);
    }
  }
}

/** Every import under `root` that breaks the layer rule, sorted by file. */
export async function findViolations(root: string, layers = LAYERS): Promise<LayerViolation[]> {
  const violations: LayerViolation[] = [];
  for await (const file of typeScriptFiles(root)) {
    if (file.endsWith("_test.ts")) continue; // leaves: see checkImport
    const source = await Deno.readTextFile(join(root, file));
    for (const specifier of relativeImports(source)) {
      const target = normalize(join(dirname(file), specifier));
      if (target.startsWith("..")) {
        violations.push({ file, target, reason: "imports from outside the repository" });
        continue;
      }
      const reason = checkImport(file, target, layers);
      if (reason) violations.push({ file, target, reason });
    }
  }
  return violations.sort((a, b) => a.file.localeCompare(b.file));
}

if (import.meta.main) {
  const root = dirname(dirname(new URL(import.meta.url).pathname));
  const violations = await findViolations(root);
  for (const v of violations) console.log(`${v.file} -> ${v.target}: ${v.reason}`);
  console.log(
    violations.length ? `${violations.length} layer violation(s)` : "layers: every import points down",
  );
  Deno.exit(violations.length ? 1 : 0);
}
