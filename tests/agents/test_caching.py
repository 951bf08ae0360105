"""Prompt caching: Anthropic requests carry cache breakpoints (system and tools, the moving end
of the conversation); both providers' cache usage is read, recorded and priced."""

from __future__ import annotations

import json

import pytest

from tests.agents.fake_api import FakeAPI, Step, submit
from tests.agents.test_react import events, run

SCRIPT = [Step(tool_calls=[("bash", {"command": "head -c 3000 /dev/zero | tr '\\0' x"})], usage=None)] * 20 + [submit()]


@pytest.mark.docker
def test_anthropic_caching_is_requested_read_and_priced(base_image, tmp_path):
    with FakeAPI(SCRIPT) as api:
        r, t, out = run(["py-primes", "--model", "anthropic/claude-haiku-4-5", "--repeats", "1"], tmp_path,
                        env={"ANTHROPIC_BASE_URL": api.url})
    assert r.returncode == 0, r.stderr
    body = api.requests[-1][1]
    assert body["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert body["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert t.usage.cache_read_tokens > t.usage.input_tokens / 2 and t.usage.cache_write_tokens > 0
    plain = t.usage.input_tokens - t.usage.cache_read_tokens - t.usage.cache_write_tokens
    expected = (plain * 1.0 + t.usage.cache_read_tokens * 0.1 + t.usage.cache_write_tokens * 1.25 + t.usage.output_tokens * 5.0) / 1e6
    assert t.usage.cost_usd == pytest.approx(expected)
    assert t.usage.uncached_cost_usd == pytest.approx((t.usage.input_tokens * 1.0 + t.usage.output_tokens * 5.0) / 1e6)
    assert t.usage.cost_usd < t.usage.uncached_cost_usd / 2
    calls = [e for e in events(out) if e["type"] == "model_call"]
    assert sum(e["cache_read_tokens"] for e in calls) == t.usage.cache_read_tokens
    print(f"\nanthropic: cost ${t.usage.cost_usd:.4f} with caching, ${t.usage.uncached_cost_usd:.4f} without")


@pytest.mark.docker
@pytest.mark.parametrize("model", ["openai/gpt-5-mini", "openai-responses/gpt-5-mini"])
def test_openai_cached_tokens_are_read_and_priced(model, base_image, tmp_path):
    with FakeAPI(SCRIPT) as api:
        r, t, _ = run(["py-primes", "--model", model, "--repeats", "1"], tmp_path,
                      env={"OPENAI_BASE_URL": api.url + "/v1"})
    assert r.returncode == 0, r.stderr
    assert 0 < t.usage.cache_read_tokens < t.usage.input_tokens and t.usage.cache_write_tokens == 0
    plain = t.usage.input_tokens - t.usage.cache_read_tokens
    assert t.usage.cost_usd == pytest.approx((plain * 0.25 + t.usage.cache_read_tokens * 0.025 + t.usage.output_tokens * 2.0) / 1e6)
    print(f"\n{model}: cost ${t.usage.cost_usd:.4f} with caching, ${t.usage.uncached_cost_usd:.4f} without")


@pytest.mark.docker
def test_model_args_reach_the_api_and_run_json(base_image, tmp_path):
    """Thinking on: the fake server refuses, as the real one does, a history whose last
    assistant turn with tool calls lost its signed thinking block; so the trial only gets
    to submit if every block is kept."""
    with FakeAPI(SCRIPT[:3] + [submit()]) as api:
        r, t, out = run(["py-primes", "--model", "anthropic/claude-test", "--repeats", "1", "--model-arg",
                         "thinking_budget=2048", "--model-arg", "top_k=5", "--context-window", "50000"], tmp_path,
                        env={"ANTHROPIC_BASE_URL": api.url})
    assert r.returncode == 0, r.stderr
    body = api.requests[0][1]
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048} and body["top_k"] == 5
    assert body["max_tokens"] > 2048
    last = api.requests[-1][1]["messages"]
    kept = [m["content"][0] for m in last if m["role"] == "assistant"]
    assert len(kept) == 3 and all(b["type"] == "thinking" and b["signature"] for b in kept)
    assert t.correct and t.model_settings == {"thinking_budget": 2048, "top_k": 5}
    config = json.loads((out / "run.json").read_text())
    assert config["model_args"] == {"thinking_budget": 2048, "top_k": 5} and config["context_window"] == 50000


@pytest.mark.slow
def test_the_fake_server_refuses_a_history_that_lost_its_thinking_blocks():
    """The check the test above relies on, through the real SDK: the API's own 400."""
    import anthropic

    with FakeAPI([SCRIPT[0], submit()]) as api:
        client = anthropic.Anthropic(base_url=api.url, api_key="x", max_retries=0)
        ask = dict(model="m", max_tokens=5000, thinking={"type": "enabled", "budget_tokens": 2048},
                   messages=[{"role": "user", "content": "go"}])
        first = client.messages.create(**ask)
        assert first.content[0].type == "thinking"
        call = next(b for b in first.content if b.type == "tool_use")
        result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "ok"}]}
        kept = [b.model_dump() for b in first.content]
        with pytest.raises(anthropic.BadRequestError, match="must start with a thinking block"):
            client.messages.create(**{**ask, "messages": ask["messages"] + [
                {"role": "assistant", "content": kept[1:]}, result]})
        forged = [{**kept[0], "thinking": "something else"}] + kept[1:]
        with pytest.raises(anthropic.BadRequestError):
            client.messages.create(**{**ask, "messages": ask["messages"] + [
                {"role": "assistant", "content": forged}, result]})
        ok = client.messages.create(**{**ask, "messages": ask["messages"] + [
            {"role": "assistant", "content": kept}, result]})
        assert ok.stop_reason == "tool_use"
