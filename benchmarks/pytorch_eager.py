#!/usr/bin/env python3
"""The same training step in PyTorch eager from Python: what our users ran before pipetrain.

The model is pipetrain's byte-level GPT (stages/model.cpp): token and position embeddings, pre-norm
blocks (LayerNorm, causal self-attention with a fused QKV projection, LayerNorm, GELU MLP), a final
LayerNorm and an unbiased vocabulary projection; cross-entropy on the next byte. One step
accumulates the gradients of `micro_batches` micro-batches, clips the global norm to 1.0 and
takes an AdamW step, as `pipetrain train` does. Data: random windows of the licence texts every
Debian system ships. Debian's python3-torch is the same LibTorch 1.13 that pipetrain links.

  python3 benchmarks/pytorch_eager.py --layers 8 --heads 8 --micro-batch 4 --micro-batches 8 --steps 12

Prints one JSON line: the median tokens/s over the steps after the warm-up, and the settings.
(benchmarks/eager_vs_pipetrain.sh interleaves it with pipetrain; results in benchmarks/README.md.)
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, hidden, heads, ff):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.ln2 = nn.LayerNorm(hidden)
        self.fc_in = nn.Linear(hidden, ff)
        self.fc_out = nn.Linear(ff, hidden)

    def forward(self, x):
        b, t, h = x.shape
        d = h // self.heads
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d).permute(2, 0, 3, 1, 4)
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(d)
        future = torch.ones(t, t, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
        attended = torch.matmul(torch.softmax(scores, -1), v).transpose(1, 2).reshape(b, t, h)
        y = x + self.attn_out(attended)
        return y + self.fc_out(F.gelu(self.fc_in(self.ln2(y))))


class GPT(nn.Module):
    def __init__(self, vocab, hidden, layers, heads, ff, seq):
        super().__init__()
        self.tokens = nn.Embedding(vocab, hidden)
        self.positions = nn.Embedding(seq, hidden)
        self.blocks = nn.ModuleList(Block(hidden, heads, ff) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)
        self.lm_head = nn.Linear(hidden, vocab, bias=False)

    def forward(self, ids):
        x = self.tokens(ids) + self.positions(torch.arange(ids.shape[1])).unsqueeze(0)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.norm(x))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--ff", type=int, default=1024)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--micro-batches", type=int, default=8)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: PyTorch's default)")
    p.add_argument("--data", default="/usr/share/common-licenses/GPL-3")
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(1234)
    with open(a.data, "rb") as f:
        data = torch.tensor(list(f.read()), dtype=torch.long)
    if data.numel() < a.seq + 2:
        raise SystemExit(f"error: {a.data} holds {data.numel()} bytes; need at least {a.seq + 2}")
    model = GPT(256, a.hidden, a.layers, a.heads, a.ff, a.seq)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)
    tokens_per_step = a.micro_batch * a.micro_batches * a.seq
    rates = []
    for step in range(a.warmup + a.steps):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        for _ in range(a.micro_batches):
            at = torch.randint(0, data.numel() - a.seq - 1, (a.micro_batch,))
            ids = torch.stack([data[i:i + a.seq] for i in at.tolist()])
            targets = torch.stack([data[i + 1:i + 1 + a.seq] for i in at.tolist()])
            logits = model(ids)
            loss = F.cross_entropy(logits.reshape(-1, 256), targets.reshape(-1)) / a.micro_batches
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        seconds = time.perf_counter() - start
        if step >= a.warmup:
            rates.append(tokens_per_step / seconds)
    print(json.dumps({"tokens_per_s": statistics.median(rates), "steps": a.steps, "threads": torch.get_num_threads(),
                      "torch": torch.__version__, "layers": a.layers, "micro_batch": a.micro_batch,
                      "micro_batches": a.micro_batches}))


if __name__ == "__main__":
    main()
