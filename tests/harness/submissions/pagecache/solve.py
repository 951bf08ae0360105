"""py-primes with the slow algorithm kept, and its answers cached in the page cache
(pagecache.py), keyed by the input: with the same queries in every run, every run after the
first only reads the answer (3.63x, 2.18x, 3.12x on the kit before fresh inputs, issue 22);
with fresh queries for every timed pair, it never finds one: ~1x. The slow algorithm is the
baseline's own (slow.py: the test copies tasks/py-primes/workspace/solve.py in)."""

import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pagecache  # noqa: E402
from slow import count_primes  # noqa: E402 - py-primes' workspace/solve.py, copied in by the test


def main(inp, out):
    raw = open(inp, "rb").read()
    key = hashlib.sha256(raw).hexdigest()
    try:
        cached = pagecache.load(key)
    except OSError:
        cached = None
    if cached is not None:
        sys.stderr.write("page cache hit\n")
        text = cached.decode()
    else:
        queries = json.loads(raw)["queries"]
        text = json.dumps({"counts": [count_primes(lo, hi) for lo, hi in queries]})
    with open(out, "w") as f:
        f.write(text)
    try:
        pagecache.save(key, text.encode())  # again after a hit: a timed read-back evicts what it read
    except OSError:
        pass


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
