"""Model providers on the official SDKs: Anthropic Messages (`anthropic/`), OpenAI Chat
Completions (`openai/`), the OpenAI Responses API (`openai-responses/`, for models served only
there), and any OpenAI-compatible server (vLLM, SGLang, Ollama, llama.cpp) by base URL.

A provider keeps its own wire-format conversation; the agent loop only sees `Reply`s and
hands back tool results. Retries (429, 5xx, timeouts, connection errors, honouring
retry-after) are the SDKs' own; what is left after them is a ModelError: an
infrastructure error, never an agent's score.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING

from . import Model, ModelError, Reply, ToolCall, ToolSpec

if TYPE_CHECKING:
    from results.registry import ModelSpec  # parsed once per run, by the run's AgentSpec


def _sdk_error(e: Exception, spec: ModelSpec) -> ModelError:
    status = getattr(e, "status_code", None)
    kind = type(e).__name__
    hints = {401: "check the API key", 403: "the key may not use this model", 404: "unknown model or endpoint",
             429: "rate limit or quota exhausted after retries", 400: "the request was refused"}
    hint = hints.get(status, "the API kept failing after retries" if status and status >= 500 else "")
    return ModelError(f"{spec.provider}/{spec.name}: {kind}{f' {status}' if status else ''}: {e}"
                      f"{f' ({hint})' if hint else ''}")


class AnthropicModel:
    """The Messages API with tool use."""

    def __init__(self, spec: ModelSpec, max_tokens: int = 8192, max_retries: int = 6):
        import anthropic

        self.spec, self.max_tokens, self._anthropic = spec, max_tokens, anthropic
        self.client = anthropic.Anthropic(base_url=spec.base_url, max_retries=max_retries)
        self.system, self.messages = "", []

    def start(self, system: str, user: str) -> None:
        self.system, self.messages = system, [{"role": "user", "content": user}]

    def step(self, tools: list[ToolSpec]) -> Reply:
        t = time.monotonic()
        try:
            r = self.client.messages.create(
                model=self.spec.name, max_tokens=self.max_tokens, system=self.system, messages=self.messages,
                tools=[{"name": x.name, "description": x.description, "input_schema": x.parameters} for x in tools])
        except self._anthropic.AnthropicError as e:
            raise _sdk_error(e, self.spec) from e
        raw = r.model_dump(mode="json")
        self.messages.append({"role": "assistant", "content": raw["content"]})
        text = "".join(b["text"] for b in raw["content"] if b["type"] == "text")
        calls = [ToolCall(b["id"], b["name"], b["input"] or {}) for b in raw["content"] if b["type"] == "tool_use"]
        return Reply(text, calls, r.usage.input_tokens, r.usage.output_tokens, time.monotonic() - t, raw)

    def add_results(self, results: list[tuple[str, str, bool]]) -> None:
        self.messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": cid, "content": out, "is_error": err} for cid, out, err in results]})

    def add_user(self, text: str) -> None:
        self.messages.append({"role": "user", "content": text})


class OpenAIChatModel:
    """Chat Completions with function tools (OpenAI, and OpenAI-compatible servers)."""

    def __init__(self, spec: ModelSpec, max_tokens: int = 8192, max_retries: int = 6):
        import openai

        self.spec, self.max_tokens, self._openai = spec, max_tokens, openai
        key = os.environ.get("OPENAI_API_KEY") or ("EMPTY" if spec.provider == "openai-compatible" else None)
        self.client = openai.OpenAI(api_key=key, base_url=spec.base_url, max_retries=max_retries)
        self.messages = []

    def start(self, system: str, user: str) -> None:
        self.messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def step(self, tools: list[ToolSpec]) -> Reply:
        t = time.monotonic()
        try:
            r = self.client.chat.completions.create(
                model=self.spec.name, messages=self.messages, max_completion_tokens=self.max_tokens,
                tools=[{"type": "function", "function": {"name": x.name, "description": x.description,
                                                         "parameters": x.parameters}} for x in tools])
        except self._openai.OpenAIError as e:
            raise _sdk_error(e, self.spec) from e
        raw = r.model_dump(mode="json", exclude_none=True)
        msg = raw["choices"][0]["message"]
        self.messages.append({k: v for k, v in msg.items() if k in ("role", "content", "tool_calls")})
        calls = []
        for c in msg.get("tool_calls") or []:
            try:
                args = json.loads(c["function"]["arguments"] or "{}")
            except json.JSONDecodeError:
                args = {"__unparsable__": c["function"]["arguments"]}
            calls.append(ToolCall(c["id"], c["function"]["name"], args))
        usage = raw.get("usage") or {}
        return Reply(msg.get("content") or "", calls, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0),
                     time.monotonic() - t, raw)

    def add_results(self, results: list[tuple[str, str, bool]]) -> None:
        for cid, out, err in results:
            self.messages.append({"role": "tool", "tool_call_id": cid, "content": ("ERROR: " if err else "") + out})

    def add_user(self, text: str) -> None:
        self.messages.append({"role": "user", "content": text})


class OpenAIResponsesModel(OpenAIChatModel):
    """The Responses API, for models served only there: output items go back as input items."""

    def start(self, system: str, user: str) -> None:
        self.instructions, self.messages = system, [{"role": "user", "content": user}]

    def step(self, tools: list[ToolSpec]) -> Reply:
        t = time.monotonic()
        try:
            r = self.client.responses.create(
                model=self.spec.name, instructions=self.instructions, input=self.messages,
                max_output_tokens=self.max_tokens,
                tools=[{"type": "function", "name": x.name, "description": x.description, "parameters": x.parameters}
                       for x in tools])
        except self._openai.OpenAIError as e:
            raise _sdk_error(e, self.spec) from e
        raw = r.model_dump(mode="json", exclude_none=True)
        text, calls = "", []
        for item in raw.get("output", []):
            self.messages.append(item)
            if item.get("type") == "message":
                text += "".join(c.get("text", "") for c in item.get("content", []) if c.get("type") == "output_text")
            elif item.get("type") == "function_call":
                try:
                    args = json.loads(item.get("arguments") or "{}")
                except json.JSONDecodeError:
                    args = {"__unparsable__": item.get("arguments")}
                calls.append(ToolCall(item["call_id"], item["name"], args))
        usage = raw.get("usage") or {}
        return Reply(text, calls, usage.get("input_tokens", 0), usage.get("output_tokens", 0), time.monotonic() - t, raw)

    def add_results(self, results: list[tuple[str, str, bool]]) -> None:
        for cid, out, err in results:
            self.messages.append({"type": "function_call_output", "call_id": cid,
                                  "output": ("ERROR: " if err else "") + out})


def make_model(spec: ModelSpec, **kwargs) -> Model:
    """A fresh conversation with the model (sub-agents each get their own)."""
    cls = {"anthropic": AnthropicModel, "openai-responses": OpenAIResponsesModel}.get(spec.provider, OpenAIChatModel)
    return cls(spec, **kwargs)
