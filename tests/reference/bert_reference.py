"""Random tiny BERT checkpoints and reference logits for weights/bert_test.ts.

  python bert_reference.py --batch B.json --seed N --out DIR

writes, for a batch {"input_ids": [[...]], "attention_mask": [[...]]}:
  DIR/head.safetensors        a random DistilBERT head: pre_classifier [H, H] and classifier [4, H]
  DIR/<variant>/              save_pretrained of a random BERT (config.json, model.safetensors)
  DIR/<variant>/logits.json   {"logits": [[...]]}: classifier(relu(pre_classifier(h[:, 0]))), where h is
                              BertModel's last_hidden_state in eval mode with token_type_ids all zero

The head on [CLS] is what DistilBertForSequenceClassification computes, so the TypeScript side, which maps
the BERT weights onto DistilBERT and loads this head, must get the same logits.
"""

import argparse
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForPreTraining,
    BertForSequenceClassification,
    BertModel,
)

# (directory, class, dtype it is saved in, extra config fields)
VARIANTS = [
    ("model", BertModel, torch.float32, {}),
    ("mlm", BertForMaskedLM, torch.float32, {}),
    ("seqcls", BertForSequenceClassification, torch.float32, {"num_labels": 3}),
    ("pretraining", BertForPreTraining, torch.float32, {}),
    ("f16", BertModel, torch.float16, {}),
    ("bf16", BertModel, torch.bfloat16, {}),
]


def tiny_config(**extra):
    config = BertConfig(
        vocab_size=512,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
        initializer_range=0.2,  # larger than BERT's 0.02, so attention and FFN really move the states
        pad_token_id=0,
        **extra,
    )
    config._attn_implementation = "eager"
    return config


def perturb(model):
    """Non-zero biases and LayerNorm parameters, and large token-type vectors, so the fold matters."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.05)
            if name.endswith("token_type_embeddings.weight"):
                p.add_(torch.randn_like(p) * 0.5)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)

    with open(a.batch) as f:
        b = json.load(f)
    ids = torch.tensor(b["input_ids"], dtype=torch.long)
    mask = torch.tensor(b["attention_mask"], dtype=torch.long)

    hidden = 32
    pre = torch.nn.Linear(hidden, hidden)
    cls = torch.nn.Linear(hidden, 4)
    os.makedirs(a.out, exist_ok=True)
    save_file(
        {
            "pre_classifier.weight": pre.weight.detach().contiguous(),
            "pre_classifier.bias": pre.bias.detach().contiguous(),
            "classifier.weight": cls.weight.detach().contiguous(),
            "classifier.bias": cls.bias.detach().contiguous(),
        },
        os.path.join(a.out, "head.safetensors"),
    )

    for name, model_class, dtype, extra in VARIANTS:
        model = model_class(tiny_config(**extra))
        perturb(model)
        model.eval()
        out_dir = os.path.join(a.out, name)
        model.to(dtype).save_pretrained(out_dir, safe_serialization=True)
        # The reference runs in float32 on exactly the (possibly rounded) weights that were saved.
        model.float()
        bert = model if isinstance(model, BertModel) else model.bert
        with torch.no_grad():
            h = bert(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
            logits = cls(torch.relu(pre(h[:, 0])))
        with open(os.path.join(out_dir, "logits.json"), "w") as f:
            json.dump({"logits": logits.tolist()}, f)


if __name__ == "__main__":
    sys.exit(main())
