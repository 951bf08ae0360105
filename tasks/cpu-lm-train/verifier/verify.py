"""Verifier of cpu-lm-train.

1. For every timed pair (baseline run i, candidate run i), from the secret seed, make a NEW
   language (its own lexicon and grammar, so weights trained anywhere else, or by an
   earlier run, are useless) and draw from it a training corpus and a held-out text. The
   held-out text stays in the verifier's memory. Every language costs the same to train
   on (same corpus size, same model), so the A/A figure still compares like with like.
2. Run the baseline and the submission, each as its own user from a private copy, on the
   pair's training corpus, in randomised interleaved order. Time counted: the program's
   wall time, start to exit.
3. Load each weights file into this verifier's OWN forward pass (float64) and compute the
   held-out loss. The submission is correct iff in every pair its loss is at most the
   pair's baseline loss x (1 + [verifier.params] loss_tolerance), with weights of exactly
   the documented format.
"""

import os
import sys

import numpy as np

import verify_kit as kit

sys.path.insert(0, kit.BASELINE)  # the task's pristine workspace: its data.py is trusted
import data  # noqa: E402

TRAIN_CHARS = 600_000
CANDIDATE_MIN_S = 120.0  # the candidate's time limit, at the least (a short task copy's baseline takes seconds)
HELDOUT_CHARS = 65_536
MAX_WEIGHTS_BYTES = 16 << 20

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


def draw(rng):
    """One pair's language: its training corpus, its held-out tokens, and the pair's losses."""
    lang, text_seed = rng.getrandbits(31), rng.getrandbits(62)
    heldout = data.generate(lang, HELDOUT_CHARS, text_seed=text_seed + 1)
    return {"corpus": data.generate(lang, TRAIN_CHARS, text_seed=text_seed).encode(),
            "heldout": np.array([data.ALPHABET.index(ch) for ch in heldout], dtype=np.int64), "loss": {}}


def main():
    tolerance = kit.param("loss_tolerance")
    losses = {"baseline": [], "candidate": []}
    first = {}

    def attempt(which, src, uid, pair):
        work = kit.stage(src, uid)
        try:
            corpus = os.path.join(work, "corpus.rdbench.txt")
            kit.write_input(corpus, pair["corpus"], uid)
            out = os.path.join(work, "weights.rdbench.npz")
            # the baseline (ours) gets a generous limit; the candidate three times the first
            # baseline run (timed first: baseline_first), at least CANDIDATE_MIN_S
            timeout = 1800 if which == "baseline" else max(CANDIDATE_MIN_S, 3 * first["baseline_s"])
            r = kit.run(["python3", "train.py", corpus, out], cwd=work, uid=uid, timeout=timeout)
            if which == "baseline":
                first.setdefault("baseline_s", r.wall_s)
            if not r.ok:
                return r.wall_s, False, "train.py failed: " + r.describe()
            try:
                loss = heldout_loss(load_weights(out), pair["heldout"])
            except BadWeights as e:
                return r.wall_s, False, str(e)
            if not np.isfinite(loss):
                return r.wall_s, False, "held-out loss is not finite"
            losses[which].append(loss)
            pair["loss"][which] = loss
            return r.wall_s, True, ""
        finally:
            kit.unstage(work)

    def judge(pair):
        target = pair["loss"]["baseline"] * (1 + tolerance)
        if pair["loss"]["candidate"] > target:
            return False, "held-out loss %.4f misses the target %.4f" % (pair["loss"]["candidate"], target)
        return True, ""

    b, c, ok, note = kit.timed_pairs(
        draw,
        lambda pair: attempt("baseline", kit.BASELINE, kit.BASELINE_UID, pair),
        lambda pair: attempt("candidate", kit.SUBMISSION, kit.CANDIDATE_UID, pair),
        warmup=0, judge=judge, baseline_first=True,
    )
    details = {"loss_tolerance": tolerance, "baseline_loss": losses["baseline"], "candidate_loss": losses["candidate"]}
    kit.emit(kit.speedup_verdict(b, c, ok, note, details=details))


if __name__ == "__main__":
    main()
