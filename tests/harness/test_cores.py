"""Core and GPU allocation: one timing phase per core (per whole GPU) at a time, across
threads and across rdbench processes (lock files). Runs without any GPU: the pool is given
device ids."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import threading
import time
from pathlib import Path

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


def second_waits_for_first(pool, first_n: int, first_held=None, second_held=None) -> None:
    """A thread asking `pool` for one device while this one holds `first_n` gets it only
    after this one lets go (what each got checked where given)."""
    events = []

    def second():
        with pool.exclusive(1) as held:
            events.append((held, time.monotonic()))

    with pool.exclusive(first_n) as first:
        assert first_held is None or first == first_held
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        assert not events, "a second trial timed on what another one holds"
        released = time.monotonic()
    t.join(5)
    assert events and events[0][1] >= released
    assert second_held is None or events[0][0] == second_held


def test_a_timing_phase_waits_for_the_gpu(tmp_path):
    second_waits_for_first(GpuPool([0], lock_dir=tmp_path), 1, first_held=[0], second_held=[0])


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
    other = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "gpu-0.lock"), "2.0"],
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


CORE_HOLDER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from harness.cores import CorePool
pool = CorePool([0, 1], lock_dir=Path(sys.argv[2]))
with pool.exclusive(int(sys.argv[3])) as held:
    print("held", held, time.time(), flush=True)
    time.sleep(float(sys.argv[4]))
    print("releasing", time.time(), flush=True)
"""


def _holder(tmp_path, n: int, hold_s: float) -> subprocess.Popen:
    root = str(Path(__file__).resolve().parents[2])
    return subprocess.Popen([sys.executable, "-c", CORE_HOLDER, root, str(tmp_path), str(n), str(hold_s)],
                            stdout=subprocess.PIPE, text=True)


def test_core_reservations_hold_across_threads(tmp_path):
    pool = CorePool([0, 1], lock_dir=tmp_path)
    with pool.exclusive(1) as a, pool.exclusive(1) as b:
        assert sorted([a, b]) == ["0", "1"]
    with pool.exclusive(5) as both:  # clamped to the pool
        assert both == "0,1"
    second_waits_for_first(pool, 2)


def test_core_reservations_are_machine_wide(tmp_path):
    """Another rdbench process (a second run, a Ray worker) holding a core: this process
    takes the other one, and waits when it needs both."""
    other = _holder(tmp_path, 1, 3.0)  # long enough that a slow host still finds it held
    line = other.stdout.readline().split()
    assert line[0] == "held"
    theirs = line[1]
    pool = CorePool([0, 1], lock_dir=tmp_path)
    with pool.exclusive(1) as mine:
        assert mine != theirs
    start = time.monotonic()
    with pool.exclusive(2) as both:
        got_at, waited = time.time(), time.monotonic() - start
    released_at = float(other.stdout.readline().split()[1])
    other.wait()
    assert both == "0,1" and waited > 0.3
    assert got_at >= released_at, "held both cores while another process held one"


def head_of_queue(d: Path, got: list) -> None:
    """Returns once a phase holds the queue lock (waiting for cores), or has its cores: no
    guess of how long a loaded host takes to get there."""
    deadline = time.monotonic() + 60
    while not got and time.monotonic() < deadline:
        with open(d / "cores.lock", "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
        time.sleep(0.01)


def test_a_phase_needing_many_cores_is_not_starved(tmp_path):
    """The phase at the head of the queue keeps the cores it took: when the other core is
    freed it gets both, though a one-core phase queued behind it meanwhile."""
    first = _holder(tmp_path, 1, 2.0)
    assert first.stdout.readline().startswith("held")
    pool = CorePool([0, 1], lock_dir=tmp_path)
    got = []

    def head():
        with pool.exclusive(2) as both:
            got.append(both)
            time.sleep(0.5)
        got.append(time.time())

    t = threading.Thread(target=head)
    t.start()
    head_of_queue(tmp_path, got)  # the two-core phase holds the queue (and one core) now
    late = _holder(tmp_path, 1, 0.0)  # a one-core phase queues behind it
    t.join(10)
    held_line, _ = late.stdout.readline(), late.wait()
    first.wait()
    assert got[0] == "0,1"
    assert held_line.startswith("held") and float(held_line.split()[2]) >= got[1], \
        "a later one-core phase took a core while the two-core phase at the head of the queue waited"
