"""The solution ladder's shared program: rung.py, beside it, sets the dtype, the malloc
tuning and the training recipe of each rung.

Implementation: every op batched over sequences and heads, softmax and cross-entropy
fused, layer-norm and GELU backward written with few temporaries, the embedding gradient
as a one-hot matmul, Adam updating in place; optionally malloc told to keep freed memory
(numpy's large temporaries otherwise cost a page fault per page, every step).

    python3 train.py CORPUS.txt WEIGHTS.npz
"""

import ctypes
import sys

import numpy as np

from rung import (F, batch_size, beta1, beta2, adam_eps, learning_rate, max_steps, min_lr_frac, seed, tune_malloc,
                  warmup_steps)

if tune_malloc:
    _libc = ctypes.CDLL("libc.so.6")
    _libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: large arrays come from the heap, not fresh mmaps
    _libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: never hand freed memory back

ALPHABET = "\n ,.;?abcdefghijklmnopqrstuvwxyz"
V, T, L, H, C = 32, 64, 2, 4, 64
HS = C // H

corpus_path, out_path = sys.argv[1], sys.argv[2]
with open(corpus_path, "rb") as f:
    raw = np.frombuffer(f.read(), dtype=np.uint8)
lut = np.zeros(256, dtype=np.int64)
lut[np.frombuffer(ALPHABET.encode(), dtype=np.uint8)] = np.arange(V)
data = lut[raw]
rng = np.random.default_rng(seed)
offsets = np.arange(T + 1)


def get_batch(bs):
    starts = rng.integers(0, len(data) - T - 1, size=bs)
    w = data[starts[:, None] + offsets]
    return w[:, :-1], w[:, 1:]


def init_params():
    def normal(std, shape):
        return rng.normal(0, std, shape).astype(F)

    p = {"wte": normal(0.02, (V, C)), "wpe": normal(0.02, (T, C))}
    for i in range(L):
        h = f"h{i}."
        p[h + "ln1_g"], p[h + "ln1_b"] = np.ones(C, F), np.zeros(C, F)
        p[h + "attn_w"], p[h + "attn_b"] = normal(0.02, (C, 3 * C)), np.zeros(3 * C, F)
        p[h + "proj_w"], p[h + "proj_b"] = normal(0.02 / np.sqrt(2 * L), (C, C)), np.zeros(C, F)
        p[h + "ln2_g"], p[h + "ln2_b"] = np.ones(C, F), np.zeros(C, F)
        p[h + "fc_w"], p[h + "fc_b"] = normal(0.02, (C, 4 * C)), np.zeros(4 * C, F)
        p[h + "fc2_w"], p[h + "fc2_b"] = normal(0.02 / np.sqrt(2 * L), (4 * C, C)), np.zeros(C, F)
    p["lnf_g"], p["lnf_b"] = np.ones(C, F), np.zeros(C, F)
    p["head_w"] = normal(0.02, (C, V))
    return p


NEG_MASK = np.triu(np.full((T, T), -1e9, dtype=F), k=1)
SCALE = F(1.0 / np.sqrt(HS))
K0, K1 = F(np.sqrt(2.0 / np.pi)), F(0.044715)


def ln_fwd(x, g, b):
    mu = x.mean(-1, keepdims=True)
    xc = x - mu
    rstd = 1.0 / np.sqrt((xc * xc).mean(-1, keepdims=True) + F(1e-5))
    xhat = xc * rstd
    return xhat * g + b, xhat, rstd


def ln_bwd(dout, xhat, rstd, g):
    dg = np.einsum("nc,nc->c", dout, xhat)
    db = dout.sum(0)
    dxh = dout * g
    dx = (dxh - dxh.mean(-1, keepdims=True) - xhat * (dxh * xhat).mean(-1, keepdims=True)) * rstd
    return dx, dg, db


