"""The Hugging Face reference for `deno task train`: fine-tunes DistilBERT on AG News with `transformers.Trainer`
on the same rows, model, batch size, learning rate, schedule and thread count, and writes one JSON result.

    python benchmarks/agnews_finetune_trainer.py --train TRAIN.csv[.gz] --test TEST.csv[.gz] --model DIR \
        --out RESULT.json [--epochs 1] [--batch-size 32] [--lr 1e-4] [--warmup 0.06] [--weight-decay 0.01] \
        [--max-grad-norm 1.0] [--max-length 128] [--threads 2] [--seed 42] [--eval-batch-size 64] \
        [--predictions PRED.json]

It is written the way a user of transformers would write it (Trainer, DataCollatorWithPadding, defaults
wherever our side has no say), because that is what the benchmark compares against. Trainer in transformers 5
needs the `accelerate` package (TrainingArguments raises ImportError without it); it is not in
requirements.txt, so install it where this script runs.

What is the same on both sides (so timings and accuracy are comparable):
- rows: the CSV rows as given, text = title + " " + description, label = class - 1, no cleaning;
- tokenization: uncased WordPiece over the same vocab.txt, [CLS] ... [SEP], truncated to --max-length;
- padding: dynamic, each batch padded to its longest row (our `--padding longest`, the default);
- model: DistilBertForSequenceClassification from DIR (a missing head is newly initialised), SDPA attention;
- optimizer: AdamW (Trainer's default "adamw_torch_fused"; ours calls the same fused kernel) with betas
  (0.9, 0.999), eps 1e-8, weight decay on weight matrices only (no decay for biases and LayerNorm);
- schedule: linear warmup then linear decay to 0 over ceil(rows / batch) * epochs optimizer steps, with
  the same warmup formula (below) and LambdaLR's step indexing, which training/schedule.ts reproduces;
- gradient clipping to --max-grad-norm, mean cross-entropy loss, no gradient accumulation, fp32, CPU;
- threads: torch intra-op threads set to --threads before any work (our `--threads`), inter-op left alone.

What is NOT the same (so runs agree in distribution, not bit for bit):
- shuffling: Trainer's RandomSampler (seeded from --seed) and our DistributedSampler draw different orders;
- random streams: dropout masks and the new head's initial weights come from different generators;
- tokenizer implementation: HF's Rust `tokenizers` here, our own TypeScript WordPiece there (same ids are
  expected, as data/tokenizer_test.ts checks; train_seconds excludes tokenization on both sides anyway);
- evaluation: here once after training with Trainer.predict; `deno task train` evaluates and checkpoints
  after every epoch, so compare train_seconds with the sum of its per-epoch training seconds, not its
  wall clock;
- train_seconds here covers the whole `trainer.train()` call, so it includes Trainer's own set-up (building
  the optimizer, scheduler, dataloader and the accelerate wrapper), a small fixed cost per run.
"""

import argparse
import csv
import gzip
import io
import json
import math
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

LABELS = ["World", "Sports", "Business", "Sci/Tech"]  # AG News classes 1..4


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", required=True, help="AG News CSV (class,title,description; gzip allowed)")
    p.add_argument("--test", required=True, help="AG News CSV for evaluation")
    p.add_argument("--model", required=True, help="DistilBERT folder: config.json, model.safetensors, vocab.txt")
    p.add_argument("--out", required=True, help="where to write the result JSON")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=float, default=0.06, help="steps, or a fraction of all steps when < 1")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument(
        "--group-by-length",
        action="store_true",
        help="the Trainer's own length grouping, train_sampling_strategy='group_by_length' (off by default)",
    )
    p.add_argument("--predictions", help="also write the predicted label of every test row to this JSON file")
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size", "max_length", "threads", "eval_batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.lr <= 0 or args.warmup < 0 or args.weight_decay < 0 or args.max_grad_norm < 0:
        p.error("--lr must be > 0 and --warmup, --weight-decay, --max-grad-norm >= 0")
    return args


