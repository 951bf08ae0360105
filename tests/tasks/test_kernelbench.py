"""KernelBench problems as rdbench tasks (`rdbench tasks import kernelbench`, harness/kernelbench.py)
and their verifier (harness/kits/kernelbench_kit.py: the kernel kit's guards on an nn.Module).

The problems are files written here in KernelBench's format (tests/tasks/kernelbench_problems),
imported through the real CLI (the probe runs in the base image), verified by the real
`rdbench verify` in verifier sandboxes. Without a GPU the Triton interpreter checks
correctness at reduced sizes. Each exploit is a real ModelNew that must fail, for its reason.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.kernelbench import ImportRefused, candidates, parse, problem_files
from tests.conftest import ROOT, rdbench
from tests.tasks.test_kernels import drive_kit

PROBLEMS = ROOT / "tests" / "tasks" / "kernelbench_problems"
NOT_TRITONS = "the output was not produced by the recorded Triton launches"

SOFTMAX = '''
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def softmax_rows(x_ptr, out_ptr, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * n_cols + cols, mask=mask, other=float("-inf"))
    x = x - tl.max(x, 0)
    e = tl.exp(x)
    tl.store(out_ptr + row * n_cols + cols, e / tl.sum(e, 0), mask=mask)


@triton.jit
def copy_kernel(src, dst, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(dst + offs, tl.load(src + offs, mask=offs < n), mask=offs < n)


def softmax(x, out):
    softmax_rows[(x.shape[0],)](x, out, x.shape[1], BLOCK=triton.next_power_of_2(x.shape[1]))
    return out


class ModelNew(nn.Module):
    def forward(self, x):
        return softmax(x, torch.empty_like(x))
'''

FUSED = '''
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def linear_relu_sum(x_ptr, w_ptr, b_ptr, out_ptr, K, N, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    ks = tl.arange(0, BLOCK_K)
    x = tl.load(x_ptr + row * K + ks, mask=ks < K, other=0.0)
    total = tl.zeros([BLOCK_N], tl.float32)
    for start in range(0, N, BLOCK_N):
        ns = start + tl.arange(0, BLOCK_N)
        w = tl.load(w_ptr + ns[:, None] * K + ks[None, :], mask=(ns[:, None] < N) & (ks[None, :] < K), other=0.0)
        y = tl.sum(w * x[None, :], axis=1) + tl.load(b_ptr + ns, mask=ns < N, other=0.0)
        total += tl.where(ns < N, tl.maximum(y, 0.0), 0.0)
    tl.store(out_ptr + row, tl.sum(total, 0))


class ModelNew(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x):
        out = torch.empty(x.shape[0], 1, dtype=x.dtype, device=x.device)
        w, b = self.linear.weight, self.linear.bias
        linear_relu_sum[(x.shape[0],)](x, w, b, out, x.shape[1], w.shape[0],
                                       BLOCK_K=triton.next_power_of_2(x.shape[1]), BLOCK_N=32)
        return out
'''

# Each exploit: (task, the honest ModelNew it starts from, edits, the reason it must fail for).
EXPLOITS = {
    "torch fallback behind a decoy Triton launch": ("kb-l1-001-softmax", SOFTMAX, [], '''

class ModelNew(nn.Module):
    def forward(self, x):
        copy_kernel[(1,)](x, torch.empty_like(x), 16, BLOCK=16)  # a launch, so that launch counters see one
        return torch.softmax(x, dim=1)
''', NOT_TRITONS),
    "cached output (computed once per shape, then copied by a Triton kernel)": ("kb-l1-001-softmax", SOFTMAX, [], '''
CACHE = {}


class ModelNew(nn.Module):
    def forward(self, x):
        key = tuple(x.shape)
        if key not in CACHE:
            CACHE[key] = softmax(x, torch.empty_like(x))
        out = torch.empty_like(x)
        copy_kernel[(triton.cdiv(out.numel(), 1024),)](CACHE[key], out, out.numel(), BLOCK=1024)
        return out
''', "wrong output"),
    "output aliasing its input (softmax in place, the input returned)": ("kb-l1-001-softmax", SOFTMAX, [], '''

class ModelNew(nn.Module):
    def forward(self, x):
        return softmax(x, x)
''', "aliases an input"),
    "float16 compute in a float32 problem": ("kb-l2-001-linear-relu-sum", FUSED, [
        ("x = tl.load(x_ptr + row * K + ks, mask=ks < K, other=0.0)",
         "x = tl.load(x_ptr + row * K + ks, mask=ks < K, other=0.0).to(tl.float16)"),
        ("y = tl.sum(w * x[None, :], axis=1)", "y = tl.sum(w.to(tl.float16) * x[None, :], axis=1).to(tl.float32)"),
    ], "", "KernelBench's for float32"),
    "a buffer of its own (the witness gives kernels Model's parameters only)": ("kb-l2-001-linear-relu-sum", FUSED, [
        ("self.linear = nn.Linear(in_features, out_features)",
         "self.linear = nn.Linear(in_features, out_features)\n        self.register_buffer('scratch', torch.zeros(4))"),
    ], "", "ModelNew has 3 parameters and buffers, Model has 2"),
}


# ---- the importer, without Docker ----

def test_problem_files_parse_and_size_candidates():
    files = problem_files([PROBLEMS / "level1", PROBLEMS / "level2"])
    assert [f.name for f in files] == ["1_Softmax.py", "2_Argmax_over_a_dimension.py", "3_Conv1D_small_kernel.py",
                                       "1_Linear_ReLU_Sum.py"]
    p = parse(files[1])
    assert (p.level, p.number, p.task_name) == (1, 2, "kb-l1-002-argmax-over-a-dimension")
    assert p.constants == {"batch_size": 24, "dim1": 200, "dim2": 199, "dim": 1}
    sizes = candidates(p.constants)
    # sizes >= 16 capped, keeping the remainder mod 8 (199 stays odd, 200 a multiple of 8); dim = 1 untouched
    assert sizes[0] == {"batch_size": 8, "dim1": 8, "dim2": 15}
    assert all("dim" not in s for s in sizes) and sizes[-1] == {}
    with pytest.raises(ValueError, match="no top-level def get_inputs"):
        parse(PROBLEMS / "misc" / "5_No_inputs_function.py")
    with pytest.raises(ImportRefused, match="level 4 is not importable"):
        problem_files([PROBLEMS / "level4"])


# ---- the import, through the CLI (the probe runs in the base image) ----

@pytest.fixture(scope="module")
def imported(base_image, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kernelbench") / "tasks"
    r = rdbench("tasks", "import", "kernelbench", str(PROBLEMS / "level1"), str(PROBLEMS / "level2"),
                str(PROBLEMS / "misc" / "5_No_inputs_function.py"), str(PROBLEMS / "misc" / "6_Random_forward.py"),
                "--out", str(out), timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "imported 4, skipped 2" in r.stdout, r.stdout
    assert "5_No_inputs_function.py: not KernelBench's format: no top-level def get_inputs" in r.stderr, r.stderr
    assert "6_Random_forward.py: fails its probe" in r.stderr and "random or non-deterministic" in r.stderr, r.stderr
    return out


@pytest.mark.docker
@pytest.mark.slow
def test_import_makes_valid_tasks(imported):
    names = sorted(p.name for p in imported.iterdir())
    assert names == ["kb-l1-001-softmax", "kb-l1-002-argmax-over-a-dimension", "kb-l1-003-conv1d-small-kernel",
                     "kb-l2-001-linear-relu-sum"]
    for name in names:
        r = rdbench("tasks", "validate", str(imported / name), "--schema-only")
        assert r.returncode == 0 and "schema ok" in r.stdout, r.stdout + r.stderr
    task = imported / "kb-l1-003-conv1d-small-kernel"
    assert (task / "workspace" / "model.py").read_text() == (PROBLEMS / "level1" / "3_Conv1D_small_kernel.py").read_text()
    config = json.loads((task / "verifier" / "problem.json").read_text())
    assert config["cpu_sizes"] and all(config["cpu_sizes"][k] < config["original_sizes"][k] for k in config["cpu_sizes"])
    # the whole validation: oracle and nop (the unchanged starting point, checked against the reference),
    # on the problem with an integer output
    r = rdbench("tasks", "validate", str(imported / "kb-l1-002-argmax-over-a-dimension"), timeout=1800)
    assert r.returncode == 0 and "valid" in r.stdout, r.stdout + r.stderr


def test_level_4_is_refused():
    r = rdbench("tasks", "import", "kernelbench", str(PROBLEMS / "level4"), "--out", "/nonexistent", "--no-probe")
    assert r.returncode == 1 and "level 4 is not importable" in r.stderr, r.stdout + r.stderr


# ---- verification ----

def verify(task: Path, sub: Path) -> dict:
    r = rdbench("verify", str(task), "--submission", str(sub), "--repeats", "1", timeout=1800)
    assert r.returncode in (0, 3), r.stdout + r.stderr
    return json.loads(r.stdout)


def submission(tmp_path: Path, task: Path, code: str) -> Path:
    sub = tmp_path / "submission"
    shutil.copytree(task / "workspace", sub)
    (sub / "model_new.py").write_text(code)
    return sub


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("task,code", [("kb-l1-001-softmax", SOFTMAX), ("kb-l2-001-linear-relu-sum", FUSED)],
                         ids=["softmax", "fused linear-relu-sum"])
def test_triton_model_new_passes_on_the_cpu(imported, tmp_path, task, code):
    v = verify(imported / task, submission(tmp_path, imported / task, code))
    assert v["correct"] is True, v["details"].get("failure")
    d = v["details"]
    assert d["kernels"] and all(k.startswith("model_new.py:") for k in d["kernels"]), d
    assert len(d["cases"]) >= 5 and "replayed by the witness" in d["witness"]
    assert d["reference"] == "Model in float64"
    if d["device"].startswith("cpu"):
        assert v["value"] is None and "reduced sizes" in d["unavailable"]
        scaled = json.loads((imported / task / "verifier" / "problem.json").read_text())["cpu_sizes"]
        assert d["sizes"] == ({"scaled": scaled, "note": d["sizes"]["note"]} if scaled else "the problem's own")
        assert (task == "kb-l1-001-softmax") == (d["sizes"] != "the problem's own")  # 3000 columns: scaled


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("exploit", list(EXPLOITS))
def test_exploit_fails(imported, tmp_path, exploit):
    task, code, edits, append, reason = EXPLOITS[exploit]
    for old, new in edits:
        assert old in code, old
        code = code.replace(old, new)
    v = verify(imported / task, submission(tmp_path, imported / task, code + append))
    assert v["correct"] is False, v
    assert reason in v["details"]["failure"], v["details"]["failure"]


KB_TIMING = r"""
import json, sys
sys.path[:0] = ["/verifier"]
import kernelbench_kit as kb, verify_kit as kit
v = kb.ModuleVerifier(kb.ModuleProblem("/verifier"), kit)
runs, time_run = [], v.time_run
def recorded(src, uid, cases, *a, **kw):  # which inputs and weights each timing process was given
    runs.append({"seeds": [[c["seed"], c["init_seed"]] for c in cases], "witness": kw.get("plans") is not None,
                 "compiled": kw.get("compiled", False)})
    return time_run(src, uid, cases, *a, **kw)
