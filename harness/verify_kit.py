"""rdbench verify kit: the timing and isolation discipline every task verifier uses.

Stdlib only, Python 3.8+. The harness copies this file into every verifier sandbox as
/verifier/verify_kit.py, next to the task's own verifier. Task verifiers import it and
never re-implement any of it.

The threat model: the candidate is adversarial. So
- it runs as another user (uid 1000; the baseline as uid 1001) from a private copy of its
  folder, and cannot read the verifier, the baseline's outputs, or the verifier's
  environment (where the secret seed and the result token live);
- after every run, every process of its user is killed (a daemon that outlives the
  program cannot keep working off the clock) and the files it left in shared places are
  removed (no cache between repeats);
- the verdict goes out on the verifier's own stdout, tagged with a token only the
  harness and the verifier know; the candidate's output goes to files.

When the verifier does not run as root (the local backend), none of the user
separation is possible: `isolated()` is False and the verdict says so.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

CANDIDATE_UID = 1000
BASELINE_UID = 1001
#: Places any user can write, scrubbed of the runner's files after each run.
SHARED_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm")
#: Environment passed to programs under test: nothing of the verifier's own.
PASS_ENV = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "TZ", "CUDA_VISIBLE_DEVICES", "TRITON_INTERPRET")

SUBMISSION = os.environ.get("RDBENCH_SUBMISSION", "/submission")
BASELINE = os.environ.get("RDBENCH_BASELINE", "/baseline")


def isolated():
    """True when programs under test run as other users than the verifier (root in a
    container). The local sandbox backend, which does not isolate, turns it off."""
    return os.geteuid() == 0 and os.environ.get("RDBENCH_LOCAL_SANDBOX") != "1"


def repeats(default=5):
    """Timed runs per program: the task's [verifier] repeats, or a --repeats override."""
    return max(1, int(os.environ.get("RDBENCH_REPEATS", default)))


def secret_seed():
    """The per-verification secret seed, for hidden inputs. Never passed to programs under test."""
    seed = os.environ.get("RDBENCH_SECRET_SEED")
    if seed is None:
        seed = str(random.SystemRandom().getrandbits(63))
    return int(seed)


def work_root():
    """A root-only folder for the verifier's private files (hidden data, outputs)."""
    d = tempfile.mkdtemp(prefix="rdbench-verifier-")
    os.chmod(d, 0o700)
    return d


class RunResult:
    def __init__(self, returncode, wall_s, timed_out, stdout, stderr):
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
            return "timed out after %.1f s" % self.wall_s
        return "exit %d: %s" % (self.returncode, self.stderr[-500:].strip())


_stage_base = []


def _stage_root():
    """Root-owned, mode 0711: each user can enter only its own staged folder; never scrubbed."""
    if not _stage_base:
        d = tempfile.mkdtemp(prefix="rdbench-stage-")
        os.chmod(d, 0o711)
        _stage_base.append(d)
    return _stage_base[0]


def stage(src, uid):
    """A private copy of folder `src`, owned by `uid`, mode 0700: the run's working folder."""
    parent = tempfile.mkdtemp(prefix="run-", dir=_stage_root())
    dst = os.path.join(parent, "w")
    shutil.copytree(src, dst, symlinks=True)
    if isolated():
        for root, dirs, files in os.walk(parent):
            for name in dirs + files:
                os.lchown(os.path.join(root, name), uid, uid)
        os.chown(parent, uid, uid)
    os.chmod(parent, 0o700)
    return dst


def unstage(path):
    shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def give(path, uid):
    """Hand a file the verifier wrote (an input) to the user who will read it."""
    if isolated():
        os.chown(path, uid, uid)


def _procs_of(uid):
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat("/proc/" + entry).st_uid == uid:
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def kill_user(uid):
    """Kill every process of `uid`, including daemons that left the process group."""
    if not isolated():
        return
    for _ in range(50):
        if not _procs_of(uid):
            return
        pid = os.fork()
        if pid == 0:  # as that user, kill(-1) reaches exactly that user's processes
            try:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        time.sleep(0.01)
    raise RuntimeError("processes of uid %d survive SIGKILL" % uid)


def scrub(uid):
    """Remove what `uid` left in shared writable places (no cache survives between runs)."""
    if not isolated():
        return
    keep = set(_stage_base)
    for top in SHARED_WRITABLE:
        for root, dirs, files in os.walk(top):
            for name in list(dirs) + files:
                p = os.path.join(root, name)
                if p in keep:
                    dirs.remove(name)
                    continue
                try:
                    if os.lstat(p).st_uid != uid:
                        continue
                    if name in dirs:
                        dirs.remove(name)
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        os.unlink(p)
                except OSError:
                    pass


