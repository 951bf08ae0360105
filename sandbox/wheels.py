"""The base image's Python wheels: resolved by the host's pip, closed under their requirements.

torch comes in one of two builds (RDBENCH_TORCH, or `rdbench images build --torch`):
- cpu: torch==VERSION+cpu from a CPU index (RDBENCH_TORCH_INDEX, default PyTorch's own),
  its requirements from pip's usual index (PyPI, or what pip's configuration names);
- cuda: the CUDA build with its nvidia-* libraries (PyPI's torch; or from RDBENCH_TORCH_INDEX);
- auto (the default): cuda on a host with an NVIDIA GPU, else cpu.
pip resolves the whole set for the image's platform (Debian bookworm: CPython 3.11, glibc 2.36),
and the set is checked closed before it is installed: every requirement of every wheel, its
markers evaluated for the image, is met by a wheel of the set.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path
from typing import Callable

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from . import SandboxError

TORCH_VERSION = "2.13.0"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
#: Asked for beside torch (the rest comes from torch's requirements). pip: `pip check` and
#: `pip install` of a wheel inside the sandbox. The CPU build needs Triton for the interpreter
#: (kernel tasks without a GPU); the CUDA build requires its own Triton.
WITH_TORCH = ["numpy==2.4.6", "pip"]
CPU_ONLY = ["triton==3.9.0"]
PYTHON_VERSION = "3.11"  # Debian bookworm's python3
GLIBC = (2, 36)  # Debian bookworm's
#: pip's bounds on each index request: an index that does not answer is one error, not a hang.
PIP_TIMEOUT_S, PIP_RETRIES = 15, 2

Log = Callable[[str], None]


@dataclass(frozen=True)
class TorchBuild:
    flavor: str  # cpu | cuda
    index: str | None  # the index torch comes from, besides pip's own; None: pip's own

    def requirements(self) -> list[str]:
        torch = f"torch=={TORCH_VERSION}+cpu" if self.flavor == "cpu" else f"torch=={TORCH_VERSION}"
        return [torch, *WITH_TORCH, *(CPU_ONLY if self.flavor == "cpu" else [])]

    def key(self) -> list:
        """What the image's tag hashes: the build, its index and what is asked for."""
        return [self.flavor, self.index or "", self.requirements(), PYTHON_VERSION, list(GLIBC), platform.machine()]


def torch_build(flavor: str | None = None, index: str | None = None) -> TorchBuild:
    """The torch build asked for: the arguments, else RDBENCH_TORCH / RDBENCH_TORCH_INDEX."""
    flavor = flavor or os.environ.get("RDBENCH_TORCH") or "auto"
    if flavor not in ("cpu", "cuda", "auto"):
        raise SandboxError(f"RDBENCH_TORCH / --torch: {flavor!r} is not cpu, cuda or auto")
    if flavor == "auto":
        from .gpu import detect_gpus

        flavor = "cuda" if detect_gpus() else "cpu"
    index = index or os.environ.get("RDBENCH_TORCH_INDEX") or (CPU_INDEX if flavor == "cpu" else None)
    return TorchBuild(flavor, index)


def image_platforms() -> list[str]:
    """The wheel platform tags the image's glibc runs, newest first."""
    arch = platform.machine()
    return [f"manylinux_2_{m}_{arch}" for m in range(GLIBC[1], 16, -1)] + [f"manylinux2014_{arch}"]


def image_target() -> list[str]:
    """pip's options that select wheels for the image rather than for this host."""
    return ["--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp",
            "--abi", f"cp{PYTHON_VERSION.replace('.', '')}", *[a for p in image_platforms() for a in ("--platform", p)]]


def install(wheels: Path, site: Path, log: Log) -> None:
    """Install the wheel set into `site` (the image's /opt/site); its scripts run the image's python3."""
    t = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", *image_target(),
                           "--target", str(site), *map(str, sorted(wheels.glob("*.whl")))], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SandboxError(f"pip install of the image's wheels failed (exit {proc.returncode}): {proc.stderr[-3000:]}")
    for script in sorted((site / "bin").glob("*")):
        if script.is_file() and not script.is_symlink():
            head, sep, rest = script.read_bytes().partition(b"\n")
            if head.startswith(b"#!") and b"python" in head:
                script.write_bytes(b"#!/usr/bin/python3" + sep + rest)
    log(f"pip install wheels: {time.monotonic() - t:.0f} s")


def image_environment() -> dict[str, str]:
    """The environment markers of the image's Python (PEP 508)."""
    return {"python_version": PYTHON_VERSION, "python_full_version": f"{PYTHON_VERSION}.2",
            "implementation_name": "cpython", "implementation_version": f"{PYTHON_VERSION}.2",
            "platform_python_implementation": "CPython", "platform_system": "Linux", "sys_platform": "linux",
            "os_name": "posix", "platform_machine": platform.machine(), "platform_release": "", "platform_version": ""}


def _answers(url: str, timeout: float) -> str | None:
    """None when the index at `url` answers (any HTTP status), else why not."""
    if not url.startswith(("http://", "https://")):
        path = Path(url.removeprefix("file://"))
        return None if path.exists() else f"{path} does not exist"
    try:
        urllib.request.urlopen(urllib.request.Request(url.rstrip("/") + "/torch/", method="HEAD"), timeout=timeout)
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, socket.timeout, OSError) as e:
        return str(getattr(e, "reason", e))
    return None


