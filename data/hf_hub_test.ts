/**
 * Hub downloads against local servers on 127.0.0.1 (random ports, shut down by each test): the cache layout
 * and its reuse without requests, offline mode, HTTP errors, cut and corrupt downloads, stalls, the token,
 * and that Python's huggingface_hub reads the same cache. Nothing here uses the network.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { tempDir, venvPython } from "../tests/helpers.ts";
import {
  AG_NEWS_HUB_FILES,
  AG_NEWS_REPO,
  loadAgNews,
  loadAgNewsFromHub,
  loadAgNewsParquet,
} from "./ag_news.ts";
import { hubCacheDir, hubDownload, HubError, hubFileUrl } from "./hf_hub.ts";

const FIXTURES = join(import.meta.dirname!, "fixtures", "ag_news");
const TRAIN = await Deno.readFile(join(FIXTURES, "train_sample.parquet"));
const TEST = await Deno.readFile(join(FIXTURES, "test_sample.parquet"));
const COMMIT = "0123456789abcdef0123456789abcdef01234567";
const RESOLVE = `/datasets/${AG_NEWS_REPO}/resolve/main/`;
const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

interface Seen {
  path: string;
  auth: string | null;
}

/** A Deno.serve server on 127.0.0.1 that records every request. */
function serve(handler: (req: Request, url: URL) => Response | Promise<Response>) {
  const requests: Seen[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const url = new URL(req.url);
    requests.push({ path: url.pathname, auth: req.headers.get("authorization") });
    return handler(req, url);
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    requests,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

/**
 * A fake Hub: `resolve/main/<file>` answers 302 with the Hub's headers (commit, size, SHA-256) and sends the
 * bytes from `cdn` (another origin, like the real CDN), or from itself when no cdn is given.
 */
function fakeHub(cdnUrl?: string) {
  const files: Record<string, Uint8Array> = {
    [AG_NEWS_HUB_FILES.train]: TRAIN,
    [AG_NEWS_HUB_FILES.test]: TEST,
  };
  return serve((_req, url) => {
    if (url.pathname.startsWith(RESOLVE)) {
      const file = url.pathname.slice(RESOLVE.length);
      const bytes = files[file];
      if (!bytes) {
        return new Response("Entry not found", { status: 404, headers: { "x-error-code": "EntryNotFound" } });
      }
      return new Response(null, {
        status: 302,
        headers: {
          location: `${cdnUrl ?? ""}/cdn/${file}`,
          "x-repo-commit": COMMIT,
          "x-linked-size": String(bytes.length),
          "x-linked-etag": `"${sha256(bytes)}"`,
        },
      });
    }
    if (url.pathname.startsWith("/cdn/")) {
      const bytes = files[url.pathname.slice(5)];
      if (bytes) return new Response(bytes.slice(), { headers: { "content-length": String(bytes.length) } });
    }
    return new Response("no", { status: 404 });
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

const HF_VARS = ["HF_HOME", "HF_HUB_CACHE", "HF_ENDPOINT", "HF_TOKEN", "HF_HUB_OFFLINE", "XDG_CACHE_HOME"];
const cleanEnv = (vars: Record<string, string | undefined>) => ({
  ...Object.fromEntries(HF_VARS.map((k) => [k, undefined])),
  ...vars,
});

Deno.test("the Hub loader downloads once into HF_HOME, then reads the cache without requests", async () => {
  await using cdn = fakeHub();
  await using hub = fakeHub(cdn.url);
  await using home = await tempDir();
  const expected = await loadAgNewsParquet(join(FIXTURES, "train_sample.parquet"));
  await withEnv(cleanEnv({ HF_HOME: home.path, HF_ENDPOINT: hub.url, HF_TOKEN: "hf_secret" }), async () => {
    assert.equal(hubCacheDir(), join(home.path, "hub"));
    assert.deepEqual(await loadAgNewsFromHub({ split: "train" }), expected);
    assert.deepEqual(hub.requests, [{ path: RESOLVE + AG_NEWS_HUB_FILES.train, auth: "Bearer hf_secret" }]);
    // The token goes to the Hub only, never to the CDN it redirects to.
    assert.deepEqual(cdn.requests, [{ path: `/cdn/${AG_NEWS_HUB_FILES.train}`, auth: null }]);

    const repo = "hub/datasets--fancyzhx--ag_news";
    assert.deepEqual(await listFiles(home.path), [
      `${repo}/refs/main`,
      `${repo}/snapshots/${COMMIT}/${AG_NEWS_HUB_FILES.train}`,
    ]);
    assert.equal(await Deno.readTextFile(join(home.path, repo, "refs", "main")), COMMIT);

    assert.deepEqual(await loadAgNewsFromHub({ split: "train" }), expected);
    assert.deepEqual(await loadAgNews("hub", { split: "train" }), expected);
    assert.equal(hub.requests.length + cdn.requests.length, 2, "the second and third loads make no request");
    await withEnv({ HF_HUB_OFFLINE: "1" }, async () => {
      assert.deepEqual(await loadAgNewsFromHub({ split: "train" }), expected, "offline, from the cache");
    });

    assert.deepEqual(
      await loadAgNewsFromHub({ split: "test" }),
      await loadAgNewsParquet(join(FIXTURES, "test_sample.parquet")),
    );
    assert.equal(hub.requests.length, 2);
  });
});

Deno.test("offline with an empty cache: no request, an error that says how to provide the file", async () => {
  await using hub = fakeHub();
  await using home = await tempDir();
  const cache = join(home.path, "hub");
  const placed = join(cache, "datasets--fancyzhx--ag_news", "snapshots", "main", AG_NEWS_HUB_FILES.test);
  const url = `${hub.url}${RESOLVE}${AG_NEWS_HUB_FILES.test}`;
  for (const options of [{ offline: true }, {}]) {
    await withEnv(cleanEnv({ HF_HOME: home.path, HF_HUB_OFFLINE: "1", HF_ENDPOINT: hub.url }), async () => {
      const err = await loadAgNewsFromHub({ split: "test", ...options }).then(() => undefined, (e) => e);
      assert.ok(err instanceof HubError, String(err));
      const why = options.offline ? "offline: true" : "HF_HUB_OFFLINE=1";
      assert.ok(err.message.includes(`offline mode (${why}) forbids downloading`), err.message);
      assert.ok(err.message.includes(`download ${url}\n  and save it as ${placed}`), err.message);
      assert.match(err.message, /pass the path of that parquet file, of the original AG News test\.csv/);
      assert.ok(!err.message.includes("shared"), "the product never points at the repository's shared data");
    });
  }
  assert.equal(hub.requests.length, 0);
  assert.deepEqual(await listFiles(home.path), []);

  // Following the advice works, still offline.
  await Deno.mkdir(join(placed, ".."), { recursive: true });
  await Deno.writeFile(placed, TEST);
  const records = await loadAgNewsFromHub({
    split: "test",
    cacheDir: cache,
    offline: true,
    endpoint: hub.url,
  });
  assert.equal(records.length, 120);
  assert.equal(hub.requests.length, 0);
});

Deno.test("HTTP 404 and 500 give clear errors and leave nothing in the cache", async () => {
  await using home = await tempDir();
  await using broken = serve((_req, url) =>
    url.pathname.includes("/test-")
      ? new Response("boom", { status: 500, statusText: "Internal Server Error" })
      : new Response("Entry not found", { status: 404, headers: { "x-error-message": "Entry not found" } })
  );
  const options = { cacheDir: home.path, endpoint: broken.url, offline: false, token: "" };
  await assert.rejects(
    loadAgNewsFromHub({ split: "train", ...options }),
    (e: unknown) => {
      assert.ok(e instanceof HubError);
      assert.equal(e.status, 404);
      assert.match(
        e.message,
        /download of http:\/\/127\.0\.0\.1:\d+\/datasets\/fancyzhx\/ag_news\/resolve\/main\//,
      );
      assert.match(e.message, /HTTP 404 Not Found: Entry not found \(check the repository, revision/);
      assert.match(e.message, /To provide the file by hand:\n- download /);
      return true;
    },
  );
  await assert.rejects(loadAgNewsFromHub({ split: "test", ...options }), /HTTP 500 Internal Server Error/);
  await assert.rejects(
    loadAgNewsFromHub({ split: "test", ...options, revision: "v2" }),
    (e: unknown) => e instanceof HubError && e.url.includes("/resolve/v2/data/test-00000-of-00001.parquet"),
  );
  assert.deepEqual(await listFiles(home.path), []);
});

/**
 * A raw HTTP/1.1 server on 127.0.0.1 that answers every request with `head` and `body`, then either closes
 * the connection (cut) or keeps it open until the client gives up (stall).
 */
function rawServer(head: string, body: Uint8Array, then: "close" | "stall") {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const handling: Promise<void>[] = [];
  const handle = async (conn: Deno.Conn) => {
    try {
      await conn.read(new Uint8Array(64 * 1024)); // the request (small, one read)
      await conn.write(new TextEncoder().encode(head));
      await conn.write(body);
      if (then === "stall") { while ((await conn.read(new Uint8Array(1024))) !== null); }
    } catch {
      // The client went away: that is the point of these tests.
    } finally {
      conn.close();
    }
  };
  const accepting = (async () => {
    for await (const conn of listener) handling.push(handle(conn));
  })().catch(() => {});
  return {
    url: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    async [Symbol.asyncDispose]() {
      listener.close();
      await accepting;
      await Promise.all(handling);
    },
  };
}

Deno.test("a cut connection (fewer bytes than Content-Length) fails and leaves no file behind", async () => {
  await using home = await tempDir();
  await using server = rawServer(
    `HTTP/1.1 200 OK\r\nContent-Length: ${TRAIN.length}\r\nConnection: close\r\n\r\n`,
    TRAIN.subarray(0, 1000),
    "close",
  );
  await assert.rejects(
    hubDownload(AG_NEWS_REPO, AG_NEWS_HUB_FILES.train, {
      cacheDir: home.path,
      endpoint: server.url,
      offline: false,
    }),
    (e: unknown) =>
      e instanceof HubError && e.message.includes(server.url) &&
      new RegExp(`connection failed after 1000 of ${TRAIN.length} bytes|incomplete`).test(e.message),
  );
  assert.deepEqual(await listFiles(home.path), []);
});

Deno.test("a body unlike its Content-Length, the Hub's size or the Hub's SHA-256 is refused", async () => {
  await using home = await tempDir();
  const file = AG_NEWS_HUB_FILES.train;
  const url = hubFileUrl(AG_NEWS_REPO, file, { endpoint: "http://hub.invalid" });
  const base = { cacheDir: home.path, endpoint: "http://hub.invalid", offline: false };
  // A fetch that claims a Content-Length its body does not have (what a cut transfer looks like).
  const short: typeof fetch = () =>
    Promise.resolve(
      new Response(TRAIN.slice(0, 100), { headers: { "content-length": String(TRAIN.length) } }),
    );
  await assert.rejects(
    hubDownload(AG_NEWS_REPO, file, { ...base, fetch: short }),
    new RegExp(`download of ${url} is incomplete or wrong: received 100 bytes, expected ${TRAIN.length}`),
  );
  const hubHeaders = (size: number, sha: string): typeof fetch => () =>
    Promise.resolve(
      new Response(TRAIN.slice(), { headers: { "x-linked-size": String(size), "x-linked-etag": sha } }),
    );
  await assert.rejects(
    hubDownload(AG_NEWS_REPO, file, { ...base, fetch: hubHeaders(TRAIN.length + 5, sha256(TRAIN)) }),
    /incomplete or wrong: received \d+ bytes, expected \d+/,
  );
  await assert.rejects(
    hubDownload(AG_NEWS_REPO, file, { ...base, fetch: hubHeaders(TRAIN.length, "0".repeat(64)) }),
    /is corrupt: SHA-256 [0-9a-f]{64}, the Hub says 0{64}/,
  );
  assert.deepEqual(await listFiles(home.path), []);
  // The same body with the right size and hash is accepted (so the checks above are what refused it).
  const path = await hubDownload(AG_NEWS_REPO, file, {
    ...base,
    fetch: hubHeaders(TRAIN.length, sha256(TRAIN)),
  });
  assert.deepEqual(await Deno.readFile(path), TRAIN);
  assert.deepEqual(await listFiles(home.path), [`datasets--fancyzhx--ag_news/snapshots/main/${file}`]);
});

Deno.test("a server that stops sending times out with a clear error", async () => {
  await using home = await tempDir();
  await using server = rawServer(
    `HTTP/1.1 200 OK\r\nContent-Length: ${TRAIN.length}\r\n\r\n`,
    TRAIN.subarray(0, 500),
    "stall",
  );
  const t0 = performance.now();
  await assert.rejects(
    hubDownload(AG_NEWS_REPO, AG_NEWS_HUB_FILES.test, {
      cacheDir: home.path,
      endpoint: server.url,
      offline: false,
      timeoutMs: 300,
    }),
    /timed out: no data for 0\.3 s in the middle of the file/,
  );
  assert.ok(performance.now() - t0 < 5000);
  assert.deepEqual(await listFiles(home.path), []);
  // Unreachable: a port nobody listens on.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deadPort = (listener.addr as Deno.NetAddr).port;
  listener.close();
  await assert.rejects(
    hubDownload(AG_NEWS_REPO, AG_NEWS_HUB_FILES.test, {
      cacheDir: home.path,
      endpoint: `http://127.0.0.1:${deadPort}`,
      offline: false,
    }),
    /could not reach 127\.0\.0\.1:\d+/,
  );
});

Deno.test("a slow but steady download is not a stall: each chunk restarts the clock", async () => {
  await using home = await tempDir();
  const pieces = 8;
  const step = Math.ceil(TEST.length / pieces);
  await using slow = serve(() =>
    new Response(
      new ReadableStream({
        async start(controller) {
          for (let i = 0; i < pieces; i++) {
            await new Promise((r) => setTimeout(r, 100));
            controller.enqueue(TEST.slice(i * step, (i + 1) * step));
          }
          controller.close();
        },
      }),
      { headers: { "content-length": String(TEST.length) } },
    )
  );
  // 8 pieces 100 ms apart: 800 ms in all, longer than the 500 ms allowed without data.
  const path = await hubDownload(AG_NEWS_REPO, AG_NEWS_HUB_FILES.test, {
    cacheDir: home.path,
    endpoint: slow.url,
    offline: false,
    timeoutMs: 500,
  });
  assert.deepEqual(await Deno.readFile(path), TEST);
});

Deno.test("Python's huggingface_hub finds our download in the same cache, and we find its", async () => {
  await using cdn = fakeHub();
  await using hub = fakeHub(cdn.url);
  await using cache = await tempDir();
  const path = await hubDownload(AG_NEWS_REPO, AG_NEWS_HUB_FILES.train, {
    cacheDir: cache.path,
    endpoint: hub.url,
    offline: false,
  });
  const script = "import sys\nfrom huggingface_hub import try_to_load_from_cache as t\n" +
    "print(t(sys.argv[1], sys.argv[2], cache_dir=sys.argv[3], repo_type='dataset'))";
  const out = await new Deno.Command(venvPython(), {
    args: ["-c", script, AG_NEWS_REPO, AG_NEWS_HUB_FILES.train, cache.path],
    env: { HF_HUB_OFFLINE: "1" },
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  assert.equal(new TextDecoder().decode(out.stdout).trim(), path);

  // The other way: huggingface_hub's layout (blobs + symlinks) written by hand, read by us offline.
  const repo = join(cache.path, "datasets--fancyzhx--ag_news");
  const commit = "f".repeat(40);
  await Deno.mkdir(join(repo, "blobs"), { recursive: true });
  await Deno.writeFile(join(repo, "blobs", sha256(TEST)), TEST);
  await Deno.mkdir(join(repo, "snapshots", commit, "data"), { recursive: true });
  await Deno.symlink(
    `../../../blobs/${sha256(TEST)}`,
    join(repo, "snapshots", commit, AG_NEWS_HUB_FILES.test),
  );
  await Deno.writeTextFile(join(repo, "refs", "v1"), commit);
  const records = await loadAgNewsFromHub({
    split: "test",
    revision: "v1",
    cacheDir: cache.path,
    offline: true,
  });
  assert.equal(records.length, 120);
  assert.equal(hub.requests.length, 1);
});
