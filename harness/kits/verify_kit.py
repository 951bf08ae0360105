"""rdbench verify kit: the timing and isolation discipline every task verifier uses.

Stdlib only, Python 3.8+. The harness copies this file into every verifier sandbox as
/verifier/verify_kit.py, next to the task's own verifier and contract.py (the paths, names,
result tag and parameters file the host and the kit share). Task verifiers import it and
never re-implement any of it. What task.toml says (repeats, time limit, plausibility bound,
the task's own [verifier.params]) comes from the parameters file: `params()`, `repeats()`,
`param(NAME)`; no default is restated here.

Every timed pair gets inputs of its own (`timed_pairs`): drawn from the secret seed, seen by
no earlier run, so what a run leaves where no census looks (the page cache of a read-only
file, CPU or device state) carries no answer to a later run.

The threat model: the candidate is adversarial and has read this file. So
- it runs as another user (uid 1000; the baseline as uid 1001) from a private copy of its
  folder, and cannot read the verifier, the baseline's outputs, or the verifier's
  environment (where the secret seed and the result token live);
- nothing writable survives a run. Before the first run the kit takes a census of the
  file system (`lockdown`): every file or folder those users own or may write is handed to
  root and made read-only, except the shared scratch folders (/tmp, /var/tmp, /dev/shm,
  /run/lock, /dev/mqueue, any other world-writable folder), which are made sticky. After
  every run, every process of the run's user is killed, everything it left in the scratch
  folders is removed, its System V IPC objects (shared memory, semaphores, message queues)
  are removed, and its private copy is deleted. So a run can leave nothing for the next one;
- root never follows a link the submission or a run made: a staged copy keeps only links
  that resolve inside it and no special files; inputs are written with O_NOFOLLOW into a
  name that was unlinked first; outputs are read through `read_output` (O_NOFOLLOW at every
  path component, regular files only, size-capped);
- the verdict goes out on the verifier's own stdout, tagged with a token only the
  harness and the verifier know; the candidate's output goes to files.

On the local backend (no container) the census would change the host, so it is not done:
as root the kit still separates users (uids that no account of the host uses), kills their
processes and removes their files and IPC objects after each run; with bubblewrap
(`bwrap`) installed every run also gets no network and private /tmp, /var/tmp and /dev/shm.
Not as root, none of the user separation is possible: `isolated()` is False and the verdict
says so.
"""

import ctypes
import hashlib
import os
import pickle
import random
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

import contract

#: The candidate's and the baseline's users (the image's uids 1000 and 1001; the local
#: backend picks uids that no account of its host uses).
CANDIDATE_UID = int(os.environ.get("RDBENCH_CANDIDATE_UID", 1000))
BASELINE_UID = int(os.environ.get("RDBENCH_BASELINE_UID", 1001))
RUN_UIDS = (CANDIDATE_UID, BASELINE_UID)
#: Places any user can write; emptied of what a run left after each run.
SHARED_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/dev/mqueue")
#: Environment passed to programs under test: nothing of the verifier's own.
PASS_ENV = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "TZ", "CUDA_VISIBLE_DEVICES", "TRITON_INTERPRET",
            "CUDA_DEVICE_ORDER")
#: Filesystems the census never walks (no files a run could keep state in).
_PSEUDO_FS = {"proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "securityfs", "debugfs", "tracefs",
              "bpf", "pstore", "configfs", "fusectl", "hugetlbfs", "binfmt_misc", "autofs", "nsfs"}

_STARTED = time.time()
LOCAL = os.environ.get("RDBENCH_LOCAL_SANDBOX") == "1"
#: what the kit learns once per verification (its folders, the parameters, bubblewrap)
_state = {}


def log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def params():
    """The verification's parameters (contract.PARAMS: task.toml's [verifier] and [scoring],
    written by the host beside this file; read once)."""
    if "params" not in _state:
        path = os.environ.get(contract.ENV_PARAMS) or os.path.join(
            os.path.dirname(os.path.abspath(__file__)), contract.PARAMS_FILE)
        with open(path) as f:
            _state["params"] = contract.read_params(f.read())
    return _state["params"]


def param(name):
    """A value the task declares in task.toml's [verifier.params] (KeyError if it does not)."""
    return params().task_params[name]


