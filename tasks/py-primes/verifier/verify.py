"""Verifier of py-primes: hidden queries, fresh for every timed pair, exact answers,
interleaved timing."""

import json
import os

import verify_kit as kit

N_QUERIES = 40
MAX_HI = 2_000_000
WIDTH = 3_000


def hidden_queries(rng):
    """N_QUERIES ranges of WIDTH numbers, query j at a random place in the j-th of N_QUERIES
    equal strata of [0, MAX_HI): every draw costs the same (the cost of a number grows with
    its size), and no two draws are alike."""
    stratum = MAX_HI // N_QUERIES
    queries = []
    for j in range(N_QUERIES):
        lo = j * stratum + rng.randrange(stratum - WIDTH)
        queries.append([lo, lo + WIDTH])
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
        r = kit.run(["python3", "solve.py", "input.json", "output.json"], cwd=work, uid=uid, timeout=kit.param("run_timeout_s"))
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


def draw(rng):
    queries = hidden_queries(rng)
    return queries, reference_counts(queries)


def main():
    b, c, ok, note = kit.timed_pairs(
        draw,
        lambda inputs: attempt(kit.BASELINE, kit.BASELINE_UID, *inputs),
        lambda inputs: attempt(kit.SUBMISSION, kit.CANDIDATE_UID, *inputs),
        warmup=1,
    )
    kit.emit(kit.speedup_verdict(b, c, ok, note, details={"queries": N_QUERIES}))


if __name__ == "__main__":
    main()
