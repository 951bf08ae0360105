"""The records below everything: run.json keeps its flat layout (old files still load), the
agent spec travels whole and parses its model once, and trial.json carries what the index
needs, so `results import` works without the task folders."""

from __future__ import annotations

import json

import pytest

from results import registry
from results.records import AgentSpec, RunConfig, TrialResult
from results.store import Store
from tests.results.synth import write_run


def test_run_json_stays_flat_and_older_files_load():
    old = {"run_id": "r", "tasks": ["t"], "agent": "react", "model": "anthropic/x", "trials": 2,
           "limits": {"max_turns": 3}, "created_at": "2026-01-01T00:00:00+00:00"}
    config = RunConfig.model_validate(old)
    assert config.agent.name == "react" and config.agent.limits.max_turns == 3 and config.trials == 2
    dumped = json.loads(config.model_dump_json())
    assert dumped["agent"] == "react" and dumped["model"] == "anthropic/x" and dumped["limits"] == {"max_turns": 3}
    assert RunConfig.model_validate(dumped) == config


def test_the_agent_spec_parses_its_model_once(monkeypatch):
    calls = []
    parse = registry.ModelSpec.parse.__func__
    monkeypatch.setattr(registry.ModelSpec, "parse", classmethod(lambda cls, *a: calls.append(a) or parse(cls, *a)))
    spec = AgentSpec(name="react", model="anthropic/claude-haiku-4-5")
    config = RunConfig(run_id="r", tasks=[], agent=spec)
    assert config.agent is spec
    assert spec.model_spec.name == "claude-haiku-4-5" and config.agent.model_spec is spec.model_spec
    assert len(calls) == 1
    with pytest.raises(ValueError, match="PROVIDER/NAME"):
        AgentSpec(name="react", model="nonsense").model_spec


def test_import_needs_no_task_folder_when_trial_json_carries_the_scoring(tmp_path):
    gone = tmp_path / "tasks" / "post"  # never created: the run's task folder is not here
    fields = {"kind": "score", "score_base": 0.1, "score_reference": 0.5}
    run = write_run(tmp_path / "runs", "r1", gone, "react", "openai/gpt-5",
                    [{"correct": True, "metric": "accuracy", "value": 0.3, **fields}])
    store = Store(tmp_path / "i.db")
    assert store.index_run(run) == 1
    (row,) = store.rows()
    assert row.kind == "score" and row.normalised == pytest.approx(0.5)


def test_an_older_trial_json_without_the_task_fields_still_loads():
    r = TrialResult.model_validate({"task": "t", "agent": "nop", "trial": 0, "run_id": "r", "correct": True,
                                    "metric": "speedup", "value": 1.0})
    assert r.kind is None and r.score_base is None and r.trial_id == "t__nop__0"


FLAT = {"task": "t", "agent": "react", "model": "openai/gpt-5", "trial": 0, "run_id": "r", "kind": "speedup",
        "correct": True, "metric": "speedup", "value": 3.0, "ci": [2.5, 3.5], "baseline_s": [1.0, 1.1],
        "candidate_s": [0.3, 0.4], "aa_noise": 0.02, "flagged": None, "input_tokens": 1200, "output_tokens": 80,
        "cost_usd": 0.01, "elisions": 2, "phases": {"agent": 10.0, "verify": 5.0},
        "details": {"repeats": 2, "verify_gpus": [0]}}


def test_an_older_flat_trial_json_reads_as_the_nested_record():
    """The flat trial.json of earlier versions (the verdict's and usage's keys copied to the top)
    reads into the one record: the verdict nested, the usage nested, the trial's own details apart."""
    r = TrialResult.model_validate(FLAT)
    assert r.verification.correct and r.verification.value == 3.0 and r.verification.details == {"repeats": 2}
    assert (r.correct, r.value, r.ci, r.aa_noise, r.baseline_s) == (True, 3.0, [2.5, 3.5], 0.02, [1.0, 1.1])
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.elisions) == (1200, 80, 2)
    assert r.details == {"verify_gpus": [0]}
    written = json.loads(r.model_dump_json())
    assert "value" not in written and "input_tokens" not in written  # nothing stored twice
    assert TrialResult.model_validate(written) == r


def test_the_outcome_is_read_through_the_verdict_never_copied():
    ok = TrialResult.model_validate(FLAT)
    assert ok.model_copy(update={"error_class": "infra"}).value is None  # an infra fault is never a score
    assert ok.model_copy(update={"error_class": "infra"}).correct is None
    failed = ok.model_copy(update={"verification": ok.verification.model_copy(update={"correct": False})})
    assert (failed.correct, failed.value, failed.ci) == (False, None, None)
    agent_error = TrialResult(task="t", agent="react", trial=0, run_id="r", error_class="agent", error="budget")
    assert (agent_error.correct, agent_error.value, agent_error.metric, agent_error.verdict) == (False, None, None,
                                                                                                  "failed")


def test_an_index_of_the_older_schema_is_rebuilt_from_its_run_folders(tmp_path):
    """A results.db written by schema 1 (flat columns) is rebuilt on first open: its rows
    come back from the run folders it names, in the new columns, nothing lost."""
    import sqlite3

    run = write_run(tmp_path / "runs", "r1", tmp_path / "tasks" / "t", "react", "openai/gpt-5",
                    [{k: v for k, v in FLAT.items() if k not in ("task", "agent", "model", "trial", "run_id", "phases")}])
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:  # what version 1 left: other columns, and the run's folder
        conn.executescript("CREATE TABLE runs (run_id TEXT PRIMARY KEY, run_dir TEXT NOT NULL, agent TEXT, "
                           "model TEXT, created_at TEXT, config TEXT NOT NULL);"
                           "CREATE TABLE trials (run_id TEXT, task TEXT, agent TEXT, trial INTEGER, ci_low REAL, "
                           "result TEXT NOT NULL, PRIMARY KEY (run_id, task, agent, trial));"
                           "PRAGMA user_version = 1;")
        conn.execute("INSERT INTO runs VALUES ('r1', ?, 'react', 'openai/gpt-5', '', '{}')", (str(run),))
        broken = tmp_path / "runs" / "broken"  # a folder it named whose run.json is no longer a run's
        broken.mkdir()
        (broken / "run.json").write_text("[1, 2]")
        conn.execute("INSERT INTO runs VALUES ('r2', ?, 'nop', NULL, '', '{}')", (str(broken),))
        conn.execute("INSERT INTO runs VALUES ('r3', ?, 'nop', NULL, '', '{}')", (str(tmp_path / "gone"),))
        conn.execute("INSERT INTO trials VALUES ('r1', 't', 'react', 0, 2.5, '{}')")
    (row,) = Store(db).rows()
    assert (row.value, row.ci, row.input_tokens, row.cost_usd, row.verdict) == (3.0, [2.5, 3.5], 1200, 0.01, "correct")
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
