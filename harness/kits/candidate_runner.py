"""rdbench kernel runner: the candidate-side half of the kernel verifier (kernel_kit.py is the
verifier's half, run as root; kernel_kit.md tells the whole design).

The harness copies this file, witness_replay.py and kernel_cases.py (what they and the verifier
share) into every verifier sandbox beside kernel_kit.py; the verifier puts world-readable
copies where the candidate's user can run them as scripts, in two roles:

- the *runner* (this file: `python3 -s candidate_runner.py JOB.json`) imports the candidate's
  module, calls its kernel on inputs drawn from seeds, saves each output, and records every Triton launch the
  call made (kernel, file, grid, arguments: the call's *launch plan*);
- the *witness* (witness_replay.py: `python3 -s witness_replay.py JOB.json`) never imports the
  candidate's modules: it reads the submission's .py files with `ast`, rebuilds the recorded kernels (and
  only them: bodies checked against a whitelist of what a Triton kernel may contain) into a
  module of its own, regenerates the inputs, and replays the recorded launches on them, into
  a NaN-filled `out` and zero-filled scratch buffers. Its outputs are what the verifier checks,
  and on a GPU it is what is timed.

Why: whatever runs in the candidate's process can make that process *say* anything (launch
counts, which run it is in, its own result files). The witness's output can come only from
the verifier's inputs, zeros and the submission's Triton kernel code, so a decoy kernel in
front of a PyTorch fallback, or a submission with no kernels that forges the runner's files,
comes out wrong there. The verifier (root) never runs candidate code and parses nothing of
the candidate's beyond size-capped JSON; it loads outputs with `torch.load(weights_only=True)`
(exact `torch.Tensor`, dtype, shape) and compares them with its own float64 reference.

Checks, each against a known kernel-benchmark exploit:
- several hidden cases from the secret seed, two of each shape with other values (a cache
  keyed on shape or on a recycled address returns the wrong answer);
- fresh inputs for every call; the output buffer pre-filled with NaN (a kernel must write
  every element); the kernel must write into `out`, return None or `out`, leave `out` a plain
  `torch.Tensor` at its address, not alias an input, not modify its inputs;
- the output is snapshotted on the caller's stream the moment the call returns, and that
  snapshot is what gets checked (work on a side stream or in a thread is not done yet);
- every case run twice; the two outputs must be bitwise equal (determinism);
- static: a `@triton.jit` kernel in the submission (a quick first check); dynamic: at least
  one Triton launch per call, and the witness's replay of the recorded launches must give
  bitwise the runner's output, and, replayed on *new* inputs of the same shape (a seed the
  runner never saw), a right output (a plan that smuggles answers in scalar arguments fails);
- GPU timing: the witness replays each bench case's recorded launches: CUDA events and wall
  clock around a device-wide synchronize, L2 flushed before every rep, new input values every
  rep; timed outputs re-checked by the verifier on reps it picks afterwards; speedup against
  PyTorch eager (the value) and torch.compile (details), each timed by the runner as another
  user; a plausibility flag above the task's bound.
- CPU (no GPU): the same correctness checks under TRITON_INTERPRET=1, on small fp32/fp16
  cases; the speedup is reported as unavailable (value None), never as a number.
"""

import os
import sys

if __name__ == "__main__":  # the working folder (the candidate's files) is not on sys.path
    sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) != os.getcwd()]

import json  # noqa: E402 - after the sys.path fix

import torch

from kernel_cases import (
    make_args, new_out, _encode, _Recorder, _overlaps, timed_reps, note_process)


class Runner:
    """One runner process: a job from the verifier, results back as files. In check mode it runs
    the candidate and records its launch plans; in time mode it times a reference (eager or
    torch.compile'd PyTorch: the candidate is timed by the witness)."""

    def __init__(self, job):
        self.job = job
        self.device = job["device"]
        self.cuda = self.device.startswith("cuda")
        # the runner's own tools, bound before the candidate's code exists
        self.Tensor = torch.Tensor
        self.save = torch.save
        self.equal = torch.equal
        self.sync = torch.cuda.synchronize if self.cuda else (lambda: None)
        self.recorder = _Recorder() if job["mode"] == "check" else None
        self.out_dir = job["results"]
        self.calls = []

    def load_fn(self):
        sys.path.insert(0, os.getcwd())
        module = __import__(self.job["module"])
        fn = getattr(module, self.job["entry"])
        if self.job.get("compile"):
            fn = torch.compile(fn)
        return fn

    def call(self, fn, case, seed):
        """One call of the candidate on fresh inputs; returns (snapshot of the output, problems,
        launch plan: the recorded launches and the storages of the inputs and of `out`)."""
        args = make_args(case, seed, self.device)
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        pristine = [t.clone() for t in tensors]
        problems = []
        out = new_out(case, self.device)
        ptr, shape, dtype = out.data_ptr(), tuple(out.shape), out.dtype
        plan = {"inputs": [a.untyped_storage().data_ptr() if isinstance(a, torch.Tensor) else None for a in args],
                "out": out.untyped_storage().data_ptr()}
        self.sync()
        self.recorder.start()
        try:
            ret = fn(*args, out)
        finally:
            plan["launches"] = self.recorder.stop()
            plan["overflow"] = self.recorder.overflow
        snap = torch.Tensor.clone(out) if type(out) is self.Tensor else torch.full_like(out.as_subclass(self.Tensor), float("nan"))
        self.sync()  # device-wide: all streams
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
        return snap, problems, plan

    def check(self, fn):
        reps = self.job.get("reps", 2)
        for i, case in enumerate(self.job["cases"]):
            for r in range(reps):
                snap, problems, plan = self.call(fn, case, case["seed"])
                self.save(snap.detach().cpu(), os.path.join(self.out_dir, "c%d_r%d.pt" % (i, r)))
                self.calls.append({"case": i, "rep": r, "launches": len(plan["launches"]), "problems": problems,
                                   "plan": plan})

    def time(self, fn):
        """Timed reps of a reference, which returns its result."""
        def prepare(case, seed):
            args, got = make_args(case, seed, self.device), []
            return (lambda: got.append(fn(*args))), (lambda: got[0])

        return timed_reps(self.job["cases"], self.job["reps"], self.job.get("warmup", 3), self.device, prepare,
                          self.out_dir if self.job.get("save") else None)

    def main(self):
        fn = self.load_fn()
        report = {}
        if self.job["mode"] == "check":
            self.check(fn)
            report["calls"] = self.calls
            report["kernels"] = sorted(self.recorder.names)[:50]
        else:
            report["timings"] = self.time(fn)
        with open(os.path.join(self.out_dir, "report.json"), "w") as f:
            json.dump(report, f)


