"""The model-API gateway without a sandbox: calls go over its Unix socket, with the real
anthropic/openai SDKs' wire formats served by the fake API. Streamed replies read the same as
whole ones; limits refuse calls; keys are swapped; only model endpoints pass."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from agents.gateway import PLACEHOLDER_KEY, Gateway, target
from agents.budget import Budget, Transcript
from agents.wire import parse_response, summary
from results.registry import ModelSpec
from tests.agents.fake_api import FakeAPI, Step, sse_events

STEP = Step(text="Looking at the code first.", usage=(321, 45),
            tool_calls=[("bash", {"command": "ls -la"}), ("edit", {"a": [1, 2]})])


def _stream(reply: dict) -> bytes:
    return "".join((f"event: {name}\n" if name else "") + "data: "
                   + (data if isinstance(data, str) else json.dumps(data)) + "\n\n"
                   for name, data in sse_events(reply)).encode()


@pytest.mark.parametrize("kind", ["anthropic", "responses", "chat"])
def test_a_streamed_reply_reads_as_the_whole_one(kind):
    api = FakeAPI([])
    make = {"anthropic": api.anthropic_reply, "responses": api.responses_reply, "chat": api.openai_reply}[kind]
    reply = make(STEP, {})
    family = "messages" if kind == "anthropic" else "completions"
    whole = summary(family, parse_response(family, json.dumps(reply).encode(), streamed=False), 0.1)
    streamed = summary(family, parse_response(family, _stream(reply), streamed=True), 0.1)
    for r in (whole, streamed):
        assert r.text == STEP.text and (r.input_tokens, r.output_tokens) == (321, 45)
        assert [(c.name, c.args) for c in r.tool_calls] == [("bash", {"command": "ls -la"}), ("edit", {"a": [1, 2]})]


def test_upstream_urls_keep_the_provider_conventions():
    assert target("messages", "https://api.anthropic.com/", "/v1/messages?beta=true") == \
        "https://api.anthropic.com/v1/messages?beta=true"
    assert target("completions", "http://h:8000/v1", "/v1/responses") == "http://h:8000/v1/responses"


def _sock() -> Path:
    """A fresh gateway socket path (a socket path has 108 bytes: under /tmp, not tmp_path)."""
    return Path("/tmp") / f"gw-{uuid.uuid4().hex[:8]}.sock"


def _anthropic_gateway(tmp_path: Path, sock: Path, turns: int = 5) -> Gateway:
    """A gateway to the Anthropic API at ANTHROPIC_BASE_URL, `turns` model calls allowed."""
    return Gateway(ModelSpec("anthropic", "m"), Budget(turns, None, None, None, 600, None),
                   Transcript(tmp_path / "t.jsonl"), sock)


#: one small Anthropic request
HI = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


def _call(gw: Gateway, path: str, body: dict, method: str = "POST") -> tuple[int, bytes]:
    import http.client

    class Conn(http.client.HTTPConnection):
        def connect(self):
            self.sock = gw.connect()

    c = Conn("sandbox", timeout=30)
    c.request(method, path, body=json.dumps(body), headers={"authorization": f"Bearer {PLACEHOLDER_KEY}",
                                                             "content-type": "application/json"})
    r = c.getresponse()
    return r.status, r.read()


def _exchange(gw: Gateway, raw: bytes) -> bytes:
    """Send `raw` on a connection of the gateway's own sandbox; all it answers."""
    s = gw.connect()
    try:
        s.sendall(raw)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
        return got
    finally:
        s.close()


