"""The verdict table printed at the end of a run."""

from __future__ import annotations

from rich.table import Table

from harness.models import TrialResult

VERDICT_STYLE = {"correct": "green", "failed": "yellow", "infra error": "red"}


def fmt_value(r: TrialResult) -> str:
    if r.value is None:
        return "-"
    unit = "x" if r.metric == "speedup" else ""
    ci = f" [{r.ci[0]:.2f}, {r.ci[1]:.2f}]" if r.ci else ""
    return f"{r.value:.2f}{unit}{ci}"


def summary_table(results: list[TrialResult], title: str) -> Table:
    table = Table(title=title)
    for col in ("task", "agent", "model", "#", "verdict", "value [95% CI]", "A/A noise", "time", "note"):
        table.add_column(col, overflow="fold")
    for r in sorted(results, key=lambda r: (r.task, r.agent, r.trial)):
        note = r.error or r.flagged or r.stop_reason or ""
        table.add_row(r.task, r.agent, r.model or "-", str(r.trial),
                      f"[{VERDICT_STYLE[r.verdict]}]{r.verdict}[/]", fmt_value(r),
                      f"{r.aa_noise:.1%}" if r.aa_noise is not None else "-",
                      f"{sum(r.phases.values()):.1f}s", note[:100])
    return table
