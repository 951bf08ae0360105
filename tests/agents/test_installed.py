"""Installed agents: the real Claude Code and Codex CLI binaries (the agents image) in a real
sandbox, their model calls through the trial's gateway to the local fake API (streamed, as
the CLIs ask). A scripted conversation makes each CLI write py-primes' solution; the trial is
verified; the real key reaches the fake server and never the sandbox; a limit at the gateway
ends the trial; any other path or host is refused.

Needs the agents image: `rdbench images build --agents` (.ci/setup builds it)."""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agents.gateway import PLACEHOLDER_KEY, Gateway, provider_tools
from agents.budget import Budget, Transcript
from results.records import load_trial
from results.registry import ModelSpec
from tests.agents.fake_api import FakeAPI, Step
from tests.conftest import TASKS, rdbench

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SOLUTION = (TASKS / "py-primes" / "solution" / "solve.py").read_text()
WRITE = f"cat > /workspace/solve.py <<'RDBENCH_EOF'\n{SOLUTION}RDBENCH_EOF\ntest -s /workspace/solve.py"
#: what the sandbox can see: every process's environment and command line, `ps`, and a search
#: of the writable places and the CLI's home for the real key's prefix (never spelt out here)
PROBE = r"""printf 'sk-%s-' real > /tmp/pat
cat /proc/[0-9]*/environ 2>/dev/null | tr '\0' '\n' > /workspace/env.txt
cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\0' ' ' > /workspace/cmdlines.txt
ps auxwwe > /workspace/ps.txt
grep -rlaF -f /tmp/pat /tmp /home /root /etc /run /var /workspace 2>/dev/null | grep -v '^/tmp/pat$' \
  > /workspace/found.txt
python3 - > /workspace/refused.txt <<'PY'
import http.client, json, socket
def status(method, path, host="127.0.0.1"):
    c = http.client.HTTPConnection("127.0.0.1", 47800, timeout=30)
    c.request(method, path, body=json.dumps({"model": "x"}), headers={"Host": host})
    return c.getresponse().status
print(json.dumps({"GET /v1/models": status("GET", "/v1/models"),
                  "POST /v1/files": status("POST", "/v1/files"),
                  "POST /v1/messages/batches": status("POST", "/v1/messages/batches"),
                  "POST http://example.com/v1/messages": status("POST", "http://example.com/v1/messages"),
                  "POST http://example.com/v1/responses": status("POST", "http://example.com/v1/responses")}))
PY
true"""


def _run(tmp_path, agent, model, steps, env, *extra, repeat_last=False):
    with FakeAPI(steps, repeat_last=repeat_last) as api:
        r = rdbench("run", "tasks/py-primes", "--agent", agent, "--model", model, "--repeats", "1",
                    "--out", str(tmp_path / "run"), "--db", str(tmp_path / "results.db"), *extra,
                    env={k: v.replace("{url}", api.url) for k, v in env.items()}, timeout=900)
    d = tmp_path / "run" / "trials" / f"py-primes__{agent}__0"
    trial = load_trial(d)
    assert trial is not None, r.stdout + r.stderr
    # the gateway's folder is removed after the copy-out (which would make Docker create it again)
    cli = next(e for e in _events(d) if e["type"] == "cli")
    assert not Path(cli["gateway"]).parent.exists(), cli["gateway"]
    family = "messages" if agent == "claude-code" else "completions"  # the wire families
    assert all(provider_tools(family, body) == [] for _, body in api.requests), "a provider-side tool was sent"
    return api, trial, d, r


def _events(d: Path) -> list[dict]:
    return [json.loads(line) for line in (d / "transcript.jsonl").read_text().splitlines()]


def _no_key_inside(sub: Path, real: str):
    env, ps = (sub / "env.txt").read_text(), (sub / "ps.txt").read_text()
    assert PLACEHOLDER_KEY in env  # the probe does see the CLI's environment, placeholder and all
    for name in ("env.txt", "ps.txt", "cmdlines.txt", "found.txt"):
        assert real not in (sub / name).read_text(), name
    assert "sk-real-" not in env + ps + (sub / "cmdlines.txt").read_text()
    assert (sub / "found.txt").read_text().strip() == "", "files holding the real key's prefix"
    refused = json.loads((sub / "refused.txt").read_text())
    assert set(refused.values()) == {403}, refused


