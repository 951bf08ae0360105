"""A scripted model provider: FOR TESTS AND DEVELOPMENT. It plays turns written in advance
through the built-in agent's model interface (agents/llm.py), with no SDK and no HTTP.

    script = Script([bash("python3 bench.py"), Turn(calls=[("create", {"path": "x.py", "content": "..."})]),
                     submit("faster")])
    ReactAgent(models=script).run(sandbox, ctx)      # script.requests: every request as sent

A `ScriptedModel` is a `_Conversation` of agents/llm.py like the real providers: the retries
within the deadline, the turn structure, elision and compaction are theirs, not copies. Only
the wire is replaced: a request is handed to the script, which answers with its next `Turn`
(or a function of the request that returns one). A turn may raise instead of answering:
`overflow()` is a provider's context-overflow error, `server_error(503)` a failure the SDKs
retry. Token counts default to an estimate of the request (3 characters a token), so that
budgets and context management see requests grow as a real model's would.
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Iterable

from . import ModelError, Reply, ToolCall, ToolSpec
from .llm import MAX_TOKENS, _Conversation


class APIError(Exception):
    """What a scripted turn may raise: the shape of the SDKs' errors (agents/llm.py reads
    `status_code`, `body` and `response.headers`)."""


class APIStatusError(APIError):
    def __init__(self, message: str, status_code: int, body: dict | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status_code, self.body = status_code, body
        self.response = SimpleNamespace(headers=headers or {})


class APIConnectionError(APIError):
    pass


class APITimeoutError(APIConnectionError):
    pass


SDK = SimpleNamespace(APIStatusError=APIStatusError, APIConnectionError=APIConnectionError,
                      APITimeoutError=APITimeoutError)


@dataclass
class Turn:
    """One scripted answer. `calls`: (tool name, arguments) pairs, in order."""

    text: str = ""
    calls: list[tuple[str, Any]] = field(default_factory=list)
    #: None: estimated from the request (its characters / 3)
    input_tokens: int | None = None
    output_tokens: int = 20
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    #: raised instead of answering (an APIStatusError is retried as the SDKs' would be)
    error: Exception | None = None
    #: seconds the answer takes
    delay_s: float = 0.0


def bash(command: str, text: str = "", **kw) -> Turn:
    return Turn(text=text, calls=[("bash", {"command": command})], **kw)


def submit(summary: str = "done", **kw) -> Turn:
    return Turn(calls=[("submit", {"summary": summary})], **kw)


def overflow(limit: int | None = None) -> Turn:
    """The provider refusing the request as longer than its window (naming `limit`, if given)."""
    tail = f": maximum context length is {limit} tokens" if limit else ""
    return Turn(error=APIStatusError(f"prompt is too long{tail}", 400))


def server_error(status: int = 503, retry_after: float | None = None) -> Turn:
    headers = {} if retry_after is None else {"retry-after": str(retry_after)}
    return Turn(error=APIStatusError(f"server error {status}", status, headers=headers))


class Script:
    """The turns of every conversation made from it (sub-agents' included), played in order;
    called like agents.llm.make_model. `requests`: each request as sent (system, messages,
    tools, final); `summaries`: the answers to compaction requests (default: a fixed text)."""

    def __init__(self, turns: Iterable[Turn | Callable[[dict], Turn]], summaries: Iterable[str] = ()):
        self._turns = iter(turns)
        self._summaries = iter(summaries)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.requests: list[dict] = []

    def __call__(self, spec, settings: dict | None = None, max_retries: int = 6, max_tokens: int = MAX_TOKENS):
        return ScriptedModel(spec, self, settings=settings, max_retries=max_retries, max_tokens=max_tokens)

    def answer(self, request: dict) -> Turn:
        with self._lock:
            self.requests.append(request)
            if request["final"]:
                return Turn(text=next(self._summaries, "scripted summary of the work so far"))
            turn = next(self._turns, None)
        if turn is None:
            raise ModelError("the script has no more turns")
        return turn(request) if callable(turn) else turn

    def call_id(self) -> str:
        return f"call_{next(self._ids)}"


class ScriptedModel(_Conversation):
    """A conversation whose answers come from a Script (see the module's doc)."""

    sdk, sdk_error = SDK, APIError

    def __init__(self, spec, script: Script, **kwargs):
        super().__init__(spec, **kwargs)
        self.script = script

    def start(self, system: str, user: str) -> None:
        self.system, self.instruction = system, user
        self.messages, self.turns = [self._user(user)], []

    def _user(self, text: str) -> dict:
        return {"role": "user", "content": text}

    def _head(self, text: str) -> list[dict]:
        return [self._user(text)]

    def _outputs(self, msg: dict):
        if msg.get("role") == "tool":
            yield msg, "content"

    def _body(self, tools: list[ToolSpec], messages: list[dict], final: bool) -> dict:
        return {"system": self.system, "messages": copy.deepcopy(messages), "tools": [t.name for t in tools],
                "final": final, "max_tokens": self.max_tokens, "settings": dict(self.settings)}

    def _create(self, body: dict, timeout: float):
        turn = self.script.answer(body)
        if turn.delay_s:
            time.sleep(min(turn.delay_s, timeout))
            if turn.delay_s > timeout:
                raise APITimeoutError("the scripted answer took longer than the request's timeout")
        if turn.error is not None:
            raise turn.error
        return turn, body

    def _reply(self, raw, latency: float, keep: bool) -> Reply:
        turn, body = raw
        calls = [ToolCall(self.script.call_id(), name, args) for name, args in turn.calls]
        if keep:  # the history stays JSON, whatever the arguments (agents.tools.Unparsable included)
            sent = [{"id": c.id, "name": c.name, "args": json.loads(json.dumps(c.args, default=str))} for c in calls]
            self.messages.append({"role": "assistant", "content": turn.text, "tool_calls": sent})
        tokens = turn.input_tokens if turn.input_tokens is not None else len(json.dumps(body)) // 3
        return Reply(turn.text, calls, input_tokens=tokens, output_tokens=turn.output_tokens, latency_s=latency,
                     raw={"turn": turn.text}, cache_read_tokens=turn.cache_read_tokens,
                     cache_write_tokens=turn.cache_write_tokens)

    def add_results(self, results: list[tuple[str, str, bool]]) -> None:
        for cid, out, err in results:
            self.messages.append({"role": "tool", "tool_call_id": cid, "content": ("ERROR: " if err else "") + out})
