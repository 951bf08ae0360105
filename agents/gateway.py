"""The model-API gateway: how an agent that runs inside the sandbox (Claude Code, Codex CLI)
reaches its model without the API key entering the sandbox.

One gateway per trial, on the host, listening on a Unix socket that is mounted into the
sandbox (which has no network; a tiny forwarder there turns 127.0.0.1:PORT into that socket).
It forwards only the provider's model endpoints (POST, no other path, no other host) to the
real API, or to ANTHROPIC_BASE_URL / OPENAI_BASE_URL / --base-url, swapping whatever key the
request carries (the sandbox's worthless placeholder) for the real one. Responses, server-sent
events included, go back as they arrive.

On the way it does what the built-in agent's loop does: every call is appended to
transcript.jsonl in the same event format (start, model_call, tool_result, stop), each raw
exchange kept in logs/gateway/; tokens, cache tokens and cost are summed in the trial's
`Budget`; and past a limit (turns, tokens, cost, wall time) further calls are refused and
`stopped` is set, so that the agent ends the CLI and the submission is verified.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import socketserver
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from . import ModelError
from .react import Budget, StopAgent, Transcript
from .wire import opening, parse_response, results, summary

if TYPE_CHECKING:
    from results.registry import ModelSpec

#: what the sandbox's CLI gets as its API key: worthless anywhere else
PLACEHOLDER_KEY = "sk-rdbench-placeholder-not-a-key"
#: provider family -> the model endpoints forwarded (POST; a query string is kept)
ROUTES = {"anthropic": ("/v1/messages", "/v1/messages/count_tokens"),
          "openai": ("/v1/responses", "/v1/chat/completions")}
#: request headers never forwarded: the sandbox's key, and what only concerns one connection
DROP = {"authorization", "x-api-key", "host", "content-length", "connection", "keep-alive", "proxy-authorization",
        "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "accept-encoding", "cookie"}
#: response headers not passed on: the gateway's connection to the sandbox is its own (HTTP/1.0, closed)
HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-authenticate", "trailer", "upgrade"}
MAX_BODY = 64 << 20  # bytes of one request (more is no model call)
#: token-count calls (Anthropic's count_tokens) a trial may make, at least (else 4 per turn allowed)
MAX_TOKEN_COUNTS = 200
#: a request target forwarded as it is: printable ASCII, no spaces
SAFE_TARGET = re.compile(r"[!-~]+")
MAX_LOGGED = 32 << 20  # bytes of one response parsed for the transcript


def proxy_for(url: str) -> tuple[str, int, dict[str, str]] | None:
    """(host, port, auth header) of the host's proxy for `url`: HTTPS_PROXY / HTTP_PROXY (or
    ALL_PROXY) unless NO_PROXY exempts the host, as the built-in agent's SDKs read them; None:
    straight. Raises ModelError for a proxy setting the gateway cannot use (the host's fault)."""
    u = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(u.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(u.hostname or ""):
        return None
    try:
        p = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        port = p.port or 80
    except ValueError as e:
        raise ModelError(f"the host's proxy setting {proxy!r} for {u.scheme} is invalid: {e}") from None
    if p.scheme != "http" or not p.hostname:
        raise ModelError(f"the host's proxy setting {proxy!r} for {u.scheme}: the gateway takes http://HOST:PORT "
                         "proxies only")
    auth = {}
    if p.username is not None:
        cred = f"{unquote(p.username)}:{unquote(p.password or '')}".encode()
        auth = {"proxy-authorization": "Basic " + base64.b64encode(cred).decode()}
    return p.hostname, port, auth


def connection(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str, dict[str, str]]:
    """(connection, request target, extra headers) for a POST to `url`, through the host's
    proxy (`proxy_for`) or straight. HTTPS goes through a CONNECT tunnel; plain HTTP is sent to
    the proxy with the absolute URL. Raises ModelError for an unusable proxy setting."""
    u = urlsplit(url)
    where = u.path + (f"?{u.query}" if u.query else "")
    proxy = proxy_for(url)
    if proxy is None:
        cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
        return cls(u.hostname, u.port, timeout=timeout), where, {}
    host, port, auth = proxy
    if u.scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=timeout)
        conn.set_tunnel(u.hostname, u.port or 443, headers=auth)
        return conn, where, {}
    return http.client.HTTPConnection(host, port, timeout=timeout), url, auth


def upstream(spec: ModelSpec) -> tuple[str, str, dict[str, str]]:
    """(provider family, base URL, auth headers) of the real API, from the host's environment.
    Raises ModelError when the key is missing."""
    if spec.provider == "anthropic":
        base = spec.base_url or os.environ.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com"
        if os.environ.get("ANTHROPIC_API_KEY"):
            return "anthropic", base, {"x-api-key": os.environ["ANTHROPIC_API_KEY"]}
        if os.environ.get("ANTHROPIC_AUTH_TOKEN"):
            return "anthropic", base, {"authorization": f"Bearer {os.environ['ANTHROPIC_AUTH_TOKEN']}"}
        raise ModelError("no API key on the host: set ANTHROPIC_API_KEY")
    base = spec.base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
    key = os.environ.get("OPENAI_API_KEY")
    if not key and spec.provider != "openai-compatible":
        raise ModelError("no API key on the host: set OPENAI_API_KEY")
    return "openai", base, ({"authorization": f"Bearer {key}"} if key else {})


def target(family: str, base: str, path: str) -> str:
    """The upstream URL of a request for `path` (already checked against ROUTES)."""
    base = base.rstrip("/")
    if family == "openai":  # OpenAI base URLs end in /v1, the request paths start with it
        return base + path[len("/v1"):] if base.endswith("/v1") else base + path
    return base + path


# --- the server ----------------------------------------------------------------------------------

class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    block_on_close = False


def provider_fault(status: int, served_before: bool) -> bool:
    """Whether a failed model call is one the agent in the sandbox could not have caused: the
    provider down, unanswering (502) or over its limits (5xx, 408, 429), the host's key refused
    (401, 403) before any call went through, or the host's proxy refusing it (407). Any other
    answer (400, 404, 413, 422) is to what the sandbox sent, and so is a 401/403 once the key
    has worked (headers such as OpenAI-Organization pass through): those are the agent's,
    never a voided trial."""
    return status >= 500 or status in (407, 408, 429) or (status in (401, 403) and not served_before)


class Gateway:
    """Listens on `socket_path` until `close()`. `stopped` is set once a limit stopped the agent
    (`stop` holds it); `upstream_error` names the last call the provider failed, if any, in a
    way the sandbox could not have caused (`provider_fault`): only that makes a trial `infra`."""

    def __init__(self, spec: ModelSpec, budget: Budget, transcript: Transcript, socket_path: Path,
                 log_dir: Path | None = None):
        self.spec, self.budget, self.transcript = spec, budget, transcript
        self.family, self.base, self.auth = upstream(spec)
        proxy_for(target(self.family, self.base, ROUTES[self.family][0]))  # an unusable proxy: ModelError now
        self.socket_path, self.log_dir = Path(socket_path), log_dir
        self.stopped = threading.Event()
        self.stop: StopAgent | None = None
        self.upstream_error: str | None = None
        self.calls = 0
        self.token_counts = 0
        self._served = False  # a call went through: the host's key works
        self._lock = threading.Lock()
        self._pending: dict[str, dict] = {}  # tool calls made, results not seen yet
        self._started = False
        self._server = _Server(str(self.socket_path), self._handler())
        os.chmod(self.socket_path, 0o666)  # the sandbox's user connects to it
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="gateway")

    def __enter__(self) -> "Gateway":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.socket_path.unlink(missing_ok=True)

    def _log(self, **event) -> None:
        self.transcript.log(agent="main", **event)

    def halt(self, e: StopAgent) -> None:
        """Stop the agent (the wall time ran out): every further call is refused."""
        with self._lock:
            self._halt(e)

    def _halt(self, e: StopAgent) -> None:
        """Caller holds the lock."""
        if self.stop is None:
            self.stop = e
            self._log(type="stop", reason=e.reason, detail=str(e))
        self.stopped.set()

    def admit(self, path: str, body: dict) -> tuple[str | None, int]:
        """(None when the call may go on, else why it is refused; the call's number). Logs the
        call's tool results."""
        with self._lock:
            counting = path.endswith("/count_tokens")  # a token count is no model turn
            if self.stop is None:
                try:
                    self.budget.before_call(turn=not counting)
                except StopAgent as e:
                    self._halt(e)
            if self.stop is not None:
                return f"rdbench: the trial's agent limit is reached ({self.stop.reason}: {self.stop})", 0
            if counting:  # free of turns, so bounded apart: a flood of them could run into the provider's rate limit
                self.token_counts += 1
                if self.token_counts > max(MAX_TOKEN_COUNTS, 4 * self.budget.max_turns):
                    return "rdbench: too many token-count calls in this trial", 0
            if not self._started:
                self._started = True
                system, user = opening(body)
                self._log(type="start", model=f"{self.spec.provider}/{body.get('model', self.spec.name)}",
                          system=system, user=user, via="gateway")
            for cid, output, err in results(body):
                call = self._pending.pop(cid, None)
                if call is not None:
                    self._log(type="tool_result", id=cid, name=call["name"], args=call["args"], output=output,
                              is_error=err)
            self.calls += 1
            return None, self.calls

    def account(self, path: str, status: int, data: bytes, streamed: bool, latency: float, n: int) -> None:
        """Log one finished call and charge it; a limit passed stops the agent."""
        with self._lock:
            if status != 200:
                if provider_fault(status, self._served):
                    self.upstream_error = f"{path}: HTTP {status}: {data[:300].decode(errors='replace')}"
                self._log(type="model_error", path=path, status=status, output=data[:4000].decode(errors="replace"))
                return
            self.upstream_error, self._served = None, True
            if path.endswith("/count_tokens"):
                return
            reply = summary(self.family, parse_response(self.family, data, streamed), latency)
            calls = [{"id": c.id, "name": c.name, "args": c.args} for c in reply.tool_calls]
            self._pending.update({c["id"]: c for c in calls})
            self._log(type="model_call", turn=self.budget.turns + 1, text=reply.text, tool_calls=calls,
                      input_tokens=reply.input_tokens, output_tokens=reply.output_tokens,
                      cache_read_tokens=reply.cache_read_tokens, cache_write_tokens=reply.cache_write_tokens,
                      latency_s=round(latency, 3), path=path, stream=streamed, exchange=n)
            try:
                self.budget.charge(reply)
            except StopAgent as e:
                self._halt(e)

    def _handler(self):
        gw = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one call per connection, its end the end of the body

            def log_message(self, *args):
                pass

            def address_string(self):
                return "sandbox"

            def refuse(self, status: int, message: str) -> None:
                if not getattr(self, "read", False) and status != 413:
                    self.body()  # read what was sent: the client hears the answer, not a reset
                with gw._lock:
                    gw._log(type="refused", method=self.command, path=self.path, status=status, reason=message)
                data = json.dumps({"type": "error", "error": {"type": "permission_error", "message": message}}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self.refuse(403, f"rdbench gateway: {self.command} {self.path} is not a model endpoint")

            do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_CONNECT = do_GET

            def do_POST(self):
                path = self.path.partition("?")[0]
                if path not in ROUTES[gw.family]:  # absolute URLs (another host) included
                    return self.refuse(403, f"rdbench gateway: POST {self.path} is not a model endpoint")
                if not SAFE_TARGET.fullmatch(self.path):  # what http.client would refuse to send
                    return self.refuse(400, f"rdbench gateway: POST {self.path!r}: not a valid request target")
                raw = self.body()
                if raw is None:
                    return self.refuse(413, f"rdbench gateway: a request body over {MAX_BODY} bytes")
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                why, n = gw.admit(path, body if isinstance(body, dict) else {})
                if why is not None:
                    return self.refuse(429 if gw.stop else 403, why)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in DROP}
                headers.update(gw.auth, **{"accept-encoding": "identity"})
                gw.save(n, "request.json", raw)
                self.forward(path, target(gw.family, gw.base, self.path), headers, raw, n)

            def body(self) -> bytes | None:
                """The request's body (by its length, or chunked); None when it is too large."""
                self.read = True
                if "chunked" not in self.headers.get("transfer-encoding", "").lower():
                    size = int(self.headers.get("content-length") or 0)
                    return self.rfile.read(size) if size <= MAX_BODY else None
                out = bytearray()
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    out += self.rfile.read(size)
                    self.rfile.readline()
                    if len(out) > MAX_BODY:
                        return None
                return bytes(out)

            def forward(self, path, url, headers, raw, n):
                t, data, status, streamed = time.monotonic(), bytearray(), 502, False
                conn, answered = None, False
                try:
                    conn, where, via = connection(url, timeout=max(1.0, min(600.0, gw.budget.time_left())))
                    try:
                        conn.putrequest("POST", where, skip_accept_encoding=True)
                        for k, v in {**headers, **via, "content-length": str(len(raw))}.items():
                            conn.putheader(k, v)
                    except (ValueError, http.client.HTTPException) as e:  # what the sandbox sent: its own fault
                        status, data = 400, bytearray(f"rdbench gateway: request not sent: {e}".encode())
                        self.send_error(400, "rdbench gateway: request not sent", str(e))
                    else:
                        conn.endheaders(raw)
                        r = conn.getresponse()
                        status, answered = r.status, True
                        streamed = "text/event-stream" in (r.getheader("content-type") or "")
                        self.send_response(status)
                        for k, v in r.getheaders():  # the body's end is the connection's
                            if k.lower() not in HOP and k.lower() != "content-length":
                                self.send_header(k, v)
                        self.send_header("connection", "close")
                        self.end_headers()
                        while chunk := r.read1(65536):
                            self.wfile.write(chunk)  # as it comes: the CLI streams
                            if len(data) < MAX_LOGGED:
                                data += chunk
                except (OSError, http.client.HTTPException, ModelError) as e:
                    if not answered:  # no answer from the provider or the host's proxy (the CLI hanging up: no error)
                        data = bytearray(f"rdbench gateway: the model API did not answer: {e!r}".encode())
                        try:
                            self.send_error(502, "model API unreachable")
                        except OSError:
                            pass
                finally:
                    if conn is not None:
                        conn.close()
                gw.save(n, "response", bytes(data))
                gw.account(path, status, bytes(data), streamed, time.monotonic() - t, n)

        return Handler

    def save(self, n: int, name: str, data: bytes) -> None:
        """Keep the raw exchange (logs/gateway/NNNN.request.json, NNNN.response)."""
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            (self.log_dir / f"{n:04d}.{name}").write_bytes(data)
