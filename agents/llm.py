"""Model providers on the official SDKs, one adapter per wire format: the Messages API
(`AnthropicModel`), Chat Completions (`OpenAIChatModel`, also for OpenAI-compatible servers:
vLLM, SGLang, Ollama, llama.cpp, by base URL) and the Responses API (`OpenAIResponsesModel`).
Which provider uses which adapter, SDK, key and usage format is the provider registry's record
(results/providers.py), reached through the ModelSpec: nothing here names a provider.

A provider keeps its own wire-format conversation; the agent loop only sees `Reply`s and
hands back tool results. Retries (408, 409, 429, 5xx, timeouts, connection errors; retry-after
honoured) happen here, within the deadline the caller gives, so that no request outlives the
agent's wall time; what is left after them is a ModelError (an infrastructure error, never an
agent's score). A request longer than the context window is a ContextOverflow: the agent
compacts and asks again. Messages API requests carry prompt-cache breakpoints; settings
(`--model-arg`, models.toml `args`) become each provider's own parameters.
"""

from __future__ import annotations

import importlib
import itertools
import json
import random
import re
import time
from typing import TYPE_CHECKING, Any, Callable

from . import ContextOverflow, Model, ModelError, ModelTimeout, Reply, ToolCall, ToolSpec
from .tools import Unparsable
from .wire import usage_tokens

if TYPE_CHECKING:
    from results.registry import ModelSpec  # parsed once per run, by the run's AgentSpec

#: the longest one request may wait for its answer
REQUEST_TIMEOUT_MAX = 600.0
MAX_TOKENS = 8192
ELIDED = "[output elided to keep the conversation within the context window: {n} characters; run it again if needed]"
SUMMARY_HEAD = "\n\n---\nYour earlier work on this task was compacted to save context. Your own summary of it:\n\n"
_OVERFLOW = re.compile(r"prompt is too long|context_length_exceeded|maximum context length|context window|"
                       r"exceeds? (the )?context|input is too long", re.I)
_LIMIT = re.compile(r"maximum context length is ([0-9][0-9,]*)|> ?([0-9][0-9,]*) maximum", re.I)


def _sdk_error(e: Exception, spec: ModelSpec) -> ModelError:
    status = getattr(e, "status_code", None)
    kind = type(e).__name__
    hints = {401: "check the API key", 403: "the key may not use this model", 404: "unknown model or endpoint",
             429: "rate limit or quota exhausted after retries", 400: "the request was refused"}
    hint = hints.get(status, "the API kept failing after retries" if status and status >= 500 else "")
    return ModelError(f"{spec.provider}/{spec.name}: {kind}{f' {status}' if status else ''}: {e}"
                      f"{f' ({hint})' if hint else ''}")


def _overflow(e: Exception) -> ContextOverflow | None:
    """The provider's context-overflow error (as the hosted APIs and OpenAI-compatible servers word it)."""
    body = getattr(e, "body", None)
    code = body.get("code") if isinstance(body, dict) else None
    if getattr(e, "status_code", None) not in (400, 413) or not (code == "context_length_exceeded"
                                                                   or _OVERFLOW.search(str(e))):
        return None
    m = _LIMIT.search(str(e))
    return ContextOverflow(str(e), int((m.group(1) or m.group(2)).replace(",", "")) if m else None)


def _retry_after(e: Exception) -> float | None:
    headers = getattr(getattr(e, "response", None), "headers", None) or {}
    for key, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            return float(headers.get(key)) / scale
        except (TypeError, ValueError):
            continue
    return None


def _parse_args(value: Any) -> Any:
    """Tool-call arguments as the model sent them, decoded where they are JSON text."""
    if not isinstance(value, str):
        return value
    if not value.strip():
        return {}
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return Unparsable(value)


