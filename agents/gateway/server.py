"""The gateway itself: a threaded HTTP/1.0 server on the trial's Unix socket, that admits each
call against the trial's limits (counting the calls in flight), forwards it, streams the answer
back and settles what it cost."""

from __future__ import annotations

import contextlib
import hmac
import http.client
import json
import os
import re
import secrets
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING

from .. import ModelError
from ..budget import Budget, StopAgent, Transcript
from ..wire import opening, parse_response, results, summary
from .framing import READ_TIMEOUT_S, BodyPool, Capped, FramingError, read_body
from .listener import Listener
from .policy import MAX_IN_FLIGHT, Claim, Traffic, charged, claim, fits, provider_tools
from .upstream import connection, provider_fault, proxy_for, target, upstream

if TYPE_CHECKING:
    from results.registry import ModelSpec

#: what the sandbox's CLI gets as its API key: worthless anywhere else
PLACEHOLDER_KEY = "sk-rdbench-placeholder-not-a-key"
#: the first line of every connection: the trial's secret, held only by its sandbox's forwarder
PREAMBLE = "RDBENCH-GATEWAY {}\n"
#: provider family -> the model endpoints forwarded (POST; a query string is kept)
ROUTES = {"messages": ("/v1/messages", "/v1/messages/count_tokens"),
          "completions": ("/v1/responses", "/v1/chat/completions")}
