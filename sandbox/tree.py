"""Bounded walks over folders an agent or a submission made: iterative (a chain of folders
thousands deep is no RecursionError), never following a link, and bounded in depth and in
entries. Every host walk over a submission (copy-in, copy-out, the trial's patch) goes
through here, so a folder can be as deep or as large as the agent likes without crashing
rdbench: what lies deeper than `MAX_DEPTH` is left out; more than `MAX_ENTRIES` entries
is `TreeTooLarge` (the agent's fault, never the sandbox's).
"""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from . import SandboxTooLarge

#: Folders deeper than this below the walked folder are left out (a real project is
#: rarely 30 deep; Python's own recursive tools (shutil) stay far from their limit).
MAX_DEPTH = 128
#: The most entries (files, folders, links) one walk accepts.
MAX_ENTRIES = 200_000
#: The longest relative path kept (Linux refuses paths over 4,096 bytes).
MAX_PATH = 3000


class TreeTooLarge(SandboxTooLarge):
    """A folder holds more than `MAX_ENTRIES` entries (what was made in it, not a fault of the sandbox)."""


def walk(root: Path, max_depth: int = MAX_DEPTH, max_entries: int = MAX_ENTRIES) -> Iterator[tuple[str, os.DirEntry]]:
    """(path relative to `root`, its DirEntry) of everything below `root`, parents before
    their children, links not followed; entries deeper than `max_depth` (a top-level entry
    is depth 1) or with a relative path longer than `MAX_PATH` are left out. Unreadable
    folders are skipped. Raises TreeTooLarge."""
    stack = [("", str(root), 1)]
    seen = 0
    while stack:
        rel, path, level = stack.pop()
        entries = []
        try:
            with os.scandir(path) as it:
                for entry in it:
                    seen += 1
                    if seen > max_entries:
                        raise TreeTooLarge(f"{root} holds more than {max_entries} entries")
                    entries.append(entry)
        except OSError:
            continue
        for entry in sorted(entries, key=lambda e: e.name):
            sub = f"{rel}/{entry.name}" if rel else entry.name
            if len(sub) > MAX_PATH:
                continue
            yield sub, entry
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir and level < max_depth:
                stack.append((sub, entry.path, level + 1))


def files(root: Path, max_depth: int = MAX_DEPTH, max_entries: int = MAX_ENTRIES) -> list[str]:
    """The relative paths of the regular files below `root` (see `walk`)."""
    out = []
    for rel, entry in walk(root, max_depth, max_entries):
        try:
            if entry.is_file(follow_symlinks=False):
                out.append(rel)
        except OSError:
            pass
    return out


def kept(name: str) -> bool:
    """Whether a relative path (an archive member's) is within the bounds `walk` keeps."""
    return len(name) <= MAX_PATH and len([p for p in PurePosixPath(name).parts if p not in ("", ".")]) <= MAX_DEPTH


def tar_folder(src: Path, arcroot: str, owner: int | None, mode: int | None) -> bytes:
    """A tar of `src` whose entries live under `arcroot`, owned by `owner` if given. The walk
    is `walk`'s (iterative, bounded: a deep chain in a submission is left out, never a
    RecursionError); an entry that cannot be read is left out. Raises TreeTooLarge."""

    def fix(info: tarfile.TarInfo) -> tarfile.TarInfo:
        if owner is not None:
            info.uid = info.gid = owner
            info.uname = info.gname = ""
        if info.name == arcroot and mode is not None:
            info.mode = mode
        return info

    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        tar.add(str(src), arcname=arcroot, filter=fix, recursive=False)
        for rel, entry in walk(src):
            with contextlib.suppress(OSError):  # gone or unreadable meanwhile
                tar.add(entry.path, arcname=f"{arcroot}/{rel}", filter=fix, recursive=False)
    return data.getvalue()


def _data_or_skip(member: tarfile.TarInfo, dest: str):
    """tarfile's "data" filter, but a member it refuses (a link that leaves the folder or
    resolves through more links than Python's realpath can follow, a device, a pipe) is left
    out instead of failing the copy: an agent must not be able to
    turn its trial into an infrastructure error with one symlink."""
    try:
        return tarfile.data_filter(member, dest)
    except (tarfile.FilterError, RecursionError):  # (its realpath recurses once per link: a chain of 1,500)
        return None


def untar_stripped(stream, dst: Path, max_bytes: int) -> None:
    """Extract a tar stream into `dst`, dropping its top folder. Links that leave `dst`,
    device files and absolute paths are left out (tarfile's "data" filter), and so is what
    lies deeper than `kept` keeps; more entries than it keeps is SandboxTooLarge: the stream
    comes from an agent's sandbox."""
    raw = io.BytesIO()
    for chunk in stream:
        raw.write(chunk)
        if raw.tell() > max_bytes:
            raise SandboxTooLarge(f"folder is larger than {max_bytes} bytes; not copied")
    raw.seek(0)
    dst.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=raw) as tar:
        members = []
        for n, m in enumerate(tar, 1):
            if n > MAX_ENTRIES:
                raise SandboxTooLarge(f"folder holds more than {MAX_ENTRIES} entries; not copied")
            parts = PurePosixPath(m.name).parts
            if len(parts) <= 1:
                continue
            m.name = str(PurePosixPath(*parts[1:]))
            if m.islnk():
                m.linkname = str(PurePosixPath(*PurePosixPath(m.linkname).parts[1:]))
            if kept(m.name) and (not m.islnk() or kept(m.linkname)):  # deeper: left out
                members.append(m)
        tar.extractall(dst, members=members, filter=_data_or_skip)
