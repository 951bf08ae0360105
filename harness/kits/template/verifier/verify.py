"""Verifier: hidden inputs from the secret seed, fresh for every timed pair, exact answers,
interleaved timing (see verify_kit.timed_pairs). The time limits, repeats and plausibility
bound are task.toml's: this file restates none of them."""

import verify_kit as kit


def draw(rng):
    """One pair's input and its answer: a new N each time, of (nearly) the same cost."""
    n = 2_500_000 + rng.randrange(50_000)
    return n, sum(i * i for i in range(n)) % 1_000_003


def attempt(src, uid, n, expected):
    work = kit.stage(src, uid)
    try:
        r = kit.run(["python3", "program.py", str(n)], cwd=work, uid=uid, timeout=kit.param("run_timeout_s"))
        if not r.ok:
            return r.wall_s, False, r.describe()
        if r.stdout.strip() != str(expected):
            return r.wall_s, False, "wrong answer"
        return r.wall_s, True, ""
    finally:
        kit.unstage(work)


def main():
    b, c, ok, note = kit.timed_pairs(
        draw,
        lambda inputs: attempt(kit.BASELINE, kit.BASELINE_UID, *inputs),
        lambda inputs: attempt(kit.SUBMISSION, kit.CANDIDATE_UID, *inputs),
        warmup=1,
    )
    kit.emit(kit.speedup_verdict(b, c, ok, note))


if __name__ == "__main__":
    main()
