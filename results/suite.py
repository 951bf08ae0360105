"""fast_p over a suite of tasks (KernelBench's measure), per model (the suite's task names: harness.task.task_names): `rdbench results --suite DIR --p ...`.

fast_p = the share of the suite's problems that are correct AND faster than p x the PyTorch
baseline (KernelBench: `fastp` in src/kernelbench/score.py). Over a suite folder (the `--out`
folder of `rdbench tasks import kernelbench`, or any folder of task folders):

- the denominator is every problem of the suite, attempted or not: a problem with no scored
  trial for a model (never run, or only infrastructure errors, which are retried, never
  zeros) counts as not fast, and the row says how many there were ("not attempted");
- a problem with several trials counts the share of its trials that are fast (the expected
  fast_p of one attempt per problem; one trial each is KernelBench's figure);
- a trial counts only with a measured speedup: a correct verdict without a value (no GPU:
  speedup unavailable; or the unchanged starting point, which is the PyTorch Model itself)
  is never fast. When no trial of a model has a measured speedup (a CPU-only machine),
  fast_p is unavailable ("-") and only the share of correct Triton solutions is shown
  (`correct`: correct trials, not counting unchanged starting points, the same way).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .aggregate import label
from .registry import ModelInfo
from .store import TrialRow


@dataclass
class SuiteRow:
    label: str
    problems: int
    attempted: int
    correct: float
    fast: dict[float, float | None] = field(default_factory=dict)

    def flat(self) -> dict:
        return {"model/agent": self.label, "problems": self.problems, "attempted": self.attempted,
                "correct": self.correct, **{f"fast_{p:g}": v for p, v in self.fast.items()}}


def suite_fast_p(rows: list[TrialRow], tasks: list[str], ps: list[float],
                 registry: dict[str, ModelInfo] | None = None) -> list[SuiteRow]:
    """One SuiteRow per (agent, model, settings) that ran any of `tasks`, sorted by label."""
    wanted = set(tasks)
    by: dict[tuple, dict[str, list[TrialRow]]] = {}
    for r in rows:
        if r.task in wanted and r.error_class != "infra":
            by.setdefault((r.agent, r.model, r.settings), {}).setdefault(r.task, []).append(r)
    out = []
    for (agent, model, settings), per_task in by.items():
        n = len(tasks)
        measured = any(r.correct and r.value is not None for rs in per_task.values() for r in rs)
        correct = sum(sum(r.correct and not r.unchanged for r in rs) / len(rs) for rs in per_task.values()) / n
        fast = {p: (sum(sum(r.correct and r.value is not None and r.value > p for r in rs) / len(rs)
                        for rs in per_task.values()) / n if measured else None) for p in ps}
        out.append(SuiteRow(label(agent, model, registry or {}, settings), n, len(per_task), correct, fast))
    return sorted(out, key=lambda s: s.label)


def suite_table_rows(rows: list[SuiteRow]) -> tuple[list[str], list[list[str]]]:
    """Column names and cells for a table of suite rows."""
    ps = list(rows[0].fast) if rows else []
    cols = ["model/agent", "problems", "attempted", "correct"] + [f"fast_{p:g}" for p in ps]
    cells = [[s.label, str(s.problems), f"{s.attempted} ({s.problems - s.attempted} not attempted)", f"{s.correct:.0%}"]
             + [f"{v:.0%}" if v is not None else "- (no speedups measured)" for v in s.fast.values()] for s in rows]
    return cols, cells
