"""The "human" reference fine-tune: solution/weights.npz (and verifier/reference.npz).

    python3 recipe/finetune_reference.py BASE.npz OUT.npz    (run in the rdbench base image; see ../README.md)

Plain supervised fine-tuning, the recipe a person would try first: fresh items of both
benchmarks from the public generator (training seeds, never the verifier's), the loss on
the answer and its closing newline only, AdamW with warm-up and cosine decay, a fixed
number of steps (a few minutes on 2 cpus). Deterministic: fixed seeds, 2 threads.
"""

import os
import random
import sys
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "workspace"))
import data  # noqa: E402
import evaluate  # noqa: E402
import model  # noqa: E402
import train_loop  # noqa: E402

# ---- config ----
batch_size = 64
max_steps = 500
learning_rate = 1e-3
warmup = 50
seed = 4321
dev_seed, dev_n = 0, 200


def pad(rows):
    """(ids, prompt length) rows -> right-padded (idx, targets); the targets are the answer
    and its closing newline, -100 elsewhere."""
    T = max(len(ids) for ids, _ in rows) - 1
    x = torch.full((len(rows), T), model.stoi["\n"], dtype=torch.long)
    y = torch.full((len(rows), T), -100, dtype=torch.long)
    for r, (ids, n_prompt) in enumerate(rows):
        x[r, :len(ids) - 1] = torch.tensor(ids[:-1])
        y[r, n_prompt - 1:len(ids) - 1] = torch.tensor(ids[n_prompt:])
    return x, y


def row(prompt, answer):
    return model.encode("\n" + prompt + answer + "\n"), 1 + len(prompt)


def batch(rng):
    """Fresh items, the benchmarks in turn."""
    make = [getattr(data, b) for b in data.BENCHMARKS]
    return pad([row(*make[i % len(make)](rng)) for i in range(batch_size)])


def main():
    base, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(seed)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    rng = random.Random(seed)
    net = model.load(base)
    print("base dev accuracy", evaluate.accuracy(net, dev_seed, dev_n), flush=True)
    train_loop.train(net, lambda: batch(rng), max_steps, learning_rate, warmup)
    model.save(net, out)
    print("reference dev accuracy", evaluate.accuracy(model.load(out), dev_seed, dev_n), flush=True)


if __name__ == "__main__":
    main()
