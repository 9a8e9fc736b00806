/**
 * What the CPU can do fast, read from the flags the kernel reports. Used to decide whether bf16 pays on a
 * CPU: only with AMX (Intel's matrix tiles) do bf16 matrix products beat fp32 there; AVX-512-BF16 alone
 * converts and multiplies at about fp32's speed, and autocast's casts then make a training step slower.
 * @module
 */

/** The CPU flags of /proc/cpuinfo (Linux); an empty set where they cannot be read. */
export function cpuFlags(): Set<string> {
  try {
    const text = Deno.readTextFileSync("/proc/cpuinfo");
    const line = text.split("\n").find((l) => /^flags\s*:/.test(l));
    return new Set(line ? line.replace(/^flags\s*:\s*/, "").trim().split(/\s+/) : []);
  } catch {
    return new Set();
  }
}

/** The vector and matrix units that matter for bf16, as a short list for logs and result files. */
export function bf16Units(flags: Set<string> = cpuFlags()): string[] {
  return ["avx512f", "avx512_bf16", "amx_tile", "amx_bf16"].filter((f) => flags.has(f));
}

/** True when the CPU has AMX bf16 tiles: the one case where bf16 autocast training is faster than fp32. */
export function cpuHasAmxBf16(flags: Set<string> = cpuFlags()): boolean {
  return flags.has("amx_bf16") && flags.has("amx_tile");
}
