"""The Docker backend's security defaults and lifecycle, against the real engine."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from sandbox import SandboxConfig, SandboxError
from sandbox.docker import DockerSandbox, remove_containers

pytestmark = pytest.mark.docker  # every test here needs the Docker engine


@pytest.fixture
def box(base_image, docker_client):
    sb = DockerSandbox(SandboxConfig(image=base_image, cpuset="0", memory="256m", pids=64,
                                     labels={"rdbench.run": "test-docker"}), docker_client)
    yield sb
    sb.close()


def test_runs_as_non_root_without_capabilities(box):
    r = box.exec("id -u; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status")
    lines = r.stdout.split()
    assert lines[0] == "1000"
    assert "CapEff:" in lines and lines[lines.index("CapEff:") + 1] == "0000000000000000"
    assert lines[lines.index("CapBnd:") + 1] == "0000000000000000"
    assert lines[lines.index("NoNewPrivs:") + 1] == "1"


def test_no_network(box):
    r = box.exec("ls /sys/class/net")
    assert r.stdout.split() == ["lo"]
    r = box.exec("python3 -c \"import socket; socket.create_connection(('1.1.1.1', 53), timeout=2)\"")
    assert r.returncode != 0


def test_limits_and_labels(box, docker_client):
    attrs = docker_client.containers.get(box.container.id).attrs
    host = attrs["HostConfig"]
    assert host["CpusetCpus"] == "0"
    assert host["Memory"] == 256 * 1024 * 1024
    assert host["PidsLimit"] == 64
    assert host["NetworkMode"] == "none"
    assert host["Init"] is True
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host["SecurityOpt"]
    labels = attrs["Config"]["Labels"]
    assert labels["rdbench"] == "1" and labels["rdbench.run"] == "test-docker"
    assert labels["rdbench.pid"] == str(os.getpid())
    assert "ANTHROPIC_API_KEY" not in str(attrs["Config"]["Env"])


def test_no_docker_socket_and_no_host_secrets(box):
    assert box.exec("test -e /var/run/docker.sock").returncode != 0
    assert "API_KEY" not in box.exec("env").stdout


def test_pids_limit_holds(box):
    r = box.exec("for i in $(seq 200); do sleep 5 & done 2>&1; wait", timeout=20)
    assert "Resource temporarily unavailable" in r.stdout + r.stderr or r.returncode != 0


def test_memory_limit_holds(box):
    r = box.exec("python3 -c \"x = bytearray(600 * 1024 * 1024); print('allocated')\"", timeout=60)
    assert "allocated" not in r.stdout and r.returncode != 0


def test_close_removes_container_fast(base_image, docker_client):
    sb = DockerSandbox(SandboxConfig(image=base_image), docker_client)
    cid = sb.container.id
    sb.exec("sleep 100 &")
    t = time.monotonic()
    sb.close()
    assert time.monotonic() - t < 1.0
    assert not docker_client.containers.list(all=True, filters={"id": cid})


def test_copy_in_sets_owner(box, tmp_path):
    (tmp_path / "f.txt").write_text("x")
    box.copy_in(tmp_path, "/workspace/owned", owner=1000)
    assert box.exec("stat -c %u:%g /workspace/owned /workspace/owned/f.txt").stdout.split() == ["1000:1000"] * 2


def test_missing_image_is_a_clear_error(docker_client):
    with pytest.raises(SandboxError, match="rdbench images build"):
        DockerSandbox(SandboxConfig(image="rdbench-base:does-not-exist"), docker_client)


def test_clean_removes_containers_of_dead_runs(base_image, docker_client):
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs
    c = docker_client.containers.create(base_image, command=["sleep", "60"],
                                        labels={"rdbench": "1", "rdbench.pid": str(dead.pid),
                                                "rdbench.host": os.uname().nodename})
    mine = DockerSandbox(SandboxConfig(image=base_image), docker_client)
    try:
        removed = remove_containers(docker_client)
        assert c.short_id in removed
        assert mine.container.short_id not in removed  # its owner (this process) is alive
    finally:
        mine.close()
        try:
            c.remove(force=True)
        except Exception:
            pass
