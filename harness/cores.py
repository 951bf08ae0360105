"""CPU cores for sandboxes: agent phases share them; timing phases hold them alone."""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager


def cpuset(cores: list[int]) -> str:
    return ",".join(map(str, cores))


class CorePool:
    """The cores of one machine. `exclusive(n)` blocks until n cores are free of any other
    timing phase and holds them; `spread(n, i)` picks n cores round-robin for agent work."""

    def __init__(self, cores: list[int] | None = None):
        self.cores = sorted(cores if cores is not None else os.sched_getaffinity(0))
        if not self.cores:
            raise ValueError("a core pool needs at least one core")
        self._free = set(self.cores)
        self._cond = threading.Condition()

    def _clamp(self, n: int) -> int:
        return max(1, min(n, len(self.cores)))

    def spread(self, n: int, i: int) -> str:
        n = self._clamp(n)
        start = (i * n) % len(self.cores)
        return cpuset(sorted(self.cores[(start + k) % len(self.cores)] for k in range(n)))

    @contextmanager
    def exclusive(self, n: int):
        n = self._clamp(n)
        with self._cond:
            self._cond.wait_for(lambda: len(self._free) >= n)
            taken = sorted(self._free)[:n]
            self._free.difference_update(taken)
        try:
            yield cpuset(taken)
        finally:
            with self._cond:
                self._free.update(taken)
                self._cond.notify_all()
