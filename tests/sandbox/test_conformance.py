"""The conformance suite every Sandbox backend passes."""

from __future__ import annotations

import os
import random
import time
import uuid
import warnings

import pytest

from sandbox import Sandbox, SandboxConfig, SandboxFileNotFound, get_backend


@pytest.fixture(params=[pytest.param("docker", marks=pytest.mark.docker), "local", "fake"])
def sb(request):
    if request.param == "docker":
        image = request.getfixturevalue("base_image")
    else:
        image = "unused"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        box = get_backend(request.param)(SandboxConfig(image=image, cpuset="0", memory="512m"))
    yield box
    box.close()


def test_is_a_sandbox(sb):
    assert isinstance(sb, Sandbox)


def test_exec_returns_output_and_exit_code(sb):
    r = sb.exec("echo out; echo err >&2; exit 3")
    assert (r.returncode, r.stdout, r.stderr, r.timed_out) == (3, "out\n", "err\n", False)
    assert not r.ok


def test_exec_argv_cwd_and_env(sb):
    sb.write_file("/workspace/sub/marker", b"")
    r = sb.exec(["bash", "-c", 'ls; echo "$GREETING"'], cwd="/workspace/sub", env={"GREETING": "hi there"})
    assert r.stdout == "marker\nhi there\n"


def test_missing_program_is_data_not_exception(sb):
    r = sb.exec(["definitely-not-a-program"])
    assert r.returncode == 127


def test_timeout_kills_whole_process_tree(sb):
    # a child that left the process group (own session) and a grandchild, each of which
    # would touch a file after the timeout (names and sleep unique to this test: the local and
    # fake backends share the host's /tmp and process table with other tests)
    tag = uuid.uuid4().hex[:8]
    nap = f"5.{random.randrange(100, 1000)}"
    script = (f"setsid bash -c 'sleep {nap}; touch /tmp/rdb-survivor-{tag}' & "
              f"bash -c '(sleep {nap}; touch /tmp/rdb-survivor2-{tag}) & wait' & sleep 30")
    t = time.monotonic()
    r = sb.exec(script, timeout=1)
    assert r.timed_out and time.monotonic() - t < 29  # the timeout, not the sleep, ended it
    time.sleep(6)
    probe = sb.exec(f"test -e /tmp/rdb-survivor-{tag} -o -e /tmp/rdb-survivor2-{tag} && echo alive || echo dead")
    assert probe.stdout.strip() == "dead"
    assert sb.exec(f"ps -eo args | grep -c '^sleep {nap}$' || true").stdout.strip() == "0"


def test_background_process_does_not_hang_exec(sb):
    t = time.monotonic()
    r = sb.exec("sleep 20 & echo started")
    assert r.stdout == "started\n" and time.monotonic() - t < 5


def test_huge_output_is_capped(sb):
    r = sb.exec("head -c 5000000 /dev/zero | tr '\\0' x", max_output=100_000)
    assert r.truncated and len(r.stdout) == 100_000 and r.returncode == 0


def test_binary_files_round_trip(sb):
    data = bytes(range(256)) * 1000 + os.urandom(4096)
    sb.write_file("/workspace/blob.bin", data)
    assert sb.read_file("/workspace/blob.bin") == data
    assert sb.exec("wc -c < blob.bin", cwd="/workspace").stdout.strip() == str(len(data))


def test_read_missing_file_raises(sb):
    with pytest.raises(SandboxFileNotFound):
        sb.read_file("/workspace/nope.txt")


def test_copy_in_and_out_round_trip(sb, tmp_path):
    src = tmp_path / "src"
    (src / "deep" / "er").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "deep" / "er" / "b.bin").write_bytes(b"\x00\xff" * 10)
    sb.copy_in(src, "/workspace/in")
    assert sb.exec("cat in/a.txt", cwd="/workspace").stdout == "alpha"
    sb.exec("echo new > in/deep/c.txt", cwd="/workspace")
    out = tmp_path / "out"
    sb.copy_out("/workspace/in", out)
    assert (out / "a.txt").read_text() == "alpha"
    assert (out / "deep" / "er" / "b.bin").read_bytes() == b"\x00\xff" * 10
    assert (out / "deep" / "c.txt").read_text() == "new\n"


def test_copy_out_missing_folder_raises(sb, tmp_path):
    with pytest.raises(SandboxFileNotFound):
        sb.copy_out("/workspace/not-there", tmp_path / "x")


def test_close_is_idempotent(sb):
    sb.close()
    sb.close()


def test_copy_out_leaves_out_links_that_escape(sb, tmp_path):
    """Links that lead out of the folder are left out, not followed and not a failure (an
    agent must not be able to turn its trial into an infrastructure error with a symlink);
    the rest is copied, links inside the folder included."""
    r = sb.exec("mkdir -p evil/sub && ln -s /etc/passwd evil/pw && ln -s ../../../../../../etc evil/up && "
                "echo ok > evil/fine.txt && ln -s ../fine.txt evil/sub/inside && mkfifo evil/pipe", cwd="/workspace")
    assert r.ok, r.stderr
    out = tmp_path / "out"
    sb.copy_out("/workspace/evil", out)
    assert (out / "fine.txt").read_text() == "ok\n"
    assert not (out / "pw").exists() and not (out / "pw").is_symlink()
    assert not (out / "up").exists() and not (out / "up").is_symlink()
    assert not (out / "pipe").exists()
    assert (out / "sub" / "inside").is_symlink() and (out / "sub" / "inside").read_text() == "ok\n"


def test_output_streams_as_it_comes(sb):
    """With on_output, each line reaches the caller when the command writes it, not at its end."""
    seen = []
    start = time.monotonic()
    r = sb.exec("echo first >&2; sleep 4; echo second; echo last >&2",
                on_output=lambda stream, text: seen.append((stream, text, time.monotonic() - start)))
    end = time.monotonic() - start
    assert r.stdout == "second\n" and r.stderr == "first\nlast\n"  # the answer is whole as before
    assert seen[0][:2] == ("stderr", "first\n") and seen[0][2] < end - 2  # a slow host has 2 s to deliver it
    assert "".join(t for s, t, _ in seen if s == "stderr") == "first\nlast\n"
    assert "".join(t for s, t, _ in seen if s == "stdout") == "second\n"
