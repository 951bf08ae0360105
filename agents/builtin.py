"""Agents that call no model: `oracle` proves a task solvable, `nop` measures the baseline,
`replay` re-runs a recorded trial's tool calls (a deterministic regression; a re-verification)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from sandbox import AGENT_UID, Sandbox, SandboxError

from . import AgentContext, AgentError, AgentResult, BaseAgent


class OracleAgent(BaseAgent):
    """Overlays the task's solution/ onto /workspace."""

    name = "oracle"

    def run(self, sandbox: Sandbox, ctx: AgentContext) -> AgentResult:
        solution = ctx.task.path / "solution"
        if not solution.is_dir():
            raise AgentError(f"{solution}: missing; the oracle agent needs a solution/ folder")
        deadline = time.monotonic() + ctx.task.agent.timeout_s
        sandbox.copy_in(solution, "/workspace", owner=AGENT_UID)
        return AgentResult(stop_reason="submitted" if time.monotonic() < deadline else "time_limit")


class NopAgent(BaseAgent):
    """Submits the workspace unchanged."""

    name = "nop"

    def run(self, sandbox: Sandbox, ctx: AgentContext) -> AgentResult:
        return AgentResult(stop_reason="submitted")


class ReplayAgent(BaseAgent):
    """Re-runs, in order, every tool call a recorded transcript executed (sub-agents' included)."""

    name = "replay"

    def run(self, sandbox: Sandbox, ctx: AgentContext) -> AgentResult:
        from .tools import ToolError, run_tool

        transcript = Path(ctx.agent.replay) if ctx.agent is not None and ctx.agent.replay else None
        if transcript is None or not transcript.is_file():
            raise AgentError(f"the replay agent needs a transcript.jsonl (--replay PATH); got {transcript}")
        calls = []
        for n, line in enumerate(transcript.read_text().splitlines(), 1):
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                raise AgentError(f"{transcript}:{n}: not JSON") from None
            if event.get("type") == "tool_result" and event.get("name") != "delegate":
                if "args" not in event:
                    raise AgentError(f"{transcript}:{n}: a tool_result without args (an older transcript?)")
                calls.append((event["name"], event["args"]))
        deadline = time.monotonic() + ctx.task.agent.timeout_s  # the task's wall time holds here too
        for n, (name, args) in enumerate(calls):
            left = deadline - time.monotonic()
            if left <= 0:
                return AgentResult(stop_reason=f"time_limit (replayed {n} of {len(calls)} tool calls)")
            try:
                run_tool(sandbox, name, args, time_left=left)
            except ToolError:
                pass  # it failed when recorded too
            except SandboxError:  # the recorded agent lost its sandbox here too
                return AgentResult(stop_reason="sandbox_lost")
        return AgentResult(stop_reason=f"replayed {len(calls)} tool calls")
