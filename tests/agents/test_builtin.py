"""The oracle and nop agents, in a real sandbox."""

from __future__ import annotations

import pytest

from agents import AgentContext, AgentError, get_agent
from harness.scaffold import scaffold
from harness.task import load_task
from sandbox import SandboxConfig
from sandbox.docker import DockerSandbox


@pytest.fixture
def workspace_box(base_image, docker_client, primes_task):
    sb = DockerSandbox(SandboxConfig(image=base_image), docker_client)
    sb.copy_in(primes_task.path / "workspace", "/workspace")
    yield sb
    sb.close()


@pytest.mark.docker
def test_oracle_overlays_solution(workspace_box, primes_task, tmp_path):
    r = get_agent("oracle").run(workspace_box, AgentContext(task=primes_task, trial_dir=tmp_path))
    assert r.stop_reason == "submitted"
    assert workspace_box.read_file("/workspace/solve.py") == (primes_task.path / "solution/solve.py").read_bytes()
    assert workspace_box.exec("stat -c %u /workspace/solve.py").stdout.strip() == "1000"


@pytest.mark.docker
def test_nop_changes_nothing(workspace_box, primes_task, tmp_path):
    get_agent("nop").run(workspace_box, AgentContext(task=primes_task, trial_dir=tmp_path))
    assert workspace_box.read_file("/workspace/solve.py") == (primes_task.path / "workspace/solve.py").read_bytes()


@pytest.mark.docker
def test_oracle_without_solution_is_an_agent_error(workspace_box, tmp_path):
    path = scaffold("nosol", tmp_path)
    (path / "solution" / "program.py").unlink()
    (path / "solution").rmdir()
    with pytest.raises(AgentError, match="solution"):
        get_agent("oracle").run(workspace_box, AgentContext(task=load_task(path), trial_dir=tmp_path))


def test_unknown_agent():
    with pytest.raises(ValueError, match="unknown agent"):
        get_agent("wizard")
