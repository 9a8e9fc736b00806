/**
 * Downloads single files from the Hugging Face Hub into the Hub's own cache layout, so that DistriNews and
 * Python's huggingface_hub share one cache:
 *
 * ```
 * <hub cache>/datasets--<owner>--<name>/refs/<revision>               the commit that <revision> resolved to
 * <hub cache>/datasets--<owner>--<name>/snapshots/<commit>/<filename>  the file itself
 * ```
 *
 * `<hub cache>` is `cacheDir`, else `HF_HUB_CACHE`, else `$HF_HOME/hub` (HF_HOME defaults to
 * `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`), as in huggingface_hub. huggingface_hub keeps
 * the bytes in `blobs/` and symlinks them from `snapshots/`; we write the file straight into `snapshots/`
 * (what huggingface_hub itself does where symlinks are unavailable). Either kind is read back by both.
 *
 * When the server does not name a commit (`X-Repo-Commit`, as a mirror may not), the snapshot folder is named
 * after the revision itself: `snapshots/main/<filename>`. A file placed there by hand is found too.
 *
 * Rules:
 * - A file in the cache is used without any request. A branch such as `main` is resolved once, on the first
 *   download, and stays pinned to that commit until the cache is removed; ask for another revision to move.
 * - `HF_HUB_OFFLINE=1` (or `offline: true`) never touches the network: the cache or a clear error.
 * - A download goes to a temporary sibling, is checked (byte count against Content-Length or X-Linked-Size,
 *   SHA-256 against X-Linked-Etag when the Hub gives one), fsynced, then renamed into place. A failed or cut
 *   download leaves nothing behind, and concurrent downloaders (several DDP ranks) never see a partial file.
 * - `HF_TOKEN` (or `token`) is sent as a bearer token, but only to the endpoint's own origin: the Hub
 *   redirects large files to a CDN with signed URLs, which must not receive the token.
 * @module
 */

import { createHash } from "node:crypto";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { isFile, writeFileAtomic } from "../util/fs.ts";

/** The public Hub, used when neither `endpoint` nor `HF_ENDPOINT` is given. */
export const DEFAULT_HF_ENDPOINT = "https://huggingface.co";

/** How long a download may go without receiving a byte (headers included) before it is abandoned. */
export const DEFAULT_STALL_TIMEOUT_MS = 60_000;

const MAX_REDIRECTS = 10;

/** Where and how to fetch one file from the Hub. Unset fields fall back to the HF_* environment variables. */
export interface HubFileOptions {
  /** Kind of repository; default "dataset". */
  repoType?: "dataset" | "model";
  /** Branch, tag or 40-hex commit; default "main". */
  revision?: string;
  /** The Hub cache folder (the equivalent of HF_HUB_CACHE); default from HF_HUB_CACHE / HF_HOME. */
  cacheDir?: string;
  /** Base URL of the Hub; default HF_ENDPOINT, else https://huggingface.co. */
  endpoint?: string;
  /** Never use the network; default from HF_HUB_OFFLINE (1, true, yes or on). */
  offline?: boolean;
  /** Bearer token; default HF_TOKEN. */
  token?: string;
  /** The fetch to use (tests, proxies); default the global fetch. */
  fetch?: typeof fetch;
  /** Abandon a download after this many milliseconds without data; default 60 s. */
  timeoutMs?: number;
  /** Extra advice appended to errors, e.g. how to use local files instead. */
  hint?: string;
}

/** A download that failed or was refused: HTTP status, timeout, truncation, offline mode. */
export class HubError extends Error {
  /** The URL that failed. */
  readonly url: string;
  /** The HTTP status, when the server answered with one. */
  readonly status?: number;

  constructor(message: string, url: string, status?: number) {
    super(message);
    this.name = "HubError";
    this.url = url;
    this.status = status;
  }
}

/** Reads an environment variable, or undefined where the variable is unset or env access is not granted. */
export function envVar(name: string): string | undefined {
  try {
    const value = Deno.env.get(name);
    return value === "" ? undefined : value;
  } catch {
    return undefined;
  }
}

/** huggingface_hub's reading of boolean variables: 1, on, yes and true (any case) are true. */
export function envFlag(name: string): boolean {
  return ["1", "ON", "YES", "TRUE"].includes((envVar(name) ?? "").trim().toUpperCase());
}

