"""Per task x model figures, with bootstrap confidence intervals.

Speedup tasks: over the trials that are not infrastructure errors,
  - geometric mean: a failed trial counts as 1x (the baseline, which is what a user keeps;
    a 0 would make every geometric mean 0);
  - arithmetic mean: a failed trial counts as 0 (DESIGN.md: "value 0 for aggregation");
  - fast_p: the share of trials that are correct AND faster than p x the baseline.
Score tasks: the mean normalised score, (raw - base) / (reference - base), a failed trial 0.

The 95 % CIs are percentile bootstraps at two levels: trials are resampled, and the
speedup of each drawn trial is redrawn from its own timings (median of resampled
baseline runs / median of resampled candidate runs), so a single trial still has the
width of its measurement noise. Seeded: the same rows give the same CIs.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import statistics
from dataclasses import asdict, dataclass
from typing import Callable

from .registry import ModelInfo, registry_id
from .store import TrialRow

RESAMPLES = 2000
POOL = 200  # redraws of one trial's speedup from its timings


@dataclass
class Estimate:
    value: float
    ci: tuple[float, float]


def _timing_pool(row: TrialRow, rng: random.Random) -> list[float]:
    """Redraws of a trial's speedup from its own timings (or its value when it has none)."""
    b, c = row.baseline_s, row.candidate_s
    if not (b and c) or any(x <= 0 for x in c):
        return [row.value]
    return [statistics.median(rng.choices(b, k=len(b))) / statistics.median(rng.choices(c, k=len(c)))
            for _ in range(POOL)]


def bootstrap(values: list[float], stat: Callable[[list[float]], float], pools: list[list[float]] | None = None,
              n: int = RESAMPLES, seed: int = 0) -> Estimate:
    """`stat` of `values` with a 95 % percentile-bootstrap CI. `pools[i]`, when given, are
    redraws of value i (its measurement noise), picked from on each resample."""
    rng = random.Random(seed)
    pools = pools or [[v] for v in values]
    k = len(values)
    reps = sorted(stat([rng.choice(pools[rng.randrange(k)]) for _ in range(k)]) for _ in range(n))
    return Estimate(stat(values), (reps[int(0.025 * (n - 1))], reps[int(0.975 * (n - 1))]))


def geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(max(x, 1e-12)) for x in xs) / len(xs))


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


@dataclass
class Group:
    """The figures of one task x model (or agent, for agents without a model)."""

    task: str
    kind: str | None
    agent: str
    model: str | None
    label: str
    trials: int                 # not counting infrastructure errors
    infra: int
    correct: int
    success_rate: float | None
    geomean: Estimate | None = None
    mean: Estimate | None = None
    fast_p: float | None = None
    p: float = 1.0
    score: Estimate | None = None
    best: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0
    time_s: float = 0.0         # mean wall time of a trial
    settings: str = ""          # the model's settings (canonical JSON): part of the row's identity

    @property
    def tokens_per_trial(self) -> float:
        n = self.trials + self.infra
        return (self.input_tokens + self.output_tokens) / n if n else 0.0

    def flat(self) -> dict:
        """One flat record, for CSV and JSON."""
        d = {k: v for k, v in asdict(self).items() if k not in ("geomean", "mean", "score")}
        for name in ("geomean", "mean", "score"):
            e = getattr(self, name)
            d[name] = e.value if e else None
            d[f"{name}_ci_low"], d[f"{name}_ci_high"] = e.ci if e else (None, None)
        d["tokens_per_trial"] = self.tokens_per_trial
        return d


def settings_text(settings: str) -> str:
    """A row's model settings for its label: "thinking_budget=8000, temperature=0.2"."""
    if not settings:
        return ""
    return ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in json.loads(settings).items())


def label(agent: str, model: str | None, registry: dict[str, ModelInfo], settings: str = "") -> str:
    if model is None:
        return agent
    info = registry.get(registry_id(model))
    name = info.display if info else model
    if settings:
        name = f"{name} ({settings_text(settings)})"
    return name if agent == "react" else f"{name} [{agent}]"


def aggregate(rows: list[TrialRow], registry: dict[str, ModelInfo] | None = None, p: float = 1.0) -> list[Group]:
    """One Group per (task, agent, model, model settings), sorted by task then label."""
    registry = registry or {}
    by: dict[tuple, list[TrialRow]] = {}
    for r in rows:
        by.setdefault((r.task, r.agent, r.model, r.settings), []).append(r)
    groups = [_group(task, agent, model, rs, label(agent, model, registry, settings), p, settings)
              for (task, agent, model, settings), rs in by.items()]
    return sorted(groups, key=lambda g: (g.task, g.label))


