"""Aggregation by metric: speedups (geometric and arithmetic mean with bootstrap CIs,
fast_p), normalised scores, failures and infrastructure errors; the results table."""

from __future__ import annotations

import math

import pytest
from rich.console import Console

from results.aggregate import aggregate, bootstrap, geomean, mean, order
from results.registry import load_models
from harness.task import task_scoring
from results.store import Store
from results.summary import groups_table
from tests.results.synth import FAILED, INFRA, speedup, task_folder, write_run


def rows_of(tmp_path, runs):
    """Index synthetic runs [(task kind, agent, model, trials)] and return the rows."""
    tasks = {"speedup": task_folder(tmp_path / "tasks", "kern", "speedup", 3.0, 1.0),
             "score": task_folder(tmp_path / "tasks", "post", "score", 0.6, 0.2)}
    store = Store(tmp_path / "i.db", tasks=task_scoring)
    for i, (kind, agent, model, trials) in enumerate(runs):
        store.index_run(write_run(tmp_path / "runs", f"r{i}", tasks[kind], agent, model, trials))
    return store.rows()


def test_speedups_failures_count_1x_in_the_geomean_0_in_the_mean_and_infra_not_at_all(tmp_path):
    (g,) = aggregate(rows_of(tmp_path, [("speedup", "react", "anthropic/claude-opus-4-5",
                                          [speedup(4.0), speedup(0.5), FAILED, INFRA])]), load_models())
    assert (g.trials, g.infra, g.correct, g.success_rate) == (3, 1, 2, pytest.approx(2 / 3))
    assert g.geomean.value == pytest.approx(geomean([4.0, 0.5, 1.0])) == pytest.approx(math.exp(math.log(2) / 3))
    assert g.mean.value == pytest.approx(4.5 / 3)
    assert g.fast_p == pytest.approx(1 / 3)  # correct AND faster than 1x: only the 4x trial
    assert g.label == "Claude Opus 4.5" and g.best == 4.0
    for est in (g.geomean, g.mean):
        assert est.ci[0] <= est.value <= est.ci[1] and est.ci[0] < est.ci[1]


def test_fast_p_threshold(tmp_path):
    rows = rows_of(tmp_path, [("speedup", "oracle", None, [speedup(1.2), speedup(2.5), speedup(0.9), FAILED])])
    assert [aggregate(rows, p=p)[0].fast_p for p in (0.0, 1.0, 2.0, 3.0)] == [0.75, 0.5, 0.25, 0.0]


def test_a_single_trial_has_the_width_of_its_timing_noise(tmp_path):
    quiet = aggregate(rows_of(tmp_path / "a", [("speedup", "oracle", None, [speedup(8.0, spread=0.01)])]))[0]
    noisy = aggregate(rows_of(tmp_path / "b", [("speedup", "oracle", None, [speedup(8.0, spread=0.2)])]))[0]
    assert quiet.geomean.ci[0] < 8.0 < quiet.geomean.ci[1]
    width = lambda g: g.geomean.ci[1] - g.geomean.ci[0]  # noqa: E731
    assert width(noisy) > 5 * width(quiet)


def test_bootstrap_is_deterministic_and_its_ci_narrows_with_more_trials():
    few = [1.0, 3.0, 2.0, 5.0]
    assert bootstrap(few, mean) == bootstrap(few, mean)
    a, b = bootstrap(few, mean), bootstrap(few * 25, mean)
    assert a.value == b.value and (b.ci[1] - b.ci[0]) < (a.ci[1] - a.ci[0]) / 3


def test_score_tasks_mean_normalised_score_failures_zero(tmp_path):
    rows = rows_of(tmp_path, [("score", "react", "openai/gpt-5",
                               [{"correct": True, "metric": "accuracy", "value": 0.6},
                                {"correct": True, "metric": "accuracy", "value": 0.4}, {"correct": False}])])
    (g,) = aggregate(rows, load_models())
    assert g.kind == "score" and g.geomean is None and g.fast_p is None
    assert g.score.value == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert g.score.ci[0] <= g.score.value <= g.score.ci[1]


