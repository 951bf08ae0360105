"""Fresh inputs for every timed pair (issue 22): the page-cache cheat, a real submission
through the real `rdbench verify`.

The cheat (submissions/pagecache) keeps py-primes' slow algorithm and keeps its answers,
keyed by the input, as resident and evicted pages of a root-owned, read-only file in /usr:
nothing is written, so no census or scrub can remove it, and it survives containers. With
the same queries in every run, every run after the first reads its answer (the control
below, with `fresh_inputs = false`); with fresh queries for every pair it never finds one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import TASKS, rdbench

CHEAT = Path(__file__).parent / "submissions" / "pagecache"
SANDBOXES = ["docker", pytest.param("local", marks=pytest.mark.skipif(os.geteuid() != 0, reason="needs root"))]


@pytest.fixture
def sandbox(request):
    if request.param == "docker":
        request.getfixturevalue("base_image")
    return request.param


def cheat(tmp_path: Path) -> Path:
    """The cheat, with py-primes' own slow algorithm (workspace/solve.py) as slow.py."""
    sub = tmp_path / "cheat"
    shutil.copytree(CHEAT, sub)
    shutil.copy(TASKS / "py-primes" / "workspace" / "solve.py", sub / "slow.py")
    return sub


def verify(task: Path, sandbox: str, sub: Path, repeats: int = 5) -> dict:
    r = rdbench("verify", str(task), "--submission", str(sub), "--sandbox", sandbox, "--repeats", str(repeats))
    assert r.returncode in (0, 3), r.stdout + r.stderr
    return json.loads(r.stdout)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("sandbox", SANDBOXES, indirect=True)
def test_answers_kept_in_the_page_cache_are_worthless_with_fresh_inputs(sandbox, tmp_path):
    v = verify(TASKS / "py-primes", sandbox, cheat(tmp_path))
    assert v["correct"] is True, v["details"]
    assert v["details"]["fresh_inputs"] is True
    # ~1x: no run finds an answer; on the kit before fresh inputs: 3.63x, 2.18x (Docker), 3.12x (local)
    assert v["value"] < 1.5 and v["ci"][0] < 1.5, v


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.extended
@pytest.mark.parametrize("sandbox", SANDBOXES, indirect=True)
def test_the_cheat_scores_when_every_run_gets_the_same_inputs(sandbox, tmp_path):
    """The control through the verifier: a copy of py-primes with `fresh_inputs = false` (what
    every task had before): the cheat reads its answers back and scores. (Extended tier: it
    asserts a speedup, which needs the page cache's timing to tell pages apart on this host.)"""
    task = tmp_path / "py-primes"
    shutil.copytree(TASKS / "py-primes", task)
    toml = task / "task.toml"
    toml.write_text(toml.read_text().replace("fresh_inputs = true", "fresh_inputs = false"))
    v = verify(task, sandbox, cheat(tmp_path))
    assert v["correct"] is True and v["details"]["fresh_inputs"] is False, v
    assert v["value"] > 1.5, v


def test_the_page_cache_carries_data_between_processes():
    """The control on the host (no verifier): what one process keeps in the page cache, the
    next one reads back, nothing written anywhere; so the tests above catch an open hole,
    not a broken cheat."""
    key, data = uuid.uuid4().hex, uuid.uuid4().hex.encode()
    prog = f"import sys; sys.path.insert(0, {str(CHEAT)!r}); import pagecache\n" + \
        "if sys.argv[1] == 'save':\n    pagecache.save(%r, %r)\nelse:\n    print(pagecache.load(%r))\n" % (key, data, key)
    subprocess.run([sys.executable, "-c", prog, "save"], check=True, timeout=60)
    r = subprocess.run([sys.executable, "-c", prog, "load"], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == repr(data), r.stderr
