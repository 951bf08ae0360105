"""rdbench kernel kit: the one verifier of GPU kernel (Triton) tasks.

The harness copies this file into every verifier sandbox as /verifier/kernel_kit.py, beside
verify_kit.py. A kernel task's verify.py describes its problem (`Problem`: hidden cases,
tolerances, a PyTorch reference) and calls `main(problem)`. The same file is also the
*runner*: `python3 -s kernel_kit.py JOB.json`, run as the candidate's user, imports the
candidate's module and calls its kernel. Why two halves:

- The candidate's code runs only in runner processes (uid 1000, a fresh private copy of the
  submission per process, an empty home and Triton cache), never in the verifier's process.
  Whatever it patches, it patches in its own interpreter.
- The verifier (root) trusts nothing the runner says about *values*: the runner saves the
  output tensors it got, and the verifier loads them (`torch.load(weights_only=True)`, exact
  `torch.Tensor`, dtype, shape), regenerates the same inputs from the same seeds and compares
  them with its own float64 PyTorch reference.

What the runner *measures* (times, Triton launch counts) is necessarily measured in the
candidate's process; the runner installs its hooks and captures its clocks before the
candidate is imported, and kernel_kit.md says what a candidate that attacks them in its
own interpreter could still do.

Checks, each against a known kernel-benchmark exploit:
- several hidden cases from the secret seed, two of each shape with other values (a cache
  keyed on shape or on a recycled address returns the wrong answer);
- fresh inputs for every call; the output buffer pre-filled with NaN (a kernel must write
  every element); the kernel must write into `out`, return None or `out`, leave `out` a plain
  `torch.Tensor` at its address, not alias an input, not modify its inputs;
- the output is snapshotted on the caller's stream the moment the call returns, and that
  snapshot is what gets checked (work on a side stream or in a thread is not done yet);
- every case run twice; the two outputs must be bitwise equal (determinism);
- static: a `@triton.jit` kernel in the submission; dynamic: Triton launches counted per call
  (zero fails), and a second run with every Triton launch skipped must come out wrong (a
  submission that is still right without its kernels computes elsewhere);
- GPU timing: CUDA events and wall clock around a device-wide synchronize, L2 flushed before
  every rep, new input values every rep; timed outputs re-checked by the verifier on reps it
  picks afterwards; speedup against PyTorch eager (the value) and torch.compile (details),
  each timed by the same runner as another user; a plausibility flag above the task's bound.
- CPU (no GPU): the same correctness checks under TRITON_INTERPRET=1, on small fp32/fp16
  cases; the speedup is reported as unavailable (value None), never as a number.
"""

import json
import math
import os
import random
import re
import shutil
import sys
import tempfile
import time

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
#: Bytes written between timed reps to flush the L2 cache (H100: 50 MB of L2).
L2_FLUSH_BYTES = 256 << 20
RUN_TIMEOUT_S = float(os.environ.get("RDBENCH_KERNEL_RUN_TIMEOUT", 600))


# ---- inputs: the verifier and the runner draw the same ones from a seed ----

def tensor(shape, dtype, scale=1.0, shift=0.0):
    """An input argument of a case: randn(shape) * scale + shift, then cast to dtype."""
    return {"shape": list(shape), "dtype": dtype, "scale": scale, "shift": shift}


def scalar(value):
    return {"scalar": value}


def make_case(args, out_shape, out_dtype):
    """One call: its arguments, and the output buffer the kernel writes."""
    return {"args": list(args), "out": {"shape": list(out_shape), "dtype": out_dtype}}


def twice(cases):
    """Each case twice: the kit draws each its own seed, so a shape comes back with other values
    (a cache keyed on shape, or on an address the allocator recycles, returns a wrong answer)."""
    return [c for c in cases for _ in range(2)]


