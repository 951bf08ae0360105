"""Sandbox images, built offline.

The base image needs no registry: a Debian root file system made by `debootstrap`
from Debian's packages, plus Python wheels that the host downloads with pip and
installs into /opt/site, imported with `docker import`. A task may instead bring
`environment/Dockerfile`; it gets the base image's tag as the build argument
RDBENCH_BASE, and an ordinary `FROM python:3.11-slim` works wherever a registry answers.

Every image is tagged by a hash of its inputs, so an unchanged image is never rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

import docker
import docker.errors

from . import SandboxError

BUILDER_VERSION = "1"
SUITE = "bookworm"
#: Debian packages of the root file system. gcc and the Python headers let agents build
#: C extensions, a legitimate way to speed code up.
DEBIAN_PACKAGES = ["python3", "python3-dev", "gcc", "libc6-dev", "procps", "ca-certificates"]
#: Wheels installed into /opt/site. torch pinned to the CPU build that pip finds locally.
WHEELS = [
    "torch==2.13.0", "triton==3.9.0", "numpy==2.4.6",
    "filelock", "typing-extensions", "sympy", "networkx", "jinja2", "fsspec", "mpmath", "markupsafe",
]
PYTHON_VERSION = "3.11"  # Debian bookworm's python3
USERS = [("agent", 1000), ("runner", 1001)]

Log = Callable[[str], None]


def cache_dir() -> Path:
    return Path(os.environ.get("RDBENCH_CACHE", Path.home() / ".cache" / "rdbench"))


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def base_image_tag() -> str:
    spec = [BUILDER_VERSION, SUITE, DEBIAN_PACKAGES, WHEELS, PYTHON_VERSION, USERS, platform.machine()]
    return f"rdbench-base:{_hash(spec)}"


def debian_mirror() -> str:
    """The mirror the host's apt uses (RDBENCH_DEBIAN_MIRROR overrides)."""
    if os.environ.get("RDBENCH_DEBIAN_MIRROR"):
        return os.environ["RDBENCH_DEBIAN_MIRROR"]
    sources = sorted(Path("/etc/apt").glob("sources.list.d/*.sources")) + [Path("/etc/apt/sources.list")]
    for src in sources:
        try:
            lines = src.read_text().splitlines()
        except OSError:
            continue
        for line in lines:  # "URIs: http://.../debian" (deb822) or "deb http://.../debian suite ..."
            m = re.match(r"\s*(?:URIs:|deb)\s+(?:\[[^]]*\]\s+)?(https?://\S+/debian)/?\s*(?:$|\s)", line)
            if m:
                return m.group(1)
    return "http://deb.debian.org/debian"


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def _run(cmd: list[str], log: Log, what: str) -> None:
    t = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SandboxError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd[:6])} ...\n{proc.stderr[-3000:]}")
    log(f"{what}: {time.monotonic() - t:.0f} s")


def download_wheels(log: Log) -> Path:
    """Wheels for the image's Python, downloaded by the host's pip (the sandbox has no network)."""
    dest = cache_dir() / "wheels" / _hash([WHEELS, PYTHON_VERSION, platform.machine()])
    if dest.is_dir() and any(dest.glob("torch-*.whl")):
        return dest
    tmp = Path(tempfile.mkdtemp(dir=cache_dir()))
    _run(["python3", "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", PYTHON_VERSION,
          "-d", str(tmp), *WHEELS], log, "pip download wheels")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(dest)
    return dest


def build_base_image(client: docker.DockerClient, log: Log = print, force: bool = False) -> str:
    """Build the base image offline if it is missing; return its tag."""
    tag = base_image_tag()
    if not force and image_exists(client, tag):
        return tag
    for tool in ("debootstrap", "tar"):
        if shutil.which(tool) is None:
            raise SandboxError(f"building the base image needs `{tool}` (apt-get install -y {tool})")
    cache_dir().mkdir(parents=True, exist_ok=True)
    log(f"building {tag} (debootstrap {SUITE} + wheels; a few minutes, once)")
    wheels = download_wheels(log)
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache_dir()))
    rootfs = work / "rootfs"
    try:
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(DEBIAN_PACKAGES)}", SUITE, str(rootfs),
              debian_mirror()], log, "debootstrap")
        _run(["python3", "-m", "pip", "install", "--no-deps", "--no-index", "--only-binary=:all:", "--python-version",
              PYTHON_VERSION, "--target", str(rootfs / "opt/site"), *map(str, sorted(wheels.glob("*.whl")))],
             log, "pip install wheels")
        _add_users(rootfs)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(rootfs / junk, ignore_errors=True)
        _import(client, rootfs, tag, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tag


def _add_users(rootfs: Path) -> None:
    with open(rootfs / "etc/passwd", "a") as pw, open(rootfs / "etc/group", "a") as gr:
        for name, uid in USERS:
            pw.write(f"{name}:x:{uid}:{uid}::/home/{name}:/bin/bash\n")
            gr.write(f"{name}:x:{uid}:\n")
    for name, uid in USERS:
        home = rootfs / "home" / name
        home.mkdir(parents=True, exist_ok=True)
        os.chown(home, uid, uid)
    (rootfs / "workspace").mkdir(exist_ok=True)
    os.chown(rootfs / "workspace", 1000, 1000)


def _import(client: docker.DockerClient, rootfs: Path, tag: str, log: Log) -> None:
    t = time.monotonic()
    repo, _, version = tag.partition(":")
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
    changes = [
        "ENV PYTHONPATH=/opt/site",
        "ENV PATH=/opt/site/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        "WORKDIR /workspace",
    ]
    try:
        client.api.import_image_from_stream(iter(lambda: tar.stdout.read(1 << 20), b""), repository=repo, tag=version,
                                            changes=changes)
    finally:
        tar.stdout.close()
        tar.wait()
    if tar.returncode != 0 or not image_exists(client, tag):
        raise SandboxError(f"docker import of {tag} failed (tar exit {tar.returncode})")
    log(f"docker import: {time.monotonic() - t:.0f} s")


def dockerfile_image_tag(env_dir: Path, base_tag: str) -> str:
    h = hashlib.sha256(base_tag.encode())
    for p in sorted(env_dir.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(env_dir)).encode() + b"\0" + p.read_bytes())
    name = re.sub(r"[^a-z0-9._-]", "-", env_dir.parent.name.lower())
    return f"rdbench-task-{name}:{h.hexdigest()[:12]}"


def build_dockerfile_image(client: docker.DockerClient, env_dir: Path, base_tag: str, log: Log = print) -> str:
    """Build a task's environment/Dockerfile (cached by the hash of the folder)."""
    tag = dockerfile_image_tag(env_dir, base_tag)
    if image_exists(client, tag):
        return tag
    log(f"building {tag} from {env_dir / 'Dockerfile'}")
    try:
        client.images.build(path=str(env_dir), tag=tag, buildargs={"RDBENCH_BASE": base_tag}, rm=True, forcerm=True)
    except docker.errors.BuildError as e:
        tail = " ".join(str(x.get("stream", x.get("error", ""))).strip() for x in list(e.build_log)[-5:])
        hint = ""
        if "pull" in tail.lower() or "registry" in tail.lower() or "lookup" in tail.lower():
            hint = " (no registry answers here? start the Dockerfile with `ARG RDBENCH_BASE` / `FROM ${RDBENCH_BASE}`)"
        raise SandboxError(f"{env_dir / 'Dockerfile'}: build failed: {e.msg}: {tail}{hint}") from e
    except docker.errors.APIError as e:
        raise SandboxError(f"{env_dir / 'Dockerfile'}: build failed: {e}") from e
    return tag
