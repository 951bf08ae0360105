"""A local fake model API: Anthropic Messages, OpenAI Chat Completions and OpenAI Responses wire formats,
playing a scripted conversation. The real SDKs talk to it over HTTP through base_url.

Each POST takes the next step of the script:
    Step(tool_calls=[("bash", {"command": "ls"})], text="...")   a normal reply
    Step(tool_calls=[("bash", Raw("[1, 2]"))])                   arguments sent as this raw text (Anthropic:
                                                                 `input` as a JSON string)
    Step(status=429, headers={"retry-after": "0"})                an error status
    Step(hang=True)                                               a response that never comes
    Step(cut=3, delay=0.5)                                        (streamed) only the first 3 events, then the
                                                                  connection closes; the answer after 0.5 s
Like a real server it can also enforce a context window (`window`, tokens: 4 characters of the
request's JSON each), refusing longer requests with the provider's own error shape without
using a step; report prompt-cache usage (Anthropic: from the request's cache_control
breakpoints; OpenAI: the prefix shared with earlier requests, in 128-token blocks from 1024);
and answer a request that forbids tools (a compaction's summary) with a summary, without
using a step. Requests are recorded (path, parsed body) for assertions.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Raw(str):
    """Tool-call arguments sent as this text, not as the JSON of an object."""


@dataclass
class Step:
    text: str = ""
    tool_calls: list[tuple[str, object]] = field(default_factory=list)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    #: (input, output) tokens; None: input counted from the request (4 characters a token)
    usage: tuple[int, int] | None = (100, 20)
    hang: bool = False
    #: stream only this many events, then close (a stream cut before its usage event)
    cut: int | None = None
    #: seconds before the answer starts
    delay: float = 0.0


def tokens(body: dict) -> int:
    return len(json.dumps(body)) // 4


def _plain(obj):
    """`obj` without its cache_control marks: the cache keys on content, not on the marks."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items() if k != "cache_control"}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(_plain(obj), sort_keys=True).encode()).hexdigest()


def _signature(thought: str) -> str:
    return hashlib.sha256(b"fake-api-thinking:" + thought.encode()).hexdigest()[:32]


def submit(text: str = "done") -> Step:
    return Step(text=text, tool_calls=[("submit", {"summary": text})])


