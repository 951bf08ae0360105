"""Images: the offline base image, task Dockerfiles, and the input-hash cache."""

from __future__ import annotations

import configparser
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sandbox import SandboxConfig, SandboxError
from sandbox.docker import DockerSandbox
from sandbox.images import base_image_tag, build_dockerfile_image, debian_mirror, dockerfile_image_tag
from sandbox.wheels import (CPU_INDEX, TORCH_VERSION, TorchBuild, report_metadata, resolve_report, torch_build,
                            unmet_requirements)
from tests.conftest import ROOT, TASKS


@pytest.mark.docker
def test_base_image_has_python_torch_numpy_triton_and_users(base_image, docker_client):
    assert base_image == base_image_tag()
    with DockerSandbox(SandboxConfig(image=base_image), docker_client) as sb:
        r = sb.exec("python3 -c 'import torch, numpy, triton; print(torch.__version__, numpy.__version__)'; "
                    "getent passwd agent runner | cut -d: -f1,3; gcc --version | head -1", timeout=120)
        assert r.ok, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].startswith(TORCH_VERSION) and ("+cpu" in lines[0]) == (torch_build().flavor == "cpu")
        assert lines[1:3] == ["agent:1000", "runner:1001"]
        assert "gcc" in lines[3]


@pytest.mark.docker
def test_base_image_has_pip_and_pip_check_is_clean(base_image, docker_client):
    """pip is in the image, and every installed distribution's requirements are met there."""
    labels = docker_client.images.get(base_image).labels
    assert labels["rdbench.torch"] == torch_build().flavor
    assert f"torch=={TORCH_VERSION}" in labels["rdbench.wheels"] and "setuptools==" in labels["rdbench.wheels"]
    with DockerSandbox(SandboxConfig(image=base_image), docker_client) as sb:
        r = sb.exec("pip --version && python3 -m pip check", timeout=120)
        assert r.ok, r.stdout + r.stderr
        assert r.stdout.startswith("pip ") and "/opt/site/pip" in r.stdout
        assert "No broken requirements found." in r.stdout


@pytest.mark.docker
def test_task_dockerfile_builds_on_base_offline_and_is_cached(base_image, docker_client, tmp_path):
    env = tmp_path / "mytask" / "environment"
    env.mkdir(parents=True)
    (env / "Dockerfile").write_text("ARG RDBENCH_BASE\nFROM ${RDBENCH_BASE}\nRUN echo built-here > /etc/rdbench-task\n")
    tag = build_dockerfile_image(docker_client, env, base_image, log=lambda m: None)
    assert tag.startswith("rdbench-task-mytask:")
    try:
        assert build_dockerfile_image(docker_client, env, base_image, log=lambda m: None) == tag  # cached
        with DockerSandbox(SandboxConfig(image=tag), docker_client) as sb:
            assert sb.read_file("/etc/rdbench-task") == b"built-here\n"
        (env / "Dockerfile").write_text((env / "Dockerfile").read_text() + "RUN true\n")
        assert dockerfile_image_tag(env, base_image) != tag  # a changed input is a new image
    finally:
        docker_client.images.remove(tag, force=True)


@pytest.mark.docker
def test_registry_dockerfile_without_registry_is_a_clear_error(base_image, docker_client, tmp_path):
    """FROM python:... is supported; here no registry answers, so it must fail clearly."""
    env = tmp_path / "regtask" / "environment"
    env.mkdir(parents=True)
    (env / "Dockerfile").write_text("FROM python:3.11-slim-rdbench-test-nonexistent\nRUN true\n")
    with pytest.raises(SandboxError, match=r"environment/Dockerfile: build failed"):
        build_dockerfile_image(docker_client, env, base_image, log=lambda m: None)


def test_debian_mirror_comes_from_apt_sources(monkeypatch):
    monkeypatch.setenv("RDBENCH_DEBIAN_MIRROR", "http://mirror.example/debian")
    assert debian_mirror() == "http://mirror.example/debian"
    monkeypatch.delenv("RDBENCH_DEBIAN_MIRROR")
    assert debian_mirror().startswith("http") and debian_mirror().endswith("/debian")


# --- the wheel set, resolved with this machine's pip configuration isolated ------------------

def _cpu_torch_index(tmp_path: Path) -> str:
    """Where the CPU torch comes from: PyTorch's CPU index where it answers; else (no internet
    but PyPI's proxy, as on the CI machine) a one-wheel index standing in for it, made of the
    CPU wheel that this machine's pip configuration finds locally."""
    from sandbox.wheels import _answers

    if _answers(CPU_INDEX, 10) is None:
        return CPU_INDEX
    config = configparser.ConfigParser()
    config.read(["/etc/pip.conf", "/etc/xdg/pip/pip.conf", os.path.expanduser("~/.config/pip/pip.conf")])
    folders = [*config.get("global", "find-links", fallback="").split(), *os.environ.get("PIP_FIND_LINKS", "").split()]
    wheels = [w for f in folders for w in Path(f).glob(f"torch-{TORCH_VERSION}+cpu-*.whl")]
    if not wheels:
        pytest.skip(f"neither {CPU_INDEX} nor a local torch {TORCH_VERSION}+cpu wheel")
    (tmp_path / "index" / "torch").mkdir(parents=True)
    shutil.copy(wheels[0], tmp_path / "index" / "torch")
    (tmp_path / "index" / "torch" / "index.html").write_text(f'<a href="{wheels[0].name}">{wheels[0].name}</a>\n')
    return f"file://{tmp_path / 'index'}"


