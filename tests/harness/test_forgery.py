"""The candidate must not be able to write its own verdict."""

from __future__ import annotations

import json
import shutil


from tests.conftest import rdbench

from pathlib import Path

FORGER = Path(__file__).parent / "submissions" / "forger"


def verify(submission: Path):
    r = rdbench("verify", "tasks/py-primes", "--submission", str(submission))
    assert r.returncode in (0, 3), r.stderr
    return r.returncode, json.loads(r.stdout)


def test_forger_that_answers_right_scores_at_baseline(base_image, tmp_path):
    sub = tmp_path / "sub"
    shutil.copytree(FORGER, sub)
    code, verdict = verify(sub)
    # its answers are right (it runs the baseline algorithm), so it is correct, but its
    # forged 1000x must not show: the speedup is the baseline's, within noise
    assert code == 0 and verdict["correct"] is True
    assert 0.5 < verdict["value"] < 2.0, verdict
    assert verdict["details"]["isolated"] is True


def test_forger_that_answers_wrong_fails(base_image, tmp_path):
    sub = tmp_path / "sub"
    shutil.copytree(FORGER, sub)
    (sub / "WRONG").write_text("")
    code, verdict = verify(sub)
    assert code == 3 and verdict["correct"] is False and verdict["value"] is None
    assert verdict["details"]["failure"] == "wrong counts"
