/**
 * What every benchmark script needs: medians and a one-line description of the machine, so that each
 * results file states the hardware it was measured on.
 * @module
 */

import os from "node:os";
import { join } from "node:path";

/** Median of a non-empty list. */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) throw new Error("median of an empty list");
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** "CPU model (vector units), N cores, M GiB RAM, os-arch". */
export async function hardwareLine(): Promise<string> {
  const info = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const cpu = /model name\s*:\s*(.+)/.exec(info)?.[1] ?? os.cpus()[0]?.model ?? "unknown CPU";
  // The vector units decide fp32 and bf16 speed; "Intel(R) Xeon(R) Processor" alone does not say which.
  const flags = new Set(/^flags\s*:\s*(.+)$/m.exec(info)?.[1].split(/\s+/) ?? []);
  const units = ["avx2", "avx512f", "avx512_bf16", "amx_bf16"].filter((f) => flags.has(f));
  return `${cpu}${units.length ? ` (${units.join(", ")})` : ""}, ${navigator.hardwareConcurrency} cores, ` +
    `${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM, ${Deno.build.os}-${Deno.build.arch}`;
}

/**
 * Writes a benchmark's results as `<dir>/<name>.md` (the report) and `<dir>/<name>.json` (the data), formatted
 * as the repository's `deno fmt --check` expects. Returns both paths.
 */
export async function writeResults(
  dir: string,
  name: string,
  markdown: string,
  data: unknown,
): Promise<{ md: string; json: string }> {
  await Deno.mkdir(dir, { recursive: true });
  const md = join(dir, `${name}.md`), json = join(dir, `${name}.json`);
  await Deno.writeTextFile(md, markdown);
  await Deno.writeTextFile(json, JSON.stringify(data, null, 2) + "\n");
  await formatResults(md, json);
  return { md, json };
}

/** Runs `deno fmt` on result files, so they pass the repository's `deno fmt --check` as written. */
export async function formatResults(...paths: string[]): Promise<void> {
  await new Deno.Command(Deno.execPath(), { args: ["fmt", "--quiet", ...paths] }).output();
}
