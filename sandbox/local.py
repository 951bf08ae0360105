"""Local-process backend: for machines without Docker (a GPU box, say).

Agent sandboxes are frozen (SIGSTOP of the exec server and every process under it) while a
verifier of any rdbench process using the same lock folder times: they are not pinned to
cores, so every timing phase overlaps them. Each agent sandbox is listed, for the
verifiers of other processes, in a file of the lock folder's `local-agents/`.

IT DOES NOT ISOLATE THE AGENT. Commands run as the calling user on the host, with the
host's network and files. Sandbox paths (/workspace, /submission, ...) are folders under a
private temporary root; `path()` says where one is as seen by a command. Use it only for
agents you trust.

A verifier keeps the guards it can: run as root, the verify kit runs the candidate and the
baseline as two uids that no account of this host uses (`RDBENCH_CANDIDATE_UID`,
`RDBENCH_BASELINE_UID`), so they cannot read the verifier's files or environment, and kills
their processes and removes their files and IPC objects after each run; with bubblewrap
installed each run also has no network and private /tmp, /var/tmp and /dev/shm, and finds its
user in a private /etc/passwd. Each verifier sandbox claims uids of its own (`claim_uids`):
two verifiers at once never share one, so neither kills the other's runs.
"""

from __future__ import annotations

import fcntl
import grp
import os
import pwd
import shutil
import signal
import subprocess
import sys
import json
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

from . import SandboxBase, SandboxConfig, SandboxError, SandboxFileNotFound
from ._client import BOOT_ARGV, ServerClient
from ._server import descendants
from .freeze import FreezeBook
from .images import cache_dir
from .tree import walk


#: Where local verifiers claim their run uids, machine-wide (every rdbench process, whatever
#: its cache folder): a file per uid, flock-ed by the sandbox using it, so the claim ends when
#: that sandbox closes or its process dies.
UID_LOCKS = Path("/run/rdbench-uids")
#: The first uid tried for runs; the next free ones follow. (Not 61000: rdbench before these
#: claims ran every local verifier as 61000 and 61001, and killed what else ran as them.)
RUN_UID_START = 62000
_UID_SPAN = 4096


def _process_uids() -> set[int]:
    """The uids that own a live process of this host."""
    out = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                out.add(entry.stat().st_uid)
            except OSError:
                pass
    return out


def _has_account(uid: int) -> bool:
    for lookup in (pwd.getpwuid, grp.getgrgid):  # a run's gid is its uid
        try:
            lookup(uid)
            return True
        except KeyError:
            pass
    return False


