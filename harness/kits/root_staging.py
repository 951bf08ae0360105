"""rdbench verify kit, root side: the kit's own folders, the census and lockdown of the file
system, staged copies of the programs under test, and their inputs and outputs (no link
followed).

Part of the verify kit (verify_kit.py re-exports every name here: task verifiers use `kit.X`);
runs as root in the verifier sandbox, copied there beside verify_kit.py. Stdlib only.
"""

import os
import stat
import subprocess
import tempfile
import time

from root_params import (
    RUN_UIDS, SHARED_WRITABLE, _PSEUDO_FS, LOCAL, _state, log, isolated, SubmissionError)


# ---- the kit's own folders, and the census ----


def _kit_dir():
    """Root-owned, mode 0711 (enter, not list), outside every scratch folder: staged copies
    live here, each user can enter only its own, and the verifier's own temporary files
    (tempfile's folders are 0700, its files 0600), never in a folder a run can write."""
    if "dir" not in _state:
        # (a container's kit root is on the sandbox's size-limited disk)
        top = os.environ.get("RDBENCH_KIT_ROOT") or os.environ.get("RDBENCH_SANDBOX_ROOT", "/")
        d = tempfile.mkdtemp(prefix=".rdbench-kit-", dir=top if os.access(top, os.W_OK) else None)
        os.chmod(d, 0o711)
        _state["dir"] = d
        tempfile.tempdir = d
        lockdown()
    return _state["dir"]


def work_root():
    """A root-only folder for the verifier's private files (hidden data, outputs)."""
    return tempfile.mkdtemp(prefix="work-", dir=_kit_dir())


def _mounts():
    """(mount point, fs type, read-write?) of every mount, from /proc/self/mounts."""
    out = []
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 4:
                    point = parts[1].replace("\\040", " ")
                    out.append((point, parts[2], "rw" in parts[3].split(",")))
    except OSError:
        pass
    return out


def census():
    """Every file and folder (not links or devices) that a run's user owns or may write, on
    every writable file system but the kit's own folder: [(type, uid, mode, path)]."""
    tests = ["-perm", "-0002"]
    for uid in RUN_UIDS:
        tests += ["-o", "-uid", str(uid), "-o", "(", "-gid", str(uid), "-perm", "-0020", ")"]
    found = []
    for point, fstype, rw in _mounts():
        if not rw or fstype in _PSEUDO_FS or point.startswith(("/proc", "/sys")):
            continue
        cmd = ["find", point, "-xdev", "-path", _state["dir"], "-prune", "-o", "(", "-type", "d", "-o", "-type", "f",
               "-o", "-type", "p", "-o", "-type", "s", ")", "(", *tests, ")", "-printf", "%y %U %m %p\\0"]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        for rec in r.stdout.split(b"\0"):
            if rec:
                kind, uid, mode, path = rec.decode("utf-8", "surrogateescape").split(" ", 3)
                found.append((kind, int(uid), int(mode, 8), path))
    return found


def lockdown():
    """Before any run (in a container only: the local backend shares the host's files): hand
    every file and folder the runs' users own or may write to root, read-only for them,
    except the world-writable folders, which become sticky scratch folders emptied after
    each run. Also the image's homes of uid 1000/1001 and /workspace: none is writable state."""
    scratch = set(p for p in SHARED_WRITABLE if os.path.isdir(p))
    if isolated() and not LOCAL:
        t0, found = time.perf_counter(), census()
        for kind, uid, mode, path in found:
            if kind == "d" and mode & 0o002 and uid not in RUN_UIDS:
                os.chmod(path, (mode & 0o7777) | 0o1000)  # sticky: no one renames another's files
                scratch.add(path)
            else:
                os.lchown(path, 0, 0)
                os.chmod(path, mode & 0o7755)
        log("lockdown: %d places the runs' users could write; scratch folders %s (%.2f s)"
            % (len(found), ", ".join(sorted(scratch)), time.perf_counter() - t0))
    _state["scratch"] = sorted(scratch)


# ---- one run: staging, running, cleaning up ----

def _inside(path, root):
    return path == root or path.startswith(root.rstrip("/") + "/")


def stage(src, uid):
    """A private copy of folder `src`, owned by `uid`, mode 0700: the run's working folder.
    Links that resolve outside the copy and special files (devices, pipes, sockets) are
    dropped: nothing in it can lead the root verifier elsewhere."""
    parent = tempfile.mkdtemp(prefix="run-", dir=_kit_dir())
    dst = os.path.join(parent, "w")
    # cp, not shutil.copytree: no recursion limit on deep trees; links copied as links
    subprocess.run(["cp", "-a", "--no-preserve=ownership", "--", src, dst], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    if not os.path.isdir(dst):
        os.mkdir(dst)
    subprocess.run(["find", dst, "(", "-type", "b", "-o", "-type", "c", "-o", "-type", "p", "-o", "-type", "s", ")",
                    "-delete"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    links = subprocess.run(["find", dst, "-type", "l", "-print0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    real_dst = os.path.realpath(dst)
    for raw in links.stdout.split(b"\0"):
        if raw:
            link = os.fsdecode(raw)
            try:
                inside = _inside(os.path.realpath(link), real_dst)
            except RecursionError:  # realpath recurses once per link: a chain of 1,500 links
                inside = False
            if not inside:
                os.unlink(link)
    if isolated():
        subprocess.run(["chown", "-R", "-h", "%d:%d" % (uid, uid), "--", parent], check=True)
    os.chmod(parent, 0o700)
    return dst


def unstage(path):
    _remove(os.path.dirname(path))


def _remove(*paths):
    """Remove trees whatever they hold (deep chains, odd modes: rm walks them without
    recursion); never follows a link. One rm per 500 paths, not one per path."""
    for i in range(0, len(paths), 500):
        subprocess.run(["rm", "-rf", "--one-file-system", "--"] + list(paths[i:i + 500]), stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


def give(path, uid):
    """Hand a file or folder the verifier made (an input) to the user who will read it."""
    if isolated():
        os.chown(path, uid, uid, follow_symlinks=False)


def write_input(path, data, uid):
    """Write an input file for a run into its staged folder, as root, without following a
    link: whatever the submission left at `path` is removed first; owned by `uid`, 0600."""
    if isinstance(data, str):
        data = data.encode()
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            _remove(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if isolated():
            os.fchown(fd, uid, uid)
    finally:
        os.close(fd)


def open_output(root, rel, max_bytes):
    """Open a file a run wrote, below `root` (its staged folder), for reading, as root without
    following any link on the way: every component is opened with O_NOFOLLOW, the file must
    be regular and at most `max_bytes`. Returns a binary file object; raises SubmissionError."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise SubmissionError("bad output path %r" % rel)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | (0 if last else os.O_DIRECTORY)
            try:
                nfd = os.open(part, flags, dir_fd=fd)
            except OSError as e:
                raise SubmissionError("no readable %s (%s)" % (rel, "a link" if e.errno == 40 else e.strerror))
            os.close(fd)
            fd = nfd
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SubmissionError("%s is not a regular file" % rel)
        if st.st_size > max_bytes:
            raise SubmissionError("%s is too large: %d bytes (at most %d)" % (rel, st.st_size, max_bytes))
        f, fd = os.fdopen(fd, "rb"), None
        return f
    finally:
        if fd is not None:
            os.close(fd)


def read_output(root, rel, max_bytes=64 << 20):
    """The bytes of a file a run wrote (see `open_output`)."""
    with open_output(root, rel, max_bytes) as f:
        return f.read(max_bytes + 1)

