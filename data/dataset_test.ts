import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { BertTokenizer } from "./tokenizer.ts";
import { cacheKey, defaultCacheDir, type TextRecord, TokenizedDataset } from "./dataset.ts";

const tokenizer = await BertTokenizer.bundled();

/** The 300 AG News test rows of the fixture, as records (label = class - 1). */
function fixtureRecords(): TextRecord[] {
  const csv = Deno.readTextFileSync(new URL("./fixtures/ag_news_test_head300.csv", import.meta.url));
  return csv.split("\n").filter((line) => line !== "").map((line) => {
    const m = /^"(\d)","(.*)","(.*)"$/.exec(line);
    if (m === null) throw new Error(`unexpected fixture line ${line}`);
    const unquote = (s: string) => s.replaceAll('""', '"');
    return { label: Number(m[1]) - 1, text: `${unquote(m[2])} ${unquote(m[3])}` };
  });
}

/** SHA-256 over everything a dataset holds. */
function contentDigest(ds: TokenizedDataset): string {
  const h = createHash("sha256");
  for (const a of [ds.labels, ds.offsets, ds.lengths, Int32Array.from(ds.tokenIds)]) {
    h.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  }
  h.update(`${ds.length} ${ds.maxLength} ${ds.padId} ${ds.vocabSize} ${ds.key}`);
  return h.digest("hex");
}

function assertSameContent(a: TokenizedDataset, b: TokenizedDataset): void {
  assert.equal(a.length, b.length);
  assert.deepEqual(a.labels, b.labels);
  assert.deepEqual(a.lengths, b.lengths);
  assert.deepEqual(a.offsets, b.offsets);
  assert.deepEqual(Array.from(a.tokenIds), Array.from(b.tokenIds));
  assert.equal(a.key, b.key);
}

async function listDir(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  return names.sort();
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "distrinews-dataset-test-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("build tokenizes each text once as the tokenizer does, then reuses the cache", async () => {
  await withTempDir(async (dir) => {
    const records = fixtureRecords();
    const warnings: string[] = [];
    const log = (m: string) => warnings.push(m);
    const first = await TokenizedDataset.build(records, tokenizer, { cacheDir: dir, log });
    assert.equal(first.cacheHit, false);
    assert.equal(first.length, 300);
    assert.ok(first.tokenIds instanceof Uint16Array);
    for (let i = 0; i < records.length; i++) {
      const expected = tokenizer.encode(records[i].text, { maxLength: 128 }).ids;
      assert.deepEqual(Array.from(first.ids(i)), expected, `row ${i}`);
      assert.equal(first.lengths[i], expected.length);
      assert.equal(first.labels[i], records[i].label);
    }
    assert.equal(first.totalTokens, first.lengths.reduce((a, b) => a + b, 0));

    const second = await TokenizedDataset.build(records, tokenizer, { cacheDir: dir, log });
    assert.equal(second.cacheHit, true);
    assert.equal(second.cachePath, first.cachePath);
    assertSameContent(first, second);
    assert.equal(contentDigest(first), contentDigest(second));
    // ids(i) is a view into the shared buffer, not a copy.
    assert.equal(second.ids(3).buffer, second.tokenIds.buffer);
    assert.throws(() => second.ids(300), RangeError);
    assert.throws(() => second.ids(-1), RangeError);
    assert.deepEqual(await listDir(dir), [first.cachePath!.split("/").pop()]);
    assert.deepEqual(warnings, []);
  });
});

Deno.test("truncation to maxLength keeps [CLS] … [SEP]; cacheDir null stays in memory", async () => {
  const records = fixtureRecords().slice(0, 20);
  const ds = await TokenizedDataset.build(records, tokenizer, { maxLength: 8, cacheDir: null });
  assert.equal(ds.cacheHit, false);
  assert.equal(ds.cachePath, undefined);
  for (let i = 0; i < ds.length; i++) {
    const ids = ds.ids(i);
    assert.equal(ids.length, 8);
    assert.equal(ids[0], tokenizer.clsId);
    assert.equal(ids[7], tokenizer.sepId);
  }
  await assert.rejects(
    TokenizedDataset.build(records, tokenizer, { maxLength: 1, cacheDir: null }),
    RangeError,
  );
  await assert.rejects(
    TokenizedDataset.build([{ text: "x", label: 0.5 }], tokenizer, { cacheDir: null }),
    /label must be/,
  );
});

