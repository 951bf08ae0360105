"""The verify kit's statistics and timing order (pure functions; no sandbox)."""

from __future__ import annotations

import random

import pytest

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "harness" / "kits"))
import verify_kit as kit  # noqa: E402 - an in-sandbox kit, not a host module


def test_median():
    assert kit.median([3, 1, 2]) == 2
    assert kit.median([4, 1, 2, 3]) == 2.5
    with pytest.raises(ValueError):
        kit.median([])


def test_bootstrap_ci_brackets_the_ratio_and_narrows_with_less_noise():
    rng = random.Random(0)
    noisy_b = [1.0 + rng.gauss(0, 0.1) for _ in range(9)]
    noisy_c = [0.1 + rng.gauss(0, 0.01) for _ in range(9)]
    lo, hi = kit.bootstrap_ratio_ci(noisy_b, noisy_c)
    ratio = kit.median(noisy_b) / kit.median(noisy_c)
    assert lo <= ratio <= hi
    lo2, hi2 = kit.bootstrap_ratio_ci([1.0, 1.001, 0.999] * 3, [0.1, 0.1001, 0.0999] * 3)
    assert hi2 - lo2 < hi - lo


def test_aa_noise():
    assert kit.aa_noise([1.0, 1.0, 1.0, 1.0]) == 0.0
    assert kit.aa_noise([1.0, 1.1, 1.0, 1.1]) == pytest.approx(1 - 1 / 1.1)
    assert kit.aa_noise([1.0]) is None


def test_interleaved_randomises_order_and_skips_warmup():
    calls = []

    def prog(name, secs):
        def f():
            calls.append(name)
            return secs, True, ""
        return f

    b, c, ok, _ = kit.interleaved(prog("b", 2.0), prog("c", 1.0), repeats=20, warmup=2, seed=1)
    assert ok and len(b) == len(c) == 20 and set(b) == {2.0}
    firsts = calls[0::2]
    assert 0 < firsts.count("b") < len(firsts)  # neither always goes first


def test_interleaved_stops_at_first_wrong_candidate():
    b, c, ok, note = kit.interleaved(lambda: (1.0, True, ""), lambda: (0.1, False, "wrong"), repeats=5, seed=0)
    assert not ok and note == "wrong" and c == []


def test_interleaved_broken_baseline_is_a_verifier_fault():
    with pytest.raises(RuntimeError, match="baseline failed"):
        kit.interleaved(lambda: (1.0, False, "crash"), lambda: (0.1, True, ""), repeats=3, seed=0)


def test_speedup_verdict_flags_implausible_values():
    v = kit.speedup_verdict([1.0] * 5, [0.001] * 5, True, plausible_max=100)
    assert v["value"] == pytest.approx(1000) and "plausibility" in v["flagged"]
    v = kit.speedup_verdict([1.0] * 5, [0.5] * 5, True, plausible_max=100)
    assert "flagged" not in v and v["ci"] == [pytest.approx(2.0), pytest.approx(2.0)]
    v = kit.speedup_verdict([1.0], [], False, "wrong")
    assert v["correct"] is False and v["value"] is None and v["details"]["failure"] == "wrong"


def test_interleaved_baseline_first_fixes_only_the_first_pair():
    calls = []

    def prog(name):
        def f():
            calls.append(name)
            return 1.0, True, ""
        return f

    kit.interleaved(prog("b"), prog("c"), repeats=30, warmup=0, seed=3, baseline_first=True)
    assert calls[0] == "b"
    assert "c" in calls[2::2]  # later pairs are still shuffled
