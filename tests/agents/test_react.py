"""The LLM agent through the real anthropic/openai SDKs, against the local fake API,
in real sandboxes, graded by the real verifier."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.scaffold import scaffold
from results.records import TrialResult
from tests.agents.fake_api import FakeAPI, Step, submit
from tests.conftest import TASKS, rdbench

SIEVE = (TASKS / "py-primes" / "solution" / "solve.py").read_text()


def run(args, tmp_path, env=None):
    out = tmp_path / "run"
    r = rdbench("run", *args, "--out", str(out), env=env)
    trials = list((out / "trials").glob("*/trial.json"))
    t = TrialResult.model_validate_json(trials[0].read_text()) if trials else None
    return r, t, out


def events(out: Path) -> list[dict]:
    (path,) = out.glob("trials/*/transcript.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def task_with(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """A scaffolded task whose task.toml has `old` replaced by `new`."""
    task = scaffold(name, tmp_path / "tasks")
    toml = task / "task.toml"
    toml.write_text(toml.read_text().replace(old, new))
    return task


SPEEDUP_SCRIPT = [
    Step(text="Let me look.", tool_calls=[("view", {"path": "solve.py"})]),
    Step(tool_calls=[("create", {"path": "solve.py", "content": SIEVE})]),
    Step(tool_calls=[("bash", {"command": "echo '{\"queries\": [[0, 100]]}' > q.json && python3 solve.py q.json o.json"
                                          " && cat o.json && rm q.json o.json"})]),
    submit("sieve"),
]


@pytest.mark.docker
def test_anthropic_agent_speeds_up_the_example_end_to_end(base_image, tmp_path):
    with FakeAPI(SPEEDUP_SCRIPT) as api:
        r, t, out = run(["py-primes", "--model", "anthropic/claude-test"], tmp_path, env={"ANTHROPIC_BASE_URL": api.url})
    assert r.returncode == 0, r.stderr
    assert t.agent == "react" and t.model == "anthropic/claude-test"
    assert t.stop_reason == "submitted" and t.correct and t.value > 3.0
    assert (t.usage.input_tokens, t.usage.output_tokens) == (400, 80)
    paths = [p for p, _ in api.requests]
    assert paths == ["/v1/messages"] * 4
    # the bash tool's result went back to the model as a tool_result
    last = api.requests[3][1]["messages"][-1]["content"][0]
    assert last["type"] == "tool_result" and '{"counts": [25]}' in last["content"] and last["is_error"] is False
    kinds = [e["type"] for e in events(out)]
    assert kinds.count("model_call") == 4 and kinds.count("tool_result") == 3 and kinds[-1] == "end"


@pytest.mark.docker
def test_openai_compatible_agent_end_to_end(base_image, tmp_path):
    with FakeAPI(SPEEDUP_SCRIPT) as api:
        r, t, out = run(["py-primes", "--model", "openai-compatible/qwen-test", "--base-url", api.url + "/v1"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert t.correct and t.value > 3.0 and t.stop_reason == "submitted"
    assert [p for p, _ in api.requests] == ["/v1/chat/completions"] * 4
    tool_msg = api.requests[3][1]["messages"][-1]
    assert tool_msg["role"] == "tool" and '{"counts": [25]}' in tool_msg["content"]
    assert t.usage.cost_usd is None  # no price for this model: unknown, not zero


@pytest.mark.docker
def test_tool_errors_go_back_to_the_model(base_image, tmp_path):
    script = [Step(tool_calls=[("str_replace", {"path": "solve.py", "old_str": "count", "new_str": "x"}),
                               ("view", {"path": "missing.py"})]),
              submit()]
    with FakeAPI(script) as api:
        r, t, _ = run(["py-primes", "--model", "anthropic/claude-test", "--repeats", "1"], tmp_path,
                      env={"ANTHROPIC_BASE_URL": api.url})
    assert r.returncode == 0, r.stderr
    results = api.requests[1][1]["messages"][-1]["content"]
    assert results[0]["is_error"] and "occurs" in results[0]["content"]
    assert results[1]["is_error"] and "no such file" in results[1]["content"]
    assert t.correct and t.stop_reason == "submitted"


@pytest.mark.docker
def test_rate_limit_then_success(base_image, tmp_path):
    script = [Step(status=429, headers={"retry-after": "0"}), submit()]
    with FakeAPI(script) as api:
        r, t, _ = run(["py-primes", "--model", "anthropic/claude-test", "--repeats", "1"], tmp_path,
                      env={"ANTHROPIC_BASE_URL": api.url})
    assert r.returncode == 0, r.stderr
    assert len(api.requests) == 2 and t.stop_reason == "submitted" and t.error_class is None


@pytest.mark.docker
def test_server_error_storm_is_an_infrastructure_error(base_image, tmp_path):
    script = [Step(status=500, headers={"retry-after": "0"}, text="overloaded")]
    with FakeAPI(script, repeat_last=True) as api:
        r, t, _ = run(["py-primes", "--model", "openai-compatible/x", "--base-url", api.url + "/v1"], tmp_path,
                      env={"RDBENCH_MODEL_RETRIES": "2"})
    assert r.returncode == 1
    assert t.error_class == "infra" and t.value is None and t.correct is None
    assert "500" in t.error
    assert len(api.requests) == 3  # the first try and two retries


@pytest.mark.docker
def test_auth_error_is_an_infrastructure_error_with_a_hint(base_image, tmp_path):
    with FakeAPI([Step(status=401, text="invalid x-api-key")]) as api:
        r, t, _ = run(["py-primes", "--model", "anthropic/claude-test"], tmp_path, env={"ANTHROPIC_BASE_URL": api.url})
    assert r.returncode == 1
    assert t.error_class == "infra" and "check the API key" in t.error


@pytest.mark.docker
def test_turn_limit_stops_the_agent_and_the_submission_is_still_verified(base_image, tmp_path):
    task = task_with(tmp_path, "limited", "max_turns = 30", "max_turns = 2")
    solution = (task / "solution" / "program.py").read_text()
    script = [Step(tool_calls=[("create", {"path": "program.py", "content": solution})]),
              Step(tool_calls=[("bash", {"command": "true"})]),
              Step(tool_calls=[("bash", {"command": "rm program.py"})])]  # never reached
    with FakeAPI(script) as api:
        r, t, out = run([str(task), "--model", "anthropic/claude-test", "--repeats", "2"], tmp_path,
                        env={"ANTHROPIC_BASE_URL": api.url})
    assert r.returncode == 0, r.stderr
    assert len(api.requests) == 2
    assert t.stop_reason == "turn_limit" and t.correct and t.value > 1.5
    assert any(e["type"] == "stop" and e["reason"] == "turn_limit" for e in events(out))


@pytest.mark.parametrize("model, message", [
    ("gpt-5", "write PROVIDER/NAME"),
    ("mistral/large", "write PROVIDER/NAME"),
    ("openai-compatible/x", "needs a server"),
])
def test_bad_model_strings_are_one_clear_error(model, message, tmp_path):
    r = rdbench("run", "py-primes", "--model", model, "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


@pytest.mark.docker
def test_delegation_to_a_sub_agent(base_image, tmp_path):
    script = [Step(tool_calls=[("delegate", {"task": "Replace solve.py with a sieve-based version."})]),
              Step(tool_calls=[("create", {"path": "solve.py", "content": SIEVE})]),   # the sub-agent
              Step(tool_calls=[("report", {"report": "solve.py now sieves"})]),        # the sub-agent
              submit("delegated")]
    with FakeAPI(script) as api:
        r, t, out = run(["py-primes", "--model", "anthropic/claude-test"], tmp_path, env={"ANTHROPIC_BASE_URL": api.url})
    assert r.returncode == 0, r.stderr
    assert t.correct and t.value > 3.0 and t.stop_reason == "submitted"
    sub_request = api.requests[1][1]
    assert "sub-agent" in sub_request["system"][0]["text"]  # system blocks: the first carries a cache breakpoint
    assert sub_request["messages"][0]["content"][0]["text"].startswith("Replace solve.py")
    assert {tool["name"] for tool in sub_request["tools"]} >= {"report", "bash"}
    assert "delegate" not in {tool["name"] for tool in sub_request["tools"]}  # depth 1 by default
    back = api.requests[3][1]["messages"][-1]["content"][0]
    assert back["type"] == "tool_result" and back["content"] == "solve.py now sieves"
    subs = [e for e in events(out) if e.get("agent") == "main.sub1"]
    assert [e["type"] for e in subs][:2] == ["start", "model_call"] and subs[-1]["type"] == "end"
    assert t.usage.input_tokens == 400  # the sub-agent's tokens count in the trial's


@pytest.mark.docker
def test_cost_limit_from_the_price_table(base_image, tmp_path):
    task = task_with(tmp_path, "costly", "max_turns = 30", "max_turns = 30\nmax_cost_usd = 0.0003")
    script = [Step(tool_calls=[("bash", {"command": "true"})])] * 5  # 100 in + 20 out tokens a call
    with FakeAPI(script) as api:
        r, t, _ = run([str(task), "--model", "anthropic/claude-haiku-4-5", "--repeats", "1"], tmp_path,
                      env={"ANTHROPIC_BASE_URL": api.url})
    assert r.returncode == 0, r.stderr
    assert t.stop_reason == "cost_limit" and len(api.requests) == 2
    assert t.usage.cost_usd == pytest.approx(2 * (100 * 1.0 + 20 * 5.0) / 1e6)
    assert t.correct is True  # the unchanged workspace is still verified


@pytest.mark.docker
def test_openai_responses_api_end_to_end(base_image, tmp_path):
    with FakeAPI(SPEEDUP_SCRIPT) as api:
        r, t, _ = run(["py-primes", "--model", "openai-responses/gpt-test"], tmp_path,
                      env={"OPENAI_BASE_URL": api.url + "/v1"})
    assert r.returncode == 0, r.stderr
    assert t.correct and t.value > 3.0 and t.stop_reason == "submitted"
    assert [p for p, _ in api.requests] == ["/v1/responses"] * 4
    last_input = api.requests[3][1]["input"][-1]
    assert last_input["type"] == "function_call_output" and '{"counts": [25]}' in last_input["output"]


@pytest.mark.docker
def test_replay_reruns_a_recorded_trial(base_image, tmp_path):
    with FakeAPI(SPEEDUP_SCRIPT) as api:
        r, t, out = run(["py-primes", "--model", "anthropic/claude-test"], tmp_path, env={"ANTHROPIC_BASE_URL": api.url})
    assert r.returncode == 0 and t.correct
    (transcript,) = out.glob("trials/*/transcript.jsonl")
    replay_out = tmp_path / "replayed"
    r = rdbench("run", "py-primes", "--replay", str(transcript), "--out", str(replay_out))
    assert r.returncode == 0, r.stderr
    (p,) = replay_out.glob("trials/*/trial.json")
    t2 = TrialResult.model_validate_json(p.read_text())
    assert t2.agent == "replay" and t2.stop_reason == "replayed 3 tool calls"
    assert t2.correct and t2.value > 3.0
    (patch,) = replay_out.glob("trials/*/submission.patch")
    assert "sieve" in patch.read_text()


def test_cost_limit_with_unknown_price_is_refused_up_front(tmp_path):
    task = task_with(tmp_path, "costly", "max_turns = 30", "max_turns = 30\nmax_cost_usd = 1.0")
    r = rdbench("run", str(task), "--model", "anthropic/claude-unknown", "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "no price for anthropic/claude-unknown" in r.stderr


@pytest.mark.docker
def test_unreachable_server_is_an_infrastructure_error(base_image, tmp_path):
    # conftest points ANTHROPIC_BASE_URL at a closed local port
    r, t, _ = run(["py-primes", "--model", "anthropic/claude-test"], tmp_path, env={"RDBENCH_MODEL_RETRIES": "1"})
    assert r.returncode == 1
    assert t.error_class == "infra" and "APIConnectionError" in t.error


@pytest.mark.docker
def test_wall_time_limit_stops_the_agent(base_image, tmp_path):
    task = task_with(tmp_path, "slowagent", "timeout_s = 900", "timeout_s = 2")
    script = [Step(tool_calls=[("bash", {"command": "sleep 3"})])] * 3
    with FakeAPI(script) as api:
        r, t, _ = run([str(task), "--model", "anthropic/claude-test", "--repeats", "1"], tmp_path,
                      env={"ANTHROPIC_BASE_URL": api.url})
    assert r.returncode == 0, r.stderr
    assert t.stop_reason == "time_limit" and len(api.requests) == 1 and t.correct


@pytest.mark.docker
@pytest.mark.skipif(os.environ.get("RDBENCH_LIVE_API") != "1", reason="live API tests need RDBENCH_LIVE_API=1 and a key")
@pytest.mark.parametrize("model, key", [("anthropic/claude-haiku-4-5", "ANTHROPIC_API_KEY"),
                                        ("openai/gpt-5-mini", "OPENAI_API_KEY")])
def test_live_api(model, key, base_image, tmp_path):
    if not os.environ.get(key):
        pytest.skip(f"{key} is not set")
    r, t, _ = run(["py-primes", "--model", model], tmp_path)
    assert r.returncode == 0, r.stderr
    assert t.error_class is None and t.usage.input_tokens > 0


@pytest.mark.docker
def test_cli_limit_override_and_no_delegation_when_depth_is_zero(base_image, tmp_path):
    task = task_with(tmp_path, "nodelegate", "max_turns = 30", "max_turns = 30\nmax_subagent_depth = 0")
    script = [Step(tool_calls=[("bash", {"command": "true"})])] * 3
    with FakeAPI(script) as api:
        r, t, out = run([str(task), "--model", "anthropic/claude-test", "--max-turns", "1", "--repeats", "1"],
                        tmp_path, env={"ANTHROPIC_BASE_URL": api.url})
    assert r.returncode == 0, r.stderr
    assert t.stop_reason == "turn_limit" and len(api.requests) == 1
    assert "delegate" not in {tool["name"] for tool in api.requests[0][1]["tools"]}
    assert json.loads((out / "run.json").read_text())["limits"] == {"max_turns": 1}


@pytest.mark.docker
def test_output_token_limit(base_image, tmp_path):
    task = task_with(tmp_path, "tokens", "max_turns = 30", "max_turns = 30\nmax_output_tokens = 50")
    script = [Step(tool_calls=[("bash", {"command": "true"})], usage=(10, 30))] * 5
    with FakeAPI(script) as api:
        r, t, _ = run([str(task), "--model", "openai-compatible/x", "--base-url", api.url + "/v1", "--repeats", "1"],
                      tmp_path)
    assert r.returncode == 0, r.stderr
    assert t.stop_reason == "token_limit" and len(api.requests) == 2 and t.usage.output_tokens == 60


@pytest.mark.docker
def test_sub_agent_that_spends_its_share_returns_to_the_parent(base_image, tmp_path):
    task = task_with(tmp_path, "share", "max_turns = 30", "max_turns = 5")
    script = [Step(tool_calls=[("delegate", {"task": "loop forever"})]),
              Step(tool_calls=[("bash", {"command": "true"})]),   # sub: share = (5 - 1) * 0.5 = 2 turns
              Step(tool_calls=[("bash", {"command": "true"})]),
              submit()]                                            # the parent goes on
    with FakeAPI(script) as api:
        r, t, out = run([str(task), "--model", "anthropic/claude-test", "--repeats", "1"], tmp_path,
                        env={"ANTHROPIC_BASE_URL": api.url})
    assert r.returncode == 0, r.stderr
    assert t.stop_reason == "submitted" and len(api.requests) == 4
    back = api.requests[3][1]["messages"][-1]["content"][0]
    assert "sub-agent stopped before reporting: turn_limit" in back["content"]


@pytest.mark.parametrize("model, key", [("anthropic/claude-test", "ANTHROPIC_API_KEY"),
                                        ("openai/gpt-test", "OPENAI_API_KEY"),
                                        ("openai-responses/gpt-test", "OPENAI_API_KEY")])
def test_missing_api_key_is_a_clear_error_before_the_run(model, key, tmp_path, monkeypatch):
    monkeypatch.delenv(key)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    r = rdbench("run", "tasks/py-primes", "--model", model, "--out", str(tmp_path / "run"))
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"no API key: set {key}" in r.stdout + r.stderr
    assert not (tmp_path / "run").exists()