def test_claude_code_edits_the_workspace_through_the_gateway(tmp_path):
    real = "sk-real-" + uuid.uuid4().hex
    steps = [Step(tool_calls=[("Bash", {"command": WRITE, "description": "write the sieve"})], usage=(1000, 50)),
             Step(tool_calls=[("Bash", {"command": PROBE, "description": "look around"})], usage=(1200, 60)),
             Step(text="The sieve is in place.", usage=(1400, 10))]
    api, trial, d, r = _run(tmp_path, "claude-code", "anthropic/claude-sonnet-4-5", steps,
                            {"ANTHROPIC_BASE_URL": "{url}", "ANTHROPIC_API_KEY": real})
    assert trial.correct is True and trial.error is None, (trial, r.stderr[-3000:])
    assert trial.stop_reason == "submitted" and trial.value > 1
    assert (trial.usage.input_tokens, trial.usage.output_tokens) == (3600, 120) and trial.usage.cost_usd > 0
    # every call streamed, to the model endpoint, with the real key swapped in for the placeholder
    assert [p.partition("?")[0] for p, _ in api.requests] == ["/v1/messages"] * 3
    assert all(b.get("stream") for _, b in api.requests)
    assert all(h["x-api-key"] == real and "authorization" not in h for h in api.headers)
    _no_key_inside(d / "submission", real)
    events = _events(d)
    kinds = [e["type"] for e in events]
    assert kinds.count("model_call") == 3 and kinds.count("tool_result") == 2 and kinds[-1] == "end", kinds
    assert kinds.count("refused") == 5
    calls = [e for e in events if e["type"] == "model_call"]
    assert calls[0]["tool_calls"][0]["name"] == "Bash" and "RDBENCH_EOF" in calls[0]["tool_calls"][0]["args"]["command"]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["version"] == "2.1.332"
    # the HTML report shows the CLI's calls like the built-in agent's
    out = tmp_path / "report.html"
    r = rdbench("report", str(tmp_path / "run"), "--out", str(out), "--db", str(tmp_path / "results.db"))
    assert r.returncode == 0, r.stderr
    html = out.read_text()
    assert "model call 3" in html and "tool result</span> Bash" in html and "RDBENCH_EOF" in html
    assert "<span class=tag>cli</span> claude-code 2.1.332" in html
    assert html.count("<span class=tag>refused</span>") == 5


def test_codex_edits_the_workspace_through_the_gateway(tmp_path):
    real = "sk-real-" + uuid.uuid4().hex
    steps = [Step(tool_calls=[("exec_command", {"cmd": WRITE})], usage=(900, 40)),
             Step(tool_calls=[("exec_command", {"cmd": PROBE})], usage=(1000, 40)),
             Step(text="Done: the sieve is in place.", usage=(1100, 20))]
    api, trial, d, r = _run(tmp_path, "codex", "openai/gpt-5", steps,
                            {"OPENAI_BASE_URL": "{url}/v1", "OPENAI_API_KEY": real})
    assert trial.correct is True and trial.error is None, (trial, r.stderr[-3000:])
    assert trial.stop_reason == "submitted"
    assert (trial.usage.input_tokens, trial.usage.output_tokens) == (3000, 100)
    assert [p for p, _ in api.requests] == ["/v1/responses"] * 3 and all(b.get("stream") for _, b in api.requests)
    assert all(h["authorization"] == f"Bearer {real}" for h in api.headers)
    _no_key_inside(d / "submission", real)
    kinds = [e["type"] for e in _events(d)]
    assert kinds.count("model_call") == 3 and kinds.count("tool_result") == 2, kinds
    assert json.loads((tmp_path / "run" / "run.json").read_text())["version"] == "0.171.0"


