"""Sandboxes: where agent tool calls and verifiers run.

The whole surface is the `Sandbox` protocol below. Backends live one per module
and are chosen by name through `BACKENDS`, imported lazily so that a missing
optional SDK gives an install hint instead of an import crash.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Protocol, runtime_checkable

#: Every container rdbench starts carries this label, so leftovers can be found.
LABEL = "rdbench"


def pid_alive(pid) -> bool:
    """Whether process `pid` (an int or its text) of this host still runs: what decides
    whether a container, a disk or a timing phase left by an rdbench process is stale. A pid
    that is no number, or not above 0, runs nothing."""
    try:
        n = int(pid)
    except (TypeError, ValueError):
        return False
    if n <= 0:
        return False
    try:
        os.kill(n, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True

#: The agent sandbox's user (uid = gid): it owns /workspace; never root.
AGENT_UID = 1000

#: Default cap on captured stdout/stderr of one exec, per stream.
DEFAULT_MAX_OUTPUT = 1 << 20


class SandboxError(Exception):
    """A fault of the sandbox itself (engine down, container gone): an infrastructure error."""


class SandboxFileNotFound(SandboxError, FileNotFoundError):
    """A path asked for does not exist inside the sandbox."""


class SandboxTooLarge(SandboxError):
    """A folder to copy out is larger than the limit: what was made inside, not a fault of the sandbox."""


@dataclass
class ExecResult:
    """What one command did. A non-zero exit or a timeout is data, not an exception."""

    returncode: int
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool = False
    #: True when stdout or stderr was cut at the output cap.
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


@dataclass
class SandboxConfig:
    """How to start one sandbox. Defaults are the security boundary; loosen nothing lightly."""

    image: str
    #: cpus the sandbox may use, as a cpuset string ("0", "0-1"); None = all.
    cpuset: str | None = None
    #: number of cpus of CFS quota; None = no quota beyond the cpuset.
    cpus: float | None = None
    memory: str = "2g"
    pids: int = 512
    #: "agent": uid 1000, no capabilities. "verifier": root with only the capabilities
    #: needed to run the candidate as another user and clean up after it.
    role: str = "agent"
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    #: whole GPUs by device id (Docker: device requests; local: CUDA_VISIBLE_DEVICES).
    gpus: list[int] = field(default_factory=list)
    workdir: str = "/workspace"
    #: the most the sandbox can write ("6g"), over everything it can write (an agent: /workspace,
    #: /tmp, /var/tmp, the rest of the root filesystem read-only; a verifier: every place a timed
    #: run can write, see sandbox.disk.VERIFIER_MOUNTS); None = no limit.
    disk: str | None = None
    #: where the machine-wide lock files and freeze record live (None: the cache's "locks")
    lock_dir: str | None = None
    #: host folder -> sandbox path, mounted read-only (Docker): where an installed agent's
    #: model gateway puts its Unix socket. Nothing else of the host's is mounted.
    mounts: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Sandbox(Protocol):
    """An isolated place to run commands. All paths are absolute paths inside the sandbox.

    What a backend can do is declared on its class, and the harness asks (never its name):"""

    #: commands cannot reach the host (its user, files, network, other sandboxes)
    isolates: ClassVar[bool]
    #: `quiet(cpuset, lock_dir)`, a class context manager, freezes the agent sandboxes of the
    #: machine for a timing phase; `frozen_s()` counts it (0 without freezing)
    freezes: ClassVar[bool]
    #: it runs images that `sandbox.images` must build first (config.image is a tag)
    needs_images: ClassVar[bool]
    #: config.gpus reach the commands
    gpus: ClassVar[bool]
    #: the verifier's runs use the host's own Python and packages as separate host users (so a
    #: preflight checks, before the first trial, that those users can run what a task needs)
    host_runtime: ClassVar[bool]

    def frozen_s(self) -> float:
        """Seconds this sandbox has spent frozen by timing phases so far."""
        ...

    @classmethod
    def remove_leftovers(cls, own: bool = False, alive: bool = False) -> list[str]:
        """Remove what dead runs left on this machine (with `own`: what this process started;
        with `alive`: also what runs that still seem alive hold); the names of what went.
        Best effort."""
        ...

    def exec(
        self,
        cmd: str | list[str],
        *,
        timeout: float | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        max_output: int = DEFAULT_MAX_OUTPUT,
        on_output: Callable[[str, str], None] | None = None,
    ) -> ExecResult:
        """Run `cmd` (a string goes through bash -c). On timeout the whole process tree is
        killed and `timed_out` is set; time the sandbox spent frozen does not count against
        `timeout`. `on_output(stream, text)` ("stdout"/"stderr") gets output as it comes.
        Raises SandboxError if the sandbox itself fails."""
        ...

    def path(self, p: str) -> str:
        """Where sandbox path `p` is as seen by commands inside (the same, except for the local backend)."""
        ...

    def read_file(self, path: str) -> bytes:
        """Raises SandboxFileNotFound if `path` is missing, SandboxError otherwise."""
        ...

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Creates parent folders. Raises SandboxError."""
        ...

    def copy_in(self, src: Path, dst: str, *, owner: int | None = None, mode: int | None = None) -> None:
        """Copy host folder `src` to sandbox folder `dst` (its contents end up in `dst`).
        `owner` sets uid=gid of every file (default: the sandbox's own user); `mode` sets the mode
        of `dst` itself. What lies deeper than `sandbox.tree` walks is left out. Raises
        SandboxTooLarge (more entries than it walks), SandboxError."""
        ...

    def copy_out(self, src: str, dst: Path) -> None:
        """Copy sandbox folder `src`'s contents into host folder `dst`; what lies deeper than
        `sandbox.tree` walks is left out. Raises SandboxFileNotFound, SandboxTooLarge (larger
        than the backend copies), SandboxError."""
        ...

    def close(self) -> None:
        """Destroy the sandbox and everything in it. Idempotent; never raises."""
        ...


class SandboxBase:
    """The capabilities (see Sandbox) a backend class declares, with the defaults of one that
    can do none of them: it inherits these and overrides what it can do."""

    isolates = freezes = needs_images = gpus = host_runtime = False
    #: what `remove_leftovers` names, in messages ("removed 3 container(s)")
    leftover_noun = "leftover(s)"

    def frozen_s(self) -> float:
        return 0.0

    @classmethod
    def remove_leftovers(cls, own: bool = False, alive: bool = False) -> list[str]:
        return []


#: backend name -> "module:factory". A factory takes a SandboxConfig and returns a Sandbox.
BACKENDS = {
    "docker": ("sandbox.docker", "DockerSandbox", "pip install docker"),
    "local": ("sandbox.local", "LocalSandbox", None),
    "fake": ("sandbox.fake", "FakeSandbox", None),  # tests and development only: no isolation at all
}


def get_backend(name: str):
    """Return the Sandbox class for a backend name, with an install hint if its SDK is missing."""
    if name not in BACKENDS:
        raise ValueError(f"unknown sandbox backend {name!r}; choose one of {sorted(BACKENDS)}")
    module, attr, hint = BACKENDS[name]
    try:
        return getattr(importlib.import_module(module), attr)
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise SandboxError(f"backend {name!r} needs a package that is missing ({e}); try: {hint}") from e
