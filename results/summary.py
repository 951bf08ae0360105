"""The verdict table printed at the end of a run."""

from __future__ import annotations

from rich import box
from rich.table import Table

from .aggregate import COLUMNS, Group, table_cells
from .records import TrialResult

VERDICT_STYLE = {"correct": "green", "failed": "yellow", "infra error": "red"}


def fmt_value(r: TrialResult) -> str:
    if r.value is None:
        return "n/a" if r.correct and r.verifier_details.get("unavailable") else "-"
    unit = "x" if r.metric == "speedup" else ""
    ci = f" [{r.ci[0]:.2f}, {r.ci[1]:.2f}]" if r.ci else ""
    return f"{r.value:.2f}{unit}{ci}"


def summary_table(results: list[TrialResult], title: str) -> Table:
    table = Table(title=title)
    for col in ("task", "agent", "model", "#", "verdict", "value [95% CI]", "A/A noise", "time", "note"):
        table.add_column(col, overflow="fold")
    for r in sorted(results, key=lambda r: (r.task, r.agent, r.trial)):
        note = r.error or r.flagged or r.verifier_details.get("unavailable") or r.stop_reason or ""
        table.add_row(r.task, r.agent, r.model or "-", str(r.trial),
                      f"[{VERDICT_STYLE[r.verdict]}]{r.verdict}[/]", fmt_value(r),
                      f"{r.aa_noise:.1%}" if r.aa_noise is not None else "-",
                      f"{sum(r.phases.values()):.1f}s", note[:100])
    return table


OPTIONAL = ("geomean [95% CI]", "mean [95% CI]", "fast_p", "score [95% CI]", "tokens")


def groups_table(groups: list[Group], title: str | None = None, by: str = "task") -> Table:
    """Per task x model figures (`rdbench results`); a figure no row has is left out, and
    --by model puts the model column first."""
    table = Table(title=title, box=box.SIMPLE_HEAD)
    rows = [table_cells(g) for g in groups]
    keep = [i for i, col in enumerate(COLUMNS) if col not in OPTIONAL or any(r[i] != "-" for r in rows)]
    if by == "model":
        keep[:2] = keep[1::-1]
    for i in keep:
        col = COLUMNS[i]
        text = col in ("task", "model/agent")
        widest = max((len(r[i]) for r in rows), default=0)
        header = f"fast_p (p={groups[0].p:g})" if col == "fast_p" and groups else col
        table.add_column(header, overflow="fold", justify="left" if text else "right", no_wrap=not text,
                         min_width=min(widest, 32) if text else None)
    for r in rows:
        table.add_row(*(r[i] for i in keep))
    return table
