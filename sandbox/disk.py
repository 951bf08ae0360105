"""A size-limited disk per sandbox: a sparse ext4 image file, loop-mounted on the host, whose
folders are bind-mounted over every place the agent can write (/workspace, /tmp, /var/tmp;
the rest of the container's root filesystem is read-only). Writing past the size fails
inside the sandbox with ENOSPC ("No space left on device"); the host's disk grows by at most
the size (the image is sparse); the harness still reads /workspace (copy-out).

Why not Docker's own `--storage-opt size`: overlay2 supports it only on xfs with project
quotas, and most Docker hosts run ext4. A size-limited tmpfs would count against the
sandbox's memory. Loop mounts need root on the host: without it, `Disk.create` raises
DiskUnavailable and the sandbox runs without a disk limit (with a warning).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import pid_alive

#: the folders of an agent sandbox's disk, and where they appear in the sandbox
MOUNTS = {"workspace": "/workspace", "tmp": "/tmp", "vartmp": "/var/tmp"}
#: a verifier sandbox's: every place a timed run can write, i.e. its scratch folders and the
#: verify kit's own folder (its staged copies, outputs and logs: RDBENCH_KIT_ROOT). Its root
#: filesystem stays writable, for root only (the kit hands everything else to root).
VERIFIER_MOUNTS = {"kit": "/rdbench-kit", "tmp": "/tmp", "vartmp": "/var/tmp", "runlock": "/run/lock"}
#: folders of a disk that are their owner's alone; the others are sticky, world-writable
PRIVATE = ("workspace", "kit")


class DiskUnavailable(Exception):
    """This host cannot make loop-mounted disks (not root, no mkfs.ext4, no loop devices)."""


def size_bytes(size: str) -> int:
    """Docker-style "512m", "6g", "1.5g", "4096" -> bytes."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)", size.strip().lower())
    if not m:
        raise ValueError(f"{size!r} is not a size like 512m or 6g")
    return int(float(m.group(1)) * 1024 ** " kmg".index(m.group(2) or " "))


def _run(*argv: str) -> None:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise DiskUnavailable(f"{' '.join(argv[:2])} failed: {(r.stderr or r.stdout).strip()[-300:]}")


class Disk:
    """One sandbox's disk. `folder(name)` is a host path to bind-mount; `close()` unmounts and
    deletes it (idempotent, never raises)."""

    def __init__(self, root: Path, mounts: dict[str, str] = MOUNTS):
        self.root = root
        #: folder name -> where it appears in the sandbox
        self.mounts = mounts
        self.image = root / "disk.img"
        self.mnt = root / "mnt"
        self.mounted = False

    @classmethod
    def create(cls, size: str, owner: int, parent: Path | None = None, mounts: dict[str, str] = MOUNTS) -> "Disk":
        if os.geteuid() != 0:
            raise DiskUnavailable("disk limits need root on the host (loop mounts)")
        if not shutil.which("mkfs.ext4"):
            raise DiskUnavailable("disk limits need mkfs.ext4 (e2fsprogs)")
        if parent is not None:
            parent.mkdir(parents=True, exist_ok=True)
        disk = cls(Path(tempfile.mkdtemp(prefix=f"rdbench-disk-{os.getpid()}-", dir=parent)), mounts)
        try:
            with open(disk.image, "wb") as f:
                f.truncate(size_bytes(size))  # sparse: the host disk grows only as the agent writes
            # no reserved blocks (the agent gets the whole size); lazy init keeps mkfs instant
            _run("mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1", str(disk.image))
            disk.mnt.mkdir()
            _run("mount", "-o", "loop,nosuid,nodev", str(disk.image), str(disk.mnt))
            disk.mounted = True
            (disk.mnt / "lost+found").rmdir()
            for name in mounts:
                d = disk.mnt / name
                d.mkdir()
                os.chown(d, owner, owner)
                d.chmod(0o755 if name in PRIVATE else 0o1777)
        except BaseException:
            disk.close()
            raise
        return disk

    def folder(self, name: str) -> str:
        return str(self.mnt / name)

    def binds(self) -> dict[str, dict[str, str]]:
        """Docker SDK `volumes=`: host folder -> sandbox path."""
        return {self.folder(name): {"bind": path, "mode": "rw"} for name, path in self.mounts.items()}

    def close(self) -> None:
        if self.mounted:
            r = subprocess.run(["umount", str(self.mnt)], capture_output=True, timeout=120)
            if r.returncode != 0:  # still busy (a copy-out being torn down): detach it
                subprocess.run(["umount", "-l", str(self.mnt)], capture_output=True, timeout=120)
            self.mounted = False
        shutil.rmtree(self.root, ignore_errors=True)


def remove_stale(parent: Path, own: bool = False) -> list[str]:
    """Unmount and delete the disks under `parent` whose rdbench process is gone (killed
    before it could close its sandboxes), and with `own` this process's too (it is about to
    exit, its containers removed). Returns their folder names."""
    removed = []
    for d in parent.glob("rdbench-disk-*-*") if parent.is_dir() else []:
        pid = d.name.split("-")[2]
        if not pid.isdigit():
            continue  # not one of ours: leave it
        if not (own and pid == str(os.getpid())) and pid_alive(pid):
            continue
        disk = Disk(d)
        disk.mounted = os.path.ismount(disk.mnt)
        disk.close()
        removed.append(d.name)
    return removed
