"""Train a small GPT on a character corpus, in plain numpy, on the CPU.

    python3 train.py CORPUS.txt WEIGHTS.npz

Everything is written out by hand: embeddings, causal self-attention, MLP, layer norm,
cross-entropy, their backward passes, and Adam. It reads top to bottom: config, data,
model, forward, backward, optimiser, loop, save.

Weight format (WEIGHTS.npz, numpy's savez; float32 or float64 arrays, these names and shapes):
    wte (V, C)  token embedding        wpe (T, C)  position embedding
    for each layer i in 0..L-1, prefix "h{i}.":
      ln1_g, ln1_b (C,)   attn_w (C, 3C), attn_b (3C,)   [q | k | v] columns, heads of C/H each
      proj_w (C, C), proj_b (C,)
      ln2_g, ln2_b (C,)   fc_w (C, 4C), fc_b (4C,)   fc2_w (4C, C), fc2_b (C,)
    lnf_g, lnf_b (C,)    head_w (C, V)
Architecture: pre-norm blocks x += attn(ln1(x)); x += mlp(ln2(x)); logits = lnf(x) @ head_w;
layer norm eps 1e-5; GELU with the tanh approximation; causal attention scaled by 1/sqrt(C/H).
"""

import sys
import time

import numpy as np

# ---- config: the model's shape is fixed by the task; the rest is the training recipe ----
ALPHABET = "\n ,.;?abcdefghijklmnopqrstuvwxyz"
vocab_size = len(ALPHABET)  # V
block_size = 64             # T: context length
n_layer = 2                 # L
n_head = 4                  # H
n_embd = 64                 # C
batch_size = 16
max_steps = 1200            # token budget: max_steps * batch_size * block_size
learning_rate = 3e-4
beta1, beta2, adam_eps = 0.9, 0.99, 1e-8
seed = 1337
log_every = 100

# ---- data ----
corpus_path, out_path = sys.argv[1], sys.argv[2]
with open(corpus_path) as f:
    text = f.read()
stoi = {ch: i for i, ch in enumerate(ALPHABET)}
data = np.array([stoi[ch] for ch in text], dtype=np.int64)
rng = np.random.default_rng(seed)


def get_batch():
    starts = rng.integers(0, len(data) - block_size - 1, size=batch_size)
    x = np.stack([data[s:s + block_size] for s in starts])
    y = np.stack([data[s + 1:s + 1 + block_size] for s in starts])
    return x, y


# ---- model ----
def init_params():
    p = {}
    p["wte"] = rng.normal(0, 0.02, (vocab_size, n_embd))
    p["wpe"] = rng.normal(0, 0.02, (block_size, n_embd))
    for i in range(n_layer):
        h = f"h{i}."
        p[h + "ln1_g"] = np.ones(n_embd)
        p[h + "ln1_b"] = np.zeros(n_embd)
        p[h + "attn_w"] = rng.normal(0, 0.02, (n_embd, 3 * n_embd))
        p[h + "attn_b"] = np.zeros(3 * n_embd)
        # residual projections start smaller, as in GPT-2
        p[h + "proj_w"] = rng.normal(0, 0.02 / np.sqrt(2 * n_layer), (n_embd, n_embd))
        p[h + "proj_b"] = np.zeros(n_embd)
        p[h + "ln2_g"] = np.ones(n_embd)
        p[h + "ln2_b"] = np.zeros(n_embd)
        p[h + "fc_w"] = rng.normal(0, 0.02, (n_embd, 4 * n_embd))
        p[h + "fc_b"] = np.zeros(4 * n_embd)
        p[h + "fc2_w"] = rng.normal(0, 0.02 / np.sqrt(2 * n_layer), (4 * n_embd, n_embd))
        p[h + "fc2_b"] = np.zeros(n_embd)
    p["lnf_g"] = np.ones(n_embd)
    p["lnf_b"] = np.zeros(n_embd)
    p["head_w"] = rng.normal(0, 0.02, (n_embd, vocab_size))
    return p


def layernorm_forward(x, g, b):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + 1e-5)
    xhat = (x - mean) * rstd
    return xhat * g + b, (xhat, rstd, g)


def layernorm_backward(dout, cache):
    xhat, rstd, g = cache
    dg = (dout * xhat).sum(axis=0)
    db = dout.sum(axis=0)
    dxhat = dout * g
    dx = rstd * (dxhat - dxhat.mean(axis=-1, keepdims=True) - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
    return dx, dg, db


GELU_K = np.sqrt(2.0 / np.pi)


def gelu_forward(x):
    u = GELU_K * (x + 0.044715 * x ** 3)
    t = np.tanh(u)
    return 0.5 * x * (1.0 + t), (x, t)


def gelu_backward(dout, cache):
    x, t = cache
    du = GELU_K * (1.0 + 3 * 0.044715 * x ** 2)
    return dout * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t ** 2) * du)


def attention_forward(qkv):
    """Causal multi-head attention over one sequence, one head at a time."""
    T = qkv.shape[0]
    hs = n_embd // n_head
    q, k, v = qkv[:, :n_embd], qkv[:, n_embd:2 * n_embd], qkv[:, 2 * n_embd:]
    mask = np.tril(np.ones((T, T), dtype=bool))
    y = np.zeros((T, n_embd))
    probs = []
    for h in range(n_head):
        sl = slice(h * hs, (h + 1) * hs)
        scores = q[:, sl] @ k[:, sl].T / np.sqrt(hs)
        scores = np.where(mask, scores, -np.inf)
        scores = scores - scores.max(axis=-1, keepdims=True)
        e = np.exp(scores)
        att = e / e.sum(axis=-1, keepdims=True)
        probs.append(att)
        y[:, sl] = att @ v[:, sl]
    return y, (q, k, v, probs)