def test_a_limit_at_the_gateway_ends_the_trial_and_its_submission_is_verified(tmp_path):
    steps = [Step(tool_calls=[("Bash", {"command": WRITE, "description": "write the sieve"})]),
             Step(tool_calls=[("Bash", {"command": "rm /workspace/solve.py", "description": "oops"})])]
    api, trial, d, r = _run(tmp_path, "claude-code", "anthropic/claude-sonnet-4-5", steps,
                            {"ANTHROPIC_BASE_URL": "{url}", "ANTHROPIC_API_KEY": "sk-real-x"}, "--max-turns", "1")
    assert trial.stop_reason == "turn_limit", (trial, r.stderr[-3000:])
    assert trial.correct is True  # the first turn's edit, verified; the second call never left the host
    assert len(api.requests) == 1
    events = _events(d)
    assert any(e["type"] == "stop" and e["reason"] == "turn_limit" for e in events)
    assert any(e["type"] == "refused" and e["status"] == 429 for e in events)


class _Trickle(BaseHTTPRequestHandler):
    """An upstream that sends one server-sent event, then waits until told to finish."""

    release: threading.Event
    seen: list

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.seen.append(dict(self.headers))
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        start = {"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant", "content": [],
                                                      "usage": {"input_tokens": 7, "output_tokens": 1}}}
        self.wfile.write(f"event: message_start\ndata: {json.dumps(start)}\n\n".encode())
        self.wfile.flush()
        self.release.wait(30)
        rest = [{"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
                {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}}]
        self.wfile.write("".join(f"data: {json.dumps(e)}\n\n" for e in rest).encode())


def _post(gw: Gateway, raw: bytes) -> socket.socket:
    s = gw.connect()
    s.sendall(raw)
    return s


