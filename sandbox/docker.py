"""Docker backend, on the official `docker` SDK.

One container per sandbox, started with tini as PID 1 (`init=True`, so teardown is a
SIGKILL away) and the exec server as its command. The host talks to the server over the
container's attached stdin/stdout: one hijacked connection, no `docker exec` per call.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time
import warnings
from pathlib import Path, PurePosixPath

import docker
import docker.errors
import requests

from . import AGENT_UID, LABEL, SandboxBase, SandboxConfig, SandboxError, SandboxFileNotFound, pid_alive
from . import disk
from ._client import BOOT_ARGV, ServerClient, Spawner
from .disk import MOUNTS, VERIFIER_MOUNTS, Disk, DiskUnavailable
from .freeze import FreezeBook
from .gpu import device_requests
from .images import cache_dir
from .tree import tar_folder, untar_stripped

#: What root in a verifier sandbox keeps: enough to run the candidate as another user,
#: own its files and kill what it leaves behind. The agent sandbox keeps nothing.
VERIFIER_CAPS = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID", "KILL"]
#: Largest folder copy_out accepts (a submission that fills the disk is not copied whole).
MAX_COPY_OUT = 2 << 30


def client_from_env() -> docker.DockerClient:
    """A Docker client, or a SandboxError that says how to start an engine."""
    try:
        client = docker.from_env(timeout=600)
        client.ping()
        return client
    except Exception as e:
        raise SandboxError(
            f"no Docker engine answers ({e.__class__.__name__}: {e}). Start one (e.g. `dockerd &`), "
            "or use the local backend (--sandbox local) on a machine without Docker."
        ) from e


def owner_labels() -> dict[str, str]:
    """Labels that let `rdbench clean` tell a dead run's containers from a live one's, plus
    `rdbench.session` when RDBENCH_SESSION is set (a test session finds its own containers)."""
    labels = {LABEL: "1", "rdbench.pid": str(os.getpid()), "rdbench.host": socket.gethostname()}
    if os.environ.get("RDBENCH_SESSION"):
        labels["rdbench.session"] = os.environ["RDBENCH_SESSION"]
    return labels


class _AttachStream:
    """Reads Docker's multiplexed attach stream (8-byte frame headers) line by line."""

    def __init__(self, sock):
        self.sock = getattr(sock, "_sock", sock)
        self.sock.settimeout(None)
        self.buf = bytearray()
        self.stderr = bytearray()
        #: asked when a read times out: True to keep waiting (the sandbox was frozen meanwhile)
        self.keep_waiting = lambda: False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv_exact(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            try:
                chunk = self.sock.recv(n - len(out))
            except socket.timeout:
                if self.keep_waiting():
                    continue
                raise
            if not chunk:
                return b""
            out += chunk
        return bytes(out)

    def recv_line(self) -> bytes:
        while b"\n" not in self.buf:
            header = self._recv_exact(8)
            if not header:
                return b""
            kind, size = header[0], struct.unpack(">I", header[4:])[0]
            payload = self._recv_exact(size)
            if kind == 1:
                self.buf += payload
            else:  # the server's own stderr: keep the tail for error messages
                self.stderr = (self.stderr + payload)[-8192:]
        i = self.buf.index(b"\n") + 1
        line, self.buf = bytes(self.buf[:i]), self.buf[i:]
        return line

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def lock_dir(config: SandboxConfig) -> Path:
    return Path(config.lock_dir) if config.lock_dir else cache_dir() / "locks"


def _retry(call, *args) -> None:
    """A pause or unpause of a container that may be gone (removed meanwhile: no error)."""
    for attempt in range(3):
        try:
            call(*args)
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as e:
            if any(m in str(e) for m in ("is not paused", "is already paused", "is not running")):
                return
            if attempt == 2:
                raise SandboxError(f"could not pause/unpause container {args[0][:12]}: {e}") from e
            time.sleep(0.2)


class DockerSandbox(SandboxBase, Spawner):
    """A Sandbox in one Docker container. See `sandbox.Sandbox` for the method contracts."""

    isolates = freezes = needs_images = gpus = True  # leftovers: containers of dead runs (own: this process's)
    remove_leftovers = classmethod(lambda cls, own=False, alive=False: remove_containers(
        client_from_env(), own=own, dead_only=not alive))
    leftover_noun = "container(s)"

    def __init__(self, config: SandboxConfig, client: docker.DockerClient | None = None):
        self.config = config
        self.client = client or client_from_env()
        verifier = config.role == "verifier"
        # role, cores and lock folder: what a timing phase of any rdbench process looks for (quiet)
        labels = {**owner_labels(), **config.labels, "rdbench.role": config.role,
                  "rdbench.cpuset": config.cpuset or "", "rdbench.locks": str(lock_dir(config))}
        kwargs = dict(
            image=config.image,
            command=BOOT_ARGV,
            stdin_open=True,
            detach=True,
            init=True,
            user="0:0" if verifier else f"{AGENT_UID}:{AGENT_UID}",
            working_dir=config.workdir,
            network_mode="none",
            cap_drop=["ALL"],
            cap_add=VERIFIER_CAPS if verifier else None,
            security_opt=["no-new-privileges"],
            mem_limit=config.memory,
            memswap_limit=config.memory,
            pids_limit=config.pids,
            cpuset_cpus=config.cpuset,
            nano_cpus=int(config.cpus * 1e9) if config.cpus else None,
            labels=labels,
            environment={"HOME": "/root" if verifier else "/tmp", "PYTHONUNBUFFERED": "1", **config.env},
        )
        if config.gpus:
            kwargs["device_requests"] = device_requests(config.gpus)
        self.container = None
        self._stream = None
        self._disk = None
        self._book = FreezeBook(lock_dir(config), "docker") if not verifier else None
        self._frozen_seen = 0.0
        if config.disk:
            try:
                self._disk = Disk.create(config.disk, 0 if verifier else AGENT_UID, cache_dir() / "disks",
                                         VERIFIER_MOUNTS if verifier else MOUNTS)
            except DiskUnavailable as e:
                warnings.warn(f"sandbox without a disk limit: {e}", stacklevel=2)
            else:  # everything the agent (a timed run) can write is on the disk; an agent's rest is read-only
                kwargs.update(volumes=self._disk.binds(), read_only=not verifier)
                if verifier:  # where the verify kit keeps its staged copies
                    kwargs["environment"]["RDBENCH_KIT_ROOT"] = VERIFIER_MOUNTS["kit"]
        if config.mounts:  # read-only host folders (an installed agent's model-gateway socket)
            kwargs["volumes"] = {**kwargs.get("volumes", {}),
                                 **{host: {"bind": dst, "mode": "ro"} for host, dst in config.mounts.items()}}
        try:
            self.container = self.client.containers.create(**kwargs)
            self.name = self.container.short_id
            self._stream = _AttachStream(
                self.client.api.attach_socket(self.container.id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            )
            self._stream.keep_waiting = self._was_frozen
            self.container.start()
            self._server = ServerClient(self._stream.send, self._stream.recv_line, f"container {self.name}")
            self._server.request("ping")
            if self._book is not None:  # started while a timing phase runs on its cores: frozen now
                self._book.join(self.container.id, config.cpuset, self._pause(self.client))
        except docker.errors.ImageNotFound as e:
            self.close()
            raise SandboxError(f"image {config.image!r} not found; build it with `rdbench images build`") from e
        except (docker.errors.DockerException, OSError, SandboxError) as e:
            detail = bytes(self._stream.stderr).decode(errors="replace") if self._stream else ""
            if config.gpus and "device driver" in str(e):
                detail += (" (GPUs need the NVIDIA container toolkit in the Docker engine; without it, use "
                           "--sandbox local on a GPU machine)")
            self.close()
            raise SandboxError(f"could not start a sandbox from {config.image!r}: {e} {detail}".strip()) from e

    _pause = staticmethod(lambda client: lambda cid: _retry(client.api.pause, cid))

    @classmethod
    @contextlib.contextmanager
    def quiet(cls, cpuset: str | None, lock_dir: Path):
        """For a timing phase on `cpuset`: every agent container of this machine (of any
        rdbench process using the same `lock_dir`) whose cores overlap it is paused meanwhile,
        and unpaused after, on errors and Ctrl-C too."""
        client = client_from_env()
        def agents():
            found = client.api.containers(filters={"label": [f"{LABEL}=1", "rdbench.role=agent",
                                                             f"rdbench.locks={lock_dir}"]})  # running ones
            return [(c["Id"], (c.get("Labels") or {}).get("rdbench.cpuset") or None) for c in found]

        try:
            with FreezeBook(lock_dir, "docker").timing(cpuset, agents, cls._pause(client),
                                             lambda cid: _retry(client.api.unpause, cid)):
                yield
        finally:
            client.close()

    def frozen_s(self) -> float:
        """Seconds this sandbox has spent frozen by timing phases so far."""
        return self._book.frozen_s(self.container.id) if self._book and self.container else 0.0

    def _was_frozen(self) -> bool:
        """An answer is late: keep waiting if the sandbox was frozen since the last look."""
        self._thaw_if_orphaned()
        seen, self._frozen_seen = self._frozen_seen, self.frozen_s()
        return self._frozen_seen > seen or self._paused()

    def _paused(self) -> bool:  # now, whoever paused it
        try:
            return self.client.api.inspect_container(self.container.id)["State"]["Paused"]
        except docker.errors.DockerException:
            return False

    def _thaw_if_orphaned(self) -> None:  # frozen by a process killed while timing: thawed here
        if self._book is not None and self.container is not None:
            self._book.thaw_if_orphaned(self.container.id, lambda cid: _retry(self.client.api.unpause, cid))

    def path(self, p: str) -> str:
        return p

    _wait_at_most = lambda self, seconds: self._stream.sock.settimeout(seconds)  # noqa: E731  (Spawner)

    def exec(self, cmd, *, timeout=None, cwd=None, env=None, max_output=1 << 20, on_output=None):
        # the server enforces `timeout`; this guards against a server that stops answering
        self._stream.sock.settimeout(None if timeout is None else timeout + 60)
        self._thaw_if_orphaned()
        self._frozen_seen = self.frozen_s()
        return self._server.exec(cmd, timeout=timeout, cwd=cwd, env=env, max_output=max_output, on_output=on_output)

    def read_file(self, path: str) -> bytes:
        return self._server.read_file(path)

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._server.write_file(path, data, mode)

    def copy_in(self, src: Path, dst: str, *, owner: int | None = None, mode: int | None = None) -> None:
        dst_path = PurePosixPath(dst)
        if owner is None:  # the sandbox's own user
            owner = 0 if self.config.role == "verifier" else AGENT_UID
        if self._disk is not None and dst in self._disk.mounts.values():  # a mount point (a read-only root)
            data, target = tar_folder(Path(src), ".", owner, mode), dst
        else:
            data, target = tar_folder(Path(src), dst_path.name, owner, mode), str(dst_path.parent)
        try:
            self.container.put_archive(target, data)
        except docker.errors.DockerException as e:
            raise SandboxError(f"copy into {dst} failed: {e}") from e

    def copy_out(self, src: str, dst: Path, max_bytes: int = MAX_COPY_OUT) -> None:
        try:
            stream, _ = self.container.get_archive(src)
        except docker.errors.NotFound as e:
            raise SandboxFileNotFound(f"no such folder in the sandbox: {src}") from e
        except docker.errors.DockerException as e:
            raise SandboxError(f"copy out of {src} failed: {e}") from e
        untar_stripped(stream, Path(dst), max_bytes)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        if self.container is not None:
            container, self.container = self.container, None
            self._remove(container)
            with contextlib.suppress(OSError):
                _ = self._book.forget(container.id) if self._book is not None else None
        if self._disk is not None:
            disk, self._disk = self._disk, None
            disk.close()

    @staticmethod
    def _remove(container) -> None:
        for _ in range(3):
            try:
                container.remove(force=True)
                return
            except docker.errors.NotFound:
                return
            except docker.errors.APIError:  # "removal already in progress" and the like
                time.sleep(0.2)
            except Exception:
                return

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def remove_containers(client: docker.DockerClient, *, run_id: str | None = None, dead_only: bool = True,
                      own: bool = False) -> list[str]:
    """Remove rdbench containers: those of `run_id`, those this process started (`own`), or
    (dead_only) those whose owning process on this host is gone. A container removed by
    someone else meanwhile is no error. Returns the short ids removed."""
    filters = {"label": [f"{LABEL}=1"] + ([f"rdbench.run={run_id}"] if run_id else [])}
    if own:
        filters["label"] += [f"rdbench.pid={os.getpid()}", f"rdbench.host={socket.gethostname()}"]
        dead_only = False
    removed = []
    for c in client.containers.list(all=True, filters=filters, ignore_removed=True):
        labels = c.labels
        if dead_only and run_id is None and labels.get("rdbench.host") == socket.gethostname():
            if pid_alive(labels.get("rdbench.pid", "")):
                continue  # its owner still runs
        try:
            c.remove(force=True)
            removed.append(c.short_id)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:  # someone else is removing it (its own trial's cleanup): wait
            if "already in progress" not in str(e):
                raise
            try:
                client.api.wait(c.id, timeout=60, condition="removed")
            except docker.errors.NotFound:
                pass  # gone already
            except (docker.errors.DockerException, requests.exceptions.RequestException):
                continue  # still going: the next clean finds it
            removed.append(c.short_id)
    if own:  # about to exit: what this process froze is thawed, its disks unmounted
        FreezeBook(cache_dir() / "locks", "docker").drop_process(os.getpid(), lambda cid: _retry(client.api.unpause, cid))
    disk.remove_stale(cache_dir() / "disks", own=own)  # and those of processes killed before closing theirs
    return removed
