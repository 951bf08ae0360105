"""`rdbench trends`: points by release date with CIs, the published line, score panels."""

from __future__ import annotations

from datetime import date

import pytest

from results.aggregate import aggregate
from results.registry import load_models
from harness.task import task_scoring
from results.store import Store
from results.trends import PUBLISHED, figure
from tests.conftest import rdbench
from tests.results.synth import FAILED, speedup, task_folder, write_run

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def indexed(tmp_path):
    """cpu-lm-train runs of three dated models and the oracle; a score task's runs."""
    lm = task_folder(tmp_path / "tasks", "cpu-lm-train", "speedup", 18.0, 1.0)
    post = task_folder(tmp_path / "tasks", "posttrain-arith", "score", 0.5, 0.1)
    runs = tmp_path / "runs"
    write_run(runs, "a", lm, "react", "anthropic/claude-opus-4-0", [speedup(2.5), speedup(3.4), FAILED])
    write_run(runs, "b", lm, "react", "anthropic/claude-opus-4-5", [speedup(14.0), speedup(19.0)])
    write_run(runs, "c", lm, "react", "openai/gpt-5", [speedup(8.0), speedup(6.0)])
    write_run(runs, "d", lm, "oracle", None, [speedup(18.0)])
    write_run(runs, "e", lm, "react", "openai-compatible/undated", [speedup(3.0)])
    write_run(runs, "f", post, "react", "anthropic/claude-opus-4-6", [{"correct": True, "metric": "acc", "value": 0.3}])
    store = Store(runs / "results.db", tasks=task_scoring)
    store.import_runs(runs)
    return store


def test_speedup_panel_points_cis_and_published_line(indexed):
    registry = load_models()
    groups = aggregate(indexed.rows(), registry)
    fig, notes = figure(groups, registry, ["cpu-lm-train"])
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    containers = ax.containers  # one errorbar per dated model
    assert len(containers) == 3
    points = sorted((c.lines[0].get_xdata()[0], round(c.lines[0].get_ydata()[0], 6)) for c in containers)
    by_label = {g.label: g for g in groups}
    assert points == sorted([(date(2025, 5, 22), round(by_label["Claude Opus 4"].geomean.value, 6)),
                             (date(2025, 8, 7), round(by_label["GPT-5"].geomean.value, 6)),
                             (date(2025, 11, 24), round(by_label["Claude Opus 4.5"].geomean.value, 6))])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "published (system cards)" in labels
    published = next(line for line in ax.get_lines() if line.get_label() == "published (system cards)")
    assert list(published.get_ydata()) == [2.9, 16.5, 30.0, 52.0] == [y for _, y in PUBLISHED["cpu-lm-train"]["points"]]
    assert any(t.startswith("oracle: 18.00x (no release date") for t in labels)  # a line, and its CI a band
    assert any("undated" in n and "no release date" in n for n in notes)


@pytest.mark.slow
def test_cli_writes_png_and_svg_with_a_score_panel(indexed, tmp_path):
    png = tmp_path / "trends.png"
    r = rdbench("trends", "--out", str(png), "--db", str(indexed.path))
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 20_000
    svg = tmp_path / "lm.svg"
    r = rdbench("trends", "--task", "posttrain-arith", "--out", str(svg), "--db", str(indexed.path))
    assert r.returncode == 0, r.stderr
    text = svg.read_text()
    assert "normalised score" in text and "Claude Opus 4.6" in text and "published" not in text
    r = rdbench("trends", "--task", "cpu-lm-train", "--stat", "mean", "--out", str(svg), "--db", str(indexed.path))
    text = svg.read_text()
    assert "published (system cards)" in text and "52x" in text and "Claude Opus 4.5" in text and "mean speedup" in text


def test_published_line_alone_without_trials_and_bad_options(tmp_path):
    out = tmp_path / "p.png"
    r = rdbench("trends", "--task", "cpu-lm-train", "--out", str(out), "--db", str(tmp_path / "none.db"))
    assert r.returncode == 0 and out.read_bytes()[:8] == PNG
    r = rdbench("trends", "--out", str(tmp_path / "x.jpg"))
    assert r.returncode == 2 and ".png or .svg" in r.stderr
