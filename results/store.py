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
from dataclasses import astuple, dataclass, field, fields
from pathlib import Path
from typing import Callable

from .records import TrialResult, load_trial

#: 2: the columns are TrialRow's fields (trial.json nests the verdict and the usage); an index
#: of version 1 is rebuilt from its run folders when opened
SCHEMA_VERSION = 2


class StoreError(Exception):
    """The index cannot be read or written (bad path, locked too long, not a database)."""


def default_db(runs_dir: Path = Path("runs")) -> Path:
    env = os.environ.get("RDBENCH_DB")
    return Path(env) if env else runs_dir / "results.db"


@dataclass
class TrialRow:
    """One indexed trial: what the aggregation, the suites and SQL read of a TrialResult
    (`trial_row` is its one projection; the index's columns are these fields, and the whole
    trial.json is kept beside them as `result`)."""

    run_id: str
    task: str
    agent: str
    trial: int
    model: str | None
    kind: str | None                    # speedup | score (from task.toml), None if unknown
    verdict: str                        # correct | failed | infra error
    correct: bool
    error_class: str | None
    value: float | None                 # speedup or raw score; None unless correct
    ci: list[float] | None
    normalised: float | None            # score tasks: (value - base) / (reference - base)
    baseline_s: list[float] = field(default_factory=list)
    candidate_s: list[float] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0        # None: unknown price
    time_s: float = 0.0                 # the trial's phases summed
    trial_dir: str | None = None
    #: the model's settings, canonical JSON ("" when none): two settings of one model are two rows
    settings: str = ""
    metric: str | None = None
    aa_noise: float | None = None
    flagged: str | None = None
    finished_at: str | None = None
    #: a correct verdict on the unchanged starting point (a KernelBench task's oracle): never "fast"
    unchanged: bool = False


_COLUMNS = [f.name for f in fields(TrialRow)]
_JSON = {"ci", "baseline_s", "candidate_s"}  # lists, kept as JSON text


def _sql_type(name: str) -> str:
    t = TrialRow.__annotations__[name]
    return {"int": "INTEGER", "bool": "INTEGER", "float | None": "REAL", "float": "REAL"}.get(str(t), "TEXT")


SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    run_dir TEXT NOT NULL,
    agent TEXT,
    model TEXT,
    created_at TEXT,
    config TEXT NOT NULL            -- run.json
);
CREATE TABLE IF NOT EXISTS trials (
    {", ".join(f"{c} {_sql_type(c)}" for c in _COLUMNS)},
    result TEXT NOT NULL,           -- trial.json
    PRIMARY KEY (run_id, task, agent, trial)
);
CREATE INDEX IF NOT EXISTS trials_task_model ON trials (task, model);
"""


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
    u = r.usage
    return TrialRow(run_id=r.run_id, task=r.task, agent=r.agent, trial=r.trial, model=r.model, kind=_kind(r),
                    verdict=r.verdict, correct=bool(r.correct), error_class=r.error_class, value=r.value, ci=r.ci,
                    normalised=normalised(r), baseline_s=list(r.baseline_s), candidate_s=list(r.candidate_s),
                    input_tokens=u.input_tokens, output_tokens=u.output_tokens, cost_usd=u.cost_usd,
                    time_s=round(sum(r.phases.values()), 3), trial_dir=str(trial_dir) if trial_dir else None,
                    settings=settings_key(r.model_settings), metric=r.metric, aa_noise=r.aa_noise,
                    flagged=r.flagged, finished_at=r.finished_at,
                    unchanged=bool(r.correct and r.verifier_details.get("unchanged")))


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
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise StoreError(f"{self.path}: schema version {version}, this rdbench reads {SCHEMA_VERSION}; "
                                     "rebuild it with `rdbench results import`")
                stale = 0 < version < SCHEMA_VERSION
                if stale:  # an older index: its rows are rebuilt from the run folders it names
                    with conn:
                        conn.execute("DROP TABLE IF EXISTS trials")
                conn.executescript(SCHEMA)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                if stale:
                    conn.commit()
                    self._reindex(conn)
                with conn:  # one transaction, committed on success
                    yield conn
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"{self.path}: {e}") from None

    def _reindex(self, conn) -> None:
        """Index again every run folder still there that an older index named."""
        with conn:
            for (run_dir,) in conn.execute("SELECT run_dir FROM runs").fetchall():
                try:
                    _, items = self._read_run(Path(run_dir))
                except ValueError:
                    continue  # gone: its run row stays, its trials with it
                self._insert(conn, items)

    @staticmethod
    def _insert(conn, items: list[tuple[TrialResult, Path | None]]) -> None:
        rows = [(*(json.dumps(v) if c in _JSON else v for c, v in zip(_COLUMNS, astuple(row))), r.model_dump_json())
                for r, trial_dir in items
                for row in [trial_row(r, Path(trial_dir).resolve() if trial_dir else None)]]
        conn.executemany(f"INSERT OR REPLACE INTO trials ({', '.join(_COLUMNS)}, result) "
                         f"VALUES ({', '.join('?' * (len(_COLUMNS) + 1))})", rows)

    def add_run(self, run_id: str, run_dir: Path, config: dict) -> None:
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                       (run_id, str(Path(run_dir).resolve()), config.get("agent"), config.get("model"),
                        config.get("created_at"), json.dumps(config)))

    def add(self, r: TrialResult, trial_dir: Path | None = None) -> None:
        """Index one trial (replacing an earlier row of the same trial)."""
        self.add_many([(r, trial_dir)])

    def add_many(self, items: list[tuple[TrialResult, Path | None]]) -> None:
        with self._db() as db:
            self._insert(db, items)

    def index_run(self, run_dir: Path) -> int:
        """Index every trial.json of one run folder; returns how many. Raises StoreError, or
        ValueError for a folder without a valid run.json. Needs no task folder (but reads
        those still there for trial.json files older than the task fields)."""
        config, items = self._read_run(run_dir)
        self.add_run(config["run_id"], run_dir, config)
        self.add_many(items)
        return len(items)

    def _read_run(self, run_dir: Path) -> tuple[dict, list[tuple[TrialResult, Path]]]:
        """A run folder's run.json and its trials; ValueError for a folder without a valid run.json."""
        try:
            config = json.loads((run_dir / "run.json").read_text())
            if "run_id" not in config:
                raise KeyError("run_id")
            tasks = config.get("tasks") or []
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{run_dir}: not a run folder ({e})") from None
        return config, run_trials(run_dir, tasks, self.tasks)

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
        sql = (f"SELECT {', '.join(_COLUMNS)} FROM trials" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY task, run_id, trial")
        with self._db() as db:
            out = []
            for values in db.execute(sql, args):
                row = dict(zip(_COLUMNS, values))
                for c in _JSON:
                    row[c] = json.loads(row[c]) if row[c] else ([] if c != "ci" else None)
                row["correct"], row["unchanged"] = bool(row["correct"]), bool(row["unchanged"])
                out.append(TrialRow(**row))
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
