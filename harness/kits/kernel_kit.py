"""rdbench kernel kit: the one verifier of GPU kernel (Triton) tasks, the root half.

The harness copies this file, candidate_runner.py (run as the candidate's user), witness_replay.py
(run as the witness) and kernel_cases.py (what all three share) into every verifier sandbox,
beside verify_kit.py. A
kernel task's verify.py describes its problem (`Problem`: hidden cases, tolerances, a
PyTorch reference) and calls `main(problem)`. The design, the exploits it stops and what it
does not stop: kernel_kit.md.
"""

import itertools
import json
import math
import os
import random
import re
import shutil
import stat
import subprocess
import sys
import tempfile

import torch

import kernel_cases
from kernel_cases import (  # noqa: F401 - the names task verifiers use as kernel_kit.X
    DTYPES, MAX_LAUNCHES, MAX_REPORT_BYTES, RUN_TIMEOUT_S, describe, make_args, make_case, new_out, row_shapes,
    scalar, tensor, twice)

class Problem:
    """A kernel task, as its verify.py describes it.

    module, entry      the candidate's `module.py` and its function `entry(*args, out)`
    reference          path of a file holding `reference(*args) -> Tensor`: plain PyTorch (eager),
                       dtype-generic; the verifier evaluates it in float64 for correctness and
                       times it (eager, and torch.compile'd) as the speedup's denominator
    cases(rng, gpu)    hidden cases: dicts {"args": [{"shape", "dtype", "scale"?, "shift"?} or
                       {"scalar": x}], "out": {"shape", "dtype"}}; seeds are added by the kit
    bench_cases(gpu)   the timed cases (GPU only)
    tolerance          {dtype name: (atol, rtol)}
    plausible_max      speedups against eager beyond this are flagged for review
    """

    def __init__(self, name, module, entry, reference, cases, bench_cases, tolerance, plausible_max):
        self.name, self.module, self.entry = name, module, entry
        self.reference_path = reference
        self.cases, self.bench_cases = cases, bench_cases
        self.tolerance, self.plausible_max = tolerance, plausible_max

    def reference(self):
        scope = {}
        with open(self.reference_path) as f:
            exec(compile(f.read(), self.reference_path, "exec"), scope)
        return scope["reference"]


JIT_RE = re.compile(r"@\s*triton\s*\.\s*(jit|autotune|heuristics)\b|\btriton\s*\.\s*jit\s*\(")
#: Bounds of every walk over a submitted or run-written folder: deeper folders and entries past
#: the count are not looked at (a submission cannot make the verifier recurse or walk forever).
WALK_MAX_DEPTH, WALK_MAX_ENTRIES = 32, 20000


def py_files(root):
    """The .py files under `root` (relative paths, sorted), walked iteratively, links not
    followed, at most WALK_MAX_DEPTH folders deep and WALK_MAX_ENTRIES entries in all."""
    found, stack, seen = [], [("", 0)], 0
    while stack and seen < WALK_MAX_ENTRIES:
        rel, depth = stack.pop()
        try:
            with os.scandir(os.path.join(root, rel)) as it:
                entries = list(itertools.islice(it, WALK_MAX_ENTRIES - seen))
        except OSError:
            continue
        for e in entries:
            seen += 1
            path = os.path.join(rel, e.name)
            if e.is_dir(follow_symlinks=False):
                if depth + 1 < WALK_MAX_DEPTH:
                    stack.append((path, depth + 1))
            elif e.name.endswith(".py") and e.is_file(follow_symlinks=False):
                found.append(path)
    return sorted(found)


