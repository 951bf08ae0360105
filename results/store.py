"""The result store: an SQLite index over every finished trial of every run.

The run folders stay the record (trial.json is written first); the index is what
`rdbench results`, `trends` and `report` query. It is written as each trial finishes and
is idempotent: a trial is keyed by (run_id, task, agent, trial), so indexing it again (a
resumed trial, `rdbench results import`) replaces its row, never duplicates it.

Default path: $RDBENCH_DB, else `results.db` in the folder that holds the run folders
(runs/results.db for runs/<run-id>).
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .records import TrialResult, load_trial

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    run_dir TEXT NOT NULL,
    agent TEXT,
    model TEXT,
    created_at TEXT,
    config TEXT NOT NULL            -- run.json
);
CREATE TABLE IF NOT EXISTS trials (
    run_id TEXT NOT NULL,
    task TEXT NOT NULL,
    agent TEXT NOT NULL,
    trial INTEGER NOT NULL,
    model TEXT,
    kind TEXT,                      -- speedup | score (from task.toml), NULL if unknown
    metric TEXT,
    verdict TEXT NOT NULL,          -- correct | failed | infra error
    correct INTEGER,
    error_class TEXT,
    value REAL,                     -- speedup or raw score; NULL unless correct
    ci_low REAL,
    ci_high REAL,
    normalised REAL,                -- score tasks: (value - base) / (reference - base)
    score_base REAL,
    score_reference REAL,
    baseline_s TEXT,                -- JSON lists of seconds
    candidate_s TEXT,
    aa_noise REAL,
    flagged TEXT,
    input_tokens INTEGER,
    output_tokens INTEGER,
    cost_usd REAL,                  -- NULL: unknown price
    time_s REAL,                    -- the trial's phases summed
    finished_at TEXT,
    trial_dir TEXT,
    result TEXT NOT NULL,           -- trial.json
    PRIMARY KEY (run_id, task, agent, trial)
);
CREATE INDEX IF NOT EXISTS trials_task_model ON trials (task, model);
"""


class StoreError(Exception):
    """The index cannot be read or written (bad path, locked too long, not a database)."""


def default_db(runs_dir: Path = Path("runs")) -> Path:
    env = os.environ.get("RDBENCH_DB")
    return Path(env) if env else runs_dir / "results.db"


@dataclass
class TrialRow:
    """One indexed trial, as the aggregation reads it."""

    run_id: str
    task: str
    agent: str
    trial: int
    model: str | None
    kind: str | None
    verdict: str
    correct: bool
    error_class: str | None
    value: float | None
    ci: list[float] | None
    normalised: float | None
    baseline_s: list[float] = field(default_factory=list)
    candidate_s: list[float] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0
    time_s: float = 0.0
    trial_dir: str | None = None
    #: the model's settings, canonical JSON ("" when none): two settings of one model are two rows
    settings: str = ""


def settings_key(settings: dict | None) -> str:
    return json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str) if settings else ""


def _kind(r: TrialResult) -> str | None:
    if r.kind is not None:
        return r.kind
    if r.metric == "speedup":
        return "speedup"
    return "score" if r.metric else None


def normalised(r: TrialResult) -> float | None:
    """(raw - base) / (reference - base) for a correct score trial, else None."""
    if _kind(r) != "score" or not r.correct or r.value is None or r.score_base is None or r.score_reference is None:
        return None
    span = r.score_reference - r.score_base
    return (r.value - r.score_base) / span if span else None


def trial_row(r: TrialResult, trial_dir: Path | None = None) -> TrialRow:
    return TrialRow(run_id=r.run_id, task=r.task, agent=r.agent, trial=r.trial, model=r.model, kind=_kind(r),
                    verdict=r.verdict, correct=bool(r.correct), error_class=r.error_class, value=r.value, ci=r.ci,
                    normalised=normalised(r), baseline_s=list(r.baseline_s), candidate_s=list(r.candidate_s),
                    input_tokens=r.input_tokens, output_tokens=r.output_tokens, cost_usd=r.cost_usd,
                    time_s=round(sum(r.phases.values()), 3), trial_dir=str(trial_dir) if trial_dir else None,
                    settings=settings_key(r.model_settings))


#: reads task folders: the fields an older trial.json lacks (kind, score_base, score_reference)
#: by task name, for those of the folders still there; harness.task.task_scoring, handed in by
#: the harness (task.toml is parsed there only; results imports nothing of the harness)
TaskReader = Callable[[list[str]], dict[str, dict]]


def complete(r: TrialResult, scoring: dict[str, dict]) -> TrialResult:
    """`r`, with what an older trial.json lacks taken from `scoring` (see TaskReader)."""
    if r.kind is not None or r.task not in scoring:
        return r
    return r.model_copy(update=scoring[r.task])


def run_trials(run_dir: Path, task_paths: list[str], tasks: TaskReader | None = None) -> list[tuple[TrialResult, Path]]:
    """Every finished or failed trial of a run folder (a trial.json being written is skipped),
    completed from the run's task folders by `tasks` where it can be."""
    scoring, out = None, []
    for d in sorted((run_dir / "trials").glob("*/")):
        r = load_trial(d)
        if r is None:
            continue  # being written, or not a trial: trial.json is written atomically at the end
        if r.kind is None and tasks is not None:
            scoring = tasks(task_paths) if scoring is None else scoring
            r = complete(r, scoring)
        out.append((r, d))
    return out


