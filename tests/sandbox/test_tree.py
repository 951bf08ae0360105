"""The host's walks over a submission (sandbox.tree: copy-in's tar, copy-out's untar, the
trial's patch) on trees an agent could make: a chain of folders deeper than Python's
recursion limit, paths longer than the kernel takes whole, more entries than a project has."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from harness.trial import make_patch
from sandbox import SandboxTooLarge
from sandbox.tree import MAX_DEPTH, TreeTooLarge, files, tar_folder, untar_stripped, walk


@pytest.fixture(autouse=True)
def remove_deep_trees(tmp_path):
    """pytest's own clean-up of old tmp folders recurses: the chains go with rm."""
    yield
    subprocess.run(["rm", "-rf", str(tmp_path)], check=False)


def chain(top: Path, depth: int, name: str = "d") -> None:
    """`depth` nested folders `name` below `top` (relative steps, so no path is too long to
    make), with a file at the bottom."""
    here = os.getcwd()
    top.mkdir(parents=True, exist_ok=True)
    try:
        os.chdir(top)
        for _ in range(depth):
            os.mkdir(name)
            os.chdir(name)
        Path("bottom.txt").write_text("deep")
    finally:
        os.chdir(here)


def depth_of(top: Path, name: str = "d") -> int:
    n = 0
    while (top / name).is_dir():
        top, n = top / name, n + 1
    return n


def test_a_chain_deeper_than_the_recursion_limit_is_copied_to_the_bound(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "solve.py").write_text("print(1)\n")
    chain(src / "chain", 1500)
    data = tar_folder(src, "workspace", owner=0, mode=0o700)  # tarfile.add recursed: RecursionError
    out = tmp_path / "out"
    untar_stripped([data], out, 1 << 30)
    assert (out / "sub" / "solve.py").read_text() == "print(1)\n"
    assert depth_of(out / "chain") == MAX_DEPTH - 1  # chain itself is level 1
    assert not list(out.rglob("bottom.txt"))


def test_copy_out_leaves_out_what_lies_deeper_than_the_bound(tmp_path):
    """A stream from a sandbox (here: a tar made without bounds) with a 1,500-deep chain: the
    extraction keeps the top of it."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        name = "workspace"
        for _ in range(1500):
            name += "/d"
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        info = tarfile.TarInfo(name + "/bottom.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"deep"))
    out = tmp_path / "out"
    untar_stripped([buf.getvalue()], out, 1 << 30)
    assert depth_of(out) == MAX_DEPTH
    assert not list(out.rglob("bottom.txt"))


def test_more_entries_than_the_bound_is_too_large(tmp_path, monkeypatch):
    src = tmp_path / "many"
    src.mkdir()
    for i in range(50):
        (src / f"f{i}").write_text("")
    with pytest.raises(TreeTooLarge):
        list(walk(src, max_entries=20))
    data = tar_folder(src, "workspace", owner=None, mode=None)
    monkeypatch.setattr("sandbox.tree.MAX_ENTRIES", 20)
    with pytest.raises(SandboxTooLarge):
        untar_stripped([data], tmp_path / "out", 1 << 30)


def test_paths_longer_than_the_kernel_takes_are_left_out(tmp_path):
    """20 folders of 250 characters: 5,000 characters, past PATH_MAX; the walk keeps what
    is within 3,000."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "keep.txt").write_text("x")
    chain(src, 20, name="n" * 250)
    kept = files(src)
    assert "keep.txt" in kept and not any(k.endswith("bottom.txt") for k in kept)
    out = tmp_path / "out"
    untar_stripped([tar_folder(src, "w", None, None)], out, 1 << 30)
    assert (out / "keep.txt").read_text() == "x"


def test_the_patch_of_a_workspace_with_a_deep_chain(tmp_path):
    base, new = tmp_path / "base", tmp_path / "new"
    base.mkdir()
    (base / "solve.py").write_text("a\n")
    new.mkdir()
    (new / "solve.py").write_text("b\n")
    chain(new / "chain", 1500)  # rglob recursed: RecursionError, an infra trial
    (new / "big.bin").write_bytes(b"\0" * (2 << 20))
    patch = make_patch(base, new)
    assert "-a\n+b\n" in patch and "bottom.txt" not in patch
    assert "Large files a/big.bin and b/big.bin differ" in patch