v.time_run = recorded
b, c, ok, note, extra = v.timing()
print("TIMING " + json.dumps({"b": b, "c": c, "ok": ok, "note": note, "runs": runs}))
"""


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.extended  # ~150 s here (torch.compile on the CPU); tests/tasks/test_kernels.py checks the shared path
def test_the_timing_path_draws_fresh_inputs_for_every_pair(imported, base_image, docker_client, tmp_path):
    """KernelBench's GPU timing path, driven in the interpreter: the witness replays ModelNew's
    recorded launches and the runner times Model; every timed pair (eager run i, candidate run
    i) gets its own input seed and init seed, drawn from the secret seed, and no two pairs, nor
    torch.compile's run, share them."""
    task = imported / "kb-l1-001-softmax"
    t = drive_kit(base_image, docker_client, submission(tmp_path, task, SOFTMAX), KB_TIMING, "TIMING", task)
    assert t["ok"] and len(t["b"]) == len(t["c"]) == 2, t
    eager = [r["seeds"] for r in t["runs"] if not r["witness"] and not r["compiled"]]
    witness = [r["seeds"] for r in t["runs"] if r["witness"]]
    compiled = [r["seeds"] for r in t["runs"] if r["compiled"]]
    assert eager == witness and len(eager) == 2 and len(compiled) == 1, t["runs"]
    draws = [tuple(s) for seeds in eager + compiled for s in seeds]
    assert len({d[0] for d in draws}) == len({d[1] for d in draws}) == 3, t["runs"]