function expandHome(path: string): string {
  return path === "~" || path.startsWith("~/") ? join(homedir(), path.slice(1)) : path;
}

/** The Hub cache folder: HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub (XDG aware). */
export function hubCacheDir(): string {
  const hubCache = envVar("HF_HUB_CACHE");
  if (hubCache) return expandHome(hubCache);
  const xdg = envVar("XDG_CACHE_HOME");
  const home = envVar("HF_HOME") ??
    (xdg ? join(xdg, "huggingface") : join(homedir(), ".cache", "huggingface"));
  return join(expandHome(home), "hub");
}

/** The cache folder name of a repository: `datasets--owner--name`, as huggingface_hub names it. */
export function repoFolderName(repoId: string, repoType: "dataset" | "model" = "dataset"): string {
  return [`${repoType}s`, ...repoId.split("/")].join("--");
}

/** The Hub base URL in effect: `endpoint`, else HF_ENDPOINT, else the public Hub; no trailing slash. */
export function hubEndpoint(endpoint?: string): string {
  return (endpoint ?? envVar("HF_ENDPOINT") ?? DEFAULT_HF_ENDPOINT).replace(/\/+$/, "");
}

/** The download URL of `filename` at `revision`: `<endpoint>/datasets/<repo>/resolve/<revision>/<file>`. */
export function hubFileUrl(repoId: string, filename: string, options: HubFileOptions = {}): string {
  const prefix = (options.repoType ?? "dataset") === "dataset" ? "datasets/" : "";
  // huggingface_hub quotes the revision whole ("refs/pr/1" -> "refs%2Fpr%2F1") and the path per segment.
  const revision = encodeURIComponent(options.revision ?? "main");
  const path = filename.split("/").map(encodeURIComponent).join("/");
  return `${hubEndpoint(options.endpoint)}/${prefix}${repoId}/resolve/${revision}/${path}`;
}

const isCommit = (s: string) => /^[0-9a-f]{40}$/.test(s);

function checkName(what: string, value: string): void {
  // These names become cache paths: refuse anything that could climb out of the cache folder.
  const parts = value.split("/");
  if (value === "" || value.startsWith("/") || parts.some((p) => p === "" || p === "." || p === "..")) {
    throw new Error(`invalid ${what} "${value}"`);
  }
}

/** Paths where a cached copy may be, best first: the snapshot of the commit `refs/<revision>` names, then
 * the snapshot named after the revision itself. */
async function cacheCandidates(folder: string, filename: string, revision: string): Promise<string[]> {
  const candidates: string[] = [];
  if (!isCommit(revision)) {
    const commit = await Deno.readTextFile(join(folder, "refs", revision)).then((s) => s.trim(), () => "");
    if (isCommit(commit)) candidates.push(join(folder, "snapshots", commit, filename));
  }
  candidates.push(join(folder, "snapshots", revision, filename));
  return candidates;
}

/** The path of a cached copy of `filename`, or undefined. Never touches the network. */
export async function cachedHubFile(
  repoId: string,
  filename: string,
  options: HubFileOptions = {},
): Promise<string | undefined> {
  const revision = options.revision ?? "main";
  checkName("repository id", repoId);
  checkName("file name", filename);
  checkName("revision", revision);
  const folder = join(options.cacheDir ?? hubCacheDir(), repoFolderName(repoId, options.repoType));
  for (const path of await cacheCandidates(folder, filename, revision)) {
    if (await isFile(path)) return path;
  }
  return undefined;
}

/** Where a hand-downloaded copy of `filename` is found: the snapshot named after the revision. */
export function manualCachePath(repoId: string, filename: string, options: HubFileOptions = {}): string {
  const folder = join(options.cacheDir ?? hubCacheDir(), repoFolderName(repoId, options.repoType));
  return join(folder, "snapshots", options.revision ?? "main", filename);
}

/**
 * The local path of `filename` from the Hub repository `repoId`: the cached copy if there is one (no request
 * at all), else a fresh, verified download into the cache. Throws HubError when offline without a copy,
 * on HTTP errors, timeouts and incomplete or corrupt downloads; the message says how to provide the file
 * by hand.
 */
