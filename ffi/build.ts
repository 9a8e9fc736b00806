/**
 * Finds libtorch and compiles the C++ shim (ffi/shim) into a shared library, cached by a hash of the
 * sources, the libtorch it links and the compiler flags, so a second build is instant.
 *
 * Where libtorch is looked for, in order:
 *  1. `LIBTORCH` (a folder with include/ and lib/, e.g. an unpacked libtorch zip or a torch package dir);
 *  2. the project's virtualenv (.venv, made by `deno task setup`);
 *  3. the active Python's torch (`python3`, or `PYTHON`), located without importing it;
 *  4. unpacked libtorch archives in ./libtorch, ~/libtorch, /opt/libtorch, /usr/local/libtorch.
 *
 * Run as a script (`deno task build`) it prints where the library is.
 * @module
 */

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { homedir } from "node:os";
import { exists } from "../util/fs.ts";

const FFI_DIR = dirname(fileURLToPath(import.meta.url));
const ROOT = dirname(FFI_DIR);
const SHIM_DIR = join(FFI_DIR, "shim");
const BUILD_DIR = join(FFI_DIR, "build");
const SOURCES = ["distilbert.cpp", "optim.cpp", "capi.cpp", "ddp.cpp"];
const HEADERS = [
  "distrinews.h",
  "distilbert.h",
  "optim.h",
  "guard.h",
  "handles.h",
  "torch_thread.h",
  "gloo_decls/gloo/context.h",
  "gloo_decls/gloo/algorithm.h",
  "gloo_decls/gloo/common/error.h",
  "gloo_decls/gloo/transport/device.h",
  "gloo_decls/gloo/rendezvous/store.h",
];

/** A libtorch installation the shim can compile and link against. */
export interface Libtorch {
  /** Folder holding include/ and lib/. */
  root: string;
  /** How it was found, for messages. */
  foundVia: string;
  /** libtorch version ("2.11.0+cu130"), or "unknown". */
  version: string;
  /** Whether this libtorch ships CUDA (libtorch_cuda.so). */
  hasCuda: boolean;
  /** 1 when libtorch was built with the C++11 std::string ABI, else 0. */
  cxx11Abi: 0 | 1;
}

/** The result of a build: the shared library and what it was built against. */
export interface BuildResult {
  library: string;
  libtorch: Libtorch;
  cached: boolean;
}

async function isLibtorchRoot(root: string): Promise<boolean> {
  return await exists(join(root, "include", "torch")) && await exists(join(root, "lib", "libtorch.so"));
}

/** Where {@link findLibtorch} looks; tests point it elsewhere. */
export interface LibtorchSearch {
  /** Value of the LIBTORCH variable, if set. */
  env?: string;
  /** The project's virtualenv. */
  venv: string;
  /** The Python interpreter whose torch to use. */
  python: string;
  /** Folders that may hold an unpacked libtorch archive. */
  archives: string[];
}

/** The search a user gets: LIBTORCH, .venv, $PYTHON or python3, the usual archive folders. */
export function defaultSearch(): LibtorchSearch {
  return {
    env: Deno.env.get("LIBTORCH"),
    venv: join(ROOT, ".venv"),
    python: Deno.env.get("PYTHON") ?? "python3",
    archives: [join(ROOT, "libtorch"), join(homedir(), "libtorch"), "/opt/libtorch", "/usr/local/libtorch"],
  };
}

async function venvTorch(venv: string): Promise<string | undefined> {
  const lib = join(venv, "lib");
  if (!await exists(lib)) return undefined;
  for await (const entry of Deno.readDir(lib)) {
    const candidate = join(lib, entry.name, "site-packages", "torch");
    if (entry.name.startsWith("python") && await isLibtorchRoot(candidate)) return candidate;
  }
  return undefined;
}

