"""Host side of the exec server protocol (see _server.py), shared by every backend."""

from __future__ import annotations

import base64
import itertools
import json
import threading
from pathlib import Path
from typing import Callable

from . import ExecResult, SandboxError, SandboxFileNotFound

SERVER_SOURCE = (Path(__file__).parent / "_server.py").read_bytes()
#: The sandbox's command: read the server's source from stdin and run it (keeps `ps` short).
BOOT_ARGV = ["python3", "-u", "-c",
             "import sys;b=sys.stdin.buffer;exec(compile(b.read(int(b.readline())),'rdbench-exec-server','exec'))"]
BOOT_PAYLOAD = b"%d\n" % len(SERVER_SOURCE) + SERVER_SOURCE


class ServerClient:
    """Sends one request at a time and reads its answer. `send` writes bytes to the server's
    stdin; `recv_line` returns one line of its stdout (b"" when the stream is gone)."""

    def __init__(self, send: Callable[[bytes], None], recv_line: Callable[[], bytes], name: str):
        self._send = send
        self._recv_line = recv_line
        self._name = name
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        send(BOOT_PAYLOAD)

    def request(self, op: str, on_chunk: Callable[[str, str], None] | None = None, **fields) -> dict:
        """One request and its answer; output lines of a streamed exec go to `on_chunk` meanwhile."""
        req = {"op": op, "id": next(self._ids), **fields}
        with self._lock:
            try:
                self._send(json.dumps(req).encode() + b"\n")
                while True:
                    line = self._recv_line()
                    if not line:
                        raise SandboxError(f"{self._name}: the exec server is gone (sandbox killed, or out of memory?)")
                    resp = json.loads(line)
                    if "chunk" not in resp:
                        break
                    if on_chunk is not None and resp.get("id") == req["id"]:
                        on_chunk(resp["chunk"], resp["data"])
            except OSError as e:
                raise SandboxError(f"{self._name}: lost the exec server: {e}") from e
        if resp.get("id") != req["id"]:
            raise SandboxError(f"{self._name}: exec server answered out of order")
        if resp.get("error") == "not_found":
            raise SandboxFileNotFound(resp["message"])
        if "error" in resp:
            raise SandboxError(f"{self._name}: {resp['message']}")
        return resp

    def exec(self, cmd, *, timeout, cwd, env, max_output, on_output=None) -> ExecResult:
        argv = ["bash", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        r = self.request("exec", on_chunk=on_output, cmd=argv, cwd=cwd, env=env or {}, timeout=timeout,
                         max_output=max_output, stream=on_output is not None)
        return ExecResult(r["returncode"], r["stdout"], r["stderr"], r["duration_s"], r["timed_out"], r["truncated"])

    def spawn(self, cmd, *, cwd=None, env=None) -> int:
        argv = ["bash", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        return self.request("spawn", cmd=argv, cwd=cwd, env=env or {})["handle"]

    def poll(self, handle: int) -> int | None:
        return self.request("poll", handle=handle)["returncode"]

    def read_file(self, path: str) -> bytes:
        return base64.b64decode(self.request("read", path=path)["data"])

    def write_file(self, path: str, data: bytes, mode: int) -> None:
        self.request("write", path=path, data=base64.b64encode(data).decode(), mode=mode)


class Spawner:
    """For a backend whose exec server is `self._server`: a command started in the background
    and its exit seen by the server's own wait, no file or wrapper the command could stop."""

    def _wait_at_most(self, seconds: float) -> None:
        """Before a request to the server: the longest a backend waits for its answer."""

    def spawn(self, cmd, *, cwd=None, env=None) -> int:
        """Start `cmd` (its output goes nowhere: redirect it), the exec server its parent; a
        handle for `poll`. Raises SandboxError when the server is gone."""
        self._wait_at_most(60)
        return self._server.spawn(cmd, cwd=cwd, env=env)

    def poll(self, handle: int) -> int | None:
        """The exit status of what `spawn` started, None while it runs. Raises SandboxError
        when the server is gone or stopped answering (the agent's doing)."""
        self._wait_at_most(60)
        return self._server.poll(handle)