def test_limits_refuse_calls_and_keys_are_swapped(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-gateway-test")
    budget = Budget(10, 150, None, None, 600, None)
    sock = _sock()
    with FakeAPI([Step(text="one", usage=(100, 5)), Step(text="two", usage=(100, 5))]) as api:
        monkeypatch.setenv("OPENAI_BASE_URL", api.url + "/v1")
        with Gateway(ModelSpec("openai", "m"), budget, Transcript(tmp_path / "t.jsonl"), sock, tmp_path / "raw") as gw:
            ok = [_call(gw, "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
                  for _ in range(2)]
            # the second reply passes 150 input tokens: it is delivered, then the agent is stopped
            assert ok[0][0] == 200 and ok[1][0] == 200 and gw.stopped.is_set()
            status, body = _call(gw, "/v1/chat/completions", {"model": "m", "messages": []})
            assert status == 429 and b"token_limit" in body
            assert _call(gw, "/v1/models", {}, method="GET")[0] == 403
            assert _call(gw, "/v1/embeddings", {"model": "m"})[0] == 403
    assert len(api.requests) == 2 and all(h["authorization"] == "Bearer sk-real-gateway-test" for h in api.headers)
    assert gw.stop.reason == "token_limit" and (budget.turns, budget.input_tokens) == (2, 200)
    events = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [e["type"] for e in events] == ["start", "model_call", "model_call", "stop", "refused", "refused", "refused"]
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == [
        "0001.request.json", "0001.response", "0002.request.json", "0002.response"]


def test_the_wall_time_runs_from_the_first_call(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-real-x")
    budget = Budget(10, None, None, None, 0.01, None)
    sock = _sock()
    with FakeAPI([Step(text="one")], repeat_last=True) as api:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
        with Gateway(ModelSpec("anthropic", "m"), budget, Transcript(tmp_path / "t.jsonl"), sock) as gw:
            assert _call(gw, "/v1/messages", HI)[0] == 200  # the first call always goes
            import time

            time.sleep(0.05)
            assert _call(gw, "/v1/messages", HI)[0] == 429
    assert gw.stop.reason == "time_limit" and len(api.requests) == 1


def test_a_chunked_request_body_is_forwarded_whole(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-real-x")
    sock = _sock()
    body = json.dumps({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi " * 50}]}).encode()
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 40]), body[i:i + 40]) for i in range(0, len(body), 40))
    with FakeAPI([Step(text="one")]) as api:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
        with _anthropic_gateway(tmp_path, sock) as gw:
            got = _exchange(gw, b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
                            + chunked + b"0\r\n\r\n")
    assert got.startswith(b"HTTP/1.0 200") and b'"one"' in got
    assert api.requests[0][1] == json.loads(body)


def test_only_faults_the_sandbox_could_not_cause_are_the_providers(tmp_path, monkeypatch):
    """A request the sandbox got wrong (400), or a 401 once the key has worked (a header it
    sent), leaves no upstream error: the CLI's exit then ends the trial as the agent's, not
    as `infra`. A 5xx, a key refused from the first call, or the host's proxy refusing (407) is
    the provider's."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-x")
    sock = _sock()
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    script = [Step(status=401, text="bad key"), Step(text="one"), Step(status=400, text="bad request"),
              Step(status=401, text="organization mismatch"), Step(status=503, text="overloaded"),
              Step(status=407, text="the host's proxy wants credentials"), Step(text="two")]
    with FakeAPI(script) as api:
        monkeypatch.setenv("OPENAI_BASE_URL", api.url + "/v1")
        with Gateway(ModelSpec("openai", "m"), Budget(10, None, None, None, 600, None),
                     Transcript(tmp_path / "t.jsonl"), sock) as gw:
            seen = []
            for _ in script:
                status, _ = _call(gw, "/v1/chat/completions", body)
                seen.append((status, gw.upstream_error is not None))
    assert seen == [(401, True), (200, False), (400, False), (401, False), (503, True), (407, True), (200, False)]


PROXY_VARS = ("no_proxy", "NO_PROXY", "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
              "ALL_PROXY")


def _no_proxies(monkeypatch) -> None:
    """The test's own proxy settings only, whatever the host has."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


class _Proxy:
    """A forward HTTP proxy (absolute-URL requests, and CONNECT tunnels) that records what it
    carried: (request target, Proxy-Authorization)."""

    def __init__(self):
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        self.seen: list[tuple[str, str | None]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_CONNECT(self):
                import select
                import socket

                proxy.seen.append((f"CONNECT {self.path}", self.headers.get("proxy-authorization")))
                host, port = self.path.rsplit(":", 1)
                upstream = socket.create_connection((host, int(port)), timeout=30)
                self.send_response(200, "Connection established")
                self.end_headers()
                ends = [self.connection, upstream]
                while True:  # bytes both ways until either side closes
                    readable, _, _ = select.select(ends, [], [], 30)
                    if not readable:
                        break
                    chunks = [(s, s.recv(65536)) for s in readable]
                    if any(not c for _, c in chunks):
                        break
                    for s, c in chunks:
                        (upstream if s is self.connection else self.connection).sendall(c)
                upstream.close()
                self.close_connection = True

            def do_POST(self):
                proxy.seen.append((self.path, self.headers.get("proxy-authorization")))
                body = self.rfile.read(int(self.headers["content-length"]))
                u = urlsplit(self.path)
                c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
                c.request("POST", u.path, body=body, headers={k: v for k, v in self.headers.items()
                                                              if k.lower() not in ("proxy-authorization", "host")})
                r = c.getresponse()
                data = r.read()
                self.send_response(r.status)
                self.send_header("content-type", r.getheader("content-type") or "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_calls_go_through_the_hosts_proxy_unless_no_proxy_exempts_the_api(tmp_path, monkeypatch):
    import base64

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-real-x")
    _no_proxies(monkeypatch)
    sock = _sock()
    proxy = _Proxy()
    try:
        with FakeAPI([Step(text="one"), Step(text="two")]) as api:
            monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
            monkeypatch.setenv("HTTP_PROXY", f"http://u%40corp:p%3Aw@127.0.0.1:{proxy.port}")
            with _anthropic_gateway(tmp_path, sock) as gw:
                first = _call(gw, "/v1/messages", HI)
                monkeypatch.setenv("NO_PROXY", "127.0.0.1")
                second = _call(gw, "/v1/messages", HI)
    finally:
        proxy.close()
    assert first[0] == 200 and b'"one"' in first[1] and second[0] == 200 and b'"two"' in second[1]
    # the first went through the proxy, with its credentials; NO_PROXY sent the second straight
    assert proxy.seen == [(api.url + "/v1/messages", "Basic " + base64.b64encode(b"u@corp:p:w").decode())]
    assert len(api.requests) == 2 and all(h["x-api-key"] == "sk-real-x" for h in api.headers)
    assert all("proxy-authorization" not in {k.lower() for k in h} for h in api.headers)


def test_https_goes_through_a_connect_tunnel_of_the_hosts_proxy(tmp_path, monkeypatch):
    """The real APIs' path: HTTPS to the API through the proxy's CONNECT tunnel (the proxy's
    credentials on the CONNECT, never forwarded to the API), the API's certificate checked."""
    import base64
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the fake API's certificate is the one trusted
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-real-x")
    _no_proxies(monkeypatch)
    sock = _sock()
    proxy = _Proxy()
    try:
        with FakeAPI([Step(text="through the tunnel")], tls=(str(cert), str(key))) as api:
            assert api.url.startswith("https://")
            monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
            monkeypatch.setenv("HTTPS_PROXY", f"http://user:pw@127.0.0.1:{proxy.port}")
            with _anthropic_gateway(tmp_path, sock) as gw:
                status, reply = _call(gw, "/v1/messages", HI)
    finally:
        proxy.close()
    assert status == 200 and b"through the tunnel" in reply and gw.upstream_error is None
    port = api.url.rsplit(":", 1)[1]
    assert proxy.seen == [(f"CONNECT 127.0.0.1:{port}", "Basic " + base64.b64encode(b"user:pw").decode())]
    assert api.headers[0]["x-api-key"] == "sk-real-x" and "proxy-authorization" not in api.headers[0]


def test_a_proxy_setting_the_gateway_cannot_use_is_the_hosts_fault(tmp_path, monkeypatch):
    from agents import ModelError
    from agents.gateway import connection

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-real-x")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "https://api.example.test")
    _no_proxies(monkeypatch)
    # without a port, a proxy is on port 80 (as for the SDKs); ALL_PROXY serves when no scheme's is set
    monkeypatch.setenv("ALL_PROXY", "http://proxy.example.test")
    conn, where, extra = connection("https://api.example.test/v1/messages?beta=true", 5)
    assert (conn.host, conn.port, where, extra) == ("proxy.example.test", 80, "/v1/messages?beta=true", {})
    for bad in ("socks5://proxy.example.test:1080", "http://proxy.example.test:port", "https://proxy.example.test"):
        monkeypatch.setenv("HTTPS_PROXY", bad)
        with pytest.raises(ModelError, match="proxy"):  # a ModelError: the trial is infra, not the agent's
            _anthropic_gateway(tmp_path, _sock())


def test_a_request_the_gateway_cannot_send_is_refused_and_is_the_sandboxs_fault(tmp_path, monkeypatch):
    """A request target http.client would not send (a control character in its query) is
    refused by the gateway: no provider fault, so the agent cannot make its own trial `infra`
    with it; the next call goes through."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-real-x")
    sock = _sock()
    with FakeAPI([Step(text="fine")]) as api:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
        with _anthropic_gateway(tmp_path, sock) as gw:
            answers = []
            for bad in (b"/v1/messages?\x01", b"/v1/messages?\xc3\xa9"):
                got = _exchange(gw, b"POST " + bad + b" HTTP/1.0\r\ncontent-length: 2\r\n\r\n{}")
                answers.append(got.split(b"\r\n", 1)[0])
            ok = _call(gw, "/v1/messages", HI)
    assert answers == [b"HTTP/1.0 400 Bad Request"] * 2, answers
    assert gw.upstream_error is None and ok[0] == 200 and len(api.requests) == 1


def test_token_counts_are_bounded_though_they_are_no_turns(tmp_path, monkeypatch):
    """count_tokens calls cost no turn, so they have a bound of their own (a flood of them could
    run into the provider's rate limit, a fault that would void the trial); past it: refused."""
    from agents.gateway import MAX_TOKEN_COUNTS

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-real-x")
    sock = _sock()
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    with FakeAPI([Step(text="ok")], repeat_last=True) as api:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
        with _anthropic_gateway(tmp_path, sock, turns=2) as gw:
            counted = [_call(gw, "/v1/messages/count_tokens", body)[0] for _ in range(MAX_TOKEN_COUNTS + 1)]
            turn = _call(gw, "/v1/messages", {**body, "max_tokens": 10})[0]
    assert counted[:-1] == [200] * MAX_TOKEN_COUNTS and counted[-1] == 403
    assert turn == 200 and not gw.stopped.is_set()  # the turns are untouched
    assert len(api.requests) == MAX_TOKEN_COUNTS + 1
