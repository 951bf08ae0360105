"""Score weights on the public dev set, the way the verifier scores them on its hidden one.

    python3 evaluate.py [WEIGHTS.npz] [--seed S] [--n N]      default: weights.npz, seed 0, 200 items

Greedy decoding (model.generate), exact match, per benchmark; the task's score is their
weighted mean (data.WEIGHTS). The verifier uses other, secret seeds.
"""

import argparse

import torch

import data
import model


def accuracy(net, seed, n):
    """Exact-match accuracy per benchmark on n items of each, drawn from `seed`."""
    acc = {}
    for bench in data.BENCHMARKS:
        items = data.items(bench, seed, n)
        got = model.generate(net, [p for p, _ in items])
        acc[bench] = sum(g == a for g, (_, a) in zip(got, items)) / n
    return acc


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("weights", nargs="?", default="weights.npz")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(2)
    acc = accuracy(model.load(args.weights), args.seed, args.n)
    for bench, a in acc.items():
        print("%-10s %.3f" % (bench, a))
    print("%-10s %.3f" % ("score", sum(data.WEIGHTS[b] * a for b, a in acc.items())))
