"""Pre-train the base model on a generic synthetic corpus: workspace/weights.npz.

    python3 recipe/pretrain.py OUT.npz        (run in the rdbench base image; see ../README.md)

The corpus is plain prose with numbers and words: stories, counts, dates, lists. It never
uses the benchmarks' "Q: ... A:" format, never adds numbers and never spells words
backwards, so the base model knows the characters but not the tasks (it scores ~0).
Deterministic: fixed seeds, 2 threads, deterministic algorithms.
"""

import os
import random
import sys
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "workspace"))
import model  # noqa: E402
import train_loop  # noqa: E402

# ---- config ----
corpus_chars = 1_000_000
batch_size = 32
max_steps = 800
learning_rate = 2e-3
warmup = 100
seed = 1234

# ---- corpus ----
NAMES = ["Anna", "Tom", "Mia", "Quinn", "Adam", "Lena", "Omar", "Zoe", "Ivan", "Ruth", "Kofi", "Yuki",
         "Paul", "Sara", "Ben", "Nina", "Hugo", "Elsa", "Raj", "Gwen", "Felix", "Vera", "Jack", "Ada"]
THINGS = ["apples", "books", "coins", "stones", "letters", "boats", "birds", "cups", "keys", "maps",
          "shells", "lamps", "seeds", "ropes", "bells", "hats", "pens", "jars", "nails", "cards"]
PLACES = ["the market", "the river", "the old mill", "the school", "the harbour", "the hill", "the farm",
          "the station", "the library", "the forest", "the bridge", "the square"]
VERBS = ["found", "sold", "bought", "counted", "lost", "kept", "gave away", "painted", "carried", "hid"]
ADJS = ["red", "small", "heavy", "old", "new", "bright", "quiet", "green", "round", "strange", "tall"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]


def num(rng):
    return str(rng.choice([rng.randint(0, 9), rng.randint(10, 99), rng.randint(100, 999), rng.randint(1000, 9999)]))


def sentence(rng):
    n, t, p = rng.choice(NAMES), rng.choice(THINGS), rng.choice(PLACES)
    forms = [
        lambda: "%s %s %s %s %s at %s." % (n, rng.choice(VERBS), num(rng), rng.choice(ADJS), t, p),
        lambda: "On %s %d, %s walked %s miles to %s." % (rng.choice(MONTHS), rng.randint(1, 28), n, num(rng), p),
        lambda: "There were %s %s near %s, and %s of them were %s." % (num(rng), t, p, num(rng), rng.choice(ADJS)),
        lambda: "In the year %d, %s wrote %s letters to %s." % (rng.randint(1500, 2099), n, num(rng), rng.choice(NAMES)),
        lambda: "Where is %s? %s is at %s with %s %s." % (n, n, p, num(rng), t),
        lambda: "The list had %s: %s." % (t, ", ".join(num(rng) for _ in range(rng.randint(2, 6)))),
        lambda: "%s said: \"I have %s %s and %s %s.\"" % (n, num(rng), t, num(rng), rng.choice(THINGS)),
        lambda: "Room %s is open from %d to %d (except on %s)." % (num(rng), rng.randint(6, 11), rng.randint(12, 22),
                                                                 rng.choice(MONTHS)),
        lambda: "The %s %s of %s cost %s coins; %s paid." % (rng.choice(ADJS), t, p, num(rng), n),
    ]
    return rng.choice(forms)()


def corpus(n_chars, rng):
    parts, size = [], 0
    while size < n_chars:
        para = " ".join(sentence(rng) for _ in range(rng.randint(1, 4))) + "\n"
        parts.append(para)
        size += len(para)
    return "".join(parts)[:n_chars]


def main():
    out = sys.argv[1]
    torch.manual_seed(seed)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    text = corpus(corpus_chars, random.Random(seed))
    data = torch.tensor(model.encode(text), dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    net = model.GPT()
    T = model.block_size

    def get_batch():
        starts = torch.randint(0, len(data) - T - 1, (batch_size,), generator=gen)
        return torch.stack([data[s:s + T] for s in starts]), torch.stack([data[s + 1:s + T + 1] for s in starts])

    train_loop.train(net, get_batch, max_steps, learning_rate, warmup)
    model.save(net, out)
    print("sample:", repr(model.generate(net, ["Anna sold ", "On May 3, "], max_new=40)))


if __name__ == "__main__":
    main()
