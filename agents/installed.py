"""Installed agents: Claude Code (`claude-code`) and Codex CLI (`codex`), run non-interactively
inside the sandbox, in /workspace, as the sandbox's non-root user, with no permission prompts
(the container is the sandbox).

They bring their own loop, so the harness cannot see their turns: their model calls go through
the trial's gateway (agents/gateway/) instead, which holds the key, logs the transcript and
enforces the limits. The sandbox still has no network: the gateway's Unix socket is mounted
into it (read-only, /run/rdbench) and a stdlib forwarder there listens on 127.0.0.1:PORT, where
the CLI is pointed with a placeholder key. Each connection it forwards opens with the trial's
secret (in its own environment, given by the exec server), so that no other process on the
host can use the gateway; the socket's folder admits only the sandbox's user. The CLI is started by the
exec server, whose own wait sees it exit. The CLIs come from the agents image
(sandbox/images.py: `rdbench images build --agents`), pinned to sandbox.images.AGENT_CLIS.
"""

from __future__ import annotations

import shlex
import shutil
import time
from dataclasses import replace
from pathlib import Path

from sandbox import AGENT_UID, Sandbox, SandboxConfig, SandboxError
from sandbox.images import AGENT_CLIS

from . import AgentContext, AgentError, AgentResult, BaseAgent, ModelError
from .budget import Budget, SandboxLost, TimeLimit, Transcript
from .gateway import PLACEHOLDER_KEY, Gateway, socket_dir

#: where the gateway's socket is mounted inside the sandbox, and the forwarder's port
SOCKET_DIR = "/run/rdbench"
PORT = 47800
#: the agent's own files inside the sandbox (outside /workspace: not part of the submission)
HERE = "/tmp/rdbench"
#: seconds the CLI may take to start before the agent's wall time (which starts at its first call)
STARTUP_S = 120
POLL_S = 0.5
NOTE = ("\n\n---\nYou are working alone in a sandbox (Linux, no network). The task's files are in /workspace: what "
        "/workspace holds when you finish is graded by a hidden verifier. Work in small verified steps; stop when "
        "you are done.\n")

FORWARDER = r'''
import os, socket, sys, threading
SOCK, PORT = sys.argv[1], int(sys.argv[2])
SECRET = os.environ.pop("RDBENCH_GATEWAY").encode()
def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    try:
        b.shutdown(socket.SHUT_WR)
    except OSError:
        pass
def serve(c):
    u = socket.socket(socket.AF_UNIX)
    try:
        u.connect(SOCK)
        u.sendall(SECRET)
    except OSError:
        c.close()
        return
    t = threading.Thread(target=pipe, args=(u, c), daemon=True)
    t.start()
    pipe(c, u)
    t.join()
    c.close()
    u.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", PORT))
s.listen(64)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
'''

#: ends every process in the sandbox but tini, the exec server and this one's ancestors
KILL_ALL = r'''
import os
keep, p = {1}, os.getpid()
while p > 1:
    keep.add(p)
    with open("/proc/%d/stat" % p) as f:
        p = int(f.read().rsplit(")", 1)[1].split()[1])
for _ in range(3):
    for e in os.listdir("/proc"):
        if e.isdigit() and int(e) not in keep:
            try:
                os.kill(int(e), 9)
            except OSError:
                pass
'''


