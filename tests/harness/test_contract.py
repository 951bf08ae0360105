"""The verifier contract (harness/kits/contract.py): what task.toml says is what the verifier
does, through the real `rdbench verify` on Docker; no verify.py restates it."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from harness.kits import contract
from harness.task import find_tasks, load_task
from tests.conftest import TASKS, rdbench


def verify(task, *extra: str) -> dict:
    r = rdbench("verify", str(task), "--submission", str(TASKS / "py-primes" / "solution"), *extra)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


@pytest.mark.docker
@pytest.mark.slow
def test_editing_task_toml_changes_the_verdict(base_image, tmp_path):
    """[verifier] repeats decides the timed runs (--repeats overrides it); [scoring]
    plausible_max decides what is flagged."""
    task = tmp_path / "py-primes"
    shutil.copytree(TASKS / "py-primes", task)
    toml = task / "task.toml"
    toml.write_text(toml.read_text().replace("repeats = 5", "repeats = 2"))
    v = verify(task)
    assert len(v["baseline_s"]) == len(v["candidate_s"]) == 2 and v["value"] > 2.0, v
    assert v["flagged"] is None  # the sieve's ~10x is under py-primes' bound of 200
    toml.write_text(toml.read_text().replace("plausible_max = 200.0", "plausible_max = 2.0"))
    v = verify(task, "--repeats", "1")
    assert len(v["baseline_s"]) == 1, v
    assert "beyond this task's plausibility bound 2.0x" in v["flagged"], v


@pytest.mark.parametrize("task", sorted(p.name for p in find_tasks(TASKS)))
def test_no_verifier_restates_what_its_task_toml_holds(task):
    """Repeats, time limits and the plausibility bound come from the parameters file only."""
    spec = load_task(TASKS / task)
    for path in (TASKS / task / "verifier").glob("*.py"):
        text = path.read_text()
        assert not re.search(r"plausible_max\s*=\s*[0-9]", text), path
        assert not re.search(r"(PLAUSIBLE_MAX|repeats)\s*=\s*[0-9]", text), path
        assert "kit.repeats(" not in text.replace("kit.repeats()", ""), path
        assert "RDBENCH_" not in text, path
    assert spec.schema_version == contract.SCHEMA_VERSION


def test_the_parameters_file_holds_exactly_the_contracts_keys():
    """What the host writes (harness/verify.py) is what the kit reads: every key of
    contract.PARAMS, from task.toml, and the override."""
    from harness.verify import params_text

    spec = load_task(TASKS / "cpu-lm-train")
    p = contract.read_params(params_text(spec, repeats=7))
    assert p.repeats == 7 and p.timeout_s == spec.verifier.timeout_s and p.plausible_max == 500.0
    assert p.task_params == {"loss_tolerance": 0.02} and p.fresh_inputs is True
    assert p.submission == contract.SUBMISSION and p.baseline == contract.BASELINE
    assert contract.read_params(params_text(spec)).repeats == spec.verifier.repeats == 3
