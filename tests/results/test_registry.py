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


# --- the provider registry (results/providers.py) -----------------------------------------------

import ast  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402

from results import providers  # noqa: E402
from results.providers import PROVIDERS, Provider  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent.parent
#: files allowed to name providers besides the registry (none: the wire families are
#: "messages" and "completions", not provider names)
PENDING = ()


def test_every_provider_record_is_used(monkeypatch):
    """Each record parses, has an adapter and a usage format the agent side knows, its keys and
    server variable travel to a Ray node, its form is in --model's help, and the record
    alone decides whether its key is missing."""
    from agents.llm import ADAPTERS
    from agents.wire import usage_tokens
    from harness.cli import app  # noqa: F401  (the help is built from the registry at import)
    from harness.ray_exec import forwarded_env

    for p in PROVIDERS.values():
        spec = ModelSpec.parse(f"{p.name}/m", base_url="http://127.0.0.1:9/v1")
        assert spec.record is p and p.adapter in ADAPTERS, p
        assert set(usage_tokens(p.usage, {})) >= {"input_tokens", "output_tokens"}
        assert f"{p.name}/<model>" in providers.model_help()
        for var in p.key_vars + ((p.base_url_var,) if p.base_url_var else ()):
            monkeypatch.setenv(var, "x")
            assert forwarded_env(True)[var] == "x"
            assert var not in forwarded_env(False) or var == p.base_url_var
        assert p.base_url() == "x" if p.base_url_var else True
        for var in p.key_vars:
            monkeypatch.delenv(var)
        assert p.auth() == {}
        for var in reversed(p.key_vars):  # the gateway's header to the real API: the first key set
            monkeypatch.setenv(var, f"key-{var}")
            assert f"key-{var}" in "".join(p.auth().values()), (p.name, var)
        for var in p.key_vars:
            monkeypatch.delenv(var)
        assert spec.missing_key() == (p.key_vars[0] if p.key_required else None)
        if p.key_vars:
            monkeypatch.setenv(p.key_vars[-1], "x")
            assert spec.missing_key() is None
            monkeypatch.delenv(p.key_vars[-1])


def test_a_provider_added_in_one_place_is_parsed_priced_keyed_and_called(tmp_path, monkeypatch):
    """One Provider(...) in the registry: --model parses it (and its alias), models.toml prices
    it with its own cache factors, its key is asked for, forwarded and sent by the SDK adapter
    to its server."""
    from agents.llm import make_model
    from harness import api
    from harness.ray_exec import forwarded_env
    from tests.agents.fake_api import FakeAPI, submit

    chat = PROVIDERS["openai-compatible"]  # an SDK adapter of the chat wire family
    monkeypatch.setitem(PROVIDERS, "acme", Provider(
        "acme", wire=chat.wire, usage="chat", adapter=chat.adapter, sdk=chat.sdk, key_vars=("ACME_KEY",),
        base_url_var="ACME_BASE_URL", aliases=("acme-ai",), cache_read_factor=0.5, cache_write_factor=2.0))
    models = tmp_path / "models.toml"
    models.write_text('[[model]]\nprovider = "acme"\nmodel = "m1"\nname = "Acme 1"\nreleased = 2026-01-01\n'
                      'input_usd_per_mtok = 2.0\noutput_usd_per_mtok = 8.0\n')
    monkeypatch.setenv("RDBENCH_MODELS", str(models))
    monkeypatch.delenv("ACME_KEY", raising=False)

    spec = ModelSpec.parse("acme-ai/m1")
    assert (spec.provider, spec.name) == ("acme", "m1") and spec.info().display == "Acme 1"
    assert spec.prices().cache_read == 1.0 and spec.prices().cache_write == 4.0
    assert "acme/<model>" in providers.model_help()
    with pytest.raises(api.ApiError, match="set ACME_KEY"):
        api.agent_spec(model="acme/m1")
    monkeypatch.setenv("ACME_KEY", "acme-secret")
    assert api.agent_spec(model="acme/m1").name == "react"
    assert forwarded_env(True)["ACME_KEY"] == "acme-secret" and "ACME_KEY" not in forwarded_env(False)

    with FakeAPI([submit()]) as fake:
        model = make_model(ModelSpec.parse("acme/m1", base_url=fake.url + "/v1"))
        model.start("system", "task")
        reply = model.step([])
    assert reply.tool_calls[0].name == "submit" and reply.input_tokens > 0
    assert fake.requests[0][0] == "/v1/chat/completions"
    assert fake.headers[0]["authorization"] == "Bearer acme-secret"


def test_models_toml_is_read_once_per_process(tmp_path, monkeypatch):
    from results import registry

    path = tmp_path / "models.toml"
    path.write_text('[[model]]\nprovider = "openai"\nmodel = "a"\ninput_usd_per_mtok = 1.0\n'
                    'output_usd_per_mtok = 2.0\n')
    monkeypatch.setenv("RDBENCH_MODELS", str(path))
    registry._read_models.cache_clear()
    for _ in range(5):
        assert ModelSpec.parse("openai/a").price() == (1.0, 2.0)
    assert registry._read_models.cache_info().misses == 1
    path.write_text(path.read_text().replace("2.0", "3.0"))  # an edited file is read again
    os.utime(path, ns=(path.stat().st_mtime_ns + 10**9,) * 2)
    assert ModelSpec.parse("openai/a").price() == (1.0, 3.0)


def _named(path: Path, words: tuple[str, ...]) -> list[str]:
    """String constants of `path` that hold one of `words` (docstrings, and npm packages such as
    the installed agents' CLIs, "@vendor/cli", left out: they name packages, not providers)."""
    tree = ast.parse(path.read_text())
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [f"{path.relative_to(ROOT)}:{n.lineno}: {n.value!r}" for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
            and not n.value.startswith("@") and any(w in n.value for w in words)]


def test_no_host_module_but_the_registry_names_a_provider():
    words = tuple(PROVIDERS) + providers.key_vars() + providers.base_url_vars()
    found = []
    for package in ("harness", "agents", "sandbox", "results"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            if rel == "results/providers.py" or rel.startswith(PENDING) or rel.startswith("harness/kits/"):
                continue
            found += _named(path, words)
    assert not found, "\n".join(found)
