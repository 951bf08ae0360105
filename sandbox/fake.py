"""The fake backend (`--sandbox fake`): FOR TESTS AND DEVELOPMENT ONLY, NOT A SANDBOX.

The fast test tier (`pytest -m "not docker"`) drives the agent loop, a trial's bookkeeping,
resume and the store through it, in milliseconds and with no Docker engine. It keeps the
`Sandbox` protocol's behaviour where a caller can see it, and nothing of its security:

- sandbox paths (/workspace, /submission, ...) are folders under a private temporary root;
  `path()` says where one is, a command's `cwd` is mapped, and so is each argument of an
  argv command that names a sandbox path (`["test", "-d", "/workspace/x"]`);
- `exec` runs the command as a child process of this one, as this user, in a session of
  its own: a timeout kills it and every process under it (`timed_out`), each stream is capped at
  `max_output` (`truncated`), `on_output` gets the output as it comes;
- `read_file` of a missing file raises SandboxFileNotFound, `copy_out` leaves behind links
  that leave the folder and special files, `close` kills what the commands left and removes
  the root;
- the limits of the SandboxConfig are reported by `limits()`, never enforced: no network,
  user, cpu, memory, pids or disk limit holds, and nothing is ever frozen.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from . import DEFAULT_MAX_OUTPUT, ExecResult, SandboxBase, SandboxConfig, SandboxError, SandboxFileNotFound
from ._server import descendants
from .local import LocalSandbox

#: the sandbox paths a command's arguments are mapped from (the rest are the host's own)
MAPPED = ("/workspace", "/submission", "/baseline", "/verifier")
#: how long output still read after a command exits may take (a background child holding its pipes)
DRAIN_S = 2.0


class FakeSandbox(SandboxBase):
    """A Sandbox over a temporary folder and child processes: no isolation. See the module's doc."""

    # declares no capability (SandboxBase): never frozen, no images, no GPUs, nothing left over

    def __init__(self, config: SandboxConfig):
        self.config = config
        self.root = Path(tempfile.mkdtemp(prefix="rdbench-fake-"))
        self.name = f"fake:{self.root.name}"
        (self.root / "home").mkdir()
        Path(self.path(config.workdir)).mkdir(parents=True, exist_ok=True)
        self._sessions: list[int] = []  # pids of the commands' sessions, killed by close()
        self._lock = threading.Lock()
        self.closed = False

    def limits(self) -> dict:
        """The limits this sandbox was asked for, and whether they hold (here: never)."""
        c = self.config
        return {"cpuset": c.cpuset, "cpus": c.cpus, "memory": c.memory, "pids": c.pids, "disk": c.disk,
                "gpus": list(c.gpus), "role": c.role, "network": False, "enforced": False}

    # paths and folder copies as the local backend's (a copy out leaves escaping links behind)
    path = LocalSandbox.path
    copy_in = LocalSandbox.copy_in
    copy_out = LocalSandbox.copy_out

    def _arg(self, a: str) -> str:
        return self.path(a) if any(a == m or a.startswith(m + "/") for m in MAPPED) else a

    def exec(self, cmd, *, timeout=None, cwd=None, env=None, max_output=DEFAULT_MAX_OUTPUT, on_output=None):
        if self.closed:
            raise SandboxError(f"{self.name}: closed")
        argv = ["bash", "-c", cmd] if isinstance(cmd, str) else [self._arg(str(a)) for a in cmd]
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.root / "home"),
                    "LANG": "C.UTF-8", "RDBENCH_SANDBOX_ROOT": str(self.root), **self.config.env, **(env or {})}
        workdir = self.path(cwd or self.config.workdir)
        if not Path(workdir).is_dir():
            return ExecResult(126, "", f"cd: {cwd}: no such folder in the sandbox\n", 0.0)
        t = time.monotonic()
        try:
            proc = subprocess.Popen(argv, cwd=workdir, env=full_env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        except OSError as e:  # no such program: what a shell would say
            return ExecResult(127, "", f"{argv[0]}: {e.strerror}\n", time.monotonic() - t)
        with self._lock:
            self._sessions.append(proc.pid)
        out = {"stdout": bytearray(), "stderr": bytearray()}
        cut = {"stdout": False, "stderr": False}

        def read(stream, name):
            for chunk in iter(lambda: stream.read1(65536), b""):
                keep = max(0, max_output - len(out[name]))
                out[name] += chunk[:keep]
                cut[name] |= len(chunk) > keep
                if on_output is not None and keep:
                    on_output(name, chunk[:keep].decode("utf-8", "replace"))

        readers = [threading.Thread(target=read, args=(proc.stdout, "stdout"), daemon=True),
                   threading.Thread(target=read, args=(proc.stderr, "stderr"), daemon=True)]
        for r in readers:
            r.start()
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_session(proc.pid)
            proc.wait()
        drained = time.monotonic() + DRAIN_S
        for r in readers:
            r.join(max(0.0, drained - time.monotonic()))
        return ExecResult(-9 if timed_out else proc.returncode, out["stdout"].decode("utf-8", "replace"),
                          out["stderr"].decode("utf-8", "replace"), time.monotonic() - t, timed_out,
                          cut["stdout"] or cut["stderr"])

    def read_file(self, path: str) -> bytes:
        p = Path(self.path(path))
        try:
            return p.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise SandboxFileNotFound(f"no such file in the sandbox: {path}") from None
        except OSError as e:
            raise SandboxError(f"reading {path} failed: {e}") from e

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        p = Path(self.path(path))
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
            p.chmod(mode)
        except OSError as e:
            raise SandboxError(f"writing {path} failed: {e}") from e

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for pid in sessions:
            _kill_session(pid)
        shutil.rmtree(self.root, ignore_errors=True)

    __enter__, __exit__ = LocalSandbox.__enter__, LocalSandbox.__exit__


def _kill_session(pid: int) -> None:
    """Kill a command's session and every process under it (one that left the session included)."""
    for p in [pid, *descendants(pid)]:
        for kill in (os.killpg, os.kill):
            try:
                kill(p, signal.SIGKILL)
            except OSError:
                pass