def test_tokens_cost_and_unknown_cost(tmp_path):
    rows = rows_of(tmp_path, [
        ("speedup", "react", "anthropic/claude-haiku-4-5",
         [speedup(2.0, input_tokens=1000, output_tokens=100, cost_usd=0.0015),
          speedup(3.0, input_tokens=3000, output_tokens=300, cost_usd=0.0045)]),
        ("speedup", "react", "openai-compatible/local", [speedup(2.0, input_tokens=10, cost_usd=None)])])
    haiku, local = sorted(aggregate(rows, load_models()), key=lambda g: g.label)
    assert haiku.label == "Claude Haiku 4.5" and haiku.tokens_per_trial == 2200 and haiku.cost_usd == 0.006
    assert local.cost_usd is None and haiku.time_s == 15.0


def table_text(groups, by="task") -> str:
    console = Console(record=True, width=250)
    console.print(groups_table(groups, "t", by))
    return console.export_text()


def test_table_by_task_or_model_and_only_the_figures_some_row_has(tmp_path):
    rows = rows_of(tmp_path, [("speedup", "react", "openai/gpt-5", [speedup(2.0)]),
                              ("score", "react", "openai/gpt-5", [{"correct": True, "metric": "acc", "value": 0.4}]),
                              ("speedup", "oracle", None, [speedup(3.0)])])
    groups = aggregate(rows, load_models())
    text = table_text(order(groups, "task"))
    assert "geomean [95% CI]" in text and "score [95% CI]" in text and "fast_p (p=1)" in text
    assert text.index("kern") < text.index("post")
    by_model = table_text(order(groups, "model"), "model")
    assert by_model.index("model/agent") < by_model.index("task")
    assert by_model.index("GPT-5") < by_model.index("oracle")
    only_speedups = table_text([g for g in groups if g.kind == "speedup"])
    assert "score [95% CI]" not in only_speedups and "tokens" not in only_speedups


def test_geomean_and_mean():
    assert geomean([2.0, 8.0]) == pytest.approx(4.0) and mean([1.0, 2.0]) == 1.5


def test_kernel_trials_without_a_gpu_count_as_correct_but_have_no_speedup(tmp_path):
    unavailable = {"correct": True, "metric": "speedup", "value": None, "details": {"unavailable": "no GPU"}}
    rows = rows_of(tmp_path, [("speedup", "oracle", None, [unavailable, unavailable, FAILED])])
    (g,) = aggregate(rows)
    assert (g.correct, g.trials) == (2, 3) and g.geomean is None and g.mean is None and g.fast_p is None
    rows = rows_of(tmp_path / "mixed", [("speedup", "oracle", None, [unavailable, speedup(2.0), FAILED])])
    (g,) = aggregate(rows)
    assert g.geomean.value == pytest.approx(2.0 ** 0.5) and g.fast_p == 0.5  # over the two trials with a speedup


def test_two_settings_of_one_model_are_two_rows(tmp_path):
    rows = rows_of(tmp_path, [
        ("speedup", "react", "anthropic/claude-opus-4-5", [speedup(2.0, model_settings={"thinking_budget": 8000})]),
        ("speedup", "react", "anthropic/claude-opus-4-5", [speedup(3.0, model_settings={"thinking_budget": 8000}),
                                                           speedup(5.0)]),
        ("speedup", "react", "anthropic/claude-opus-4-5",
         [speedup(4.0, model_settings={"temperature": 0.2, "thinking_budget": 1024})])])
    groups = {g.label: g for g in aggregate(rows, load_models())}
    assert sorted(groups) == ["Claude Opus 4.5", "Claude Opus 4.5 (temperature=0.2, thinking_budget=1024)",
                              "Claude Opus 4.5 (thinking_budget=8000)"]
    assert groups["Claude Opus 4.5 (thinking_budget=8000)"].trials == 2
    assert groups["Claude Opus 4.5"].geomean.value == pytest.approx(5.0)
    assert "thinking_budget=8000" in table_text(list(groups.values()))