#: request headers never forwarded: the sandbox's key, and what only concerns one connection
DROP = {"authorization", "x-api-key", "host", "content-length", "connection", "keep-alive", "proxy-authorization",
        "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "accept-encoding", "cookie"}
#: response headers not passed on: the gateway's connection to the sandbox is its own (HTTP/1.0, closed)
HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-authenticate", "trailer", "upgrade"}
#: token-count calls (Anthropic's count_tokens) a trial may make, at least (else 4 per turn allowed)
MAX_TOKEN_COUNTS = 200
#: a request target forwarded as it is: printable ASCII, no spaces
SAFE_TARGET = re.compile(r"[!-~]+")
#: bytes of one response kept for the transcript (its start), and of its end (the usage events)
MAX_LOGGED, TAIL = 8 << 20, 1 << 20
#: seconds a call waits for the calls in flight to settle before it is refused (429)
ADMIT_WAIT_S = 300.0
#: bytes from which a request body is parsed under a lock (memory stays flat)
LARGE = 1 << 20
#: characters of one text from a request (a prompt, a tool's output) kept in the transcript
MAX_TEXT = 256 << 10
#: refusals and connection failures logged in the transcript, at most
MAX_NOTES = 1000


def _clip(text: str) -> str:
    """A text from a request as the transcript keeps it (the raw request is in logs/gateway/)."""
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"\n... ({len(text) - MAX_TEXT} characters cut)"


class Gateway:
    """Listens on `socket_path` until `close()`. `stopped` is set once a limit stopped the agent
    (`stop` holds it); `upstream_error` names the last call the provider failed, if any, in a
    way the sandbox could not have caused (`provider_fault`, and a 429 not met while the trial's
    own traffic was above the fair level): only that makes a trial `infra`. Only connections
    that open with `preamble` (the trial's secret) are served; `owner` (the sandbox's uid) gets
    the socket, mode 0600, when this process may give it away. `provider_tools`: the kinds of
    provider-side tool the task allows (policy.KINDS); requests with others are refused."""

    def __init__(self, spec: ModelSpec, budget: Budget, transcript: Transcript, socket_path: Path,
                 log_dir: Path | None = None, *, owner: int | None = None, provider_tools: tuple[str, ...] = ()):
        self.spec, self.budget, self.transcript = spec, budget, transcript
        self.family, self.base, self.auth = upstream(spec)
        proxy_for(target(self.family, self.base, ROUTES[self.family][0]))  # an unusable proxy: ModelError now
        self.socket_path, self.log_dir = Path(socket_path), log_dir
        self.allowed_tools = tuple(provider_tools)
        self.secret = secrets.token_hex(32)
        self.preamble = PREAMBLE.format(self.secret).encode()
        self.stopped = threading.Event()
        self.stop: StopAgent | None = None
        self.upstream_error: str | None = None
        self.calls = self.token_counts = self.dropped = self.notes = 0
        self._served = False  # a call went through: the host's key works
        self._cond = threading.Condition()
        self._flying: dict[int, Claim] = {}  # calls admitted and not settled
        self._traffic = Traffic()
        self._pool = BodyPool()
        self._parsing = threading.Lock()  # one large body parsed at a time
        self._pending: dict[str, dict] = {}  # tool calls made, results not seen yet
        self._started = False
        self._server = Listener(str(self.socket_path), self._handler(), self)
        try:
            if owner is None:
                raise PermissionError
            os.chown(self.socket_path, owner, owner)
            os.chmod(self.socket_path, 0o600)
        except PermissionError:  # not root: any user may connect; the secret refuses all but the sandbox
            os.chmod(self.socket_path, 0o666)
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

    def connect(self, timeout: float = 30) -> socket.socket:
        """A connection to the gateway as its sandbox's forwarder makes one (its secret sent)."""
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(timeout)
        s.connect(str(self.socket_path))
        s.sendall(self.preamble)
        return s

    def _log(self, **event) -> None:
        self.transcript.log(agent="main", **event)

    def _note(self, **event) -> None:
        """Log a refusal or a connection's failure: the first MAX_NOTES (a flood of them is the
        sandbox's to make, the transcript's size is not). Caller holds the lock."""
        self.notes += 1
        if self.notes <= MAX_NOTES:
            self._log(**event)
        elif self.notes == MAX_NOTES + 1:
            self._log(type="refused", status=0, reason=f"rdbench gateway: more than {MAX_NOTES} refusals; "
                                                       "no more are logged")

    def halt(self, e: StopAgent) -> None:
        """Stop the agent (the wall time ran out): every further call is refused."""
        with self._cond:
            self._halt(e)

    def _halt(self, e: StopAgent) -> None:
        """Caller holds the lock."""
        if self.stop is None:
            self.stop = e
            self._log(type="stop", reason=e.reason, detail=str(e))
        self.stopped.set()
        self._cond.notify_all()

    def admit(self, path: str, body: dict, size: int) -> tuple[str | None, int, int, Claim | None]:
        """(None when the call may go on, else why it is refused; the refusal's status; the
        call's number; its claim on the limits, held until `account`). A call waits while the
        calls in flight could already reach a limit, or MAX_IN_FLIGHT are in flight. Logs the
        call's tool results."""
        counting = path.endswith("/count_tokens")  # a token count is no model turn
        held = claim(self.budget, body, size, turn=not counting)
        give_up = time.monotonic() + ADMIT_WAIT_S
        with self._cond:
            while True:
                if self.stop is None:
                    try:
                        self.budget.before_call(turn=not counting)
                    except StopAgent as e:
                        self._halt(e)
                if self.stop is not None:
                    return f"rdbench: the trial's agent limit is reached ({self.stop.reason}: {self.stop})", 429, 0, None
                # free of turns, so bounded apart: a flood of them could run into the provider's rate limit
                if counting and self.token_counts >= max(MAX_TOKEN_COUNTS, 4 * self.budget.max_turns):
                    return "rdbench: too many token-count calls in this trial", 403, 0, None
                flying = list(self._flying.values())
                if not flying or (len(flying) < MAX_IN_FLIGHT and fits(self.budget, flying)):
                    break
                left = min(give_up - time.monotonic(), self.budget.time_left())
                if left <= 0:
                    return "rdbench: too many calls of this trial in flight; retry later", 429, 0, None
                self._cond.wait(min(left, 1.0))
            self.token_counts += counting
            if not self._started:
                self._started = True
                system, user = opening(body)
                self._log(type="start", model=f"{self.spec.provider}/{str(body.get('model', self.spec.name))[:200]}",
                          system=_clip(system), user=_clip(user), via="gateway")
            for cid, output, err in results(body):
                call = self._pending.pop(cid, None)
                if call is not None:
                    self._log(type="tool_result", id=cid, name=call["name"], args=call["args"], output=_clip(output),
                              is_error=err)
            self.calls += 1
            self._flying[self.calls] = held
            self._traffic.started(len(self._flying))
            return None, 200, self.calls, held

    def account(self, path: str, status: int, data: bytes, streamed: bool, latency: float, n: int,
                held: Claim) -> None:
        """Settle one call: log it and charge it (a cut answer by estimate, `policy.charged`);
        a limit passed stops the agent."""
        with self._cond:
            self._flying.pop(n, None)
            self._cond.notify_all()
            if status != 200:
                own = status == 429 and self._traffic.crowded()  # the trial's own flood: the agent's
                if provider_fault(status, self._served) and not own:
                    self.upstream_error = f"{path}: HTTP {status}: {data[:300].decode(errors='replace')}"
                self._log(type="model_error", path=path, status=status, output=data[:4000].decode(errors="replace"),
                          **({"own_traffic": True} if own else {}))
                return
            self.upstream_error, self._served = None, True
            if path.endswith("/count_tokens"):
                return
            reply, whole = charged(summary(self.family, parse_response(self.family, data, streamed), latency), held,
                                   self.family, data, streamed)
            calls = [{"id": c.id, "name": c.name, "args": c.args} for c in reply.tool_calls]
            self._pending.update({c["id"]: c for c in calls})
            self._log(type="model_call", turn=self.budget.turns + 1, text=reply.text, tool_calls=calls,
                      input_tokens=reply.input_tokens, output_tokens=reply.output_tokens,
                      cache_read_tokens=reply.cache_read_tokens, cache_write_tokens=reply.cache_write_tokens,
                      latency_s=round(latency, 3), path=path, stream=streamed, exchange=n,
                      **({} if whole else {"estimated": True}))
            try:
                self.budget.charge(reply)
            except StopAgent as e:
                self._halt(e)

    def save(self, n: int, name: str, data: bytes) -> None:
        """Keep the raw exchange (logs/gateway/NNNN.request.json, NNNN.response)."""
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            (self.log_dir / f"{n:04d}.{name}").write_bytes(data)

    def _handler(self):
        return type("Handler", (_Handler,), {"gw": self})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one call per connection, its end the end of the body
    timeout = READ_TIMEOUT_S  # each read from the sandbox
    gw: Gateway

    def log_message(self, *args):
        pass

    def address_string(self):
        return "sandbox"

    def setup(self):
        super().setup()
        self.rfile, self.read, self.held = Capped(self.rfile), False, [0]
        self.command, self.path = "-", "-"

    def handle(self):
        try:
            line = self.rfile.readline(len(self.gw.preamble))
            if not hmac.compare_digest(line, self.gw.preamble):
                self.read = True
                self.refuse(403, "rdbench gateway: this socket serves its own trial's sandbox only")
                return self.linger()
            self.handle_one_request()
        except FramingError as e:
            self.read = True
            self.refuse(e.status, str(e))
        except socket.timeout:
            self.read = True
            self.refuse(408, "rdbench gateway: the request stopped arriving")
        except OSError:  # the client hung up
            pass
        finally:
            self.gw._pool.give(self.held[0])

    def linger(self, seconds: float = 2.0, most: int = 1 << 16) -> None:
        """After a refusal of what was not read: no more writes, then read (a bounded amount, for
        a bounded time) until the client hangs up, so that it hears the answer instead of a
        broken pipe on the request it was still sending."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(seconds)
            while most > 0 and (chunk := self.connection.recv(min(most, 4096))):
                most -= len(chunk)
        except OSError:
            pass

    def refuse(self, status: int, message: str) -> None:
        if not self.read:  # read what was sent: the client hears the answer, not a reset
            try:
                self.body()
            except (FramingError, OSError):
                pass
        with self.gw._cond:
            self.gw._note(type="refused", method=self.command, path=str(self.path)[:2000], status=status,
                          reason=message)
        data = json.dumps({"type": "error", "error": {"type": "permission_error", "message": message}}).encode()
        try:
            self.wfile.write(b"HTTP/1.0 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                             b"connection: close\r\n\r\n" % (status, HTTPStatus(status).phrase.encode(), len(data))
                             + data)
        except OSError:
            pass

    def body(self) -> bytearray:
        self.read = True
        try:
            return read_body(self.rfile, self.headers, self.gw._pool, self.held)
        except TimeoutError:  # answered, not dropped (a timeout in the head is: it has no request yet)
            raise FramingError(408, "rdbench gateway: the request body stopped arriving") from None

    def do_GET(self):
        self.refuse(403, f"rdbench gateway: {self.command} {self.path} is not a model endpoint")

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_CONNECT = do_GET

    def do_POST(self):
        gw = self.gw
        path = self.path.partition("?")[0]
        if path not in ROUTES[gw.family]:  # absolute URLs (another host) included
            return self.refuse(403, f"rdbench gateway: POST {self.path} is not a model endpoint")
        if not SAFE_TARGET.fullmatch(self.path):  # what http.client would refuse to send
            return self.refuse(400, f"rdbench gateway: POST {self.path!r}: not a valid request target")
        raw = self.body()
        try:
            with gw._parsing if len(raw) > LARGE else contextlib.nullcontext():  # its parse takes ~2x its size
                body = json.loads(raw)
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        banned = [k for k in provider_tools(gw.family, body) if k not in gw.allowed_tools]
        if banned:
            return self.refuse(400, f"rdbench gateway: provider-side tools are off in this task: {', '.join(banned)} "
                                    "(the sandbox has no network; a task allows them with [agent] provider_tools)")
        why, status, n, held = gw.admit(path, body, len(raw))
        body = None  # what is forwarded is `raw`, as it came
        if why is not None:
            return self.refuse(status, why)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in DROP}
        headers.update(gw.auth, **{"accept-encoding": "identity"})
        outcome = [502, bytearray(), False]  # status, the answer's bytes, streamed
        t = time.monotonic()
        try:
            gw.save(n, "request.json", raw)
            self.forward(target(gw.family, gw.base, self.path), headers, raw, outcome)
        finally:  # settled whatever happened: the claim is released, what was served is charged
            data = bytes(outcome[1])
            gw.save(n, "response", data)
            gw.account(path, outcome[0], data, outcome[2], time.monotonic() - t, n, held)

    def forward(self, url: str, headers: dict, raw: bytes, outcome: list) -> None:
        data, tail, answered, conn = outcome[1], bytearray(), False, None
        try:
            conn, where, via = connection(url, timeout=max(1.0, min(600.0, self.gw.budget.time_left())))
            try:
                conn.putrequest("POST", where, skip_accept_encoding=True)
                for k, v in {**headers, **via, "content-length": str(len(raw))}.items():
                    conn.putheader(k, v)
            except (ValueError, http.client.HTTPException) as e:  # what the sandbox sent: its own fault
                outcome[0], outcome[1][:] = 400, f"rdbench gateway: request not sent: {e}".encode()
                self.send_error(400, "rdbench gateway: request not sent", str(e))
                return
            conn.endheaders(raw)
            r = conn.getresponse()
            outcome[0], answered = r.status, True
            outcome[2] = "text/event-stream" in (r.getheader("content-type") or "")
            self.send_response(r.status)
            for k, v in r.getheaders():  # the body's end is the connection's
                if k.lower() not in HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("connection", "close")
            self.end_headers()
            while chunk := r.read1(65536):
                if len(data) < MAX_LOGGED:
                    data += chunk
                else:  # the end is kept too: the usage events come last
                    tail = (tail + chunk)[-TAIL:]
                self.wfile.write(chunk)  # as it comes: the CLI streams
        except (OSError, http.client.HTTPException, ModelError) as e:
            if not answered:  # no answer from the provider or the host's proxy (the CLI hanging up: no error)
                outcome[1][:] = f"rdbench gateway: the model API did not answer: {e!r}".encode()
                try:
                    self.send_error(502, "model API unreachable")
                except OSError:
                    pass
        finally:
            if tail:
                data += b"\n\n" + tail
            if conn is not None:
                conn.close()
