"""`rdbench run` end to end: real containers, real verifier runs, real trial.json files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path


import pytest

from harness.scaffold import scaffold
from results.records import TrialResult
from tests.conftest import ROOT, TASKS, rdbench

FIELDS = {"task", "agent", "model", "trial", "verification", "usage", "phases", "error_class", "error"}


def trials(run_dir: Path) -> dict[str, TrialResult]:
    return {p.parent.name: TrialResult.model_validate_json(p.read_text())
            for p in sorted((run_dir / "trials").glob("*/trial.json"))}


def running_of(docker_client, pid: int) -> list:
    """The running containers of the rdbench process `pid`; one removed while listed is skipped."""
    return docker_client.containers.list(filters={"label": ["rdbench=1", f"rdbench.pid={pid}"]}, ignore_removed=True)


@pytest.mark.docker
def test_oracle_beats_5x_and_nop_stays_at_1x(base_image, tmp_path):
    r = rdbench("run", str(TASKS / "py-primes"), "--agent", "oracle", "--out", str(tmp_path / "oracle"))
    assert r.returncode == 0, r.stderr
    assert "correct" in r.stdout and "py-primes" in r.stdout  # the summary table
    (oracle,) = trials(tmp_path / "oracle").values()
    raw = json.loads((tmp_path / "oracle/trials/py-primes__oracle__0/trial.json").read_text())
    assert FIELDS <= raw.keys()
    # behaviour, not a benchmark: the oracle is clearly faster (13x measured), nop is not
    assert oracle.correct and oracle.value > 3.0 and oracle.ci[0] <= oracle.value <= oracle.ci[1]
    assert set(oracle.phases) >= {"agent_sandbox", "agent", "submission", "verify", "teardown"}
    assert "sieve" in (tmp_path / "oracle/trials/py-primes__oracle__0/submission.patch").read_text()

    r = rdbench("run", "py-primes", "--agent", "nop", "--out", str(tmp_path / "nop"))
    assert r.returncode == 0, r.stderr
    (nop,) = trials(tmp_path / "nop").values()
    assert nop.correct and 0.6 <= nop.value <= 1.6, nop
    assert (tmp_path / "nop/trials/py-primes__nop__0/submission.patch").read_text() == ""


@pytest.mark.docker
def test_concurrent_trials_never_time_on_shared_cores(base_image, tmp_path):
    task = scaffold("quick", tmp_path / "tasks")
    r = rdbench("run", str(task), "--agent", "oracle", "--trials", "3", "--concurrency", "3",
                "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    results = trials(tmp_path / "run")
    assert len(results) == 3 and all(t.correct for t in results.values())
    # verification windows of this 1-cpu task overlap in time only on different cores
    ts = list(results.values())
    for i, a in enumerate(ts):
        for b in ts[i + 1:]:
            overlap = a.verify_window[0] < b.verify_window[1] and b.verify_window[0] < a.verify_window[1]
            if overlap:
                assert not set(a.verify_cpuset.split(",")) & set(b.verify_cpuset.split(",")), (a, b)


@pytest.mark.docker
def test_resume_reruns_only_unfinished_trials(base_image, tmp_path):
    task = scaffold("quick", tmp_path / "tasks")
    run_dir = tmp_path / "run"
    assert rdbench("run", str(task), "--agent", "nop", "--trials", "2", "--out", str(run_dir)).returncode == 0
    kept = (run_dir / "trials/quick__nop__0/trial.json").read_text()
    (run_dir / "trials/quick__nop__1/trial.json").unlink()
    r = rdbench("run", "--resume", str(run_dir))
    assert r.returncode == 0, r.stderr
    assert "1 trial(s) to run" in r.stderr
    assert (run_dir / "trials/quick__nop__0/trial.json").read_text() == kept
    assert set(trials(run_dir)) == {"quick__nop__0", "quick__nop__1"}
    r = rdbench("run", "--resume", str(run_dir))
    assert r.returncode == 0 and "0 trial(s) to run" in r.stderr


@pytest.mark.docker
def test_infra_error_is_never_a_score_and_fails_the_run(base_image, tmp_path):
    task = scaffold("broken", tmp_path / "tasks")
    (task / "verifier" / "verify.py").write_text("print('no verdict here')\nraise SystemExit(1)\n")
    r = rdbench("run", str(task), "--agent", "oracle", "--out", str(tmp_path / "run"))
    assert r.returncode == 1
    (t,) = trials(tmp_path / "run").values()
    assert t.error_class == "infra" and t.value is None and t.correct is None
    assert "printed no verdict" in t.error
    assert "infra error" in r.stdout and "--resume" in r.stderr


@pytest.mark.docker
def test_agent_error_is_a_failed_score(base_image, tmp_path):
    task = scaffold("nosolution", tmp_path / "tasks")
    shutil.rmtree(task / "solution")
    r = rdbench("run", str(task), "--agent", "oracle", "--out", str(tmp_path / "run"))
    assert r.returncode == 0
    (t,) = trials(tmp_path / "run").values()
    assert t.error_class == "agent" and t.correct is False and "solution" in t.error


@pytest.mark.docker
def test_ctrl_c_removes_containers_and_resume_finishes(base_image, docker_client, tmp_path):
    run_dir = tmp_path / "run"
    exe = Path(sys.executable).with_name("rdbench")
    proc = subprocess.Popen([str(exe), "run", str(TASKS / "py-primes"), "--agent", "nop", "--out", str(run_dir)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_id = None
    deadline = time.time() + 120
    while time.time() < deadline and run_id is None:  # wait for the verifier container
        for c in running_of(docker_client, proc.pid):
            if "/verifier" in (c.attrs["Config"]["WorkingDir"] or ""):
                run_id = c.labels["rdbench.run"]
        time.sleep(0.1)
    assert run_id, "no verifier container appeared"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "resume with" in err
    assert not docker_client.containers.list(all=True, filters={"label": f"rdbench.run={run_id}"})
    assert not (run_dir / "trials/py-primes__nop__0/trial.json").exists()  # interrupted: no result
    r = rdbench("run", "--resume", str(run_dir))
    assert r.returncode == 0, r.stderr
    assert trials(run_dir)["py-primes__nop__0"].correct


def test_bad_cli_input_is_one_clear_error(tmp_path):
    r = rdbench("run", "no-such-task")
    assert r.returncode == 2 and "no-such-task: no such task folder" in r.stderr
    r = rdbench("run", "py-primes", "--agent", "wizard")
    assert r.returncode == 2 and "unknown agent 'wizard'" in r.stderr
    r = rdbench("run", "--resume", str(tmp_path))
    assert r.returncode == 2 and "not a run folder" in r.stderr
    r = rdbench("run")
    assert r.returncode == 2 and "at least one task" in r.stderr
    r = rdbench("run", "py-primes", "--resume", str(tmp_path))
    assert r.returncode == 2 and "give none of them" in r.stderr
    for out in (r.stderr, r.stdout):
        assert "Traceback" not in out


@pytest.mark.slow
def test_local_backend_runs_a_trial_and_says_it_does_not_isolate(tmp_path):
    r = rdbench("run", "py-primes", "--agent", "oracle", "--sandbox", "local", "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    (t,) = trials(tmp_path / "run").values()
    assert t.correct and t.value > 1.0
    # as root the verifier keeps the kit's user separation (issue 11); the agent is not isolated
    assert t.verifier_details["isolated"] is (os.geteuid() == 0)
    assert "no isolation" in r.stderr


@pytest.mark.docker
def test_repeats_override_reaches_the_verifier(base_image, tmp_path):
    task = scaffold("quick", tmp_path / "tasks")
    r = rdbench("run", str(task), "--agent", "oracle", "--repeats", "2", "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    (t,) = trials(tmp_path / "run").values()
    assert len(t.baseline_s) == len(t.candidate_s) == 2


@pytest.mark.docker
def test_killed_run_leaves_containers_that_clean_removes(base_image, docker_client, tmp_path):
    exe = Path(sys.executable).with_name("rdbench")
    proc = subprocess.Popen([str(exe), "run", str(TASKS / "py-primes"), "--agent", "nop", "--out", str(tmp_path / "run")],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    verifier = []
    while time.time() < deadline and not verifier:  # the verifier container lives for seconds
        verifier = [c for c in running_of(docker_client, proc.pid)
                    if c.attrs["Config"]["WorkingDir"] == "/verifier"]
        time.sleep(0.1)
    assert verifier, "no verifier container appeared"
    proc.kill()  # a crash: no handler runs
    proc.wait()
    assert docker_client.containers.list(all=True, filters={"label": f"rdbench.pid={proc.pid}"})
    r = rdbench("clean")
    assert r.returncode == 0 and "removed" in r.stdout
    assert not docker_client.containers.list(all=True, filters={"label": f"rdbench.pid={proc.pid}"})
