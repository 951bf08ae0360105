"""Model calls read off the wire, for the gateway's transcript and accounting: a request's tool
results and opening, a response (whole, or as its server-sent events) as one reply with its
text, tool calls and tokens. Anthropic Messages, OpenAI Responses and Chat Completions; what
cannot be read is left out, never an error (the bytes themselves went through untouched)."""

from __future__ import annotations

import json

from . import Reply, ToolCall

def sse(data: bytes) -> list[dict]:
    """The JSON events of a server-sent event stream (comments, [DONE] and junk skipped)."""
    events = []
    for block in data.replace(b"\r\n", b"\n").split(b"\n\n"):
        payload = b"\n".join(line[5:].lstrip() for line in block.split(b"\n") if line.startswith(b"data:"))
        try:
            event = json.loads(payload)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def _anthropic_stream(events: list[dict]) -> dict:
    msg, blocks, partial = {}, {}, {}
    for ev in events:
        kind = ev.get("type")
        if kind == "message_start":
            msg = dict(ev.get("message") or {})
        elif kind == "content_block_start":
            blocks[ev.get("index", 0)] = dict(ev.get("content_block") or {})
        elif kind == "content_block_delta":
            b, d = blocks.setdefault(ev.get("index", 0), {}), ev.get("delta") or {}
            for key in ("text", "thinking", "signature"):
                if key in d:
                    b[key] = b.get(key, "") + d[key]
            if "partial_json" in d:
                partial[ev.get("index", 0)] = partial.get(ev.get("index", 0), "") + d["partial_json"]
        elif kind == "message_delta":
            msg.update({k: v for k, v in (ev.get("delta") or {}).items() if v is not None})
            msg["usage"] = {**(msg.get("usage") or {}), **{k: v for k, v in (ev.get("usage") or {}).items()
                                                           if v is not None}}
    for i, text in partial.items():
        try:
            blocks[i]["input"] = json.loads(text) if text else {}
        except ValueError:
            blocks[i]["input"] = text
    msg["content"] = [blocks[i] for i in sorted(blocks)]
    return msg


def _chat_stream(events: list[dict]) -> dict:
    text, calls, usage, finish = "", {}, {}, None
    for ev in events:
        usage = ev.get("usage") or usage
        for choice in ev.get("choices") or []:
            d = choice.get("delta") or {}
            text += d.get("content") or ""
            finish = choice.get("finish_reason") or finish
            for c in d.get("tool_calls") or []:
                call = calls.setdefault(c.get("index", 0), {"id": "", "function": {"name": "", "arguments": ""}})
                call["id"] = c.get("id") or call["id"]
                fn = c.get("function") or {}
                call["function"]["name"] += fn.get("name") or ""
                call["function"]["arguments"] += fn.get("arguments") or ""
    message = {"role": "assistant", "content": text, "tool_calls": [calls[i] for i in sorted(calls)]}
    return {"choices": [{"message": message, "finish_reason": finish}], "usage": usage}


def parse_response(family: str, body: bytes, streamed: bool) -> dict:
    """The reply as one JSON object in the provider's non-streaming shape ({} if unreadable)."""
    if not streamed:
        try:
            out = json.loads(body)
        except ValueError:
            return {}
        return out if isinstance(out, dict) else {}
    events = sse(body)
    if family == "messages":
        return _anthropic_stream(events)
    done = [e["response"] for e in events if str(e.get("type", "")).startswith("response.")
            and e.get("type") in ("response.completed", "response.incomplete", "response.failed")]
    if done:
        return done[-1]
    items = [e["item"] for e in events if e.get("type") == "response.output_item.done" and "item" in e]
    return {"output": items} if items or any("type" in e for e in events) else _chat_stream(events)


