"""A small character-level GPT, in torch: the model to post-train.

    import model
    net = model.load("weights.npz")          # the base model
    loss = net(idx, targets)                 # idx, targets: (B, T) int64; targets -100 = ignored
    answers = model.generate(net, prompts)   # greedy completions, exactly as the verifier decodes
    model.save(net, "weights.npz")           # float32, the names and shapes below

Weight format (weights.npz, numpy's savez; float32 arrays, exactly these names and shapes):
    wte (V, C)  token embedding        wpe (T, C)  position embedding
    for each layer i in 0..L-1, prefix "h{i}.":
      ln1_g, ln1_b (C,)   attn_w (C, 3C), attn_b (3C,)   [q | k | v] columns, heads of C/H each
      proj_w (C, C), proj_b (C,)
      ln2_g, ln2_b (C,)   fc_w (C, 4C), fc_b (4C,)   fc2_w (4C, C), fc2_b (C,)
    lnf_g, lnf_b (C,)    head_w (C, V)
Architecture: pre-norm blocks x += attn(ln1(x)); x += mlp(ln2(x)); logits = lnf(x) @ head_w;
layer norm eps 1e-5; GELU with the tanh approximation; causal attention scaled by 1/sqrt(C/H).
The same family as cpu-lm-train's numpy GPT, written in torch so that it can be fine-tuned.
"""

import string

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ---- config: fixed by the task (the verifier loads weights of exactly this shape) ----
ALPHABET = "\n !\"'(),-.:;=?+" + string.digits + string.ascii_uppercase + string.ascii_lowercase
vocab_size = len(ALPHABET)  # V = 77
block_size = 64             # T: context length
n_layer = 4                 # L
n_head = 4                  # H
n_embd = 96                 # C
MAX_NEW = 21                # greedy decoding stops at a newline or after this many characters

stoi = {ch: i for i, ch in enumerate(ALPHABET)}


def encode(text):
    return [stoi[ch] for ch in text]


def decode(ids):
    return "".join(ALPHABET[i] for i in ids)


# ---- model ----
class Block(nn.Module):
    def __init__(self):
        super().__init__()
        C = n_embd
        self.ln1_g, self.ln1_b = nn.Parameter(torch.ones(C)), nn.Parameter(torch.zeros(C))
        self.attn_w, self.attn_b = nn.Parameter(torch.randn(C, 3 * C) * 0.02), nn.Parameter(torch.zeros(3 * C))
        # residual projections start smaller, as in GPT-2
        self.proj_w = nn.Parameter(torch.randn(C, C) * 0.02 / (2 * n_layer) ** 0.5)
        self.proj_b = nn.Parameter(torch.zeros(C))
        self.ln2_g, self.ln2_b = nn.Parameter(torch.ones(C)), nn.Parameter(torch.zeros(C))
        self.fc_w, self.fc_b = nn.Parameter(torch.randn(C, 4 * C) * 0.02), nn.Parameter(torch.zeros(4 * C))
        self.fc2_w = nn.Parameter(torch.randn(4 * C, C) * 0.02 / (2 * n_layer) ** 0.5)
        self.fc2_b = nn.Parameter(torch.zeros(C))

    def forward(self, x):
        B, T, C = x.shape
        a = F.layer_norm(x, (C,), self.ln1_g, self.ln1_b, 1e-5) @ self.attn_w + self.attn_b
        q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in a.split(C, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # scale 1/sqrt(C/H)
        x = x + y.transpose(1, 2).reshape(B, T, C) @ self.proj_w + self.proj_b
        m = F.gelu(F.layer_norm(x, (C,), self.ln2_g, self.ln2_b, 1e-5) @ self.fc_w + self.fc_b, approximate="tanh")
        return x + m @ self.fc2_w + self.fc2_b


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Parameter(torch.randn(vocab_size, n_embd) * 0.02)
        self.wpe = nn.Parameter(torch.randn(block_size, n_embd) * 0.02)
        self.h = nn.ModuleList(Block() for _ in range(n_layer))
        self.lnf_g, self.lnf_b = nn.Parameter(torch.ones(n_embd)), nn.Parameter(torch.zeros(n_embd))
        self.head_w = nn.Parameter(torch.randn(n_embd, vocab_size) * 0.02)

    def forward(self, idx, targets=None):
        """Logits (B, T, V); with targets, the mean cross-entropy over targets != -100."""
        T = idx.shape[1]
        x = self.wte[idx] + self.wpe[:T]
        for block in self.h:
            x = block(x)
        logits = F.layer_norm(x, (n_embd,), self.lnf_g, self.lnf_b, 1e-5) @ self.head_w
        if targets is None:
            return logits
        return F.cross_entropy(logits.reshape(-1, vocab_size), targets.reshape(-1), ignore_index=-100)


# ---- weights: the npz names are "h{i}.ln1_g"; torch's are "h.{i}.ln1_g" ----
def shapes():
    """The weight file's names and shapes."""
    return {npz_name(k): tuple(v.shape) for k, v in GPT().state_dict().items()}


def npz_name(torch_name):
    return "h" + torch_name[2:] if torch_name.startswith("h.") else torch_name


def save(net, path):
    np.savez(path, **{npz_name(k): v.detach().cpu().numpy().astype(np.float32) for k, v in net.state_dict().items()})


def load(path):
    net = GPT()
    with np.load(path, allow_pickle=False) as f:
        net.load_state_dict({k: torch.from_numpy(f[npz_name(k)]) for k in net.state_dict()})
    return net


# ---- greedy decoding: the verifier's rule ----
@torch.no_grad()
def generate(net, prompts, max_new=MAX_NEW, batch=256):
    """Greedy completion of each prompt, up to its first newline. Each context is a
    newline (the start of a document) followed by the prompt."""
    net.eval()
    out = [None] * len(prompts)
    by_len = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    for group in by_len.values():
        for s in range(0, len(group), batch):
            rows = group[s:s + batch]
            idx = torch.tensor([encode("\n" + prompts[i]) for i in rows], dtype=torch.long)
            done = torch.zeros(len(rows), dtype=torch.bool)
            new = []
            for _ in range(max_new):
                nxt = net(idx[:, -block_size:])[:, -1].argmax(-1)
                new.append(nxt)
                done |= nxt == stoi["\n"]
                if done.all():
                    break
                idx = torch.cat([idx, nxt[:, None]], dim=1)
            new = torch.stack(new, 1).tolist()
            for i, ids in zip(rows, new):
                text = decode(ids)
                out[i] = text.split("\n")[0]
    return out
