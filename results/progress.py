"""Live progress of a run: trials queued, running and done per task, elapsed time, and the
best value so far, and under it the latest line of each running trial's verifier (its
logs/verifier.stderr, written as the verifier prints: "baseline run 2/3"). The CLI shows it
(rich Live, on stderr) only when the output is a terminal; otherwise it prints one plain
line per finished trial."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from .records import TrialResult


@dataclass
class TaskProgress:
    queued: int
    running: dict[str, float] = field(default_factory=dict)  # trial id -> start time
    correct: int = 0
    failed: int = 0
    infra: int = 0
    best: float | None = None
    metric: str | None = None


def fmt_elapsed(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s // 60 % 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class RunProgress:
    """The state of a run's trials; thread-safe (trials start in worker threads).
    `__rich__` renders it, so a rich Live redraws it as it changes."""

    def __init__(self, title: str, pending: dict[str, int], clock: Callable[[], float] = time.monotonic):
        self.title, self.clock = title, clock
        self.t0 = clock()
        self.tasks = {name: TaskProgress(queued=n) for name, n in pending.items()}
        self._lock = threading.Lock()
        self._logs: dict[str, Path] = {}  # running trial id -> its verifier's live log

    def start(self, task: str, trial_id: str, trial_dir: Path | None = None) -> None:
        with self._lock:
            p = self.tasks[task]
            p.queued -= 1
            p.running[trial_id] = self.clock()
            if trial_dir is not None:
                self._logs[trial_id] = Path(trial_dir) / "logs" / "verifier.stderr"

    def verifying(self) -> dict[str, str]:
        """Running trial id -> the last line its verifier wrote so far (trials verifying now)."""
        with self._lock:
            logs = dict(self._logs)
        out = {}
        for trial_id, path in logs.items():
            line = last_line(path)
            if line:
                out[trial_id] = line
        return out

    def done(self, trial_id: str, r: TrialResult) -> None:
        with self._lock:
            p = self.tasks[r.task]
            self._logs.pop(trial_id, None)
            if p.running.pop(trial_id, None) is None:
                p.queued -= 1  # finished without a start event
            if r.error_class == "infra":
                p.infra += 1
            elif r.correct:
                p.correct += 1
                if r.value is not None and (p.best is None or r.value > p.best):
                    p.best, p.metric = r.value, r.metric
            else:
                p.failed += 1

    def __rich__(self) -> Group:
        lines = [Text(f"  {trial_id} verifying: {line}", overflow="ellipsis", no_wrap=True)
                 for trial_id, line in sorted(self.verifying().items())]
        return Group(self._table(), *lines)

    def _table(self) -> Table:
        with self._lock:
            now = self.clock()
            finished = sum(p.correct + p.failed + p.infra for p in self.tasks.values())
            total = finished + sum(p.queued + len(p.running) for p in self.tasks.values())
            table = Table(title=f"{self.title}: {finished}/{total} done, elapsed {fmt_elapsed(now - self.t0)}",
                          title_justify="left", box=box.SIMPLE_HEAD)
            for col in ("task", "queued", "running", "done", "correct", "failed", "infra", "best", "longest running"):
                table.add_column(col, justify="left" if col == "task" else "right")
            for name, p in self.tasks.items():
                best = "-" if p.best is None else f"{p.best:.2f}{'x' if p.metric == 'speedup' else ''}"
                longest = fmt_elapsed(now - min(p.running.values())) if p.running else "-"
                table.add_row(name, str(p.queued), str(len(p.running)), str(p.correct + p.failed + p.infra),
                              str(p.correct), str(p.failed), str(p.infra), best, longest)
            return table


def last_line(path: Path, tail: int = 4096) -> str:
    """The last non-empty line of a file being written ("" if it is missing or empty)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - tail))
            data = f.read()
    except OSError:
        return ""
    lines = [ln for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1].strip()[:200] if lines else ""