Deno.test("a cache folder that cannot be made: a warning, and the dataset is tokenized in memory", async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, "a-file");
    await Deno.writeTextFile(file, "not a folder");
    const warnings: string[] = [];
    const records = fixtureRecords().slice(0, 10);
    const ds = await TokenizedDataset.build(records, tokenizer, {
      cacheDir: join(file, "cache"),
      log: (m) => warnings.push(m),
    });
    assert.equal(ds.cacheHit, false);
    assert.equal(ds.cachePath, undefined);
    assert.equal(ds.length, 10);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /is unusable .*tokenizing without a cache/);
  });
});

Deno.test("the cache key follows the data, the vocab and maxLength, and nothing else", async () => {
  const records = fixtureRecords().slice(0, 50);
  const key = cacheKey(records, tokenizer, 128);
  assert.match(key, /^[0-9a-f]{64}$/);
  assert.equal(cacheKey(records.map((r) => ({ ...r })), tokenizer, 128), key, "a copy of the data");
  assert.equal(cacheKey(records, await BertTokenizer.bundled(), 128), key, "another instance, same vocab");

  const changed = (edit: (rs: TextRecord[]) => void) => {
    const copy = records.map((r) => ({ ...r }));
    edit(copy);
    return cacheKey(copy, tokenizer, 128);
  };
  const variants = new Map<string, string>([
    ["maxLength", cacheKey(records, tokenizer, 64)],
    ["a text", changed((rs) => rs[7].text += "!")],
    ["a label", changed((rs) => rs[7].label = (rs[7].label + 1) % 4)],
    ["the order", changed((rs) => rs.reverse())],
    ["one row fewer", changed((rs) => rs.pop())],
    ["text moved to the neighbour", changed((rs) => [rs[0].text, rs[1].text] = ["ab", "c"])],
    ["text moved to the neighbour (2)", changed((rs) => [rs[0].text, rs[1].text] = ["a", "bc"])],
  ]);
  // A vocab with one token changed (same size): same special tokens, different ids for one word.
  const vocabText = await Deno.readTextFile(new URL("./vocab/bert-base-uncased-vocab.txt", import.meta.url));
  const edited = vocabText.replace("\nthe\n", "\nthe-edited\n");
  assert.notEqual(edited, vocabText);
  variants.set("the vocab", cacheKey(records, BertTokenizer.fromVocabText(edited), 128));
  for (const [what, other] of variants) assert.notEqual(other, key, `changing ${what} must change the key`);
  assert.equal(new Set(variants.values()).size, variants.size);

  await withTempDir(async (dir) => {
    const a = await TokenizedDataset.build(records, tokenizer, { cacheDir: dir });
    const b = await TokenizedDataset.build(records, tokenizer, { cacheDir: dir, maxLength: 64 });
    assert.equal(b.cacheHit, false, "another maxLength must not reuse the file");
    assert.notEqual(a.cachePath, b.cachePath);
    assert.equal(a.key, key);
    assert.equal((await listDir(dir)).length, 2);
  });
});

Deno.test("default cache folder: $DISTRINEWS_CACHE/tokenized, else ~/.cache/distrinews/tokenized", () => {
  const saved = { cache: Deno.env.get("DISTRINEWS_CACHE"), xdg: Deno.env.get("XDG_CACHE_HOME") };
  try {
    Deno.env.set("DISTRINEWS_CACHE", "/tmp/dn-cache-root");
    assert.equal(defaultCacheDir(), "/tmp/dn-cache-root/tokenized");
    Deno.env.delete("DISTRINEWS_CACHE");
    Deno.env.delete("XDG_CACHE_HOME");
    assert.match(defaultCacheDir(), /\/\.cache\/distrinews\/tokenized$/);
  } finally {
    for (const [name, value] of [["DISTRINEWS_CACHE", saved.cache], ["XDG_CACHE_HOME", saved.xdg]]) {
      if (value === undefined) Deno.env.delete(name!);
      else Deno.env.set(name!, value);
    }
  }
});

