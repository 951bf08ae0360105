"""The cheats of the Triton kernel tasks, as data: each a real submission (the task's solution,
or workspace, edited) that the kernel verifier must fail, with the reason it must give. Used by
tests/tasks/test_kernels.py and by benchmarks/kernels_gpu.py (which runs on a bare GPU
machine: this module needs nothing but the standard library)."""

from __future__ import annotations

import shutil
from pathlib import Path

TASKS = Path(__file__).resolve().parent.parent.parent / "tasks"

KERNEL_TASKS = ["triton-softmax", "triton-rmsnorm", "triton-matmul-epilogue", "triton-causal-attention"]
#: The verdict of the witness (harness/kits/kernel_kit.py) when its replay of the recorded launches disagrees.
NOT_TRITONS = "the output was not produced by the recorded Triton launches"


def submission(tmp_path: Path, task: str, *, solution: bool = True, append: str = "", replace=()) -> Path:
    """The task's workspace, overlaid with its solution, then `kernel.py` edited."""
    sub = tmp_path / "submission"
    shutil.copytree(TASKS / task / "workspace", sub)
    if solution:
        shutil.copytree(TASKS / task / "solution", sub, dirs_exist_ok=True)
    kernel = sub / "kernel.py"
    text = kernel.read_text()
    for old, new in replace:
        assert old in text, old
        text = text.replace(old, new)
    kernel.write_text(text + append)
    return sub


PRELUDE = '''
import threading
import time

import torch

fast_softmax = softmax


@triton.jit
def copy_kernel(src, dst, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(dst + offs, tl.load(src + offs, mask=offs < n), mask=offs < n)


def decoy_launch(x):
    """A Triton launch that does nothing useful, so that launch counters see one."""
    copy_kernel[(1,)](x, torch.empty_like(x), 0, BLOCK=16)
'''

CHEATS = {
    "caches outputs (memoised on the input's shape)": ('''
memo = {}


def softmax(x, out):
    key = (tuple(x.shape), x.dtype)
    if key not in memo:
        fast_softmax(x, out)
        memo[key] = out.clone()
    copy_kernel[(triton.cdiv(out.numel(), 1024),)](memo[key], out, out.numel(), BLOCK=1024)
''', "wrong output"),
    "returns an aliased input": ('''
def softmax(x, out):
    fast_softmax(x, x)  # in place, then hand the input back
    return x
''', "returned one of its inputs"),
    "re-points out at an input": ('''
def softmax(x, out):
    fast_softmax(x, x)
    out.set_(x)
''', "re-pointed"),
    "falls back to torch": ('''
def softmax(x, out):
    out.copy_(torch.softmax(x.float(), dim=-1))
''', "no Triton kernel was launched"),
    "falls back to torch behind a decoy Triton launch": ('''
def softmax(x, out):
    decoy_launch(x)
    out.copy_(torch.softmax(x.float(), dim=-1))
''', NOT_TRITONS),
    "defers the work past the return (a thread)": ('''
def softmax(x, out):
    decoy_launch(x)

    def later():
        time.sleep(0.5)
        fast_softmax(x, out)

    threading.Thread(target=later, daemon=True).start()
''', "non-finite values"),
    "returns a lazy tensor subclass that computes when the checker reads it": ('''
class Lazy(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        with torch._C.DisableTorchFunctionSubclass():
            for a in args:
                if type(a) is Lazy and getattr(a, "pending", None) is not None:
                    x, a.pending = a.pending, None
                    fast_softmax(x, a.as_subclass(torch.Tensor))
            return func(*args, **(kwargs or {}))


def softmax(x, out):
    decoy_launch(x)
    lazy = out.as_subclass(Lazy)
    lazy.pending = x
    return lazy
''', "returned a Lazy, a torch.Tensor subclass"),
    "turns out into a tensor subclass": ('''
class Marked(torch.Tensor):
    pass


def softmax(x, out):
    fast_softmax(x, out)
    out.__class__ = Marked
''', "turned `out` into a Marked"),
}


FLAG = '''
import torch
import torch.nn.functional as F


@triton.jit
def set_flag(flag_ptr):
    tl.store(flag_ptr, 1)


def launched():
    """True when a Triton launch really ran: a run that skips launches sees the flag unset."""
    flag = torch.zeros(1, dtype=torch.int32)
    set_flag[(1,)](flag)
    return flag.item() == 1
'''

DECOYS = {
    # (a) right only when its decoy kernel ran, else NaN: the no-launch run saw it wrong
    "softmax by PyTorch behind a self-checking decoy kernel": ("triton-softmax", FLAG + '''

def softmax(x, out):
    if launched():
        out.copy_(torch.softmax(x.float(), dim=-1))
'''),
    # (b) the same with PyTorch's fused attention
    "attention by SDPA behind a self-checking decoy kernel": ("triton-causal-attention", FLAG + '''

def causal_attention(q, k, v, out):
    if launched():
        out.copy_(F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True))
'''),
    # (c) tells the runs apart by reading the runner's job file
    "softmax by PyTorch, told the runs apart by the runner's job file": ("triton-softmax", PRELUDE + '''
import json
import os
import sys


def which_run():
    job = sys.argv[-1] if sys.argv[-1].endswith(".json") else os.path.join(os.path.dirname(os.getcwd()), "job.json")
    with open(job) as f:
        return json.load(f).get("mode")


def softmax(x, out):
    decoy_launch(x)
    if which_run() != "noop":
        out.copy_(torch.softmax(x.float(), dim=-1))
'''),
}


