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
from pathlib import Path

import pytest

from harness.cores import detect_gpus
from harness.task import load_task
from harness.verify import prepare, write_params
from sandbox import SandboxConfig
from sandbox.docker import DockerSandbox
from tests.conftest import TASKS, rdbench
from tests.tasks.kernel_cheats import (CHEATS, DECOYS, ESCAPE_CALL, ESCAPE_HOST, ESCAPES, KERNEL_TASKS, NOT_TRITONS,
                                       PRECISION, PRELUDE, SIDE_STREAM, forger, no_triton, submission)

pytestmark = [pytest.mark.docker, pytest.mark.slow]
needs_gpu = pytest.mark.skipif(not detect_gpus(), reason="no NVIDIA GPU on this machine")


def verify(task: str, submission: Path) -> dict:
    r = rdbench("verify", str(TASKS / task), "--submission", str(submission), "--repeats", "1", timeout=1800)
    assert r.returncode in (0, 3), r.stdout + r.stderr
    return json.loads(r.stdout)


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

@pytest.mark.parametrize("cheat", list(CHEATS))
def test_cheat_fails(base_image, tmp_path, cheat):
    code, reason = CHEATS[cheat]
    v = verify("triton-softmax", submission(tmp_path, "triton-softmax", append=PRELUDE + code))
    assert reason in failure(v)


# ---- decoys and forgers that beat a "skip every Triton launch" run: the witness's replay ----

@pytest.mark.parametrize("decoy", list(DECOYS))
def test_decoy_fails(base_image, tmp_path, decoy):
    """A decoy Triton launch in front of a PyTorch fallback, which knows whether its launch ran:
    the witness replays only the decoy, so `out` stays NaN there."""
    task, code = DECOYS[decoy]
    why = failure(verify(task, submission(tmp_path, task, append=code)))
    assert NOT_TRITONS in why and "non-finite" in why, why


def test_forged_runner_files_fail(base_image, tmp_path):
    why = failure(verify("triton-softmax", forger(tmp_path)))
    assert NOT_TRITONS in why and "softmax_rows is not a top-level def" in why, why


@pytest.mark.parametrize("escape", list(ESCAPES))
def test_kernel_body_outside_the_whitelist_fails(base_image, tmp_path, escape):
    body, reason = ESCAPES[escape]
    why = failure(verify("triton-softmax", submission(tmp_path, "triton-softmax", append=ESCAPE_HOST + body + ESCAPE_CALL)))
    assert NOT_TRITONS in why and reason in why, why


def test_precision_downgrade_fails(base_image, tmp_path):
    """RMS norm computed in float16 arithmetic: fine for the float16 cases, wrong for float32."""
    why = failure(verify("triton-rmsnorm", submission(tmp_path, "triton-rmsnorm", replace=PRECISION)))
    assert "wrong output" in why and "float32" in why


def test_no_triton_kernel_fails_the_static_check(base_image, tmp_path):
    assert "no @triton.jit kernel" in failure(verify("triton-softmax", no_triton(tmp_path)))


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
runs, time_run = [], v.time_run
def recorded(src, uid, cases, *a, **kw):  # which inputs each timing process was given
    runs.append({"uid": uid, "seeds": [c["seed"] for c in cases], "witness": kw.get("plans") is not None,
                 "compiled": kw.get("compiled", False)})
    return time_run(src, uid, cases, *a, **kw)