def __getattr__(name):
    # kit.SUBMISSION, kit.BASELINE: where the candidate and the pristine workspace are, as
    # this verifier sees them (read from the parameters when first asked for)
    if name in ("SUBMISSION", "BASELINE"):
        return getattr(params(), name.lower())
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def deadline():
    """When the verifier must be done (its time limit, with a margin): candidate runs are cut
    to what is left of it, so a slow candidate fails as timed out instead of making the whole
    verifier time out (which would be an infrastructure error, never scored)."""
    return _STARTED + 0.9 * params().timeout_s - 5


def isolated():
    """True when programs under test run as other users than the verifier (root)."""
    return os.geteuid() == 0


def isolation():
    """How the runs were kept apart, in words (recorded in every verdict)."""
    if not isolated():
        return "none: the verifier is not root, so runs share its user"
    if not LOCAL:
        return "container: own users, read-only but for emptied scratch folders, IPC removed after each run"
    if _state.get("bwrap"):
        return "local + bubblewrap: own users, no network, private /tmp, /var/tmp, /dev/shm per run"
    return "local: own users, their processes, files and IPC removed after each run; network and host files shared"


def repeats():
    """Timed runs per program: the task's [verifier] repeats, or a --repeats override."""
    return params().repeats


def secret_seed():
    """The per-verification secret seed, for hidden inputs. Never passed to programs under test."""
    seed = os.environ.get(contract.ENV_SEED)
    if seed is None:
        seed = _state.setdefault("seed", str(random.SystemRandom().getrandbits(63)))
    return int(seed)


class SubmissionError(Exception):
    """Something the submission or its run made that the verifier refuses to touch."""


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


class RunResult:
    def __init__(self, returncode, wall_s, timed_out, stdout, stderr):
        self.note = ""
        self.returncode = returncode
        self.wall_s = wall_s
        self.timed_out = timed_out
        self.stdout = stdout
        self.stderr = stderr

    @property
    def ok(self):
        return self.returncode == 0 and not self.timed_out

    def describe(self):
        if self.timed_out:
            return "timed out after %.1f s%s" % (self.wall_s, " (%s)" % self.note if self.note else "")
        return "exit %d: %s" % (self.returncode, self.stderr[-500:].strip())


def _procs_of(uid):
    """Live processes whose real, effective, saved or file-system uid is `uid` (from
    /proc/PID/status: a process that made itself non-dumpable has a root-owned /proc/PID, but
    its status still names its uids). Zombies, dead but not yet reaped, do not count."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/status" % entry, "rb") as f:
                    fields = dict(line.split(b":", 1) for line in f.read().splitlines() if b":" in line)
                if fields[b"State"].split()[0] != b"Z" and uid in map(int, fields[b"Uid"].split()):
                    pids.append(int(entry))
            except (OSError, KeyError, IndexError, ValueError):
                pass
    return pids


def _as_user(uid, fn):
    """Run fn() in a forked child that has become `uid`; wait for it."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            fn()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


class Killer:
    """A root process forked before a run (while the sandbox still has process slots) that, told
    to, becomes the run's user and sends SIGKILL to every other process of that user at once:
    kill(-1) as that user, which the kernel delivers under its task-list lock, so no process of
    the run forks past it (a fork with a fatal signal pending fails). A run whose processes keep
    retaking every slot that frees outruns any kill pid by pid; this one it cannot."""

    def __init__(self, uid):
        self.pid = None
        r, w = os.pipe()
        try:
            pid = os.fork()
        except OSError:  # no slot: kill_user's pid-by-pid rounds remain
            os.close(r)
            os.close(w)
            return
        if pid == 0:
            try:
                os.close(w)
                os.read(r, 1)  # the word, or the kit gone (then too)
                os.setgroups([])
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
                for _ in range(3):
                    try:
                        os.kill(-1, signal.SIGKILL)  # every process of uid in this pid namespace but this one
                    except OSError:
                        pass
            finally:
                os._exit(0)
        os.close(r)
        self.pid, self._word = pid, w

    def fire(self):
        if self.pid is None:
            return
        try:
            os.write(self._word, b"k")
        except OSError:
            pass
        os.close(self._word)
        os.waitpid(self.pid, 0)
        self.pid = None


