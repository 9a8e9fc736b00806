"""Reference computations with Python's torch and transformers, driven by the Deno tests.

Every command reads/writes plain files so the TypeScript side can compare numbers:
  make      --config CFG.json --seed N --out DIR         random HF model, save_pretrained (safetensors)
  logits    --model DIR --batch B.json --out OUT.json    eval-mode logits of from_pretrained(DIR)
  load-pt   --pt FILE --config DIR --batch B.json --out OUT.json
            torch.load(FILE, weights_only=True) -> load_state_dict(strict=True) -> logits
  train     --model DIR --batch B.json --steps K --lr LR --weight-decay WD --max-grad-norm C --out DIR2
            K AdamW steps as Hugging Face's Trainer does them (decay groups, clipping), then save_pretrained
A batch file is {"input_ids": [[...]], "attention_mask": [[...]], "labels": [...]}.
"""

import argparse
import json
import sys

import torch
from transformers import DistilBertConfig, DistilBertForSequenceClassification


def load_batch(path):
    with open(path) as f:
        b = json.load(f)
    ids = torch.tensor(b["input_ids"], dtype=torch.long)
    mask = torch.tensor(b["attention_mask"], dtype=torch.long)
    labels = torch.tensor(b["labels"], dtype=torch.long) if "labels" in b else None
    return ids, mask, labels


def logits_of(model, ids, mask):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def write_logits(path, logits):
    with open(path, "w") as f:
        json.dump({"logits": logits.tolist()}, f)


def cmd_make(a):
    with open(a.config) as f:
        config = DistilBertConfig(**json.load(f))
    torch.manual_seed(a.seed)
    model = DistilBertForSequenceClassification(config)
    # Non-zero biases and LayerNorm parameters, so that loading them is really tested.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(a.out, safe_serialization=True)


def cmd_logits(a):
    model = DistilBertForSequenceClassification.from_pretrained(a.model, attn_implementation=a.attn)
    ids, mask, _ = load_batch(a.batch)
    write_logits(a.out, logits_of(model, ids, mask))


def cmd_load_pt(a):
    state = torch.load(a.pt, weights_only=True)
    config = DistilBertConfig.from_pretrained(a.config)
    model = DistilBertForSequenceClassification(config)
    model.load_state_dict(state, strict=True)
    ids, mask, _ = load_batch(a.batch)
    write_logits(a.out, logits_of(model, ids, mask))


def cmd_train(a):
    model = DistilBertForSequenceClassification.from_pretrained(a.model, attn_implementation="sdpa")
    model.train()
    # Trainer's grouping: no weight decay for biases and LayerNorm weights.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith(".bias") or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": a.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=a.lr, betas=(0.9, 0.999), eps=1e-8,
    )
    ids, mask, labels = load_batch(a.batch)
    losses = []
    for _ in range(a.steps):
        loss = torch.nn.functional.cross_entropy(model(input_ids=ids, attention_mask=mask).logits, labels)
        loss.backward()
        if a.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), a.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.save_pretrained(a.out, safe_serialization=True)
    with open(f"{a.out}/losses.json", "w") as f:
        json.dump(losses, f)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--config", required=True)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--out", required=True)
    lg = sub.add_parser("logits")
    lg.add_argument("--model", required=True)
    lg.add_argument("--batch", required=True)
    lg.add_argument("--out", required=True)
    lg.add_argument("--attn", default="eager")
    lp = sub.add_parser("load-pt")
    lp.add_argument("--pt", required=True)
    lp.add_argument("--config", required=True)
    lp.add_argument("--batch", required=True)
    lp.add_argument("--out", required=True)
    t = sub.add_parser("train")
    t.add_argument("--model", required=True)
    t.add_argument("--batch", required=True)
    t.add_argument("--steps", type=int, default=3)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--weight-decay", type=float, default=0.01)
    t.add_argument("--max-grad-norm", type=float, default=1.0)
    t.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(1)
    {"make": cmd_make, "logits": cmd_logits, "load-pt": cmd_load_pt, "train": cmd_train}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
