"""The LLM agent: a system prompt plus the task's instruction, tools executed in the sandbox.

The loop runs on the host (model calls leave from here; API keys never enter the sandbox).
Every model call, tool call and tool result is appended to transcript.jsonl as it happens.
Limits stop the agent by raising a StopAgent; whatever /workspace holds then is verified.
"""

from __future__ import annotations

import json
import os
import posixpath
import time
from dataclasses import dataclass
from pathlib import Path

from sandbox import Sandbox, SandboxFileNotFound

from . import AgentContext, AgentResult, Reply, ToolSpec
from .llm import make_model

SYSTEM = """You are an expert engineer working alone in a sandbox (Linux, no network). The task's
files are in /workspace; what /workspace holds when you call `submit` is graded by a hidden
verifier. Work in small verified steps: run code, measure, read errors. Call `submit` once,
when you are done."""

OUTPUT_CAP = 10_000
BASH_TIMEOUT_MAX = 600.0

TOOLS = [
    ToolSpec("bash", "Run a bash command in /workspace. Returns exit code, stdout and stderr (long output is cut).",
             {"type": "object", "properties": {"command": {"type": "string"},
                                               "timeout": {"type": "number", "description": "seconds, default 120"}},
              "required": ["command"]}),
    ToolSpec("view", "Show a file with line numbers, or list a folder.",
             {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}),
    ToolSpec("create", "Create or overwrite a file with the given content.",
             {"type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
              "required": ["path", "content"]}),
    ToolSpec("str_replace", "Replace the one exact occurrence of old_str in a file with new_str.",
             {"type": "object", "properties": {"path": {"type": "string"}, "old_str": {"type": "string"},
                                               "new_str": {"type": "string"}},
              "required": ["path", "old_str", "new_str"]}),
]
SUBMIT = ToolSpec("submit", "End the attempt: /workspace as it is now is graded.",
                  {"type": "object", "properties": {"summary": {"type": "string"}}})


DELEGATE = ToolSpec(
    "delegate", "Start a sub-agent on a sub-task. It shares this sandbox, has its own context and a share of the "
    "budget, and its final report comes back as this tool's result.",
    {"type": "object", "properties": {"task": {"type": "string", "description": "what the sub-agent must do"}},
     "required": ["task"]})
REPORT = ToolSpec("report", "End your sub-task and hand your report to the agent that started you.",
                  {"type": "object", "properties": {"report": {"type": "string"}}, "required": ["report"]})
SUB_SYSTEM = """You are a sub-agent: another agent gave you one sub-task. You share its sandbox (/workspace).
Do the sub-task, then call `report` with what you did and found."""


class StopAgent(Exception):
    """Stops the agent; the submission is still verified. `reason` goes to trial.json."""

    reason = "stopped"


class TurnLimit(StopAgent):
    reason = "turn_limit"


class TokenLimit(StopAgent):
    reason = "token_limit"


class CostLimit(StopAgent):
    reason = "cost_limit"


class TimeLimit(StopAgent):
    reason = "time_limit"


class ToolError(Exception):
    """What the model did wrong with a tool: goes back to it as a tool error."""