def pip_command(build: TorchBuild, action: list[str], *, isolated: bool = False,
                index_timeout: float = PIP_TIMEOUT_S) -> tuple[list[str], dict[str, str], str]:
    """The pip command line and environment that resolve `build` for the image. `isolated`:
    none of this machine's pip configuration (files, PIP_* variables, local wheel folders).
    A torch index that does not answer is left out (pip may still find torch elsewhere), and
    said so in the third value."""
    cmd = [sys.executable, "-m", "pip", *action, *image_target(), "--timeout", str(int(index_timeout)),
           "--retries", str(PIP_RETRIES), "--progress-bar", "off"]
    env = {**os.environ}
    if isolated:
        cmd.insert(3, "--isolated")
        env["PIP_CONFIG_FILE"] = os.devnull
    why = _answers(build.index, min(index_timeout, 15)) if build.index else None
    if build.index and why is None:
        cmd += ["--extra-index-url", build.index]
    note = f"the torch index {build.index} does not answer ({why})" if why else ""
    return cmd + build.requirements(), env, note


def _pip(build: TorchBuild, action: list[str], log: Log, what: str, **kw) -> str:
    cmd, env, note = pip_command(build, action, **kw)
    if note:
        log(f"{note}; looking for torch elsewhere (pip's configuration)")
    t = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")] or proc.stderr.splitlines()
        hint = ""
        if build.index and any("torch" in line for line in errors):
            hint = (f"; torch {build.flavor} comes from {build.index} (RDBENCH_TORCH_INDEX or --torch-index to change "
                    "it, RDBENCH_TORCH=cpu|cuda for the other build)")
        if "Retrying" in proc.stderr:
            hint += "; an index did not answer in time (pip's own: `pip config list`, PIP_INDEX_URL)"
        raise SandboxError(f"pip could not resolve the image's wheels (torch {build.flavor})"
                           + (f": {note}" if note else "") + ": " + " ".join(errors[-3:])[-1500:] + hint)
    log(f"{what}: {time.monotonic() - t:.0f} s")
    return note


def download(build: TorchBuild, dest: Path, log: Log, **kw) -> str:
    """Download the resolved wheel set into `dest` and check that it is closed. Returns what
    became of the torch index: "" (used), else that it did not answer."""
    note = _pip(build, ["download", "-d", str(dest)], log, f"pip download (torch {build.flavor})", **kw)
    unmet = unmet_requirements(wheel_metadata(dest), build.requirements())
    if unmet:
        raise SandboxError(f"the wheels pip downloaded for the image miss requirements: {'; '.join(unmet)}")
    return note


def resolve_report(build: TorchBuild, log: Log = print, **kw) -> dict:
    """pip's installation report of the resolved set (`pip install --dry-run --report`):
    each wheel's name, version, requirements and address, nothing installed."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        _pip(build, ["install", "--dry-run", "--ignore-installed", "--target", str(Path(tmp) / "t"), "--report",
                     str(report)], log, f"pip resolve (torch {build.flavor})", **kw)
        return json.loads(report.read_text())


Dists = dict[str, tuple[str, list[str]]]  # canonical name -> (version, Requires-Dist lines)


def wheel_metadata(folder: Path) -> Dists:
    """The name, version and requirements of every wheel in `folder`, from its METADATA."""
    dists: Dists = {}
    for whl in sorted(folder.glob("*.whl")):
        with zipfile.ZipFile(whl) as z:
            name = next(n for n in z.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
            meta = Parser().parsestr(z.read(name).decode("utf-8", "replace"), headersonly=True)
        dists[canonicalize_name(meta["Name"])] = (meta["Version"], meta.get_all("Requires-Dist") or [])
    return dists


def report_metadata(report: dict) -> Dists:
    """The same, from pip's installation report."""
    return {canonicalize_name(i["metadata"]["name"]): (i["metadata"]["version"], i["metadata"].get("requires_dist", []))
            for i in report["install"]}


def unmet_requirements(dists: Dists, top: list[str]) -> list[str]:
    """Each requirement of `top` and of every wheel of `dists` (with the extras asked of it,
    markers evaluated for the image) that no wheel of the set meets; [] when the set is closed."""
    env = image_environment()
    unmet: list[str] = []
    queue = [(Requirement(r), "the image") for r in top]
    seen: set[tuple[str, str]] = set()
    while queue:
        req, by = queue.pop()
        name = canonicalize_name(req.name)
        if name not in dists or not req.specifier.contains(dists[name][0], prereleases=True):
            unmet.append(f"{req} (required by {by}): " + (f"{name} {dists[name][0]} in the set" if name in dists
                                                            else "not in the set"))
            continue
        for extra in {"", *req.extras}:
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            for line in dists[name][1]:
                try:
                    sub = Requirement(line)
                except InvalidRequirement:
                    unmet.append(f"{name}: unreadable requirement {line!r}")
                    continue
                if sub.marker is None or sub.marker.evaluate({**env, "extra": extra}):
                    if extra and sub.marker is None:
                        continue  # an unconditional requirement: already taken with extra ""
                    queue.append((sub, f"{name} {dists[name][0]}"))
    return sorted(set(unmet))