class InstalledAgent(BaseAgent):
    """A CLI agent in the sandbox, its model reached through the gateway."""

    name = ""
    binary = ""
    needs_images = True  # its CLI is in the agents image

    def __init__(self):
        self._socket_dir: Path | None = None

    @property
    def version(self) -> str:
        return AGENT_CLIS[self.name][1]

    def prepare_sandbox(self, config: SandboxConfig) -> SandboxConfig:
        """The agent sandbox's config: the agents image over the task's, and the gateway's folder
        mounted. Raises SandboxError when the agents image is missing (saying how to build it)."""
        from sandbox.docker import client_from_env
        from sandbox.images import agents_image

        image = agents_image(client_from_env(), config.image)
        self._socket_dir = socket_dir(AGENT_UID)
        return replace(config, image=image, mounts={**config.mounts, str(self._socket_dir): SOCKET_DIR})

    def release(self) -> None:
        """Remove the gateway's socket folder. The harness calls this when the trial ends, however,
        after the sandbox is gone: a copy out of a sandbox whose mounted folder is missing makes
        Docker create it again."""
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    # --- what differs between the CLIs ---------------------------------------------------------
    def command(self, model: str, settings: dict, provider_tools: tuple[str, ...]) -> str:
        """The CLI's command line; `provider_tools`: the provider-side tools the task allows
        (every other one is switched off in the CLI, and refused by the gateway)."""
        raise NotImplementedError

    def env(self, settings: dict, record) -> dict[str, str]:
        """`record`: the model's provider record (results/providers.py): the variables its CLI reads."""
        raise NotImplementedError

    def files(self, model: str, settings: dict, provider_tools: tuple[str, ...], record) -> dict[str, str]:
        return {}

    # --- the run --------------------------------------------------------------------------------
    def run(self, sandbox: Sandbox, ctx: AgentContext) -> AgentResult:
        spec = ctx.agent.model_spec
        if spec is None or (why := self.accepts(spec)):
            raise AgentError(why or f"the {self.name} agent needs a model")
        if self._socket_dir is None:
            raise SandboxError(f"the {self.name} agent's sandbox was not prepared (no gateway socket mounted)")
        limits = ctx.task.agent
        budget = Budget(limits.max_turns, limits.max_input_tokens, limits.max_output_tokens, limits.max_cost_usd,
                        limits.timeout_s, spec.prices(), frozen=sandbox.frozen_s if sandbox.freezes else None)
        transcript = Transcript(ctx.trial_dir / "transcript.jsonl")
        settings, logs = ctx.agent.model_settings(), ctx.trial_dir / "logs"
        with Gateway(spec, budget, transcript, self._socket_dir / "gw.sock", logs / "gateway", owner=AGENT_UID,
                     provider_tools=tuple(limits.provider_tools)) as gw:
            self._set_up(sandbox, ctx, gw, spec.name, settings, transcript)
            stop_reason = self._drive(sandbox, gw, budget, limits.timeout_s, logs)
        result = AgentResult(stop_reason=stop_reason, usage=budget.usage())
        transcript.log(agent="main", type="end", stop_reason=result.stop_reason, **result.usage.model_dump())
        return result

    def _set_up(self, sandbox: Sandbox, ctx: AgentContext, gw: Gateway, model: str, settings: dict,
                transcript: Transcript):
        """The forwarder running, the CLI checked, its prompt, config and start script in place."""
        sandbox.write_file(f"{HERE}/forward.py", FORWARDER.encode())
        # the trial's secret goes in the forwarder's own environment (through the exec server's
        # channel): on no command line, in no file of the sandbox's disk
        sandbox.spawn(f"exec python3 {HERE}/forward.py {SOCKET_DIR}/gw.sock {PORT} > {HERE}/forward.log 2>&1",
                      env={"RDBENCH_GATEWAY": gw.preamble.decode()})
        r = sandbox.exec(f"for i in $(seq 200); do grep -q ready {HERE}/forward.log && exit 0; sleep 0.05; done; "
                         "exit 1", timeout=60)
        if not r.ok:
            raise SandboxError(f"the gateway's forwarder did not start in the sandbox: {r.stderr[-500:]}")
        r = sandbox.exec([self.binary, "--version"], timeout=60, env={"HOME": "/tmp"})
        if not r.ok or self.version not in r.stdout:
            raise SandboxError(f"{self.binary} --version in the sandbox: {r.stdout.strip()} {r.stderr[-300:]} "
                               f"(the agents image should hold {self.name} {self.version})")
        allowed = tuple(ctx.task.agent.provider_tools)
        for path, text in self.files(model, settings, allowed, ctx.agent.model_spec.record).items():
            sandbox.write_file(path, text.encode())
        sandbox.write_file(f"{HERE}/prompt.md", (ctx.task.instruction + NOTE).encode())
        env = {"HOME": "/tmp", **self.env(settings, ctx.agent.model_spec.record)}
        command = self.command(model, settings, allowed)
        script = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
        script += (f"cd /workspace\nexec {command} < {HERE}/prompt.md > {HERE}/cli.stdout 2> {HERE}/cli.stderr\n")
        sandbox.write_file(f"{HERE}/run.sh", script.encode())
        transcript.log(agent="main", type="cli", name=self.name, version=r.stdout.strip(), command=command,
                       env={k: v for k, v in env.items()}, gateway=str(gw.socket_path))

    def _drive(self, sandbox: Sandbox, gw: Gateway, budget: Budget, timeout_s: float, logs: Path) -> str:
        """Start the CLI, wait for it to end or for a limit, end every process it left. Returns
        the stop reason."""
        cli = sandbox.spawn(["bash", f"{HERE}/run.sh"])  # run.sh execs the CLI: its exit is the CLI's
        hard = time.monotonic() + timeout_s + STARTUP_S
        rc = None
        try:
            while not gw.stopped.wait(POLL_S):
                rc = sandbox.poll(cli)  # the exec server's own wait (killing the server: sandbox_lost)
                if rc is not None:
                    break
                late = budget.deadline is not None and budget.time_left() <= 0  # frozen time is not the agent's
                if late or time.monotonic() >= hard + (budget.frozen() if budget.frozen is not None else 0.0):
                    gw.halt(TimeLimit("agent wall time" if late else f"{self.name} made no model call in time"))
            sandbox.exec(["python3", "-c", KILL_ALL], timeout=60)
        except SandboxError as e:  # the agent killed the exec server, or ran the sandbox out of memory
            gw.halt(SandboxLost(f"{self.name} lost the sandbox: {e}"))
            return "sandbox_lost"
        finally:
            self._keep_output(sandbox, logs)
        if gw.stop is not None:
            return gw.stop.reason
        if rc == 0:
            return "submitted"
        if gw.upstream_error is not None:
            raise ModelError(f"{self.name} exited with {rc} after the model API failed: {gw.upstream_error}")
        if gw.calls == 0:
            raise SandboxError(f"{self.name} exited with {rc} before any model call: {self._stderr(sandbox)}")
        return f"cli_exit_{rc}"

    def _keep_output(self, sandbox: Sandbox, logs: Path) -> None:
        for stream in ("stdout", "stderr"):
            try:
                r = sandbox.exec(["tail", "-c", "4000000", f"{HERE}/cli.{stream}"], timeout=60, max_output=4 << 20)
                (logs / f"{self.name}.{stream}").write_text(r.stdout)
            except SandboxError:
                return

    def _stderr(self, sandbox: Sandbox) -> str:
        try:
            return sandbox.read_file(f"{HERE}/cli.stderr").decode(errors="replace")[-800:]
        except SandboxError:
            return "(no stderr)"


