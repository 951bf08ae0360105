"""No submission can crash the grader: each way a submission or an agent could void its own
verification (and so turn a failure into an `infra` outcome, never scored, re-run) as a real
submission through the real `rdbench verify` or a real trial through `rdbench run --replay`.
Each ends `incorrect` with a reason, or is judged on its merits; never `infra`, never a
traceback from rdbench. (Bounded host walks without Docker: tests/sandbox/test_tree.py; a
deep chain in /tmp: tests/harness/test_escapes.py.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from results.records import TrialResult
from tests.conftest import TASKS, rdbench
from tests.sandbox.test_tree import chain as chain_of_folders

SLOW = (TASKS / "py-primes" / "workspace" / "solve.py").read_text()
MAIN = 'if __name__ == "__main__":\n    main(sys.argv[1], sys.argv[2])\n'


def submission(tmp_path: Path, prelude: str, name: str = "sub") -> Path:
    """py-primes' own slow solve.py (a correct answer at ~1x), doing `prelude` first."""
    sub = tmp_path / name
    sub.mkdir()
    assert MAIN in SLOW
    (sub / "solve.py").write_text(SLOW.replace(MAIN, prelude + "\n\n" + MAIN))
    return sub


def verify(task: str | Path, sub: Path, repeats: int = 1, sandbox: str = "docker") -> dict:
    r = rdbench("verify", str(task), "--submission", str(sub), "--repeats", str(repeats), "--sandbox", sandbox)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.returncode in (0, 3), r.stdout + r.stderr[-3000:]  # 1 would be infra
    return json.loads(r.stdout)


def make_links(top: Path, n: int) -> None:
    """A chain of `n` links at `top`, each to the next, the last to a file: Python's realpath
    recurses once per link (tarfile's data filter and the kit's staging call it)."""
    top.mkdir()
    (top / "f").write_text("end")
    for i in range(n):
        (top / f"l{i}").symlink_to(f"l{i - 1}" if i else "f")


def chain(depth: int) -> str:
    """Code that makes a `depth`-deep chain of folders below the current folder (relative
    steps: deeper than any path the kernel would take whole)."""
    return f'''
def _chain(top):
    import os
    here = os.getcwd()
    os.makedirs(top, exist_ok=True)
    os.chdir(top)
    for _ in range({depth}):
        os.mkdir("d")
        os.chdir("d")
    open("bottom.txt", "w").write("deep")
    os.chdir(here)
'''


#: Fills every process slot of the sandbox, and keeps them filled: /bin/sleep daemons (each
#: in a session of its own, out of the run's process group) until fork fails, and a
#: non-dumpable Python daemon (its /proc/PID is root's: a kill that looks for the run's
#: processes by owner misses it) that takes every slot freed, at once. Then the run exits
#: without an answer, and the slot its exit frees is taken before the kit's clean-up starts.
SLOT_HOG = r'''
import ctypes, os, sys, time
libc = ctypes.CDLL(None)
libc.prctl(4, 0)  # PR_SET_DUMPABLE 0


def spawn():
    os.posix_spawn("/bin/sleep", ["sleep", "3600"], {}, setsid=True)


if os.fork() == 0:
    os.setsid()
    libc.prctl(4, 0)
    while True:
        try:
            spawn()
        except OSError:
            time.sleep(0.0005)
n = 0
while True:
    try:
        spawn()
        n += 1
    except OSError:
        break
sys.stderr.write("took %d process slots\n" % n)
time.sleep(1)
'''


@pytest.mark.docker
@pytest.mark.slow
def test_a_run_that_takes_every_process_slot_is_incorrect(base_image, tmp_path):
    """Every process slot of the verifier's sandbox taken by the run (its pids limit is shared
    with the root verifier): the kit kills the run pid by pid without forking, so the verdict
    is an incorrect candidate (no output), not a verifier that printed no verdict (infra: 3
    of 3 tries before)."""
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "solve.py").write_text(SLOT_HOG)
    v = verify("tasks/py-primes", sub)
    assert v["correct"] is False and "output.json" in v["details"]["failure"], v


@pytest.mark.slow
def test_a_slot_hog_on_the_local_backend_is_incorrect(tmp_path):
    """The same under `--sandbox local` (as root: the runs' uids are their own, and each run
    gets RLIMIT_NPROC 512, so the hog stops there instead of at the host's limit)."""
    if os.geteuid() != 0:
        pytest.skip("the local backend separates the runs' users only as root")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "solve.py").write_text(SLOT_HOG)
    v = verify("tasks/py-primes", sub, sandbox="local")
    assert v["correct"] is False and "output.json" in v["details"]["failure"], v


