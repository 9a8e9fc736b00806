/**
 * `deno task predict [--checkpoint DIR] "some text" ...`: classifies texts with a checkpoint and prints
 * one JSON line per text: {text, label, label_id, confidence, probabilities}.
 * @module
 */

import { TextClassifier } from "./inference/text_classifier.ts";
import { setNumThreads } from "./ffi/model.ts";
import { runCli, UsageError } from "./cli/args.ts";
import { flags, parseFlagTable, usage } from "./cli/flags.ts";
import { defaultCheckpoint } from "./model/checkpoints.ts";
import { CHECKPOINT_FLAG, DEVICE_FLAG, THREADS_FLAG } from "./inference/flags.ts";

/** The flags of `deno task predict`, in the order the usage lists them. */
const PREDICT_FLAGS = {
  checkpoint: CHECKPOINT_FLAG,
  device: DEVICE_FLAG,
  "max-length": flags.int({ help: "tokens per text, [CLS] and [SEP] included", default: 128 }),
  "batch-size": flags.int({ help: "texts per forward pass", default: 32 }),
  threads: THREADS_FLAG,
};

const USAGE = usage(
  `Usage: deno task predict [options] [TEXT ...]

Classifies each TEXT (or, without TEXT arguments, each line of standard input) into an AG News topic
and prints one JSON line per text.`,
  PREDICT_FLAGS,
);

async function readStdinLines(): Promise<string[]> {
  const text = await new Response(Deno.stdin.readable).text();
  return text.split(/\r?\n/).filter((line) => line.trim() !== "");
}

async function main(args: string[]): Promise<void> {
  const { values, positionals, help } = parseFlagTable(args, PREDICT_FLAGS);
  if (help) return console.log(USAGE);
  if (values.threads !== undefined) await setNumThreads(values.threads);
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
  const results = classifier.classify(texts, {
    maxLength: values["max-length"],
    batchSize: values["batch-size"],
  });
  results.forEach((r, i) => console.log(JSON.stringify({ text: texts[i], ...r })));
}

if (import.meta.main) await runCli(USAGE, () => main(Deno.args));
