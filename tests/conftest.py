"""Shared fixtures. Docker tests use the real engine and the real base image; with no
engine they fail (set RDBENCH_SKIP_DOCKER=1 to skip them knowingly)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TASKS = ROOT / "tasks"
SESSION = uuid.uuid4().hex[:12]
os.environ["RDBENCH_SESSION"] = SESSION  # labels every container this suite makes (see no_leaked_containers)


#: fixtures that need the Docker engine: a test using one (directly or through another fixture)
#: must say so with the `docker` marker, so that `pytest -m "not docker"` (the fast tier) holds
DOCKER_FIXTURES = {"docker_client", "base_image"}


def pytest_collection_modifyitems(config, items):
    """A test that uses a Docker fixture without the `docker` marker is a collection error.
    The `extended` tier (more variants of what the default tier already checks) runs only
    with RDBENCH_EXTENDED=1: the default tier keeps CI within its 45 minutes."""
    unmarked = [item.nodeid for item in items
                if DOCKER_FIXTURES & set(getattr(item, "fixturenames", ())) and "docker" not in item.keywords]
    if unmarked:
        raise pytest.UsageError("these tests use Docker but are not marked @pytest.mark.docker: "
                                + ", ".join(unmarked))
    if os.environ.get("RDBENCH_EXTENDED") == "1":
        return
    skip = pytest.mark.skip(reason="extended tier: RDBENCH_EXTENDED=1 runs it")
    for item in items:
        if "extended" in item.keywords:
            item.add_marker(skip)


def _docker_or_fail():
    if os.environ.get("RDBENCH_SKIP_DOCKER") == "1":
        pytest.skip("RDBENCH_SKIP_DOCKER=1")
    from sandbox import SandboxError
    from sandbox.docker import client_from_env

    try:
        return client_from_env()
    except SandboxError as e:
        pytest.fail(f"these tests need a Docker engine: {e}")


@pytest.fixture(scope="session")
def docker_client():
    return _docker_or_fail()


@pytest.fixture(scope="session")
def base_image(docker_client):
    from sandbox.images import build_base_image

    return build_base_image(docker_client, log=lambda m: print(m, file=sys.stderr))


@pytest.fixture(scope="session", autouse=True)
def no_leaked_containers():
    """After the whole suite, no container labelled rdbench=1 that the suite made is left.
    The suite's containers (its own and its `rdbench` subprocesses') carry its session
    label, so another suite or run on the same engine does not count."""
    if os.environ.get("RDBENCH_SKIP_DOCKER") == "1" or shutil.which("docker") is None:
        yield
        return
    yield
    leaked = _rdbench_containers()
    assert not leaked, f"containers labelled rdbench=1 leaked by the tests: {sorted(leaked)}"


def _rdbench_containers() -> set[str]:
    r = subprocess.run(["docker", "ps", "-aq", "--filter", "label=rdbench=1", "--filter",
                        f"label=rdbench.session={SESSION}"], capture_output=True, text=True)
    return set(r.stdout.split())


@pytest.fixture
def primes_task():
    from harness.task import load_task

    return load_task(TASKS / "py-primes")


def rdbench(*args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None):
    """Run the real `rdbench` console script."""
    exe = Path(sys.executable).with_name("rdbench")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd or ROOT, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


@pytest.fixture(autouse=True)
def no_real_model_api(monkeypatch):
    """Tests never reach a real model API by accident: endpoints point at a closed local
    port and keys are fake, unless RDBENCH_LIVE_API=1 (and real keys) are set."""
    if os.environ.get("RDBENCH_LIVE_API") == "1":
        return
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key-not-real")
    monkeypatch.setenv("OPENAI_API_KEY", "test-key-not-real")
    monkeypatch.delenv("RDBENCH_BASE_URL", raising=False)
