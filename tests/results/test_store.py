"""The SQLite index: written by real runs as trials finish, rebuilt by `results import`,
idempotent; `rdbench results` over it in table, CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
import sqlite3

import pytest

from results.records import TrialResult
from harness.task import task_scoring
from results.store import Store
from tests.conftest import rdbench
from tests.results.synth import FAILED, INFRA, speedup, task_folder, write_run


def count(db) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT COUNT(*) FROM trials").fetchone()[0]


def results_json(*args) -> list[dict]:
    r = rdbench("results", "--format", "json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.docker
def test_runs_index_their_trials_and_results_shows_both_agents_with_cis(primes_runs):
    assert primes_runs.db.is_file() and count(primes_runs.db) == 4  # 2 agents x 2 trials, indexed by the runs
    assert f"indexed in {primes_runs.db}" in primes_runs.outputs["oracle"].stderr
    rows = {g["label"]: g for g in results_json("--db", str(primes_runs.db))}
    assert set(rows) == {"oracle", "nop"}
    oracle, nop = rows["oracle"], rows["nop"]
    assert oracle["trials"] == 2 and oracle["success_rate"] == 1.0 and oracle["kind"] == "speedup"
    assert oracle["geomean"] > 3 and oracle["geomean_ci_low"] <= oracle["geomean"] <= oracle["geomean_ci_high"]
    assert oracle["geomean_ci_low"] > 2 and oracle["fast_p"] == 1.0
    assert 0.6 < nop["geomean"] < 1.5 and nop["geomean_ci_low"] < nop["geomean_ci_high"]
    assert nop["mean_ci_low"] <= nop["mean"] <= nop["mean_ci_high"]
    table = rdbench("results", "--db", str(primes_runs.db))
    assert table.returncode == 0, table.stderr
    for g in (oracle, nop):  # each row with its geomean and CI as the table prints them
        assert f"{g['geomean']:.2f}x [{g['geomean_ci_low']:.2f}, {g['geomean_ci_high']:.2f}]" in table.stdout
    print(table.stdout)


@pytest.mark.docker
def test_import_rebuilds_the_same_index_and_never_duplicates(primes_runs, tmp_path):
    db = tmp_path / "rebuilt.db"
    before = results_json("--db", str(primes_runs.db))
    for _ in range(2):
        r = rdbench("results", "import", str(primes_runs.root), "--db", str(db))
        assert r.returncode == 0, r.stderr
        assert "indexed 4 trial(s) of 2 run(s)" in r.stdout
    assert count(db) == 4
    assert results_json("--db", str(db)) == before


def test_default_index_is_beside_the_runs_or_from_rdbench_db(tmp_path):
    tasks = tmp_path / "tasks"
    task = task_folder(tasks, "synthetic", "speedup", 10.0, 1.0)
    write_run(tmp_path / "runs", "r1", task, "oracle", None, [speedup(9.0)])
    r = rdbench("results", "import", str(tmp_path / "runs"))
    assert r.returncode == 0, r.stderr
    assert count(tmp_path / "runs" / "results.db") == 1
    elsewhere = tmp_path / "elsewhere.db"
    r = rdbench("results", "import", str(tmp_path / "runs" / "r1"), env={"RDBENCH_DB": str(elsewhere)})
    assert r.returncode == 0 and count(elsewhere) == 1
    r = rdbench("results", "--format", "csv", env={"RDBENCH_DB": str(elsewhere)})
    (row,) = list(csv.DictReader(io.StringIO(r.stdout)))
    assert row["task"] == "synthetic" and float(row["geomean"]) == pytest.approx(9.0)
    r = rdbench("results", "--db", str(tmp_path / "none.db"))
    assert r.returncode == 2 and "no results index yet" in r.stderr


def test_a_resumed_trial_replaces_its_row(tmp_path):
    task = task_folder(tmp_path / "tasks", "synthetic", "speedup", 10.0, 1.0)
    run = write_run(tmp_path / "runs", "r1", task, "oracle", None, [INFRA, speedup(5.0)])
    store = Store(tmp_path / "index.db", tasks=task_scoring)
    store.index_run(run)
    assert [r.verdict for r in store.rows()] == ["infra error", "correct"]
    p = run / "trials" / "synthetic__oracle__0" / "trial.json"
    t = TrialResult.model_validate_json(p.read_text())
    resumed = t.model_dump(exclude={"verification"}) | {"error_class": None, "error": None, **speedup(7.0)}
    p.write_text(TrialResult.model_validate(resumed).model_dump_json())
    store.import_runs(tmp_path / "runs")
    assert [(r.verdict, r.value) for r in store.rows()] == [("correct", 7.0), ("correct", 5.0)]


def test_a_trial_being_written_and_a_foreign_folder_are_skipped(tmp_path):
    task = task_folder(tmp_path / "tasks", "synthetic", "speedup", 10.0, 1.0)
    run = write_run(tmp_path / "runs", "r1", task, "nop", None, [FAILED, speedup(1.0)])
    (run / "trials" / "synthetic__nop__2").mkdir()
    (run / "trials" / "synthetic__nop__2" / "trial.json").write_text('{"task": "synth')  # torn
    (tmp_path / "runs" / "junk").mkdir()
    (tmp_path / "runs" / "junk" / "run.json").write_text("not json")
    report = Store(tmp_path / "i.db", tasks=task_scoring).import_runs(tmp_path / "runs")
    assert (report.runs, report.trials) == (1, 2) and "junk" in report.skipped[0]


def test_score_trials_are_normalised_with_the_tasks_base_and_reference(tmp_path):
    task = task_folder(tmp_path / "tasks", "post", "score", 0.5, 0.1)
    run = write_run(tmp_path / "runs", "r1", task, "react", "openai/gpt-5",
                    [{"correct": True, "metric": "accuracy", "value": 0.3}, {"correct": False, "metric": "accuracy"}])
    store = Store(tmp_path / "i.db", tasks=task_scoring)
    store.index_run(run)
    (a, b) = store.rows()
    assert (a.kind, b.kind, b.normalised) == ("score", "score", None) and a.normalised == pytest.approx(0.5)
