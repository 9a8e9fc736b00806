"""Python side of benchmarks/inference_cpu.ts: transformers' DistilBertForSequenceClassification (eager,
in process, no HTTP) classifying the same texts in batches, as a Python user would: the fast tokenizer pads
each batch to its longest text, then one forward pass under torch.inference_mode (and, for bf16,
torch.autocast). Prints {"rates": {"<batch>-<precision>": texts_per_second}, versions...} as JSON."""

import json
import sys
import time

import torch
import transformers
from transformers import BertTokenizerFast, DistilBertForSequenceClassification
from transformers.models.bert.tokenization_bert import load_vocab


def main() -> None:
    spec = json.loads(sys.argv[1])
    torch.set_num_threads(spec["threads"])
    texts = json.load(open(spec["texts"]))
    model = DistilBertForSequenceClassification.from_pretrained(spec["checkpoint"]).eval()
    # transformers 5 ignores `vocab_file=`; the vocabulary has to be passed in as a dict.
    tokenizer = BertTokenizerFast(vocab=load_vocab(spec["vocab"]), do_lower_case=True)
    rates = {}
    for batch in spec["batches"]:
        for precision in spec["precisions"]:
            bf16 = precision == "bf16"

            def run(chunk):
                enc = tokenizer(chunk, truncation=True, max_length=128, padding=True, return_tensors="pt")
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])

            run(texts[:batch])  # warm-up
            done, start, i = 0, time.perf_counter(), 0
            while time.perf_counter() - start < spec["seconds"]:
                chunk = texts[i : i + batch] if i + batch <= len(texts) else texts[:batch]
                i = (i + batch) % len(texts)
                run(chunk)
                done += len(chunk)
            rates[f"{batch}-{precision}"] = done / (time.perf_counter() - start)
    print(json.dumps({
        "rates": rates,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
