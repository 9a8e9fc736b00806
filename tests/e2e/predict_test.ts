// The predict command as a user runs it: a real process, a real checkpoint, JSON lines out.
import assert from "node:assert/strict";
import { join } from "node:path";
import { DistilBertClassifier } from "../../ffi/model.ts";
import { BertTokenizer } from "../../data/tokenizer.ts";
import { saveCheckpoint } from "../../weights/checkpoint.ts";
import { TextClassifier } from "../../inference/text_classifier.ts";
import { ROOT, tempDir, tinyConfig } from "../helpers.ts";

async function predict(args: string[], stdin?: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "predict.ts", ...args],
    cwd: ROOT,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const out = await child.output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

Deno.test("predict prints one JSON line per text, equal to in-process classification", async () => {
  await using tmp = await tempDir();
  const dir = join(tmp.path, "ckpt");
  // The real vocabulary with a small model: ids up to 30521 must fit the embedding.
  using model = await DistilBertClassifier.create(tinyConfig({ vocab_size: 30522 }), {
    device: "cpu",
    seed: 3,
  });
  await saveCheckpoint(dir, model, { tokenizer: await BertTokenizer.bundled() });
  const texts = [
    "Oil prices climb as supply fears grow",
    "Late goal wins the derby",
    "New chip doubles AI speed",
  ];
  const run = await predict(["--checkpoint", dir, ...texts]);
  assert.equal(run.code, 0, run.stderr);
  const lines = run.stdout.trim().split("\n").map((l) => JSON.parse(l));
  assert.equal(lines.length, 3);
  using classifier = await TextClassifier.load(dir, { device: "cpu" });
  const expected = classifier.classify(texts);
  lines.forEach((line, i) => {
    assert.equal(line.text, texts[i]);
    assert.deepEqual(Object.keys(line.probabilities), ["World", "Sports", "Business", "Sci/Tech"]);
    assert.equal(line.label, expected[i].label);
    assert.equal(line.label_id, expected[i].label_id);
    assert.ok(Math.abs(line.confidence - expected[i].confidence) < 1e-6);
    const sum = Object.values(line.probabilities as Record<string, number>).reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(sum - 1) < 1e-5);
  });
  // Lines on stdin work the same way; blank lines are skipped.
  const piped = await predict(["--checkpoint", dir], texts.join("\n") + "\n\n");
  assert.equal(piped.code, 0, piped.stderr);
  assert.equal(piped.stdout.trim().split("\n").length, 3);
});

Deno.test("predict fails cleanly: usage errors exit 2, a missing or corrupt checkpoint exits 1", async () => {
  await using tmp = await tempDir();
  const missing = await predict(["--checkpoint", join(tmp.path, "nope"), "text"]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /nope is neither an existing path nor a model id: no such file or folder/);
  assert.doesNotMatch(missing.stderr, / {4}at /, "no stack trace");
  const flag = await predict(["--bogus", "text"]);
  assert.equal(flag.code, 2);
  assert.match(flag.stderr, /Unknown option '--bogus'[\s\S]*Usage:/);
  const badInt = await predict(["--max-length", "zero", "text"]);
  assert.equal(badInt.code, 2);
  assert.match(badInt.stderr, /--max-length must be a positive integer/);
  const noText = await predict(["--checkpoint", tmp.path], "");
  assert.equal(noText.code, 2);
  assert.match(noText.stderr, /no text to classify/);
  await Deno.writeTextFile(join(tmp.path, "config.json"), "{}");
  await Deno.writeFile(join(tmp.path, "model.safetensors"), new Uint8Array([1, 2, 3]));
  const corrupt = await predict(["--checkpoint", tmp.path, "text"]);
  assert.equal(corrupt.code, 1);
  assert.match(corrupt.stderr, /not a valid safetensors file/);
});

Deno.test("predict without a checkpoint says how to make one; local-looking names never reach the Hub", async () => {
  await using tmp = await tempDir();
  await Deno.mkdir(join(tmp.path, "checkpoints"));
  const script = join(ROOT, "predict.ts");
  // An endpoint nobody listens on: were a name sent to the Hub, the message would be a connection error.
  const run = (args: string[]) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script, ...args],
      cwd: tmp.path,
      stdout: "piped",
      stderr: "piped",
      env: { HF_ENDPOINT: "http://127.0.0.1:9", HF_HUB_CACHE: join(tmp.path, "hub") },
    }).output();
  const none = await run(["a headline"]);
  assert.equal(none.code, 1);
  assert.match(new TextDecoder().decode(none.stderr), /no checkpoint yet: .*Run \.\/setup\.sh/);
  const typo = await run(["--checkpoint", "checkpoints/best", "a headline"]);
  assert.equal(typo.code, 1);
  assert.match(
    new TextDecoder().decode(typo.stderr),
    /checkpoints\/best is neither an existing path nor a model id/,
  );
  const encoder = await run(["--checkpoint", "minilm", "a headline"]);
  assert.equal(encoder.code, 1);
  assert.match(
    new TextDecoder().decode(encoder.stderr),
    /minilm is a pretrained encoder, not a fine-tuned classifier/,
  );
});