class _Conversation:
    """What the providers share: retries within a deadline, the turn structure, elision and compaction."""

    sdk: Any
    system = ""

    def __init__(self, spec: ModelSpec, settings: dict | None = None, max_retries: int = 6,
                 max_tokens: int = MAX_TOKENS):
        self.spec, self.max_retries = spec, max_retries
        self.settings = dict(settings or {})
        self.max_tokens = int(self.settings.pop("max_tokens", max_tokens))
        self.messages: list[dict] = []
        self.turns: list[int] = []  # where each model turn begins in self.messages
        self.instruction = ""
        self.chars_per_token = 3.0
        self._tool_chars = 0

    # --- the Model protocol -------------------------------------------------------------
    def step(self, tools: list[ToolSpec], timeout: float | None = None) -> Reply:
        t, chars = time.monotonic(), self._chars(tools)
        raw = self._call(lambda left: self._create(self._body(tools, self.messages, final=False), left), timeout)
        self.turns.append(len(self.messages))
        reply = self._reply(raw, time.monotonic() - t, keep=True)
        if reply.input_tokens > 100:  # learn this model's characters per token (never above 3.6)
            self.chars_per_token = max(2.0, min(4.0, chars / reply.input_tokens) * 0.9)
        return reply

    def summarise(self, tools: list[ToolSpec], prompt: str, timeout: float | None = None) -> Reply:
        t, messages = time.monotonic(), self.messages + [self._user(prompt)]
        raw = self._call(lambda left: self._create(self._body(tools, messages, final=True), left), timeout)
        return self._reply(raw, time.monotonic() - t, keep=False)

    def add_user(self, text: str) -> None:
        self.messages.append(self._user(text))

    def size(self) -> int:
        return int(self._chars(None) / self.chars_per_token)

    def elide(self, keep_turns: int) -> int:
        keep = self.turns[-keep_turns:] if keep_turns > 0 else []
        end = keep[0] if keep else len(self.messages)
        n = 0
        for msg in self.messages[:end]:
            for holder, key in self._outputs(msg):
                text = holder.get(key)
                if isinstance(text, str) and len(text) > 400 and not text.startswith("[output elided"):
                    holder[key], n = ELIDED.format(n=len(text)), n + 1
        return n

    def compact(self, summary: str, keep_turns: int) -> None:
        keep = self.turns[-keep_turns:] if keep_turns > 0 else []
        start = keep[0] if keep else len(self.messages)
        head = self._head(self.instruction + SUMMARY_HEAD + summary)
        self.messages = head + self.messages[start:]
        self.turns = [i - start + len(head) for i in keep]

    # --- shared machinery ---------------------------------------------------------------
    def _chars(self, tools: list[ToolSpec] | None) -> int:
        if tools is not None:
            self._tool_chars = len(json.dumps([t.__dict__ for t in tools]))
        return len(self.system) + len(json.dumps(self.messages)) + self._tool_chars

    def _call(self, create: Callable[[float], Any], timeout: float | None) -> Any:
        """`create(seconds)` retried as the SDKs would, all within `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        name = f"{self.spec.provider}/{self.spec.name}"
        for attempt in itertools.count():
            left = REQUEST_TIMEOUT_MAX if deadline is None else min(REQUEST_TIMEOUT_MAX, deadline - time.monotonic())
            if left <= 0:
                raise ModelTimeout(f"{name}: no answer within the agent's remaining time")
            try:
                return create(left)
            except self.sdk.APIStatusError as e:
                if (overflow := _overflow(e)) is not None:
                    raise overflow from e
                should = e.response.headers.get("x-should-retry")
                retry, err = (should == "true" if should in ("true", "false")
                              else e.status_code in (408, 409, 429) or e.status_code >= 500), e
            except self.sdk.APIConnectionError as e:  # timeouts included
                retry, err = True, e
            except self.sdk_error as e:
                raise _sdk_error(e, self.spec) from e
            timed_out = isinstance(err, self.sdk.APITimeoutError) and deadline is not None
            if timed_out and time.monotonic() >= deadline - 1:
                raise ModelTimeout(f"{name}: no answer within the agent's remaining time") from err
            if not retry or attempt >= self.max_retries:
                raise _sdk_error(err, self.spec) from err
            wait = _retry_after(err)
            if wait is None or not 0 <= wait <= 60:
                wait = min(0.5 * 2 ** attempt, 8.0) * (1 - 0.25 * random.random())
            if deadline is not None and time.monotonic() + wait >= deadline:
                raise ModelTimeout(f"{name}: no answer within the agent's remaining time ({err})") from err
            time.sleep(wait)

    def _split_settings(self, known: tuple[str, ...]) -> tuple[dict, dict]:
        """(the settings every SDK version takes by name, the rest: sent as they are in the body)."""
        direct = {k: v for k, v in self.settings.items() if k in known}
        return direct, {k: v for k, v in self.settings.items() if k not in known and k not in self.mapped}

    mapped: tuple[str, ...] = ()


class AnthropicModel(_Conversation):
    """The Messages API with tool use, prompt-cache breakpoints and extended thinking
    (`thinking_budget`: its blocks stay in the history, as the API requires)."""

    mapped = ("thinking_budget",)

    def __init__(self, spec: ModelSpec, **kwargs):
        super().__init__(spec, **kwargs)
        self.sdk = sdk = importlib.import_module(spec.record.sdk)  # the record's SDK, imported here only
        self.sdk_error = sdk.AnthropicError
        self.client = sdk.Anthropic(base_url=spec.base_url, max_retries=0)

    def start(self, system: str, user: str) -> None:
        self.system, self.instruction = system, user
        self.messages, self.turns = [{"role": "user", "content": user}], []

    def _user(self, text: str) -> dict:
        return {"role": "user", "content": text}

    def _head(self, text: str) -> list[dict]:
        return [self._user(text)]

    def _outputs(self, msg: dict):
        if msg["role"] == "user" and isinstance(msg["content"], list):
            yield from ((b, "content") for b in msg["content"] if b.get("type") == "tool_result")

    def _body(self, tools: list[ToolSpec], messages: list[dict], final: bool) -> dict:
        direct, extra = self._split_settings(("temperature",))
        body = dict(model=self.spec.name, max_tokens=self.max_tokens, **direct,
                    # one breakpoint after tools + system, two moving ones at the last user messages
                    system=[{"type": "text", "text": self.system, "cache_control": {"type": "ephemeral"}}],
                    messages=_with_breakpoints(messages),
                    tools=[{"name": x.name, "description": x.description, "input_schema": x.parameters}
                           for x in tools])
        if budget := self.settings.get("thinking_budget"):
            body["thinking"] = {"type": "enabled", "budget_tokens": int(budget)}
            body["max_tokens"] = max(self.max_tokens, int(budget) + 4096)
        if final:
            body["tool_choice"] = {"type": "none"}
        if extra:
            body["extra_body"] = extra
        return body

    def _create(self, body: dict, timeout: float):
        return self.client.messages.create(**body, timeout=timeout)

    def _reply(self, r, latency: float, keep: bool) -> Reply:
        raw = r.model_dump(mode="json")
        calls = []
        for b, sent in zip(raw["content"], r.content):  # the inputs as sent: JSON mode would turn NaN into null
            if b["type"] == "tool_use":
                calls.append(ToolCall(b["id"], b["name"], _parse_args(getattr(sent, "input", b["input"]))))
                if not isinstance(b["input"], dict):  # the history must stay a valid request
                    b["input"] = calls[-1].args if isinstance(calls[-1].args, dict) else {}
        if keep:
            self.messages.append({"role": "assistant", "content": raw["content"]})
        text = "".join(b["text"] for b in raw["content"] if b["type"] == "text")
        return Reply(text, calls, latency_s=latency, raw=raw, **usage_tokens(self.spec.record.usage, raw.get("usage")))

    def add_results(self, results: list[tuple[str, str, bool]]) -> None:
        self.messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": cid, "content": out, "is_error": err} for cid, out, err in results]})


def _with_breakpoints(messages: list[dict], n: int = 2) -> list[dict]:
    """A copy of `messages` whose last `n` user messages end with a cache breakpoint."""
    out, marked = list(messages), 0
    for i in range(len(out) - 1, -1, -1):
        if marked == n:
            break
        if out[i]["role"] != "user":
            continue
        content = out[i]["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
        if not blocks:
            continue
        blocks[-1] = {**blocks[-1], "cache_control": {"type": "ephemeral"}}
        out[i], marked = {**out[i], "content": blocks}, marked + 1
    return out


class OpenAIChatModel(_Conversation):
    """Chat Completions with function tools (hosted, and OpenAI-compatible servers). The hosted
    API caches prompts by itself; its `cached_tokens` are read from the usage."""

    def __init__(self, spec: ModelSpec, **kwargs):
        super().__init__(spec, **kwargs)
        self.sdk = sdk = importlib.import_module(spec.record.sdk)  # the record's SDK, imported here only
        self.sdk_error = sdk.OpenAIError
        self.client = sdk.OpenAI(api_key=spec.record.api_key(), base_url=spec.base_url, max_retries=0)

    def start(self, system: str, user: str) -> None:
        self.instruction = user
        self.messages, self.turns = [{"role": "system", "content": system}, {"role": "user", "content": user}], []

    def _user(self, text: str) -> dict:
        return {"role": "user", "content": text}

    def _head(self, text: str) -> list[dict]:
        return [self.messages[0], self._user(text)]

    def _outputs(self, msg: dict):
        if msg.get("role") == "tool":
            yield msg, "content"

    def _body(self, tools: list[ToolSpec], messages: list[dict], final: bool) -> dict:
        direct, extra = self._split_settings(("temperature",))
        body = dict(model=self.spec.name, messages=messages, max_completion_tokens=self.max_tokens, **direct,
                    tools=[{"type": "function", "function": {"name": x.name, "description": x.description,
                                                             "parameters": x.parameters}} for x in tools])
        if final:
            body["tool_choice"] = "none"
        if extra:
            body["extra_body"] = extra
        return body

    def _create(self, body: dict, timeout: float):
        return self.client.chat.completions.create(**body, timeout=timeout)

    def _reply(self, r, latency: float, keep: bool) -> Reply:
        raw = r.model_dump(mode="json", exclude_none=True)
        msg = raw["choices"][0]["message"]
        if keep:
            self.messages.append({k: v for k, v in msg.items() if k in ("role", "content", "tool_calls")})
        calls = [ToolCall(c["id"], c["function"]["name"], _parse_args(c["function"].get("arguments")))
                 for c in msg.get("tool_calls") or []]
        return Reply(msg.get("content") or "", calls, latency_s=latency, raw=raw,
                     **usage_tokens(self.spec.record.usage, raw.get("usage")))

    def add_results(self, results: list[tuple[str, str, bool]]) -> None:
        for cid, out, err in results:
            self.messages.append({"role": "tool", "tool_call_id": cid, "content": ("ERROR: " if err else "") + out})


class OpenAIResponsesModel(OpenAIChatModel):
    """The Responses API, for models served only there: output items (reasoning included) go
    back as input items."""

    mapped = ("reasoning_effort",)

    def start(self, system: str, user: str) -> None:
        self.system, self.instruction = system, user
        self.messages, self.turns = [self._user(user)], []

    def _head(self, text: str) -> list[dict]:
        return [self._user(text)]

    def _outputs(self, msg: dict):
        if msg.get("type") == "function_call_output":
            yield msg, "output"

    def _body(self, tools: list[ToolSpec], messages: list[dict], final: bool) -> dict:
        direct, extra = self._split_settings(("temperature",))
        body = dict(model=self.spec.name, instructions=self.system, input=messages, max_output_tokens=self.max_tokens,
                    **direct, tools=[{"type": "function", "name": x.name, "description": x.description,
                                      "parameters": x.parameters} for x in tools])
        if effort := self.settings.get("reasoning_effort"):
            body["reasoning"] = {"effort": effort}
        if final:
            body["tool_choice"] = "none"
        if extra:
            body["extra_body"] = extra
        return body

    def _create(self, body: dict, timeout: float):
        return self.client.responses.create(**body, timeout=timeout)

    def _reply(self, r, latency: float, keep: bool) -> Reply:
        raw = r.model_dump(mode="json", exclude_none=True)
        text, calls = "", []
        for item in raw.get("output", []):
            if keep:
                self.messages.append(item)
            if item.get("type") == "message":
                text += "".join(c.get("text", "") for c in item.get("content", []) if c.get("type") == "output_text")
            elif item.get("type") == "function_call":
                calls.append(ToolCall(item["call_id"], item["name"], _parse_args(item.get("arguments"))))
        return Reply(text, calls, latency_s=latency, raw=raw, **usage_tokens(self.spec.record.usage, raw.get("usage")))

    def add_results(self, results: list[tuple[str, str, bool]]) -> None:
        for cid, out, err in results:
            self.messages.append({"type": "function_call_output", "call_id": cid,
                                  "output": ("ERROR: " if err else "") + out})


def make_model(spec: ModelSpec, **kwargs) -> Model:
    """A fresh conversation with the model (sub-agents each get their own). kwargs: settings
    (the --model-arg dict), max_retries, max_tokens."""
    return ADAPTERS[spec.record.adapter](spec, **kwargs)


#: the adapters a provider record's `adapter` names
ADAPTERS = {cls.__name__: cls for cls in (AnthropicModel, OpenAIChatModel, OpenAIResponsesModel)}
