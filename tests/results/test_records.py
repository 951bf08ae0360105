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
