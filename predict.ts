/**
 * `deno task predict [--checkpoint DIR] "some text" ...`: classifies texts with a checkpoint and prints
 * one JSON line per text: {text, label, label_id, confidence, probabilities}.
 * @module
 */

import { TextClassifier } from "./inference/text_classifier.ts";
import { setNumThreads } from "./ffi/model.ts";
import { parseFlags, positiveInt, runCli, UsageError } from "./cli/args.ts";
import { DEFAULT_CHECKPOINT_HELP, defaultCheckpoint } from "./model/checkpoints.ts";

const USAGE = `Usage: deno task predict [options] [TEXT ...]

Classifies each TEXT (or, without TEXT arguments, each line of standard input) into an AG News topic
and prints one JSON line per text.

Options:
  --checkpoint SRC   checkpoint directory or weights file, or a Hugging Face model id of a fine-tuned
                     DistilBERT (default ${DEFAULT_CHECKPOINT_HELP})
  --device DEV       auto | cpu | cuda | cuda:N (default auto)
  --max-length N     tokens per text, [CLS] and [SEP] included (default 128)
  --batch-size N     texts per forward pass (default 32)
  --threads N        libtorch intra-op threads (default: libtorch's choice)
  -h, --help         this help`;

async function readStdinLines(): Promise<string[]> {
  const text = await new Response(Deno.stdin.readable).text();
  return text.split(/\r?\n/).filter((line) => line.trim() !== "");
}

async function main(args: string[]): Promise<void> {
  const { values, positionals } = parseFlags(args, {
    checkpoint: { type: "string" },
    device: { type: "string", default: "auto" },
    "max-length": { type: "string" },
    "batch-size": { type: "string" },
    threads: { type: "string" },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const maxLength = positiveInt("max-length", values["max-length"], 128);
  const batchSize = positiveInt("batch-size", values["batch-size"], 32);
  if (values.threads !== undefined) await setNumThreads(positiveInt("threads", values.threads, 1));
  const texts = positionals.length > 0 ? positionals : Deno.stdin.isTerminal() ? [] : await readStdinLines();
  if (texts.length === 0) throw new UsageError("no text to classify: pass TEXT arguments or lines on stdin");

  using classifier = await TextClassifier.load(values.checkpoint ?? await defaultCheckpoint(), {
    device: values.device,
  });
  if (classifier.bundledTokenizer) {
    console.error(
      `note: ${classifier.files.dir} has no vocab.txt; using the bundled BERT uncased vocabulary`,
    );
  }
  const results = classifier.classify(texts, { maxLength, batchSize });
  results.forEach((r, i) => console.log(JSON.stringify({ text: texts[i], ...r })));
}

if (import.meta.main) await runCli(USAGE, () => main(Deno.args));