export async function hubDownload(
  repoId: string,
  filename: string,
  options: HubFileOptions = {},
): Promise<string> {
  const cached = await cachedHubFile(repoId, filename, options);
  if (cached) return cached;

  const url = hubFileUrl(repoId, filename, options);
  const manual = `download ${url}\n  and save it as ${manualCachePath(repoId, filename, options)}`;
  const hint = options.hint ? `\n${options.hint}` : "";
  if (options.offline ?? envFlag("HF_HUB_OFFLINE")) {
    const why = options.offline ? "offline: true" : "HF_HUB_OFFLINE=1";
    throw new HubError(
      `${filename} of ${repoId} is not in the Hugging Face cache, and offline mode (${why}) ` +
        `forbids downloading it. To provide it:\n- ${manual}\n- or run once with network access ` +
        `(HF_HUB_OFFLINE unset) to fill the cache${hint}`,
      url,
    );
  }
  try {
    return await download(url, repoId, filename, options);
  } catch (err) {
    if (!(err instanceof HubError)) throw err;
    throw new HubError(
      `${err.message}\nTo provide the file by hand:\n- ${manual}${hint}`,
      err.url,
      err.status,
    );
  }
}

/** What the Hub says about the file on its first answer (before any CDN redirect). */
interface HubHeaders {
  commit?: string;
  size?: number;
  sha256?: string;
}

function readHubHeaders(headers: Headers, into: HubHeaders): void {
  const commit = headers.get("x-repo-commit")?.trim();
  if (commit && isCommit(commit)) into.commit ??= commit;
  const size = Number(headers.get("x-linked-size") ?? NaN);
  if (Number.isSafeInteger(size) && size >= 0) into.size ??= size;
  // For LFS/Xet files X-Linked-Etag is the SHA-256 of the content (quoted, maybe weak).
  const etag = headers.get("x-linked-etag")?.replace(/^W\//, "").replace(/"/g, "").trim().toLowerCase();
  if (etag && /^[0-9a-f]{64}$/.test(etag)) into.sha256 ??= etag;
}

function httpError(res: Response, url: string, hasToken: boolean): HubError {
  const detail = res.headers.get("x-error-message");
  let advice = "";
  if (res.status === 401 || res.status === 403) {
    advice = hasToken
      ? " (the token (HF_TOKEN) was refused or lacks access)"
      : " (the repository may need a token: set HF_TOKEN)";
  } else if (res.status === 404) {
    advice = " (check the repository, revision and file name)";
  }
  const text = `HTTP ${res.status} ${res.statusText}`.trim();
  return new HubError(
    `download of ${url} failed: ${text}${detail ? `: ${detail}` : ""}${advice}`,
    url,
    res.status,
  );
}

/** Aborts a request when no data has arrived for `ms`; `touch` restarts the clock. */
function stallTimer(url: string, ms: number) {
  const controller = new AbortController();
  let timer = setTimeout(() => controller.abort(), ms);
  return {
    signal: controller.signal,
    touch() {
      clearTimeout(timer);
      timer = setTimeout(() => controller.abort(), ms);
    },
    error(when: string): HubError {
      return new HubError(`download of ${url} timed out: no data for ${ms / 1000} s ${when}`, url);
    },
    [Symbol.dispose]() {
      clearTimeout(timer);
    },
  };
}

type StallTimer = ReturnType<typeof stallTimer>;

async function download(
  url: string,
  repoId: string,
  filename: string,
  options: HubFileOptions,
): Promise<string> {
  const token = options.token ?? envVar("HF_TOKEN");
  using timer = stallTimer(url, options.timeoutMs ?? DEFAULT_STALL_TIMEOUT_MS);
  const { res, hub } = await follow(url, token, options.fetch ?? fetch, timer);
  const revision = options.revision ?? "main";
  const folder = join(options.cacheDir ?? hubCacheDir(), repoFolderName(repoId, options.repoType));
  const dest = join(folder, "snapshots", hub.commit ?? revision, filename);
  await saveBody(res, dest, url, hub, timer);
  // Pin the branch to the commit only now that the snapshot holds the file.
  if (hub.commit && revision !== hub.commit) {
    const ref = join(folder, "refs", revision);
    await Deno.mkdir(dirname(ref), { recursive: true });
    await writeFileAtomic(ref, hub.commit);
  }
  return dest;
}

/**
 * Requests `url` and follows redirects by hand: to read the Hub's headers on its own answer, and to keep the
 * token away from other origins (the CDN that the Hub sends large files to). Returns the final 2xx answer.
 */
async function follow(
  url: string,
  token: string | undefined,
  fetchFn: typeof fetch,
  timer: StallTimer,
): Promise<{ res: Response; hub: HubHeaders }> {
  const origin = new URL(url).origin;
  const hub: HubHeaders = {};
  let current = url;
  for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
    const headers: Record<string, string> = {
      // Content-Length must count the bytes we store, so no transparent compression.
      "accept-encoding": "identity",
      "user-agent": "distrinews/0.1",
    };
    if (token && new URL(current).origin === origin) headers.authorization = `Bearer ${token}`;
    let res: Response;
    try {
      res = await fetchFn(current, { headers, redirect: "manual", signal: timer.signal });
    } catch (err) {
      if (timer.signal.aborted) throw timer.error("while waiting for the server's answer");
      const host = new URL(current).host;
      throw new HubError(`download of ${url} failed: could not reach ${host}: ${message(err)}`, url);
    }
    timer.touch();
    readHubHeaders(res.headers, hub);
    const location = res.headers.get("location");
    if (res.status >= 300 && res.status < 400 && location) {
      await res.body?.cancel();
      current = new URL(location, current).href;
      continue;
    }
    if (res.ok && res.body) return { res, hub };
    await res.body?.cancel();
    throw httpError(res, url, Boolean(token));
  }
  throw new HubError(`download of ${url} failed: more than ${MAX_REDIRECTS} redirects`, url);
}

