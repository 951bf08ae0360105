"""Count the primes in query ranges: one sieve of Eratosthenes, then slice counts.

Usage: python3 solve.py INPUT.json OUTPUT.json
"""

import json
import sys


def sieve(limit):
    is_p = bytearray([1]) * (limit + 1)
    is_p[:2] = b"\x00\x00"[: min(2, limit + 1)]
    for p in range(2, int(limit ** 0.5) + 1):
        if is_p[p]:
            is_p[p * p :: p] = bytes(len(range(p * p, limit + 1, p)))
    return is_p


def main(inp, out):
    with open(inp) as f:
        queries = json.load(f)["queries"]
    top = max((hi for _, hi in queries), default=0)
    is_p = sieve(top)
    counts = [is_p.count(1, lo, hi) for lo, hi in queries]
    with open(out, "w") as f:
        json.dump({"counts": counts}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
