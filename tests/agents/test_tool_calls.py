"""Whatever a model sends cannot crash the loop or void the trial: malformed tool calls go back
to the model as tool errors; the agent's own sandbox faults are the agent's outcome, never
an infrastructure error. Real SDKs, the fake API, real sandboxes, the real verifier."""

from __future__ import annotations

import pytest

from tests.agents.fake_api import FakeAPI, Raw, Step, submit
from tests.agents.test_react import events, run

pytestmark = pytest.mark.docker  # every test here needs the Docker engine

PROVIDERS = {
    "anthropic": (["--model", "anthropic/claude-test"], "ANTHROPIC_BASE_URL", ""),
    "chat": (["--model", "openai/gpt-test"], "OPENAI_BASE_URL", "/v1"),
    "responses": (["--model", "openai-responses/gpt-test"], "OPENAI_BASE_URL", "/v1"),
}


def provider_run(provider: str, api: FakeAPI, args: list[str], tmp_path):
    model, var, suffix = PROVIDERS[provider]
    return run(["py-primes", *model, "--repeats", "1", *args], tmp_path, env={var: api.url + suffix})


MALFORMED = [
    (("bash", {"command": 123}), "'command' must be a string"),
    (("bash", [1, 2]), "must be a JSON object, got an array"),
    (("bash", None), "must be a JSON object, got null"),
    (("bash", {"command": "true", "timeout": "abc"}), "'timeout' must be a number"),
    (("bash", {"command": "true", "timeout": float("nan")}), "must be a finite number"),
    (("bash", {"command": "true", "timeout": -5}), "timeout must be a positive number"),
    (("view", {"path": 123}), "'path' must be a string"),
    (("create", {"path": "x.py"}), "missing argument 'content'"),
    (("bash", Raw("{not json")), "not valid JSON"),
    (("nosuchtool", {}), "unknown tool"),
]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_malformed_tool_calls_are_tool_errors(provider, base_image, tmp_path):
    script = [Step(tool_calls=[call]) for call, _ in MALFORMED]
    if provider == "anthropic":  # `input` sent as a string: JSON text of an object is taken as that object
        script.append(Step(tool_calls=[("bash", Raw('{"command": "echo from-a-string"}'))]))
    script.append(submit())
    with FakeAPI(script) as api:
        r, t, out = provider_run(provider, api, [], tmp_path)
    assert r.returncode == 0, r.stderr
    assert t.error_class is None and t.stop_reason == "submitted" and t.correct
    results = [e for e in events(out) if e["type"] == "tool_result"]
    for (_, message), result in zip(MALFORMED, results):
        assert result["is_error"] and message in result["output"], result
    if provider == "anthropic":
        assert not results[-1]["is_error"] and "from-a-string" in results[-1]["output"]
        # the history the API gets back holds objects only, as the real API requires
        for message in api.requests[-1][1]["messages"]:
            for block in message["content"] if isinstance(message["content"], list) else []:
                if block.get("type") == "tool_use":
                    assert isinstance(block["input"], dict)


def test_killing_the_exec_server_is_the_agents_outcome(base_image, tmp_path):
    script = [Step(tool_calls=[("bash", {"command": "kill -9 $PPID"})]), submit()]
    with FakeAPI(script) as api:
        r, t, out = provider_run("anthropic", api, [], tmp_path)
    assert r.returncode == 0, r.stderr
    assert t.error_class is None and t.stop_reason == "sandbox_lost"
    assert t.correct  # the workspace as it was is still taken and verified
    assert len(api.requests) == 1
    assert any(e["type"] == "stop" and e["reason"] == "sandbox_lost" for e in events(out))


def test_an_oversized_submission_is_the_agents_failure(base_image, tmp_path):
    # a sparse 2.3 GB file: over the 2 GiB limit, without using the disk
    script = [Step(tool_calls=[("bash", {"command": "truncate -s 2300M big.bin"})]), submit()]
    with FakeAPI(script) as api:
        r, t, _ = provider_run("chat", api, [], tmp_path)
    assert r.returncode == 0, r.stderr
    assert t.error_class == "agent" and t.correct is False and "over the 2048 MiB limit" in t.error