def test_the_gateway_passes_events_through_as_they_come(tmp_path, monkeypatch):
    release, seen = threading.Event(), []
    handler = type("H", (_Trickle,), {"release": release, "seen": seen})
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://127.0.0.1:{upstream.server_address[1]}")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-real-trickle")
    budget = Budget(5, None, None, None, 600, None)
    sock = Path(os.environ.get("TMPDIR", "/tmp")) / f"gw-{uuid.uuid4().hex[:8]}.sock"
    try:
        with Gateway(ModelSpec("anthropic", "m"), budget, Transcript(tmp_path / "t.jsonl"), sock) as gw:
            body = json.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode()
            s = _post(gw, b"POST /v1/messages?beta=true HTTP/1.1\r\nhost: x\r\nx-api-key: " + PLACEHOLDER_KEY.encode()
                      + b"\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
            got = b""
            while b"message_start" not in got:  # arrives while the upstream still holds the rest back
                got += s.recv(65536)
            assert not release.is_set() and b"text_delta" not in got
            release.set()
            while chunk := s.recv(65536):
                got += chunk
            assert b"text_delta" in got
            s.close()
            assert seen[0]["x-api-key"] == "sk-real-trickle"
            bad = _post(gw, b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n").recv(200)
            assert b" 403 " in bad.split(b"\r\n")[0]
        assert (budget.turns, budget.input_tokens, budget.output_tokens) == (1, 7, 3) and gw.calls == 1
        calls = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
        assert [c["type"] for c in calls] == ["start", "model_call", "refused"] and calls[1]["text"] == "hi"
    finally:
        upstream.shutdown()
        upstream.server_close()


def test_a_missing_agents_image_says_how_to_build_it_and_models_must_match(docker_client, tmp_path):
    from sandbox import SandboxError
    from sandbox.images import agents_image

    with pytest.raises(SandboxError, match=r"rdbench images build --agents"):
        agents_image(docker_client, "rdbench-base:no-such-image")
    r = rdbench("run", "tasks/py-primes", "--agent", "codex", "--model", "anthropic/claude-sonnet-4-5",
                "--out", str(tmp_path / "run"))
    assert r.returncode != 0 and "needs --model openai/NAME" in r.stderr
    r = rdbench("run", "tasks/py-primes", "--agent", "claude-code", "--model", "anthropic/claude-sonnet-4-5",
                "--sandbox", "local", "--out", str(tmp_path / "run2"))
    assert r.returncode != 0 and "--sandbox docker" in r.stderr
    assert not (tmp_path / "run2").exists()  # refused before a run folder was made


def test_the_gateways_folder_goes_when_the_sandbox_never_starts(tmp_path):
    """prepare_sandbox makes the gateway's socket folder; a sandbox Docker refuses to create
    (here: under its minimum memory) is an infra trial, and the folder is removed all the same."""
    import glob
    import shutil

    task = tmp_path / "py-primes"
    shutil.copytree(TASKS / "py-primes", task)
    toml = task / "task.toml"
    toml.write_text(toml.read_text().replace('memory = "1g"', 'memory = "1k"'))
    before = set(glob.glob("/tmp/rdbench-gw-*"))
    with FakeAPI([]) as api:
        r = rdbench("run", str(task), "--agent", "claude-code", "--model", "anthropic/claude-sonnet-4-5",
                    "--out", str(tmp_path / "run"), "--db", str(tmp_path / "results.db"),
                    env={"ANTHROPIC_API_KEY": "sk-x", "ANTHROPIC_BASE_URL": api.url}, timeout=600)
    trial = load_trial(tmp_path / "run/trials/py-primes__claude-code__0")
    assert r.returncode != 0 and trial.error_class == "infra" and "memory" in trial.error, trial
    assert not api.requests
    assert set(glob.glob("/tmp/rdbench-gw-*")) <= before


#: the agent floods the provider through the gateway (6 calls at once), then kills its own CLI
FLOOD = r"""python3 - <<'PY'
import http.client, json, os, signal, threading
def call():
    c = http.client.HTTPConnection("127.0.0.1", 47800, timeout=60)
    c.request("POST", "/v1/messages", body=json.dumps({"model": "x", "max_tokens": 5, "messages": []}))
    print(c.getresponse().status, flush=True)
ts = [threading.Thread(target=call) for _ in range(6)]
[t.start() for t in ts]
[t.join() for t in ts]
mark = "dangerously-" + "skip-permissions"
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    try:
        if mark in open("/proc/%s/cmdline" % pid, "rb").read().decode(errors="replace"):
            os.kill(int(pid), signal.SIGKILL)
    except OSError:
        pass
PY"""


def test_a_429_the_agents_own_flood_caused_is_the_agents_outcome(tmp_path):
    """The agent floods the provider into 429s through the gateway, then kills its CLI: the
    trial ends as the agent's (not infra, not re-run), its submission verified; the harness
    sees the CLI's exit through the exec server's own wait."""
    steps = [Step(tool_calls=[("Bash", {"command": WRITE, "description": "write the sieve"})]),
             Step(tool_calls=[("Bash", {"command": FLOOD, "description": "flood"})]),
             Step(status=429, text="rate limited", delay=1.0)]
    api, trial, d, r = _run(tmp_path, "claude-code", "anthropic/claude-sonnet-4-5", steps,
                            {"ANTHROPIC_BASE_URL": "{url}", "ANTHROPIC_API_KEY": "sk-real-x"}, repeat_last=True)
    assert trial.error_class != "infra" and trial.correct is True, (trial, r.stderr[-3000:])
    assert trial.stop_reason.startswith("cli_exit_"), trial.stop_reason
    own = [e for e in _events(d) if e["type"] == "model_error" and e.get("own_traffic")]
    assert len(own) >= 6, [e for e in _events(d) if e["type"] == "model_error"]


def test_the_exec_server_sees_a_spawned_commands_exit_itself(docker_client, base_image):
    from sandbox import SandboxConfig
    from sandbox.docker import DockerSandbox

    with DockerSandbox(SandboxConfig(image=base_image, role="agent"), docker_client) as sb:
        quick = sb.spawn(["bash", "-c", "exit 7"])
        slow = sb.spawn(["sleep", "300"])
        import time

        for _ in range(100):
            if sb.poll(quick) is not None:
                break
            time.sleep(0.1)
        assert sb.poll(quick) == 7 and sb.poll(slow) is None
        assert sb.exec(["kill", "-9", str(slow)]).ok  # the agent killing the CLI: seen at once
        for _ in range(100):
            if sb.poll(slow) is not None:
                break
            time.sleep(0.1)
        assert sb.poll(slow) == -9
