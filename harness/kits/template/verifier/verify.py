"""Verifier: hidden inputs from the secret seed, exact answers, interleaved timing (see verify_kit)."""

import random

import verify_kit as kit



def attempt(src, uid, n, expected):
    work = kit.stage(src, uid)
    try:
        r = kit.run(["python3", "program.py", str(n)], cwd=work, uid=uid, timeout=60)
        if not r.ok:
            return r.wall_s, False, r.describe()
        if r.stdout.strip() != str(expected):
            return r.wall_s, False, "wrong answer"
        return r.wall_s, True, ""
    finally:
        kit.unstage(work)


def main():
    n = random.Random(kit.secret_seed()).randrange(2_000_000, 3_000_000)
    expected = sum(i * i for i in range(n)) % 1_000_003
    b, c, ok, note = kit.interleaved(
        lambda: attempt(kit.BASELINE, kit.BASELINE_UID, n, expected),
        lambda: attempt(kit.SUBMISSION, kit.CANDIDATE_UID, n, expected),
        repeats=kit.repeats(), warmup=1, seed=kit.secret_seed(), log=kit.log,
    )
    kit.emit(kit.speedup_verdict(b, c, ok, note, plausible_max=1000.0))


if __name__ == "__main__":
    main()
