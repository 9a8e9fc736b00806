import assert from "node:assert/strict";
import { join } from "node:path";
import { checkImport, findViolations, relativeImports, roomOf } from "./layers.ts";
import { ROOT, tempDir } from "./helpers.ts";

Deno.test("layers: every import in the repository points down (tests/layers.ts)", async () => {
  const violations = await findViolations(ROOT);
  assert.deepEqual(violations.map((v) => `${v.file} -> ${v.target}: ${v.reason}`), []);
});

Deno.test("layers: the checker sees static, type-only, re-export and dynamic imports", () => {
  const source = [
    `import { a } from "../ffi/model.ts";`,
    `import type { B } from "./batch.ts";`,
    `export { c } from "../weights/zip.ts";`,
    `const d = await import("../server/app.ts");`,
    `import "../util/side_effect.ts";`,
    `import {\n  e,\n  f,\n} from "../data/tokenizer.ts";`,
    `import { g } from "node:path";`,
    `const s = "from './not_an_import.ts'";`,
  ].join("\n");
  assert.deepEqual(relativeImports(source), [
    "../ffi/model.ts",
    "./batch.ts",
    "../weights/zip.ts",
    "../server/app.ts",
    "../util/side_effect.ts",
    "../data/tokenizer.ts",
  ]);
});

Deno.test("layers: upward imports, peers and unknown rooms are refused; tests are leaves", () => {
  assert.equal(roomOf("train.ts"), ".");
  assert.equal(roomOf("tests/ddp/rank.ts"), "tests");
  assert.equal(checkImport("weights/checkpoint.ts", "ffi/model.ts"), undefined);
  assert.equal(checkImport("ffi/model.ts", "ffi/lib.ts"), undefined);
  assert.match(checkImport("ffi/model.ts", "weights/tensor.ts")!, /imports the higher room "weights"/);
  assert.match(checkImport("model/config.ts", "cli/args.ts")!, /peers/);
  assert.match(checkImport("server/app.ts", "train.ts")!, /higher room "\."/);
  assert.match(checkImport("newroom/x.ts", "util/fs.ts")!, /"newroom" is not in the layer table/);
  assert.equal(checkImport("ffi/model_test.ts", "weights/safetensors.ts"), undefined);
});

Deno.test("layers: a tree with an upward import and a cycle fails", async () => {
  await using dir = await tempDir();
  const write = async (path: string, text: string) => {
    await Deno.mkdir(join(dir.path, path, ".."), { recursive: true });
    await Deno.writeTextFile(join(dir.path, path), text);
  };
  await write("data/a.ts", `import { b } from "../weights/b.ts";\nexport const a = 1;\n`);
  await write("weights/b.ts", `import { a } from "../data/a.ts";\nexport const b = a;\n`);
  await write("util/c.ts", `export const c = await import("../../outside.ts");\n`);
  const violations = await findViolations(dir.path);
  assert.deepEqual(violations.map((v) => [v.file, v.target]), [
    ["data/a.ts", "weights/b.ts"],
    ["util/c.ts", "../outside.ts"],
  ]);
});
