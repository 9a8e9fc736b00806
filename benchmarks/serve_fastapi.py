"""The reference design DistriNews' server replaces: FastAPI + uvicorn + PyTorch, written as a typical user
would write it (one worker, default torch threads, one forward pass per request). `deno task bench:serve`
measures it against serve.ts.

    .venv/bin/python benchmarks/serve_fastapi.py --checkpoint DIR [--host H] [--port P] [--vocab FILE] [--bf16]

--bf16 wraps the forward pass in torch.autocast(bfloat16), the one-line change a user who knows about it
would make, so that DistriNews' --bf16 is compared with its like.
"""

import argparse
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import BertTokenizerFast, DistilBertForSequenceClassification
from transformers.models.bert.tokenization_bert import load_vocab

BUNDLED_VOCAB = Path(__file__).resolve().parent.parent / "data" / "vocab" / "bert-base-uncased-vocab.txt"


class PredictRequest(BaseModel):
    text: str


def create_app(checkpoint: Path, vocab: Path, bf16: bool = False) -> FastAPI:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = DistilBertForSequenceClassification.from_pretrained(checkpoint).to(device).eval()
    # transformers 5 ignores `vocab_file=`; the vocabulary has to be passed in as a dict.
    tokenizer = BertTokenizerFast(vocab=load_vocab(str(vocab)), do_lower_case=True)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    app = FastAPI()

    @app.get("/health")
    def health():
        return {"status": "ok"}

    # A plain `def`: FastAPI runs it in its threadpool, so the event loop stays free while torch computes.
    @app.post("/predict")
    def predict(request: PredictRequest):
        enc = tokenizer(request.text, truncation=True, max_length=128, return_tensors="pt")
        with torch.inference_mode(), torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            # DistilBERT takes no token_type_ids, so only these two go in.
            logits = model(
                input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device)
            ).logits
        probs = logits.float().softmax(dim=-1)[0].tolist()
        best = max(range(len(probs)), key=probs.__getitem__)
        return {
            "label": labels[best],
            "label_id": best,
            "confidence": probs[best],
            "probabilities": dict(zip(labels, probs)),
        }

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="config.json, model.safetensors")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--vocab", type=Path, help="default: checkpoint/vocab.txt or the bundled one")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for the forward pass")
    args = parser.parse_args()
    own_vocab = args.checkpoint / "vocab.txt"
    vocab = args.vocab or (own_vocab if own_vocab.exists() else BUNDLED_VOCAB)
    # No access log: a line per request written to a pipe is not what the benchmark compares.
    uvicorn.run(create_app(args.checkpoint, vocab, args.bf16), host=args.host, port=args.port, access_log=False)