def step_fn(p, grads, idx, tgt):
    """Forward and backward on one batch; fills `grads`; returns the loss."""
    B = idx.shape[0]
    N = B * T
    x = (p["wte"][idx] + p["wpe"]).reshape(N, C)
    caches = []
    for i in range(L):
        h = f"h{i}."
        a_in, xh1, r1 = ln_fwd(x, p[h + "ln1_g"], p[h + "ln1_b"])
        qkv = a_in @ p[h + "attn_w"] + p[h + "attn_b"]
        q, k, v = qkv.reshape(B, T, 3, H, HS).transpose(2, 0, 3, 1, 4)
        att = q @ k.transpose(0, 1, 3, 2)
        att *= SCALE
        att += NEG_MASK
        att -= att.max(-1, keepdims=True)
        np.exp(att, out=att)
        att /= att.sum(-1, keepdims=True)
        y = (att @ v).transpose(0, 2, 1, 3).reshape(N, C)
        x = x + y @ p[h + "proj_w"] + p[h + "proj_b"]
        m_in, xh2, r2 = ln_fwd(x, p[h + "ln2_g"], p[h + "ln2_b"])
        f = m_in @ p[h + "fc_w"] + p[h + "fc_b"]
        t = np.tanh(K0 * (f + K1 * f * f * f))
        g = 0.5 * f * (1.0 + t)
        x = x + g @ p[h + "fc2_w"] + p[h + "fc2_b"]
        caches.append((a_in, xh1, r1, q, k, v, att, y, m_in, xh2, r2, f, t, g))
    xf, xhf, rf = ln_fwd(x, p["lnf_g"], p["lnf_b"])
    logits = xf @ p["head_w"]
    logits -= logits.max(-1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(-1, keepdims=True)  # now probabilities
    flat_t = tgt.reshape(N)
    rows = np.arange(N)
    loss = -np.log(logits[rows, flat_t]).mean()

    dlogits = logits
    dlogits[rows, flat_t] -= 1.0
    dlogits *= F(1.0 / N)
    grads["head_w"][...] = xf.T @ dlogits
    dx, grads["lnf_g"][...], grads["lnf_b"][...] = ln_bwd(dlogits @ p["head_w"].T, xhf, rf, p["lnf_g"])
    for i in reversed(range(L)):
        h = f"h{i}."
        a_in, xh1, r1, q, k, v, att, y, m_in, xh2, r2, f, t, g = caches[i]
        grads[h + "fc2_w"][...] = g.T @ dx
        grads[h + "fc2_b"][...] = dx.sum(0)
        dg = dx @ p[h + "fc2_w"].T
        df = dg * (0.5 * (1.0 + t) + 0.5 * f * (1.0 - t * t) * K0 * (1.0 + 3 * K1 * f * f))
        grads[h + "fc_w"][...] = m_in.T @ df
        grads[h + "fc_b"][...] = df.sum(0)
        d, grads[h + "ln2_g"][...], grads[h + "ln2_b"][...] = ln_bwd(df @ p[h + "fc_w"].T, xh2, r2, p[h + "ln2_g"])
        dx = dx + d
        grads[h + "proj_w"][...] = y.T @ dx
        grads[h + "proj_b"][...] = dx.sum(0)
        dy = (dx @ p[h + "proj_w"].T).reshape(B, T, H, HS).transpose(0, 2, 1, 3)
        dv = att.transpose(0, 1, 3, 2) @ dy
        datt = dy @ v.transpose(0, 1, 3, 2)
        datt -= (datt * att).sum(-1, keepdims=True)
        datt *= att
        datt *= SCALE
        dq = datt @ k
        dk = datt.transpose(0, 1, 3, 2) @ q
        dqkv = np.stack([dq, dk, dv]).transpose(1, 3, 0, 2, 4).reshape(N, 3 * C)
        grads[h + "attn_w"][...] = a_in.T @ dqkv
        grads[h + "attn_b"][...] = dqkv.sum(0)
        d, grads[h + "ln1_g"][...], grads[h + "ln1_b"][...] = ln_bwd(dqkv @ p[h + "attn_w"].T, xh1, r1, p[h + "ln1_g"])
        dx = dx + d
    dx3 = dx.reshape(B, T, C)
    grads["wpe"][...] = dx3.sum(0)
    onehot = np.zeros((N, V), F)
    onehot[rows, idx.reshape(N)] = 1.0
    grads["wte"][...] = onehot.T @ dx
    return loss


def lr_at(step):
    if step <= warmup_steps:
        return learning_rate * step / max(1, warmup_steps)
    frac = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return learning_rate * (min_lr_frac + (1 - min_lr_frac) * 0.5 * (1 + np.cos(np.pi * frac)))


params = init_params()
grads = {n: np.zeros_like(w) for n, w in params.items()}
m = {n: np.zeros_like(w) for n, w in params.items()}
v = {n: np.zeros_like(w) for n, w in params.items()}
tmp = {n: np.zeros_like(w) for n, w in params.items()}
for step in range(1, max_steps + 1):
    xb, yb = get_batch(batch_size)
    loss = step_fn(params, grads, xb, yb)
    # Adam, in place; bias corrections folded into the step size
    a = lr_at(step) * np.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
    eps = adam_eps * np.sqrt(1 - beta2 ** step)
    for n, w in params.items():
        g, mn, vn, t = grads[n], m[n], v[n], tmp[n]
        mn *= beta1
        mn += (1 - beta1) * g
        vn *= beta2
        np.multiply(g, g, out=t)
        t *= 1 - beta2
        vn += t
        np.sqrt(vn, out=t)
        t += eps
        np.divide(mn, t, out=t)
        t *= a
        w -= t
    if step % 100 == 0:
        print(f"step {step} loss {loss:.4f}", flush=True)

np.savez(out_path, **params)
