"""Images: the offline base image, task Dockerfiles, and the input-hash cache."""

from __future__ import annotations

import pytest

from sandbox import SandboxConfig, SandboxError
from sandbox.docker import DockerSandbox
from sandbox.images import base_image_tag, build_dockerfile_image, debian_mirror, dockerfile_image_tag


@pytest.mark.docker
def test_base_image_has_python_torch_numpy_triton_and_users(base_image, docker_client):
    assert base_image == base_image_tag()
    with DockerSandbox(SandboxConfig(image=base_image), docker_client) as sb:
        r = sb.exec("python3 -c 'import torch, numpy, triton; print(torch.__version__, numpy.__version__)'; "
                    "getent passwd agent runner | cut -d: -f1,3; gcc --version | head -1", timeout=120)
        assert r.ok, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].startswith("2.13.0") and "+cpu" in lines[0]
        assert lines[1:3] == ["agent:1000", "runner:1001"]
        assert "gcc" in lines[3]


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