@pytest.mark.slow
@pytest.mark.parametrize("sandbox", [pytest.param("docker", marks=pytest.mark.docker), "local"])
def test_a_deep_chain_in_a_submission_given_to_verify_is_left_out(sandbox, request, tmp_path):
    """A 1,500-deep chain in the folder given to `rdbench verify` (1,100 crashed rdbench
    itself: tarfile.add recursed; the local backend's copytree too), and a chain of 1,500
    links (the kit's staging resolved each with realpath: RecursionError): what is too deep
    is left out of the copy, and the submission is judged on its merits (correct, ~1x)."""
    if sandbox == "docker":
        request.getfixturevalue("base_image")
    sub = submission(tmp_path, "")
    chain_of_folders(sub / "chain", 1500)
    make_links(sub / "links", 1500)
    try:
        v = verify("tasks/py-primes", sub, sandbox=sandbox)
    finally:  # (pytest's clean-up of old tmp folders recurses)
        subprocess.run(["rm", "-rf", str(sub)], check=False)
    assert v["correct"] is True, v["details"]


@pytest.mark.docker
@pytest.mark.slow
def test_a_deep_chain_left_in_the_workspace_by_an_agent_is_no_infra(base_image, tmp_path):
    """An agent leaves a 1,500-deep chain in /workspace (replayed from a transcript): copy-out,
    the trial's patch (rglob recursed: infra, before any verification) and the verifier's
    copy-in all walk it boundedly; a chain of 1,500 links beside it (copy-out's data filter
    resolved each with realpath: RecursionError, infra) is left out where it cannot be
    resolved. The trial is judged on its merits."""
    make = chain(1500) + '''
_chain('/workspace/chain')
import os
os.mkdir('/workspace/links')
open('/workspace/links/f', 'w').write('end')
for i in range(1500):
    os.symlink('l%d' % (i - 1) if i else 'f', '/workspace/links/l%d' % i)
'''
    transcript = tmp_path / "transcript.jsonl"
    transcript.write_text(json.dumps({"type": "tool_result", "name": "bash", "args": {
        "command": "python3 - <<'EOF'\n" + make + "EOF\nls /workspace"}}) + "\n")
    try:
        r = rdbench("run", "py-primes", "--replay", str(transcript), "--repeats", "1", "--out", str(tmp_path / "run"))
        assert "Traceback" not in r.stderr, r.stderr[-3000:]
        (path,) = (tmp_path / "run").glob("trials/*/trial.json")
        trial = TrialResult.model_validate_json(path.read_text())
        assert trial.error_class is None and trial.correct is True, trial
        assert trial.stop_reason == "replayed 1 tool calls", trial
        assert r.returncode == 0, r.stderr[-2000:]
        (kept,) = (tmp_path / "run").glob("trials/*/submission/chain")
        levels = 0
        while (kept / "d").is_dir():
            kept, levels = kept / "d", levels + 1
        assert 100 < levels < 1500 and not (kept / "bottom.txt").exists()  # the top kept, the bottom left out
    finally:  # (pytest's clean-up of old tmp folders recurses)
        subprocess.run(["rm", "-rf", str(tmp_path / "run")], check=False)


@pytest.mark.docker
@pytest.mark.slow
def test_an_output_flood_is_capped_and_the_verifiers_disk_is_limited(base_image, tmp_path):
    """The run floods 400 MB to stdout and to stderr, then writes 300 MB into /tmp, on a task
    whose disk is 200 MB: the flood never reaches a disk (before, the kit wrote it whole to
    log files: 2 GiB a run sat on the host's disk), and /tmp is on the verifier's own
    size-limited disk (before: none). The candidate answers right only when its /tmp write
    hit the limit (ENOSPC) and both floods went through; else it answers wrong."""
    if os.geteuid() != 0:
        pytest.skip("disk limits need root on the host (loop mounts)")
    task = tmp_path / "py-primes"
    shutil.copytree(TASKS / "py-primes", task)
    toml = task / "task.toml"
    toml.write_text(toml.read_text().replace('memory = "1g"', 'memory = "1g"\ndisk = "200m"'))
    sub = submission(tmp_path, '''
_main = main
def main(inp, out):
    import errno, os
    block = b"x" * (1 << 20)
    for _ in range(400):
        os.write(1, block)
        os.write(2, block)
    limited = False
    try:
        with open("/tmp/big", "wb") as f:
            for _ in range(300):
                f.write(block)
    except OSError as e:
        limited = e.errno == errno.ENOSPC
    os.unlink("/tmp/big")
    if limited:
        _main(inp, out)
    else:
        open(out, "w").write('{"counts": []}')''')
    v = verify(task, sub)
    assert v["correct"] is True, v["details"]


def test_out_naming_a_file_is_one_clear_error(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    r = rdbench("run", "py-primes", "--agent", "nop", "--out", str(afile))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "'--out'" in r.stderr and "is a file" in r.stderr, r.stderr
    assert afile.read_text() == ""
    r = rdbench("run", "py-primes", "--agent", "nop", "--out", str(afile / "sub"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "cannot make the run folder" in r.stderr and "Not a directory" in r.stderr, r.stderr
