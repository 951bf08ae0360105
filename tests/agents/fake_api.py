"""A local fake model API: Anthropic Messages, OpenAI Chat Completions and OpenAI Responses wire formats,
playing a scripted conversation. The real SDKs talk to it over HTTP through base_url.

Each POST takes the next step of the script:
    Step(tool_calls=[("bash", {"command": "ls"})], text="...")   a normal reply
    Step(status=429, headers={"retry-after": "0"})                an error status
Requests are recorded (path, parsed body) for assertions.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Step:
    text: str = ""
    tool_calls: list[tuple[str, dict]] = field(default_factory=list)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    usage: tuple[int, int] = (100, 20)


def submit(text: str = "done") -> Step:
    return Step(text=text, tool_calls=[("submit", {"summary": text})])


class FakeAPI:
    def __init__(self, script: list[Step], repeat_last: bool = False):
        self.script = list(script)
        self.repeat_last = repeat_last
        self.requests: list[tuple[str, dict]] = []
        self._lock = threading.Lock()
        self._n = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                with api._lock:
                    api.requests.append((self.path, body))
                    if api._n < len(api.script):
                        step = api.script[api._n]
                    elif api.repeat_last and api.script:
                        step = api.script[-1]
                    else:
                        step = Step(status=500, text="script exhausted")
                    api._n += 1
                if step.status != 200:
                    payload = {"type": "error", "error": {"type": "api_error", "message": step.text or "scripted"}}
                    return self._send(step.status, payload, step.headers)
                if self.path.endswith("/messages"):
                    return self._send(200, api.anthropic_reply(step, body), step.headers)
                if self.path.endswith("/chat/completions"):
                    return self._send(200, api.openai_reply(step, body), step.headers)
                if self.path.endswith("/responses"):
                    return self._send(200, api.responses_reply(step, body), step.headers)
                return self._send(404, {"error": {"message": f"no route {self.path}"}}, {})

            def _send(self, status, payload, headers):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def anthropic_reply(self, step: Step, body: dict) -> dict:
        content = [{"type": "text", "text": step.text}] if step.text else []
        for i, (name, args) in enumerate(step.tool_calls):
            content.append({"type": "tool_use", "id": f"toolu_{self._n}_{i}", "name": name, "input": args})
        return {"id": f"msg_{self._n}", "type": "message", "role": "assistant", "model": body.get("model", "x"),
                "content": content, "stop_reason": "tool_use" if step.tool_calls else "end_turn",
                "stop_sequence": None, "usage": {"input_tokens": step.usage[0], "output_tokens": step.usage[1]}}

    def responses_reply(self, step: Step, body: dict) -> dict:
        output = []
        if step.text:
            output.append({"type": "message", "id": f"msg_{self._n}", "role": "assistant", "status": "completed",
                           "content": [{"type": "output_text", "text": step.text, "annotations": []}]})
        for i, (name, args) in enumerate(step.tool_calls):
            output.append({"type": "function_call", "id": f"fc_{self._n}_{i}", "call_id": f"call_{self._n}_{i}",
                           "name": name, "arguments": json.dumps(args), "status": "completed"})
        return {"id": f"resp_{self._n}", "object": "response", "created_at": int(time.time()), "status": "completed",
                "model": body.get("model", "x"), "output": output, "parallel_tool_calls": True,
                "tool_choice": "auto", "tools": body.get("tools", []),
                "usage": {"input_tokens": step.usage[0], "output_tokens": step.usage[1],
                          "total_tokens": sum(step.usage), "input_tokens_details": {"cached_tokens": 0},
                          "output_tokens_details": {"reasoning_tokens": 0}}}

    def openai_reply(self, step: Step, body: dict) -> dict:
        message = {"role": "assistant", "content": step.text or None}
        if step.tool_calls:
            message["tool_calls"] = [
                {"id": f"call_{self._n}_{i}", "type": "function",
                 "function": {"name": name, "arguments": json.dumps(args)}}
                for i, (name, args) in enumerate(step.tool_calls)]
        return {"id": f"chatcmpl-{self._n}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", "x"),
                "choices": [{"index": 0, "message": message,
                             "finish_reason": "tool_calls" if step.tool_calls else "stop"}],
                "usage": {"prompt_tokens": step.usage[0], "completion_tokens": step.usage[1],
                          "total_tokens": sum(step.usage)}}
