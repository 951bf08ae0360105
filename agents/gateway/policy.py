"""What the gateway lets through and what it charges: provider-side tools (the provider runs them
with its own network: a sandbox without one would get the internet by proxy) refused unless the
task allows them; a call's claim on the trial's limits, reserved at admission and settled when
it ends; what a cut stream is charged; and whether a 429 is the trial's own doing."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, replace

from .. import Reply
from ..wire import sse

#: the kinds of provider-side tool a task may allow (`[agent] provider_tools`), by type prefix
KINDS = {"web_search": "web_search", "web_fetch": "web_fetch", "code_execution": "code_execution",
         "code_interpreter": "code_execution", "file_search": "file_search", "mcp": "mcp",
         "computer": "computer", "image_generation": "image_generation", "tool_search": "tool_search"}
#: tool types the client itself runs (in the sandbox): always allowed
CLIENT_TOOLS = {"messages": ("custom", "bash_", "text_editor_", "memory_"),
                "completions": ("function", "custom", "local_shell", "shell", "apply_patch")}
#: request keys that bring server-side tools without a `tools` entry
TOOL_KEYS = {"mcp_servers": "mcp", "container": "code_execution", "web_search_options": "web_search"}

#: calls of one trial that may be in flight at once (more wait for a slot)
MAX_IN_FLIGHT = 8
#: a 429 met while, within the last minute, the trial had more calls in flight than this, or
#: started more calls than FAIR_PER_MINUTE, is the trial's own doing (the agent's outcome)
FAIR_IN_FLIGHT = 4
FAIR_PER_MINUTE = 60
#: a request's tokens, estimated from its size (the bytes of its JSON; the providers' ~4 a token)
BYTES_PER_TOKEN = 4


def provider_tools(family: str, body: dict) -> list[str]:
    """The kinds of provider-side tool `body` asks for (a type the gateway does not know: its
    own name, so that it is refused too). A namespace (Codex groups tools in them) is looked into."""
    found = [kind for key, kind in TOOL_KEYS.items() if body.get(key)]
    todo = list(body.get("tools") or []) if isinstance(body.get("tools"), list) else []
    while todo:
        tool = todo.pop()
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "namespace" and isinstance(tool.get("tools"), list) and len(todo) < 10_000:
            todo += tool["tools"]
        elif isinstance(kind, str) and not kind.startswith(CLIENT_TOOLS[family]):
            found.append(next((v for k, v in KINDS.items() if kind.startswith(k)), kind))
    return sorted(set(found))


def _out_cap(body: dict) -> int:
    """The output tokens the request allows itself (0 when it does not say)."""
    for key in ("max_tokens", "max_output_tokens", "max_completion_tokens"):
        v = body.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return 0


@dataclass
class Claim:
    """What an admitted call holds on the trial's limits until it settles."""

    turn: bool
    input_tokens: int
    output_tokens: int
    cost: float


def claim(budget, body: dict, size: int, turn: bool) -> Claim:
    """A call's claim: its input tokens estimated from the request's size, its output tokens as
    many as it asks for (capped by what the limit has left), their cost at the model's price."""
    n_in = size // BYTES_PER_TOKEN if turn else 0
    n_out = _out_cap(body) if turn else 0
    if budget.max_output_tokens is not None:
        n_out = min(n_out, budget.max_output_tokens)
    cost = budget.price.cost(n_in, n_out) if budget.price is not None and turn else 0.0
    return Claim(turn, n_in, n_out, cost)


def fits(budget, held: list[Claim]) -> bool:
    """Whether the calls in flight (`held`) cannot already reach a limit: one more may start."""
    if budget.turns + sum(c.turn for c in held) >= budget.max_turns:
        return False
    if budget.max_input_tokens is not None and \
            budget.input_tokens + sum(c.input_tokens for c in held) >= budget.max_input_tokens:
        return False
    if budget.max_output_tokens is not None and \
            budget.output_tokens + sum(c.output_tokens for c in held) >= budget.max_output_tokens:
        return False
    cost = budget.cost_usd
    return budget.max_cost_usd is None or cost is None or cost + sum(c.cost for c in held) < budget.max_cost_usd


def finished(family: str, data: bytes, streamed: bool) -> bool:
    """Whether a 200 answer arrived whole, with its usage: else it is charged by estimate."""
    if not streamed:
        return data.rstrip().endswith(b"}") and b'"usage"' in data
    for ev in reversed(sse(data)):
        kind = ev.get("type")
        if kind in ("message_stop", "response.completed", "response.incomplete", "response.failed") or \
                (kind == "message_delta" and ev.get("usage")):  # Anthropic's usage event
            return True
        if kind is None and ev.get("usage"):  # Chat Completions' last chunk
            return True
    return False


def streamed_output(data: bytes) -> int:
    """Output tokens a (cut) stream delivered: the characters of its text, thinking and tool
    arguments, at 4 a token."""
    chars = 0
    for ev in sse(data):
        d = ev.get("delta")
        if isinstance(d, str):  # Responses: *.delta events
            chars += len(d)
        elif isinstance(d, dict):  # Anthropic: content_block_delta
            chars += sum(len(d[k]) for k in ("text", "thinking", "partial_json") if isinstance(d.get(k), str))
        for choice in ev.get("choices") or []:  # Chat Completions
            delta = choice.get("delta") or {} if isinstance(choice, dict) else {}
            chars += len(delta.get("content") or "")
            for call in delta.get("tool_calls") or []:
                chars += len((call.get("function") or {}).get("arguments") or "")
    return -(-chars // BYTES_PER_TOKEN)


def charged(reply: Reply, held: Claim, family: str, data: bytes, streamed: bool) -> tuple[Reply, bool]:
    """(what a 200 answer is charged, whether it arrived whole): its own usage when whole; else
    (a stream cut before its usage event, a body cut short) never less than the request's
    estimated input and the output that was streamed."""
    if finished(family, data, streamed):
        return reply, True
    out = streamed_output(data) if streamed else len(data) // BYTES_PER_TOKEN
    return replace(reply, input_tokens=max(reply.input_tokens, held.input_tokens),
                   output_tokens=max(reply.output_tokens, out)), False


class Traffic:
    """The trial's recent calls: when each started and how many were in flight then."""

    def __init__(self):
        self._starts: collections.deque[tuple[float, int]] = collections.deque()

    def started(self, in_flight: int) -> None:
        now = time.monotonic()
        self._starts.append((now, in_flight))
        while self._starts and self._starts[0][0] < now - 60:
            self._starts.popleft()

    def crowded(self) -> bool:
        """Whether the last minute's traffic was above the fair level (a 429 then is the trial's)."""
        recent = [n for t, n in self._starts if t >= time.monotonic() - 60]
        return len(recent) > FAIR_PER_MINUTE or max(recent, default=0) > FAIR_IN_FLIGHT
