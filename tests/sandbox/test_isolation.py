"""Isolation between sandboxes, against the real engine: an agent sandbox frozen while a
timing phase runs on its cores (machine-wide, through the freeze record), and its disk limit."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from sandbox import SandboxConfig
from sandbox.disk import size_bytes
from sandbox.docker import DockerSandbox
from sandbox.freeze import FreezeBook, parse_cpuset

#: 30 ticks of 0.1 s of the command's own time, each stamped with the wall clock
TICKS = "python3 -c \"import time\nfor i in range(30):\n    time.sleep(0.1)\n    print(time.time(), flush=True)\""


@pytest.fixture
def agent(base_image, docker_client, tmp_path):
    sb = DockerSandbox(SandboxConfig(image=base_image, cpuset="0", memory="256m", lock_dir=str(tmp_path / "locks"),
                                     labels={"rdbench.run": "test-isolation"}), docker_client)
    yield sb
    sb.close()


def paused(client, sb) -> bool:
    return client.api.inspect_container(sb.container.id)["State"]["Paused"]


def frozen_through(sb, quiet, is_frozen=lambda: True) -> None:
    """A command in flight through an 8 s timing phase (`quiet()`): it made no progress meanwhile,
    completed after, and its 6 s timeout did not count the time frozen (3 s + 8 s > 6 s; the
    other 3 s are for a loaded host to start it)."""
    out = {}
    ticking = threading.Event()
    t = threading.Thread(target=lambda: out.update(r=sb.exec(TICKS, timeout=6, on_output=lambda *_: ticking.set())))
    t.start()
    assert ticking.wait(60), "the command never started"
    with quiet():
        frozen_at = time.time()
        assert is_frozen()
        time.sleep(8.0)
        thawed_at = time.time()
    t.join(60)
    r = out["r"]
    assert r.ok and not r.timed_out, r
    stamps = [float(x) for x in r.stdout.split()]
    assert len(stamps) == 30
    assert not [s for s in stamps if frozen_at + 0.5 < s < thawed_at - 0.5], "the agent ran while frozen"
    assert max(b - a for a, b in zip(stamps, stamps[1:])) > 3.0
    assert 3.0 < sb.frozen_s() < 30


def test_parse_cpuset():
    assert parse_cpuset("0-2,5") == {0, 1, 2, 5} and parse_cpuset(None) is None


@pytest.mark.docker
def test_an_agent_on_the_timed_cores_is_frozen_and_its_command_completes(agent, docker_client, tmp_path):
    """A command in flight when the sandbox is frozen finishes normally afterwards, and the
    time frozen does not count against its timeout (3 s of its own time + 4 s frozen > 5 s)."""
    frozen_through(agent, lambda: DockerSandbox.quiet("0", tmp_path / "locks"),
                   lambda: paused(docker_client, agent))
    assert not paused(docker_client, agent)


@pytest.mark.docker
def test_the_built_in_agent_is_credited_only_the_time_frozen_while_a_tool_ran(agent, tmp_path):
    """The built-in agent's wall time is extended by the time its sandbox was frozen while one
    of its tools ran there, not while its loop waited on the model (that call went on)."""
    from agents.react import FrozenInTools

    credit = FrozenInTools(agent.frozen_s)
    with DockerSandbox.quiet("0", tmp_path / "locks"):  # no tool in flight: the loop is on its model
        time.sleep(2)
    assert agent.frozen_s() > 1.5 and credit() == 0.0
    out, running = {}, threading.Event()

    def tool():
        with credit.tool():
            out["r"] = agent.exec("echo go; sleep 5; echo done", timeout=60, on_output=lambda *_: running.set())

    t = threading.Thread(target=tool)
    t.start()
    assert running.wait(60), "the command never started"
    with DockerSandbox.quiet("0", tmp_path / "locks"):
        time.sleep(3)
        assert credit() > 2.0  # the deadline moves while it is frozen
    t.join(60)
    assert out["r"].stdout == "go\ndone\n"
    assert 2.5 < credit() < agent.frozen_s() - 1.5


@pytest.mark.docker
def test_a_timing_phase_on_other_cores_leaves_the_agent_running(agent, docker_client, tmp_path):
    with DockerSandbox.quiet("1", tmp_path / "locks"):
        assert not paused(docker_client, agent)
        assert agent.exec("echo alive", timeout=10).stdout == "alive\n"
    assert agent.frozen_s() == 0.0


@pytest.mark.docker
def test_two_overlapping_timing_phases_thaw_only_after_the_last(base_image, docker_client, tmp_path):
    """An agent on cores 0-1, timing phases on 0 and on 1: the first to end must not thaw it."""
    sb = DockerSandbox(SandboxConfig(image=base_image, cpuset="0-1", memory="256m", lock_dir=str(tmp_path)),
                       docker_client)
    try:
        first = DockerSandbox.quiet("0", tmp_path)
        first.__enter__()
        with DockerSandbox.quiet("1", tmp_path):
            assert paused(docker_client, sb)
            first.__exit__(None, None, None)
            assert paused(docker_client, sb), "thawed while another timing phase still runs on its cores"
        assert not paused(docker_client, sb)
    finally:
        sb.close()


@pytest.mark.docker
def test_a_sandbox_started_during_a_timing_phase_starts_frozen(base_image, docker_client, tmp_path):
    with DockerSandbox.quiet("0", tmp_path):
        sb = DockerSandbox(SandboxConfig(image=base_image, cpuset="0", memory="256m", lock_dir=str(tmp_path)),
                           docker_client)
        cid = sb.container.id
        try:
            assert paused(docker_client, sb)
            assert FreezeBook(tmp_path, "docker").frozen_s(cid) > 0.0
        finally:
            sb.close()
    assert FreezeBook(tmp_path, "docker").frozen_s(cid) == 0.0  # forgotten when the sandbox closed


@pytest.mark.docker
def test_a_dead_timing_phase_is_dropped_and_its_agents_thawed(agent, docker_client, tmp_path):
    """A process killed while timing (kill -9: no finally) leaves a record; the next change drops it."""
    import subprocess
    import sys

    book = FreezeBook(tmp_path / "locks", "docker")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with book._state() as state:  # what a killed process leaves behind
        state["timing"]["dead"] = {"cpus": [0], "pid": int(dead.stdout)}
    book.join(agent.container.id, "0", lambda cid: docker_client.api.pause(cid))
    assert not paused(docker_client, agent)  # a dead phase freezes nothing
    with book._state() as state:
        state["frozen"][agent.container.id] = {"by": ["dead"], "since": time.time(), "total": 0.0}
    docker_client.api.pause(agent.container.id)
    with DockerSandbox.quiet("1", tmp_path / "locks"):  # any later change prunes
        pass
    assert not paused(docker_client, agent)


@pytest.mark.docker
def test_the_disk_limit_holds(base_image, docker_client, tmp_path):
    """Writing past the limit fails inside with ENOSPC, wherever the agent can write; the
    host's disk grows by at most the limit; the workspace can still be copied out."""
    sb = DockerSandbox(SandboxConfig(image=base_image, cpuset="0", memory="256m", disk="200m",
                                     lock_dir=str(tmp_path)), docker_client)
    try:
        image = sb._disk.image
        r = sb.exec("dd if=/dev/zero of=/tmp/big bs=1M count=300", timeout=120)
        assert r.returncode != 0 and "No space left on device" in r.stderr
        allocated = os.stat(image).st_blocks * 512
        assert allocated <= size_bytes("200m")
        r = sb.exec("dd if=/dev/zero of=/workspace/more bs=1M count=10; dd if=/dev/zero of=/var/tmp/more bs=1M "
                    "count=10", timeout=60)
        assert r.stderr.count("No space left on device") == 2
        for path in ("/x", "/home/x", "/etc/x"):  # the rest of the root filesystem is read-only
            assert "Read-only file system" in sb.exec(f"touch {path}").stderr
        sb.exec("rm -f /tmp/big; echo kept > /workspace/answer.txt")
        sb.copy_out("/workspace", tmp_path / "out")
        assert (tmp_path / "out" / "answer.txt").read_text() == "kept\n"
    finally:
        sb.close()
    assert not image.exists() and not os.path.ismount(image.parent / "mnt")


