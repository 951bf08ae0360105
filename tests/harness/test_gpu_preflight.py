"""A task that wants a GPU, on a machine with one, under a Docker engine that cannot give
containers a GPU (no NVIDIA container toolkit): one clear error before any trial starts.

This machine's engine has no NVIDIA runtime; RDBENCH_GPUS=0 makes the harness believe that
the machine has a GPU, as a GPU box with a plain Docker engine would."""

from __future__ import annotations

import pytest

from sandbox.gpu import CAPABILITIES, device_requests, engine_gpu_problem
from tests.conftest import TASKS, rdbench

pytestmark = pytest.mark.docker
GPU_HOST = {"RDBENCH_GPUS": "0", "RDBENCH_TORCH": "cpu"}  # the CPU image: the one this machine has built


@pytest.fixture
def no_nvidia_runtime(docker_client):
    if "nvidia" in (docker_client.info().get("Runtimes") or {}):
        pytest.skip("this Docker engine has the NVIDIA runtime")


def probes(docker_client) -> list:
    return docker_client.containers.list(all=True, filters={"label": "rdbench.role=gpu-probe"})


def test_containers_ask_for_the_gpu_with_compute_and_utility():
    (request,) = device_requests([1])
    assert request["DeviceIDs"] == ["1"] and request["Capabilities"] == CAPABILITIES == [["gpu", "compute", "utility"]]
    assert device_requests([]) == []


def test_engine_without_nvidia_runtime_is_a_problem(base_image, docker_client, no_nvidia_runtime):
    problem = engine_gpu_problem(docker_client, base_image, [0])
    assert problem and "NVIDIA container toolkit" in problem, problem
    assert probes(docker_client) == []  # the probe container is gone


@pytest.mark.slow
def test_run_of_a_gpu_task_fails_once_before_any_trial(base_image, docker_client, no_nvidia_runtime, tmp_path):
    run_dir = tmp_path / "run"
    r = rdbench("run", str(TASKS / "triton-softmax"), "--agent", "oracle", "--out", str(run_dir), env=GPU_HOST)
    assert r.returncode == 1, r.stdout + r.stderr
    stderr = " ".join(r.stderr.split())  # as rich wrapped it
    assert stderr.count("error:") == 1 and "NVIDIA container toolkit" in stderr, stderr
    assert "triton-softmax want(s) a GPU" in stderr
    assert not list(run_dir.glob("trials/*/trial.json")), "a trial ran"
    assert probes(docker_client) == []

    v = rdbench("verify", "triton-softmax", "--submission", str(TASKS / "triton-softmax" / "workspace"), env=GPU_HOST)
    assert v.returncode == 1 and "NVIDIA container toolkit" in " ".join(v.stderr.split()), v.stderr
    # without a GPU on the machine, the same task runs (correctness in the Triton interpreter): no preflight error
    ok = rdbench("verify", "triton-softmax", "--submission", str(TASKS / "triton-softmax" / "workspace"),
                 "--repeats", "1", env={"RDBENCH_GPUS": "", "RDBENCH_TORCH": "cpu"})
    assert ok.returncode in (0, 3) and "NVIDIA" not in ok.stderr, ok.stderr