# (d) no Triton at all: the docstring passes the static check, PyTorch computes, and at exit
# the runner's result files are rewritten: the report claims a launch per call (an old no-launch
# run gets NaN outputs instead), and on the timing path its times are divided by 100.
FORGER = '''"""Row softmax: our kernel is written with @triton.jit, of course."""

import atexit
import glob
import json
import os
import sys

import torch


def softmax(x, out):
    out.copy_(torch.softmax(x.float(), dim=-1))


def forge():
    with open(sys.argv[-1]) as f:
        job = json.load(f)
    results = job["results"]
    outputs = glob.glob(os.path.join(results, "*.pt"))
    if job.get("mode") == "noop":
        for path in outputs:
            torch.save(torch.full_like(torch.load(path), float("nan")), path)
        return
    with open(os.path.join(results, "report.json")) as f:
        report = json.load(f)
    for call in report.get("calls", []):
        call["launches"] = 1
        plan = call.get("plan") or {"inputs": [1], "out": 2}
        plan["launches"] = [{"kernel": "softmax_rows", "file": "kernel.py", "grid": [1], "args": {}, "options": {}}]
        call["plan"] = plan
    for timing in report.get("timings", []):
        timing["launches"] = 20
        timing["wall_s"] = [t / 100 for t in timing["wall_s"]]
        timing["event_s"] = [t / 100 for t in timing["event_s"]]
    report["kernels"] = ["softmax_rows"]
    with open(os.path.join(results, "report.json"), "w") as f:
        json.dump(report, f)
    for path in outputs:  # forged right answers (these are right already: PyTorch's)
        torch.save(torch.load(path), path)


atexit.register(forge)
'''


def forger(tmp_path: Path) -> Path:
    sub = tmp_path / "submission"
    sub.mkdir()
    (sub / "kernel.py").write_text(FORGER)
    return sub


# (e) kernel bodies that reach past Triton: in the interpreter a body runs as plain Python
ESCAPES = {
    "calls PyTorch through a module-level function": ('''
@triton.jit
def escape_kernel(x_ptr):
    host_softmax()
''', "PENDING (line"),
    "uses __import__": ('''
@triton.jit
def escape_kernel(x_ptr):
    __import__("kernel").host_softmax()
''', "the builtin __import__ is not allowed in a Triton kernel"),
    "uses an attribute starting with _": ('''
@triton.jit
def escape_kernel(x_ptr):
    host_softmax.__call__()
''', "the attribute .__call__ is not allowed in a Triton kernel"),
}

ESCAPE_HOST = '''
import torch

PENDING = []


def host_softmax():
    x, out = PENDING.pop()
    out.copy_(torch.softmax(x.float(), dim=-1))
'''

ESCAPE_CALL = '''

def softmax(x, out):
    PENDING.append((x, out))
    escape_kernel[(1,)](x)
'''


SIDE_STREAM = '''
streams = []


def softmax(x, out):
    if not streams:
        streams.append(torch.cuda.Stream())
    with torch.cuda.stream(streams[0]):
        fast_softmax(x, out)
'''

#: RMS norm computed in float16 arithmetic: fine for the float16 cases, wrong for float32.
PRECISION_STORE = "(x * rstd * w).to(out_ptr.dtype.element_ty), mask=mask)"
PRECISION = [(PRECISION_STORE, PRECISION_STORE.replace(
    "x * rstd * w", "x.to(tl.float16) * rstd.to(tl.float16) * w.to(tl.float16)"))]
NO_TRITON = "import torch\n\n\ndef softmax(x, out):\n    out.copy_(torch.softmax(x, -1))\n"


def no_triton(tmp_path: Path) -> Path:
    sub = tmp_path / "submission"
    sub.mkdir()
    (sub / "kernel.py").write_text(NO_TRITON)
    return sub


def catalogue(gpu: bool = True) -> dict:
    """Every cheat: name -> (task, a function of a fresh folder making the submission, the reason
    the verdict must give). The side stream only with a GPU."""
    found = {}
    for name, (code, reason) in CHEATS.items():
        found[name] = ("triton-softmax", lambda d, code=code: submission(d, "triton-softmax", append=PRELUDE + code),
                       reason)
    for name, (task, code) in DECOYS.items():
        found[name] = (task, lambda d, task=task, code=code: submission(d, task, append=code), NOT_TRITONS)
    found["no Triton at all, forged runner files"] = ("triton-softmax", forger, NOT_TRITONS)
    for name, (body, reason) in ESCAPES.items():
        found["kernel body " + name] = ("triton-softmax", lambda d, body=body: submission(
            d, "triton-softmax", append=ESCAPE_HOST + body + ESCAPE_CALL), reason)
    found["precision downgrade"] = ("triton-rmsnorm", lambda d: submission(d, "triton-rmsnorm", replace=PRECISION),
                                    "wrong output")
    found["no @triton.jit kernel"] = ("triton-softmax", no_triton, "no @triton.jit kernel")
    if gpu:
        found["runs on a side stream"] = ("triton-softmax", lambda d: submission(
            d, "triton-softmax", append=PRELUDE + SIDE_STREAM), "stream")
    return found