Deno.test("a corrupt, truncated or foreign cache file is detected, reported and rebuilt", async () => {
  await withTempDir(async (dir) => {
    const records = fixtureRecords();
    const good = await TokenizedDataset.build(records, tokenizer, { cacheDir: dir });
    const path = good.cachePath!;
    const original = await Deno.readFile(path);
    const other = await TokenizedDataset.build(records.slice(1), tokenizer, { cacheDir: dir });
    const foreign = await Deno.readFile(other.cachePath!);
    const headerLength = new DataView(original.buffer).getUint32(8, true);
    const header = JSON.parse(new TextDecoder().decode(original.subarray(12, 12 + headerLength)));
    assert.equal(header.idType, "uint16");
    assert.equal(header.labelType, "int8");
    const flipped = (at: number) => {
      const copy = original.slice();
      copy[at] ^= 0x40;
      return copy;
    };
    const cases: [string, Uint8Array, RegExp][] = [
      ["truncated", original.subarray(0, original.length - 1000), /truncated/],
      ["cut inside the header", original.subarray(0, 40), /truncated header/],
      ["empty", new Uint8Array(0), /only 0 bytes/],
      ["a flipped bit in the ids", flipped(original.length - 200), /checksum/],
      ["a flipped bit in the offsets", flipped(header.offsetsAt + 4 * 5), /checksum/],
      ["a flipped bit in the labels", flipped(header.labelsAt + 7), /checksum/],
      ["a flipped bit in the header", flipped(12 + 3), /unreadable header|format/],
      ["garbage", new TextEncoder().encode("not a cache file at all, just text"), /bad magic/],
      ["another dataset's file", foreign, /key does not match/],
    ];
    for (const [what, bytes, why] of cases) {
      await Deno.writeFile(path, bytes);
      const warnings: string[] = [];
      const ds = await TokenizedDataset.build(records, tokenizer, {
        cacheDir: dir,
        log: (m) => warnings.push(m),
      });
      assert.equal(ds.cacheHit, false, what);
      assert.equal(warnings.length, 1, `${what}: ${warnings}`);
      assert.match(warnings[0], why, what);
      assert.match(warnings[0], /rebuilding/);
      assertSameContent(ds, good);
      assert.deepEqual(await Deno.readFile(path), original, `${what}: the file is rewritten whole`);
      await assert.rejects(TokenizedDataset.load(join(dir, "missing.dntok")), Deno.errors.NotFound);
    }
    assert.deepEqual((await listDir(dir)).filter((n) => !n.endsWith(".dntok")), [], "no temp or lock files");
  });
});

Deno.test("an abandoned lock is broken; a live one is waited for", async () => {
  await withTempDir(async (dir) => {
    const records = fixtureRecords().slice(0, 40);
    const probe = await TokenizedDataset.build(records, tokenizer, { cacheDir: null });
    const path = join(dir, `tokenized-${probe.key.slice(0, 32)}.dntok`);
    const lockPath = `${path}.lock`;

    // A lock left by a process of this host that has exited.
    const exited = new Deno.Command(Deno.execPath(), { args: ["--version"], stdout: "null" }).spawn();
    await exited.status;
    await Deno.writeTextFile(
      lockPath,
      JSON.stringify({ pid: exited.pid, host: Deno.hostname(), token: "x" }),
    );
    let warnings: string[] = [];
    let ds = await TokenizedDataset.build(records, tokenizer, {
      cacheDir: dir,
      log: (m) => warnings.push(m),
    });
    assert.equal(ds.cacheHit, false);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], new RegExp(`process ${exited.pid} is gone`));
    assert.deepEqual(await listDir(dir), [path.split("/").pop()]);

    // A lock of another host that nobody has touched for longer than lockStaleMs.
    await Deno.remove(path);
    await Deno.writeTextFile(lockPath, JSON.stringify({ pid: 1, host: "elsewhere", token: "y" }));
    const old = new Date(Date.now() - 60_000);
    await Deno.utime(lockPath, old, old);
    warnings = [];
    ds = await TokenizedDataset.build(records, tokenizer, {
      cacheDir: dir,
      lockStaleMs: 30_000,
      log: (m) => warnings.push(m),
    });
    assert.equal(ds.cacheHit, false);
    assert.match(warnings.join("\n"), /untouched for \d+ s/);

    // A live lock (this very process, fresh): the builder waits until it is released.
    await Deno.remove(path);
    await Deno.writeTextFile(lockPath, JSON.stringify({ pid: Deno.pid, host: Deno.hostname(), token: "z" }));
    const released = new Promise<number>((resolve) =>
      setTimeout(() => {
        Deno.removeSync(lockPath);
        resolve(performance.now());
      }, 400)
    );
    warnings = [];
    ds = await TokenizedDataset.build(records, tokenizer, {
      cacheDir: dir,
      pollMs: 10,
      log: (m) => warnings.push(m),
    });
    const finished = performance.now();
    assert.ok(finished >= await released, "the builder must not go ahead while the lock is held");
    assert.equal(ds.cacheHit, false);
    assert.deepEqual(warnings, []);
    assert.deepEqual(await listDir(dir), [path.split("/").pop()]);
  });
});