def kill_user(uid, killer=None):
    """Kill every process of `uid`, including daemons that left the process group: first at
    once through `killer` (a Killer forked before the run), then, as root, pid by pid: no fork,
    so a run that took every process slot of the sandbox cannot stop it (and frees them all).
    Each round stops every process found before killing it, so none forks again meanwhile;
    what was forked during a round is found by the next."""
    if not isolated():
        return
    if killer is not None:
        killer.fire()
    for _ in range(500):
        pids = _procs_of(uid)
        if not pids:
            return
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
        time.sleep(0.01)
    raise RuntimeError("processes of uid %d survive SIGKILL" % uid)


#: /proc/sysvipc file -> (id column, libc remover)
_SYSV = {"shm": ("shmid", "shmctl"), "msg": ("msqid", "msgctl"), "sem": ("semid", "semctl")}


def sysv_objects(uids):
    """[(kind, id, creator uid)] of the System V IPC objects that `uids` created or own."""
    found = []
    for kind, (idcol, _) in _SYSV.items():
        try:
            with open("/proc/sysvipc/" + kind) as f:
                header = f.readline().split()
                for line in f:
                    row = dict(zip(header, line.split()))
                    if int(row["uid"]) in uids or int(row["cuid"]) in uids:
                        found.append((kind, int(row[idcol]), int(row["cuid"])))
        except (OSError, KeyError, ValueError):
            pass
    return found


def remove_ipc(uid):
    """Remove the System V IPC objects `uid` created or owns (as their creator: root here has
    no CAP_SYS_ADMIN) and its POSIX message queues."""
    by_creator = {}  # one fork per creator, not per object (a run can make tens of thousands)
    for kind, ident, cuid in sysv_objects((uid,)):
        by_creator.setdefault(cuid if cuid != 0 else uid, []).append((kind, ident))

    def rm(objects):
        libc = ctypes.CDLL(None, use_errno=True)
        for kind, ident in objects:
            fn = getattr(libc, _SYSV[kind][1])
            if kind == "sem":
                fn(ident, 0, 0)  # IPC_RMID = 0
            else:
                fn(ident, 0, None)
    for creator, objects in by_creator.items():
        _as_user(creator, lambda objects=objects: rm(objects))


def scrub(uid):
    """Remove everything `uid` left in the scratch folders (no cache survives between runs)."""
    if not isolated():
        return
    _kit_dir()
    folders = []
    for top in _state["scratch"]:
        try:
            entries = os.scandir(top)
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    owner = entry.stat(follow_symlinks=False).st_uid
                except OSError:
                    continue
                # in a container the scratch folders belong to the runs (the kit keeps nothing
                # there): everything not root's goes; on a host, only the run's user's files
                if owner == uid or (owner != 0 and not LOCAL):
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            folders.append(entry.path)  # (removed below: rm, batched)
                        else:
                            os.unlink(entry.path)
                    except OSError:
                        folders.append(entry.path)
    _remove(*folders)
    remove_ipc(uid)


def _bwrap(cmd, cwd, env):
    """`cmd` wrapped in bubblewrap on the local backend, when it works here: no network, no
    shared IPC, a read-only view of the host but for the run's folder, private scratch, and a
    private /etc/passwd and /etc/group that name the run's user."""
    if not LOCAL or "bwrap" not in _state:
        return cmd
    args = [_state["bwrap"], "--die-with-parent", "--unshare-net", "--unshare-ipc", "--unshare-pid",
            "--ro-bind", "/", "/", "--dev-bind", "/dev", "/dev", "--proc", "/proc"]
    scratch = [d for d in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock") if os.path.isdir(d)]
    for d in scratch:
        args += ["--tmpfs", d]
    # what a run needs from below those: the kit's folder (world-readable runner scripts), the
    # Python and its prefixes, the PYTHONPATH entries, the program itself; back, read-only
    for path in _needed_paths(cmd, env, scratch):
        args += ["--ro-bind", path, path]
    for name, path in sorted(_user_files().items()):
        args += ["--ro-bind", path, "/etc/" + name]
    # writable: the run's folder; for a staged copy, all its private parent (the kernel kit's
    # results and home lie beside the copy), as without bubblewrap
    rw = os.path.dirname(cwd) if os.path.dirname(os.path.dirname(cwd)) == _state["dir"] else cwd
    return args + ["--bind", rw, rw, "--chdir", cwd, "--"] + list(cmd)


def _needed_paths(cmd, env, scratch):
    """The folders of `_bwrap`'s read-only binds that lie below a scratch folder, parents first."""
    want = [_state["dir"], sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable)]
    want += [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if os.path.isabs(p)]
    if cmd and os.path.isabs(cmd[0]):
        want.append(os.path.dirname(cmd[0]))
    out = set()
    for p in want:
        for q in (os.path.abspath(p), os.path.realpath(p)):
            if os.path.exists(q) and any(_inside(q, d) and q != d for d in scratch):
                out.add(q)
    return sorted(out, key=lambda q: (q.count("/"), q))


