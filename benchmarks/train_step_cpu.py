"""The Python PyTorch baseline for benchmarks/train_step_cpu.ts: the same training step and inference
batch with transformers' DistilBertForSequenceClassification (SDPA attention), torch.optim.AdamW with
Trainer's decay groups, gradient clipping, on the CPU with the same thread count. Prints JSON timings.
"""

import json
import sys
import time

import torch
import transformers
from transformers import DistilBertConfig, DistilBertForSequenceClassification


def main():
    spec = json.loads(sys.argv[1])
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    config = DistilBertConfig(**spec["config"])
    config._attn_implementation = "sdpa"  # the fused attention kernel, as DistriNews uses
    model = DistilBertForSequenceClassification(config)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith(".bias") or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=5e-5)
    with open(spec["batch"]) as f:
        b = json.load(f)
    ids = torch.tensor(b["input_ids"], dtype=torch.long)
    mask = torch.tensor(b["attention_mask"], dtype=torch.long)
    labels = torch.tensor(b["labels"], dtype=torch.long)

    def train_step():
        model.train()
        loss = torch.nn.functional.cross_entropy(model(input_ids=ids, attention_mask=mask).logits, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    def infer():
        model.eval()
        with torch.inference_mode():
            return torch.softmax(model(input_ids=ids, attention_mask=mask).logits, -1).tolist()

    def timed(fn, warmup, steps):
        for _ in range(warmup):
            fn()
        out = []
        for _ in range(steps):
            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1000)
        return out

    result = {
        "train_ms": timed(train_step, spec["warmup"], spec["steps"]),
        "predict_ms": timed(infer, spec["warmup"], spec["steps"]),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
