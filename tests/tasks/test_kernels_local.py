"""The kernel tasks under `--sandbox local` (sandbox/local.py), as a GPU user without Docker
meets them: the verifier as root on the host, the runs as uids of no account, each run in
bubblewrap (/tmp, /var/tmp, /dev/shm private). Here on the CPU path (TRITON_INTERPRET=1).

The runs' uids must be able to execute the Python: this machine's own lies under /root (0700),
so these tests build, once per machine, a Python they can run: a venv of the system's
/usr/bin/python3 under /var/cache/rdbench-tests with the base image's wheels (torch CPU,
triton, numpy), and put its bin/ first on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TASKS, rdbench

KERNEL_TASKS = ["triton-softmax", "triton-rmsnorm", "triton-matmul-epilogue", "triton-causal-attention"]
SYSTEM_PYTHON = Path("/usr/bin/python3")
READABLE = Path("/var/cache/rdbench-tests")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the local backend separates users only as root"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap (bwrap)"),
    pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="needs a system Python at /usr/bin/python3"),
]


def readable_python() -> Path:
    """The bin/ of a venv of /usr/bin/python3 (pip and setuptools in it) with the base image's
    wheels, that every user may run (built once per machine; a hash of the wheels names it)."""
    from sandbox.images import download_wheels
    from sandbox.wheels import torch_build

    wheels = download_wheels(torch_build("cpu"), lambda m: print(m, file=sys.stderr))
    venv = READABLE / f"python-{wheels.name}-2"
    if (venv / "ok").exists():
        return venv / "bin"
    tmp = READABLE / f".{venv.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    READABLE.chmod(0o755)
    # with ensurepip's setuptools: torch.compile's C++ backend (Inductor) imports it
    subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", str(tmp)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(tmp / "bin" / "python"), "install", "-q",
                    "--disable-pip-version-check", "--no-deps", "--no-index", *map(str, sorted(wheels.glob("*.whl")))],
                   check=True)
    tmp.chmod(0o755)
    (tmp / "ok").touch()
    try:
        tmp.rename(venv)
    except OSError:  # another session built it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return venv / "bin"


@pytest.fixture(scope="module")
def path_env() -> dict:
    """The environment of the `rdbench` commands here: the readable Python first on PATH."""
    return {"PATH": f"{readable_python()}{os.pathsep}{os.environ['PATH']}"}


def verify(task: Path, submission: Path, env: dict, *, code=(0, 3)) -> dict:
    r = rdbench("verify", str(task), "--submission", str(submission), "--sandbox", "local", "--repeats", "1",
                timeout=1800, env=env)
    assert r.returncode in code, r.stdout + r.stderr
    return json.loads(r.stdout)


def oracle(tmp_path: Path, task: str) -> Path:
    sub = tmp_path / "submission"
    shutil.copytree(TASKS / task / "workspace", sub)
    shutil.copytree(TASKS / task / "solution", sub, dirs_exist_ok=True)
    return sub


@pytest.mark.parametrize("task", KERNEL_TASKS)
def test_kernel_oracle_is_correct_under_bubblewrap(path_env, tmp_path, task):
    """The kit's runner folder, the staged copies and the Python are all reachable from inside
    bubblewrap (whose /tmp is empty), and the runs write their results and homes."""
    v = verify(TASKS / task, oracle(tmp_path, task), path_env)
    assert v["correct"] is True, v["details"].get("failure")
    d = v["details"]
    assert d["isolated"] is True and "bubblewrap" in d["isolation"], d
    assert "replayed by the witness" in d["witness"], d


def test_kernelbench_import_probes_every_problem_locally(path_env, tmp_path):
    """`rdbench tasks import kernelbench --sandbox local`: the probe runs on the host and imports
    what the Docker import imports; an imported problem then verifies under --sandbox local."""
    from tests.tasks.test_kernelbench import PROBLEMS, SOFTMAX

    out = tmp_path / "tasks"
    r = rdbench("tasks", "import", "kernelbench", str(PROBLEMS / "level1"), str(PROBLEMS / "level2"),
                str(PROBLEMS / "misc" / "6_Random_forward.py"), "--out", str(out), "--sandbox", "local",
                timeout=900, env=path_env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "imported 4, skipped 1" in r.stdout, r.stdout + r.stderr
    assert "6_Random_forward.py: fails its probe" in r.stderr and "random or non-deterministic" in r.stderr, r.stderr
    config = json.loads((out / "kb-l1-001-softmax" / "verifier" / "problem.json").read_text())
    assert config["cpu_sizes"], config  # probed: 3000 columns do not fit the interpreter's budget
    sub = tmp_path / "submission"
    shutil.copytree(out / "kb-l1-001-softmax" / "workspace", sub)
    (sub / "model_new.py").write_text(SOFTMAX)
    v = verify(out / "kb-l1-001-softmax", sub, path_env)
    assert v["correct"] is True, v["details"].get("failure")


def private_python(tmp_path: Path) -> Path:
    """A venv of the readable Python in a 0700 folder: root runs it (torch and all), the runs'
    uids cannot execute it."""
    folder = tmp_path / "private"
    folder.mkdir(mode=0o700)
    subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", "--without-pip", str(folder / "venv")], check=True)
    site = readable_python().parent / "lib" / "python3.11" / "site-packages"
    (folder / "venv" / "lib" / "python3.11" / "site-packages" / "readable.pth").write_text(f"{site}\n")
    return folder / "venv" / "bin"


def test_a_python_the_runs_cannot_execute_is_infra_not_incorrect(tmp_path, monkeypatch):
    """The reference itself cannot run: preflight refuses the run (exit 2, cause and fix, no run
    folder); `rdbench verify` says so in one line and gives no verdict; a trial that gets past
    preflight is an infrastructure error, never `incorrect`."""
    from harness.cores import CorePool
    from harness.task import load_task
    from harness.trial import TrialSpec, run_trial
    from results.records import AgentSpec

    private = private_python(tmp_path)
    env = {"PATH": f"{private}{os.pathsep}{os.environ['PATH']}"}
    task = "triton-softmax"
    r = rdbench("run", str(TASKS / task), "--agent", "oracle", "--sandbox", "local", "--out", str(tmp_path / "run"),
                env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    said = " ".join(r.stderr.split())
    assert "cannot run the verifier's Python" in said and "Permission denied" in said and "Fix:" in said, said
    assert not (tmp_path / "run").exists()

    r = rdbench("verify", str(TASKS / task), "--submission", str(oracle(tmp_path, task)), "--sandbox", "local",
                "--repeats", "1", env=env, timeout=900)
    said = " ".join(r.stderr.split())
    assert r.returncode == 1 and not r.stdout.strip(), r.stdout + r.stderr
    assert said.count("this host cannot run the task's programs") == 1 and "Permission denied" in said, said

    monkeypatch.setenv("PATH", env["PATH"])
    spec = TrialSpec(task=load_task(TASKS / task), agent=AgentSpec(name="oracle"), index=0, out_dir=tmp_path / "t",
                     run_id="local-infra")
    with pytest.warns(UserWarning, match="local sandbox backend"):
        result = run_trial(spec, image="local", cores=CorePool(), backend="local")
    assert result.error_class == "infra" and result.correct is not True, result
    assert "this host cannot run the task's programs" in result.error and "Permission denied" in result.error


COMPILE = """
import getpass, json, os, pwd
import torch
f = torch.compile(lambda x: torch.sin(x) * 2 + 1)
x = torch.randn(64)
json.dump({"getuser": getpass.getuser(), "pwd": pwd.getpwuid(os.getuid()).pw_name, "home": os.path.expanduser("~"),
           "compiled": bool(torch.allclose(f(x), torch.sin(x) * 2 + 1))}, open("out.json", "w"))
