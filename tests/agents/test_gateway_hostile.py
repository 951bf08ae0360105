"""The gateway against a hostile sandbox (issue 23): another host user, malformed framing,
oversized bodies and connection floods (the gateway in a child process, its peak memory read
from /proc), limits with calls in flight, streams cut before their usage event, the trial's own
429s, provider-side tools. Calls go to the fake API (real wire formats) over HTTP."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agents.gateway import MAX_BODY, MAX_CONNECTIONS, Gateway, socket_dir
from agents.budget import Budget, Transcript
from results.registry import ModelSpec, Prices
from sandbox import AGENT_UID
from tests.agents.fake_api import FakeAPI, Step
from tests.agents.test_gateway import HI, _call, _exchange

ROOT = Path(__file__).resolve().parents[2]
#: a Python other users can run (the test's own may live under root's home)
OTHER_PYTHON = "/usr/bin/python3"


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@contextlib.contextmanager
def _gateway(tmp_path: Path, family: str = "anthropic", budget: Budget | None = None, **kw):
    """A running gateway in a socket folder of its own (as a trial's: the sandbox user's, 0700),
    the folder removed after."""
    d = socket_dir(AGENT_UID)
    try:
        with Gateway(ModelSpec(family, "m"), budget or Budget(50, None, None, None, 600, None),
                     Transcript(tmp_path / "t.jsonl"), d / "gw.sock", owner=AGENT_UID, **kw) as gw:
            yield gw
    finally:
        shutil.rmtree(d, ignore_errors=True)


#: run as another user: connect to the socket, send the preamble read on stdin, POST, print the status
AS_USER = r"""
import http.client, json, os, socket, sys
class C(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(sys.argv[1])
        self.sock.sendall(sys.stdin.buffer.read())
try:
    c = C("x", timeout=30)
    c.request("POST", "/v1/messages", body=json.dumps({"model": "m", "max_tokens": 5, "messages": []}))
    print(c.getresponse().status)
except OSError as e:
    print(type(e).__name__)
"""


def _as_user(uid: int, sock: Path, preamble: bytes) -> str:
    def become():
        os.setgid(uid)
        os.setuid(uid)
    r = subprocess.run([OTHER_PYTHON, "-c", AS_USER, str(sock)], input=preamble, capture_output=True,
                       preexec_fn=become, timeout=60)
    return r.stdout.decode().strip() or r.stderr.decode()[-300:]


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists(OTHER_PYTHON),
                    reason="needs root, to run a client as other users, and /usr/bin/python3")
def test_only_the_trials_own_sandbox_can_use_its_gateway(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-real-x")
    with FakeAPI([Step(text="ok")], repeat_last=True) as api:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
        with _gateway(tmp_path) as gw:
            d = gw.socket_path.parent
            assert (d.stat().st_mode & 0o777, d.stat().st_uid) == (0o700, AGENT_UID)
            assert (gw.socket_path.stat().st_mode & 0o777, gw.socket_path.stat().st_uid) == (0o600, AGENT_UID)
            nobody = _as_user(65534, gw.socket_path, gw.preamble)  # another host user, even with the secret
            sandbox_user = _as_user(AGENT_UID, gw.socket_path, gw.preamble)
            no_secret = _as_user(AGENT_UID, gw.socket_path, b"RDBENCH-GATEWAY " + b"0" * 64 + b"\n")
            root_no_secret = _exchange_raw(gw.socket_path, b"POST /v1/messages HTTP/1.0\r\ncontent-length: 2\r\n\r\n{}")
    assert nobody == "PermissionError", nobody
    assert sandbox_user == "200" and no_secret == "403", (sandbox_user, no_secret)
    assert root_no_secret.startswith(b"HTTP/1.0 403")
    assert len(api.requests) == 1  # the sandbox user's call only
    refused = [e for e in _events(tmp_path / "t.jsonl") if e["type"] == "refused"]
    assert len(refused) == 2 and all("own trial" in e["reason"] for e in refused)


def _exchange_raw(sock: Path, raw: bytes) -> bytes:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(str(sock))
    s.sendall(raw)
    got = b""
    while chunk := s.recv(65536):
        got += chunk
    s.close()
    return got


@pytest.mark.parametrize("head, body, status", [
    (b"content-length: -1", b"{}", 400),
    (b"content-length: abc", b"{}", 400),
    (b"content-length: 2\r\ncontent-length: 3", b"{}", 400),
    (b"content-length: 2\r\ntransfer-encoding: chunked", b"2\r\n{}\r\n0\r\n\r\n", 400),
    (b"transfer-encoding: gzip", b"{}", 400),
    (b"transfer-encoding: chunked", b"zz\r\n{}\r\n0\r\n\r\n", 400),
    (b"transfer-encoding: chunked", b"1000000000000\r\n{}\r\n0\r\n\r\n", 400),  # 2^48
    (b"transfer-encoding: chunked", b"2000001\r\n", 413),  # one chunk over the cap
    (b"content-length: %d" % (MAX_BODY + 1), b"", 413),
    (b"content-length: 99999999999999999999", b"", 400),
])
def test_malformed_framing_is_answered_and_never_forwarded(tmp_path, monkeypatch, capfd, head, body, status):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-real-x")
    with FakeAPI([Step(text="ok")], repeat_last=True) as api:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
        with _gateway(tmp_path) as gw:
            got = _exchange(gw, b"POST /v1/messages HTTP/1.1\r\nhost: x\r\n" + head + b"\r\n\r\n" + body)
            after = _call(gw, "/v1/messages", HI)  # the gateway still serves
    assert got.split(b"\r\n", 1)[0].startswith(b"HTTP/1.0 %d" % status), got[:200]
    assert after[0] == 200 and len(api.requests) == 1
    err = capfd.readouterr().err
    assert "Traceback" not in err and "MemoryError" not in err, err
    assert [e["status"] for e in _events(tmp_path / "t.jsonl") if e["type"] == "refused"] == [status]


#: the gateway in a child process (so that its peak memory is its own), until stdin closes
CHILD = r"""
import json, sys
from pathlib import Path
from agents.gateway import Gateway, socket_dir
from agents.budget import Budget, Transcript
from results.registry import ModelSpec
from sandbox import AGENT_UID
d = socket_dir(AGENT_UID)
with Gateway(ModelSpec("anthropic", "m"), Budget(50, None, None, None, 600, None), Transcript(Path(sys.argv[1])),
             d / "gw.sock", owner=AGENT_UID) as gw:
    print(json.dumps({"sock": str(gw.socket_path), "preamble": gw.preamble.decode()}), flush=True)
    sys.stdin.read()
print(json.dumps({"dropped": gw.dropped}), flush=True)
d.rmdir()
"""


class _Child:
    def __init__(self, tmp_path: Path, url: str):
        env = {**os.environ, "ANTHROPIC_API_KEY": "sk-real-x", "ANTHROPIC_BASE_URL": url, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "t.jsonl")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, cwd=ROOT)
        info = json.loads(self.proc.stdout.readline())
        self.sock, self.preamble = Path(info["sock"]), info["preamble"].encode()

    def status(self, key: str) -> int:
        """A figure of /proc/PID/status: VmHWM (peak resident kB), Threads."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise KeyError(key)

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(60)
        s.connect(str(self.sock))
        s.sendall(self.preamble)
        return s

    def close(self) -> dict:
        out, _ = self.proc.communicate(b"", timeout=120)
        return json.loads(out.splitlines()[-1])


def _answer(s: socket.socket) -> bytes:
    got = b""
    try:
        while chunk := s.recv(65536):
            got += chunk
    except OSError:
        pass
    s.close()
    return got.split(b"\r\n", 1)[0]


@pytest.mark.slow
def test_oversized_bodies_keep_the_gateways_memory_flat(tmp_path):
    """Bodies over the cap (chunked, sent on and on; an honest Content-Length), and several
    bodies just under it at once: each refused or bounded by the shared byte budget; the
    gateway's peak resident memory stays under 200 MB."""
    with FakeAPI([Step(text="ok")], repeat_last=True) as api:
        child = _Child(tmp_path, api.url)
        try:
            # 200 MB in 1 MB chunks: refused (413) once past the cap, the rest never read
            s = child.connect()
            s.sendall(b"POST /v1/messages HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n")
            piece = b"100000\r\n" + b"x" * (1 << 20) + b"\r\n"
            try:
                for _ in range(200):
                    s.sendall(piece)
            except OSError:
                pass
            chunked = _answer(s)
            honest = _answer(_sent(child, b"POST /v1/messages HTTP/1.0\r\ncontent-length: 500000000\r\n\r\n"))
            # six bodies of 30 MB at once: the byte budget (96 MB) admits some, answers 503 to the rest
            big = json.dumps({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "y" * (30 << 20)}]})
            heads = []

            def post():
                c = child.connect()
                try:
                    c.sendall(b"POST /v1/messages HTTP/1.0\r\ncontent-length: %d\r\n\r\n" % len(big) + big.encode())
                except OSError:
                    pass
                heads.append(_answer(c))
            threads = [threading.Thread(target=post) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            peak = child.status("VmHWM")
        finally:
            child.close()
    assert chunked.startswith(b"HTTP/1.0 413") and honest.startswith(b"HTTP/1.0 413"), (chunked, honest)
    assert len(heads) == 6 and all(h.startswith((b"HTTP/1.0 200", b"HTTP/1.0 503")) for h in heads), heads
    print(f"gateway peak RSS {peak / 1024:.0f} MB; answers {sorted(h[9:12].decode() for h in heads)}")
    assert peak < 200 * 1024, f"peak RSS {peak} kB"


def _sent(child: _Child, raw: bytes) -> socket.socket:
    s = child.connect()
    s.sendall(raw)
    return s


@pytest.mark.slow
def test_a_connection_flood_is_capped_and_memory_stays_flat(tmp_path):
    """1,500 idle connections: at most MAX_CONNECTIONS are held (a thread each), the rest are
    answered 503 and closed; threads, open files and peak memory stay bounded; once the flood
    ends the gateway serves again."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    with FakeAPI([Step(text="ok")], repeat_last=True) as api:
        child = _Child(tmp_path, api.url)
        flood = []
        try:
            for _ in range(1500):
                s = socket.socket(socket.AF_UNIX)
                s.setblocking(False)
                try:
                    s.connect(str(child.sock))
                except (BlockingIOError, ConnectionRefusedError):  # the listen queue full: refused by the kernel
                    pass
                flood.append(s)
            import time

            time.sleep(2)
            threads, fds, peak = child.status("Threads"), child.fds(), child.status("VmHWM")
            for s in flood:
                s.close()
            time.sleep(1)
            ok = _answer(_sent(child, b"POST /v1/messages HTTP/1.0\r\ncontent-length: %d\r\n\r\n%s"
                               % (len(json.dumps(HI)), json.dumps(HI).encode())))
        finally:
            for s in flood:
                s.close()
            dropped = child.close()["dropped"]
    print(f"flood: {threads} threads, {fds} open files, peak RSS {peak / 1024:.0f} MB, {dropped} dropped")
    assert threads <= MAX_CONNECTIONS + 8 and fds <= MAX_CONNECTIONS + 80, (threads, fds)
    assert dropped > 0 and peak < 200 * 1024
    assert ok.startswith(b"HTTP/1.0 200"), ok


def _parallel(n: int, call) -> list:
    out = [None] * n

    def one(i):
        try:
            out[i] = call()
        except (OSError, http.client.HTTPException) as e:  # over the connection cap: 503, or dropped mid-send
            out[i] = (0, repr(e).encode())
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_parallel_calls_forward_no_more_turns_than_allowed(tmp_path, monkeypatch):
    """40 calls at once with 8 turns allowed: 8 forwarded (the others wait for them, then are
    refused by the turn limit, or are over the connection cap); never more than MAX_IN_FLIGHT
    at the provider at once."""
    from agents.gateway import MAX_IN_FLIGHT

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-real-x")
    budget = Budget(8, None, None, None, 600, None)
    with FakeAPI([Step(text="ok", delay=0.3)], repeat_last=True) as api:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
        with _gateway(tmp_path, budget=budget) as gw:
            statuses = [s for s, _ in _parallel(40, lambda: _call(gw, "/v1/messages", HI))]
    assert len(api.requests) == 8 and budget.turns == 8, (len(api.requests), budget.turns)
    # past MAX_CONNECTIONS open at once, a connection is answered 503 at once (0: dropped while it still sent)
    assert statuses.count(200) == 8 and set(statuses) <= {200, 429, 503, 0} and gw.stop.reason == "turn_limit"
    assert api.peak_active <= MAX_IN_FLIGHT


def _responses_body(tokens: int) -> dict:
    return {"model": "m", "stream": True, "max_output_tokens": 100,
            "input": [{"role": "user", "content": "z" * (tokens * 4)}]}


@pytest.mark.parametrize("prompt_tokens, parallel", [(100_000, 5), (5_000, 10)])
def test_a_cost_limit_holds_with_cut_streams_in_flight(tmp_path, monkeypatch, prompt_tokens, parallel):
    """Streams cut before their usage event, many at once: each is charged its request's
    input tokens and the output it streamed (what the fake served, within 5 %), and calls are
    admitted only while the calls in flight cannot reach the limit: the trial stops within one
    call's cost of it."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-x")
    price = Prices(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75)
    budget = Budget(100, None, None, 0.05, 600, price)
    step = Step(text="A partial answer that is cut off. " * 4, usage=None, cut=8)  # before response.completed
    with FakeAPI([step], repeat_last=True) as api:
        monkeypatch.setenv("OPENAI_BASE_URL", api.url + "/v1")
        with _gateway(tmp_path, "openai", budget=budget) as gw:
            _parallel(parallel, lambda: _call(gw, "/v1/responses", _responses_body(prompt_tokens)))
    served_in, served_out = sum(i for i, _ in api.served), sum(o for _, o in api.served)
    one_call = max(price.cost(i, o) for i, o in api.served)
    print(f"{len(api.requests)} of {parallel} forwarded; ${budget.cost_usd:.4f} recorded, limit $0.05, "
          f"one call ${one_call:.4f}; tokens recorded {budget.input_tokens}/{budget.output_tokens}, "
          f"served {served_in}/{served_out}")
    assert gw.stop is not None and gw.stop.reason == "cost_limit"
    assert 0.05 < budget.cost_usd <= 0.05 + one_call
    assert len(api.served) == len(api.requests) < parallel and served_out > 0
    assert abs(budget.input_tokens - served_in) <= 0.05 * served_in
    assert abs(budget.output_tokens - served_out) <= 0.05 * served_out + 1
    cut = [e for e in _events(tmp_path / "t.jsonl") if e["type"] == "model_call"]
    assert cut and all(e.get("estimated") for e in cut)


def test_a_429_the_trials_own_flood_caused_is_not_the_providers(tmp_path, monkeypatch):
    """Six calls at once (over the fair level of in-flight calls) met with 429: the agent's own
    doing, no upstream error (the trial ends as the agent's outcome). A lone call's 429 is
    the provider's."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-real-x")
    with FakeAPI([Step(status=429, text="rate limited", delay=1.0)], repeat_last=True) as api:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
        with _gateway(tmp_path) as gw:
            flood = [s for s, _ in _parallel(6, lambda: _call(gw, "/v1/messages", HI))]
            after_flood = gw.upstream_error
        with _gateway(tmp_path) as calm:
            lone = _call(calm, "/v1/messages", HI)[0]
    assert flood == [429] * 6 and after_flood is None
    assert lone == 429 and calm.upstream_error is not None and "429" in calm.upstream_error
    errors = [e for e in _events(tmp_path / "t.jsonl") if e["type"] == "model_error"]
    assert [e.get("own_traffic", False) for e in errors] == [True] * 6 + [False], errors
    assert len(api.requests) == 7


@pytest.mark.parametrize("family, body, kinds", [
    ("anthropic", {**HI, "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}]},
     ["web_search"]),
    ("anthropic", {**HI, "tools": [{"type": "web_fetch_20250910", "name": "web_fetch"},
                                   {"type": "code_execution_20250825", "name": "code_execution"}]},
     ["code_execution", "web_fetch"]),
    ("anthropic", {**HI, "mcp_servers": [{"type": "url", "url": "https://mcp.example.com", "name": "x"}]}, ["mcp"]),
    ("openai", {"model": "m", "input": "hi", "tools": [{"type": "web_search", "external_web_access": True}]},
     ["web_search"]),
    ("openai", {"model": "m", "input": "hi", "tools": [{"type": "file_search", "vector_store_ids": ["v"]},
                                                       {"type": "code_interpreter", "container": {"type": "auto"}},
                                                       {"type": "mcp", "server_label": "x", "server_url": "u"}]},
     ["code_execution", "file_search", "mcp"]),
])
def test_provider_side_tools_are_refused_unless_the_task_allows_them(tmp_path, monkeypatch, family, body, kinds):
    from agents.gateway import provider_tools

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-real-x")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-x")
    path = "/v1/messages" if family == "anthropic" else "/v1/responses"
    client_tools = {"anthropic": [{"name": "Bash", "input_schema": {"type": "object"}},
                                  {"type": "bash_20250124", "name": "bash"}],
                    "openai": [{"type": "function", "name": "exec_command", "parameters": {}},
                               {"type": "custom", "name": "apply_patch"}, {"type": "local_shell"}]}[family]
    wire = {"anthropic": "messages", "openai": "completions"}[family]  # the provider's wire family
    assert provider_tools(wire, body) == kinds
    assert provider_tools(wire, {**body, "tools": client_tools, "mcp_servers": None}) == []
    with FakeAPI([Step(text="ok")], repeat_last=True) as api:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
        monkeypatch.setenv("OPENAI_BASE_URL", api.url + "/v1")
        with _gateway(tmp_path, family) as gw:
            refused = _call(gw, path, body)
            plain = _call(gw, path, {**body, "tools": client_tools, "mcp_servers": None})
        with _gateway(tmp_path, family, provider_tools=tuple(kinds)) as allowed:
            opted_in = _call(allowed, path, body)
    assert refused[0] == 400 and all(k.encode() in refused[1] for k in kinds), refused
    assert plain[0] == 200 and opted_in[0] == 200 and len(api.requests) == 2
    shown = [e for e in _events(tmp_path / "t.jsonl") if e["type"] == "refused"]
    assert len(shown) == 1 and "provider-side tools" in shown[0]["reason"]


def test_a_task_opts_in_to_provider_tools_and_run_json_records_it(tmp_path):
    from pydantic import ValidationError

    from harness.api import new_run
    from harness.task import AgentLimits
    from results.records import AgentSpec
    from tests.conftest import TASKS

    assert AgentLimits().provider_tools == []
    assert AgentLimits(provider_tools=["web_search", "code_execution", "web_search"]).provider_tools == \
        ["code_execution", "web_search"]
    with pytest.raises(ValidationError, match="unknown provider-side tools"):
        AgentLimits(provider_tools=["the_internet"])
    task = tmp_path / "py-primes"
    shutil.copytree(TASKS / "py-primes", task)
    toml = task / "task.toml"
    toml.write_text(toml.read_text().replace("[agent]\n", '[agent]\nprovider_tools = ["web_search"]\n'))
    run = new_run([str(task)], AgentSpec(name="nop"), trials=1, concurrency=1,
                  sandbox="docker", repeats=None, out=tmp_path / "run")
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())["provider_tools"]
    assert recorded == {"py-primes": ["web_search"]} and run is not None


def test_a_request_that_stops_arriving_is_answered_and_frees_its_connection(tmp_path, monkeypatch):
    """A body that stops halfway is answered 408 once a read waits past the read timeout (here
    made short); a head that stops is dropped; the gateway serves on."""
    from agents.gateway import server

    monkeypatch.setattr(server._Handler, "timeout", 0.5)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-real-x")
    with FakeAPI([Step(text="ok")], repeat_last=True) as api:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
        with _gateway(tmp_path) as gw:
            body = gw.connect()
            body.sendall(b"POST /v1/messages HTTP/1.0\r\ncontent-length: 100\r\n\r\n{\"model\": ")
            head = gw.connect()
            head.sendall(b"POST /v1/messages HTTP/1.0\r\ncontent-le")
            stalled_body, stalled_head = _answer(body), _answer(head)
            after = _call(gw, "/v1/messages", HI)
    assert stalled_body.startswith(b"HTTP/1.0 408") and stalled_head == b"", (stalled_body, stalled_head)
    assert after[0] == 200 and len(api.requests) == 1
