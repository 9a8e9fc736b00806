/**
 * What the CPU can do fast, read from the flags the kernel reports. Used to decide whether bf16 pays on a
 * CPU: with native bf16 dot products (AVX-512-BF16's VDPBF16PS, or AMX's matrix tiles) oneDNN runs bf16
 * matrix products at up to twice fp32's rate or more; without them bf16 is converted to fp32 and back, and
 * autocast's casts make every step slower than plain fp32.
 * @module
 */

/**
 * The CPU flags of /proc/cpuinfo (Linux); an empty set where they cannot be read. `DISTRINEWS_CPU_FLAGS`
 * (space-separated) replaces them: to see the decisions another CPU would get, and to test them.
 */
export function cpuFlags(): Set<string> {
  const override = Deno.env.get("DISTRINEWS_CPU_FLAGS");
  if (override !== undefined) return new Set(override.trim().split(/\s+/).filter(Boolean));
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

/** True when the CPU has AMX bf16 tiles. */
export function cpuHasAmxBf16(flags: Set<string> = cpuFlags()): boolean {
  return flags.has("amx_bf16") && flags.has("amx_tile");
}

/** True when the CPU multiplies bf16 natively (AVX-512-BF16 or AMX): where bf16 autocast can pay. */
export function cpuHasNativeBf16(flags: Set<string> = cpuFlags()): boolean {
  return flags.has("avx512_bf16") || cpuHasAmxBf16(flags);
}
