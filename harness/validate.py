"""`rdbench tasks validate`: a task is valid when its oracle reaches the reference and nop stays at the base."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from results.records import AgentSpec, RunConfig, TrialResult

from .run import create_run, execute, new_run_id
from .task import TaskSpec

if TYPE_CHECKING:
    from .audit import Row


def warnings(spec: TaskSpec) -> list[str]:
    """What is valid but weakens the task's verifier."""
    out = []
    if not spec.verifier.fresh_inputs:
        out.append(f"{spec.path / 'task.toml'}: [verifier] fresh_inputs = false: every timed run gets the same "
                   "inputs, so state a run leaves behind (the page cache, a device's memory) can carry its answers "
                   "to later runs; draw inputs per pair with verify_kit.timed_pairs")
    return out


def schema_report(spec: TaskSpec) -> str:
    """`tasks validate`'s first lines: the schema is valid, and its warnings."""
    return "\n".join([f"[green]schema ok[/]: {spec.name} ({spec.kind})"] + [f"[yellow]warning:[/] {w}" for w in warnings(spec)])


def check(spec: TaskSpec, r: TrialResult) -> str | None:
    """What is wrong with an oracle or nop result, or None."""
    s = spec.scoring
    if r.correct and r.value is None and r.verifier_details.get("unavailable"):
        return None  # e.g. a GPU task's speedup on a machine without a GPU: correctness was checked
    if r.error_class is not None or not r.correct or r.value is None:
        return f"{r.agent}: {r.verdict}: {r.error or r.verifier_details.get('failure') or 'incorrect'}"
    if r.agent == "oracle":
        need = s.reference - s.tolerance * abs(s.reference - s.base) if spec.kind == "score" else s.reference * (1 - s.tolerance)
        if r.value < need:
            return f"oracle reached {r.value:.3g}, below reference {s.reference:.3g} (minus tolerance: {need:.3g})"
    else:
        span = s.base if spec.kind == "speedup" else abs(s.reference - s.base)
        if abs(r.value - s.base) > s.tolerance * span:
            return f"nop reached {r.value:.3g}, not within {s.tolerance:.0%} of the base {s.base:.3g}"
    return None


def validate_task(spec: TaskSpec, images: dict[str, str], out: Path, backend: str) -> tuple[list[str], list[TrialResult]]:
    problems, results = [], []
    for agent in ("oracle", "nop"):
        cfg = RunConfig(run_id=new_run_id(), tasks=[str(spec.path)], agent=AgentSpec(name=agent), backend=backend)
        run = create_run(cfg, out / agent, [spec])
        results += execute(run, images=images)
    for r in results:
        problem = check(spec, r)
        if problem:
            problems.append(problem)
    return problems, results


def audit(spec: TaskSpec, backend: str,
          on_row: Callable[[int, int, "Row"], None] | None = None) -> tuple[list[str], list["Row"]]:
    """`tasks validate --audit`: the escape catalogue (harness/audit.py) against the task's verifier;
    a problem for each escape that did not hold."""
    from .audit import grader, run_audit

    rows = run_audit(spec, grader(spec, backend), on_row=on_row)
    return [f"audit: {r.escape} did not hold ({r.verdict}): {r.reason}" for r in rows if not r.held], rows
