"""rdbench verify kit, root side: running a program as a run's user (`run`), and what comes
after: the Killer, killing the user's processes, removing its files and IPC objects (`scrub`),
bubblewrap on the local backend, output capture, and the host check (`check_host`).

Part of the verify kit (verify_kit.py re-exports every name here: task verifiers use `kit.X`);
runs as root in the verifier sandbox, copied there beside verify_kit.py. Stdlib only.
"""

import ctypes
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import contract
from root_params import (
    CANDIDATE_UID, BASELINE_UID, RUN_UIDS, PASS_ENV, LOCAL, _state, log, deadline, isolated)
from root_staging import (
    _kit_dir, _inside, _remove, give)


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

