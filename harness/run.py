"""A run: every (task, trial index) for one agent, through one executor seam.

    runs/<run-id>/run.json
    runs/<run-id>/trials/<task>__<agent>__<n>/{trial.json, submission/, submission.patch, verifier.json, logs/}

A trial without trial.json, or whose trial.json records an infrastructure error, is
unfinished: `resume` runs exactly those again. With an index (the result store, passed in
by the caller), each trial is indexed as it finishes, and the whole run once more at the
end (idempotent), so a trial whose indexing was cut short by a crash is indexed by the
next resume or `rdbench results import`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Protocol

from results.records import (RunConfig, RunError, TrialResult, finished, load_run, load_trial, trial_dir,
                             write_json_atomic)

from .cores import CorePool
from .executors import Executor, LocalExecutor
from .task import TaskSpec, load_task
from .trial import TrialSpec, now

class RunIndex(Protocol):
    """Where finished trials are indexed (results.store.RunIndexer). Never raises: a failure
    to index is the index's to report, and never fails the run."""

    def run(self) -> None:
        """Index every finished trial of the run so far."""

    def trial(self, result: TrialResult, trial_dir: Path) -> None:
        """Index one trial as it finishes."""


def new_run_id() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


@dataclass
class Run:
    config: RunConfig
    run_dir: Path
    tasks: list[TaskSpec]
    results: list[TrialResult] = field(default_factory=list)

    def pending(self) -> list[TrialSpec]:
        todo = []
        for task in self.tasks:
            for i in range(self.config.trials):
                d = trial_dir(self.run_dir, task.name, self.config.agent.name, i)
                if not finished(load_trial(d)):
                    todo.append(TrialSpec(task=task, agent=self.config.agent, index=i, out_dir=d,
                                          run_id=self.config.run_id, repeats=self.config.repeats,
                                          freeze=self.config.freeze))
        return todo

    def all_results(self) -> list[TrialResult]:
        out = []
        for task in self.tasks:
            for i in range(self.config.trials):
                t = load_trial(trial_dir(self.run_dir, task.name, self.config.agent.name, i))
                if t is not None:
                    out.append(t)
        return out


def create_run(config: RunConfig, run_dir: Path, tasks: list[TaskSpec]) -> Run:
    if (run_dir / "run.json").exists():
        raise RunError(f"{run_dir}: already holds a run; resume it with --resume {run_dir}")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file on the way (--out FILE/sub), no permission
        raise RunError(f"{run_dir}: cannot make the run folder: {e.strerror or e}") from None
    config.created_at = now()
    write_json_atomic(run_dir / "run.json", config.model_dump(mode="json"))
    return Run(config, run_dir, tasks)


def with_limits(task: TaskSpec, limits: dict[str, float]) -> TaskSpec:
    """The task with its [agent] limits overridden (validated like task.toml's)."""
    if not limits:
        return task
    agent = type(task.agent).model_validate({**task.agent.model_dump(), **limits})
    return task.model_copy(update={"agent": agent})


def open_run(run_dir: Path) -> Run:
    config = load_run(run_dir)
    return Run(config, run_dir, [with_limits(load_task(t), config.agent.limits.given()) for t in config.tasks])


def execute(run: Run, *, images: dict[str, str], cores: CorePool | None = None,
            on_start: Callable[[TrialSpec], None] = lambda s: None,
            on_done: Callable[[TrialSpec, TrialResult], None] = lambda s, r: None,
            index: RunIndex | None = None, executor: Executor | None = None) -> list[TrialResult]:
    """Run the pending trials through `executor` (default: the local thread pool, `concurrency`
    at a time, on `cores`); index each finished one in `index`. On KeyboardInterrupt, the
    executor stops its trials (the caller removes the local sandboxes), and it re-raises."""
    executor = executor or LocalExecutor(cores)
    results = []
    if index is not None:
        index.run()  # a resumed run's earlier trials
    for spec, r in executor.trials(run.config, run.pending(), images, on_start):
        results.append(r)
        if index is not None:
            index.trial(r, spec.out_dir)
        on_done(spec, r)
    if index is not None:
        index.run()
    return results