@dataclass
class Budget:
    """The trial's limits and what has been spent, shared by the agent and its sub-agents."""

    max_turns: int
    max_input_tokens: int | None
    max_output_tokens: int | None
    max_cost_usd: float | None
    #: agent wall time, counted from the first model call: importing the SDK and setting up
    #: the client are the harness's time, not the agent's (and a slow host cannot spend it)
    timeout_s: float
    price: tuple[float, float] | None
    deadline: float | None = None
    turns: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    parent: "Budget | None" = None

    def child(self, share: float) -> "Budget":
        """A sub-agent's budget: `share` of what is left here; its spending counts here too."""
        def part(limit, used):
            return None if limit is None else max(1, int((limit - used) * share))
        return Budget(part(self.max_turns, self.turns), part(self.max_input_tokens, self.input_tokens),
                      part(self.max_output_tokens, self.output_tokens),
                      None if self.max_cost_usd is None else self.max_cost_usd * share,
                      self.timeout_s, self.price, deadline=self.deadline, parent=self)

    @property
    def cost_usd(self) -> float | None:
        if self.price is None:
            return None
        return (self.input_tokens * self.price[0] + self.output_tokens * self.price[1]) / 1e6

    def before_call(self) -> None:
        if self.deadline is None:
            self.deadline = time.monotonic() + self.timeout_s
        if self.turns >= self.max_turns:
            raise TurnLimit(f"{self.turns} model calls")
        if time.monotonic() >= self.deadline:
            raise TimeLimit("agent wall time")
        if self.parent is not None:
            self.parent.before_call()

    def charge(self, reply: Reply) -> None:
        if self.parent is not None:
            self.parent.charge(reply)
        self.turns += 1
        self.input_tokens += reply.input_tokens
        self.output_tokens += reply.output_tokens
        if self.max_input_tokens is not None and self.input_tokens > self.max_input_tokens:
            raise TokenLimit(f"{self.input_tokens} input tokens")
        if self.max_output_tokens is not None and self.output_tokens > self.max_output_tokens:
            raise TokenLimit(f"{self.output_tokens} output tokens")
        cost = self.cost_usd
        if self.max_cost_usd is not None and cost is not None and cost > self.max_cost_usd:
            raise CostLimit(f"${cost:.4f}")


class Transcript:
    """transcript.jsonl, appended and flushed event by event."""

    def __init__(self, path: Path):
        self.path = path

    def log(self, **event) -> None:
        event["t"] = round(time.time(), 3)
        with open(self.path, "a") as f:
            f.write(json.dumps(event, default=str) + "\n")


def _path(p: str) -> str:
    return posixpath.normpath(posixpath.join("/workspace", p))


