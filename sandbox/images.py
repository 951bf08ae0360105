"""Sandbox images, built offline.

The base image needs no registry: a Debian root file system made by `debootstrap`
from Debian's packages, plus Python wheels that the host's pip resolves and downloads
(sandbox/wheels.py: torch's CPU or CUDA build, closed under its requirements) and
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
from .wheels import TorchBuild, download, install, torch_build, wheel_metadata

BUILDER_VERSION = "2"
SUITE = "bookworm"
#: Debian packages of the root file system. gcc and the Python headers let agents build
#: C extensions, a legitimate way to speed code up.
DEBIAN_PACKAGES = ["python3", "python3-dev", "gcc", "libc6-dev", "procps", "ca-certificates"]
USERS = [("agent", 1000), ("runner", 1001)]

Log = Callable[[str], None]


def cache_dir() -> Path:
    return Path(os.environ.get("RDBENCH_CACHE", Path.home() / ".cache" / "rdbench"))


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def base_image_tag(build: TorchBuild | None = None) -> str:
    """The base image's tag: a hash of its inputs, the torch build (RDBENCH_TORCH) and its index included."""
    spec = [BUILDER_VERSION, SUITE, DEBIAN_PACKAGES, (build or torch_build()).key(), USERS, platform.machine()]
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


def download_wheels(build: TorchBuild, log: Log) -> Path:
    """Wheels for the image's Python, resolved and downloaded by the host's pip (the sandbox has no network)."""
    dest = cache_dir() / "wheels" / _hash(build.key())
    if (dest / ".complete").is_file():
        return dest
    cache_dir().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir()))
    try:
        note = download(build, tmp, log)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / ".complete").write_text(note or "torch from its index")  # read by _labels
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(dest)
    return dest


def build_base_image(client: docker.DockerClient, log: Log = print, force: bool = False,
                     build: TorchBuild | None = None) -> str:
    """Build the base image offline if it is missing; return its tag. `build`: the torch build
    (default: RDBENCH_TORCH / RDBENCH_TORCH_INDEX, else by whether this host has a GPU)."""
    build = build or torch_build()
    tag = base_image_tag(build)
    if not force and image_exists(client, tag):
        return tag
    for tool in ("debootstrap", "tar"):
        if shutil.which(tool) is None:
            raise SandboxError(f"building the base image needs `{tool}` (apt-get install -y {tool})")
    cache_dir().mkdir(parents=True, exist_ok=True)
    log(f"building {tag} (debootstrap {SUITE} + torch {build.flavor} wheels; a few minutes, once)")
    wheels = download_wheels(build, log)
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache_dir()))
    rootfs = work / "rootfs"
    try:
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(DEBIAN_PACKAGES)}", SUITE, str(rootfs),
              debian_mirror()], log, "debootstrap")
        install(wheels, rootfs / "opt/site", log)
        _add_users(rootfs)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(rootfs / junk, ignore_errors=True)
        _import(client, rootfs, tag, log, _labels(build, wheels))
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


def _labels(build: TorchBuild, wheels: Path) -> dict[str, str]:
    """What the image holds, in its labels: the torch build, its index, every wheel's version."""
    dists = wheel_metadata(wheels)
    index = build.index or "(pip's index)"
    note = (wheels / ".complete").read_text()
    if note.startswith("the torch index"):  # torch came from pip's configuration (a local wheel folder)
        index += " (did not answer; torch from pip's configuration)"
    return {"rdbench.torch": build.flavor, "rdbench.torch-index": index,
            "rdbench.wheels": " ".join(f"{name}=={version}" for name, (version, _) in sorted(dists.items()))}


