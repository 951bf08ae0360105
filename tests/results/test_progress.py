"""Live progress: the renderer itself, a real run on a terminal (a pty), and the plain
output of a real run that is not on a terminal."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

import pytest

from results.progress import RunProgress
from results.records import TrialResult
from tests.conftest import ROOT, TASKS

ESCAPE = re.compile(r"\x1b\[|\r")


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def render(p: RunProgress) -> str:
    console = Console(record=True, width=150)
    console.print(p)
    return console.export_text()


def result(task, value, correct=True, error_class=None):
    return TrialResult(task=task, agent="oracle", trial=0, run_id="r", correct=correct, metric="speedup",
                       value=value, error_class=error_class)


def test_renderer_counts_queued_running_done_elapsed_and_best():
    clock = Clock()
    p = RunProgress("run x", {"py-primes": 3, "other": 1}, clock=clock)
    text = render(p)
    assert "run x: 0/4 done, elapsed 0m00s" in text
    assert re.search(r"py-primes\s+3\s+0\s+0\s+0\s+0\s+0\s+-\s+-", text)
    p.start("py-primes", "a")
    clock.t += 20
    p.start("py-primes", "b")
    clock.t += 45
    p.done("b", result("py-primes", 4.25))
    p.start("py-primes", "c")
    p.done("c", result("py-primes", 9.5))
    text = render(p)
    assert "run x: 2/4 done, elapsed 1m05s" in text
    # queued 0, running 1 (a, for 1m05s), done 2, both correct, best 9.50x
    assert re.search(r"py-primes\s+0\s+1\s+2\s+2\s+0\s+0\s+9\.50x\s+1m05s", text), text
    p.done("a", result("py-primes", None, correct=None, error_class="infra"))
    p.start("other", "d")
    p.done("d", result("other", None, correct=False))
    text = render(p)
    assert re.search(r"py-primes\s+0\s+0\s+3\s+2\s+0\s+1\s+9\.50x", text)
    assert re.search(r"other\s+0\s+0\s+1\s+0\s+1\s+0\s+-", text)
    assert "4/4 done" in text


@pytest.mark.docker
def test_output_off_a_terminal_is_plain_lines_and_the_table(primes_runs):
    r = primes_runs.outputs["oracle"]
    assert not ESCAPE.search(r.stdout) and not ESCAPE.search(r.stderr), "escape codes or redraws off a terminal"
    assert "queued" not in r.stderr and "running" not in r.stderr
    assert re.search(r"^\[1/2\] py-primes__oracle__\d: correct \d+\.\d\dx", r.stderr, re.M)
    assert "py-primes" in r.stdout and "correct" in r.stdout  # the verdict table, on stdout
    assert len(r.stdout.splitlines()) < 15


def run_on_a_terminal(args: list[str], timeout: float = 300) -> tuple[int, str]:
    """Run the real CLI with stdout and stderr on a pseudo-terminal; returns (rc, output)."""
    master, slave = pty.openpty()
    exe = Path(sys.executable).with_name("rdbench")
    proc = subprocess.Popen([str(exe), *args], stdin=slave, stdout=slave, stderr=slave, cwd=ROOT,
                            env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "50"})
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return proc.wait(), b"".join(chunks).decode(errors="replace")


@pytest.mark.docker
def test_live_progress_on_a_terminal(base_image, tmp_path):
    rc, out = run_on_a_terminal(["run", str(TASKS / "py-primes"), "--agent", "oracle", "--trials", "2",
                                 "--repeats", "2", "--out", str(tmp_path / "run")])
    assert rc == 0, out
    assert "\x1b[" in out  # a live display, redrawn
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    assert re.search(r"run \S+: 2/2 done, elapsed \dm\d\ds", plain), plain
    for col in ("queued", "running", "done", "best", "longest running"):
        assert col in plain
    assert re.search(r"py-primes\s+1\s+1\s+0\s+0\s+0\s+0\s+-\s+\dm\d\ds", plain), plain  # first trial running
    assert re.search(r"py-primes\s+0\s+0\s+2\s+2\s+0\s+0\s+\d+\.\d\dx", plain), plain  # the final state
    assert re.search(r"\[2/2\] py-primes__oracle__\d: correct", plain)