Deno.test("three processes building the same dataset at once: one writer, one file, identical content", async () => {
  await withTempDir(async (dir) => {
    // Enough rows that tokenizing takes a while, so the three really overlap.
    const base = fixtureRecords();
    const records: TextRecord[] = [];
    for (let i = 0; i < 12_000; i++) {
      const r = base[i % base.length];
      records.push({ label: r.label, text: `${r.text} variant ${i}` });
    }
    const recordsPath = join(dir, "records.json");
    await Deno.writeTextFile(recordsPath, JSON.stringify(records));
    const cacheDir = join(dir, "cache");
    const startAt = Date.now() + 2500; // a common start, after all three have loaded
    const code = `
      import { BertTokenizer } from ${JSON.stringify(new URL("./tokenizer.ts", import.meta.url).href)};
      import { TokenizedDataset } from ${JSON.stringify(new URL("./dataset.ts", import.meta.url).href)};
      import { createHash } from "node:crypto";
      const records = JSON.parse(await Deno.readTextFile(${JSON.stringify(recordsPath)}));
      const tokenizer = await BertTokenizer.bundled();
      while (Date.now() < ${startAt}) await new Promise((r) => setTimeout(r, 2));
      const warnings = [];
      const ds = await TokenizedDataset.build(records, tokenizer, {
        cacheDir: ${JSON.stringify(cacheDir)}, pollMs: 5, log: (m) => warnings.push(m),
      });
      const h = createHash("sha256");
      for (const a of [ds.labels, ds.offsets, ds.lengths, Int32Array.from(ds.tokenIds)]) {
        h.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
      }
      h.update(\`\${ds.length} \${ds.maxLength} \${ds.padId} \${ds.vocabSize} \${ds.key}\`);
      console.log(JSON.stringify({ hit: ds.cacheHit, digest: h.digest("hex"), path: ds.cachePath, warnings }));
    `;
    const children = [0, 1, 2].map(() =>
      new Deno.Command(Deno.execPath(), { args: ["eval", code], stdout: "piped", stderr: "piped" }).output()
    );
    const results = (await Promise.all(children)).map((out) => {
      const stderr = new TextDecoder().decode(out.stderr);
      assert.ok(out.success, `a builder failed:\n${stderr}`);
      return JSON.parse(new TextDecoder().decode(out.stdout)) as {
        hit: boolean;
        digest: string;
        path: string;
        warnings: string[];
      };
    });
    assert.ok(Date.now() > startAt);
    const inProcess = await TokenizedDataset.build(records, tokenizer, { cacheDir });
    assert.equal(inProcess.cacheHit, true);
    const expected = contentDigest(inProcess);
    for (const r of results) {
      assert.equal(r.digest, expected);
      assert.equal(r.path, inProcess.cachePath);
      assert.deepEqual(r.warnings, []);
    }
    assert.equal(results.filter((r) => !r.hit).length, 1, "exactly one process tokenizes and writes");
    assert.deepEqual(await listDir(cacheDir), [inProcess.cachePath!.split("/").pop()]);
  });
});