def _import(client: docker.DockerClient, rootfs: Path, tag: str, log: Log, labels: dict[str, str]) -> None:
    t = time.monotonic()
    repo, _, version = tag.partition(":")
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
    changes = [
        "ENV PYTHONPATH=/opt/site",
        "ENV PATH=/opt/site/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        "WORKDIR /workspace",
        *(f"LABEL {key}={json.dumps(value)}" for key, value in labels.items()),
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


# --- installed agents: the CLIs layered on a task's image -----------------------------------

#: The CLIs of the installed agents, pinned: agent -> (npm package, version). Their native
#: binaries come in per-platform optional dependencies; no Node.js is needed to run them.
AGENT_CLIS = {"claude-code": ("@anthropic-ai/claude-code", "2.1.332"), "codex": ("@openai/codex", "0.171.0")}
AGENTS_LAYOUT = "1"
AGENTS_DOCKERFILE = """ARG RDBENCH_BASE
FROM ${RDBENCH_BASE}
COPY agents/ /opt/agents/
ENV PATH=/opt/agents/bin:$PATH
"""


def agents_image_tag(base_tag: str) -> str:
    """The tag of `base_tag` (the base image or a task's own) with the agents' CLIs on top."""
    return f"rdbench-agents:{_hash([AGENTS_LAYOUT, base_tag, AGENT_CLIS, platform.machine()])}"


def npm_clis(log: Log) -> Path:
    """The CLIs' npm packages (this platform's binaries included), installed once by the host's
    npm into the cache (the sandbox has no network). Returns the folder holding node_modules/."""
    dest = cache_dir() / "npm" / _hash([AGENT_CLIS, platform.machine()])
    if (dest / ".complete").is_file():
        return dest
    if shutil.which("npm") is None:
        raise SandboxError("building the agents image needs npm (apt-get install -y nodejs npm)")
    cache_dir().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="npm-", dir=cache_dir()))
    specs = [f"{pkg}@{version}" for pkg, version in AGENT_CLIS.values()]
    # --ignore-scripts: the packages' install scripts only link the binary we copy ourselves
    _run(["npm", "install", "--prefix", str(tmp), "--no-audit", "--no-fund", "--ignore-scripts", "--no-save",
          *specs], log, "npm install " + " ".join(specs))
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(dest)
    (dest / ".complete").write_text("\n".join(specs) + "\n")
    return dest


def _agents_context(npm: Path, work: Path) -> Path:
    """A build context: agents/{claude, codex/, bin/} (files hard-linked from the npm cache)."""
    mods = npm / "node_modules"
    claude = sorted(p for p in mods.glob("@anthropic-ai/claude-code-linux-*/claude") if "musl" not in str(p))
    codex = sorted(p.parent.parent for p in mods.glob("@openai/codex-linux-*/vendor/*/bin/codex"))
    if not claude or not codex:
        raise SandboxError(f"{mods}: no native claude or codex binary for this platform ({platform.machine()})")
    root = work / "agents"
    (root / "bin").mkdir(parents=True)
    shutil.copytree(codex[0], root / "codex", copy_function=_link_or_copy, symlinks=True)
    _link_or_copy(claude[0], root / "claude")
    for name, target in (("claude", "../claude"), ("codex", "../codex/bin/codex"), ("rg", "../codex/codex-path/rg")):
        (root / "bin" / name).symlink_to(target)
    (work / "Dockerfile").write_text(AGENTS_DOCKERFILE)
    return work


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def build_agents_image(client: docker.DockerClient, base_tag: str, log: Log = print, force: bool = False) -> str:
    """Build `base_tag` plus the installed agents' CLIs (offline: npm runs on the host)."""
    tag = agents_image_tag(base_tag)
    if not force and image_exists(client, tag):
        return tag
    npm = npm_clis(log)
    work = Path(tempfile.mkdtemp(prefix="agents-", dir=cache_dir()))
    try:
        t = time.monotonic()
        log(f"building {tag} ({', '.join(f'{a} {v}' for a, (_, v) in AGENT_CLIS.items())} on {base_tag})")
        client.images.build(path=str(_agents_context(npm, work)), tag=tag, buildargs={"RDBENCH_BASE": base_tag},
                            rm=True, forcerm=True)
        log(f"docker build {tag}: {time.monotonic() - t:.0f} s")
    except (docker.errors.BuildError, docker.errors.APIError) as e:
        raise SandboxError(f"building {tag} failed: {e}") from e
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tag


def agents_image(client: docker.DockerClient, base_tag: str) -> str:
    """The agents image over `base_tag`, or a SandboxError saying how to build it."""
    tag = agents_image_tag(base_tag)
    if not image_exists(client, tag):
        raise SandboxError(f"image {tag} (the installed agents' CLIs over {base_tag}) not found; build it with "
                           "`rdbench images build --agents [TASK...]` (needs npm and the npm registry, once)")
    return tag
