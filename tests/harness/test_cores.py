"""GPU allocation: whole GPUs by id, one timing phase per GPU at a time, across threads and
across rdbench processes. Runs without any GPU: the pool is given device ids."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from harness.cores import CorePool, GpuPool, detect_gpus


def test_detect_gpus_from_the_environment(monkeypatch):
    monkeypatch.setenv("RDBENCH_GPUS", "2,0")
    assert detect_gpus() == [2, 0]
    monkeypatch.setenv("RDBENCH_GPUS", "")
    assert detect_gpus() == []


def test_detect_gpus_without_nvidia_smi(monkeypatch, tmp_path):
    monkeypatch.delenv("RDBENCH_GPUS", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi on it
    assert detect_gpus() == []


def test_no_gpus_gives_none(tmp_path):
    pool = GpuPool([], lock_dir=tmp_path)
    assert pool.spread(1, 3) == []
    with pool.exclusive(1) as held:
        assert held == []


def test_spread_shares_and_exclusive_holds_whole_gpus(tmp_path):
    pool = GpuPool([0, 1], lock_dir=tmp_path)
    assert [pool.spread(1, i) for i in range(3)] == [[0], [1], [0]]
    assert pool.spread(4, 0) == [0, 1]  # clamped to the machine
    with pool.exclusive(1) as a, pool.exclusive(1) as b:
        assert sorted(a + b) == [0, 1]
    with pool.exclusive(0) as none:
        assert none == []


def test_a_timing_phase_waits_for_the_gpu(tmp_path):
    pool = GpuPool([0], lock_dir=tmp_path)
    events = []

    def second():
        with pool.exclusive(1) as held:
            events.append(("second", held, time.monotonic()))

    with pool.exclusive(1) as first:
        assert first == [0]
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        assert not events, "a second trial timed on a GPU in use"
        released = time.monotonic()
    t.join(5)
    assert events and events[0][1] == [0] and events[0][2] >= released


HOLDER = """
import fcntl, sys, time
f = open(sys.argv[1], "a")
fcntl.flock(f, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_another_process_holding_the_gpu_blocks_this_one(tmp_path):
    """Two rdbench processes on one machine: the lock file per GPU keeps their timing apart."""
    pool = GpuPool([0], lock_dir=tmp_path)
    other = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "gpu-0.lock"), "1.0"],
                             stdout=subprocess.PIPE, text=True)
    assert other.stdout.readline().strip() == "held"
    start = time.monotonic()
    with pool.exclusive(1) as held:
        waited = time.monotonic() - start
    other.wait()
    assert held == [0] and waited > 0.5


def test_the_core_pool_carries_a_gpu_pool():
    pool = CorePool([0], gpus=GpuPool([3]))
    assert pool.gpus.spread(1, 0) == [3]
