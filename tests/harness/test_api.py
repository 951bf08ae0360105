"""The Python API (harness/api.py) on the fake backend: a run's bookkeeping (run.json, each
trial's folder, the index), resume, verify and results, with no Docker (the fast tier). The
CLI is these calls plus a terminal; its Docker runs are in test_run.py."""

from __future__ import annotations

import json

import pytest

from harness import api
from results.records import load_run
from tests.conftest import rdbench
from tests.tiny import tiny_task


@pytest.fixture
def task(tmp_path):
    return tiny_task(tmp_path / "tasks")


def test_a_run_writes_its_folder_and_indexes_every_trial(task, tmp_path):
    started, done = [], []
    trials = api.run([task], agent="oracle", trials=2, sandbox="fake", out=tmp_path / "run", db=tmp_path / "i.db",
                     on_start=lambda s: started.append(s.trial_id), on_done=lambda s, r: done.append(r.verdict))
    assert sorted(started) == ["tiny__oracle__0", "tiny__oracle__1"] and done == ["correct", "correct"]
    assert [(t.correct, t.value, t.stop_reason) for t in trials] == [(True, 2.0, "submitted")] * 2
    config = load_run(tmp_path / "run")
    assert (config.backend, config.trials, config.agent.name) == ("fake", 2, "oracle")
    trial = tmp_path / "run" / "trials" / "tiny__oracle__0"
    assert "+42" in (trial / "submission.patch").read_text()
    verdict = json.loads((trial / "verifier.json").read_text())
    assert verdict["details"]["repeats"] == 2 and "secret_seed" in verdict["details"]  # the task's repeats
    record = json.loads((trial / "trial.json").read_text())
    assert set(record["phases"]) >= {"agent", "verify", "submission"}
    assert record["verification"] == verdict  # the verifier's verdict, nested whole: the one record of it
    (group,) = api.results(tmp_path / "i.db")
    assert (group.task, group.label, group.trials, group.success_rate) == ("tiny", "oracle", 2, 1.0)
    assert group.geomean.value == pytest.approx(2.0)


def test_an_unchanged_workspace_is_a_failed_trial_not_an_infra_error(task, tmp_path):
    (trial,) = api.run([task], agent="nop", sandbox="fake", out=tmp_path / "run", db=tmp_path / "i.db", repeats=3)
    assert (trial.verdict, trial.error_class, trial.value) == ("failed", None, None)
    assert trial.verifier_details["answer"] == "0" and trial.verifier_details["repeats"] == 3


def test_resume_runs_only_the_unfinished_trials(task, tmp_path):
    run = tmp_path / "run"
    api.run([task], agent="oracle", trials=3, sandbox="fake", out=run, db=tmp_path / "i.db")
    kept = (run / "trials" / "tiny__oracle__0" / "trial.json").read_text()
    (run / "trials" / "tiny__oracle__1" / "trial.json").unlink()  # cut short
    infra = json.loads((run / "trials" / "tiny__oracle__2" / "trial.json").read_text())
    infra.update(error_class="infra", error="SandboxError: engine down", verification=None)
    (run / "trials" / "tiny__oracle__2" / "trial.json").write_text(json.dumps(infra))
    started = []
    trials = api.run(resume=run, db=tmp_path / "i.db", on_start=lambda s: started.append(s.trial_id))
    assert sorted(started) == ["tiny__oracle__1", "tiny__oracle__2"]
    assert [t.verdict for t in trials] == ["correct"] * 3
    assert (run / "trials" / "tiny__oracle__0" / "trial.json").read_text() == kept
    (group,) = api.results(tmp_path / "i.db")
    assert (group.trials, group.infra, group.success_rate) == (3, 0, 1.0)  # the infra row replaced, not added
    assert api.run(resume=run, db=tmp_path / "i.db", on_start=lambda s: started.append(s)) and len(started) == 2


def test_verify_grades_any_folder(task):
    assert api.verify(task, task / "solution", sandbox="fake").correct
    wrong = api.verify(task, task / "workspace", sandbox="fake", repeats=4, seed=7)
    assert not wrong.correct and wrong.details["repeats"] == 4 and wrong.details["secret_seed"] == 7


@pytest.mark.parametrize("call, says", [
    (lambda t, d: api.run([t], agent="oracle", sandbox="kvm", out=d / "r"), "unknown sandbox backend 'kvm'"),
    (lambda t, d: api.run([], agent="oracle", sandbox="fake"), "name at least one task"),
    (lambda t, d: api.run([t], agent="react", sandbox="fake"), "the react agent needs --model"),
    (lambda t, d: api.run([t], model="nosuch/x", sandbox="fake"), "write PROVIDER/NAME"),
    (lambda t, d: api.run([t], agent="oracle", sandbox="fake", executor="slurm"), "unknown executor 'slurm'"),
    (lambda t, d: api.run([d / "nope"], agent="oracle", sandbox="fake"), "no such task folder"),
    (lambda t, d: api.run(resume=d), "not a run folder"),
    (lambda t, d: api.run([t], resume=d), "resume takes the tasks"),
    (lambda t, d: api.verify(t, d / "missing", sandbox="fake"), "not a folder"),
    (lambda t, d: api.results(d / "none.db"), "no results index yet"),
])
def test_a_refused_request_is_one_clear_error_and_leaves_no_run(task, tmp_path, call, says):
    with pytest.raises(api.ApiError, match=says.replace("(", r"\(")):
        call(task, tmp_path)
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_the_cli_is_the_api_plus_a_terminal(task, tmp_path):
    run, db = str(tmp_path / "run"), str(tmp_path / "i.db")
    r = rdbench("run", str(task), "--sandbox", "fake", "--trials", "2", "--out", run, "--db", db)
    assert r.returncode == 0, r.stderr
    assert "2 trial(s) to run" in r.stderr and "tiny__oracle__1: correct 2.00x" in r.stderr
    r = rdbench("run", "--resume", run, "--db", db)
    assert r.returncode == 0 and "0 trial(s) to run" in r.stderr, r.stderr
    r = rdbench("results", "--db", db, "--format", "json")
    (group,) = json.loads(r.stdout)
    assert (group["label"], group["trials"], group["success_rate"]) == ("oracle", 2, 1.0)
    r = rdbench("verify", str(task), "--submission", str(task / "workspace"), "--sandbox", "fake", "--seed", "3")
    assert r.returncode == 3 and json.loads(r.stdout)["details"]["secret_seed"] == 3
    r = rdbench("run", str(task), "--sandbox", "kvm", "--executor", "local")
    assert r.returncode == 2 and "unknown sandbox backend 'kvm'" in r.stderr
    r = rdbench("run", str(task), "--sandbox", "fake", "--executor", "nope")
    assert r.returncode == 2 and "unknown executor 'nope'" in r.stderr
