"""The two benchmarks: their prompt formats, answers and a generator of items from a seed.

    python3 data.py SEED N         prints N items of each benchmark, one "prompt|answer" a line

    addition   "Q: 347+58=? A: "        ->  "405"     a number of 2 or 3 digits plus one of 1, 2 or 3 digits
    reverse    "Q: reverse kqwmtz A: "  ->  "ztmwqk"  6 to 20 random lowercase letters

A model answers by greedy decoding after the prompt (see model.generate); its answer is
what it writes before the first newline, and it scores when that equals the answer exactly.
The verifier draws its hidden test items with this generator from a secret seed.
"""

import random
import string
import sys

BENCHMARKS = ("addition", "reverse")
WEIGHTS = {"addition": 0.5, "reverse": 0.5}  # the task's score: the weighted mean accuracy


def number(rng, digits):
    return rng.randint(10 ** (digits - 1), 10 ** digits - 1)


def addition(rng):
    a, b = number(rng, rng.choice((2, 3))), number(rng, rng.choice((1, 2, 3)))
    return "Q: %d+%d=? A: " % (a, b), str(a + b)


def reverse(rng):
    word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(6, 20)))
    return "Q: reverse %s A: " % word, word[::-1]


def items(benchmark, seed, n):
    """n (prompt, answer) pairs of one benchmark, drawn from `seed`."""
    rng = random.Random("%s-%d" % (benchmark, seed))
    make = {"addition": addition, "reverse": reverse}[benchmark]
    return [make(rng) for _ in range(n)]


if __name__ == "__main__":
    seed, n = int(sys.argv[1]), int(sys.argv[2])
    for bench in BENCHMARKS:
        for prompt, answer in items(bench, seed, n):
            print(prompt + "|" + answer)