v.time_run = recorded
b, c, ok, note, extra = v.timing()
print("TIMING " + json.dumps({"b": b, "c": c, "ok": ok, "note": note, "extra": extra, "runs": runs}))
'''


def drive_kit(base_image, docker_client, sub: Path, script: str, tag: str, task: Path = TASKS / "triton-softmax") -> dict:
    """Run `script` as the verifier (root) in a verifier sandbox of `task` holding `sub`;
    return the JSON it printed after `tag`."""
    task = load_task(task)
    config = SandboxConfig(image=base_image, role="verifier", workdir="/verifier", memory="4g")
    with DockerSandbox(config, docker_client) as sb:
        prepare(sb, task)
        write_params(sb, task, repeats=2)
        sb.copy_in(sub, "/submission", owner=0, mode=0o700)
        sb.write_file("/verifier/driver.py", script.encode())
        r = sb.exec(["python3", "driver.py"], cwd="/verifier", timeout=900)
        assert r.ok and tag + " " in r.stdout, r.stdout + r.stderr[-3000:]
        return json.loads(r.stdout.split(tag + " ", 1)[1].splitlines()[0])


def drive_timing(base_image, docker_client, sub: Path) -> dict:
    return drive_kit(base_image, docker_client, sub, TIMING, "TIMING")


def test_the_timing_path_runs_in_the_interpreter(base_image, docker_client, tmp_path):
    """The GPU timing code (the bench cases' launch plans recorded and checked, interleaved eager
    and witness processes, the re-check of timed outputs, torch.compile) driven on the CPU,
    where no GPU can time it."""
    t = drive_timing(base_image, docker_client, submission(tmp_path, "triton-softmax"))
    assert t["ok"] and len(t["b"]) == len(t["c"]) == 2 and all(x > 0 for x in t["b"] + t["c"]), t
    assert "vs_compile" in t["extra"]
    # fresh inputs for every timed pair: eager run i and witness run i share theirs, no two pairs
    # (nor torch.compile's run) do
    eager = [r["seeds"] for r in t["runs"] if not r["witness"] and not r["compiled"]]
    witness = [r["seeds"] for r in t["runs"] if r["witness"]]
    compiled = [r["seeds"] for r in t["runs"] if r["compiled"]]
    assert eager == witness and len(eager) == 2 and len(compiled) == 1, t["runs"]
    assert len({s for seeds in eager + compiled for s in seeds}) == 3, t["runs"]


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


# ---- compile caches: one per role, never another role's ----

CACHE_PROBE = r"""

def _probe_caches():
    # what the candidate sees of its compile caches; then it tries to plant files in every
    # other role's (their paths handed to it in targets.json: an attacker that guessed them)
    import json as _json
    import os as _os
    mine = _os.environ["TRITON_CACHE_DIR"]
    before = sorted(n for n in _os.listdir(mine) if n.startswith("cand-"))
    writes = {}
    with open("targets.json") as f:
        for path in _json.load(f):
            try:
                with open(_os.path.join(path, "poison.py"), "w") as g:
                    g.write("x = 1\n")
                writes[path] = "written"
            except OSError as e:
                writes[path] = type(e).__name__
    env = {k: _os.environ.get(k) for k in ("TRITON_HOME", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR",
                                           "CUDA_CACHE_PATH", "XDG_CACHE_HOME")}
    with open(_os.path.join(mine, "cand-%d.json" % len(before)), "w") as f:
        _json.dump({"before": before, "env": env, "writes": writes}, f)


_probe_caches()
"""

CACHES = r"""
import json, os, sys
sys.path[:0] = ["/verifier"]
import kernel_kit as kk, verify_kit as kit, verify
problem = verify.PROBLEM
problem.bench_cases = lambda gpu: [verify.softmax_case("float32", 5, 40)]
v = kk.Verifier(problem, kit)
others = [p for role in ("witness", "reference") for gate, folder in [v.caches[role]]
          for p in (gate, folder, os.path.join(folder, "triton"), os.path.join(folder, "inductor"))]
with open(os.path.join(kit.SUBMISSION, "targets.json"), "w") as f:
    json.dump(others, f)
b, c, ok, note, extra = v.timing()  # runner + witness (check), 2 x (eager + witness), torch.compile
assert ok, note
problem_, _, _ = v.check_run(v.seeded(problem.bench_cases(False)))  # a second runner and witness
assert problem_ is None, problem_
seen = {}
for role, (gate, folder) in v.caches.items():
    files = []
    for d, _, names in os.walk(folder):
        files += [os.path.relpath(os.path.join(d, n), folder) for n in names]
    with open(os.path.join(folder, "processes")) as f:
        procs = [json.loads(line) for line in f]
    cand = {}
    for n in files:
        if os.path.basename(n).startswith("cand-"):
            with open(os.path.join(folder, n)) as f:
                cand[n] = json.load(f)
    seen[role] = {"gate": gate, "folder": folder, "gate_mode": oct(os.stat(gate).st_mode & 0o777),
                  "owner": os.stat(folder).st_uid, "files": files, "processes": procs, "cand": cand,
                  "launched": v.processes[role]}
print("CACHES " + json.dumps(seen))
"""


def test_each_role_keeps_its_own_compile_caches(base_image, docker_client, tmp_path):
    """The compile caches (Triton, Inductor, CUDA) of one verification: every process of a role
    (candidate runner, witness, reference) gets its role's folder and finds there what the role's
    earlier processes wrote; no process ever gets another role's, and the candidate, told the
    other roles' paths, can write into none of them (the witness shares its uid: its folder is
    behind a root-only gate while the candidate runs)."""
    seen = drive_kit(base_image, docker_client, submission(tmp_path, "triton-softmax", append=CACHE_PROBE), CACHES,
                     "CACHES")
    assert {role: s["launched"] for role, s in seen.items()} == {"candidate": 2, "witness": 4, "reference": 3}
    for role, s in seen.items():
        assert s["gate_mode"] == "0o700", s  # shut between runs
        # every process of the role wrote its line into the role's folder, and saw only its role's folders
        assert [p["role"] for p in s["processes"]] == [role] * s["launched"], s["processes"]
        for p in s["processes"]:  # the folder, lent to the run inside its own private folder
            home = p["caches"]["TRITON_HOME"]
            assert home.endswith("/caches") and all(v.startswith(home) for v in p["caches"].values()), p
        assert len({p["pid"] for p in s["processes"]}) == s["launched"]
    assert seen["candidate"]["owner"] == seen["witness"]["owner"] == 1000 and seen["reference"]["owner"] == 1001
    folders = {s["folder"] for s in seen.values()} | {s["gate"] for s in seen.values()}
    assert len(folders) == 6
    # the candidate's two runner processes shared its cache: the second found the first's file
    cand = seen["candidate"]["cand"]
    assert sorted(cand) == ["triton/cand-0.json", "triton/cand-1.json"], cand
    assert cand["triton/cand-0.json"]["before"] == [] and cand["triton/cand-1.json"]["before"] == ["cand-0.json"]
    for probe in cand.values():
        assert probe["env"]["TRITON_CACHE_DIR"] == probe["env"]["TRITON_HOME"] + "/triton", probe
        assert probe["writes"] and all(w == "PermissionError" for w in probe["writes"].values()), probe["writes"]
    # and nothing of the candidate's reached another role's folder
    for role in ("witness", "reference"):
        assert not seen[role]["cand"] and not any("poison" in f for f in seen[role]["files"]), seen[role]["files"]


# ---- a grader no submission can crash ----

DEEP_CHAIN = r"""

def _deep_chain(top, depth=1500):
    # a chain of folders deeper than PATH_MAX and than Python's recursion limit
    import os as _os
    fd = _os.open(top, _os.O_RDONLY)
    for _ in range(depth):
        try:
            _os.mkdir("d", dir_fd=fd)
        except FileExistsError:
            pass
        nxt = _os.open("d", _os.O_RDONLY, dir_fd=fd)
        _os.close(fd)
        fd = nxt
    _os.close(fd)


for _top in (".", _os_home(), "../results"):
    try:
        _deep_chain(_top)
    except OSError:
        pass
"""


def test_deep_folder_chains_left_by_a_run_do_not_crash_the_verifier(base_image, tmp_path):
    """A kernel that leaves 1,500-deep folder chains in the runner's working folder, its home and
    its results folder (on import, so in every runner process): the kit removes them without a
    Python walk and the verdict is the kernel's own (correct: the chain is harmless), never a
    crash. `rdbench verify` shows the kit's progress lines on stderr as they come."""
    prelude = "\n\ndef _os_home():\n    import os\n    return os.environ['HOME']\n"
    sub = submission(tmp_path, "triton-softmax", append=prelude + DEEP_CHAIN)
    r = rdbench("verify", str(TASKS / "triton-softmax"), "--submission", str(sub), "--repeats", "1", timeout=1800)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    v = json.loads(r.stdout)
    assert v["correct"] is True, v["details"].get("failure")
    for line in ("compiling and running the candidate on", "case 1/", "ok (runner)", "ok (witness)"):
        assert line in r.stderr, r.stderr[-3000:]


# ---- on a GPU only ----

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
