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

The kit is split by subject, all of it run by root in the verifier sandbox: root_params.py
(the parameters, the runs' users, the log), root_staging.py (the kit's folders, the census,
staging, inputs and outputs), root_processes.py (running a program as a user, killing and
scrubbing after it, the host check), and this file (timing, statistics, verdicts). This file
re-exports every name of the three, so `import verify_kit as kit; kit.X` reaches all of it.
"""

import hashlib
import os
import pickle
import random
import sys

import contract
from root_params import (  # noqa: F401 - kit.X for every name of the kit
    CANDIDATE_UID, BASELINE_UID, RUN_UIDS, SHARED_WRITABLE, PASS_ENV, _PSEUDO_FS, _STARTED, LOCAL, _state,
    log, params, param, deadline, isolated, isolation, repeats, secret_seed, SubmissionError, __getattr__)
from root_staging import (  # noqa: F401 - kit.X for every name of the kit
    _kit_dir, work_root, _mounts, census, lockdown, _inside, stage, unstage, _remove, give, write_input,
    open_output, read_output)
from root_processes import (  # noqa: F401 - kit.X for every name of the kit
    RunResult, _procs_of, _as_user, Killer, kill_user, _SYSV, sysv_objects, remove_ipc, scrub, _bwrap,
    _needed_paths, run_user, _user_files, _find_bwrap, LOCAL_RUN_PROCS, _CAPTURE, _capture, _limit_procs, run,
    HOST_FAULT_TAG, _CHECK, check_host, TimeShare, TIME_SHARE)


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