async function pythonTorch(python: string): Promise<string | undefined> {
  // find_spec locates the package without importing torch (which takes seconds).
  const code =
    "import importlib.util as u; s = u.find_spec('torch'); print(s.submodule_search_locations[0] if s else '')";
  try {
    const out = await new Deno.Command(python, { args: ["-c", code], stdout: "piped", stderr: "null" })
      .output();
    const path = new TextDecoder().decode(out.stdout).trim();
    return out.success && path && await isLibtorchRoot(path) ? path : undefined;
  } catch {
    return undefined; // no such interpreter
  }
}

async function readVersion(root: string): Promise<string> {
  // An unpacked libtorch zip has build-version; a pip wheel has version.py.
  for (const file of ["build-version", "version.py"]) {
    try {
      const text = await Deno.readTextFile(join(root, file));
      const match = text.match(/__version__\s*=\s*['"]([^'"]+)['"]/) ?? text.match(/^\s*(\S+)\s*$/);
      if (match) return match[1];
    } catch { /* try the next */ }
  }
  return "unknown";
}

async function detectCxx11Abi(root: string): Promise<0 | 1> {
  // torch.compiled_with_cxx11_abi() without Python: an ABI=1 build exports std::__cxx11 symbols from c10.
  const bytes = await Deno.readFile(join(root, "lib", "libc10.so"));
  const needle = new TextEncoder().encode("__cxx11");
  outer: for (let i = 0; i + needle.length <= bytes.length; i++) {
    for (let j = 0; j < needle.length; j++) if (bytes[i + j] !== needle[j]) continue outer;
    return 1;
  }
  return 0;
}

async function describe(root: string, foundVia: string): Promise<Libtorch> {
  return {
    root,
    foundVia,
    version: await readVersion(root),
    hasCuda: await exists(join(root, "lib", "libtorch_cuda.so")),
    cxx11Abi: await detectCxx11Abi(root),
  };
}

/** Finds libtorch (see the module docs for the search order), or throws an Error saying how to get one. */
export async function findLibtorch(search: LibtorchSearch = defaultSearch()): Promise<Libtorch> {
  if (search.env) {
    if (await isLibtorchRoot(search.env)) return describe(search.env, "LIBTORCH");
    throw new Error(
      `LIBTORCH=${search.env} is not a libtorch folder (expected include/torch and lib/libtorch.so)`,
    );
  }
  const venv = await venvTorch(search.venv);
  if (venv) return describe(venv, "the project virtualenv (.venv)");
  const python = await pythonTorch(search.python);
  if (python) return describe(python, `the torch of ${search.python}`);
  for (const dir of search.archives) {
    if (await isLibtorchRoot(dir)) return describe(dir, "an unpacked archive");
  }
  throw new Error(
    [
      "libtorch not found. Looked for:",
      "  - the LIBTORCH environment variable (unset)",
      `  - a torch package in the virtualenv ${search.venv}`,
      `  - torch in the Python interpreter ${search.python} (set PYTHON to use another)`,
      ...search.archives.map((d) => `  - an unpacked libtorch archive in ${d}`),
      "Get one with `./setup.sh` (makes .venv with torch==2.11.0), `pip install torch==2.11.0`,",
      "or unpack a libtorch zip from pytorch.org and set LIBTORCH to its folder.",
    ].join("\n"),
  );
}

/** Whether to link CUDA: when libtorch has it and a GPU is visible, unless DISTRINEWS_CUDA says otherwise. */
async function wantCuda(lib: Libtorch): Promise<boolean> {
  const setting = Deno.env.get("DISTRINEWS_CUDA");
  if (setting === "0") return false;
  if (setting === "1") {
    if (!lib.hasCuda) throw new Error(`DISTRINEWS_CUDA=1 but ${lib.root} has no libtorch_cuda.so`);
    return true;
  }
  // Loading libtorch_cuda pulls in gigabytes of CUDA libraries; on a machine without a GPU that is only cost.
  // /dev/nvidiactl on Linux, /dev/dxg under WSL2.
  return lib.hasCuda && (await exists("/dev/nvidiactl") || await exists("/dev/dxg"));
}