class FakeAPI:
    def __init__(self, script: list[Step], repeat_last: bool = False, window: int | None = None,
                 tls: tuple[str, str] | None = None):
        """`tls`: (certificate, key) files: serve HTTPS, as the real APIs do."""
        self.tls = tls
        self.script = list(script)
        self.repeat_last = repeat_last
        self.window = window
        self.requests: list[tuple[str, dict]] = []
        #: (input, output) tokens of each model reply sent, whole or cut (a cut one: the output it streamed)
        self.served: list[tuple[int, int]] = []
        self.headers: list[dict[str, str]] = []  # each request's headers (lower-case names)
        self.overflows = 0
        self.active = self.peak_active = 0  # requests being answered now, and the most at once
        self.summaries = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._n = 0
        self._cached: set[str] = set()   # Anthropic: digests of prefixes written to the cache
        self._last_prompt = ""           # OpenAI: the previous request's prompt, for automatic caching
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                with api._lock:
                    api.active += 1
                    api.peak_active = max(api.peak_active, api.active)
                try:
                    self._answer()
                finally:
                    with api._lock:
                        api.active -= 1

            def _answer(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                route = self.path.partition("?")[0]  # Claude Code asks for /v1/messages?beta=true
                self.stream = bool(body.get("stream"))  # answered as server-sent events
                with api._lock:
                    api.requests.append((self.path, body))
                    api.headers.append({k.lower(): v for k, v in self.headers.items()})
                    if route.endswith("/count_tokens"):  # Anthropic's token count: no model turn
                        return self._send(200, {"input_tokens": tokens(body)}, {})
                    bad = api.thinking_error(route, body)
                    if bad is not None:
                        return self._send(400, bad, {})
                    refusal = api.refusal(route, body)
                    if refusal is not None:
                        api.overflows += 1
                        return self._send(400, refusal, {})
                    if body.get("tool_choice") in ("none", {"type": "none"}):
                        api.summaries += 1
                        step = Step(text=f"Summary {api.summaries}: scripted work so far.", usage=None)
                    elif api._n < len(api.script):
                        step = api.script[api._n]
                    elif api.repeat_last and api.script:
                        step = api.script[-1]
                    else:
                        step = Step(status=500, text="script exhausted")
                    if not step.text.startswith("Summary "):
                        api._n += 1
                if step.hang:
                    api._closing.wait(600)
                    return
                if step.delay:
                    time.sleep(step.delay)
                self.step = step
                if step.status != 200:
                    payload = {"type": "error", "error": {"type": "api_error", "message": step.text or "scripted"}}
                    return self._send(step.status, payload, step.headers)
                if route.endswith("/messages"):
                    return self._send(200, api.anthropic_reply(step, body), step.headers)
                if route.endswith("/chat/completions"):
                    return self._send(200, api.openai_reply(step, body), step.headers)
                if route.endswith("/responses"):
                    return self._send(200, api.responses_reply(step, body), step.headers)
                return self._send(404, {"error": {"message": f"no route {self.path}"}}, {})

            def _send(self, status, payload, headers):
                step = getattr(self, "step", None)
                if status == 200 and "usage" in payload:
                    usage = payload["usage"]
                    n_in = usage.get("input_tokens", usage.get("prompt_tokens", 0)) + \
                        usage.get("cache_read_input_tokens", 0) + usage.get("cache_creation_input_tokens", 0)
                    n_out = usage.get("output_tokens", usage.get("completion_tokens", 0))
                    if step is not None and step.cut is not None:
                        n_out = streamed_chars(sse_events(payload)[:step.cut]) // 4
                    with api._lock:
                        api.served.append((n_in, n_out))
                if status == 200 and getattr(self, "stream", False):
                    events = sse_events(payload)
                    return self._send_events(events if step is None or step.cut is None else events[:step.cut],
                                             headers)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _send_events(self, events, headers):
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()  # no length: the events are written one by one, then the connection closes
                self.close_connection = True
                for name, data in events:
                    head = f"event: {name}\n" if name else ""
                    self.wfile.write(f"{head}data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode())
                    self.wfile.flush()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()

    def refusal(self, path: str, body: dict) -> dict | None:
        """The provider's own context-overflow error, when the request does not fit the window."""
        if self.window is None:
            return None
        n = tokens(body)
        if path.endswith("/messages"):
            if n <= self.window:
                return None
            return {"type": "error", "error": {"type": "invalid_request_error",
                                               "message": f"prompt is too long: {n} tokens > {self.window} maximum"}}
        asked = body.get("max_completion_tokens") or 0
        if n + asked <= self.window:
            return None
        return {"error": {"message": f"This model's maximum context length is {self.window} tokens. However, you "
                                     f"requested {n + asked} tokens ({n} in the messages, {asked} in the completion). "
                                     "Please reduce the length of the messages or completion.",
                          "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}

    def thinking_error(self, path: str, body: dict) -> dict | None:
        """The Messages API's refusal when thinking is enabled and the last assistant turn with
        tool calls does not start with its thinking block, unmodified (signature checked)."""
        if not path.endswith("/messages") or (body.get("thinking") or {}).get("type") != "enabled":
            return None
        if body.get("max_tokens", 0) <= body["thinking"].get("budget_tokens", 0):
            return {"type": "error", "error": {"type": "invalid_request_error",
                                               "message": "`max_tokens` must be greater than `thinking.budget_tokens`"}}
        turns = [m for m in body.get("messages", []) if m["role"] == "assistant" and isinstance(m["content"], list)
                 and any(b.get("type") == "tool_use" for b in m["content"])]
        if not turns:
            return None
        first = turns[-1]["content"][0]
        if first.get("type") == "thinking" and first.get("signature") == _signature(first.get("thinking", "")):
            return None
        return {"type": "error", "error": {"type": "invalid_request_error", "message":
                f"Expected `thinking` or `redacted_thinking`, but found `{first.get('type')}`. When `thinking` is "
                "enabled, a final `assistant` message must start with a thinking block (preceeding the lastmost set "
                "of `tool_use` and `tool_result` blocks)."}}

    def anthropic_cache(self, body: dict) -> tuple[int, int]:
        """(read, written) tokens, from the request's cache_control breakpoints."""
        prefix, points = [body.get("tools"), body.get("system")], []
        if any("cache_control" in b for b in body.get("system") or [] if isinstance(b, dict)):
            points.append(list(prefix))
        for m in body.get("messages", []):
            blocks = m["content"] if isinstance(m["content"], list) else [m["content"]]
            for b in blocks:
                prefix.append(b)
                if isinstance(b, dict) and "cache_control" in b:
                    points.append(list(prefix))
        read = max([len(json.dumps(p)) // 4 for p in points if _digest(p) in self._cached], default=0)
        top = len(json.dumps(points[-1])) // 4 if points else 0
        self._cached.update(_digest(p) for p in points)
        return read, max(0, top - read)

    def openai_cached(self, prompt: str) -> int:
        shared = 0
        for a, b in zip(prompt, self._last_prompt):
            if a != b:
                break
            shared += 1
        self._last_prompt = prompt
        blocks = (shared // 4) // 128 * 128
        return blocks if blocks >= 1024 else 0

    def _usage(self, step: Step, body: dict) -> tuple[int, int]:
        return step.usage if step.usage is not None else (tokens(body), 20)

    def anthropic_reply(self, step: Step, body: dict) -> dict:
        content = [{"type": "text", "text": step.text}] if step.text else []
        if (body.get("thinking") or {}).get("type") == "enabled":  # signed, as the real API's are
            thought = f"Reasoning before turn {self._n}."
            content.insert(0, {"type": "thinking", "thinking": thought, "signature": _signature(thought)})
        for i, (name, args) in enumerate(step.tool_calls):
            content.append({"type": "tool_use", "id": f"toolu_{self._n}_{i}", "name": name,
                            "input": str(args) if isinstance(args, Raw) else args})
        n_in, n_out = self._usage(step, body)
        read, write = self.anthropic_cache(body) if step.usage is None else (0, 0)
        return {"id": f"msg_{self._n}", "type": "message", "role": "assistant", "model": body.get("model", "x"),
                "content": content, "stop_reason": "tool_use" if step.tool_calls else "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": max(0, n_in - read - write), "output_tokens": n_out,
                          "cache_read_input_tokens": read, "cache_creation_input_tokens": write}}

    def responses_reply(self, step: Step, body: dict) -> dict:
        output = []
        if step.text:
            output.append({"type": "message", "id": f"msg_{self._n}", "role": "assistant", "status": "completed",
                           "content": [{"type": "output_text", "text": step.text, "annotations": []}]})
        for i, (name, args) in enumerate(step.tool_calls):
            output.append({"type": "function_call", "id": f"fc_{self._n}_{i}", "call_id": f"call_{self._n}_{i}",
                           "name": name, "arguments": args if isinstance(args, Raw) else json.dumps(args),
                           "status": "completed"})
        n_in, n_out = self._usage(step, body)
        cached = self.openai_cached(json.dumps([body.get("instructions"), body.get("tools"), body.get("input")])) \
            if step.usage is None else 0
        return {"id": f"resp_{self._n}", "object": "response", "created_at": int(time.time()), "status": "completed",
                "model": body.get("model", "x"), "output": output, "parallel_tool_calls": True,
                "tool_choice": "auto", "tools": body.get("tools", []),
                "usage": {"input_tokens": n_in, "output_tokens": n_out,
                          "total_tokens": n_in + n_out, "input_tokens_details": {"cached_tokens": cached},
                          "output_tokens_details": {"reasoning_tokens": 0}}}

    def openai_reply(self, step: Step, body: dict) -> dict:
        message = {"role": "assistant", "content": step.text or None}
        if step.tool_calls:
            message["tool_calls"] = [
                {"id": f"call_{self._n}_{i}", "type": "function",
                 "function": {"name": name, "arguments": args if isinstance(args, Raw) else json.dumps(args)}}
                for i, (name, args) in enumerate(step.tool_calls)]
        n_in, n_out = self._usage(step, body)
        cached = self.openai_cached(json.dumps([body.get("tools"), body.get("messages")])) if step.usage is None else 0
        return {"id": f"chatcmpl-{self._n}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", "x"),
                "choices": [{"index": 0, "message": message,
                             "finish_reason": "tool_calls" if step.tool_calls else "stop"}],
                "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out,
                          "prompt_tokens_details": {"cached_tokens": cached}}}


def streamed_chars(events: list) -> int:
    """Characters of output (text, thinking, tool arguments) in streamed events."""
    n = 0
    for _, data in events:
        if not isinstance(data, dict):
            continue
        d = data.get("delta")
        if isinstance(d, str):
            n += len(d)
        elif isinstance(d, dict):
            n += sum(len(d[k]) for k in ("text", "thinking", "partial_json") if isinstance(d.get(k), str))
        for choice in data.get("choices") or []:
            delta = choice.get("delta") or {}
            n += len(delta.get("content") or "")
            n += sum(len((c.get("function") or {}).get("arguments") or "") for c in delta.get("tool_calls") or [])
    return n


def sse_events(reply: dict) -> list[tuple[str | None, object]]:
    """A whole reply as the (event name, data) the provider streams when the request says
    "stream": true: Anthropic Messages, OpenAI Responses or Chat Completions, told by its shape."""
    if reply.get("type") == "message":
        return _anthropic_events(reply)
    if reply.get("object") == "response":
        return _responses_events(reply)
    return _chat_events(reply)


def _anthropic_events(msg: dict) -> list:
    start = {**msg, "content": [], "stop_reason": None, "usage": {**msg["usage"], "output_tokens": 1}}
    out = [("message_start", {"type": "message_start", "message": start})]
    for i, block in enumerate(msg["content"]):
        kind = block["type"]
        empty = {"text": {"type": "text", "text": ""}, "thinking": {"type": "thinking", "thinking": "", "signature": ""},
                 "tool_use": {**block, "input": {}}}[kind]
        out.append(("content_block_start", {"type": "content_block_start", "index": i, "content_block": empty}))
        if kind == "text":
            deltas = [{"type": "text_delta", "text": block["text"][j:j + 16]} for j in range(0, len(block["text"]), 16)]
        elif kind == "thinking":
            deltas = [{"type": "thinking_delta", "thinking": block["thinking"]},
                      {"type": "signature_delta", "signature": block["signature"]}]
        else:
            args = block["input"] if isinstance(block["input"], str) else json.dumps(block["input"])
            deltas = [{"type": "input_json_delta", "partial_json": args[j:j + 24]} for j in range(0, len(args), 24)]
        out += [("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d}) for d in deltas]
        out.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    out.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": msg["stop_reason"],
                                                                     "stop_sequence": None},
                                  "usage": {"output_tokens": msg["usage"]["output_tokens"]}}))
    out.append(("message_stop", {"type": "message_stop"}))
    return out


def _responses_events(resp: dict) -> list:
    out = []

    def ev(kind, **data):
        out.append((kind, {"type": kind, "sequence_number": len(out), **data}))

    ev("response.created", response={**resp, "status": "in_progress", "output": [], "usage": None})
    ev("response.in_progress", response={**resp, "status": "in_progress", "output": [], "usage": None})
    for i, item in enumerate(resp["output"]):
        if item["type"] == "message":
            ev("response.output_item.added", output_index=i, item={**item, "status": "in_progress", "content": []})
            part = item["content"][0]
            ev("response.content_part.added", item_id=item["id"], output_index=i, content_index=0,
               part={**part, "text": ""})
            for j in range(0, len(part["text"]), 16):
                ev("response.output_text.delta", item_id=item["id"], output_index=i, content_index=0,
                   delta=part["text"][j:j + 16], logprobs=[])
            ev("response.output_text.done", item_id=item["id"], output_index=i, content_index=0, text=part["text"],
               logprobs=[])
            ev("response.content_part.done", item_id=item["id"], output_index=i, content_index=0, part=part)
        else:
            ev("response.output_item.added", output_index=i, item={**item, "status": "in_progress", "arguments": ""})
            ev("response.function_call_arguments.delta", item_id=item["id"], output_index=i, delta=item["arguments"])
            ev("response.function_call_arguments.done", item_id=item["id"], output_index=i,
               arguments=item["arguments"])
        ev("response.output_item.done", output_index=i, item=item)
    ev("response.completed", response=resp)
    return out


def _chat_events(reply: dict) -> list:
    head = {k: reply[k] for k in ("id", "created", "model")}
    choice, out = reply["choices"][0], []

    def chunk(delta, finish=None):
        out.append((None, {**head, "object": "chat.completion.chunk",
                           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}))

    msg = choice["message"]
    chunk({"role": "assistant", "content": ""})
    text = msg.get("content") or ""
    for j in range(0, len(text), 16):
        chunk({"content": text[j:j + 16]})
    for i, call in enumerate(msg.get("tool_calls") or []):
        chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                               "function": {"name": call["function"]["name"], "arguments": ""}}]})
        chunk({"tool_calls": [{"index": i, "function": {"arguments": call["function"]["arguments"]}}]})
    chunk({}, choice["finish_reason"])
    out.append((None, {**head, "object": "chat.completion.chunk", "choices": [], "usage": reply["usage"]}))
    out.append((None, "[DONE]"))
    return out
