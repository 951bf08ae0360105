"""Reference solution: PyTorch kernels and autograd instead of numpy, fused Adam, and a
better training algorithm (10x the learning rate, warm-up, cosine decay; well under half
the baseline's steps). Same architecture, same weight format.

    python3 train.py CORPUS.txt WEIGHTS.npz
"""

import math
import sys

import numpy as np
import torch
import torch.nn.functional as Fn

ALPHABET = "\n ,.;?abcdefghijklmnopqrstuvwxyz"
V, T, L, H, C = 32, 64, 2, 4, 64
HS = C // H
batch_size = 16
max_steps = 420
learning_rate = 5e-3
warmup_steps = 20
min_lr_frac = 0.1
seed = 1337

torch.manual_seed(seed)
gen = torch.Generator().manual_seed(seed)
with open(sys.argv[1], "rb") as f:
    raw = np.frombuffer(f.read(), dtype=np.uint8)
lut = np.zeros(256, dtype=np.int64)
lut[np.frombuffer(ALPHABET.encode(), dtype=np.uint8)] = np.arange(V)
data = torch.from_numpy(lut[raw])
offsets = torch.arange(T + 1)


def param(*shape, std=None, fill=None):
    t = torch.full(shape, float(fill)) if fill is not None else torch.randn(*shape, generator=gen) * std
    return t.requires_grad_()


p = {"wte": param(V, C, std=0.02), "wpe": param(T, C, std=0.02)}
for i in range(L):
    h = f"h{i}."
    p[h + "ln1_g"], p[h + "ln1_b"] = param(C, fill=1), param(C, fill=0)
    p[h + "attn_w"], p[h + "attn_b"] = param(C, 3 * C, std=0.02), param(3 * C, fill=0)
    p[h + "proj_w"], p[h + "proj_b"] = param(C, C, std=0.02 / math.sqrt(2 * L)), param(C, fill=0)
    p[h + "ln2_g"], p[h + "ln2_b"] = param(C, fill=1), param(C, fill=0)
    p[h + "fc_w"], p[h + "fc_b"] = param(C, 4 * C, std=0.02), param(4 * C, fill=0)
    p[h + "fc2_w"], p[h + "fc2_b"] = param(4 * C, C, std=0.02 / math.sqrt(2 * L)), param(C, fill=0)
p["lnf_g"], p["lnf_b"] = param(C, fill=1), param(C, fill=0)
p["head_w"] = param(C, V, std=0.02)


def loss_fn(idx, tgt):
    B = idx.shape[0]
    x = p["wte"][idx] + p["wpe"]
    for i in range(L):
        h = f"h{i}."
        a = Fn.layer_norm(x, (C,), p[h + "ln1_g"], p[h + "ln1_b"]) @ p[h + "attn_w"] + p[h + "attn_b"]
        q, k, v = a.view(B, T, 3, H, HS).permute(2, 0, 3, 1, 4)
        y = Fn.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + y @ p[h + "proj_w"] + p[h + "proj_b"]
        hid = Fn.layer_norm(x, (C,), p[h + "ln2_g"], p[h + "ln2_b"]) @ p[h + "fc_w"] + p[h + "fc_b"]
        x = x + Fn.gelu(hid, approximate="tanh") @ p[h + "fc2_w"] + p[h + "fc2_b"]
    logits = Fn.layer_norm(x, (C,), p["lnf_g"], p["lnf_b"]) @ p["head_w"]
    return Fn.cross_entropy(logits.view(-1, V), tgt.reshape(-1))


def lr_at(step):
    if step <= warmup_steps:
        return learning_rate * step / warmup_steps
    frac = (step - warmup_steps) / (max_steps - warmup_steps)
    return learning_rate * (min_lr_frac + (1 - min_lr_frac) * 0.5 * (1 + math.cos(math.pi * frac)))


opt = torch.optim.Adam(p.values(), lr=learning_rate, betas=(0.9, 0.99), eps=1e-8, foreach=True)
for step in range(1, max_steps + 1):
    for group in opt.param_groups:
        group["lr"] = lr_at(step)
    starts = torch.randint(0, len(data) - T - 1, (batch_size,), generator=gen)
    window = data[starts[:, None] + offsets]
    loss = loss_fn(window[:, :-1], window[:, 1:])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if step % 100 == 0:
        print(f"step {step} loss {loss.item():.4f}", flush=True)

np.savez(sys.argv[2], **{name: t.detach().numpy() for name, t in p.items()})
