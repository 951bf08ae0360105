"""CPU cores and GPUs for sandboxes: agent phases share them; timing phases hold them alone."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from sandbox.gpu import detect_gpus  # noqa: F401  (GPU detection lives in sandbox/gpu.py; re-exported)


def cpuset(cores: list[int]) -> str:
    return ",".join(map(str, cores))


def lock_dir(override: Path | None = None) -> Path:
    """Where the machine-wide lock files of timing phases live (one per core, one per GPU)."""
    from sandbox.images import cache_dir

    d = override or cache_dir() / "locks"
    d.mkdir(parents=True, exist_ok=True)
    return d


#: how often a timing phase that is short of cores looks again (seconds)
POLL_S = 0.05


class CorePool:
    """The cores of one machine. `exclusive(n)` blocks until n cores are free of any other
    timing phase, of this process or of any other rdbench process on the machine (one lock
    file per core, under `lock_dir`), and holds them; `spread(n, i)` picks n cores
    round-robin for agent work. Its `gpus` pool does the same for the machine's GPUs.

    Cores are gathered one at a time under a machine-wide queue lock (`cores.lock`): the
    phase at the head of the queue keeps what it has taken and waits for the rest, so a
    phase that needs many cores is not starved by phases that need few, and no two phases
    can deadlock (whoever holds cores and waits is the only one waiting while holding)."""

    def __init__(self, cores: list[int] | None = None, gpus: GpuPool | None = None,
                 lock_dir: Path | None = None):
        self._lock_dir = lock_dir
        self.gpus = gpus or GpuPool(lock_dir=lock_dir)
        self.cores = sorted(cores if cores is not None else os.sched_getaffinity(0))
        if not self.cores:
            raise ValueError("a core pool needs at least one core")

    @property
    def lock_dir(self) -> Path:
        """Where this pool's lock files (and the freeze record, sandbox.freeze) live."""
        return lock_dir(self._lock_dir)

    def _clamp(self, n: int) -> int:
        return max(1, min(n, len(self.cores)))

    def spread(self, n: int, i: int) -> str:
        n = self._clamp(n)
        start = (i * n) % len(self.cores)
        return cpuset(sorted(self.cores[(start + k) % len(self.cores)] for k in range(n)))

    def _take(self, n: int) -> dict[int, object]:
        d = self.lock_dir
        held: dict[int, object] = {}
        with open(d / "cores.lock", "a") as queue:
            fcntl.flock(queue, fcntl.LOCK_EX)  # released when the file closes
            try:
                while len(held) < n:
                    for core in self.cores:
                        if core in held:
                            continue
                        f = open(d / f"core-{core}.lock", "a")
                        try:
                            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        except BlockingIOError:
                            f.close()
                            continue
                        held[core] = f
                        if len(held) == n:
                            break
                    else:
                        time.sleep(POLL_S)
            except BaseException:
                for f in held.values():
                    f.close()
                raise
        return held

    @contextmanager
    def exclusive(self, n: int):
        held = self._take(self._clamp(n))
        try:
            yield cpuset(sorted(held))
        finally:
            for f in held.values():
                f.close()  # releases the lock


class GpuPool:
    """The GPUs of one machine, whole devices by id. `exclusive(n)` holds n of them for a
    timing phase, against this process's other trials and, through one lock file per GPU,
    against every other rdbench process on the machine; `spread(n, i)` shares them for agent
    work. On a machine without GPUs both give none: the task's verifier then decides (kernel
    tasks check correctness in the Triton interpreter and report no speedup)."""

    def __init__(self, gpus: list[int] | None = None, lock_dir: Path | None = None):
        self._ids = sorted(gpus) if gpus is not None else None
        self._lock_dir = lock_dir
        self._busy: set[int] = set()
        self._cond = threading.Condition()

    @property
    def ids(self) -> list[int]:
        if self._ids is None:  # detected on first use, not at construction
            self._ids = detect_gpus()
        return self._ids

    def _take(self, n: int) -> int:
        return min(n, len(self.ids))

    def spread(self, n: int, i: int) -> list[int]:
        n = self._take(n)
        if n == 0:
            return []
        start = (i * n) % len(self.ids)
        return sorted(self.ids[(start + k) % len(self.ids)] for k in range(n))

    def _lock_path(self, gpu: int) -> Path:
        return lock_dir(self._lock_dir) / f"gpu-{gpu}.lock"

    @contextmanager
    def exclusive(self, n: int):
        n = self._take(n)
        if n == 0:
            yield []
            return
        with self._cond:
            self._cond.wait_for(lambda: len(self.ids) - len(self._busy) >= n)
            taken = sorted(set(self.ids) - self._busy)[:n]
            self._busy.update(taken)
        files = []
        try:
            for gpu in taken:  # in id order, so that two processes cannot deadlock
                f = open(self._lock_path(gpu), "a")
                files.append(f)
                fcntl.flock(f, fcntl.LOCK_EX)
            yield taken
        finally:
            for f in files:
                f.close()  # releases the lock
            with self._cond:
                self._busy.difference_update(taken)
                self._cond.notify_all()
