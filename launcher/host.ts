/**
 * What the launcher asks this machine before planning: how many CUDA devices libtorch sees, a free port for
 * the rendezvous store, the CPU count and the environment. The one place of the launcher (besides starting
 * processes) that looks outside itself, so that launcher/plan.ts can stay pure.
 * @module
 */

import type { LaunchOptions } from "./options.ts";
import type { HostFacts } from "./plan.ts";

/** A TCP port that was free a moment ago: bound on `hostname`:0, then released (racy, as torchrun's). */
export function findFreePort(hostname = "127.0.0.1"): number {
  const listener = Deno.listen({ hostname, port: 0, transport: "tcp" });
  try {
    return (listener.addr as Deno.NetAddr).port;
  } finally {
    listener.close();
  }
}

/**
 * The number of CUDA devices libtorch sees, through the native library (ffi/model.ts, imported only here:
 * loading it may build the shim first). A library that cannot load counts as no GPU; `onError` hears why.
 */
export async function detectCudaDevices(onError?: (message: string) => void): Promise<number> {
  try {
    const { cudaDeviceCount } = await import("../ffi/model.ts");
    return await cudaDeviceCount();
  } catch (err) {
    onError?.(err instanceof Error ? err.message.split("\n")[0] : String(err));
    return 0;
  }
}

/**
 * The facts {@link HostFacts} lists, asking only what `options` leave open: no GPU count with `cpu` or a
 * given `deviceCount`, no free port with a given `masterPort`. `log` hears why the native library could not
 * load, if it could not.
 */
export async function gatherHostFacts(
  options: LaunchOptions,
  log: (line: string) => void,
): Promise<HostFacts> {
  const cudaDevices = options.cpu ? 0 : options.deviceCount ??
    await detectCudaDevices((m) => log(`cannot load the native library (${m}); assuming no CUDA devices`));
  return {
    cudaDevices,
    cpus: navigator.hardwareConcurrency,
    env: Deno.env.toObject(),
    freePort: options.masterPort === undefined ? findFreePort() : undefined,
    denoPath: Deno.execPath(),
  };
}