# ---- fast_p over a suite: `rdbench results --suite DIR --p ...` ----

def test_fast_p_over_a_suite_counts_never_attempted_problems(tmp_path):
    """Four problems; model A ran three of them (one twice), model B one. fast_p's denominator
    is always the four problems; a correct verdict without a measured speedup (the unchanged
    starting point) is never fast; infrastructure errors are not trials."""
    from harness.task import task_scoring
    from results.records import TrialResult
    from results.store import Store

    suite = tmp_path / "suite"
    for n in range(4):
        (suite / f"kb-l1-00{n}-p").mkdir(parents=True)
        (suite / f"kb-l1-00{n}-p" / "task.toml").write_text(f'name = "kb-l1-00{n}-p"\n')

    def trial(task, model, i, correct, value=None, infra=False, details=None):
        return TrialResult(task=task, agent="react", model=model, trial=i, run_id="r", correct=None if infra else correct,
                           metric="speedup", value=value, error_class="infra" if infra else None,
                           details=details or ({"unavailable": "x"} if correct and value is None else {}))

    store = Store(tmp_path / "results.db", tasks=task_scoring)
    store.add_many([
        (trial("kb-l1-000-p", "openai/a", 0, True, 2.0), None),
        (trial("kb-l1-000-p", "openai/a", 1, True, 0.8), None),    # the problem is fast in half its trials at p=1
        (trial("kb-l1-001-p", "openai/a", 0, True, 1.2), None),
        (trial("kb-l1-002-p", "openai/a", 0, True, None, details={"unchanged": True, "unavailable": "x"}), None),
        (trial("kb-l1-003-p", "openai/a", 0, False, infra=True), None),   # infra: retried, never a zero
        (trial("kb-l1-003-p", "openai/b", 0, True, 3.0), None),
        (trial("other-task", "openai/b", 0, True, 9.0), None),           # not in the suite
    ])
    r = rdbench("results", "--db", str(tmp_path / "results.db"), "--suite", str(suite), "--p", "0", "--p", "1",
                "--p", "1.5", "--format", "json")
    assert r.returncode == 0, r.stdout + r.stderr
    rows = {row["model/agent"]: row for row in json.loads(r.stdout)}
    a, b = rows["openai/a"], rows["openai/b"]
    assert (a["problems"], a["attempted"], b["attempted"]) == (4, 3, 1)
    assert a["fast_0"] == pytest.approx((1 + 1 + 0) / 4)          # the unchanged starting point is not fast
    assert a["fast_1"] == pytest.approx((0.5 + 1 + 0) / 4)
    assert a["fast_1.5"] == pytest.approx(0.5 / 4)
    assert a["correct"] == pytest.approx(2 / 4)                   # nor a correct Triton solution
    assert b["fast_1.5"] == pytest.approx(1 / 4)                  # 9x on a task outside the suite does not count
    table = rdbench("results", "--db", str(tmp_path / "results.db"), "--suite", str(suite), "--p", "1")
    assert table.returncode == 0 and "3 (1 not attempted)" in table.stdout, table.stdout + table.stderr
