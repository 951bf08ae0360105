"""The built-in agent's loop without Docker or HTTP (the fast tier): scripted turns
(agents/scripted.py) played through the real conversation code of agents/llm.py, tool calls
run in the fake sandbox (sandbox/fake.py). The real-SDK-over-HTTP tests (test_react.py and
its fake API) stay the contract tests of the wire formats; these check the loop itself:
tools, budgets, context management, retries, sub-agents, a lost sandbox."""

from __future__ import annotations

import json
import itertools

import pytest

from agents import AgentContext
from agents.react import ReactAgent
from agents.scripted import Script, Turn, bash, overflow, server_error, submit
from harness.task import load_task
from results.records import AgentSpec
from sandbox import SandboxConfig
from sandbox.fake import FakeSandbox
from tests.tiny import tiny_task

#: priced in models.toml: the cost limit and the cost column work
MODEL = "anthropic/claude-opus-4-1"


@pytest.fixture
def sandbox(tmp_path):
    sb = FakeSandbox(SandboxConfig(image="fake"))
    sb.copy_in(tmp_path / "task" / "workspace", "/workspace")
    yield sb
    sb.close()


@pytest.fixture(autouse=True)
def task_folder(tmp_path):
    return tiny_task(tmp_path, "task")


def play(sb, tmp_path, script: Script, agent_lines: str = "", **spec):
    tiny_task(tmp_path, "task", agent_lines)
    ctx = AgentContext(task=load_task(tmp_path / "task"), trial_dir=tmp_path,
                       agent=AgentSpec(name="react", model=MODEL, **spec))
    result = ReactAgent(max_retries=2, models=script).run(sb, ctx)
    events = [json.loads(line) for line in (tmp_path / "transcript.jsonl").read_text().splitlines()]
    return result, events


def test_tools_run_in_the_sandbox_and_the_model_sees_their_results(sandbox, tmp_path):
    script = Script([bash("cat answer.txt"),
                     Turn(calls=[("str_replace", {"path": "answer.txt", "old_str": "0", "new_str": "42"}),
                                 ("view", {"path": "."})]),
                     Turn(text="thinking"),  # no tool call: the loop asks for one
                     Turn(calls=[("create", {"path": "/workspace/notes/x.md", "content": "hi"})]),
                     submit("answer fixed")])
    result, events = play(sandbox, tmp_path, script)
    assert result.stop_reason == "submitted"
    assert sandbox.read_file("/workspace/answer.txt") == b"42\n"
    assert sandbox.read_file("/workspace/notes/x.md") == b"hi"
    first = script.requests[1]["messages"][-1]  # the bash result, as the model got it
    assert first["role"] == "tool" and "exit code 0" in first["content"] and "\n0\n" in first["content"]
    listing = script.requests[2]["messages"][-1]["content"]
    assert "answer.txt" in listing  # view of a folder: ls inside the sandbox, path mapped
    assert "call submit" in script.requests[3]["messages"][-1]["content"]
    calls = [e for e in events if e["type"] == "model_call"]
    assert [c["turn"] for c in calls] == [1, 2, 3, 4, 5]
    assert result.usage.input_tokens == sum(c["input_tokens"] for c in calls) > 0
    assert result.usage.output_tokens == 5 * 20 and result.usage.cost_usd > 0
    assert events[-1]["type"] == "end" and events[-1]["stop_reason"] == "submitted"


def test_a_models_mistakes_are_tool_errors_and_the_loop_goes_on(sandbox, tmp_path):
    script = Script([Turn(calls=[("bash", {"cmd": "ls"}), ("nosuch", {}), ("view", {"path": "missing.txt"}),
                                 ("report", {"report": "x"})]),
                     submit()])
    result, events = play(sandbox, tmp_path, script)
    results = [e for e in events if e["type"] == "tool_result"]
    assert result.stop_reason == "submitted" and [r["is_error"] for r in results] == [True] * 4
    sent = script.requests[1]["messages"][-4:]
    assert all(m["content"].startswith("ERROR: ") for m in sent)