def claim_uids(n: int, start: int = RUN_UID_START, locks: Path = UID_LOCKS) -> list[tuple[int, int]]:
    """`n` uids (as [(uid, lock fd)]) that no account or group of this host has, that own no
    process, and that no other sandbox holds: each held by an exclusive flock on
    `locks`/<uid> until its fd is closed (`release_uids`) or this process dies. Raises
    SandboxError when none is free."""
    try:
        locks.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:  # no /run to write to: the default cache's (machine-wide for one user)
        locks = cache_dir() / "locks" / "uids"
        locks.mkdir(parents=True, exist_ok=True)
    held: list[tuple[int, int]] = []
    for uid in range(start, start + _UID_SPAN):
        if len(held) == n:
            return held
        if _has_account(uid):
            continue
        fd = os.open(locks / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another verifier's
            os.close(fd)
            continue
        if uid in _process_uids():  # left by a dead holder's runs, or used by something else
            os.close(fd)
            continue
        held.append((uid, fd))
    release_uids(held)
    raise SandboxError(f"no free uid for a verifier's runs in {start}..{start + _UID_SPAN - 1} (see {locks})")


def kill_uid(uid: int) -> None:
    """Kill every process of `uid` (root only): as that user, kill(-1) reaches exactly its processes."""
    for _ in range(20):
        if uid not in _process_uids():
            return
        subprocess.run(["/bin/sh", "-c", "kill -9 -1"], user=uid, group=uid, extra_groups=[],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def release_uids(held: list[tuple[int, int]]) -> None:
    """End claims of `claim_uids`, after killing what still runs as those uids."""
    for uid, fd in held:
        kill_uid(uid)
        os.close(fd)
    held.clear()


class LocalSandbox(SandboxBase):
    """A Sandbox as a host process tree under a temporary root. See `sandbox.Sandbox`."""

    freezes = gpus = True  # stopped by signals in timing phases; CUDA_VISIBLE_DEVICES
    host_runtime = True  # the host's Python, as claimed run uids

    def __init__(self, config: SandboxConfig):
        warnings.warn("local sandbox backend: no isolation (no network, user, cpu or memory limits)", stacklevel=2)
        self.config = config
        # a verifier's runs: two uids of no account here, its own while it lives
        self._uids = claim_uids(2) if os.geteuid() == 0 and config.role == "verifier" else []
        self.root = Path(tempfile.mkdtemp(prefix="rdbench-local-"))
        env = {**os.environ, **config.env, "RDBENCH_SANDBOX_ROOT": str(self.root),
               "RDBENCH_LOCAL_SANDBOX": "1", "HOME": str(self.root / "home")}
        if os.geteuid() == 0:  # the kit's runs, as those uids, must reach their staged copies
            self.root.chmod(0o711)
        if self._uids:
            env["RDBENCH_CANDIDATE_UID"], env["RDBENCH_BASELINE_UID"] = (str(uid) for uid, _ in self._uids)
        # only the GPUs given (none: none), numbered as nvidia-smi numbers them
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, config.gpus))
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        (self.root / "home").mkdir()
        Path(self.path(config.workdir)).mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [sys.executable, *BOOT_ARGV[1:]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            cwd=self.path(config.workdir), env=env, start_new_session=True,
        )
        # whose it is: what `remove_leftovers` reads when the process that made it died unclosed
        (self.root / OWNER_FILE).write_text(json.dumps({"owner": os.getpid()}))
        self.name = f"local:{self.root.name}"
        self._server = ServerClient(self._send, self._proc.stdout.readline, self.name)
        self._server.request("ping")
        self._book = self._entry = None
        if config.role == "agent":  # found and frozen by timing phases (quiet)
            locks = Path(config.lock_dir) if config.lock_dir else cache_dir() / "locks"
            self._book = FreezeBook(locks, "local")
            self._entry = _listing(locks) / f"{self.root.name}.json"
            self._entry.write_text(json.dumps({"name": self.name, "pid": self._proc.pid, "owner": os.getpid()}))
            self._book.join(self.name, None, _signal(signal.SIGSTOP, lambda: {self.name: self._proc.pid}))

    leftover_noun = "sandbox folder(s)"

    @classmethod
    def remove_leftovers(cls, own: bool = False, alive: bool = False) -> list[str]:
        """Sandbox roots whose rdbench process died without closing them (with `own`: this
        process's; with `alive`: every one): the processes still running in them are killed,
        the folders removed."""
        removed = []
        for root in Path(tempfile.gettempdir()).glob("rdbench-local-*"):
            try:
                owner = json.loads((root / OWNER_FILE).read_text())["owner"]
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not (yet) a sandbox root: being made, or not ours
            if own and owner != os.getpid() or not own and not alive and _alive(owner):
                continue
            _kill_rooted(root)
            subprocess.run(["rm", "-rf", "--one-file-system", str(root)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # rm walks a deep chain a run left; rmtree recursed
            removed.append(f"local:{root.name}")
        return removed

    @classmethod
    @contextmanager
    def quiet(cls, cpuset: str | None, lock_dir: Path):
        """For a timing phase: every local agent sandbox listed in `lock_dir` is stopped meanwhile."""
        listed = lambda: _listed(lock_dir)  # noqa: E731
        with FreezeBook(lock_dir, "local").timing(cpuset, lambda: [(name, None) for name in listed()],
                                         _signal(signal.SIGSTOP, listed), _signal(signal.SIGCONT, listed)):
            yield

    def frozen_s(self) -> float:
        """Seconds this sandbox has spent frozen by timing phases so far."""
        return self._book.frozen_s(self.name) if self._book is not None else 0.0

    def _send(self, data: bytes) -> None:
        self._proc.stdin.write(data)
        self._proc.stdin.flush()

    def path(self, p: str) -> str:
        """Where sandbox path `p` is, as seen by commands in this sandbox."""
        if not p.startswith("/"):
            return p
        return str(self.root / p.lstrip("/"))

    def exec(self, cmd, *, timeout=None, cwd=None, env=None, max_output=1 << 20, on_output=None):
        return self._server.exec(cmd, timeout=timeout, cwd=self.path(cwd or self.config.workdir), env=env,
                                 max_output=max_output, on_output=on_output)

    def read_file(self, path: str) -> bytes:
        return self._server.read_file(self.path(path))

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._server.write_file(self.path(path), data, mode)

    def copy_in(self, src: Path, dst: str, *, owner: int | None = None, mode: int | None = None) -> None:
        target = Path(self.path(dst))
        try:
            _copy_tree(Path(src), target, owner if os.geteuid() == 0 else None)
            if mode is not None:
                target.chmod(mode)
        except OSError as e:
            raise SandboxError(f"copy into {dst} failed: {e}") from e

    def copy_out(self, src: str, dst: Path) -> None:
        source = Path(self.path(src))
        if not source.is_dir():
            raise SandboxFileNotFound(f"no such folder in the sandbox: {src}")
        real = source.resolve()

        def inside(link: str) -> bool:  # links that leave the folder stay behind
            try:
                target = Path(link).resolve()
            except (OSError, RuntimeError, RecursionError):  # a loop, or a chain deeper than realpath recurses
                return False
            return target == real or real in target.parents

        try:
            _copy_tree(source, Path(dst), None, keep_link=inside)
        except OSError as e:
            raise SandboxError(f"copy out of {src} failed: {e}") from e

    def close(self) -> None:
        if getattr(self, "_entry", None) is not None:
            self._entry.unlink(missing_ok=True)
            self._entry = None
            try:
                self._book.forget(self.name)
            except OSError:
                pass
        proc = getattr(self, "_proc", None)
        if proc is not None:
            self._proc = None
            for pid in [proc.pid, *descendants(proc.pid)]:  # commands run in sessions of their own
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            proc.wait()
            for f in (proc.stdin, proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass
        release_uids(getattr(self, "_uids", []))
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()



def _copy_tree(src: Path, dst: Path, owner: int | None, keep_link=lambda path: True) -> None:
    """Copy the folder `src` into `dst` through sandbox.tree's bounded, iterative walk (a
    folder chain thousands deep is left out below its bound, never a RecursionError): files,
    folders and links (those `keep_link` keeps), never special files; owned by `owner` if given."""
    dst.mkdir(parents=True, exist_ok=True)
    made = [dst]
    for rel, entry in walk(src):
        target = dst / rel
        if entry.is_symlink():
            if not keep_link(entry.path):
                continue
            if target.is_symlink() or target.is_file():
                target.unlink()
            os.symlink(os.readlink(entry.path), target)
        elif entry.is_dir(follow_symlinks=False):
            target.mkdir(exist_ok=True)
        elif entry.is_file(follow_symlinks=False):
            shutil.copy2(entry.path, target, follow_symlinks=False)
        else:  # a FIFO, a socket, a device
            continue
        made.append(target)
    if owner is not None:
        for p in made:
            os.lchown(p, owner, owner)

#: in each sandbox root: {"owner": the pid of the rdbench process that made it}
OWNER_FILE = ".rdbench-owner"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's: alive
    return True


def _kill_rooted(root: Path) -> None:
    """Kill every process started in sandbox `root` (its environment names the root; commands
    run in sessions of their own, so a dead server's children are no longer below it)."""
    mark = f"RDBENCH_SANDBOX_ROOT={root}".encode()
    for _ in range(3):  # again: what forked meanwhile
        found = False
        for d in Path("/proc").iterdir():
            if not d.name.isdigit() or int(d.name) == os.getpid():
                continue
            try:
                if mark in (d / "environ").read_bytes().split(b"\0"):
                    os.kill(int(d.name), signal.SIGKILL)
                    found = True
            except OSError:
                continue
        if not found:
            return
        time.sleep(0.05)


def _listing(lock_dir: Path) -> Path:
    d = Path(lock_dir) / "local-agents"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _listed(lock_dir: Path) -> dict[str, int]:
    """The local agent sandboxes of live rdbench processes: name -> exec server pid."""
    out = {}
    for f in _listing(lock_dir).glob("*.json"):
        try:
            entry = json.loads(f.read_text())
            os.kill(entry["owner"], 0)
        except (OSError, ValueError, KeyError):
            continue
        out[entry["name"]] = entry["pid"]
    return out


def _signal(sig: int, pids):
    """Send `sig` to a sandbox's exec server and every process under it; `pids()`: name -> pid."""
    def send(name: str) -> None:
        pid = pids().get(name)
        sent = set()
        for _ in range(2 if sig == signal.SIGSTOP else 1):  # a second pass: children forked meanwhile
            for p in [pid, *descendants(pid)] if pid is not None else []:
                try:
                    os.kill(p, sig)
                    sent.add(p)
                except OSError:
                    pass
        if sig == signal.SIGSTOP:
            _wait_stopped(sent)
    return send


def _wait_stopped(pids: set[int], limit_s: float = 2.0) -> None:
    """Until each of `pids` is stopped (or gone): a SIGSTOP takes effect only when the process
    is next scheduled, which on a loaded host is after kill() returned, and a timing phase
    must not start while the agent still runs. Bounded: a process that never stops (one in an
    uninterruptible sleep) is not waited on past `limit_s`."""
    deadline = time.monotonic() + limit_s
    left = set(pids)
    while left and time.monotonic() < deadline:
        for p in list(left):
            try:
                state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                state = "X"  # gone
            if state in ("T", "t", "X", "Z"):
                left.discard(p)
        if left:
            time.sleep(0.005)
