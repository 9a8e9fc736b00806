/**
 * The TypeScript half of ./setup.sh: builds the native shim (cached) and runs the main job on an embedded
 * default, so a fresh clone shows the whole path from text to topic in one command.
 *
 * Until `deno task train` exists, the embedded default is a prediction with a small model. No trained
 * weights ship with the repository, so the demo model is freshly initialised (seed 42): the pipeline is
 * real (tokenizer, libtorch forward pass, checkpoint in Hugging Face's layout), its answer is not yet.
 * @module
 */

import { join } from "node:path";
import { buildShim } from "./ffi/build.ts";
import { DISTILBERT_SMALL } from "./ffi/config.ts";
import { DistilBertClassifier, torchVersion } from "./ffi/model.ts";
import { BertTokenizer } from "./data/tokenizer.ts";
import { saveCheckpoint } from "./weights/checkpoint.ts";
import { TextClassifier } from "./inference.ts";
import { exists } from "./util/fs.ts";

/** Where setup writes the demo checkpoint. */
export const DEMO_CHECKPOINT = join("checkpoints", "demo-small-untrained");

const HEADLINES = [
  "Stocks rally as Federal Reserve signals pause in rate hikes",
  "Champions League: late goal sends holders into the quarter-finals",
];

if (import.meta.main) {
  try {
    const build = await buildShim();
    console.log(
      `setup: native shim ${build.cached ? "up to date" : "built"} (${build.library}); ` +
        `libtorch ${build.libtorch.version} via ${build.libtorch.foundVia}`,
    );
    console.log(`setup: libtorch reports ${await torchVersion()}`);
    if (!await exists(DEMO_CHECKPOINT)) {
      using model = await DistilBertClassifier.create({ ...DISTILBERT_SMALL }, { device: "auto", seed: 42 });
      await saveCheckpoint(DEMO_CHECKPOINT, model, { tokenizer: await BertTokenizer.bundled() });
      console.log(
        `setup: wrote an untrained ${model.parameterCount().toLocaleString()}-parameter demo checkpoint`,
      );
    }
    using classifier = await TextClassifier.load(DEMO_CHECKPOINT);
    console.log(
      `setup: predicting with ${DEMO_CHECKPOINT} on ${classifier.model.device} (untrained: labels are arbitrary)`,
    );
    const results = classifier.classify(HEADLINES);
    results.forEach((r, i) => console.log(JSON.stringify({ text: HEADLINES[i], ...r })));
    console.log("setup: done. Run the tests with: deno task test");
  } catch (err) {
    console.error(`setup failed: ${err instanceof Error ? err.message : err}`);
    Deno.exit(1);
  }
}
