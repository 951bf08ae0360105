"""Synthetic run folders (run.json, trial.json) for the store, aggregation, trend and report
tests: what real runs of score and kernel tasks will write, without running them."""

from __future__ import annotations

import json
from pathlib import Path

from results.records import TrialResult


def task_folder(root: Path, name: str, kind: str, reference: float, base: float) -> Path:
    """A minimal task folder that load_task accepts (for its kind and scoring)."""
    d = root / name
    for sub in ("workspace", "verifier"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "instruction.md").write_text("do it\n")
    (d / "task.toml").write_text(f'name = "{name}"\nkind = "{kind}"\ndescription = "synthetic"\n'
                                 f"[scoring]\nreference = {reference}\nbase = {base}\n")
    return d


def write_run(runs: Path, run_id: str, task: Path, agent: str, model: str | None, trials: list[dict]) -> Path:
    """A run folder with one trial.json per entry of `trials` (TrialResult fields)."""
    d = runs / run_id
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"run_id": run_id, "tasks": [str(task)], "agent": agent, "model": model,
                                            "trials": len(trials), "created_at": "2026-11-01T00:00:00+00:00"}))
    for i, fields in enumerate(trials):
        r = TrialResult(task=task.name, agent=agent, model=model, trial=i, run_id=run_id,
                        phases={"agent": 10.0, "verify": 5.0}, **fields)
        t = d / "trials" / f"{task.name}__{agent}__{i}"
        t.mkdir(parents=True)
        (t / "trial.json").write_text(r.model_dump_json(indent=2))
    return d


def speedup(value: float, spread: float = 0.05, **extra) -> dict:
    """A correct speedup trial with timings whose medians give `value`."""
    base = [1.0, 1.0 + spread, 1.0 - spread, 1.0 + 2 * spread, 1.0 - 2 * spread]
    return {"correct": True, "metric": "speedup", "value": value, "ci": [value * 0.9, value * 1.1],
            "baseline_s": base, "candidate_s": [b / value for b in reversed(base)], **extra}


FAILED = {"correct": False, "metric": "speedup"}
INFRA = {"error_class": "infra", "error": "DockerException: down"}
