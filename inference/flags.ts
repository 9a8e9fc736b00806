/**
 * The flags every command that loads a checkpoint for inference shares (predict and serve), written once:
 * which checkpoint, on which device, with how many libtorch threads.
 * @module
 */

import { flags } from "../cli/flags.ts";
import { DEFAULT_CHECKPOINT_HELP } from "../model/checkpoints.ts";

/** `--checkpoint SRC`: absent means the default checkpoint (model/checkpoints.ts's defaultCheckpoint). */
export const CHECKPOINT_FLAG = flags.optionalString({
  section: "Options",
  placeholder: "SRC",
  help: "checkpoint directory or weights file, or a Hugging Face model id of a fine-tuned DistilBERT",
  defaultText: DEFAULT_CHECKPOINT_HELP,
});

/** `--device DEV`. */
export const DEVICE_FLAG = flags.string({
  placeholder: "DEV",
  help: "auto | cpu | cuda | cuda:N",
  default: "auto",
  defaultText: "auto: CUDA when available",
});

/** `--threads N`: libtorch's intra-op threads. */
export const THREADS_FLAG = flags.optionalInt({
  help: "libtorch intra-op threads",
  defaultText: "libtorch's choice",
});