def attention_backward(dy, cache):
    q, k, v, probs = cache
    hs = n_embd // n_head
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    for h in range(n_head):
        sl = slice(h * hs, (h + 1) * hs)
        att = probs[h]
        dv[:, sl] = att.T @ dy[:, sl]
        datt = dy[:, sl] @ v[:, sl].T
        dscores = att * (datt - (datt * att).sum(axis=-1, keepdims=True)) / np.sqrt(hs)
        dq[:, sl] = dscores @ k[:, sl]
        dk[:, sl] = dscores.T @ q[:, sl]
    return np.concatenate([dq, dk, dv], axis=-1)


def forward(p, idx, targets):
    """One sequence: token ids (T,) and their next tokens (T,). Returns the mean
    cross-entropy loss and everything backward needs."""
    T = len(idx)
    x = p["wte"][idx] + p["wpe"][:T]
    caches = []
    for i in range(n_layer):
        h = f"h{i}."
        a_in, ln1 = layernorm_forward(x, p[h + "ln1_g"], p[h + "ln1_b"])
        qkv = a_in @ p[h + "attn_w"] + p[h + "attn_b"]
        att, att_cache = attention_forward(qkv)
        x = x + att @ p[h + "proj_w"] + p[h + "proj_b"]
        m_in, ln2 = layernorm_forward(x, p[h + "ln2_g"], p[h + "ln2_b"])
        f = m_in @ p[h + "fc_w"] + p[h + "fc_b"]
        g, gelu_cache = gelu_forward(f)
        x = x + g @ p[h + "fc2_w"] + p[h + "fc2_b"]
        caches.append((a_in, ln1, att, att_cache, m_in, ln2, g, gelu_cache))
    xf, lnf = layernorm_forward(x, p["lnf_g"], p["lnf_b"])
    logits = xf @ p["head_w"]
    logits = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    probs = e / e.sum(axis=-1, keepdims=True)
    loss = -np.mean(np.log(probs[np.arange(T), targets]))
    return loss, (idx, targets, caches, xf, lnf, probs)


def backward(p, cache, grads):
    """Adds this sequence's gradients of its mean loss into `grads`."""
    idx, targets, caches, xf, lnf, probs = cache
    T = len(idx)
    dlogits = probs.copy()
    dlogits[np.arange(T), targets] -= 1.0
    dlogits /= T
    grads["head_w"] += xf.T @ dlogits
    dxf = dlogits @ p["head_w"].T
    dx, dg_, db_ = layernorm_backward(dxf, lnf)
    grads["lnf_g"] += dg_
    grads["lnf_b"] += db_
    for i in reversed(range(n_layer)):
        h = f"h{i}."
        a_in, ln1, att, att_cache, m_in, ln2, g, gelu_cache = caches[i]
        # MLP branch
        grads[h + "fc2_w"] += g.T @ dx
        grads[h + "fc2_b"] += dx.sum(axis=0)
        dg = dx @ p[h + "fc2_w"].T
        df = gelu_backward(dg, gelu_cache)
        grads[h + "fc_w"] += m_in.T @ df
        grads[h + "fc_b"] += df.sum(axis=0)
        dm_in = df @ p[h + "fc_w"].T
        dln2, dg_, db_ = layernorm_backward(dm_in, ln2)
        grads[h + "ln2_g"] += dg_
        grads[h + "ln2_b"] += db_
        dx = dx + dln2
        # attention branch
        grads[h + "proj_w"] += att.T @ dx
        grads[h + "proj_b"] += dx.sum(axis=0)
        datt = dx @ p[h + "proj_w"].T
        dqkv = attention_backward(datt, att_cache)
        grads[h + "attn_w"] += a_in.T @ dqkv
        grads[h + "attn_b"] += dqkv.sum(axis=0)
        da_in = dqkv @ p[h + "attn_w"].T
        dln1, dg_, db_ = layernorm_backward(da_in, ln1)
        grads[h + "ln1_g"] += dg_
        grads[h + "ln1_b"] += db_
        dx = dx + dln1
    grads["wpe"][:T] += dx
    for t in range(T):
        grads["wte"][idx[t]] += dx[t]


# ---- optimiser ----
params = init_params()
m = {name: np.zeros_like(w) for name, w in params.items()}
v = {name: np.zeros_like(w) for name, w in params.items()}


def adam_step(step):
    for name in params:
        g = grads[name]
        m[name] = beta1 * m[name] + (1 - beta1) * g
        v[name] = beta2 * v[name] + (1 - beta2) * g * g
        m_hat = m[name] / (1 - beta1 ** step)
        v_hat = v[name] / (1 - beta2 ** step)
        params[name] = params[name] - learning_rate * m_hat / (np.sqrt(v_hat) + adam_eps)


# ---- training loop: the gradient of a batch is the mean over its sequences ----
t0 = time.time()
for step in range(1, max_steps + 1):
    xb, yb = get_batch()
    grads = {name: np.zeros_like(w) for name, w in params.items()}
    loss = 0.0
    for b in range(batch_size):
        seq_loss, cache = forward(params, xb[b], yb[b])
        backward(params, cache, grads)
        loss += seq_loss / batch_size
    for name in grads:
        grads[name] /= batch_size
    adam_step(step)
    if step % log_every == 0 or step == 1:
        print(f"step {step:5d}  loss {loss:.4f}  {time.time() - t0:.1f}s", flush=True)

# ---- save ----
np.savez(out_path, **params)