@pytest.mark.parametrize("limits, reason", [
    ("max_turns = 3", "turn_limit"),
    ("max_output_tokens = 50", "token_limit"),
    ("max_cost_usd = 0.01", "cost_limit"),
])
def test_each_limit_stops_the_agent(sandbox, tmp_path, limits, reason):
    script = Script(itertools.repeat(bash("true", output_tokens=20, input_tokens=1000)))
    result, events = play(sandbox, tmp_path, script, limits)
    assert result.stop_reason == reason
    assert [e["reason"] for e in events if e["type"] == "stop"] == [reason]


def test_the_wall_time_stops_a_slow_model(sandbox, tmp_path):
    script = Script([bash("true"), Turn(delay_s=30, calls=[("submit", {"summary": "late"})])])
    result, _ = play(sandbox, tmp_path, script, "timeout_s = 1.5")
    assert result.stop_reason == "time_limit"


def test_a_server_error_is_retried_within_the_budget(sandbox, tmp_path):
    script = Script([server_error(503, retry_after=0), server_error(529, retry_after=0), submit()])
    result, _ = play(sandbox, tmp_path, script)
    assert result.stop_reason == "submitted" and len(script.requests) == 3


def test_long_outputs_are_elided_then_the_conversation_compacted(sandbox, tmp_path):
    def out(n):
        return bash(f'printf "%{n}s" x')  # a bash builtin: no process to start

    script = Script([out(3000) for _ in range(12)] + [out(9000) for _ in range(6)] + [submit()],
                    summaries=["SUMMARY-1", "SUMMARY-2", "SUMMARY-3"])
    result, events = play(sandbox, tmp_path, script, context_window=20000)
    kinds = [e["type"] for e in events]
    assert "elision" in kinds and "compaction" in kinds
    assert result.usage.elisions >= 1 and result.usage.compactions >= 1 and result.stop_reason == "submitted"
    after = next(r for r in script.requests[script.requests.index(next(r for r in script.requests if r["final"])) + 1:])
    assert "SUMMARY-1" in after["messages"][0]["content"] and "Make answer.txt say 42." in after["messages"][0]["content"]
    elided = [m for r in script.requests for m in r["messages"] if m["role"] == "tool"
              and m["content"].startswith("[output elided")]
    assert elided  # what the model saw, not only what the transcript says


def test_a_providers_overflow_error_shrinks_the_window_and_compacts(sandbox, tmp_path):
    script = Script([bash("true"), overflow(limit=4000), submit()], summaries=["what I did"])
    result, events = play(sandbox, tmp_path, script)
    (o,) = [e for e in events if e["type"] == "context_overflow"]
    assert o["new_window"] == 4000 and result.usage.compactions == 1 and result.stop_reason == "submitted"


def test_a_sub_agent_works_on_its_share_and_reports(sandbox, tmp_path):
    script = Script([Turn(calls=[("delegate", {"task": "fix answer.txt"})]),
                     bash("echo 42 > answer.txt"), Turn(calls=[("report", {"report": "fixed it"})]),
                     submit()])
    result, events = play(sandbox, tmp_path, script)
    assert result.stop_reason == "submitted" and sandbox.read_file("/workspace/answer.txt") == b"42\n"
    assert script.requests[1]["messages"][0]["content"] == "fix answer.txt"  # the sub-agent's own conversation
    assert "delegate" not in script.requests[1]["tools"]  # depth 1: no sub-sub-agents
    delegated = [e for e in events if e["type"] == "tool_result" and e["name"] == "delegate"]
    assert delegated[0]["output"] == "fixed it"
    assert {e["agent"] for e in events} == {"main", "main.sub1"}


def test_losing_the_sandbox_stops_the_agent_as_its_own_doing(sandbox, tmp_path):
    def close_it(request):
        sandbox.close()
        return bash("ls")

    result, events = play(sandbox, tmp_path, Script([close_it]))
    assert result.stop_reason == "sandbox_lost"
    assert [e for e in events if e["type"] == "tool_result"][-1]["is_error"]


def test_arguments_that_are_no_json_object_are_the_models_error(sandbox, tmp_path):
    from agents.tools import Unparsable

    script = Script([Turn(calls=[("bash", Unparsable("{not json")), ("bash", ["ls"]), ("create", {"path": 3})]),
                     submit()])
    result, events = play(sandbox, tmp_path, script)
    assert result.stop_reason == "submitted"
    assert [e["is_error"] for e in events if e["type"] == "tool_result"] == [True, True, True]