class ModuleRunner(Runner):
    """The runner of an nn.Module problem: builds the candidate's `ModelNew` per case from the
    case's init seed (KernelBench's identical initialisation), calls it twice on inputs drawn
    from the case's seed and records each call's launch plan, with the storages of the inputs,
    of the module's parameters and buffers (in registration order: the witness fills them with
    `Model`'s) and of the returned tensor. In time mode it times the reference `Model`."""

    def __init__(self, job):
        super().__init__(job)
        import kernel_module
        self.km = kernel_module
        self.scope = kernel_module.load_problem(job["problem"], job.get("sizes"))

    def call_module(self, model, params, case):
        km = self.km
        args = km.draw_inputs(self.scope, case["seed"], self.device)
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        pristine = [t.clone() for t in tensors]
        problems = []
        plan = {"inputs": [a.untyped_storage().data_ptr() if isinstance(a, torch.Tensor) else None for a in args],
                "params": params}
        self.sync()
        self.recorder.start()
        try:
            with torch.no_grad():
                ret = model(*args)
        finally:
            plan["launches"] = self.recorder.stop()
            plan["overflow"] = self.recorder.overflow
        snap = torch.Tensor.clone(ret) if type(ret) is self.Tensor else None
        self.sync()
        if snap is None:
            problems.append("forward returned a %s: it must return a plain torch.Tensor, as Model does"
                            % type(ret).__name__)
            return torch.zeros(0), problems, plan
        plan["out"] = _encode(ret)["tensor"]
        owned = tensors + [t for t in km.state(model) if isinstance(t, torch.Tensor)]
        if any(_overlaps(ret, t) for t in tensors):
            problems.append("the returned tensor aliases an input: return a new tensor written by your kernels")
        elif any(_overlaps(ret, t) for t in owned):
            problems.append("the returned tensor aliases one of ModelNew's parameters or buffers")
        for t, p in zip(tensors, pristine):
            if not self.equal(t, p) and not (t.is_floating_point() and t.isnan().any()
                                             and self.equal(t.nan_to_num(), p.nan_to_num())):
                problems.append("modified an input tensor in place (inputs are read-only)")
                break
        if not self.equal(snap.nan_to_num(123.0) if snap.is_floating_point() else snap,
                          ret.nan_to_num(123.0) if ret.is_floating_point() else ret):
            problems.append("the output was still being written after forward returned (work on a side stream, "
                            "in a thread, or deferred): it must be complete on the caller's stream")
        return snap, problems, plan

    def main(self):
        report = {}
        if self.job["mode"] == "check":
            sys.path.insert(0, os.getcwd())
            cls = getattr(__import__(self.job["module"]), self.job["entry"])
            reps = self.job.get("reps", 2)
            for i, case in enumerate(self.job["cases"]):
                model = self.km.build(cls, self.scope, case["init_seed"], self.device)
                params = [_encode(t)["tensor"] for t in self.km.state(model) if isinstance(t, torch.Tensor)]
                for r in range(reps):
                    snap, problems, plan = self.call_module(model, params, case)
                    self.save(snap.detach().cpu(), os.path.join(self.out_dir, "c%d_r%d.pt" % (i, r)))
                    self.calls.append({"case": i, "rep": r, "launches": len(plan["launches"]),
                                       "problems": problems, "plan": plan})
            report["calls"] = self.calls
            report["kernels"] = sorted(self.recorder.names)[:50]
        else:  # time the reference Model (eager, or torch.compile'd): the candidate is timed by the witness
            models = {}

            def prepare(case, seed):
                if id(case) not in models:
                    m = self.km.build(self.scope["Model"], self.scope, case["init_seed"], self.device)
                    models[id(case)] = torch.compile(m) if self.job.get("compile") else m
                args, got = self.km.draw_inputs(self.scope, seed, self.device), []

                def go():
                    with torch.no_grad():
                        got.append(models[id(case)](*args))

                return go, (lambda: got[0])

            report["timings"] = timed_reps(self.job["cases"], self.job["reps"], self.job.get("warmup", 3),
                                           self.device, prepare, self.out_dir if self.job.get("save") else None)
        with open(os.path.join(self.out_dir, "report.json"), "w") as f:
            json.dump(report, f)


def runner_main(job_path):
    note_process()
    with open(job_path) as f:
        job = json.load(f)
    (ModuleRunner if job.get("problem") is not None else Runner)(job).main()  # an nn.Module problem: ModuleRunner


if __name__ == "__main__":
    runner_main(sys.argv[1])
