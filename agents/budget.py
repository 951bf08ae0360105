"""The trial's limits and what it has spent: the `Budget` an agent and its sub-agents share,
the `StopAgent` exceptions its limits raise, and the transcript every agent appends to.

Below the agent loop (agents/react.py), its context management (agents/context.py) and the
installed agents' gateway: each of them charges the same Budget and stops on the same
exceptions.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from results.records import Usage

from . import Reply

if TYPE_CHECKING:
    from results.registry import Prices


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


class SandboxLost(StopAgent):
    """A tool call lost the sandbox (the exec server killed, out of memory): the agent's own doing
    as far as the harness can tell; /workspace is still taken and verified."""

    reason = "sandbox_lost"


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
    price: "Prices | None"
    deadline: float | None = None
    #: seconds the agent lost to its sandbox being frozen (another trial timing on its cores):
    #: added to the deadline, so that frozen time is not the agent's (FrozenInTools for the
    #: built-in agent; all of it for an installed agent, whose CLI is frozen with the sandbox)
    frozen: Callable[[], float] | None = None
    turns: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    parent: "Budget | None" = None

    def child(self, share: float) -> "Budget":
        """A sub-agent's budget: `share` of what is left here; its spending counts here too."""
        def part(limit, used):
            return None if limit is None else max(1, int((limit - used) * share))
        return Budget(part(self.max_turns, self.turns), part(self.max_input_tokens, self.input_tokens),
                      part(self.max_output_tokens, self.output_tokens),
                      None if self.max_cost_usd is None else self.max_cost_usd * share,
                      self.timeout_s, self.price, deadline=self.deadline, frozen=self.frozen, parent=self)

    @property
    def cost_usd(self) -> float | None:
        if self.price is None:
            return None
        return self.price.cost(self.input_tokens, self.output_tokens, self.cache_read_tokens, self.cache_write_tokens)

    @property
    def uncached_cost_usd(self) -> float | None:
        """What the same tokens would have cost with no prompt cache."""
        return None if self.price is None else self.price.cost(self.input_tokens, self.output_tokens)

    def usage(self, elisions: int = 0, compactions: int = 0) -> Usage:
        """What was spent, as the trial records it."""
        return Usage(input_tokens=self.input_tokens, output_tokens=self.output_tokens, cost_usd=self.cost_usd,
                     cache_read_tokens=self.cache_read_tokens, cache_write_tokens=self.cache_write_tokens,
                     uncached_cost_usd=self.uncached_cost_usd, elisions=elisions, compactions=compactions)

    def time_left(self) -> float:
        """Seconds of agent wall time left (the clock starts at the first model call)."""
        if self.deadline is None:
            return self.timeout_s
        return max(0.0, self._end() - time.monotonic())

    def _end(self) -> float:
        return self.deadline + (self.frozen() if self.frozen is not None else 0.0)

    def before_call(self, turn: bool = True) -> None:
        """Raises a StopAgent when no further model call (`turn`: an agent turn) is allowed."""
        if self.deadline is None:
            self.deadline = time.monotonic() + self.timeout_s
        if turn and self.turns >= self.max_turns:
            raise TurnLimit(f"{self.turns} model calls")
        if time.monotonic() >= self._end():
            raise TimeLimit("agent wall time")
        if self.parent is not None:
            self.parent.before_call(turn)

    def charge(self, reply: Reply, turn: bool = True) -> None:
        if self.parent is not None:
            self.parent.charge(reply, turn)
        self.turns += int(turn)
        self.input_tokens += reply.input_tokens
        self.output_tokens += reply.output_tokens
        self.cache_read_tokens += reply.cache_read_tokens
        self.cache_write_tokens += reply.cache_write_tokens
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
