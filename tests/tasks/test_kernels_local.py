"""The kernel tasks under `--sandbox local` (sandbox/local.py), as a GPU user without Docker
meets them: the verifier as root on the host, the runs as uids of no account, each run in
bubblewrap (/tmp, /var/tmp, /dev/shm private). Here on the CPU path (TRITON_INTERPRET=1).

The runs' uids must be able to execute the Python: this machine's own lies under /root (0700),
so these tests build, once per machine, a Python they can run: a venv of the system's
/usr/bin/python3 under /var/cache/rdbench-tests with the base image's wheels (torch CPU,
triton, numpy), and put its bin/ first on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, TASKS, rdbench

KERNEL_TASKS = ["triton-softmax", "triton-rmsnorm", "triton-matmul-epilogue", "triton-causal-attention"]
SYSTEM_PYTHON = Path("/usr/bin/python3")
READABLE = Path("/var/cache/rdbench-tests")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the local backend separates users only as root"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap (bwrap)"),
    pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="needs a system Python at /usr/bin/python3"),
]


def readable_python() -> Path:
    """The bin/ of a venv of /usr/bin/python3 (pip and setuptools in it) with the base image's
    wheels, that every user may run (built once per machine; a hash of the wheels names it)."""
    from sandbox.images import download_wheels

    wheels = download_wheels(lambda m: print(m, file=sys.stderr))
    venv = READABLE / f"python-{wheels.name}-2"
    if (venv / "ok").exists():
        return venv / "bin"
    tmp = READABLE / f".{venv.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    READABLE.chmod(0o755)
    # with ensurepip's setuptools: torch.compile's C++ backend (Inductor) imports it
    subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", str(tmp)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(tmp / "bin" / "python"), "install", "-q",
                    "--disable-pip-version-check", "--no-deps", "--no-index", *map(str, sorted(wheels.glob("*.whl")))],
                   check=True)
    tmp.chmod(0o755)
    (tmp / "ok").touch()
    try:
        tmp.rename(venv)
    except OSError:  # another session built it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return venv / "bin"
