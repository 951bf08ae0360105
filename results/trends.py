"""Trend plots: a task's speedup (log axis) or normalised score against model release date,
one point per model with its 95 % CI, beside the published reference figures.

Agents without a model (oracle, nop) and models without a release date in models.toml
have no place on a date axis: they are drawn as labelled horizontal lines.
"""

from __future__ import annotations

import io
from datetime import date, timedelta
from pathlib import Path

from .aggregate import Estimate, Group
from .registry import ModelInfo, registry_id

#: published average speedups of the CPU small-LM training task (model system cards); the
#: month is known, not the day: drawn mid-month
PUBLISHED = {
    "cpu-lm-train": {
        "label": "published (system cards)",
        "points": [(date(2025, 5, 15), 2.9), (date(2025, 11, 15), 16.5), (date(2026, 2, 15), 30.0),
                   (date(2026, 4, 15), 52.0)],
        "human": (4.0, "skilled human, 4-8 h (published)"),
    },
}
COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive"]


def _estimate(g: Group, stat: str) -> Estimate | None:
    if g.kind == "score":
        return g.score
    return g.geomean if stat == "geomean" else g.mean


def _panel(ax, task: str, groups: list[Group], registry: dict[str, ModelInfo], stat: str, notes: list[str]) -> None:
    published = PUBLISHED.get(task)
    kind = next((g.kind for g in groups if g.kind), "speedup" if published else None)
    speedup = kind != "score"
    what = ("geometric-mean" if stat == "geomean" else "mean") + " speedup" if speedup else "normalised score"
    dates, ys = [], []
    lines = 0
    for g in groups:
        e = _estimate(g, stat)
        if e is None or (speedup and e.value <= 0):
            notes.append(f"{task}: {g.label}: no {what} to plot")
            continue
        info = registry.get(registry_id(g.model)) if g.model else None
        if info is None or info.released is None:
            if g.model:
                notes.append(f"{task}: {g.label}: no release date in models.toml; drawn as a line")
            color = COLORS[(lines + 3) % len(COLORS)]
            ax.axhline(e.value, color=color, linestyle=":", linewidth=1.4,
                       label=f"{g.label}: {e.value:.2f}{'x' if speedup else ''} (no release date; band: 95% CI)")
            ax.axhspan(e.ci[0], e.ci[1], color=color, alpha=0.08, linewidth=0)
            ys.extend([e.value, *e.ci])
            lines += 1
            continue
        lo, hi = e.ci
        ys.extend([lo, hi, e.value])
        ax.errorbar([info.released], [e.value], yerr=[[max(e.value - lo, 0)], [max(hi - e.value, 0)]], fmt="o",
                    color="tab:blue", ecolor="tab:blue", capsize=4, markersize=7,
                    label="models (rdbench, 95% CI)" if not dates else None)
        ax.annotate(f"{g.label}\n{e.value:.2f}{'x' if speedup else ''}", (info.released, e.value),
                    textcoords="offset points", xytext=(8, -4), fontsize=8)
        dates.append(info.released)
    if published and speedup:
        xs, ys_pub = zip(*published["points"])
        ax.plot(xs, ys_pub, "s--", color="black", markersize=6, linewidth=1.2, label=published["label"])
        for x, y in published["points"]:
            ax.annotate(f"{y:g}x", (x, y), textcoords="offset points", xytext=(-10, 8), fontsize=8)
        value, text = published["human"]
        ax.axhline(value, color="grey", linestyle="--", linewidth=1, label=f"{text}: {value:g}x")
        dates.extend(xs)
        ys.extend([*ys_pub, value])
    if speedup:
        from matplotlib.ticker import FuncFormatter, LogLocator

        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.axhline(1.0, color="lightgrey", linewidth=1)
        positive = [y for y in ys if y > 0] + [1.0]
        ax.set_ylim(min(positive) / 1.6, max(positive) * 1.8)  # room for labels and the legend
    else:
        ax.axhline(0.0, color="lightgrey", linewidth=1)
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="reference (1.0)")
    lo, hi = (min(dates), max(dates)) if dates else (date(2025, 1, 1), date(2026, 6, 30))
    ax.set_xlim(lo - timedelta(days=45), hi + timedelta(days=75))
    ax.set_title(f"{task}: {what} by model release date")
    ax.set_xlabel("model release date")
    ax.set_ylabel(f"{what} (log scale)" if speedup else what)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left")
    if not groups:
        ax.text(0.98, 0.04, "no rdbench trials indexed for this task", transform=ax.transAxes, ha="right",
                fontsize=8, color="grey")


def figure(groups: list[Group], registry: dict[str, ModelInfo], tasks: list[str] | None = None,
           stat: str = "geomean"):
    """The matplotlib Figure (no pyplot: no global state) and notes on what was left out."""
    from matplotlib import dates as mdates
    from matplotlib.figure import Figure

    tasks = tasks or sorted({g.task for g in groups}) or sorted(PUBLISHED)
    fig = Figure(figsize=(9, 4.8 * len(tasks)), layout="constrained")
    notes: list[str] = []
    for i, task in enumerate(tasks):
        ax = fig.add_subplot(len(tasks), 1, i + 1)
        _panel(ax, task, [g for g in groups if g.task == task], registry, stat, notes)
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    return fig, notes


def plot_trends(groups: list[Group], registry: dict[str, ModelInfo], out: Path, tasks: list[str] | None = None,
                stat: str = "geomean") -> list[str]:
    """Write the plot to `out` (.png or .svg); returns notes on what was left out."""
    from matplotlib import rc_context

    fig, notes = figure(groups, registry, tasks, stat)
    out.parent.mkdir(parents=True, exist_ok=True)
    with rc_context({"svg.fonttype": "none"}):  # SVG text stays text: searchable, selectable
        fig.savefig(out, dpi=110)
    return notes


def png_bytes(groups: list[Group], registry: dict[str, ModelInfo], tasks: list[str] | None = None) -> bytes:
    fig, _ = figure(groups, registry, tasks)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()
