"""Verifier of py-primes: hidden queries, exact answers, interleaved timing."""

import json
import os
import random

import verify_kit as kit

N_QUERIES = 40
MAX_HI = 2_000_000
WIDTH = 4_000
RUN_TIMEOUT_S = 60.0


def hidden_queries(seed):
    rng = random.Random(seed)
    queries = []
    for _ in range(N_QUERIES):
        lo = rng.randrange(0, MAX_HI - WIDTH)
        queries.append([lo, lo + rng.randrange(WIDTH // 2, WIDTH)])
    return queries


def reference_counts(queries):
    top = max(hi for _, hi in queries)
    is_p = bytearray([1]) * (top + 1)
    is_p[0] = is_p[1] = 0
    for p in range(2, int(top ** 0.5) + 1):
        if is_p[p]:
            is_p[p * p :: p] = bytes(len(range(p * p, top + 1, p)))
    return [is_p.count(1, lo, hi) for lo, hi in queries]


def attempt(src, uid, queries, expected):
    """Run the program in `src` once, as `uid`; return (seconds, correct?, why not)."""
    work = kit.stage(src, uid)
    try:
        kit.write_input(os.path.join(work, "input.json"), json.dumps({"queries": queries}), uid)
        r = kit.run(["python3", "solve.py", "input.json", "output.json"], cwd=work, uid=uid, timeout=RUN_TIMEOUT_S)
        if not r.ok:
            return r.wall_s, False, r.describe()
        try:
            counts = json.loads(kit.read_output(work, "output.json", 1 << 20))["counts"]
        except (kit.SubmissionError, ValueError, KeyError, TypeError) as e:
            return r.wall_s, False, "no valid output.json: %s" % e
        if counts != expected:
            return r.wall_s, False, "wrong counts"
        return r.wall_s, True, ""
    finally:
        kit.unstage(work)


def main():
    queries = hidden_queries(kit.secret_seed())
    expected = reference_counts(queries)
    b, c, ok, note = kit.interleaved(
        lambda: attempt(kit.BASELINE, kit.BASELINE_UID, queries, expected),
        lambda: attempt(kit.SUBMISSION, kit.CANDIDATE_UID, queries, expected),
        repeats=kit.repeats(), warmup=1, seed=kit.secret_seed(), log=kit.log,
    )
    kit.emit(kit.speedup_verdict(b, c, ok, note, plausible_max=200.0, details={"queries": N_QUERIES}))


if __name__ == "__main__":
    main()