@pytest.mark.slow  # pip resolves against PyPI
def test_cpu_wheel_set_resolved_isolated_is_closed(tmp_path):
    """pip, with none of this machine's configuration (no local wheel folder, no local index),
    resolves torch's CPU build and everything it requires; every requirement of every wheel
    (markers evaluated for the image) is met in the set."""
    build = TorchBuild("cpu", _cpu_torch_index(tmp_path))
    dists = report_metadata(resolve_report(build, log=lambda m: None, isolated=True))
    assert dists["torch"][0] == f"{TORCH_VERSION}+cpu"
    assert {"pip", "setuptools", "triton", "numpy", "sympy", "mpmath", "markupsafe"} <= set(dists)
    assert not any(name.startswith("nvidia") for name in dists)
    assert unmet_requirements(dists, build.requirements()) == []
    # the check can fail: the set that the image held before (no setuptools) is not closed
    del dists["setuptools"]
    assert unmet_requirements(dists, build.requirements()) == [
        f"setuptools>=77.0.3 (required by torch {TORCH_VERSION}+cpu): not in the set"]


@pytest.mark.slow
def test_cuda_wheel_set_resolved_isolated_is_closed():
    """The CUDA build (PyPI's torch) with its nvidia-* libraries and the Triton it pins, closed.
    (pip reads each wheel's metadata; where the index serves no metadata files it fetches the
    wheels, about 3 GB, into a temporary folder.)"""
    build = TorchBuild("cuda", None)
    dists = report_metadata(resolve_report(build, log=lambda m: None, isolated=True))
    assert dists["torch"][0] == TORCH_VERSION
    assert {"nvidia-cudnn-cu13", "nvidia-cublas", "nvidia-nccl-cu13", "triton"} <= set(dists)
    assert unmet_requirements(dists, build.requirements()) == []


def test_unanswering_torch_index_is_one_clear_error(tmp_path):
    """A torch index that accepts connections and never answers: one error that names it,
    not a hang (pip's requests are bounded, and the index is probed first)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held = []
    stop = threading.Event()

    def accept():  # accept and say nothing
        server.settimeout(0.5)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    index = f"http://127.0.0.1:{server.getsockname()[1]}/simple"
    try:
        with pytest.raises(SandboxError) as e:
            resolve_report(TorchBuild("cpu", index), log=lambda m: None, isolated=True, index_timeout=2)
    finally:
        stop.set()
        for c in held:
            c.close()
        server.close()
    msg = str(e.value)
    assert f"the torch index {index} does not answer" in msg and f"torch=={TORCH_VERSION}+cpu" in msg, msg
    assert "RDBENCH_TORCH_INDEX" in msg


def test_torch_build_is_chosen_by_the_environment_and_changes_the_tag(monkeypatch):
    monkeypatch.setenv("RDBENCH_GPUS", "")
    monkeypatch.delenv("RDBENCH_TORCH", raising=False)
    monkeypatch.delenv("RDBENCH_TORCH_INDEX", raising=False)
    assert torch_build() == TorchBuild("cpu", CPU_INDEX)  # auto, no GPU
    monkeypatch.setenv("RDBENCH_GPUS", "0")
    assert torch_build() == TorchBuild("cuda", None)  # auto, a GPU
    monkeypatch.setenv("RDBENCH_TORCH", "cpu")
    monkeypatch.setenv("RDBENCH_TORCH_INDEX", "https://mirror.example/cpu")
    assert torch_build() == TorchBuild("cpu", "https://mirror.example/cpu")
    tags = {base_image_tag(TorchBuild("cpu", CPU_INDEX)), base_image_tag(TorchBuild("cpu", "https://mirror.example/cpu")),
            base_image_tag(TorchBuild("cuda", None))}
    assert len(tags) == 3 and base_image_tag() == base_image_tag(TorchBuild("cpu", "https://mirror.example/cpu"))
    monkeypatch.setenv("RDBENCH_TORCH", "rocm")
    with pytest.raises(SandboxError, match="not cpu, cuda or auto"):
        torch_build()


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.extended
def test_cuda_image_built_isolated_imports_torch_and_runs_the_softmax_oracle(tmp_path):
    """The CUDA image, its wheels resolved with this machine's pip configuration isolated:
    torch imports (here without a GPU) and triton-softmax's oracle is correct in the Triton
    interpreter inside it. About 3 GB of wheels and a 10 GB image, once."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PIP_")}, "PIP_CONFIG_FILE": os.devnull,
           "RDBENCH_TORCH": "cuda", "RDBENCH_GPUS": "", "COLUMNS": "200"}
    exe = str(Path(sys.executable).with_name("rdbench"))

    def rdbench(*args, timeout):
        return subprocess.run([exe, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)

    r = rdbench("images", "build", timeout=3600)
    assert r.returncode == 0, r.stderr
    tag = r.stdout.split()[0]
    probe = subprocess.run(["docker", "run", "--rm", "--network=none", tag, "python3", "-c",
                            "import torch, triton; print(torch.__version__, torch.version.cuda, triton.__version__, flush=True)\n"
                            "import subprocess, sys; subprocess.run([sys.executable, '-m', 'pip', 'check'], check=True)"],
                           capture_output=True, text=True, timeout=600)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    version, cuda = probe.stdout.split()[:2]  # torch says 2.13.0+cu130 where its wheel's metadata says 2.13.0
    assert version.startswith(TORCH_VERSION) and cuda.startswith("13."), probe.stdout
    assert "No broken requirements found." in probe.stdout
    sub = tmp_path / "submission"
    shutil.copytree(TASKS / "triton-softmax" / "workspace", sub)
    shutil.copytree(TASKS / "triton-softmax" / "solution", sub, dirs_exist_ok=True)
    v = rdbench("verify", str(TASKS / "triton-softmax"), "--submission", str(sub), "--repeats", "1", timeout=1800)
    assert v.returncode == 0, v.stdout + v.stderr
    assert '"correct": true' in v.stdout, v.stdout