/** Where CUDA's and NCCL's headers are, when building with CUDA. */
interface CudaHeaders {
  dirs: string[];
  /** nccl.h was found: DDP across GPUs is compiled in. */
  nccl: boolean;
}

/**
 * CUDA runtime and NCCL headers for the NCCL process group: CUDA_HOME / /usr/local/cuda, and the NVIDIA pip
 * packages beside torch (site-packages/nvidia/<package>/include). NCCL is compiled in only when a complete
 * set is found (the runtime headers with their crt/ folder, which pip's runtime package lacks, and nccl.h)
 * and DISTRINEWS_NCCL is not "0"; otherwise the CUDA build still works, with Gloo as its only backend.
 */
async function findCudaHeaders(lib: Libtorch): Promise<CudaHeaders> {
  if (Deno.env.get("DISTRINEWS_NCCL") === "0") return { dirs: [], nccl: false };
  const candidates = [Deno.env.get("CUDA_HOME"), "/usr/local/cuda"].filter((d): d is string => !!d)
    .map((d) => join(d, "include"));
  const nvidia = join(dirname(lib.root), "nvidia");
  if (await exists(nvidia)) {
    for await (const entry of Deno.readDir(nvidia)) candidates.push(join(nvidia, entry.name, "include"));
  }
  let runtime: string | undefined, nccl: string | undefined;
  for (const dir of candidates) {
    if (
      !runtime && await exists(join(dir, "cuda_runtime_api.h")) &&
      await exists(join(dir, "crt", "host_config.h"))
    ) {
      runtime = dir;
    }
    if (!nccl && await exists(join(dir, "nccl.h"))) nccl = dir;
  }
  if (!runtime || !nccl) {
    console.error(
      `note: building without NCCL (${!runtime ? "no complete CUDA runtime headers" : "no nccl.h"} in ` +
        `${candidates.join(", ")}); multi-GPU DDP needs it: set CUDA_HOME`,
    );
    return { dirs: [], nccl: false };
  }
  return { dirs: [...new Set([runtime, nccl])], nccl: true };
}

function compileFlags(lib: Libtorch, cuda: CudaHeaders | undefined): string[] {
  const include = join(lib.root, "include");
  return [
    "-std=c++17",
    "-O2",
    "-fPIC",
    "-fvisibility=hidden",
    "-Wall",
    "-Wno-unused-parameter",
    `-D_GLIBCXX_USE_CXX11_ABI=${lib.cxx11Abi}`,
    ...(cuda ? ["-DDISTRINEWS_CUDA=1", ...cuda.dirs.map((d) => `-I${d}`)] : []),
    // ProcessGroupNCCL.hpp is only meaningful with this macro, as in libtorch's own build.
    ...(cuda?.nccl ? ["-DUSE_C10D_NCCL", "-DDISTRINEWS_NCCL=1"] : []),
    // libtorch builds c10d with Gloo; its headers say so through this macro.
    "-DUSE_C10D_GLOO",
    `-I${include}`,
    // ProcessGroupGloo.hpp includes Gloo headers the wheel does not ship: see shim/gloo_decls/gloo/context.h.
    `-I${join(SHIM_DIR, "gloo_decls")}`,
    `-I${join(include, "torch", "csrc", "api", "include")}`,
  ];
}

function linkFlags(lib: Libtorch, cuda: boolean): string[] {
  const libDir = join(lib.root, "lib");
  return [
    "-shared",
    `-L${libDir}`,
    `-Wl,-rpath,${libDir}`,
    // torch_cuda registers CUDA kernels from static initialisers, so it must be linked even though no
    // symbol of it is referenced directly.
    ...(cuda ? ["-Wl,--no-as-needed", "-ltorch_cuda", "-lc10_cuda", "-Wl,--as-needed"] : []),
    "-ltorch",
    "-ltorch_cpu",
    "-lc10",
  ];
}

