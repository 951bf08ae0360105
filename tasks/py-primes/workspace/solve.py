"""Count the primes in query ranges.

Usage: python3 solve.py INPUT.json OUTPUT.json
INPUT:  {"queries": [[lo, hi], ...]}     0 <= lo <= hi <= 2_000_000
OUTPUT: {"counts": [c, ...]}              c = number of primes p with lo <= p < hi
"""

import json
import sys


def is_prime(n):
    if n < 2:
        return False
    d = 2
    while d * d <= n:
        if n % d == 0:
            return False
        d += 1
    return True


def count_primes(lo, hi):
    count = 0
    for n in range(lo, hi):
        if is_prime(n):
            count += 1
    return count


def main(inp, out):
    with open(inp) as f:
        queries = json.load(f)["queries"]
    counts = [count_primes(lo, hi) for lo, hi in queries]
    with open(out, "w") as f:
        json.dump({"counts": counts}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