def read_text(root, rel, max_bytes=1 << 20):
    """A regular file's text (not a link), at most `max_bytes`; None when it cannot be read."""
    try:
        fd = os.open(os.path.join(root, rel), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return f.read(max_bytes).decode("utf-8", "replace")


def static_check(submission, module):
    """The submission's module exists and the submission holds at least one Triton kernel (a
    quick first check: the text alone proves nothing; the witness's replay does)."""
    if not os.path.isfile(os.path.join(submission, module + ".py")):
        return "no %s.py in the submission" % module
    for rel in py_files(submission):
        if JIT_RE.search(read_text(submission, rel) or ""):
            return None
    return "no @triton.jit kernel anywhere in the submission"


def _read_report(path):
    """A report.json left by a runner or a witness: a regular file (not a link the candidate's
    user planted), at most MAX_REPORT_BYTES, holding a JSON object."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise ValueError("not a regular file")
    if st.st_size > MAX_REPORT_BYTES:
        raise ValueError("larger than %d bytes" % MAX_REPORT_BYTES)
    with open(path) as f:
        report = json.load(f)
    if not isinstance(report, dict):
        raise ValueError("not an object")
    return report


NOT_TRITONS = "the output was not produced by the recorded Triton launches"


class Verifier:
    def __init__(self, problem, kit):
        self.p, self.kit = problem, kit
        self.gpu = torch.cuda.is_available()
        self.device = "cuda" if self.gpu else "cpu"
        self.seed = kit.secret_seed()
        self.rng = random.Random(self.seed)
        # the runner script, world-readable, in the kit's folder (0711; bubblewrap binds it back over /tmp)
        self.public = tempfile.mkdtemp(prefix="rdbench-kernel-runner-", dir=kit._kit_dir())
        os.chmod(self.public, 0o755)
        for script in ("candidate_runner.py", "witness_replay.py", "kernel_cases.py", "kernel_module.py"):
            # the runner, the witness, what they share, and what they share on nn.Module problems
            shutil.copy(os.path.join(os.path.dirname(os.path.abspath(kernel_cases.__file__)), script),
                        os.path.join(self.public, script))
            os.chmod(os.path.join(self.public, script), 0o644)
        self.ref_fn = problem.reference()
        self.details = {"device": torch.cuda.get_device_name() if self.gpu else "cpu (TRITON_INTERPRET=1)"}
        if not self.gpu and os.path.exists("/dev/nvidiactl"):
            self.details["gpu_note"] = ("a GPU was given, but this sandbox's torch %s cannot use it (a CPU build?): "
                                        "correctness only" % torch.__version__)
        self.caches = {role: self.role_cache(kit, uid) for role, uid in (
            ("candidate", kit.CANDIDATE_UID), ("witness", kit.CANDIDATE_UID), ("reference", kit.BASELINE_UID))}
        self.processes = dict.fromkeys(self.caches, 0)

    @staticmethod
    def role_cache(kit, uid):
        """One role's compile caches for this verification: (gate, folder). The gate is a fresh
        root-owned folder (0700) in the kit's root-only folder; the folder in it belongs to the
        role's user. While a process of the role runs, the folder is moved into that run's own
        private folder (the one place bubblewrap lets a run write besides its working folder),
        then moved back behind the gate once every process of the uid is dead (kit.run kills
        them). The candidate and the witness share a uid: the gate is what keeps what the
        candidate's process wrote from the witness, and the reference's user from both."""
        gate = tempfile.mkdtemp(prefix="caches-", dir=kit._kit_dir())
        folder = os.path.join(gate, "c")
        Verifier.new_cache(folder, uid)
        return gate, folder

    @staticmethod
    def new_cache(folder, uid):
        os.mkdir(folder, 0o700)
        for sub in ("triton", "inductor", "cuda", "xdg"):
            os.mkdir(os.path.join(folder, sub), 0o700)
        subprocess.run(["chown", "-R", "%d:%d" % (uid, uid), "--", folder], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @staticmethod
    def cache_env(folder, role):
        """The environment that points every compile cache of a process at its role's folder."""
        return {"TRITON_HOME": folder, "TRITON_CACHE_DIR": os.path.join(folder, "triton"),
                "TORCHINDUCTOR_CACHE_DIR": os.path.join(folder, "inductor"),
                "CUDA_CACHE_PATH": os.path.join(folder, "cuda"), "XDG_CACHE_HOME": os.path.join(folder, "xdg"),
                "RDBENCH_ROLE": role}

    def put_back(self, role, live, uid):
        """The role's cache folder, lent to a run at `live`, back behind its gate: only if it is
        still a real folder of the role's user (a run may have swapped it for a link); else a
        fresh, empty one."""
        folder = self.caches[role][1]
        try:
            st = os.lstat(live)
            if stat.S_ISDIR(st.st_mode) and (st.st_uid == uid or not self.kit.isolated()):
                os.rename(live, folder)
                return
        except OSError:
            pass
        self.new_cache(folder, uid)

    def seeded(self, cases):
        return [dict(c, seed=self.rng.getrandbits(40)) for c in cases]

    # -- running the runner and the witness --

    def launch(self, src, uid, job, extra_files=(), witness=False):
        """Run one runner (or, with witness, one witness) process as `uid` on a fresh private copy
        of `src`, with its role's compile caches; return (ok, note, report, results folder). The
        caller removes the folder (`self.remove`)."""
        role = "witness" if witness else "candidate" if uid == self.kit.CANDIDATE_UID else "reference"
        work = self.kit.stage(src, uid)
        parent = os.path.dirname(work)
        results, home = os.path.join(parent, "results"), os.path.join(parent, "home")
        for d in (results, home):
            os.mkdir(d, 0o700)
            self.kit.give(d, uid)
        for path in extra_files:
            shutil.copy(path, work)
            self.kit.give(os.path.join(work, os.path.basename(path)), uid)
        job = dict(job, device=self.device, results=results, home=home)
        job_path = os.path.join(parent, "job.json")
        with open(job_path, "w") as f:
            json.dump(job, f)
        self.kit.give(job_path, uid)
        live = os.path.join(parent, "caches")  # the role's compile caches, lent to this run
        os.rename(self.caches[role][1], live)
        env = dict(self.cache_env(live, role), HOME=home, PYTHONDONTWRITEBYTECODE="1")
        if not self.gpu:
            env["TRITON_INTERPRET"] = "1"
        if "CUDA_DEVICE_ORDER" in os.environ:
            env["CUDA_DEVICE_ORDER"] = os.environ["CUDA_DEVICE_ORDER"]
        cmd = [sys.executable, "-s", os.path.join(self.public, "witness_replay.py" if witness else "candidate_runner.py")]
        self.processes[role] += 1
        try:
            r = self.kit.run(cmd + [job_path], cwd=work, uid=uid, timeout=RUN_TIMEOUT_S, env=env)
        finally:  # every process of the uid is gone now (kit.run kills them)
            self.put_back(role, live, uid)
        self.kit._remove(work)  # rm -rf: a run may leave folder chains too deep for a Python walk
        if not r.ok:
            return False, r.describe(), None, parent
        try:
            report = _read_report(os.path.join(results, "report.json"))
        except (OSError, ValueError, RecursionError) as e:  # RecursionError: JSON nested too deep
            return False, "the %s left no valid report: %s" % ("witness" if witness else "runner", e), None, parent
        return True, "", report, parent

    def remove(self, parent):
        """Remove a run's folder (results, home: written by the run, so no Python walk)."""
        self.kit._remove(parent)

    def load(self, parent, name, case):
        """An output a runner or witness saved: a plain CPU tensor of the right shape and dtype, or a reason."""
        path = os.path.join(parent, "results", name)
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                return None, "output is not a regular file"
            if st.st_size > 8 * math.prod(case["out"]["shape"]) + (1 << 16):
                return None, "output file too large"
            t = torch.load(path, weights_only=True, map_location="cpu")
        except Exception as e:  # a missing or forged file
            return None, "unreadable output (%s)" % type(e).__name__
        if type(t) is not torch.Tensor:
            return None, "output is a %s, not a plain torch.Tensor" % type(t).__name__
        if list(t.shape) != list(case["out"]["shape"]) or t.dtype != DTYPES[case["out"]["dtype"]]:
            return None, "output has shape %s and dtype %s; expected %s %s" % (
                list(t.shape), t.dtype, case["out"]["shape"], case["out"]["dtype"])
        return t, None

    def expected(self, case, seed):
        args = [a.double() if isinstance(a, torch.Tensor) else a for a in make_args(case, seed, self.device)]
        with torch.no_grad():
            want = self.ref_fn(*args).double().cpu()
        if self.gpu:
            torch.cuda.empty_cache()  # leave the GPU's memory to the runner
        return want

    def compare(self, got, want, case):
        atol, rtol = self.p.tolerance[case["out"]["dtype"]]
        g = got.double()
        if not torch.isfinite(g).all():
            return "non-finite values (NaN: elements never written?)"
        err = (g - want).abs()
        bad = err > atol + rtol * want.abs()
        if bad.any():
            return "max abs error %.3g (tolerance %.3g + %.3g * |ref|), %d of %d elements off" % (
                err.max().item(), atol, rtol, int(bad.sum()), bad.numel())
        return None

    # -- the checks --

    def check_run(self, cases):
        """Correctness of every case: the runner runs each twice on the same inputs and records its
        launch plans; then the witness replays them. Returns (problem or None, details, the plans
        of the second run of each case: the ones timed on a GPU)."""
        job = {"mode": "check", "module": self.p.module, "entry": self.p.entry, "cases": cases, "reps": 2}
        self.kit.log("compiling and running the candidate on %d cases (runner)" % len(cases))
        ok, note, report, parent = self.launch(self.kit.SUBMISSION, self.kit.CANDIDATE_UID, job)
        try:
            if not ok:
                return "the kernel failed: " + note, {}, None
            calls = report.get("calls")
            if not isinstance(calls, list) or len(calls) != len(cases) * 2 or not all(isinstance(c, dict) for c in calls):
                return "the runner's report is incomplete", {}, None
            runner_outs = []
            for i, case in enumerate(cases):
                want = self.expected(case, case["seed"])
                outs = []
                for r in range(2):
                    call = calls[i * 2 + r]
                    where = "case %d (%s), run %d" % (i, describe(case), r + 1)
                    problems = call.get("problems")
                    if problems:
                        return "%s: %s" % (where, str(problems[0] if isinstance(problems, list) else problems)[:500]), {}, None
                    plan = call.get("plan")
                    if not (isinstance(plan, dict) and isinstance(plan.get("launches"), list) and plan["launches"]):
                        return "%s: no Triton kernel was launched (the work must be done by Triton kernels)" % where, {}, None
                    t, why = self.load(parent, "c%d_r%d.pt" % (i, r), case)
                    why = why or self.compare(t, want, case)
                    if why:
                        return "%s: wrong output: %s" % (where, why), {}, None
                    outs.append(t)
                if not torch.equal(outs[0].view(torch.uint8), outs[1].view(torch.uint8)):
                    return "case %d (%s): two runs on the same input differ (must be deterministic)" % (i, describe(case)), {}, None
                runner_outs.append(outs[0])
                self.kit.log("case %d/%d ok (runner)" % (i + 1, len(cases)))
        finally:
            self.remove(parent)
        # The witness replays the first run's plan on the same inputs (it must give the runner's
        # output, bit for bit) and the second run's on new inputs of a seed drawn only now (a plan
        # that depends on the input values, e.g. answers passed as scalar arguments, fails).
        fresh = [self.rng.getrandbits(40) for _ in cases]
        replays = []
        for i, case in enumerate(cases):
            replays.append({"case": i, "seed": case["seed"], "plan": calls[i * 2]["plan"], "save": "w%d_same.pt" % i,
                            "init_seed": case.get("init_seed")})
            replays.append({"case": i, "seed": fresh[i], "plan": calls[i * 2 + 1]["plan"], "save": "w%d_new.pt" % i,
                            "init_seed": case.get("init_seed")})
        self.kit.log("compiling and replaying the recorded launches (witness)")
        ok, note, report, parent = self.launch(self.kit.SUBMISSION, self.kit.CANDIDATE_UID,
                                               {"mode": "check", "cases": cases, "replays": replays}, witness=True)
        try:
            if not ok:
                return "the witness failed to replay the recorded Triton launches: " + note, {}, None
            if report.get("refused"):
                return "%s: %s" % (NOT_TRITONS, str(report["refused"])[:2000]), {}, None
            for i, case in enumerate(cases):
                where = "case %d (%s)" % (i, describe(case))
                same, why = self.load(parent, "w%d_same.pt" % i, case)
                if why or not torch.equal(same.view(torch.uint8), runner_outs[i].view(torch.uint8)):
                    why = why or self.compare(same, self.expected(case, case["seed"]), case) or "right, but other bits"
                    return "%s: %s (replaying them on the same inputs gives: %s)" % (where, NOT_TRITONS, why), {}, None
                new, why = self.load(parent, "w%d_new.pt" % i, case)
                why = why or self.compare(new, self.expected(case, fresh[i]), case)
                if why:
                    return ("%s: the recorded Triton launches, replayed on new inputs of the same shape, give a wrong "
                            "output: %s" % (where, why)), {}, None
                self.kit.log("case %d/%d ok (witness)" % (i + 1, len(cases)))
            kernels = report.get("kernels") if isinstance(report.get("kernels"), list) else []
            details = {"kernels": [str(k)[:120] for k in kernels[:50]],
                       "witness": "%s Triton launches replayed by the witness" % report.get("launches")}
            return None, details, [calls[i * 2 + 1]["plan"] for i in range(len(cases))]
        finally:
            self.remove(parent)

    def time_run(self, src, uid, cases, reps, compiled=False, module=None, entry=None, recheck=0, extra=(), plans=None):
        """Per-case median wall seconds (and event seconds) of one timing process, or a failure note.
        With plans, a witness replays them (the candidate); else a runner times a reference."""
        job = {"mode": "time", "module": module, "entry": entry, "cases": cases, "reps": reps, "warmup": 3,
               "compile": compiled, "save": recheck > 0, "plans": plans}
        ok, note, report, parent = self.launch(src, uid, job, extra, witness=plans is not None)
        try:
            if not ok:
                return None, note
            if report.get("refused"):
                return None, "%s: %s" % (NOT_TRITONS, str(report["refused"])[:2000])
            timings = report.get("timings")
            if not isinstance(timings, list) or len(timings) != len(cases):
                return None, "the timing report is incomplete"
            wall, event = [], []
            for i, (case, t) in enumerate(zip(cases, timings)):
                w, e = t.get("wall_s"), t.get("event_s")
                if not (isinstance(w, list) and len(w) == reps and all(isinstance(x, float) and x > 0 for x in w)):
                    return None, "case %d: malformed timings" % i
                for r in self.rng.sample(range(reps), min(recheck, reps)):  # picked after the fact
                    got, why = self.load(parent, "t%d_r%d.pt" % (i, r), case)
                    why = why or self.compare(got, self.expected(case, case["seed"] + r), case)
                    if why:
                        return None, "case %d (%s), timed rep %d: wrong output: %s" % (i, describe(case), r, why)
                wall.append(self.kit.median(w))
                event.append(self.kit.median(e) if isinstance(e, list) and e else None)
            return {"wall": wall, "event": event}, ""
        finally:
            self.remove(parent)

    def reference_src(self):
        d = tempfile.mkdtemp(prefix="rdbench-reference-")
        shutil.copy(self.p.reference_path, os.path.join(d, "reference.py"))
        return d

    def fresh(self, cases):
        """`cases` with seeds drawn afresh from the secret seed (and, for nn.Module problems, init
        seeds): inputs no earlier run saw, of the same shapes and so the same cost."""
        return [dict(c, seed=self.rng.getrandbits(40), **({"init_seed": self.rng.getrandbits(40)}
                                                           if "init_seed" in c else {})) for c in cases]

    def timing(self, cases=None, plans=None):
        """The bench cases' launch plans (recorded by a runner, checked by a witness: passed in when
        the correctness check already did it); then interleaved timing processes of the witness
        replaying them and of eager PyTorch, each pair on inputs drawn afresh; then torch.compile.
        The candidate's own process measures nothing the verdict uses."""
        reps, recheck = 20, 3
        if plans is None:
            cases = self.seeded(self.p.bench_cases(True))
            problem, _, plans = self.check_run(cases)
            if problem:
                return [], [], False, "bench cases: " + problem, {"bench_cases": [describe(c) for c in cases]}
        extra = {"bench_cases": [describe(c) for c in cases], "reps_per_process": reps,
                 "inputs": "drawn afresh from the secret seed for every timed pair (baseline run i, candidate run i)"}
        ref_src = self.reference_src()
        per_case = {"candidate": [], "eager": []}
        pairs = []  # pair i's cases: the same fresh inputs for eager run i and candidate run i

        def one(who):
            i = len(per_case[who])
            if i == len(pairs):
                pairs.append(self.fresh(cases))
            if who == "candidate":
                res, note = self.time_run(self.kit.SUBMISSION, self.kit.CANDIDATE_UID, pairs[i], reps,
                                          recheck=recheck, plans=plans)
            else:
                res, note = self.time_run(ref_src, self.kit.BASELINE_UID, pairs[i], reps, module="reference",
                                          entry="reference")
            if res is None:
                return 0.0, False, note
            per_case[who].append(res)
            return sum(res["wall"]), True, ""

        try:
            b, c, ok, note = self.kit.interleaved(lambda: one("eager"), lambda: one("candidate"),
                                                  repeats=self.kit.repeats(), warmup=0, seed=self.seed, log=self.kit.log)
            self.kit.log("timing torch.compile")
            compiled, cnote = self.time_run(ref_src, self.kit.BASELINE_UID, self.fresh(cases), reps, compiled=True,
                                            module="reference", entry="reference")
        finally:
            self.remove(ref_src)
        if ok and c:
            cand_t = self.kit.median(c)
            extra["vs_compile"] = sum(compiled["wall"]) / cand_t if compiled else None
            if compiled is None:
                extra["compile_note"] = "torch.compile did not work here: " + cnote[-300:]
            ev = [sum(r["event"]) for r in per_case["candidate"] if all(r["event"])]  # CUDA events: GPU only
            wl = [sum(r["wall"]) for r in per_case["candidate"]]
            extra["candidate_event_s"] = ev
            # the witness launches on one stream; a kernel that still hides work from the caller's
            # stream's events shows as event time well under the time to a device-wide sync
            if ev and self.kit.median(ev) < 0.5 * self.kit.median(wl) and self.kit.median(wl) - self.kit.median(ev) > 50e-6:
                ok, note = False, ("work done off the caller's stream: its CUDA-event time %.3g s is under half the "
                                   "time to a device-wide synchronize, %.3g s" % (self.kit.median(ev), self.kit.median(wl)))
        return b, c, ok, note, extra

    def cache_details(self):
        return {"compile_caches": "one per role, kept for the role's processes of this verification: %s" % ", ".join(
            "%s %d" % (role, n) for role, n in self.processes.items())}

    #: what the CPU path checked, for details.unavailable
    cpu_checked = "on small fp32/fp16 cases"

    def run(self):
        cases = self.seeded(self.p.cases(self.rng, self.gpu))
        return self.graded(dict(self.details, task=self.p.name, cases=[describe(c) for c in cases]), cases)

    def graded(self, details, cases):
        """The verdict on `cases`: the static check, the runner and the witness, then (GPU) the timing."""
        problem = static_check(self.kit.SUBMISSION, self.p.module)
        if problem:
            return self.kit.speedup_verdict([], [], False, problem, details=details)
        # on a GPU the bench cases are checked (and their plans recorded) in the same runner and
        # witness processes as the hidden cases: fewer processes, each kernel compiled once
        bench = self.seeded(self.p.bench_cases(True)) if self.gpu else []
        problem, checked, plans = self.check_run(cases + bench)
        details.update(checked)
        if problem:
            return self.kit.speedup_verdict([], [], False, problem, details=dict(details, **self.cache_details()))
        if not self.gpu:
            details["unavailable"] = ("speedup unavailable: no GPU; correctness checked in the Triton interpreter "
                                      "(TRITON_INTERPRET=1) " + self.cpu_checked)
            return self.kit.speedup_verdict([], [], True, details=dict(details, **self.cache_details()))
        b, c, ok, note, extra = self.timing(bench, plans[len(cases):])
        details.update(extra, **self.cache_details())
        return self.kit.speedup_verdict(b, c, ok, note, plausible_max=self.p.plausible_max, details=details)


def main(problem):
    import verify_kit as kit
    kit.emit(Verifier(problem, kit).run())