@dataclass
class ImportReport:
    runs: int = 0
    trials: int = 0
    skipped: list[str] = field(default_factory=list)


class Store:
    """The SQLite index. Each call opens its own connection, so any thread may use it.
    `tasks` completes older trial.json files from their task folders (see TaskReader)."""

    def __init__(self, path: Path, tasks: TaskReader | None = None):
        self.path = Path(path)
        self.tasks = tasks

    def task_fields(self, task_paths: list[str]) -> dict[str, dict]:
        """The task fields by name of those task folders still there ({} with no reader)."""
        return self.tasks(task_paths) if self.tasks is not None else {}

    @contextmanager
    def _db(self):
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(sqlite3.connect(self.path, timeout=30)) as conn:
                conn.executescript(SCHEMA)
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version not in (0, SCHEMA_VERSION):
                    raise StoreError(f"{self.path}: schema version {version}, this rdbench reads {SCHEMA_VERSION}; "
                                     "rebuild it with `rdbench results import`")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                with conn:  # one transaction, committed on success
                    yield conn
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"{self.path}: {e}") from None

    def add_run(self, run_id: str, run_dir: Path, config: dict) -> None:
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                       (run_id, str(Path(run_dir).resolve()), config.get("agent"), config.get("model"),
                        config.get("created_at"), json.dumps(config)))

    def add(self, r: TrialResult, trial_dir: Path | None = None) -> None:
        """Index one trial (replacing an earlier row of the same trial)."""
        self.add_many([(r, trial_dir)])

    def add_many(self, items: list[tuple[TrialResult, Path | None]]) -> None:
        rows = []
        for r, trial_dir in items:
            row = trial_row(r, Path(trial_dir).resolve() if trial_dir else None)
            ci = r.ci or [None, None]
            rows.append((r.run_id, r.task, r.agent, r.trial, r.model, row.kind, r.metric, r.verdict,
                         None if r.correct is None else int(r.correct), r.error_class, r.value, ci[0], ci[1],
                         row.normalised, r.score_base, r.score_reference,
                         json.dumps(r.baseline_s), json.dumps(r.candidate_s), r.aa_noise, r.flagged,
                         r.input_tokens, r.output_tokens, r.cost_usd, row.time_s, r.finished_at, row.trial_dir,
                         r.model_dump_json()))
        with self._db() as db:
            db.executemany(f"INSERT OR REPLACE INTO trials VALUES ({', '.join('?' * 27)})", rows)

    def index_run(self, run_dir: Path) -> int:
        """Index every trial.json of one run folder; returns how many. Raises StoreError, or
        ValueError for a folder without a valid run.json. Needs no task folder (but reads
        those still there for trial.json files older than the task fields)."""
        try:
            config = json.loads((run_dir / "run.json").read_text())
            run_id = config["run_id"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{run_dir}: not a run folder ({e})") from None
        items = run_trials(run_dir, config.get("tasks") or [], self.tasks)
        self.add_run(run_id, run_dir, config)
        self.add_many(items)
        return len(items)

    def import_runs(self, path: Path) -> ImportReport:
        """Index a run folder, or every run folder directly under `path`."""
        report = ImportReport()
        dirs = [path] if (path / "run.json").exists() else sorted(p.parent for p in path.glob("*/run.json"))
        for d in dirs:
            try:
                report.trials += self.index_run(d)
                report.runs += 1
            except ValueError as e:
                report.skipped.append(str(e))
        return report

    def rows(self, task: str | None = None, tasks: list[str] | None = None) -> list[TrialRow]:
        """Indexed trials, optionally of one task or of a list of tasks."""
        where, args = [], []
        if task:
            where.append("task = ?")
            args.append(task)
        if tasks is not None:
            where.append(f"task IN ({', '.join('?' * len(tasks))})")
            args.extend(tasks)
        sql = ("SELECT run_id, task, agent, trial, model, kind, verdict, correct, error_class, value, ci_low, ci_high,"
               " normalised, baseline_s, candidate_s, input_tokens, output_tokens, cost_usd, time_s, trial_dir,"
               " json_extract(result, '$.model_settings') FROM trials" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY task, run_id, trial")
        with self._db() as db:
            out = []
            for (run_id_, task_, agent, trial, model, kind, verdict, correct, error_class, value, lo, hi, norm,
                 bs, cs, it, ot, cost, time_s, trial_dir, settings) in db.execute(sql, args):
                out.append(TrialRow(run_id_, task_, agent, trial, model, kind, verdict, bool(correct), error_class,
                                    value, [lo, hi] if lo is not None else None, norm, json.loads(bs or "[]"),
                                    json.loads(cs or "[]"), it or 0, ot or 0, cost, time_s or 0.0, trial_dir,
                                    settings_key(json.loads(settings)) if settings else ""))
            return out


class RunIndexer:
    """A run's index as it goes (harness.run.RunIndex): each trial as it finishes, the whole
    run before and after. A failure to index never fails the run: it goes to `on_warning`."""

    def __init__(self, store: Store, run_dir: Path, on_warning: Callable[[str], None]):
        self.store, self.run_dir, self.on_warning = store, run_dir, on_warning

    def run(self) -> None:
        try:
            self.store.index_run(self.run_dir)
        except (StoreError, ValueError) as e:
            self.on_warning(f"results index not updated: {e}")

    def trial(self, result: TrialResult, trial_dir: Path) -> None:
        try:
            self.store.add(result, trial_dir)
        except StoreError as e:
            self.on_warning(f"results index not updated for {result.trial_id}: {e}")
