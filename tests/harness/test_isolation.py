"""Isolation between trials, end to end with real `rdbench run` processes: timing cores
exclusive across processes, busy agents frozen while another run's verifier times on their
cores, disk limits, and the verifier's output live."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agents.budget import Budget
from harness.verify import verify_folder
from results.progress import RunProgress
from results.records import TrialResult, load_run
from sandbox.docker import DockerSandbox
from tests.agents.fake_api import FakeAPI, Step, submit
from tests.conftest import ROOT, TASKS, rdbench

RDBENCH = str(Path(sys.executable).with_name("rdbench"))
#: keeps one core busy for `s` seconds of its own CPU time (frozen time is not CPU time)
SPIN = "python3 -c \"import time\nwhile time.process_time() < {s}: pass\nprint('spun')\""


def start(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([RDBENCH, "run", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "COLUMNS": "200", **env})


def trials(run_dir: Path) -> list[TrialResult]:
    return [TrialResult.model_validate_json(p.read_text()) for p in sorted(run_dir.glob("trials/*/trial.json"))]


def cores(cpuset: str) -> set[int]:
    return {int(c) for c in cpuset.split(",")}


@pytest.mark.docker
def test_two_runs_started_together_never_time_on_the_same_core(base_image, tmp_path):
    """Two `rdbench run` processes side by side on one machine (a shared lock folder, as two
    runs of one user have), each with two trials at once: no two timing phases of the four
    trials ever hold one core at the same time."""
    env = {"RDBENCH_CACHE": str(tmp_path / "cache")}
    args = ["py-primes", "--agent", "oracle", "--trials", "2", "--concurrency", "2", "--repeats", "1"]
    procs = [start(*args, "--out", str(tmp_path / name), env=env) for name in ("a", "b")]
    for p in procs:
        _, err = p.communicate(timeout=1500)
        assert p.returncode == 0, err
    done = trials(tmp_path / "a") + trials(tmp_path / "b")
    assert len(done) == 4 and all(t.correct for t in done)
    for x, y in itertools.combinations(done, 2):
        if cores(x.verify_cpuset) & cores(y.verify_cpuset):
            apart = x.verify_window[1] <= y.verify_window[0] or y.verify_window[1] <= x.verify_window[0]
            assert apart, f"{x.run_id}/{x.trial} and {y.run_id}/{y.trial} timed on one core at once"


@pytest.mark.docker
def test_a_busy_agent_is_frozen_while_another_run_verifies_on_its_cores(base_image, tmp_path):
    """Run A's agent spins its core with bash calls; run B, started meanwhile, verifies on that
    core: A's sandbox is frozen for B's timing, its calls still complete, and its trial ends
    normally with the time frozen recorded."""
    env = {"RDBENCH_CACHE": str(tmp_path / "cache")}
    script = [Step(tool_calls=[("bash", {"command": SPIN.format(s=8), "timeout": 300})]) for _ in range(4)]
    with FakeAPI(script + [submit("spun")]) as api:
        busy = start("py-primes", "--model", "anthropic/claude-test", "--out", str(tmp_path / "busy"),
                     env={**env, "ANTHROPIC_BASE_URL": api.url})
        deadline = time.monotonic() + 600
        while not api.requests and time.monotonic() < deadline:  # the first spin is under way
            time.sleep(0.2)
        quiet = start("py-primes", "--agent", "oracle", "--repeats", "1", "--out", str(tmp_path / "quiet"), env=env)
        for p in (busy, quiet):
            _, err = p.communicate(timeout=1500)
            assert p.returncode == 0, err
    (a,) = trials(tmp_path / "busy")
    (b,) = trials(tmp_path / "quiet")
    assert a.error_class is None and a.stop_reason == "submitted" and a.correct, a.error
    assert b.correct and b.verify_cpuset == "0"  # the busy agent's core (spread(1, 0))
    window = b.verify_window[1] - b.verify_window[0]
    assert 1.0 < a.frozen_s <= window + 5, (a.frozen_s, window)
    assert load_run(tmp_path / "busy").freeze is True
    (transcript,) = (tmp_path / "busy").glob("trials/*/transcript.jsonl")
    assert transcript.read_text().count("spun") >= 4  # every spin completed, none timed out


@pytest.mark.docker
def test_no_freeze_is_recorded(tmp_path):
    r = rdbench("run", "py-primes", "--agent", "nop", "--no-freeze", "--repeats", "1", "--out", str(tmp_path / "r"))
    assert r.returncode == 0, r.stderr
    assert load_run(tmp_path / "r").freeze is False


def test_frozen_time_is_not_the_agents_wall_time():
    frozen = {"s": 0.0}
    budget = Budget(10, None, None, None, 60.0, None, frozen=lambda: frozen["s"])
    budget.before_call()
    child = budget.child(0.5)
    assert 59 < budget.time_left() <= 60
    frozen["s"] = 30.0
    assert 89 < budget.time_left() <= 90 and 89 < child.time_left() <= 90
    budget.deadline -= 80  # 80 s of wall time gone, 30 of them frozen: 10 s left
    assert 9 < budget.time_left() <= 10
    budget.before_call()  # still within the limit


@pytest.mark.docker
def test_a_full_disk_is_the_agents_outcome(base_image, tmp_path):
    """A write past the task's disk limit fails inside the sandbox; the agent goes on, its
    workspace is copied out and verified, and the trial is not an infrastructure error."""
    task = tmp_path / "small-disk"
    shutil.copytree(TASKS / "py-primes", task)
    toml = task / "task.toml"
    toml.write_text(toml.read_text().replace('memory = "1g"', 'memory = "1g"\ndisk = "200m"'))
    fill = "dd if=/dev/zero of=/tmp/big bs=1M count=300; df -m /workspace | tail -1"
    script = [Step(tool_calls=[("bash", {"command": fill})]), submit("full")]
    with FakeAPI(script) as api:
        r = rdbench("run", str(task), "--model", "anthropic/claude-test", "--repeats", "1",
                    "--out", str(tmp_path / "run"), env={"ANTHROPIC_BASE_URL": api.url})
    assert r.returncode == 0, r.stderr
    (t,) = trials(tmp_path / "run")
    assert t.error_class is None and t.stop_reason == "submitted" and t.correct
    tool_result = str(api.requests[1][1]["messages"])
    assert "No space left on device" in tool_result


@pytest.mark.docker
def test_the_verifiers_output_is_live(base_image, primes_task, tmp_path):
    """Its stderr reaches logs/verifier.stderr as it is written ("baseline run 1/2"), and the
    progress display shows the verifying trial's latest line, before the verdict."""
    trial_dir = tmp_path / "trial"
    progress = RunProgress("run", {"py-primes": 1})
    progress.start("py-primes", "t0", trial_dir)
    out = {}
    worker = threading.Thread(target=lambda: out.update(v=verify_folder(
        primes_task, TASKS / "py-primes" / "solution", backend=DockerSandbox, image=base_image, cpuset="0",
        log_dir=trial_dir / "logs", repeats=2)))
    worker.start()
    seen = []
    while worker.is_alive():
        line = progress.verifying().get("t0")
        if line and line not in seen:
            seen.append(line)
        time.sleep(0.05)
    worker.join()
    assert out["v"].correct
    assert any(s.startswith("baseline run 1/2") or s.startswith("candidate run 1/2") for s in seen), seen
    log = (trial_dir / "logs" / "verifier.stderr").read_text()
    assert "baseline run 2/2: " in log and "candidate run 2/2: " in log