def read_ag_news(path):
    """Rows of an original-format AG News CSV as (text, label). Gzip is recognised by its magic bytes, not by
    the file name. Strict: a row without exactly 3 fields or with a class outside 1..4 is an error."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    texts, labels = [], []
    reader = csv.reader(io.StringIO(raw.decode("utf-8"), newline=""), strict=True)
    row_number = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:  # e.g. a stray quote inside a quoted field
            raise ValueError(f"{path}: row {row_number + 1}: {e}") from None
        row_number += 1
        if len(row) != 3:
            raise ValueError(f"{path}: row {row_number} has {len(row)} fields, expected 3 (class,title,description)")
        if row[0] not in ("1", "2", "3", "4"):
            raise ValueError(f"{path}: row {row_number} has class {row[0]!r}, expected 1..4")
        labels.append(int(row[0]) - 1)
        texts.append(row[1] + " " + row[2])  # exactly as HF's ag_news builds `text`; no other cleaning
    if not texts:
        raise ValueError(f"{path}: no rows")
    return texts, labels


def classification_metrics(labels, predictions, num_labels):
    """Accuracy, per-class F1 and their unweighted mean over all classes, with sklearn's zero_division=0
    (F1 = 2tp / (support + predicted), 0 when both are 0): what train.ts reports (classificationReport with
    labels "all")."""
    import numpy as np

    confusion = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    tp = np.diag(confusion).astype(np.float64)
    denominator = confusion.sum(axis=1) + confusion.sum(axis=0)  # support + predicted
    f1 = np.divide(2 * tp, denominator, out=np.zeros(num_labels), where=denominator > 0)
    return float(tp.sum() / confusion.sum()), float(f1.mean()), [float(x) for x in f1]


def main(argv=None):
    args = parse_args(argv)

    # Threads first, before torch does any work: intra-op threads are what our --threads sets too. (accelerate
    # would only override this for multi-process CPU training, which this single process is not.)
    import torch

    torch.set_num_threads(args.threads)

    import numpy as np
    import transformers
    from transformers import (
        BertTokenizerFast,
        DataCollatorWithPadding,
        DistilBertForSequenceClassification,
        PrinterCallback,
        Trainer,
        TrainingArguments,
    )
    from transformers.models.bert.tokenization_bert import load_vocab

    transformers.logging.set_verbosity_warning()  # keep stdout for the summary line
    # Fail before the (slow) tokenizing and loading: TrainingArguments raises ImportError without accelerate.
    if not transformers.utils.is_accelerate_available():
        raise SystemExit("transformers.Trainer needs the `accelerate` package (pip install 'accelerate>=1.1.0')")

    model_dir = Path(args.model)
    # transformers 5 ignores `vocab_file=` in this constructor (it silently builds a 5-token vocabulary), so
    # the vocabulary is loaded into a dict and passed as `vocab`.
    tokenizer = BertTokenizerFast(vocab=load_vocab(str(model_dir / "vocab.txt")), do_lower_case=True)
    if len(tokenizer) != 30522:
        raise SystemExit(f"{model_dir / 'vocab.txt'}: tokenizer has {len(tokenizer)} tokens, expected 30522")

    train_texts, train_labels = read_ag_news(args.train)
    test_texts, test_labels = read_ag_news(args.test)

    def encode(texts, labels):
        # Truncate only; DataCollatorWithPadding pads each batch to its longest row. DistilBERT takes no
        # token_type_ids, so they are not produced.
        enc = tokenizer(texts, truncation=True, max_length=args.max_length, padding=False,
                        return_token_type_ids=False)
        return [{"input_ids": ids, "attention_mask": mask, "labels": label}
                for ids, mask, label in zip(enc["input_ids"], enc["attention_mask"], labels)]

    class Rows(torch.utils.data.Dataset):
        """A list of tokenized rows; the `datasets` package is not needed for this."""

        def __init__(self, rows):
            self.rows = rows

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            return self.rows[i]

    train = Rows(encode(train_texts, train_labels))
    test = Rows(encode(test_texts, test_labels))
    tokens_per_epoch = sum(len(r["input_ids"]) for r in train.rows)  # real tokens, [CLS]/[SEP] included

    # Seed before from_pretrained so that a newly initialised head is the same from run to run (Trainer
    # seeds again in its constructor, too late for the model built here).
    transformers.set_seed(args.seed)
    model, loading = DistilBertForSequenceClassification.from_pretrained(
        str(model_dir),
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)},
        output_loading_info=True,
    )

    # Optimizer steps as Trainer counts them: one per batch (no accumulation, last partial batch kept).
    # Warmup as TrainingArguments.get_warmup_steps (and our training/schedule.ts warmupSteps):
    #   warmup_steps = int(warmup)                       if warmup >= 1
    #                = ceil(total_steps * warmup)        if 0 <= warmup < 1
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    total_steps = steps_per_epoch * args.epochs
    warmup_steps = int(args.warmup) if args.warmup >= 1 else math.ceil(total_steps * args.warmup)

    with tempfile.TemporaryDirectory(prefix="hf_trainer_") as output_dir:
        training_args = TrainingArguments(
            output_dir=output_dir,  # required; nothing is saved there (save_strategy="no")
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=args.eval_batch_size,
            learning_rate=args.lr,
            lr_scheduler_type="linear",
            warmup_steps=warmup_steps,
            weight_decay=args.weight_decay,
            max_grad_norm=args.max_grad_norm,
            num_train_epochs=args.epochs,
            seed=args.seed,
            data_seed=args.seed,
            use_cpu=True,
            report_to=[],
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",  # no per-step logging; the mean training loss is still returned
            dataloader_num_workers=0,  # collate in the training process, as our side does
            disable_tqdm=True,
            # transformers 5 spells group_by_length=True as this sampling strategy (LengthGroupedSampler).
            train_sampling_strategy="group_by_length" if args.group_by_length else "random",
        )
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=train,
            data_collator=DataCollatorWithPadding(tokenizer),
            processing_class=tokenizer,
        )
        # disable_tqdm swaps the progress bar for PrinterCallback, which prints the final metrics dict to
        # stdout even with logging_strategy="no"; stdout is kept for our one summary line.
        trainer.remove_callback(PrinterCallback)

        started = time.perf_counter()
        train_output = trainer.train()
        train_seconds = time.perf_counter() - started
        if trainer.state.max_steps != total_steps or trainer.state.global_step != total_steps:
            raise SystemExit(f"Trainer ran {trainer.state.global_step} of {trainer.state.max_steps} steps, "
                             f"expected {total_steps}")

        started = time.perf_counter()
        prediction = trainer.predict(test)
        eval_seconds = time.perf_counter() - started

    # Evaluation from the logits, in float64: mean cross-entropy over rows, argmax predictions.
    logits = np.asarray(prediction.predictions, dtype=np.float64)
    labels = np.asarray(test_labels, dtype=np.int64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    eval_loss = float(-log_probs[np.arange(len(labels)), labels].mean())
    predicted = logits.argmax(axis=1)
    accuracy, macro_f1, f1 = classification_metrics(labels, predicted, len(LABELS))

    rows = len(train)
    result = {
        "tool": "hf_trainer",
        "group_by_length": args.group_by_length,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "threads": torch.get_num_threads(),  # read back after training, in case anything changed it
        "rows": rows,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "warmup_steps": warmup_steps,
        "total_steps": total_steps,
        "train_seconds": train_seconds,
        "samples_per_s": rows * args.epochs / train_seconds,
        "tokens_per_epoch": tokens_per_epoch,
        # ru_maxrss is in KiB on Linux: the peak of the whole process, data and tokenizer included.
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "eval_loss": eval_loss,
        "accuracy": accuracy,
        "macro_f1": macro_f1,
        "f1_per_class": dict(zip(LABELS, f1)),
        # Context for reading the numbers above.
        "test_rows": len(test),
        "max_length": args.max_length,
        "train_loss": train_output.training_loss,  # mean over all training steps
        "eval_seconds": eval_seconds,
        "optimizer": str(training_args.optim.value if hasattr(training_args.optim, "value") else training_args.optim),
        "attn_implementation": model.config._attn_implementation,
        "newly_initialised": sorted(loading["missing_keys"]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if args.predictions:
        Path(args.predictions).parent.mkdir(parents=True, exist_ok=True)
        Path(args.predictions).write_text(json.dumps({"labels": LABELS, "predictions": predicted.tolist()}) + "\n")

    print(
        f"hf_trainer: {rows} rows x {args.epochs} epoch(s), {total_steps} steps in {train_seconds:.1f} s "
        f"({result['samples_per_s']:.1f} samples/s, {args.threads} threads) | eval loss {eval_loss:.4f} "
        f"acc {accuracy * 100:.2f}% macro-F1 {macro_f1:.4f} on {len(test)} rows"
    )


if __name__ == "__main__":
    sys.exit(main())
