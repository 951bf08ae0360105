"""Verifier of cpu-lm-train.

1. From the secret seed, make a NEW language (its own lexicon and grammar, so weights
   trained anywhere else are useless) and draw from it a training corpus and a held-out
   text. The held-out text stays in a root-only folder.
2. Run the baseline and the submission, each as its own user from a private copy, on the
   training corpus, in interleaved repeats (the first pair baseline-first: its loss sets
   the target). Time counted: the program's wall time, start to exit.
3. Load each weights file into this verifier's OWN forward pass (float64) and compute the
   held-out loss. The submission is correct iff every one of its runs reaches
   loss <= baseline loss x (1 + TOLERANCE), with weights of exactly the documented format.
"""

import os
import sys

import numpy as np

import verify_kit as kit

sys.path.insert(0, kit.BASELINE)  # the task's pristine workspace: its data.py is trusted
import data  # noqa: E402

TOLERANCE = 0.02
TRAIN_CHARS = 600_000
HELDOUT_CHARS = 65_536
MAX_WEIGHTS_BYTES = 16 << 20
PLAUSIBLE_MAX = 500.0

V, T, L, H, C = 32, 64, 2, 4, 64
SHAPES = {"wte": (V, C), "wpe": (T, C), "lnf_g": (C,), "lnf_b": (C,), "head_w": (C, V)}
for _i in range(L):
    SHAPES.update({
        f"h{_i}.ln1_g": (C,), f"h{_i}.ln1_b": (C,), f"h{_i}.attn_w": (C, 3 * C), f"h{_i}.attn_b": (3 * C,),
        f"h{_i}.proj_w": (C, C), f"h{_i}.proj_b": (C,), f"h{_i}.ln2_g": (C,), f"h{_i}.ln2_b": (C,),
        f"h{_i}.fc_w": (C, 4 * C), f"h{_i}.fc_b": (4 * C,), f"h{_i}.fc2_w": (4 * C, C), f"h{_i}.fc2_b": (C,),
    })


BadWeights = kit.BadWeights


def load_weights(path):
    """The weights, as float64, or BadWeights saying what is wrong with the file."""
    arrays = kit.load_npz(path, SHAPES, (np.float32, np.float64), MAX_WEIGHTS_BYTES)
    return {name: a.astype(np.float64) for name, a in arrays.items()}


def layernorm(x, g, b):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * g + b


def gelu(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x * x * x)))


def heldout_loss(p, tokens):
    """Mean cross-entropy of next-token prediction over non-overlapping windows."""
    n = (len(tokens) - 1) // T
    x_idx = tokens[: n * T].reshape(n, T)
    y_idx = tokens[1 : n * T + 1].reshape(n, T)
    hs = C // H
    mask = np.triu(np.ones((T, T), dtype=bool), k=1)
    total = 0.0
    for s in range(0, n, 64):
        idx, tgt = x_idx[s : s + 64], y_idx[s : s + 64]
        B = len(idx)
        x = p["wte"][idx] + p["wpe"][None, :T]
        for i in range(L):
            h = "h%d." % i
            a = layernorm(x, p[h + "ln1_g"], p[h + "ln1_b"]) @ p[h + "attn_w"] + p[h + "attn_b"]
            q, k, v = (a[..., j * C : (j + 1) * C].reshape(B, T, H, hs).transpose(0, 2, 1, 3) for j in range(3))
            att = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hs)
            att[:, :, mask] = -np.inf
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            y = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
            x = x + y @ p[h + "proj_w"] + p[h + "proj_b"]
            m = gelu(layernorm(x, p[h + "ln2_g"], p[h + "ln2_b"]) @ p[h + "fc_w"] + p[h + "fc_b"])
            x = x + m @ p[h + "fc2_w"] + p[h + "fc2_b"]
        logits = layernorm(x, p["lnf_g"], p["lnf_b"]) @ p["head_w"]
        logits = logits - logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        total += -np.take_along_axis(logp, tgt[..., None], -1).sum()
    return total / (n * T)


def main():
    seed = kit.secret_seed()
    lang = seed % (2 ** 31)
    train_text = data.generate(lang, TRAIN_CHARS, text_seed=seed // 3 + 1)
    heldout = data.generate(lang, HELDOUT_CHARS, text_seed=seed // 3 + 2)
    heldout_tokens = np.array([data.ALPHABET.index(ch) for ch in heldout], dtype=np.int64)
    private = kit.work_root()
    corpus_master = os.path.join(private, "corpus.txt")
    with open(corpus_master, "w") as f:
        f.write(train_text)
    losses = {"baseline": [], "candidate": []}
    state = {"target": None, "baseline_s": None}

    def attempt(which, src, uid):
        work = kit.stage(src, uid)
        try:
            corpus = os.path.join(work, "corpus.rdbench.txt")
            with open(corpus_master, "rb") as fin:
                kit.write_input(corpus, fin.read(), uid)
            out = os.path.join(work, "weights.rdbench.npz")
            timeout = 1800 if state["baseline_s"] is None else max(600.0, 3 * state["baseline_s"])
            r = kit.run(["python3", "train.py", corpus, out], cwd=work, uid=uid, timeout=timeout)
            if not r.ok:
                return r.wall_s, False, "train.py failed: " + r.describe()
            try:
                loss = heldout_loss(load_weights(out), heldout_tokens)
            except BadWeights as e:
                return r.wall_s, False, str(e)
            if not np.isfinite(loss):
                return r.wall_s, False, "held-out loss is not finite"
            losses[which].append(loss)
            if which == "baseline":
                if state["target"] is None:
                    state["target"], state["baseline_s"] = loss * (1 + TOLERANCE), r.wall_s
                return r.wall_s, True, ""
            if loss > state["target"]:
                return r.wall_s, False, "held-out loss %.4f misses the target %.4f" % (loss, state["target"])
            return r.wall_s, True, ""
        finally:
            kit.unstage(work)

    b, c, ok, note = kit.interleaved(
        lambda: attempt("baseline", kit.BASELINE, kit.BASELINE_UID),
        lambda: attempt("candidate", kit.SUBMISSION, kit.CANDIDATE_UID),
        repeats=kit.repeats(3), warmup=0, seed=seed, log=kit.log, baseline_first=True,
    )
    details = {
        "target_loss": state["target"], "tolerance": TOLERANCE,
        "baseline_loss": losses["baseline"], "candidate_loss": losses["candidate"],
    }
    kit.emit(kit.speedup_verdict(b, c, ok, note, plausible_max=PLAUSIBLE_MAX, details=details))


if __name__ == "__main__":
    main()
