"""What a local run leaves when its rdbench process dies without closing its sandboxes: the
sandbox folders under the temporary directory and the processes still running in them. The
next `rdbench run --sandbox local` and `rdbench clean --sandbox local` remove them; a live
run's sandbox is never touched. No Docker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

from sandbox import SandboxConfig
from sandbox.local import LocalSandbox
from tests.conftest import ROOT, rdbench

#: a process that opens a local agent sandbox, starts a command that outlives it and a
#: 1,500-deep folder chain in it, then dies without closing it
LEAVE = r"""
import os, sys, warnings
from sandbox import SandboxConfig
from sandbox.local import LocalSandbox
warnings.simplefilter("ignore")
sb = LocalSandbox(SandboxConfig(image="local", lock_dir=sys.argv[1]))
sb.exec("setsid sleep 1000 > /dev/null 2>&1 < /dev/null &", timeout=30)
os.chdir(sb.root)
for _ in range(1500):
    os.mkdir("d")
    os.chdir("d")
print(sb.root, flush=True)
os._exit(9)
"""


def running_in(root: Path) -> list[int]:
    mark = f"RDBENCH_SANDBOX_ROOT={root}".encode()
    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and mark in (d / "environ").read_bytes().split(b"\0"):
                out.append(int(d.name))
        except OSError:
            pass
    return out


def test_a_dead_runs_local_sandbox_goes_with_its_processes_and_a_live_one_stays(tmp_path):
    r = subprocess.run([sys.executable, "-c", LEAVE, str(tmp_path / "locks")], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 9 and r.stdout.strip(), r.stderr
    left = Path(r.stdout.strip())
    for _ in range(100):  # the sleeper is started in the background
        if running_in(left):
            break
        time.sleep(0.1)
    assert left.is_dir() and running_in(left), "the dead run left nothing: the test proves nothing"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        live = LocalSandbox(SandboxConfig(image="local", lock_dir=str(tmp_path / "locks")))
    try:
        out = rdbench("clean", "--sandbox", "local")
        assert out.returncode == 0, out.stderr
        assert f"local:{left.name}" in out.stdout and "sandbox folder(s)" in out.stdout, out.stdout
        assert not left.exists() and not running_in(left)
        assert live.root.is_dir() and live.exec("echo up", timeout=30).stdout.strip() == "up"  # its owner lives
        assert f"local:{live.root.name}" not in out.stdout
    finally:
        live.close()
    assert not live.root.exists()


def test_clean_names_a_backend_it_does_not_know_in_one_line():
    r = rdbench("clean", "--sandbox", "nowhere")
    assert r.returncode == 1 and "unknown sandbox backend 'nowhere'" in r.stderr and "Traceback" not in r.stderr
    assert os.path.exists(ROOT)