def run(cmd, cwd, uid, timeout, env=None, max_output=1 << 16):
    """Run a program under test as `uid` and time it, wall clock, start to exit.

    Its stdout/stderr go to root-only files, never to the verifier's stdout. When it has
    exited (or timed out), every process of `uid` is killed and its shared files removed.
    """
    full_env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
    full_env.update({"HOME": cwd, "TMPDIR": cwd})
    full_env.update(env or {})
    logs = tempfile.mkdtemp(prefix="rdbench-logs-")
    os.chmod(logs, 0o700)
    out_path, err_path = os.path.join(logs, "out"), os.path.join(logs, "err")
    kwargs = {}
    if isolated():
        kwargs = {"user": uid, "group": uid, "extra_groups": []}
    timed_out = False
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True, **kwargs)
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
    shutil.rmtree(logs, ignore_errors=True)
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


def interleaved(baseline, candidate, repeats, warmup=1, seed=0, log=None, baseline_first=False):
    """Time two programs in randomised, interleaved order.

    `baseline` and `candidate` are callables returning (seconds, ok, note). Warm-up runs
    count for correctness but not for time. Stops early, with ok False, at the candidate's
    first wrong run. `baseline_first` fixes the order of the first pair only (when the
    baseline's first run sets the candidate's target). Returns (baseline_s, candidate_s, ok, note)."""
    rng = random.Random(seed)
    b_times, c_times = [], []
    for i in range(warmup + repeats):
        order = [("baseline", baseline), ("candidate", candidate)]
        rng.shuffle(order)
        if i == 0 and baseline_first:
            order.sort(key=lambda o: o[0] != "baseline")
        for name, fn in order:
            secs, ok, note = fn()
            if log:
                log("%s %s %d: %.3f s %s" % ("warm-up" if i < warmup else "repeat", name, i, secs, "ok" if ok else note))
            if not ok:
                if name == "candidate":
                    return b_times, c_times, False, note
                raise RuntimeError("the baseline failed, so the verifier is broken: %s" % note)
            if i >= warmup:
                (b_times if name == "baseline" else c_times).append(secs)
    return b_times, c_times, True, ""


def speedup_verdict(baseline_s, candidate_s, ok, note="", plausible_max=None, details=None):
    """The verifier's result object for a speedup task."""
    result = {
        "correct": bool(ok), "metric": "speedup", "value": None, "ci": None,
        "baseline_s": baseline_s, "candidate_s": candidate_s,
        "aa_noise": aa_noise(baseline_s),
        "details": dict(details or {}, isolated=isolated()),
    }
    if ok and baseline_s and candidate_s:
        value = median(baseline_s) / median(candidate_s)
        result["value"] = value
        result["ci"] = bootstrap_ratio_ci(baseline_s, candidate_s)
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
    trusts them: a regular file (a link could point the verifier at any file), at most
    `max_bytes`, no pickles, exactly the names of `shapes`, each a plain ndarray of its
    shape, of one of `dtypes` (numpy dtypes), all finite. Raises BadWeights saying what is
    wrong. (numpy is imported here: the kit itself is stdlib-only.)"""
    import stat
    import zipfile

    import numpy as np

    try:
        st = os.lstat(path)
    except OSError:
        raise BadWeights("no %s written" % label)
    if not stat.S_ISREG(st.st_mode):
        raise BadWeights("the %s is not a regular file (a link or a folder)" % label)
    if st.st_size > max_bytes:
        raise BadWeights("the %s is too large: %d bytes" % (label, st.st_size))
    want = " or ".join(np.dtype(d).name for d in dtypes)
    try:
        with np.load(path, allow_pickle=False) as f:
            if not hasattr(f, "files"):
                raise BadWeights("the %s is a single array, not an npz archive of named arrays" % label)
            if set(f.files) != set(shapes):
                raise BadWeights("weights have the wrong names: missing %s, extra %s" % (
                    sorted(set(shapes) - set(f.files))[:5], sorted(set(f.files) - set(shapes))[:5]))
            arrays = {}
            for name, shape in shapes.items():
                a = f[name]
                if type(a) is not np.ndarray or a.dtype not in dtypes or a.shape != tuple(shape):
                    raise BadWeights("%s: want %s %s, got %s %s" % (name, want, tuple(shape), a.dtype, a.shape))
                if not np.all(np.isfinite(a)):
                    raise BadWeights("%s: not finite" % name)
                arrays[name] = a
            return arrays
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise BadWeights("unreadable weights: %s" % e)


def emit(result):
    """Send the verdict to the harness on the verifier's stdout, tagged with the run's token."""
    token = os.environ.get("RDBENCH_RESULT_TOKEN", "-")
    sys.stdout.write("RDBENCH_RESULT %s %s\n" % (token, json.dumps(result)))
    sys.stdout.flush()


def log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()