def _args(raw):
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def usage_tokens(family: str, usage: dict | None) -> dict[str, int]:
    """A reply's usage as Reply's token fields, for "messages", "responses" or "chat": the
    built-in agent and the gateway count alike. input_tokens is every prompt token, cached
    ones included (Anthropic reports cache reads and writes apart from its input_tokens)."""
    u = usage or {}
    if family == "messages":
        read, write = u.get("cache_read_input_tokens") or 0, u.get("cache_creation_input_tokens") or 0
        return dict(input_tokens=(u.get("input_tokens") or 0) + read + write, output_tokens=u.get("output_tokens") or 0,
                    cache_read_tokens=read, cache_write_tokens=write)
    if family == "responses":
        return dict(input_tokens=u.get("input_tokens") or 0, output_tokens=u.get("output_tokens") or 0,
                    cache_read_tokens=(u.get("input_tokens_details") or {}).get("cached_tokens") or 0)
    return dict(input_tokens=u.get("prompt_tokens") or 0, output_tokens=u.get("completion_tokens") or 0,
                cache_read_tokens=(u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)


def summary(family: str, r: dict, latency: float) -> Reply:
    """Text, tool calls and tokens (every prompt token, cached ones included) of one reply."""
    usage = r.get("usage") or {}
    if family == "messages":
        blocks = r.get("content") or []
        calls = [ToolCall(b.get("id", ""), b.get("name", ""), b.get("input")) for b in blocks
                 if b.get("type") in ("tool_use", "server_tool_use")]
        text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        return Reply(text, calls, latency_s=latency, **usage_tokens("messages", usage))
    if "output" in r:  # the Responses API
        text, calls = "", []
        for item in r.get("output") or []:
            if item.get("type") == "message":
                text += "".join(c.get("text", "") for c in item.get("content") or [] if c.get("type") == "output_text")
            elif item.get("type") in ("function_call", "custom_tool_call", "local_shell_call"):
                args = _args(item.get("arguments", item.get("input", item.get("action"))))
                calls.append(ToolCall(item.get("call_id", ""), item.get("name", item.get("type", "")), args))
        return Reply(text, calls, latency_s=latency, **usage_tokens("responses", usage))
    msg = ((r.get("choices") or [{}])[0]).get("message") or {}
    calls = [ToolCall(c.get("id", ""), (c.get("function") or {}).get("name", ""),
                      _args((c.get("function") or {}).get("arguments"))) for c in msg.get("tool_calls") or []]
    return Reply(msg.get("content") or "", calls, latency_s=latency, **usage_tokens("chat", usage))


def _text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_text(c.get("text", c.get("content", c.get("output", "")))) if isinstance(c, dict) else str(c)
                         for c in content)
    return "" if content is None else json.dumps(content)


def results(body: dict) -> list[tuple[str, str, bool]]:
    """(tool call id, output, is_error) of every tool result a request carries."""
    out = []
    for m in body.get("messages") or []:  # Anthropic; Chat Completions
        if m.get("role") == "tool":
            out.append((m.get("tool_call_id", ""), _text(m.get("content")), False))
        elif isinstance(m.get("content"), list):
            out += [(b.get("tool_use_id", ""), _text(b.get("content")), bool(b.get("is_error")))
                    for b in m["content"] if isinstance(b, dict) and b.get("type") == "tool_result"]
    for item in body.get("input") if isinstance(body.get("input"), list) else []:  # Responses
        if isinstance(item, dict) and str(item.get("type", "")).endswith("_output") and "call_id" in item:
            out.append((item["call_id"], _text(item.get("output")), False))
    return out


def opening(body: dict) -> tuple[str, str]:
    """(system prompt, first user message) of a request, for the transcript's start event."""
    system = _text(body.get("system") or body.get("instructions") or "")
    msgs = body.get("messages") or (body.get("input") if isinstance(body.get("input"), list) else
                                    [{"role": "user", "content": body.get("input") or ""}])
    if not system:
        system = "\n".join(_text(m.get("content")) for m in msgs if m.get("role") in ("system", "developer"))
    # the last user message: CLIs open with context of their own (environment, reminders) before the task
    user = next((_text(m.get("content")) for m in reversed(msgs) if isinstance(m, dict) and m.get("role") == "user"),
                "")
    return system, user