async function sha256Hex(parts: (string | Uint8Array)[]): Promise<string> {
  const chunks = parts.map((p) => typeof p === "string" ? new TextEncoder().encode(p + "\0") : p);
  const total = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const c of chunks) total.set(c, offset), offset += c.length;
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", total));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("").slice(0, 16);
}

/**
 * What identifies the libtorch binaries and the compiler beyond their paths: sizes and modification times
 * of the libraries linked (a reinstall in place changes them), and `g++ --version`.
 */
async function toolchainFingerprint(lib: Libtorch): Promise<string[]> {
  const parts: string[] = [];
  for (const name of ["libc10.so", "libtorch_cpu.so", "libtorch.so", "libtorch_cuda.so"]) {
    try {
      const info = await Deno.stat(join(lib.root, "lib", name));
      parts.push(`${name}:${info.size}:${info.mtime?.getTime() ?? 0}`);
    } catch { /* not every libtorch has every library */ }
  }
  const gxx = await new Deno.Command("g++", { args: ["--version"], stdout: "piped", stderr: "null" }).output()
    .catch(() => undefined);
  parts.push(gxx?.success ? new TextDecoder().decode(gxx.stdout).split("\n")[0] : "g++ missing");
  return parts;
}

async function run(cmd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    const err = new TextDecoder().decode(out.stderr);
    throw new Error(`${cmd} failed (exit ${out.code}):\n${err.slice(-6000)}`);
  }
}

/**
 * Builds the shim if no library for these sources, this libtorch and these flags exists yet; returns
 * its path. Safe to call from several processes at once (DDP ranks): each writes a private temporary
 * file and renames it into place.
 */
export async function buildShim(options: { quiet?: boolean } = {}): Promise<BuildResult> {
  const lib = await findLibtorch();
  const cuda = await wantCuda(lib);
  const cflags = compileFlags(lib, cuda ? await findCudaHeaders(lib) : undefined);
  const lflags = linkFlags(lib, cuda);
  const sources = await Promise.all([...SOURCES, ...HEADERS].map((f) => Deno.readFile(join(SHIM_DIR, f))));
  const hash = await sha256Hex([
    lib.root,
    lib.version,
    ...await toolchainFingerprint(lib),
    ...cflags,
    ...lflags,
    ...sources,
  ]);
  const outDir = join(BUILD_DIR, hash);
  const library = join(outDir, "libdistrinews.so");
  if (await exists(library)) return { library, libtorch: lib, cached: true };

  const log = options.quiet ? () => {} : (msg: string) => console.error(msg);
  log(
    `building the native shim against libtorch ${lib.version} (${lib.foundVia}: ${lib.root})` +
      `${cuda ? " with CUDA" : ""}...`,
  );
  await Deno.mkdir(outDir, { recursive: true });
  const tag = `${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  // Translation units compile in parallel (one per core is plenty: each is dominated by torch headers).
  const objects = SOURCES.map((src) => join(outDir, `${src}.${tag}.o`));
  const tmpLibrary = `${library}.${tag}.tmp`;
  const started = performance.now();
  try {
    await Promise.all(
      SOURCES.map((src, i) => run("g++", [...cflags, "-c", join(SHIM_DIR, src), "-o", objects[i]])),
    );
    await run("g++", ["-o", tmpLibrary, ...objects, ...lflags]);
    await Deno.rename(tmpLibrary, library);
  } finally {
    for (const file of [...objects, tmpLibrary]) await Deno.remove(file).catch(() => {});
  }
  log(`built ${library} in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  return { library, libtorch: lib, cached: false };
}

if (import.meta.main) {
  try {
    const result = await buildShim();
    console.log(result.cached ? `up to date: ${result.library}` : `built: ${result.library}`);
  } catch (err) {
    console.error(`build failed: ${err instanceof Error ? err.message : err}`);
    Deno.exit(1);
  }
}
