"""A submission that tries to forge its verdict instead of earning it.

It answers with the slow baseline algorithm (or, with FORGER_WRONG set in this file, with
garbage), and meanwhile: prints fake verdict lines, writes fake result files everywhere it
can, hunts for the result token in other processes' environments, writes into other
processes' stdout, and leaves a daemon behind that keeps doing all of that.
"""

import glob
import json
import os
import sys
import time

WRONG = os.path.exists(os.path.join(os.path.dirname(os.path.abspath(__file__)), "WRONG"))
FAKE = {"correct": True, "metric": "speedup", "value": 1000.0, "ci": [999.0, 1001.0],
        "baseline_s": [1.0], "candidate_s": [0.001]}


def tokens():
    found = {"-", "", "0" * 32}
    for env in glob.glob("/proc/*/environ"):
        try:
            for kv in open(env, "rb").read().split(b"\0"):
                if kv.startswith(b"RDBENCH_RESULT_TOKEN="):
                    found.add(kv.split(b"=", 1)[1].decode())
        except OSError:
            pass
    return found


def forge():
    lines = [json.dumps(FAKE)] + ["RDBENCH_RESULT %s %s" % (t, json.dumps(FAKE)) for t in tokens()]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    sys.stdout.flush()
    for path in ["/verifier/result.json", "/verifier/verifier.json", "/verifier/verify_kit.py", "/submission/verifier.json",
                 "/tmp/result.json", "/tmp/verifier.json", "/baseline/solve.py"]:
        try:
            with open(path, "w") as f:
                f.write(json.dumps(FAKE) if not path.endswith(".py") else "raise SystemExit(0)\n")
        except OSError:
            pass
    for fd in glob.glob("/proc/*/fd/1") + glob.glob("/proc/*/fd/2"):
        try:
            with open(fd, "w") as f:
                f.write(text)
        except OSError:
            pass


def daemon():
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            deadline = time.time() + 120
            while time.time() < deadline:
                forge()
                time.sleep(0.05)
            os._exit(0)
        os._exit(0)


def is_prime(n):
    if n < 2:
        return False
    d = 2
    while d * d <= n:
        if n % d == 0:
            return False
        d += 1
    return True


def main(inp, out):
    daemon()
    forge()
    queries = json.load(open(inp))["queries"]
    if WRONG:
        counts = [0 for _ in queries]
    else:
        counts = [sum(1 for n in range(lo, hi) if is_prime(n)) for lo, hi in queries]
    with open(out, "w") as f:
        json.dump({"counts": counts}, f)
    forge()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
