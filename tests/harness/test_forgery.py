"""The candidate must not be able to write its own verdict."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import rdbench

FORGER = Path(__file__).parent / "submissions" / "forger"
#: the local backend keeps the kit's user separation only when the verifier runs as root
SANDBOXES = [pytest.param("docker", marks=pytest.mark.docker),
             pytest.param("local", marks=pytest.mark.skipif(os.geteuid() != 0, reason="needs root"))]
pytestmark = pytest.mark.slow


def verify(submission: Path, sandbox: str = "docker"):
    r = rdbench("verify", "tasks/py-primes", "--submission", str(submission), "--sandbox", sandbox)
    assert r.returncode in (0, 3), r.stderr
    return r.returncode, json.loads(r.stdout)


@pytest.fixture
def sandbox(request):
    if request.param == "docker":
        request.getfixturevalue("base_image")
    return request.param


@pytest.mark.parametrize("sandbox", SANDBOXES, indirect=True)
def test_forger_that_answers_right_scores_at_baseline(sandbox, tmp_path):
    sub = tmp_path / "sub"
    shutil.copytree(FORGER, sub)
    code, verdict = verify(sub, sandbox)
    # its answers are right (it runs the baseline algorithm), so it is correct, but its
    # forged 1000x must not show: the speedup is the baseline's, within noise
    assert code == 0 and verdict["correct"] is True
    assert 0.5 < verdict["value"] < 2.0, verdict
    assert verdict["details"]["isolated"] is True


@pytest.mark.parametrize("sandbox", SANDBOXES, indirect=True)
def test_forger_that_answers_wrong_fails(sandbox, tmp_path):
    sub = tmp_path / "sub"
    shutil.copytree(FORGER, sub)
    (sub / "WRONG").write_text("")
    code, verdict = verify(sub, sandbox)
    assert code == 3 and verdict["correct"] is False and verdict["value"] is None
    assert verdict["details"]["failure"] == "wrong counts"
