"""Long horizons: the conversation is kept under the model's context window (old outputs
elided, then compacted by the model's own summary), and a provider's context-overflow error
compacts and retries instead of ending the trial. Real SDKs against a fake server that
enforces a 30k-token window with each provider's real error shape."""

from __future__ import annotations

import pytest

from tests.agents.fake_api import FakeAPI, Step, submit
from tests.agents.test_react import events
from tests.agents.test_tool_calls import PROVIDERS, provider_run
from tests.conftest import rdbench

pytestmark = pytest.mark.docker  # every test here needs the Docker engine

NINE_KB = ("bash", {"command": "head -c 9000 /dev/zero | tr '\\0' x"})


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_300_turn_trial_fits_a_30k_window(provider, base_image, tmp_path):
    script = [Step(tool_calls=[NINE_KB], usage=None)] * 299 + [submit()]
    with FakeAPI(script, window=30_000) as api:  # and no models.toml entry: the default window
        r, t, out = provider_run(provider, api, ["--max-turns", "400"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert t.error_class is None and t.stop_reason == "submitted" and t.correct
    assert api.overflows == 0 and len(api.requests) == 300 + api.summaries
    assert t.usage.elisions >= 1 and t.usage.compactions >= 1 and t.usage.compactions == api.summaries
    kinds = [e["type"] for e in events(out)]
    assert kinds.count("compaction") == t.usage.compactions and kinds.count("elision") == t.usage.elisions
    # the task's instruction survives every compaction, verbatim
    last = api.requests[-1][1]
    first = (last.get("messages") or last.get("input"))[0 if provider != "chat" else 1]["content"]
    assert "py-primes" in str(first) or "solve.py" in str(first)
    print(f"\n{provider}: {t.usage.elisions} elisions, {t.usage.compactions} compactions, {t.usage.input_tokens} input tokens, "
          f"largest request {max(len(str(b)) for _, b in api.requests) // 4} tokens")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_overflow_error_compacts_and_retries(provider, base_image, tmp_path):
    script = [Step(tool_calls=[NINE_KB], usage=None)] * 20 + [submit()]
    with FakeAPI(script, window=30_000) as api:  # we claim 1M tokens: the server's refusal corrects us
        r, t, out = provider_run(provider, api, ["--context-window", "1000000"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert t.error_class is None and t.stop_reason == "submitted"
    assert api.overflows >= 1 and t.usage.compactions >= 1
    overflow = [e for e in events(out) if e["type"] == "context_overflow"]
    assert overflow and overflow[0]["new_window"] == 30_000
    # the HTML report shows them: counted in the trial's table, each an event of its transcript
    rep = rdbench("report", str(out), "--out", str(tmp_path / "report.html"), "--db", str(tmp_path / "r.db"))
    assert rep.returncode == 0, rep.stderr
    html = (tmp_path / "report.html").read_text()
    assert f"{t.usage.elisions} elisions, {t.usage.compactions} compactions" in html
    assert html.count("<span class=tag>compaction</span>") == t.usage.compactions
    assert html.count("<span class=tag>context overflow</span>") == len(overflow)