def row_shapes(rng, gpu, max_cols):
    """(dtype, rows, cols) of a row-wise kernel's hidden cases: tiny, ragged, wide. Without a
    GPU (the Triton interpreter), small ones in float32 and float16 only."""
    if gpu:
        return [("float32", rng.randint(1, 64), rng.randint(1, 40)),
                ("float32", rng.randint(500, 3000), rng.randint(500, 9000)),
                ("float16", rng.randint(1000, 5000), rng.randint(100, 8192)),
                ("bfloat16", rng.randint(100, 2000), rng.randint(2000, max_cols))]
    return [("float32", rng.randint(2, 9), rng.randint(1, 40)), ("float32", rng.randint(4, 12), rng.randint(100, 300)),
            ("float16", rng.randint(2, 8), rng.randint(130, 520))]


def make_args(case, seed, device):
    """The arguments of one call: tensors drawn from `seed`, scalars as given."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    args = []
    for spec in case["args"]:
        if "scalar" in spec:
            args.append(spec["scalar"])
            continue
        t = torch.randn(spec["shape"], generator=gen, device=device, dtype=torch.float32)
        t = t * spec.get("scale", 1.0) + spec.get("shift", 0.0)
        args.append(t.to(DTYPES[spec["dtype"]]))
    return args


def new_out(case, device):
    o = case["out"]
    return torch.full(o["shape"], float("nan"), dtype=DTYPES[o["dtype"]], device=device)


def describe(case):
    shapes = ",".join("x".join(map(str, a["shape"])) for a in case["args"] if "shape" in a)
    return "%s %s" % (case["out"]["dtype"], shapes)


# ---- the runner: the candidate's process ----

class _Launches:
    """Counts Triton launches (and, for the no-op run, skips them) by wrapping `run` of the
    JIT and interpreter kernel classes, before the candidate's module is imported."""

    def __init__(self, skip):
        self.count = 0
        self.names = set()
        import triton.runtime.jit as jit
        classes = [jit.JITFunction]
        try:
            from triton.runtime.interpreter import InterpretedFunction
            classes.append(InterpretedFunction)
        except ImportError:  # pragma: no cover - every Triton we ship has it
            pass
        for cls in classes:
            cls.run = self._wrap(cls.run, skip)

    def _wrap(self, run, skip):
        counter = self

        def counted_run(kernel, *args, **kwargs):
            if kwargs.get("warmup"):
                return run(kernel, *args, **kwargs)
            counter.count += 1
            counter.names.add(getattr(kernel, "__name__", "?"))
            if skip:
                return None
            return run(kernel, *args, **kwargs)

        return counted_run


def _overlaps(a, b):
    if a.numel() == 0 or b.numel() == 0:
        return False
    a0, b0 = a.data_ptr(), b.data_ptr()
    a1 = a0 + a.untyped_storage().nbytes()
    b1 = b0 + b.untyped_storage().nbytes()
    return a0 < b1 and b0 < a1


