"""rdbench kernel kit, shared by all three of its roles: the verifier (root, kernel_kit.py), the
candidate's runner (candidate_runner.py) and the witness (witness_replay.py). The inputs all
three draw from a seed, the recording of Triton launches, the timed repetitions, and the note
each runner or witness process leaves in its role's compile-cache folder."""

import inspect
import json
import os
import time

import torch


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
          # outputs of nn.Module problems (argmax, masks)
          "int64": torch.int64, "int32": torch.int32, "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8,
          "bool": torch.bool}
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
    if "label" in case:  # an nn.Module problem's draw
        return case["label"]
    shapes = ",".join("x".join(map(str, a["shape"])) for a in case["args"] if "shape" in a)
    return "%s %s" % (case["out"]["dtype"], shapes)


#: At most this many Triton launches are recorded per call; a longer plan is refused.
MAX_LAUNCHES = 4096
#: The launch options a recorded launch may carry (num_warps=... beside the kernel's arguments).
LAUNCH_OPTIONS = ("num_warps", "num_stages", "num_ctas", "maxnreg", "enable_fp_fusion")
#: Size caps of what the verifier reads from a runner or witness (report.json).
MAX_REPORT_BYTES = 64 << 20


def _dtype_name(dtype):
    return str(dtype).replace("torch.", "")


# ---- the runner: the candidate's process ----

def _encode(value):
    """A kernel argument as JSON: a tensor by its storage (the key is the storage's address) and
    view, a Triton dtype by name, a scalar as itself; anything else is marked unsupported (the
    witness refuses it)."""
    import triton.language as tl
    if isinstance(value, torch.Tensor):
        s = value.untyped_storage()
        return {"tensor": {"key": s.data_ptr(), "nbytes": s.nbytes(), "offset": value.storage_offset(),
                           "shape": list(value.shape), "stride": list(value.stride()),
                           "dtype": _dtype_name(value.dtype)}}
    if isinstance(value, tl.constexpr):
        value = value.value
    if isinstance(value, tl.dtype):
        return {"tl_dtype": value.name}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    return {"unsupported": type(value).__name__}


class _Recorder:
    """Records every Triton launch (the launch plan of a call) by wrapping `run` of the JIT and
    interpreter kernel classes, before the candidate's module is imported. `run` of these
    classes is the innermost launch: autotune and heuristics call it with their final
    meta-parameters. Launches inside the autotuner's benchmarking are run, not recorded (the
    final launch is), so a plan is the call's real work."""

    def __init__(self):
        self.plan = None  # the launches of the call in progress, when one is being recorded
        self.overflow = False
        self.depth = 0
        self.benchmarking = 0
        self.names = set()
        import triton.runtime.jit as jit
        classes = [jit.JITFunction]
        try:
            from triton.runtime.interpreter import InterpretedFunction
            classes.append(InterpretedFunction)
        except ImportError:  # pragma: no cover - every Triton we ship has it
            pass
        for cls in classes:
            cls.run = self._wrap(cls.run)
        try:
            from triton.runtime.autotuner import Autotuner
            if hasattr(Autotuner, "_bench"):
                Autotuner._bench = self._benchmarking(Autotuner._bench)
        except ImportError:  # pragma: no cover
            pass

    def _benchmarking(self, bench):
        recorder = self

        def marked_bench(*args, **kwargs):
            recorder.benchmarking += 1
            try:
                return bench(*args, **kwargs)
            finally:
                recorder.benchmarking -= 1

        return marked_bench

    def _wrap(self, run):
        recorder = self

        def recorded_run(kernel, *args, grid, warmup=False, **kwargs):
            if warmup or recorder.depth or recorder.benchmarking or recorder.plan is None:
                return run(kernel, *args, grid=grid, warmup=warmup, **kwargs)
            launch, grid = recorder.describe(kernel, args, grid, kwargs)
            if len(recorder.plan) < MAX_LAUNCHES:
                recorder.plan.append(launch)
            else:
                recorder.overflow = True
            recorder.depth += 1
            try:  # the grid, evaluated once, is exactly the one recorded
                return run(kernel, *args, grid=grid, warmup=warmup, **kwargs)
            finally:
                recorder.depth -= 1

        return recorded_run

    def describe(self, kernel, args, grid, kwargs):
        """(the launch as JSON, the grid as a tuple of ints)."""
        fn = getattr(kernel, "fn", None)
        name = getattr(fn, "__name__", "?")
        self.names.add(name)
        try:
            sig = inspect.signature(fn)
            params = {k: v for k, v in kwargs.items() if k in sig.parameters}
            options = {k: v for k, v in kwargs.items() if k not in sig.parameters}
            bound = sig.bind(*args, **params)
            given = dict(bound.arguments)
            bound.apply_defaults()
            if callable(grid):
                grid = grid(dict(bound.arguments))
            grid = tuple(int(g) for g in grid)
            return {"kernel": name, "qualname": getattr(fn, "__qualname__", name),
                    "file": os.path.relpath(fn.__code__.co_filename, os.getcwd()), "grid": list(grid),
                    "args": {k: _encode(v) for k, v in given.items()},
                    "options": {k: _encode(v) for k, v in options.items()}}, grid
        except Exception as e:  # the launch itself will most likely fail too
            return {"kernel": name, "unrecordable": "%s: %s" % (type(e).__name__, str(e)[:200])}, grid

    def start(self):
        self.plan, self.overflow = [], False

    def stop(self):
        plan, self.plan = self.plan, None
        return plan