"""


def test_torch_compile_runs_as_a_run_user(path_env, tmp_path):
    """The runs' uids have a name (getpass, pwd, `~`), so torch.compile (Inductor, which asks
    getpass for its cache folder and compiles C++ on the CPU) works as one, under bubblewrap:
    what kernel tasks' vs_compile (a torch.compile'd reference, timed on a GPU) needs."""
    from tests.sandbox.test_local import probe, probe_task

    d = probe(probe_task(tmp_path / "compile-probe", COMPILE, imports="import torch  # the runs must import it too",
                         users=("candidate",)), path_env)["candidate"]
    assert d["getuser"] == d["pwd"] == "rdbench-candidate", d
    assert d["home"] == d["work"] and d["compiled"] is True, d


def test_preflight_knows_what_each_task_imports():
    """The modules preflight checks the runs' Python imports: the tasks' own and those of the
    kits they use at module level (kernel_kit: torch, triton; not verify_kit's lazy numpy)."""
    from harness.preflight import needed_modules
    from harness.task import load_task

    assert needed_modules(load_task(TASKS / "py-primes")) == []
    assert needed_modules(load_task(TASKS / "cpu-lm-train")) == ["numpy"]
    for task in KERNEL_TASKS:
        assert needed_modules(load_task(TASKS / task)) == ["torch", "triton"], task
