"""Verifier of posttrain-mini.

1. Check the submitted /submission/weights.npz without running anything of the
   submission: a regular file, loadable with allow_pickle=False, exactly the documented
   names, shapes and dtype (float32), all finite.
2. Load the weights into the task's own model code (the pristine workspace's model.py in
   /baseline, loaded by path: nothing is imported from /submission, so no file there can
   shadow a module), with the same architecture.
3. From the secret seed (the kit's `pair_rng(0)`: a new draw at every grading), draw a
   hidden test set of each benchmark; greedy-decode it with
   the submission, the base model (/baseline) and the reference fine-tune (reference.npz,
   beside this file); exact-match accuracy per benchmark.
4. score = the benchmarks' weighted mean accuracy; value = the normalised score
   (agent - base) / (reference - base), floored at 0, with a bootstrap CI over test items.
"""

import hashlib
import importlib.util
import os

import numpy as np
import torch

import verify_kit as kit

HERE = os.path.dirname(os.path.abspath(__file__))
WEIGHTS = "weights.npz"
MAX_WEIGHTS_BYTES = 8 << 20
MIN_GAP = 0.05              # reference - base below this: the verifier itself is broken


def trusted(name):
    """A module of the task's pristine workspace, loaded by its path."""
    spec = importlib.util.spec_from_file_location("posttrain_" + name, os.path.join(kit.BASELINE, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


model = trusted("model")
data = trusted("data")


BadWeights = kit.BadWeights


def load_weights(path):
    """A model holding the weights at `path`, or BadWeights saying what is wrong with the file."""
    arrays = kit.load_npz(path, model.shapes(), (np.float32,), MAX_WEIGHTS_BYTES, label=WEIGHTS)
    net = model.GPT()
    net.load_state_dict({k: torch.from_numpy(arrays[model.npz_name(k)]) for k in net.state_dict()})
    return net


def correct_per_item(net, items):
    got = model.generate(net, [p for p, _ in items])
    return np.array([g == a for g, (_, a) in zip(got, items)], dtype=np.float64)


def score(hits):
    return sum(data.WEIGHTS[b] * hits[b].mean() for b in data.BENCHMARKS)


def normalised(cand, base, ref):
    return (score(cand) - score(base)) / (score(ref) - score(base))


def bootstrap_ci(cand, base, ref, n=1000, seed=0):
    """Percentile CI of the normalised score, resampling test items (the same for all three models)."""
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n):
        pick = {b: rng.integers(0, len(cand[b]), len(cand[b])) for b in data.BENCHMARKS}
        c, b_, r = ({k: h[k][pick[k]] for k in data.BENCHMARKS} for h in (cand, base, ref))
        if score(r) > score(b_):
            vals.append(normalised(c, b_, r))
    vals.sort()
    return [max(0.0, vals[int(0.025 * len(vals))]), max(0.0, vals[int(0.975 * len(vals)) - 1])]


def main():
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    seed = kit.pair_rng(0).getrandbits(62)
    try:
        cand_net = load_weights(os.path.join(kit.SUBMISSION, WEIGHTS))
    except BadWeights as e:
        kit.emit({"correct": False, "metric": "normalised_score", "value": None,
                  "details": {"failure": str(e), "isolated": kit.isolated()}})
        return
    base_net = load_weights(os.path.join(kit.BASELINE, WEIGHTS))
    ref_net = load_weights(os.path.join(HERE, "reference.npz"))
    hits = {"candidate": {}, "base": {}, "reference": {}}
    fingerprint = hashlib.sha256()
    for bench in data.BENCHMARKS:
        items = data.items(bench, seed, kit.param("items"))
        fingerprint.update(repr(items).encode())
        for who, net in (("candidate", cand_net), ("base", base_net), ("reference", ref_net)):
            hits[who][bench] = correct_per_item(net, items)
    cand, base, ref = hits["candidate"], hits["base"], hits["reference"]
    if score(ref) - score(base) < MIN_GAP:
        raise RuntimeError("the reference scores %.3f, the base %.3f: the verifier is broken" % (score(ref), score(base)))
    value = normalised(cand, base, ref)
    details = {
        "accuracy": {who: {b: float(h[b].mean()) for b in data.BENCHMARKS} for who, h in hits.items()},
        "score": {who: float(score(h)) for who, h in hits.items()},
        "normalised_per_benchmark": {
            b: float((cand[b].mean() - base[b].mean()) / (ref[b].mean() - base[b].mean()))
            if ref[b].mean() > base[b].mean() else None for b in data.BENCHMARKS},
        "normalised_unfloored": float(value),
        "weights": data.WEIGHTS, "n_items": kit.param("items"), "test_set_sha256": fingerprint.hexdigest()[:16], "isolated": kit.isolated(),
    }
    kit.log("accuracy %s" % details["accuracy"])
    kit.emit({"correct": True, "metric": "normalised_score", "value": max(0.0, float(value)),
              "ci": bootstrap_ci(cand, base, ref), "details": details})


if __name__ == "__main__":
    main()