def _overlaps(a, b):
    if a.numel() == 0 or b.numel() == 0:
        return False
    a0, b0 = a.data_ptr(), b.data_ptr()
    a1 = a0 + a.untyped_storage().nbytes()
    b1 = b0 + b.untyped_storage().nbytes()
    return a0 < b1 and b0 < a1


def timed_reps(cases, reps, warmup, device, prepare, save_dir=None, perf=time.perf_counter, save=torch.save):
    """Time `reps` reps of each case, after `warmup` untimed ones. `prepare(case, seed)` builds
    what a rep needs (new input values every rep: seed + r) before its clock starts and returns
    (go, result): go() is the timed work, result() its output. L2 flushed before every rep;
    a device-wide synchronize before the clock starts and before it stops; CUDA events on the
    caller's stream beside the wall clock. Outputs saved as t{case}_r{rep}.pt when save_dir."""
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.int8, device=device) if cuda else None
    timings = []
    for i, case in enumerate(cases):
        for w in range(warmup):
            prepare(case, case["seed"] + 1000 + w)[0]()
        wall, event = [], []
        for r in range(reps):
            go, result = prepare(case, case["seed"] + r)
            if flush is not None:
                flush.zero_()
            sync()
            if cuda:
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
            t0 = perf()
            go()
            if cuda:
                e1.record()
            sync()
            t1 = perf()
            wall.append(t1 - t0)
            if cuda:
                event.append(e0.elapsed_time(e1) / 1e3)
            if save_dir:
                save(result().detach().cpu(), os.path.join(save_dir, "t%d_r%d.pt" % (i, r)))
            del go, result
        timings.append({"case": i, "wall_s": wall, "event_s": event})
    return timings


#: Where a process's compiles are cached: each points into its role's folder.
CACHE_VARS = ("TRITON_HOME", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR", "CUDA_CACHE_PATH", "XDG_CACHE_HOME")


def note_process():
    """One line per process of a role in the role's compile-cache folder (TRITON_HOME, made by
    kernel_kit.Verifier.role_cache): the processes of a role share it, and no other role's."""
    folder, role = os.environ.get("TRITON_HOME"), os.environ.get("RDBENCH_ROLE")
    if folder and role:
        caches = {k: os.environ.get(k) for k in CACHE_VARS}
        try:
            with open(os.path.join(folder, "processes"), "a") as f:
                f.write(json.dumps({"role": role, "pid": os.getpid(), "caches": caches}) + "\n")
        except OSError:
            pass

