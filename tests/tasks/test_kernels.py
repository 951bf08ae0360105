"""The Triton kernel tasks and their shared verifier (harness/kits/kernel_kit.py), through the real
`rdbench verify`, in real verifier sandboxes.

Without a GPU the verifier checks correctness in the Triton interpreter (small cases), so
every test here runs in a few seconds of interpreted kernels. Each cheat is a real
submission: the reference solution plus a few lines that cheat one way; each must fail, for
the reason the verifier gives. Tests that need a GPU (a side stream, measured speedups) skip
cleanly without one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.cores import detect_gpus
from harness.task import load_task
from harness.verify import prepare, write_params
from sandbox import SandboxConfig
from sandbox.docker import DockerSandbox
from tests.conftest import TASKS, rdbench

KERNEL_TASKS = ["triton-softmax", "triton-rmsnorm", "triton-matmul-epilogue", "triton-causal-attention"]
#: The verdict of the witness (harness/kits/kernel_kit.py) when its replay of the recorded launches disagrees.
NOT_TRITONS = "the output was not produced by the recorded Triton launches"
pytestmark = pytest.mark.slow
needs_gpu = pytest.mark.skipif(not detect_gpus(), reason="no NVIDIA GPU on this machine")


def verify(task: str, submission: Path) -> dict:
    r = rdbench("verify", str(TASKS / task), "--submission", str(submission), "--repeats", "1", timeout=1800)
    assert r.returncode in (0, 3), r.stdout + r.stderr
    return json.loads(r.stdout)


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


def failure(v: dict) -> str:
    assert v["correct"] is False, v
    return v["details"]["failure"]


@pytest.mark.parametrize("task", KERNEL_TASKS)
@pytest.mark.parametrize("agent", ["oracle", "nop"])
def test_reference_and_naive_baseline_pass(base_image, tmp_path, task, agent):
    """The oracle (solution/) and nop (the workspace's naive Triton kernel) are correct on the
    hidden cases; with no GPU the speedup is unavailable, not a number."""
    v = verify(task, submission(tmp_path, task, solution=agent == "oracle"))
    assert v["correct"] is True, v["details"].get("failure")
    assert v["details"]["kernels"] and all(k.startswith("kernel.py:") for k in v["details"]["kernels"]), v["details"]
    assert "replayed by the witness" in v["details"]["witness"]
    assert v["details"]["isolated"] is True
    if not detect_gpus():
        assert v["value"] is None and "unavailable" in v["details"]["unavailable"]


# ---- the cheats: each appended to the reference solution of triton-softmax ----

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


@pytest.mark.parametrize("cheat", list(CHEATS))
def test_cheat_fails(base_image, tmp_path, cheat):
    code, reason = CHEATS[cheat]
    v = verify("triton-softmax", submission(tmp_path, "triton-softmax", append=PRELUDE + code))
    assert reason in failure(v)


# ---- decoys and forgers that beat a "skip every Triton launch" run: the witness's replay ----

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


@pytest.mark.parametrize("decoy", list(DECOYS))
def test_decoy_fails(base_image, tmp_path, decoy):
    """A decoy Triton launch in front of a PyTorch fallback, which knows whether its launch ran:
    the witness replays only the decoy, so `out` stays NaN there."""
    task, code = DECOYS[decoy]
    why = failure(verify(task, submission(tmp_path, task, append=code)))
    assert NOT_TRITONS in why and "non-finite" in why, why


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


def test_forged_runner_files_fail(base_image, tmp_path):
    why = failure(verify("triton-softmax", forger(tmp_path)))
    assert NOT_TRITONS in why and "softmax_rows is not a top-level def" in why, why


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


@pytest.mark.parametrize("escape", list(ESCAPES))
def test_kernel_body_outside_the_whitelist_fails(base_image, tmp_path, escape):
    body, reason = ESCAPES[escape]
    why = failure(verify("triton-softmax", submission(tmp_path, "triton-softmax", append=ESCAPE_HOST + body + ESCAPE_CALL)))
    assert NOT_TRITONS in why and reason in why, why


def test_precision_downgrade_fails(base_image, tmp_path):
    """RMS norm computed in float16 arithmetic: fine for the float16 cases, wrong for float32."""
    store = "(x * rstd * w).to(out_ptr.dtype.element_ty), mask=mask)"
    sub = submission(tmp_path, "triton-rmsnorm", replace=[(store, store.replace(
        "x * rstd * w", "x.to(tl.float16) * rstd.to(tl.float16) * w.to(tl.float16)"))])
    why = failure(verify("triton-rmsnorm", sub))
    assert "wrong output" in why and "float32" in why


def test_no_triton_kernel_fails_the_static_check(base_image, tmp_path):
    sub = tmp_path / "submission"
    sub.mkdir()
    (sub / "kernel.py").write_text("import torch\n\n\ndef softmax(x, out):\n    out.copy_(torch.softmax(x, -1))\n")
    assert "no @triton.jit kernel" in failure(verify("triton-softmax", sub))


# ---- the solutions' GPU-only branches, run in the interpreter with forced block sizes ----

BRANCHES = r'''
import importlib.util, sys, torch

def load(task, name):
    spec = importlib.util.spec_from_file_location(name, "/tmp/%s/%s" % (task, "solution/kernel.py" if name == "kernel" else "verifier/reference.py"))
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m

def close(got, want, tol):
    err = (got.double() - want.double()).abs().max().item()
    assert err < tol, err

torch.manual_seed(0)
k, ref = load("triton-softmax", "kernel"), load("triton-softmax", "reference")
x = torch.randn(5, 100) * 3
out = torch.full_like(x, float("nan"))
k.softmax_online[(5,)](x, out, 100, BLOCK=16)
close(out, ref.reference(x.double()), 1e-6)

k, ref = load("triton-rmsnorm", "kernel"), load("triton-rmsnorm", "reference")
x, w = torch.randn(4, 100), torch.randn(100)
out = torch.full_like(x, float("nan"))
k.rmsnorm_whole_row[(2,)](x, w, out, 4, 100, 1e-6, BLOCK=128, ROWS=3)  # rows do not divide evenly
close(out, ref.reference(x.double(), w.double(), 1e-6), 1e-5)

k, ref = load("triton-matmul-epilogue", "kernel"), load("triton-matmul-epilogue", "reference")
a, b, bias = torch.randn(70, 50), torch.randn(50, 90) / 7, torch.randn(90)
out = torch.full((70, 90), float("nan"))
grid = (((70 + 15) // 16) * ((90 + 31) // 32),)
k.matmul_tiles[grid](a, b, bias, out, 70, 90, 50, BM=16, BN=32, BK=16, GROUP=2)
close(out, ref.reference(a.double(), b.double(), bias.double()), 1e-4)

k, ref = load("triton-causal-attention", "kernel"), load("triton-causal-attention", "reference")
q, kk, v = (torch.randn(1, 2, 75, 16) for _ in range(3))
out = torch.full_like(q, float("nan"))
k.flash_attention[((75 + 31) // 32, 2)](q, kk, v, out, 75, 16 ** -0.5 * 1.4426950408889634, D=16, BM=32, BN=16)
close(out, ref.reference(q.double(), kk.double(), v.double()), 1e-4)
print("branches ok")
'''


def test_solution_branches_for_the_gpu_are_correct_in_the_interpreter(base_image, docker_client):
    """The solutions' paths that the small CPU cases never take (wide rows, autotuned tiles,
    blocks before the diagonal), computed in the interpreter with block sizes forced small."""
    with DockerSandbox(SandboxConfig(image=base_image, env={"TRITON_INTERPRET": "1"}), docker_client) as sb:
        for task in KERNEL_TASKS:
            sb.copy_in(TASKS / task, f"/tmp/{task}")
        sb.write_file("/tmp/branches.py", BRANCHES.encode())
        r = sb.exec(["python3", "/tmp/branches.py"], timeout=600)
        assert r.ok and "branches ok" in r.stdout, r.stdout + r.stderr


TIMING = r'''
import json
import sys
sys.path[:0] = ["/verifier"]
import kernel_kit as kk, verify_kit as kit, verify
problem = verify.PROBLEM
problem.bench_cases = lambda gpu: [verify.softmax_case("float32", 5, 40)]
v = kk.Verifier(problem, kit)
b, c, ok, note, extra = v.timing()
print("TIMING " + json.dumps({"b": b, "c": c, "ok": ok, "note": note, "extra": extra}))
'''


def drive_timing(base_image, docker_client, sub: Path) -> dict:
    task = load_task(TASKS / "triton-softmax")
    config = SandboxConfig(image=base_image, role="verifier", workdir="/verifier", memory="4g")
    with DockerSandbox(config, docker_client) as sb:
        prepare(sb, task)
        write_params(sb, task, repeats=2)
        sb.copy_in(sub, "/submission", owner=0, mode=0o700)
        sb.write_file("/verifier/timing.py", TIMING.encode())
        r = sb.exec(["python3", "timing.py"], cwd="/verifier", timeout=900)
        assert r.ok and "TIMING " in r.stdout, r.stdout + r.stderr[-3000:]
        return json.loads(r.stdout.split("TIMING ", 1)[1].splitlines()[0])


def test_the_timing_path_runs_in_the_interpreter(base_image, docker_client, tmp_path):
    """The GPU timing code (the bench cases' launch plans recorded and checked, interleaved eager
    and witness processes, the re-check of timed outputs, torch.compile) driven on the CPU,
    where no GPU can time it."""
    t = drive_timing(base_image, docker_client, submission(tmp_path, "triton-softmax"))
    assert t["ok"] and len(t["b"]) == len(t["c"]) == 2 and all(x > 0 for x in t["b"] + t["c"]), t
    assert "vs_compile" in t["extra"]


@pytest.mark.parametrize("cheat", ["decoy", "forger"])
def test_the_timing_path_refuses_a_decoy_and_a_forger(base_image, docker_client, tmp_path, cheat):
    """On the timing path too: the candidate is timed by the witness replaying recorded launches,
    so neither a PyTorch fallback behind a decoy nor forged runner files get a speedup."""
    if cheat == "decoy":
        sub = submission(tmp_path, "triton-softmax", append=DECOYS["softmax by PyTorch behind a self-checking decoy kernel"][1])
    else:
        sub = forger(tmp_path)
    t = drive_timing(base_image, docker_client, sub)
    assert t["ok"] is False and NOT_TRITONS in t["note"], t


# ---- on a GPU only ----

SIDE_STREAM = '''
streams = []


def softmax(x, out):
    if not streams:
        streams.append(torch.cuda.Stream())
    with torch.cuda.stream(streams[0]):
        fast_softmax(x, out)
'''


@needs_gpu
def test_side_stream_fails(base_image, tmp_path):
    why = failure(verify("triton-softmax", submission(tmp_path, "triton-softmax", append=PRELUDE + SIDE_STREAM)))
    assert "stream" in why


@needs_gpu
@pytest.mark.parametrize("decoy", list(DECOYS))
def test_decoy_fails_on_a_gpu(base_image, tmp_path, decoy):
    """The decoys on a GPU: bench cases and timing included, the verdict rests on the witness."""
    task, code = DECOYS[decoy]
    why = failure(verify(task, submission(tmp_path, task, append=code)))
    assert NOT_TRITONS in why, why


@needs_gpu
def test_forged_runner_files_fail_on_a_gpu(base_image, tmp_path):
    assert NOT_TRITONS in failure(verify("triton-softmax", forger(tmp_path)))


@needs_gpu
@pytest.mark.parametrize("task", KERNEL_TASKS)
def test_oracle_beats_eager_on_a_gpu(base_image, tmp_path, task):
    v = verify(task, submission(tmp_path, task))
    assert v["correct"] is True, v["details"].get("failure")
    assert v["value"] > 1.0, v