@pytest.mark.docker
def test_a_local_agent_is_stopped_while_a_verifier_times(tmp_path):
    """The local backend: the agent's processes are stopped (SIGSTOP) and continued after; a
    command in flight completes, its timeout not counting the time stopped."""
    import warnings

    from sandbox.local import LocalSandbox

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sb = LocalSandbox(SandboxConfig(image="unused", lock_dir=str(tmp_path)))
    try:
        def stopped() -> bool:  # the exec server's state in /proc: T (stopped)
            return Path(f"/proc/{sb._proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"

        frozen_through(sb, lambda: LocalSandbox.quiet("0", tmp_path), stopped)
        assert not stopped()
    finally:
        sb.close()


CTRL_C = """
import os, sys
from sandbox import SandboxConfig
from sandbox.docker import DockerSandbox, client_from_env, remove_containers
sb = DockerSandbox(SandboxConfig(image=sys.argv[1], cpuset="0", memory="256m", disk="50m"))
DockerSandbox.quiet("0", sys.argv[2]).__enter__()  # a verifier timing, stuck in a thread
print(sb._disk.mnt, flush=True)
remove_containers(client_from_env(), own=True)  # what the CLI does on Ctrl-C, before os._exit
os._exit(130)
"""


@pytest.mark.docker
def test_ctrl_c_thaws_what_the_process_froze_and_unmounts_its_disks(base_image, docker_client, tmp_path):
    cache = tmp_path / "cache"
    agent = DockerSandbox(SandboxConfig(image=base_image, cpuset="0", memory="256m", lock_dir=str(cache / "locks")),
                          docker_client)
    try:
        import subprocess
        import sys

        r = subprocess.run([sys.executable, "-c", CTRL_C, base_image, str(cache / "locks")], capture_output=True,
                           text=True, timeout=300, env={**os.environ, "RDBENCH_CACHE": str(cache)},
                           cwd=Path(__file__).resolve().parents[2])
        assert r.returncode == 130, r.stderr
        mnt = Path(r.stdout.split()[0])
        assert not os.path.ismount(mnt) and not mnt.parent.exists()
        assert not paused(docker_client, agent) and agent.frozen_s() > 0
    finally:
        agent.close()