/** The sizes the body must have: Content-Length (unless transport-encoded) and the Hub's X-Linked-Size. */
function expectedSizes(res: Response, hub: HubHeaders): number[] {
  const sizes: number[] = [];
  const encoded = (res.headers.get("content-encoding") ?? "identity").toLowerCase() !== "identity";
  const contentLength = Number(res.headers.get("content-length") ?? NaN);
  if (!encoded && Number.isSafeInteger(contentLength)) sizes.push(contentLength);
  if (hub.size !== undefined) sizes.push(hub.size);
  return sizes;
}

/**
 * Streams the body to a temporary sibling of `dest`, checks its size and SHA-256, and renames it into place.
 * On any failure the temporary file is removed, so `dest` is either absent or complete.
 */
async function saveBody(res: Response, dest: string, url: string, hub: HubHeaders, timer: StallTimer) {
  const sizes = expectedSizes(res, hub);
  await Deno.mkdir(dirname(dest), { recursive: true });
  const tmp = `${dest}.${crypto.randomUUID()}.incomplete`;
  try {
    const of = sizes.length ? ` of ${sizes[0]}` : "";
    const { bytes, sha256 } = await streamToFile(res.body!, tmp, of, timer.touch, () => timer.signal.aborted);
    for (const expected of sizes) {
      if (bytes !== expected) {
        throw new HubError(
          `download of ${url} is incomplete or wrong: received ${bytes} bytes, expected ${expected}`,
          url,
        );
      }
    }
    if (hub.sha256 && sha256 !== hub.sha256) {
      throw new HubError(`download of ${url} is corrupt: SHA-256 ${sha256}, the Hub says ${hub.sha256}`, url);
    }
    await Deno.rename(tmp, dest);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    if (err instanceof HubError) throw err;
    if (timer.signal.aborted) throw timer.error("in the middle of the file");
    throw new HubError(`download of ${url} failed: ${message(err)}`, url);
  }
}

/** Writes a body stream to `path`, fsynced, returning its size and SHA-256. */
async function streamToFile(
  body: ReadableStream<Uint8Array>,
  path: string,
  of: string,
  onData: () => void,
  aborted: () => boolean,
): Promise<{ bytes: number; sha256: string }> {
  const hash = createHash("sha256");
  let bytes = 0;
  using file = await Deno.open(path, { write: true, createNew: true });
  const reader = body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      onData();
      hash.update(value);
      bytes += value.byteLength;
      for (let off = 0; off < value.byteLength;) off += await file.write(value.subarray(off));
    }
  } catch (err) {
    await reader.cancel().catch(() => {});
    if (aborted()) throw err;
    throw new Error(`the connection failed after ${bytes}${of} bytes: ${message(err)}`);
  }
  await file.sync();
  return { bytes, sha256: hash.digest("hex") };
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
