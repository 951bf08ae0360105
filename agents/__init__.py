"""Agents: what attempts a task inside the agent sandbox.

An agent gets the task and a running sandbox whose /workspace holds the starting code;
whatever /workspace holds when `run` returns is the submission. Agents are chosen by name
through `AGENTS`, imported lazily.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sandbox import Sandbox


class AgentError(Exception):
    """The agent failed in a way that is its own (a real, failed outcome, not a harness fault)."""


@dataclass
class AgentResult:
    stop_reason: str = "done"
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0


@dataclass
class AgentContext:
    """What the harness hands an agent besides the sandbox."""

    task: "object"  # harness.task.TaskSpec (not imported: agents do not depend on the harness)
    trial_dir: Path
    model: str | None = None
    #: OpenAI-compatible server (or any provider's endpoint override); never a secret
    base_url: str | None = None
    #: a transcript.jsonl whose tool calls the replay agent re-runs
    replay: Path | None = None


class Agent(Protocol):
    name: str

    def run(self, sandbox: Sandbox, ctx: AgentContext) -> AgentResult:
        """Work on ctx.task in `sandbox`. Raises AgentError for the agent's own failures;
        sandbox.SandboxError passes through as an infrastructure error."""
        ...


#: agent name -> (module, class)
AGENTS = {
    "oracle": ("agents.builtin", "OracleAgent"),
    "nop": ("agents.builtin", "NopAgent"),
    "react": ("agents.react", "ReactAgent"),
    "replay": ("agents.builtin", "ReplayAgent"),
}


def get_agent(name: str) -> Agent:
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; choose one of {sorted(AGENTS)}")
    module, attr = AGENTS[name]
    return getattr(importlib.import_module(module), attr)()
