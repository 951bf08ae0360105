"""Agents that call no model: `oracle` proves a task solvable, `nop` measures the baseline."""

from __future__ import annotations

from sandbox import Sandbox

from . import AgentContext, AgentError, AgentResult

AGENT_UID = 1000


class OracleAgent:
    """Overlays the task's solution/ onto /workspace."""

    name = "oracle"

    def run(self, sandbox: Sandbox, ctx: AgentContext) -> AgentResult:
        solution = ctx.task.path / "solution"
        if not solution.is_dir():
            raise AgentError(f"{solution}: missing; the oracle agent needs a solution/ folder")
        sandbox.copy_in(solution, "/workspace", owner=AGENT_UID)
        return AgentResult(stop_reason="submitted")


class NopAgent:
    """Submits the workspace unchanged."""

    name = "nop"

    def run(self, sandbox: Sandbox, ctx: AgentContext) -> AgentResult:
        return AgentResult(stop_reason="submitted")
