"""Deadlines that hold: a model request never outlives the agent's wall time, and Ctrl-C ends
a run even while a model call hangs. Bounds are generous: outcomes are asserted, not speed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.agents.fake_api import FakeAPI, Step
from tests.agents.test_react import events
from tests.agents.test_tool_calls import provider_run
from tests.conftest import ROOT, _rdbench_containers

pytestmark = pytest.mark.docker  # every test here needs the Docker engine


def test_a_hung_model_call_ends_at_the_agents_wall_time(base_image, tmp_path):
    script = [Step(tool_calls=[("bash", {"command": "true"})]), Step(hang=True)]
    with FakeAPI(script) as api:
        r, t, out = provider_run("anthropic", api, ["--agent-timeout", "60"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert t.error_class is None and t.stop_reason == "time_limit" and t.correct
    assert len(api.requests) == 2  # no retry after the deadline
    # the SDK's own read timeout is 600 s: the agent phase ended near its 60 s instead
    assert t.phases["agent"] < 300
    assert any(e["type"] == "stop" and "waiting for the model" in e["detail"] for e in events(out))


def test_ctrl_c_during_a_hung_model_call_ends_the_run(base_image, tmp_path):
    with FakeAPI([Step(hang=True)]) as api:
        exe = Path(sys.executable).with_name("rdbench")
        proc = subprocess.Popen([str(exe), "run", "py-primes", "--model", "anthropic/claude-test",
                                 "--agent-timeout", "3000", "--out", str(tmp_path / "run")], cwd=ROOT,
                                env={**os.environ, "ANTHROPIC_BASE_URL": api.url},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            for _ in range(600):  # until the model call is in flight
                if api.requests or proc.poll() is not None:
                    break
                time.sleep(0.5)
            assert api.requests, proc.communicate()
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=120)  # without the fix: the whole 3000 s
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130, stderr
    assert "resume with" in stderr
    assert len(api.requests) == 1  # no further model call after Ctrl-C
    assert not _rdbench_containers()