class Runner:
    """One runner process: a job from the verifier, results back as files."""

    def __init__(self, job):
        self.job = job
        self.device = job["device"]
        self.cuda = self.device.startswith("cuda")
        # the runner's own tools, bound before the candidate's code exists
        self.Tensor = torch.Tensor
        self.perf = time.perf_counter
        self.save = torch.save
        self.equal = torch.equal
        self.sync = torch.cuda.synchronize if self.cuda else (lambda: None)
        self.Event = torch.cuda.Event if self.cuda else None
        self.launches = _Launches(skip=job["mode"] == "noop") if job.get("count_launches", True) else None
        self.out_dir = job["results"]
        self.calls = []

    def load_fn(self):
        sys.path.insert(0, os.getcwd())
        module = __import__(self.job["module"])
        fn = getattr(module, self.job["entry"])
        if self.job.get("compile"):
            fn = torch.compile(fn)
        return fn

    def _n_launches(self):
        return self.launches.count if self.launches is not None else 0

    def call(self, fn, case, seed):
        """One call on fresh inputs; returns (snapshot of the output, problems, launches)."""
        args = make_args(case, seed, self.device)
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        pristine = [t.clone() for t in tensors]
        problems = []
        if self.job["returns"]:  # a reference: returns its result
            self.sync()
            n0 = self._n_launches()
            out = fn(*args)
            snap = out.clone()
            self.sync()
            return snap, problems, self._n_launches() - n0
        out = new_out(case, self.device)
        ptr, shape, dtype = out.data_ptr(), tuple(out.shape), out.dtype
        self.sync()
        n0 = self._n_launches()
        ret = fn(*args, out)
        snap = torch.Tensor.clone(out) if type(out) is self.Tensor else torch.full_like(out.as_subclass(self.Tensor), float("nan"))
        self.sync()  # device-wide: all streams
        launches = self._n_launches() - n0
        if ret is not None and ret is not out:
            if isinstance(ret, torch.Tensor) and type(ret) is not self.Tensor:
                problems.append("returned a %s, a torch.Tensor subclass: outputs must be plain tensors written into `out`"
                                % type(ret).__name__)
            elif any(ret is t for t in tensors):
                problems.append("returned one of its inputs (an alias) instead of writing into `out`")
            else:
                problems.append("returned a new %s instead of writing into `out` (return None or `out`)" % type(ret).__name__)
        if type(out) is not self.Tensor:
            problems.append("turned `out` into a %s, a torch.Tensor subclass: outputs must be plain tensors"
                            % type(out).__name__)
        if out.data_ptr() != ptr or tuple(out.shape) != shape or out.dtype != dtype:
            problems.append("re-pointed or reshaped `out` (out.set_ / resize_): write into the buffer it was given")
        for t in tensors:
            if _overlaps(out, t):
                problems.append("`out` aliases an input: write the result into the buffer it was given")
                break
        for t, p in zip(tensors, pristine):
            if not self.equal(t, p) and not (t.isnan().any() and self.equal(t.nan_to_num(), p.nan_to_num())):
                problems.append("modified an input tensor in place (inputs are read-only)")
                break
        if not self.equal(snap.nan_to_num(123.0), out.as_subclass(self.Tensor).nan_to_num(123.0)):
            problems.append("`out` was still being written after the call returned (work on a side stream, "
                            "in a thread, or deferred): it must be complete on the caller's stream")
        return snap, problems, launches

    def check(self, fn):
        reps = self.job.get("reps", 2)
        for i, case in enumerate(self.job["cases"]):
            for r in range(reps):
                snap, problems, launches = self.call(fn, case, case["seed"])
                self.save(snap.detach().cpu(), os.path.join(self.out_dir, "c%d_r%d.pt" % (i, r)))
                self.calls.append({"case": i, "rep": r, "launches": launches, "problems": problems})

    def time(self, fn):
        """Timed reps of each case: new inputs every rep, L2 flushed, device-wide sync."""
        flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.int8, device=self.device) if self.cuda else None
        timings = []
        for i, case in enumerate(self.job["cases"]):
            for w in range(self.job.get("warmup", 3)):
                self.call(fn, case, case["seed"] + 1000 + w)
            wall, event, launches, problems = [], [], 0, []
            for r in range(self.job["reps"]):
                seed = case["seed"] + r
                args = make_args(case, seed, self.device)
                out = None if self.job["returns"] else new_out(case, self.device)
                if flush is not None:
                    flush.zero_()
                self.sync()
                n0 = self._n_launches()
                if self.cuda:
                    e0, e1 = self.Event(enable_timing=True), self.Event(enable_timing=True)
                    e0.record()
                t0 = self.perf()
                ret = fn(*args) if out is None else fn(*args, out)
                if self.cuda:
                    e1.record()
                self.sync()
                t1 = self.perf()
                wall.append(t1 - t0)
                if self.cuda:
                    event.append(e0.elapsed_time(e1) / 1e3)
                launches += self._n_launches() - n0
                result = ret if out is None else out
                if self.job.get("save", True):
                    if type(result) is not self.Tensor:
                        problems.append("timed rep %d: output is a %s, not a plain torch.Tensor" % (r, type(result).__name__))
                    self.save(result.detach().as_subclass(self.Tensor).cpu(), os.path.join(self.out_dir, "t%d_r%d.pt" % (i, r)))
                del args, out, ret, result
            timings.append({"case": i, "wall_s": wall, "event_s": event, "launches": launches, "problems": problems})
        return timings

    def main(self):
        fn = self.load_fn()
        report = {}
        if self.job["mode"] in ("check", "noop"):
            self.check(fn)
            report["calls"] = self.calls
        else:
            report["timings"] = self.time(fn)
        if self.launches is not None:
            report["kernels"] = sorted(self.launches.names)[:50]
        with open(os.path.join(self.out_dir, "report.json"), "w") as f:
            json.dump(report, f)