def run_user(uid):
    """The name of a run's user: its account's, else (the local backend's uids) one of rdbench's."""
    try:
        import pwd
        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return {CANDIDATE_UID: "rdbench-candidate", BASELINE_UID: "rdbench-baseline"}.get(uid, "rdbench-%d" % uid)


def _user_files():
    """{"passwd": path, "group": path}: the host's files plus an entry for each run's user, for
    runs under bubblewrap (getpass, `~`, pwd.getpwuid and torch.compile need one)."""
    if "user_files" not in _state:
        out = {}
        for name in ("passwd", "group"):
            try:
                with open("/etc/" + name) as f:
                    text = f.read()
            except OSError:
                text = ""
            text += "" if not text or text.endswith("\n") else "\n"
            for uid in RUN_UIDS:
                text += ("%s:x:%d:%d:rdbench run:/tmp:/bin/sh\n" % (run_user(uid), uid, uid) if name == "passwd"
                         else "%s:x:%d:\n" % (run_user(uid), uid))
            path = os.path.join(_state["dir"], name)
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o644)
            out[name] = path
        _state["user_files"] = out
    return _state["user_files"]


def _find_bwrap():
    """Use bubblewrap on the local backend if it is installed and works for a run's user."""
    exe = shutil.which("bwrap")
    if not (LOCAL and isolated() and exe):
        return
    r = subprocess.run([exe, "--die-with-parent", "--unshare-net", "--ro-bind", "/", "/", "true"],
                       user=CANDIDATE_UID, group=CANDIDATE_UID, extra_groups=[],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if r.returncode == 0:
        _state["bwrap"] = exe
    else:
        log("bubblewrap does not work here (%s): runs share the host's network and /tmp"
            % r.stderr.decode(errors="replace").strip()[:200])


#: The most processes (and threads) a run's user may have at once on the local backend: its
#: uids are its own there, so RLIMIT_NPROC counts the run's alone (in a container the uids
#: are shared with every container of the host, so the sandbox's pids limit bounds a run, and
#: `kill_user` needs no process slot to end it).
LOCAL_RUN_PROCS = 512

#: A root helper, started before the run (so it needs no process slot the run could take):
#: reads the run's stdout and stderr from pipes to their end and keeps only the last CAP
#: bytes of each, then writes them to the two files: a flood of output costs the run's time,
#: never the host's disk.
_CAPTURE = r"""
import os, select, sys
cap, fds, paths = int(sys.argv[1]), [int(sys.argv[2]), int(sys.argv[3])], sys.argv[4:6]
kept = {fd: bytearray() for fd in fds}
total = dict.fromkeys(fds, 0)
poll = select.poll()
for fd in fds:
    poll.register(fd, select.POLLIN)
os.write(1, b"ready")
left = set(fds)
while left:
    for fd, _ in poll.poll():
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            poll.unregister(fd)
            left.discard(fd)
            continue
        total[fd] += len(chunk)
        buf = kept[fd]
        buf += chunk
        if len(buf) > 2 * cap:
            del buf[:len(buf) - cap]
for fd, path in zip(fds, paths):
    with open(path, "wb") as f:
        if total[fd] > cap:
            f.write(b"[... %d bytes cut ...]\n" % (total[fd] - cap))
        f.write(kept[fd][-cap:])
"""


def _capture(logs, cap):
    """Start the output helper: returns (its process, stdout write end, stderr write end,
    stdout file, stderr file)."""
    (r_out, w_out), (r_err, w_err) = os.pipe(), os.pipe()
    paths = [os.path.join(logs, "out"), os.path.join(logs, "err")]
    helper = subprocess.Popen([sys.executable, "-I", "-c", _CAPTURE, str(cap), str(r_out), str(r_err)] + paths,
                              pass_fds=(r_out, r_err), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    os.close(r_out)
    os.close(r_err)
    ready = helper.stdout.read(5)  # started (its start-up would otherwise overlap the timed run)
    helper.stdout.close()
    if ready != b"ready":
        raise RuntimeError("the output helper did not start (exit %s)" % helper.wait())
    return helper, w_out, w_err, paths


def _limit_procs():
    """In the run's child, after it became the run's user: its own process limit."""
    resource.setrlimit(resource.RLIMIT_NPROC, (LOCAL_RUN_PROCS, LOCAL_RUN_PROCS))


def run(cmd, cwd, uid, timeout, env=None, max_output=1 << 16):
    """Run a program under test as `uid` and time it, wall clock, start to exit.

    Its stdout/stderr go to a root helper that keeps the last `max_output` bytes of each,
    never to the verifier's stdout. When it has exited (or timed out), every process of `uid`
    is killed, and what it left in the scratch folders and its IPC objects are removed.
    """
    _kit_dir()
    clipped = False
    if uid == CANDIDATE_UID:
        timeout, clipped = TIME_SHARE.candidate_timeout(timeout)
    if "bwrap_checked" not in _state:
        _state["bwrap_checked"] = True
        _find_bwrap()
    if "host_checked" not in _state:  # before the first run: can this host run any?
        _state["host_checked"] = True
        check_host(cmd, cwd)
    full_env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
    full_env.update({"HOME": cwd, "TMPDIR": cwd})
    if isolated():  # getpass.getuser() (torch.compile's caches) asks these first
        full_env.update({"USER": run_user(uid), "LOGNAME": run_user(uid)})
    full_env.update(env or {})
    logs = tempfile.mkdtemp(prefix="logs-", dir=_state["dir"])
    kwargs = {}
    if isolated():
        kwargs = {"user": uid, "group": uid, "extra_groups": []}
        if LOCAL:
            kwargs["preexec_fn"] = _limit_procs
    timed_out = False
    killer = Killer(uid) if isolated() else None  # forked while the sandbox has slots
    helper, out, err, (out_path, err_path) = _capture(logs, max_output)
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(_bwrap(cmd, cwd, full_env), cwd=cwd, env=full_env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, start_new_session=True, **kwargs)
    finally:
        os.close(out)
        os.close(err)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        rc = proc.wait()
    wall = time.perf_counter() - start
    kill_user(uid, killer)
    if not isolated():  # at least the process group
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
    try:  # the pipes are closed once the run's processes are gone
        helper.wait(timeout=30 if isolated() else 2)
    except subprocess.TimeoutExpired:  # not root: a daemon of the run holds them
        helper.kill()
        helper.wait()
    scrub(uid)

    def tail(path):
        try:
            with open(path, "rb") as f:  # the last max_output bytes, after a line saying how many were cut
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    result = RunResult(rc, wall, timed_out, tail(out_path), tail(err_path))
    if timed_out and clipped:
        result.note = "its share of the verifier's time limit"
    _remove(logs)
    return result


#: The tag of the line saying that this host cannot run programs as the runs' users at all
#: (contract.HOST_FAULT_TAG): an infrastructure error, never a verdict.
HOST_FAULT_TAG = contract.HOST_FAULT_TAG
#: What `check_host` runs as a run's user: a Python importing the modules named on its command
#: line, saying whether torch sees a GPU.
_CHECK = ("import importlib, json, sys\n"
          "mods = [importlib.import_module(m) for m in sys.argv[1:]]\n"
          "cuda = sys.modules['torch'].cuda.is_available() if 'torch' in sys.modules else None\n"
          "print(json.dumps({'cuda': cuda}))\n")


def check_host(cmd, cwd):
    """Before the first run, so before anything of the submission ran: the first run's Python
    (`cmd[0]`: the verifier's sys.executable, or `python3` found on the runs' PATH; not one in
    the run's folder), run the way every run runs (as each run's user, under bubblewrap where
    used), starts; on the local backend it also imports the numpy, torch and triton the
    verifier imported, and sees the GPU the verifier sees. If it cannot, no program (not even
    the reference) could run: the kit prints HOST_FAULT_TAG with the reason and exits, and the
    harness reports an infrastructure error. A first program that is no such Python: the
    check runs /bin/sh instead."""
    exe = cmd[0] if cmd else ""
    python = os.path.basename(exe).startswith("python") and (os.sep not in exe or (
        os.path.isabs(exe) and not _inside(os.path.realpath(exe), os.path.realpath(cwd))))
    # the imports on the local backend only: in a container root's imports read the same files
    mods = [m for m in ("numpy", "torch", "triton") if m in sys.modules] if python and LOCAL else []
    gpu = "torch" in mods and sys.modules["torch"].cuda.is_available()
    t0 = time.perf_counter()
    for uid in RUN_UIDS:
        home = tempfile.mkdtemp(prefix="check-", dir=_state["dir"])
        give(home, uid)
        check = [exe, "-s", "-c", _CHECK] + (mods if uid == CANDIDATE_UID else []) if python else ["/bin/sh", "-c", ":"]
        try:
            r = run(check, home, uid, 300)
        finally:
            _remove(home)
        why = None if r.ok else "%s cannot run here as uid %d, the runs' user (%s)" % (check[0], uid, r.describe())
        if why is None and gpu and uid == CANDIDATE_UID:
            try:
                seen = json.loads(r.stdout.strip().splitlines()[-1])["cuda"]
            except (ValueError, IndexError, KeyError, TypeError):
                seen = None
            if seen is not True:
                why = "torch sees a GPU as root but not as uid %d, the runs' user: check /dev/nvidia*" % uid
        if why:
            token = os.environ.get(contract.ENV_TOKEN, "-")
            sys.stdout.write("%s %s %s\n" % (HOST_FAULT_TAG, token, json.dumps(why)))
            sys.stdout.flush()
            sys.exit(4)
    log("host check: %s runs as the runs' users%s (%.2f s)" % (
        exe if python else "/bin/sh", ", importing " + ", ".join(mods) if mods else "", time.perf_counter() - t0))


def median(xs):
    s = sorted(xs)
    n = len(s)
    if n == 0:
        raise ValueError("median of nothing")
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def bootstrap_ratio_ci(num, den, n=2000, alpha=0.05, seed=0):
    """Percentile bootstrap CI of median(num) / median(den)."""
    rng = random.Random(seed)
    ratios = []
    for _ in range(n):
        a = [rng.choice(num) for _ in num]
        b = [rng.choice(den) for _ in den]
        ratios.append(median(a) / median(b))
    ratios.sort()
    return [ratios[int(alpha / 2 * n)], ratios[min(n - 1, int((1 - alpha / 2) * n))]]


def aa_noise(times):
    """A/A noise: |1 - ratio| of the medians of the two interleaved halves of one program's
    timings. 0.05 means two measurements of the same code differ by about 5 %."""
    if len(times) < 2:
        return None
    return abs(1.0 - median(times[0::2]) / median(times[1::2]))


class TimeShare(object):
    """What a candidate run may take of the verifier's time limit: what is left of it, less
    what the baseline runs still to come need (1.5x the slowest baseline run so far, each;
    half of what is left while no baseline run has been timed). The timing loop says how many
    baseline runs are to come and how long each took; `run` asks before each candidate run."""

    def __init__(self):
        self.baseline_left = None
        self.baseline_max = None

    def plan(self, baseline_runs):
        self.baseline_left, self.baseline_max = baseline_runs, None

    def baseline_ran(self, secs):
        if self.baseline_left is not None:
            self.baseline_left -= 1
            self.baseline_max = max(self.baseline_max or 0.0, secs)

    def candidate_timeout(self, timeout):
        """(the run's time limit, cut to its share?)"""
        left = deadline() - time.time()
        reserve = 0.5 * left if self.baseline_max is None else self.baseline_left * 1.5 * self.baseline_max
        share = left - reserve
        return (max(share, 1.0), True) if share < timeout else (timeout, False)


TIME_SHARE = TimeShare()


def pair_rng(i):
    """The random source of timed pair `i`'s inputs (see `timed_pairs`): seeded from the secret
    seed and `i`; a verifier that times nothing draws its hidden inputs from pair_rng(0)."""
    return random.Random("%d/pair/%d" % (secret_seed(), i))


def _digest(inputs):
    try:
        blob = pickle.dumps(inputs, protocol=4)
    except Exception:
        blob = repr(inputs).encode()
    return hashlib.sha256(blob).hexdigest()


def timed_pairs(draw, baseline, candidate, warmup=1, judge=None, baseline_first=False, log=log):
    """Time the baseline and the candidate in randomised, interleaved pairs, each pair on
    inputs of its own: the task's [verifier] repeats timed pairs, after `warmup` untimed ones.

    draw(rng) -> the inputs of one pair (and whatever the verifier needs to check them), made
    from `rng`, a random.Random seeded from the secret seed and the pair's number. Every pair,
    warm-ups included, gets its own draw, so no run sees inputs an earlier run saw: whatever
    state a run manages to leave behind (the page cache, CPU or device state) carries no
    answer to a later one. A draw equal to an earlier one stops the verifier (a broken
    `draw`). Draws must cost the same (size, difficulty): the A/A noise figure compares
    baseline runs on different draws. With task.toml's `[verifier] fresh_inputs = false`
    the first draw serves every pair (and the verdict says so).

    baseline(inputs), candidate(inputs) -> (seconds, ok, note): one run, checked. Stops
    early, with ok False, at the candidate's first wrong run.
    judge(inputs) -> (ok, note), optional: after both runs of a pair, the checks that need
    both (the candidate against this pair's baseline result).
    `baseline_first` fixes the order of the first pair only.
    Returns (baseline_s, candidate_s, ok, note)."""
    p, seed = params(), secret_seed()
    _state["fresh_inputs"] = bool(p.fresh_inputs)
    drawn = {}

    def inputs(i):
        if i and not p.fresh_inputs:
            return drawn["first"]
        x = draw(pair_rng(i))
        digest = _digest(x)
        if digest in drawn:
            raise RuntimeError("draw() gave pair %d the inputs of pair %d: they must be fresh for each pair"
                               % (i, drawn[digest]))
        drawn[digest] = i
        drawn.setdefault("first", x)
        return x

    return _pairs(inputs, baseline, candidate, p.repeats, warmup, random.Random("%d/order" % seed), log,
                  baseline_first, judge)


def interleaved(baseline, candidate, repeats, warmup=1, seed=0, log=None, baseline_first=False):
    """Like `timed_pairs`, for a verifier that makes its own inputs: `baseline` and `candidate`
    are callables of no argument; `repeats` timed pairs."""
    return _pairs(lambda i: None, lambda _: baseline(), lambda _: candidate(), repeats, warmup,
                  random.Random(seed), log, baseline_first, None)


def _pairs(inputs, baseline, candidate, repeats, warmup, rng, log, baseline_first, judge):
    b_times, c_times = [], []
    total = warmup + repeats
    TIME_SHARE.plan(total)
    for i in range(total):
        x = inputs(i)
        order = [("baseline", baseline), ("candidate", candidate)]
        rng.shuffle(order)
        if i == 0 and baseline_first:
            order.sort(key=lambda o: o[0] != "baseline")
        secs = {}
        for name, fn in order:
            # "baseline run 2/3": the live progress display shows the latest such line
            what = ("%s warm-up %d/%d" % (name, i + 1, warmup) if i < warmup
                    else "%s run %d/%d" % (name, i - warmup + 1, repeats))
            if log:
                log(what)
            secs[name], ok, note = fn(x)
            if name == "baseline":
                TIME_SHARE.baseline_ran(secs[name])
            if log:
                log("%s: %.3f s %s" % (what, secs[name], "ok" if ok else note))
            if not ok:
                if name == "candidate":
                    return b_times, c_times, False, note
                raise RuntimeError("the baseline failed, so the verifier is broken: %s" % note)
        if judge is not None:
            ok, note = judge(x)
            if not ok:
                return b_times, c_times, False, note
        if i >= warmup:
            b_times.append(secs["baseline"])
            c_times.append(secs["candidate"])
    return b_times, c_times, True, ""


def speedup_verdict(baseline_s, candidate_s, ok, note="", plausible_max=None, details=None):
    """The verifier's result object for a speedup task. Values above `plausible_max` (None:
    task.toml's [scoring] plausible_max) are flagged for review."""
    result = {
        "correct": bool(ok), "metric": "speedup", "value": None, "ci": None,
        "baseline_s": baseline_s, "candidate_s": candidate_s,
        "aa_noise": aa_noise(baseline_s),
        "details": dict(details or {}, isolated=isolated(), isolation=isolation()),
    }
    if "fresh_inputs" in _state:
        result["details"]["fresh_inputs"] = _state["fresh_inputs"]
    if ok and baseline_s and candidate_s:
        value = median(baseline_s) / median(candidate_s)
        result["value"] = value
        result["ci"] = bootstrap_ratio_ci(baseline_s, candidate_s)
        if plausible_max is None:
            plausible_max = params().plausible_max
        if plausible_max is not None and value > plausible_max:
            result["flagged"] = "speedup %.1fx is beyond this task's plausibility bound %.1fx: review it" % (
                value, plausible_max)
    if not ok:
        result["details"]["failure"] = note
    return result


class BadWeights(Exception):
    """A submitted weights file that is missing or not exactly what the task documents."""


def load_npz(path, shapes, dtypes, max_bytes, label="weights file"):
    """The named arrays of an .npz weights file, checked as a root verifier must before it
    trusts them: a regular file reached without following a link, at most `max_bytes`, a
    zip archive of exactly the names of `shapes`, each array's header (dtype, shape) checked
    against what is expected *before* any of its data is read or allocated, no pickles, the
    data read up to its expected size only (a compression bomb or a lying header is refused,
    not allocated), all finite. Raises BadWeights saying what is wrong. (numpy is imported
    here: the kit itself is stdlib-only.)"""
    import zipfile

    import numpy as np
    from numpy.lib import format as npformat

    want = " or ".join(np.dtype(d).name for d in dtypes)
    try:
        f = open_output(os.path.dirname(path) or ".", os.path.basename(path), max_bytes)
    except SubmissionError as e:
        if "no readable" in str(e) and "a link" not in str(e):
            raise BadWeights("no %s written" % label)
        if "regular file" in str(e) or "a link" in str(e):
            raise BadWeights("the %s is not a regular file (a link or a folder)" % label)
        raise BadWeights("the %s: %s" % (label, e))
    try:
        with f, zipfile.ZipFile(f) as z:
            members = {}
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    raise BadWeights("the %s holds %r, not a .npy array" % (label, info.filename[:80]))
                members[info.filename[:-4]] = info
            if set(members) != set(shapes):
                if len(members) == 0:
                    raise BadWeights("the %s is not an npz archive of named arrays" % label)
                raise BadWeights("weights have the wrong names: missing %s, extra %s" % (
                    sorted(set(shapes) - set(members))[:5], sorted(set(members) - set(shapes))[:5]))
            arrays = {}
            for name, shape in shapes.items():
                with z.open(members[name]) as m:
                    version = npformat.read_magic(m)
                    if version == (1, 0):
                        hshape, fortran, dtype = npformat.read_array_header_1_0(m)
                    elif version in ((2, 0), (3, 0)):
                        hshape, fortran, dtype = npformat.read_array_header_2_0(m)
                    else:
                        raise BadWeights("%s: unknown .npy version %s" % (name, version))
                    if dtype.hasobject:
                        raise BadWeights("%s: an object array (pickled): refused, allow_pickle=False" % name)
                    if dtype not in dtypes or tuple(hshape) != tuple(shape):
                        raise BadWeights("%s: want %s %s, got %s %s" % (name, want, tuple(shape), dtype, tuple(hshape)))
                    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                    raw = m.read(n)
                    if len(raw) != n:
                        raise BadWeights("%s: the array holds %d bytes of the %d its header promises" % (name, len(raw), n))
                    a = np.frombuffer(raw, dtype=dtype)
                    a = a.reshape(shape[::-1]).T if fortran else a.reshape(shape)
                if not np.all(np.isfinite(a)):
                    raise BadWeights("%s: not finite" % name)
                arrays[name] = np.array(a)
            return arrays
    except BadWeights:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, RuntimeError, NotImplementedError) as e:
        raise BadWeights("unreadable weights: %s" % e)


def emit(result):
    """Send the verdict to the harness on the verifier's stdout, tagged with the run's token."""
    sys.stdout.write(contract.result_line(os.environ.get(contract.ENV_TOKEN, "-"), result))
    sys.stdout.flush()
