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
        top = os.environ.get("RDBENCH_SANDBOX_ROOT", "/")
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
            if not _inside(os.path.realpath(link), real_dst):
                os.unlink(link)
    if isolated():
        subprocess.run(["chown", "-R", "-h", "%d:%d" % (uid, uid), "--", parent], check=True)
    os.chmod(parent, 0o700)
    return dst


def unstage(path):
    _remove(os.path.dirname(path))


def _remove(path):
    """Remove a tree whatever it holds (deep chains, odd modes); never follows a link."""
    subprocess.run(["rm", "-rf", "--one-file-system", "--", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


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
    """Live processes of `uid` (zombies, dead but not yet reaped by their parent, do not count)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat("/proc/" + entry).st_uid == uid:
                    with open("/proc/%s/stat" % entry, "rb") as f:
                        if f.read().rsplit(b")", 1)[1].split()[0] != b"Z":
                            pids.append(int(entry))
            except (OSError, IndexError):
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


def kill_user(uid):
    """Kill every process of `uid`, including daemons that left the process group."""
    if not isolated():
        return
    for _ in range(50):
        if not _procs_of(uid):
            return
        _as_user(uid, lambda: os.kill(-1, signal.SIGKILL))  # as that user, kill(-1) reaches exactly its processes
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
    for kind, ident, cuid in sysv_objects((uid,)):
        def rm(kind=kind, ident=ident):
            libc = ctypes.CDLL(None, use_errno=True)
            fn = getattr(libc, _SYSV[kind][1])
            if kind == "sem":
                fn(ident, 0, 0)  # IPC_RMID = 0
            else:
                fn(ident, 0, None)
        _as_user(cuid if cuid != 0 else uid, rm)


def scrub(uid):
    """Remove everything `uid` left in the scratch folders (no cache survives between runs)."""
    if not isolated():
        return
    _kit_dir()
    for top in _state["scratch"]:
        try:
            entries = list(os.scandir(top))
        except OSError:
            continue
        for entry in entries:
            try:
                owner = entry.stat(follow_symlinks=False).st_uid
            except OSError:
                continue
            # in a container the scratch folders belong to the runs (the kit keeps nothing
            # there): everything not root's goes; on a host, only the run's user's files
            if owner == uid or (owner != 0 and not LOCAL):
                if entry.is_dir(follow_symlinks=False):
                    _remove(entry.path)
                else:
                    try:
                        os.unlink(entry.path)
                    except OSError:
                        _remove(entry.path)
    remove_ipc(uid)


def _bwrap(cmd, cwd):
    """`cmd` wrapped in bubblewrap on the local backend, when it works here: no network, no
    shared IPC, a read-only view of the host but for the run's folder, private scratch."""
    if not LOCAL or "bwrap" not in _state:
        return cmd
    args = [_state["bwrap"], "--die-with-parent", "--unshare-net", "--unshare-ipc", "--unshare-pid",
            "--ro-bind", "/", "/", "--dev-bind", "/dev", "/dev", "--proc", "/proc"]
    for d in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock"):
        if os.path.isdir(d):
            args += ["--tmpfs", d]
    # the kit's folder (world-readable runner scripts) may lie below /tmp: back, read-only
    args += ["--ro-bind", _state["dir"], _state["dir"]]
    return args + ["--bind", cwd, cwd, "--chdir", cwd, "--"] + list(cmd)


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


def run(cmd, cwd, uid, timeout, env=None, max_output=1 << 16):
    """Run a program under test as `uid` and time it, wall clock, start to exit.

    Its stdout/stderr go to root-only files, never to the verifier's stdout. When it has
    exited (or timed out), every process of `uid` is killed, and what it left in the
    scratch folders and its IPC objects are removed.
    """
    _kit_dir()
    clipped = False
    if uid == CANDIDATE_UID:
        timeout, clipped = TIME_SHARE.candidate_timeout(timeout)
    if "bwrap_checked" not in _state:
        _state["bwrap_checked"] = True
        _find_bwrap()
    full_env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
    full_env.update({"HOME": cwd, "TMPDIR": cwd})
    full_env.update(env or {})
    logs = tempfile.mkdtemp(prefix="logs-", dir=_state["dir"])
    out_path, err_path = os.path.join(logs, "out"), os.path.join(logs, "err")
    kwargs = {}
    if isolated():
        kwargs = {"user": uid, "group": uid, "extra_groups": []}
    timed_out = False
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(_bwrap(cmd, cwd), cwd=cwd, env=full_env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, start_new_session=True, **kwargs)
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
    kill_user(uid)
    if not isolated():  # at least the process group
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
    scrub(uid)

    def tail(path):
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - max_output))
            return f.read().decode("utf-8", "replace")

    result = RunResult(rc, wall, timed_out, tail(out_path), tail(err_path))
    if timed_out and clipped:
        result.note = "its share of the verifier's time limit"
    _remove(logs)
    return result


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