def runner_main(job_path):
    with open(job_path) as f:
        job = json.load(f)
    Runner(job).main()


# ---- the verifier: root, never runs candidate code ----

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


def static_check(submission, module):
    """The submission's module exists and the submission holds at least one Triton kernel."""
    if not os.path.isfile(os.path.join(submission, module + ".py")):
        return "no %s.py in the submission" % module
    for root, dirs, files in os.walk(submission):
        for name in files:
            if name.endswith(".py"):
                try:
                    with open(os.path.join(root, name), errors="replace") as f:
                        if JIT_RE.search(f.read()):
                            return None
                except OSError:
                    pass
    return "no @triton.jit kernel anywhere in the submission"


class Verifier:
    def __init__(self, problem, kit):
        self.p, self.kit = problem, kit
        self.gpu = torch.cuda.is_available()
        self.device = "cuda" if self.gpu else "cpu"
        self.seed = kit.secret_seed()
        self.rng = random.Random(self.seed)
        self.public = tempfile.mkdtemp(prefix="rdbench-kernel-runner-")  # the runner script, world-readable
        shutil.copy(os.path.abspath(__file__), os.path.join(self.public, "kernel_kit.py"))
        os.chmod(self.public, 0o755)
        os.chmod(os.path.join(self.public, "kernel_kit.py"), 0o644)
        self.ref_fn = problem.reference()
        self.details = {"device": torch.cuda.get_device_name() if self.gpu else "cpu (TRITON_INTERPRET=1)"}
        if not self.gpu and os.path.exists("/dev/nvidiactl"):
            self.details["gpu_note"] = ("a GPU was given, but this sandbox's torch %s cannot use it (a CPU build?): "
                                        "correctness only" % torch.__version__)

    def seeded(self, cases):
        return [dict(c, seed=self.rng.getrandbits(40)) for c in cases]

    # -- running the runner --

    def launch(self, src, uid, job, extra_files=()):
        """Run one runner process as `uid` on a fresh private copy of `src`; return
        (ok, note, report, results folder). The caller removes the folder."""
        work = self.kit.stage(src, uid)
        parent = os.path.dirname(work)
        results, home = os.path.join(parent, "results"), os.path.join(parent, "home")
        for d in (results, home):
            os.mkdir(d, 0o700)
            self.kit.give(d, uid)
        for path in extra_files:
            shutil.copy(path, work)
            self.kit.give(os.path.join(work, os.path.basename(path)), uid)
        job = dict(job, device=self.device, results=results)
        job_path = os.path.join(parent, "job.json")
        with open(job_path, "w") as f:
            json.dump(job, f)
        self.kit.give(job_path, uid)
        env = {"HOME": home, "TRITON_CACHE_DIR": os.path.join(home, "triton"),
               "TORCHINDUCTOR_CACHE_DIR": os.path.join(home, "inductor"), "PYTHONDONTWRITEBYTECODE": "1"}
        if not self.gpu:
            env["TRITON_INTERPRET"] = "1"
        if "CUDA_DEVICE_ORDER" in os.environ:
            env["CUDA_DEVICE_ORDER"] = os.environ["CUDA_DEVICE_ORDER"]
        r = self.kit.run([sys.executable, "-s", os.path.join(self.public, "kernel_kit.py"), job_path],
                         cwd=work, uid=uid, timeout=RUN_TIMEOUT_S, env=env)
        shutil.rmtree(work, ignore_errors=True)
        if not r.ok:
            return False, r.describe(), None, parent
        try:
            with open(os.path.join(results, "report.json")) as f:
                report = json.load(f)
            if not isinstance(report, dict):
                raise ValueError("not an object")
        except (OSError, ValueError) as e:
            return False, "the runner left no valid report: %s" % e, None, parent
        return True, "", report, parent

    def load(self, parent, name, case):
        """An output the runner saved: a plain CPU tensor of the right shape and dtype, or a reason."""
        path = os.path.join(parent, "results", name)
        try:
            if os.path.getsize(path) > 8 * math.prod(case["out"]["shape"]) + (1 << 16):
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

    def check_run(self, cases, noop=False):
        """Correctness of every case, run twice; returns (problem or None, kernels launched, n right).
        With noop, every Triton launch is skipped, and only the count of right cases matters."""
        job = {"mode": "noop" if noop else "check", "module": self.p.module, "entry": self.p.entry,
               "returns": False, "cases": cases, "reps": 1 if noop else 2}
        ok, note, report, parent = self.launch(self.kit.SUBMISSION, self.kit.CANDIDATE_UID, job)
        try:
            if not ok:
                return ("the kernel failed: " + note), [], 0
            calls = report.get("calls")
            if not isinstance(calls, list) or len(calls) != len(cases) * job["reps"]:
                return "the runner's report is incomplete", [], 0
            right = 0
            for i, case in enumerate(cases):
                want = self.expected(case, case["seed"])
                outs = []
                for r in range(job["reps"]):
                    call = calls[i * job["reps"] + r]
                    where = "case %d (%s), run %d" % (i, describe(case), r + 1)
                    if not noop:
                        if call.get("problems"):
                            return "%s: %s" % (where, call["problems"][0]), [], right
                        if not call.get("launches"):
                            return "%s: no Triton kernel was launched (the work must be done by Triton kernels)" % where, [], right
                    t, why = self.load(parent, "c%d_r%d.pt" % (i, r), case)
                    why = why or self.compare(t, want, case)
                    if why and not noop:
                        return "%s: wrong output: %s" % (where, why), [], right
                    if not why:
                        right += 1
                    outs.append(t)
                if not noop and not torch.equal(outs[0].view(torch.uint8), outs[1].view(torch.uint8)):
                    return "case %d (%s): two runs on the same input differ (must be deterministic)" % (i, describe(case)), [], right
            kernels = report.get("kernels") if isinstance(report.get("kernels"), list) else []
            return None, [str(k)[:80] for k in kernels], right
        finally:
            shutil.rmtree(parent, ignore_errors=True)

    def time_run(self, src, uid, cases, reps, returns, compiled=False, module=None, entry=None, recheck=0, extra=()):
        """Per-case median wall seconds (and event seconds) of one timing process, or a failure note."""
        job = {"mode": "time", "module": module or self.p.module, "entry": entry or self.p.entry,
               "returns": returns, "cases": cases, "reps": reps, "warmup": 3, "compile": compiled,
               "save": recheck > 0, "count_launches": not returns}
        ok, note, report, parent = self.launch(src, uid, job, extra)
        try:
            if not ok:
                return None, note
            timings = report.get("timings")
            if not isinstance(timings, list) or len(timings) != len(cases):
                return None, "the runner's timing report is incomplete"
            wall, event = [], []
            for i, (case, t) in enumerate(zip(cases, timings)):
                w, e = t.get("wall_s"), t.get("event_s")
                if not (isinstance(w, list) and len(w) == reps and all(isinstance(x, float) and x > 0 for x in w)):
                    return None, "case %d: malformed timings" % i
                if t.get("problems"):
                    return None, "case %d: %s" % (i, t["problems"][0])
                if not returns and not t.get("launches"):
                    return None, "case %d: no Triton kernel launched in the timed reps" % i
                for r in self.rng.sample(range(reps), min(recheck, reps)):  # picked after the fact
                    got, why = self.load(parent, "t%d_r%d.pt" % (i, r), case)
                    why = why or self.compare(got, self.expected(case, case["seed"] + r), case)
                    if why:
                        return None, "case %d (%s), timed rep %d: wrong output: %s" % (i, describe(case), r, why)
                wall.append(self.kit.median(w))
                event.append(self.kit.median(e) if isinstance(e, list) and e else None)
            return {"wall": wall, "event": event}, ""
        finally:
            shutil.rmtree(parent, ignore_errors=True)

    def reference_src(self):
        d = tempfile.mkdtemp(prefix="rdbench-reference-")
        shutil.copy(self.p.reference_path, os.path.join(d, "reference.py"))
        return d

    def timing(self):
        """Interleaved timing processes of the candidate and of eager PyTorch; then torch.compile."""
        cases = self.seeded(self.p.bench_cases(True))
        reps, recheck = 20, 3
        ref_src = self.reference_src()
        per_case = {"candidate": [], "eager": []}

        def one(who):
            if who == "candidate":
                res, note = self.time_run(self.kit.SUBMISSION, self.kit.CANDIDATE_UID, cases, reps, False, recheck=recheck)
            else:
                res, note = self.time_run(ref_src, self.kit.BASELINE_UID, cases, reps, True,
                                          module="reference", entry="reference")
            if res is None:
                return 0.0, False, note
            per_case[who].append(res)
            return sum(res["wall"]), True, ""

        try:
            b, c, ok, note = self.kit.interleaved(lambda: one("eager"), lambda: one("candidate"),
                                                  repeats=self.kit.repeats(), warmup=0, seed=self.seed, log=self.kit.log)
            compiled, cnote = self.time_run(ref_src, self.kit.BASELINE_UID, cases, reps, True, compiled=True,
                                            module="reference", entry="reference")
        finally:
            shutil.rmtree(ref_src, ignore_errors=True)
        extra = {"bench_cases": [describe(c) for c in cases], "reps_per_process": reps}
        if ok and c:
            cand_t = self.kit.median(c)
            extra["vs_compile"] = sum(compiled["wall"]) / cand_t if compiled else None
            if compiled is None:
                extra["compile_note"] = "torch.compile did not work here: " + cnote[-300:]
            ev = [sum(r["event"]) for r in per_case["candidate"] if all(r["event"])]  # CUDA events: GPU only
            wl = [sum(r["wall"]) for r in per_case["candidate"]]
            extra["candidate_event_s"] = ev
            # CUDA events on the caller's stream see little of work done on another stream;
            # the wall clock around a device-wide sync sees all of it
            if ev and self.kit.median(ev) < 0.5 * self.kit.median(wl) and self.kit.median(wl) - self.kit.median(ev) > 50e-6:
                ok, note = False, ("work done off the caller's stream: its CUDA-event time %.3g s is under half the "
                                   "time to a device-wide synchronize, %.3g s" % (self.kit.median(ev), self.kit.median(wl)))
        return b, c, ok, note, extra

    def run(self):
        details = dict(self.details, task=self.p.name)
        problem = static_check(self.kit.SUBMISSION, self.p.module)
        if problem:
            return self.kit.speedup_verdict([], [], False, problem, details=details)
        cases = self.seeded(self.p.cases(self.rng, self.gpu))
        details["cases"] = [describe(c) for c in cases]
        problem, kernels, _ = self.check_run(cases)
        details["kernels"] = kernels
        if problem:
            return self.kit.speedup_verdict([], [], False, problem, details=details)
        _, _, right = self.check_run(cases, noop=True)
        details["right_without_triton"] = "%d of %d cases" % (right, len(cases))
        if right == len(cases):
            return self.kit.speedup_verdict([], [], False, "the output is still right with every Triton launch "
                                            "skipped: the work is not done by the Triton kernels", details=details)
        if not self.gpu:
            details["unavailable"] = ("speedup unavailable: no GPU; correctness checked in the Triton interpreter "
                                      "(TRITON_INTERPRET=1) on small fp32/fp16 cases")
            return self.kit.speedup_verdict([], [], True, details=details)
        b, c, ok, note, extra = self.timing()
        details.update(extra)
        return self.kit.speedup_verdict(b, c, ok, note, plausible_max=self.p.plausible_max, details=details)


def main(problem):
    import verify_kit as kit
    kit.emit(Verifier(problem, kit).run())


if __name__ == "__main__":
    runner_main(sys.argv[1])
