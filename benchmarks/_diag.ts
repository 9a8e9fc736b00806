import { DistilBertClassifier } from "../ffi/model.ts";
import { DISTILBERT_BASE_UNCASED } from "../ffi/config.ts";
import { BertTokenizer } from "../data/tokenizer.ts";
import { saveCheckpoint } from "../weights/checkpoint.ts";
import { runLoad } from "./http_load.ts";
import { loadAgNewsCsv } from "../data/ag_news.ts";
const dir = "/tmp/fullckpt";
try {
  await Deno.stat(dir);
} catch {
  using m = await DistilBertClassifier.create({ ...DISTILBERT_BASE_UNCASED }, { device: "cpu", seed: 0 });
  await saveCheckpoint(dir, m, { tokenizer: await BertTokenizer.bundled() });
}
const extra = Deno.args;
const child = new Deno.Command(Deno.execPath(), {
  args: ["run", "-A", "serve.ts", "--checkpoint", dir, "--port", "8711", ...extra],
  stderr: "inherit",
  stdout: "inherit",
}).spawn();
for (;;) {
  try {
    const r = await fetch("http://127.0.0.1:8711/health");
    await r.body?.cancel();
    if (r.ok) break;
  } catch { /* */ }
  await new Promise((r) => setTimeout(r, 300));
}
const texts = (await loadAgNewsCsv("../shared/data/ag_news/test.csv.gz")).map((r) =>
  JSON.stringify({ text: r.text })
);
const res = await runLoad({
  url: "http://127.0.0.1:8711/predict",
  concurrency: 64,
  durationMs: 10000,
  warmupMs: 3000,
  bodies: texts,
});
console.log(JSON.stringify(res));
const m = await (await fetch("http://127.0.0.1:8711/metrics")).text();
console.log(
  m.split("\n").filter((l) =>
    /batch_size_(sum|count)|forward_batch_size_(sum|count)|forward_duration_seconds_(sum|count)/.test(l)
  ).join("\n"),
);
child.kill("SIGTERM");
await child.status;
