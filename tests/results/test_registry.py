"""models.toml: the model registry that prices, tables and trend plots read."""

from __future__ import annotations

from datetime import date

import pytest

from results.registry import MODELS_TOML, ModelSpec, load_models
from tests.conftest import rdbench


def test_every_entry_is_complete_and_prices_reach_the_agents():
    models = load_models()
    assert MODELS_TOML.name == "models.toml" and len(models) >= 8
    for m in models.values():
        assert m.name and isinstance(m.released, date) and m.input_usd_per_mtok is not None, m
        assert m.output_usd_per_mtok >= m.input_usd_per_mtok
    assert ModelSpec.parse("anthropic/claude-haiku-4-5").price() == (1.0, 5.0)
    assert ModelSpec.parse("openai-responses/gpt-5").price() == ModelSpec.parse("openai/gpt-5").price() == (1.25, 10.0)
    assert ModelSpec.parse("anthropic/claude-unknown").price() is None


def test_a_malformed_registry_is_one_clear_error(tmp_path, monkeypatch):
    bad = tmp_path / "models.toml"
    bad.write_text('[[model]]\nprovider = "x"\nmodel = "y"\nreleased = "soon"\n')
    monkeypatch.setenv("RDBENCH_MODELS", str(bad))
    with pytest.raises(ValueError, match="model entry 1"):
        load_models()
    r = rdbench("trends", "--out", str(tmp_path / "t.png"), "--db", str(tmp_path / "none.db"))
    assert r.returncode == 2 and str(bad) in r.stderr and "Traceback" not in r.stderr
