/**
 * Warms the `--pretrained` cache once, in the launcher, before any rank starts.
 *
 * Why once: every rank of a DDP job starts from the same weights, and each would otherwise resolve
 * `--pretrained` itself. With a cold cache that is N downloads (or pip fetches) of the same files at the same
 * moment, racing to write the same cache entries. Fetched here first, the ranks all find it cached. Each
 * node's launcher does this for its own ranks; for a multi-node job from a Hub branch, pin a commit
 * (`owner/name@<sha>`) so that no node can see a newer one.
 * @module
 */

import { resolvePretrained } from "../weights/pretrained_sources.ts";

/** Resolves (downloads if needed) the pretrained source `spec` into its cache and logs what it found. */
export async function warmPretrainedCache(spec: string, log: (line: string) => void): Promise<void> {
  const source = await resolvePretrained(spec);
  log(`pretrained weights ready for every rank: ${source.description}`);
}
