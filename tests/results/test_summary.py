"""The run summary table."""

from __future__ import annotations

from rich.console import Console

from results.records import TrialResult
from results.summary import fmt_value, summary_table


def render(results):
    console = Console(record=True, width=200)
    console.print(summary_table(results, "run x"))
    return console.export_text()


def test_table_shows_each_verdict_and_value():
    ok = TrialResult(task="t", agent="oracle", trial=0, run_id="r", correct=True, metric="speedup", value=12.5,
                     ci=[11.0, 13.0], aa_noise=0.04, phases={"verify": 3.0})
    bad = TrialResult(task="t", agent="nop", trial=1, run_id="r", correct=False, metric="speedup")
    infra = TrialResult(task="t", agent="nop", trial=2, run_id="r", error_class="infra", error="Docker down")
    text = render([infra, ok, bad])
    assert "12.50x [11.00, 13.00]" in text and "4.0%" in text
    assert "failed" in text and "infra error" in text and "Docker down" in text
    assert text.index("oracle") > text.index("nop")  # sorted by task, agent, trial


def test_fmt_value_for_scores():
    r = TrialResult(task="t", agent="a", trial=0, run_id="r", correct=True, metric="accuracy", value=0.31)
    assert fmt_value(r) == "0.31"
