"""A run: every (task, trial index) for one agent, through one executor seam.

    runs/<run-id>/run.json
    runs/<run-id>/trials/<task>__<agent>__<n>/{trial.json, submission/, submission.patch, verifier.json, logs/}

A trial without trial.json, or whose trial.json records an infrastructure error, is
unfinished: `resume` runs exactly those again. With a result store, each trial is indexed
as it finishes, and the whole run once more at the end (idempotent), so a trial whose
indexing was cut short by a crash is indexed by the next resume or `rdbench results import`.
"""

from __future__ import annotations

import secrets
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from pydantic import BaseModel, ValidationError

from .cores import CorePool
from .models import TrialResult
from .task import TaskSpec, load_task
from .trial import Cancelled, TrialSpec, now, run_trial, write_json_atomic

if TYPE_CHECKING:
    from results.store import Store


class RunConfig(BaseModel):
    """run.json: what a run was asked to do, enough to resume it."""

    run_id: str
    tasks: list[str]
    agent: str
    model: str | None = None
    trials: int = 1
    concurrency: int = 1
    backend: str = "docker"
    repeats: int | None = None
    base_url: str | None = None
    replay: str | None = None
    #: overrides of the tasks' [agent] limits (--max-turns and the like)
    limits: dict[str, float] = {}
    created_at: str = ""


class RunError(Exception):
    """A run that cannot start or resume (bad folder, bad run.json)."""


def new_run_id() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def trial_dir(run_dir: Path, task: str, agent: str, index: int) -> Path:
    return run_dir / "trials" / f"{task}__{agent}__{index}"


def load_trial(path: Path) -> TrialResult | None:
    try:
        return TrialResult.model_validate_json((path / "trial.json").read_text())
    except (OSError, ValidationError):
        return None


def finished(t: TrialResult | None) -> bool:
    return t is not None and t.error_class != "infra"


def load_run(run_dir: Path) -> RunConfig:
    try:
        return RunConfig.model_validate_json((run_dir / "run.json").read_text())
    except OSError:
        raise RunError(f"{run_dir}: not a run folder (no run.json)") from None
    except ValidationError as e:
        raise RunError(f"{run_dir / 'run.json'}: invalid: {e}") from None


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
                d = trial_dir(self.run_dir, task.name, self.config.agent, i)
                if not finished(load_trial(d)):
                    todo.append(TrialSpec(task=task, agent=self.config.agent, index=i, out_dir=d,
                                          run_id=self.config.run_id, model=self.config.model,
                                          repeats=self.config.repeats, base_url=self.config.base_url,
                                          replay=self.config.replay))
        return todo

    def all_results(self) -> list[TrialResult]:
        out = []
        for task in self.tasks:
            for i in range(self.config.trials):
                t = load_trial(trial_dir(self.run_dir, task.name, self.config.agent, i))
                if t is not None:
                    out.append(t)
        return out


def create_run(config: RunConfig, run_dir: Path, tasks: list[TaskSpec]) -> Run:
    if (run_dir / "run.json").exists():
        raise RunError(f"{run_dir}: already holds a run; resume it with --resume {run_dir}")
    run_dir.mkdir(parents=True, exist_ok=True)
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
    return Run(config, run_dir, [with_limits(load_task(t), config.limits) for t in config.tasks])


def index_run(run: Run, store: "Store | None", on_warning: Callable[[str], None]) -> None:
    """Index every finished trial of the run (a failure to index never fails the run)."""
    if store is None:
        return
    from results.store import StoreError

    try:
        store.index_run(run.run_dir, {t.name: t for t in run.tasks})
    except (StoreError, ValueError) as e:
        on_warning(f"results index not updated: {e}")


def execute(run: Run, *, images: dict[str, str], cores: CorePool | None = None,
            on_start: Callable[[TrialSpec], None] = lambda s: None,
            on_done: Callable[[TrialSpec, TrialResult], None] = lambda s, r: None,
            store: "Store | None" = None, on_warning: Callable[[str], None] = lambda m: None) -> list[TrialResult]:
    """Run the pending trials, `concurrency` at a time; index each finished one in `store`.
    On KeyboardInterrupt, stops starting trials, lets the caller remove the sandboxes, and
    re-raises."""
    cores = cores or CorePool()
    cancel = threading.Event()
    todo = run.pending()
    results = []
    pool = ThreadPoolExecutor(max_workers=max(1, run.config.concurrency), thread_name_prefix="trial")

    def one(spec: TrialSpec) -> TrialResult:
        if cancel.is_set():
            raise Cancelled()
        on_start(spec)
        return run_trial(spec, image=images[spec.task.name], cores=cores, backend=run.config.backend, cancel=cancel)

    def index(spec: TrialSpec, r: TrialResult) -> None:
        from results.store import StoreError

        try:
            store.add(r, spec.task, spec.out_dir)
        except StoreError as e:
            on_warning(f"results index not updated for {spec.trial_id}: {e}")

    index_run(run, store, on_warning)  # a resumed run's earlier trials
    futures = {pool.submit(one, s): s for s in todo}
    try:
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for f in done:
                try:
                    r = f.result()
                except Cancelled:
                    continue
                results.append(r)
                if store is not None:
                    index(futures[f], r)
                on_done(futures[f], r)
    except BaseException:
        cancel.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    index_run(run, store, on_warning)
    return results
