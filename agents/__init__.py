"""Agents: what attempts a task inside the agent sandbox, and the models they call.

An agent gets the task and a running sandbox whose /workspace holds the starting code;
whatever /workspace holds when `run` returns is the submission. Agents are chosen by name
through `AGENTS`, imported lazily. An LLM agent talks to its model through the `Model`
protocol (providers in agents/llm.py, one wire format each).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from results.records import Usage
from sandbox import Sandbox

if TYPE_CHECKING:
    from sandbox import SandboxConfig
    from results.records import AgentSpec


class AgentError(Exception):
    """The agent failed in a way that is its own (a real, failed outcome, not a harness fault)."""


class ModelError(Exception):
    """The model API failed for good (auth, quota, bad request, server down): an infrastructure error."""


class ContextOverflow(ModelError):
    """The request was longer than the model's context window (the provider said so): the agent
    compacts its conversation and asks again. `limit`: the window the error named, if any."""

    def __init__(self, message: str, limit: int | None = None):
        super().__init__(message)
        self.limit = limit


class ModelTimeout(ModelError):
    """No answer before the deadline the caller gave (the agent's remaining wall time)."""


@dataclass
class AgentResult:
    stop_reason: str = "done"
    #: what the model calls used (tokens, cost, context management): nested whole in trial.json
    usage: Usage = field(default_factory=Usage)


@dataclass
class AgentContext:
    """What the harness hands an agent besides the sandbox."""

    task: "object"  # harness.task.TaskSpec (not imported: agents do not depend on the harness)
    trial_dir: Path
    #: the agent as the run was asked for it: name, model, base URL, replay transcript, limit overrides
    agent: "AgentSpec | None" = None


class Agent(Protocol):
    """What the harness calls. Agents subclass BaseAgent, which declares the hooks and what
    they accept, so that the harness asks instead of looking attributes up."""

    name: str

    def run(self, sandbox: Sandbox, ctx: AgentContext) -> AgentResult:
        """Work on ctx.task in `sandbox`. Raises AgentError for the agent's own failures;
        sandbox.SandboxError passes through as an infrastructure error."""
        ...


class BaseAgent:
    """An agent's declarations and hooks, with the defaults of an agent that needs nothing."""

    name = ""
    #: the wire families (results/providers.py `wire`) of the models it can call; None: any
    #: model the built-in adapters speak; () : it calls no model
    wires: tuple[str, ...] | None = ()
    #: it runs programs of its own image (a CLI): only a backend that prepares images can host it
    needs_images = False
    #: the version of what it runs, recorded with the run (an installed agent's CLI)
    version: str | None = None

    def accepts(self, model_spec) -> str | None:
        """Why this agent cannot use `model_spec` (a results.registry.ModelSpec or None), or None."""
        if self.wires is None or model_spec is None or model_spec.record.wire in self.wires:
            return None
        return f"the {self.name} agent calls only models of the {'/'.join(self.wires)} wire family"

    def prepare_sandbox(self, config: "SandboxConfig") -> "SandboxConfig":
        """The agent sandbox's config, adjusted before it starts (default: as it is)."""
        return config

    def release(self) -> None:
        """Free what prepare_sandbox made, once the trial has ended, however (default: nothing)."""

    def run(self, sandbox: Sandbox, ctx: AgentContext) -> AgentResult:
        raise NotImplementedError


@dataclass
class ToolSpec:
    name: str
    description: str
    parameters: dict  # JSON schema of the arguments


@dataclass
class ToolCall:
    id: str
    name: str
    #: as the model sent them: usually a dict, but anything JSON (or agents.tools.Unparsable)
    args: Any


@dataclass
class Reply:
    text: str
    tool_calls: list[ToolCall]
    input_tokens: int  # every prompt token, cached ones included
    output_tokens: int
    latency_s: float
    raw: dict = field(repr=False, default_factory=dict)
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


class Model(Protocol):
    """One conversation with a model, kept in the provider's own wire format; the agent loop
    sees only `Reply`s and hands back tool results."""

    def start(self, system: str, user: str) -> None:
        """Begin the conversation (drops any earlier one)."""
        ...

    def step(self, tools: list[ToolSpec], timeout: float | None = None) -> Reply:
        """One model call, its reply appended to the conversation, retries included, all within
        `timeout` seconds. Raises ContextOverflow when the request was too long, ModelTimeout
        when `timeout` ran out, ModelError once the retries are spent."""
        ...

    def summarise(self, tools: list[ToolSpec], prompt: str, timeout: float | None = None) -> Reply:
        """The conversation so far plus `prompt`, answered without tools; the conversation is
        left as it was."""
        ...

    def size(self) -> int:
        """Estimated tokens of the next request."""
        ...

    def elide(self, keep_turns: int) -> int:
        """Replace the long tool outputs older than the last `keep_turns` turns with a note.
        Returns how many were elided."""
        ...

    def compact(self, summary: str, keep_turns: int) -> None:
        """Restart the conversation from the task, `summary` and the last `keep_turns` turns."""
        ...

    def add_results(self, results: list[tuple[str, str, bool]]) -> None:
        """Tool results, as (tool call id, output, is_error), for the next step."""
        ...

    def add_user(self, text: str) -> None:
        """A user message for the next step."""
        ...


#: agent name -> (module, class)
AGENTS = {
    "oracle": ("agents.builtin", "OracleAgent"),
    "nop": ("agents.builtin", "NopAgent"),
    "react": ("agents.react", "ReactAgent"),
    "replay": ("agents.builtin", "ReplayAgent"),
    "claude-code": ("agents.installed", "ClaudeCodeAgent"),
    "codex": ("agents.installed", "CodexAgent"),
}


def agent_class(name: str) -> type[BaseAgent]:
    """The class of agent `name`: its declarations, read without making one."""
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; choose one of {sorted(AGENTS)}")
    module, attr = AGENTS[name]
    return getattr(importlib.import_module(module), attr)


def get_agent(name: str) -> BaseAgent:
    return agent_class(name)()