class ClaudeCodeAgent(InstalledAgent):
    """Claude Code in print mode (`claude -p`), every tool allowed."""

    name, binary, wires = "claude-code", "claude", ("messages",)

    def command(self, model: str, settings: dict, provider_tools: tuple[str, ...]) -> str:
        off = [tool for tool, kind in (("WebSearch", "web_search"), ("WebFetch", "web_fetch"))
               if kind not in provider_tools]
        return (f"claude -p --dangerously-skip-permissions --model {shlex.quote(model)} --output-format stream-json "
                "--verbose" + (f" --disallowedTools {','.join(off)}" if off else ""))

    def env(self, settings: dict, record) -> dict[str, str]:
        env = {record.base_url_var: f"http://127.0.0.1:{PORT}", record.key_vars[0]: PLACEHOLDER_KEY,
               "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1"}
        if settings.get("thinking_budget"):
            env["MAX_THINKING_TOKENS"] = str(int(settings["thinking_budget"]))
        return env


class CodexAgent(InstalledAgent):
    """Codex CLI's `codex exec`, approvals and its own sandbox off (the container is the sandbox)."""

    name, binary, wires = "codex", "codex", ("completions",)

    def command(self, model: str, settings: dict, provider_tools: tuple[str, ...]) -> str:
        return (f"codex exec --skip-git-repo-check --dangerously-bypass-approvals-and-sandbox --json "
                f"-m {shlex.quote(model)} -")

    def env(self, settings: dict, record) -> dict[str, str]:
        return {record.key_vars[0]: PLACEHOLDER_KEY, "CODEX_HOME": "/tmp/.codex"}

    def files(self, model: str, settings: dict, provider_tools: tuple[str, ...], record) -> dict[str, str]:
        effort = f"model_reasoning_effort = {_toml(settings['reasoning_effort'])}\n" \
            if settings.get("reasoning_effort") else ""
        search = "live" if "web_search" in provider_tools else "disabled"  # else it sends {"type": "web_search"}
        return {"/tmp/.codex/config.toml": (
            f"model = {_toml(model)}\nmodel_provider = \"rdbench\"\n{effort}check_for_update_on_startup = false\n"
            f"web_search = {_toml(search)}\n\n"
            "[model_providers.rdbench]\nname = \"rdbench gateway\"\n"
            f"base_url = \"http://127.0.0.1:{PORT}/v1\"\nenv_key = \"{record.key_vars[0]}\"\nwire_api = \"responses\"\n"
            "supports_websockets = false\n")}


def _toml(s) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'