def _group(task: str, agent: str, model: str | None, rows: list[TrialRow], name: str, p: float,
           settings: str = "") -> Group:
    scored = [r for r in rows if r.error_class != "infra"]
    kind = next((r.kind for r in rows if r.kind), None)
    costs = [r.cost_usd for r in rows]
    g = Group(task=task, kind=kind, agent=agent, model=model, label=name, trials=len(scored),
              infra=len(rows) - len(scored), correct=sum(r.correct for r in scored),
              success_rate=sum(r.correct for r in scored) / len(scored) if scored else None, p=p,
              input_tokens=sum(r.input_tokens for r in rows), output_tokens=sum(r.output_tokens for r in rows),
              cost_usd=None if any(c is None for c in costs) else round(sum(costs), 6),
              time_s=mean([r.time_s for r in rows]), settings=settings)
    seed = sum(map(ord, f"{task}/{agent}/{model}{settings}"))
    if kind == "speedup":
        # a correct trial without a value: "speedup unavailable" (a kernel task without a GPU), not a number
        speedups = [r for r in scored if not (r.correct and r.value is None)]
        unmeasured = len(speedups) < len(scored) and not any(r.correct for r in speedups)
        if speedups and not unmeasured:
            rng = random.Random(seed)
            pools = [_timing_pool(r, rng) if r.correct else None for r in speedups]
            g.geomean = bootstrap([r.value if r.correct else 1.0 for r in speedups], geomean,
                                  [pl or [1.0] for pl in pools], seed=seed)
            g.mean = bootstrap([r.value if r.correct else 0.0 for r in speedups], mean,
                               [pl or [0.0] for pl in pools], seed=seed)
            g.fast_p = sum(1 for r in speedups if r.correct and r.value > p) / len(speedups)
            g.best = max((r.value for r in speedups if r.correct), default=None)
    elif kind == "score":
        norms = [r.normalised if r.correct else 0.0 for r in scored if not (r.correct and r.normalised is None)]
        if norms:  # a correct trial of a task whose base and reference are unknown has no normalised score
            g.score = bootstrap(norms, mean, seed=seed)
        g.best = max((r.value for r in scored if r.correct and r.value is not None), default=None)
    return g


def fmt_estimate(e: Estimate | None, unit: str = "x", digits: int = 2) -> str:
    if e is None:
        return "-"
    return f"{e.value:.{digits}f}{unit} [{e.ci[0]:.{digits}f}, {e.ci[1]:.{digits}f}]"


def fmt_cost(g: Group) -> str:
    if g.cost_usd is None:
        return "unknown"
    if g.model is None and not g.cost_usd:
        return "-"
    return f"${g.cost_usd:.2f}" if g.cost_usd >= 0.995 else f"${g.cost_usd:.4f}"


COLUMNS = ("task", "model/agent", "trials", "success", "geomean [95% CI]", "mean [95% CI]", "fast_p",
           "score [95% CI]", "tokens", "cost", "time")


def table_cells(g: Group) -> list[str]:
    """The row of one Group in the text table (and the HTML report)."""
    infra = f" +{g.infra} infra" if g.infra else ""
    success = f"{g.correct}/{g.trials} {g.success_rate:.0%}" if g.success_rate is not None else "-"
    return [g.task, g.label, f"{g.trials}{infra}", success, fmt_estimate(g.geomean), fmt_estimate(g.mean),
            f"{g.fast_p:.0%}" if g.fast_p is not None else "-", fmt_estimate(g.score, ""),
            f"{g.tokens_per_trial:,.0f}" if g.tokens_per_trial else "-", fmt_cost(g), f"{g.time_s:.0f}s"]


def order(groups: list[Group], by: str) -> list[Group]:
    """--by task: task, then model; --by model: model, then task."""
    key = (lambda g: (g.label, g.task)) if by == "model" else (lambda g: (g.task, g.label))
    return sorted(groups, key=key)


def to_json(groups: list[Group]) -> str:
    return json.dumps([g.flat() for g in groups], indent=2)


def to_csv(groups: list[Group]) -> str:
    out = io.StringIO()
    rows = [g.flat() for g in groups]
    fields = list(rows[0]) if rows else list(Group.__dataclass_fields__)
    w = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return out.getvalue()
