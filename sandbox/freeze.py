"""Quiet timing: agent sandboxes on a timing phase's cores are frozen while it times.

One machine-wide record per backend, a JSON file beside the core lock files
(freeze-docker.json), changed only under an flock, says which timing phases run (their cores, their process) and which sandboxes are
frozen by which phases, with each sandbox's total time frozen:

    {"timing": {token: {"cpus": [0], "pid": 123}},
     "frozen": {sandbox: {"by": [token, ...], "since": 1.7e9 | null, "total": 12.5}}}

A sandbox is frozen while at least one timing phase on its cores runs: the first phase
freezes it, the last one thaws it, so two phases on different cores of one sandbox cannot
thaw it under each other. A phase whose process died (kill -9) is dropped by the next
change, and what only it froze is thawed. A sandbox started during a timing phase on its
cores is frozen as it starts (`join`). The backend does the freezing (`pause`, `resume`);
this module only keeps the books.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable

from . import pid_alive


def parse_cpuset(s: str | None) -> set[int] | None:
    """"0-2,5" -> {0, 1, 2, 5}; None (all cores) -> None."""
    if s is None or not s.strip():
        return None
    out: set[int] = set()
    for part in s.split(","):
        lo, _, hi = part.strip().partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def overlaps(a: set[int] | None, b: set[int] | None) -> bool:
    return a is None or b is None or bool(a & b)


class FreezeBook:
    """The machine-wide record of timing phases and frozen sandboxes of one backend, under `lock_dir`."""

    def __init__(self, lock_dir: Path, backend: str):
        self.dir = Path(lock_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        # one record per backend: a phase freezes, and thaws, only sandboxes it knows how to
        self.name = f"freeze-{backend}"
        self.path = self.dir / f"{self.name}.json"

    @contextmanager
    def _state(self, write: bool = True):
        with open(self.dir / f"{self.name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
            try:
                state = json.loads(self.path.read_text())
            except (OSError, ValueError):
                state = {}
            state.setdefault("timing", {})
            state.setdefault("frozen", {})
            yield state
            if write:
                tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(state))
                tmp.replace(self.path)

    @staticmethod
    def _unfreeze(state: dict, name: str, token: str, resume: Callable[[str], None]) -> None:
        entry = state["frozen"].get(name)
        if entry is None or token not in entry["by"]:
            return
        entry["by"].remove(token)
        if not entry["by"] and entry["since"] is not None:
            resume(name)
            entry["total"] += max(0.0, time.time() - entry["since"])
            entry["since"] = None

    def _prune(self, state: dict, resume: Callable[[str], None]) -> None:
        for token, phase in list(state["timing"].items()):
            if not pid_alive(phase["pid"]):
                del state["timing"][token]
                for name in list(state["frozen"]):
                    self._unfreeze(state, name, token, resume)

    def _freeze(self, state: dict, name: str, token: str, pause: Callable[[str], None]) -> None:
        entry = state["frozen"].setdefault(name, {"by": [], "since": None, "total": 0.0})
        if token in entry["by"]:
            return
        if entry["since"] is None:
            pause(name)
            entry["since"] = time.time()
        entry["by"].append(token)

    @contextmanager
    def timing(self, cpuset: str | None, sandboxes: Callable[[], Iterable[tuple[str, str | None]]],
               pause: Callable[[str], None], resume: Callable[[str], None]):
        """Freeze every sandbox in `sandboxes()` (name, cpuset) whose cores overlap `cpuset`,
        for the duration; thaw them after, on errors and Ctrl-C too. `pause(name)` and
        `resume(name)` must not raise for a sandbox that is gone."""
        token = secrets.token_hex(8)
        cpus = parse_cpuset(cpuset)
        try:
            with self._state() as state:
                self._prune(state, resume)
                state["timing"][token] = {"cpus": sorted(cpus) if cpus is not None else None, "pid": os.getpid()}
                for name, theirs in sandboxes():
                    if overlaps(cpus, parse_cpuset(theirs)):
                        self._freeze(state, name, token, pause)
            yield
        finally:
            with self._state() as state:
                state["timing"].pop(token, None)
                for name in list(state["frozen"]):
                    self._unfreeze(state, name, token, resume)
                self._prune(state, resume)

    def join(self, name: str, cpuset: str | None, pause: Callable[[str], None]) -> None:
        """A sandbox just started: frozen now if a timing phase runs on its cores."""
        cpus = parse_cpuset(cpuset)
        with self._state() as state:
            for token, phase in state["timing"].items():
                theirs = None if phase["cpus"] is None else set(phase["cpus"])
                if pid_alive(phase["pid"]) and overlaps(cpus, theirs):
                    self._freeze(state, name, token, pause)

    def frozen_s(self, name: str) -> float:
        """Seconds `name` has spent frozen so far (its current freeze included)."""
        with self._state(write=False) as state:
            entry = state["frozen"].get(name)
        if entry is None:
            return 0.0
        return entry["total"] + (max(0.0, time.time() - entry["since"]) if entry["since"] is not None else 0.0)

    def thaw_if_orphaned(self, name: str, resume: Callable[[str], None]) -> bool:
        """Thaw `name` if every timing phase that froze it is dead (killed before it could
        thaw; nobody else may change the record for a long time). True if it was."""
        with self._state(write=False) as state:
            entry = state["frozen"].get(name)
            phases = [state["timing"].get(t) for t in entry["by"]] if entry and entry["since"] is not None else None
        if not phases or any(p is not None and pid_alive(p["pid"]) for p in phases):
            return False
        with self._state() as state:
            self._prune(state, resume)
            for token in list(state["frozen"].get(name, {}).get("by", [])):
                if token not in state["timing"]:  # a phase whose record is gone altogether
                    self._unfreeze(state, name, token, resume)
        return True

    def drop_process(self, pid: int, resume: Callable[[str], None]) -> None:
        """The timing phases of process `pid` end now (it is about to exit, stuck threads and
        all): what only they froze is thawed."""
        with self._state() as state:
            for token, phase in list(state["timing"].items()):
                if phase["pid"] == pid:
                    del state["timing"][token]
                    for name in list(state["frozen"]):
                        self._unfreeze(state, name, token, resume)

    def forget(self, name: str) -> float:
        """The sandbox is gone: drop its entry; returns its total time frozen."""
        with self._state() as state:
            entry = state["frozen"].pop(name, None)
        if entry is None:
            return 0.0
        return entry["total"] + (max(0.0, time.time() - entry["since"]) if entry["since"] is not None else 0.0)
