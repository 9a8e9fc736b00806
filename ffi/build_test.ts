// The build: cached by hash, finds libtorch where users keep it, clear when there is none.
import assert from "node:assert/strict";
import { join } from "node:path";
import { buildShim, defaultSearch, findLibtorch } from "./build.ts";

const nowhere = { venv: "/nonexistent/venv", python: "/nonexistent/python", archives: [] };

Deno.test("a second build is a cache hit naming the same library", async () => {
  const first = await buildShim({ quiet: true });
  const started = performance.now();
  const second = await buildShim({ quiet: true });
  assert.equal(second.cached, true);
  assert.equal(second.library, first.library);
  assert.ok(performance.now() - started < 2000, "a cached build only hashes sources");
  assert.match(second.libtorch.version, /^2\.\d+/);
  assert.equal(second.libtorch.cxx11Abi, 1, "torch 2.x wheels use the C++11 ABI");
});

Deno.test("libtorch is found through LIBTORCH, a Python's torch, or an unpacked archive folder", async () => {
  const venvTorch = (await findLibtorch({ ...defaultSearch(), env: undefined })).root;
  assert.equal((await findLibtorch({ ...nowhere, env: venvTorch })).foundVia, "LIBTORCH");
  const python = join(defaultSearch().venv, "bin", "python");
  const viaPython = await findLibtorch({ ...nowhere, python });
  assert.equal(viaPython.root, venvTorch);
  assert.match(viaPython.foundVia, /torch of .*python/);
  const viaArchive = await findLibtorch({ ...nowhere, archives: ["/nonexistent/libtorch", venvTorch] });
  assert.equal(viaArchive.foundVia, "an unpacked archive");
});

Deno.test("a wrong LIBTORCH and a machine without libtorch get errors that say what to do", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(() => findLibtorch({ ...nowhere, env: dir }), /is not a libtorch folder/);
    await assert.rejects(
      () => findLibtorch({ ...nowhere, archives: [dir] }),
      new RegExp(
        `libtorch not found[\\s\\S]*/nonexistent/venv[\\s\\S]*/nonexistent/python[\\s\\S]*${dir}` +
          "[\\s\\S]*setup\\.sh[\\s\\S]*LIBTORCH",
      ),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