def cut(text: str, cap: int = OUTPUT_CAP) -> str:
    if len(text) <= cap:
        return text
    return text[: cap // 2] + f"\n[... {len(text) - cap} characters cut ...]\n" + text[-cap // 2:]


def run_tool(sb: Sandbox, name: str, args: dict) -> str:
    """Execute one tool call. Raises ToolError for the model's mistakes; SandboxError passes."""
    try:
        if name == "bash":
            timeout = min(float(args.get("timeout") or 120), BASH_TIMEOUT_MAX)
            r = sb.exec(args["command"], cwd="/workspace", timeout=timeout)
            head = f"exit code {r.returncode}" + (f" (timed out after {timeout:.0f} s)" if r.timed_out else "")
            return cut(f"{head}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")
        if name == "view":
            path = _path(args["path"])
            r = sb.exec(["test", "-d", path])
            if r.returncode == 0:
                return cut(sb.exec(["ls", "-la", path]).stdout)
            text = sb.read_file(path).decode("utf-8", "replace")
            return cut("".join(f"{i:6d}\t{line}\n" for i, line in enumerate(text.splitlines(), 1)))
        if name == "create":
            sb.write_file(_path(args["path"]), args["content"].encode())
            return f"wrote {len(args['content'])} characters to {_path(args['path'])}"
        if name == "str_replace":
            path = _path(args["path"])
            text = sb.read_file(path).decode()
            n = text.count(args["old_str"])
            if n != 1:
                raise ToolError(f"old_str occurs {n} times in {path}; it must occur exactly once")
            sb.write_file(path, text.replace(args["old_str"], args["new_str"]).encode())
            return f"replaced 1 occurrence in {path}"
    except KeyError as e:
        raise ToolError(f"missing argument {e}") from None
    except SandboxFileNotFound as e:
        raise ToolError(str(e)) from None
    except UnicodeDecodeError:
        raise ToolError("not a text file") from None
    raise ToolError(f"unknown tool {name!r}")


@dataclass
class SubAgentPolicy:
    max_depth: int = 1      # sub-agents of sub-agents: 0 = no delegation at all
    max_count: int = 4      # sub-agents per trial
    share: float = 0.5      # of the remaining budget, for each sub-agent


class ReactAgent:
    """The default agent whenever a model is given."""

    name = "react"

    def __init__(self, max_retries: int | None = None, policy: SubAgentPolicy | None = None):
        # the SDKs' own retries (exponential backoff, retry-after honoured)
        self.max_retries = max_retries if max_retries is not None else int(os.environ.get("RDBENCH_MODEL_RETRIES", "6"))
        self.policy = policy or SubAgentPolicy()

    def run(self, sandbox: Sandbox, ctx: AgentContext) -> AgentResult:
        spec = ctx.agent.model_spec  # parsed once per run, where the run was built
        limits = ctx.task.agent
        budget = Budget(limits.max_turns, limits.max_input_tokens, limits.max_output_tokens, limits.max_cost_usd,
                        limits.timeout_s, spec.price())
        self._spec, self._sandbox, self._spawned = spec, sandbox, 0
        self.policy = SubAgentPolicy(limits.max_subagent_depth, limits.max_subagents, self.policy.share)
        self._transcript = Transcript(ctx.trial_dir / "transcript.jsonl")
        try:
            stop_reason, _ = self._loop("main", SYSTEM, ctx.task.instruction, budget, depth=0)
        except StopAgent as e:
            stop_reason = e.reason
            self._transcript.log(agent="main", type="stop", reason=e.reason, detail=str(e))
        self._transcript.log(agent="main", type="end", stop_reason=stop_reason, input_tokens=budget.input_tokens,
                             output_tokens=budget.output_tokens, cost_usd=budget.cost_usd)
        return AgentResult(stop_reason=stop_reason, input_tokens=budget.input_tokens,
                           output_tokens=budget.output_tokens, cost_usd=budget.cost_usd)

    def _loop(self, who: str, system: str, user: str, budget: Budget, depth: int) -> tuple[str, str]:
        """One agent's conversation until it submits (or reports). Returns (stop_reason, final text)."""
        log = self._transcript.log
        finish = "submit" if depth == 0 else "report"
        tools = TOOLS + [SUBMIT if depth == 0 else REPORT]
        if depth < self.policy.max_depth:
            tools.append(DELEGATE)
        model = make_model(self._spec, max_retries=self.max_retries)
        model.start(system, user)
        log(agent=who, type="start", model=f"{self._spec.provider}/{self._spec.name}", system=system, user=user)
        while True:
            budget.before_call()
            reply = model.step(tools)
            log(agent=who, type="model_call", turn=budget.turns + 1, text=reply.text,
                tool_calls=[c.__dict__ for c in reply.tool_calls], input_tokens=reply.input_tokens,
                output_tokens=reply.output_tokens, latency_s=round(reply.latency_s, 3))
            budget.charge(reply)
            if not reply.tool_calls:
                model.add_user(f"Use the tools to work on the task; call {finish} when you are done.")
                continue
            results, final = [], None
            for call in reply.tool_calls:
                if call.name == finish:
                    final = str(call.args.get("summary") or call.args.get("report") or "")
                    results.append((call.id, "ok", False))
                    continue
                try:
                    if call.name == "delegate" and depth < self.policy.max_depth:
                        out, err = self._delegate(who, call.args, budget, depth), False
                    else:
                        out, err = run_tool(self._sandbox, call.name, call.args), False
                except ToolError as e:
                    out, err = str(e), True
                log(agent=who, type="tool_result", id=call.id, name=call.name, args=call.args, output=out, is_error=err)
                results.append((call.id, out, err))
            model.add_results(results)
            if final is not None:
                return ("submitted" if depth == 0 else "reported"), final

    def _delegate(self, who: str, args: dict, budget: Budget, depth: int) -> str:
        if "task" not in args:
            raise ToolError("missing argument 'task'")
        if self._spawned >= self.policy.max_count:
            raise ToolError(f"no more sub-agents: the limit is {self.policy.max_count} per trial")
        self._spawned += 1
        sub = f"{who}.sub{self._spawned}"
        child = budget.child(self.policy.share)
        try:
            reason, report = self._loop(sub, SUB_SYSTEM, args["task"], child, depth + 1)
        except StopAgent as e:
            budget.before_call()  # the whole agent's limits stop it here; only the sub-agent's share is left
            self._transcript.log(agent=sub, type="end", stop_reason=e.reason, turns=child.turns)
            return f"the sub-agent stopped before reporting: {e.reason} ({e})"
        self._transcript.log(agent=sub, type="end", stop_reason=reason, turns=child.turns)
        return report or "(empty report)"
