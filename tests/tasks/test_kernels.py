"""The Triton kernel tasks and their shared verifier (harness/kernel_kit.py), through the real
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
from harness.verify import prepare
from sandbox import SandboxConfig
from sandbox.docker import DockerSandbox
from tests.conftest import TASKS, rdbench

KERNEL_TASKS = ["triton-softmax", "triton-rmsnorm", "triton-matmul-epilogue", "triton-causal-attention"]
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
    assert v["details"]["kernels"], "no Triton kernel was counted"
    assert v["details"]["isolated"] is True
    if not detect_gpus():
        assert v["value"] is None and "unavailable" in v["details"]["unavailable"]
        assert v["details"]["right_without_triton"].startswith("0 of")


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
''', "still right with every Triton launch skipped"),
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
import sys
sys.path[:0] = ["/verifier"]
import kernel_kit as kk, verify_kit as kit, verify
problem = verify.PROBLEM
problem.bench_cases = lambda gpu: [verify.softmax_case("float32", 5, 40)]
v = kk.Verifier(problem, kit)
b, c, ok, note, extra = v.timing()
print(b, c, ok, note, extra)
assert ok and len(b) == len(c) == kit.repeats() and all(t > 0 for t in b + c), note
assert "vs_compile" in extra
print("timing ok")
'''


def test_the_timing_path_runs_in_the_interpreter(base_image, docker_client, tmp_path):
    """The GPU timing code (runner time mode, interleaved eager and candidate processes, the
    re-check of timed outputs, torch.compile) driven on the CPU, where no GPU can time it."""
    task = load_task(TASKS / "triton-softmax")
    config = SandboxConfig(image=base_image, role="verifier", workdir="/verifier", memory="4g",
                           env={"RDBENCH_REPEATS": "2", "RDBENCH_SUBMISSION": "/submission"})
    with DockerSandbox(config, docker_client) as sb:
        prepare(sb, task)
        sb.copy_in(submission(tmp_path, "triton-softmax"), "/submission", owner=0, mode=0o700)
        sb.write_file("/verifier/timing.py", TIMING.encode())
        r = sb.exec(["python3", "timing.py"], cwd="/verifier", timeout=900)
        assert r.ok and "timing ok" in r.stdout, r.stdout + r.stderr[-3000:]


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
@pytest.mark.parametrize("task", KERNEL_TASKS)
def test_oracle_beats_eager_on_a_gpu(base_image, tmp_path, task):
    v = verify(task, submission(tmp_path, task))
    assert v["correct"] is True, v["details"].get("failure")
    assert v["value"] > 1.0, v
