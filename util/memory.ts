/**
 * This process's peak memory, as the kernel counts it: the largest resident set so far (VmHWM in
 * /proc/self/status). What a machine must hold to run the job, and what the benchmarks compare.
 * @module
 */

/** Peak resident set size of this process in bytes, or undefined where /proc is not available. */
export function peakRssBytes(): number | undefined {
  try {
    const kb = /VmHWM:\s+(\d+)\s+kB/.exec(Deno.readTextFileSync("/proc/self/status"))?.[1];
    return kb === undefined ? undefined : Number(kb) * 1024;
  } catch {
    return undefined;
  }
}
