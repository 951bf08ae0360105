"""The local backend's verifier side (sandbox/local.py with the verify kit): each verifier
claims run uids of its own, held while it lives; the runs' users have a name; bubblewrap
binds what a run needs from below /tmp (the Python, PYTHONPATH) and keeps /tmp private.

Needs root (the kit separates users only as root) and, for the runs, bubblewrap; no Docker.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import pytest

from sandbox import SandboxConfig
from sandbox.local import LocalSandbox, _process_uids, claim_uids, release_uids
from tests.conftest import ROOT, TASKS, rdbench

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="the local backend claims uids only as root")]
needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap (bwrap)")
SYSTEM_PYTHON = Path("/usr/bin/python3")
#: uids for the claim tests, far from the verifiers' own (sandbox.local.RUN_UID_START)
FREE = 64000


def uids(held) -> list[int]:
    return [uid for uid, _ in held]


def test_claims_never_share_a_uid_and_end_with_their_holder(tmp_path):
    locks = tmp_path / "uids"
    a, b = claim_uids(2, FREE, locks), claim_uids(2, FREE, locks)
    assert uids(a) == [FREE, FREE + 1] and uids(b) == [FREE + 2, FREE + 3]
    release_uids(a)
    # another process claims the freed uid and holds it; while it lives, no one else gets it
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from sandbox.local import claim_uids; "
                               f"print(claim_uids(1, {FREE}, Path(sys.argv[1]))[0][0], flush=True); time.sleep(600)",
                               str(locks)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == str(FREE)
        c = claim_uids(1, FREE, locks)
        assert uids(c) == [FREE + 1]
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    d = claim_uids(1, FREE, locks)  # the holder died: its claim with it
    assert uids(d) == [FREE]
    release_uids(b + c + d)


def test_a_busy_uid_is_skipped_and_a_released_uid_left_empty(tmp_path):
    """A uid that owns a process (left by a dead verifier's runs, or anyone's) is never
    claimed; releasing a claim kills what still runs as its uids."""
    locks = tmp_path / "uids"
    squatter = subprocess.Popen(["sleep", "600"], user=FREE + 10, group=FREE + 10, extra_groups=[])
    try:
        held = claim_uids(1, FREE + 10, locks)
        assert uids(held) == [FREE + 11]
    finally:
        squatter.kill()
        squatter.wait()
    left = subprocess.Popen(["sleep", "600"], user=FREE + 11, group=FREE + 11, extra_groups=[],
                            start_new_session=True)
    release_uids(held)
    assert left.wait(timeout=30) == -signal.SIGKILL
    assert FREE + 11 not in _process_uids()


def test_two_local_verifiers_at_once_get_their_own_uids():
    """Two verifier sandboxes open at once (two trials, two tests) never share a run uid, so
    neither's kit kills the other's runs; closed, their uids are free again."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        boxes = [LocalSandbox(SandboxConfig(image="local", role="verifier", workdir="/verifier")) for _ in range(2)]
    try:
        seen = [sb.exec("echo $RDBENCH_CANDIDATE_UID $RDBENCH_BASELINE_UID").stdout.split() for sb in boxes]
    finally:
        for sb in boxes:
            sb.close()
    flat = [int(u) for pair in seen for u in pair]
    assert len(set(flat)) == 4, seen


@pytest.mark.slow
def test_two_local_verifications_at_once_are_both_correct(tmp_path):
    sub = tmp_path / "sub"
    shutil.copytree(TASKS / "py-primes" / "workspace", sub)
    shutil.copytree(TASKS / "py-primes" / "solution", sub, dirs_exist_ok=True)
    out = [None, None]

    def one(i):
        out[i] = rdbench("verify", str(TASKS / "py-primes"), "--submission", str(sub), "--sandbox", "local",
                         "--repeats", "3", timeout=900)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in out:
        assert r.returncode == 0 and json.loads(r.stdout)["correct"] is True, r.stdout + r.stderr


# ---- a run's view, through a probe task: its verifier runs PROGRAM as the runs' users ----

PROBE_VERIFIER = '''
import json
import os
import sys

{imports}
import verify_kit as kit

PROGRAM = {program!r}

details = {{"unavailable": "a probe: nothing timed"}}
ok, note = True, ""
for who in {users!r}:
    uid = kit.CANDIDATE_UID if who == "candidate" else kit.BASELINE_UID
    work = kit.stage(kit.SUBMISSION, uid)
    kit.write_input(os.path.join(work, "probe.py"), PROGRAM, uid)
    r = kit.run([sys.executable, "-s", "probe.py"], cwd=work, uid=uid, timeout=900)
    if not r.ok:
        ok, note = False, "%s: %s" % (who, r.describe())
        break
    details[who] = dict(json.loads(kit.read_output(work, "out.json")), work=work)
kit.emit(kit.speedup_verdict([], [], ok, note, details=details))
'''


def probe_task(folder: Path, program: str, *, imports: str = "", users=("candidate", "baseline")) -> Path:
    """A task folder whose verifier runs `program` (it writes out.json) as each of `users`, with
    the verifier's own Python; the verdict's details hold what each wrote."""
    (folder / "workspace").mkdir(parents=True)
    (folder / "verifier").mkdir()
    (folder / "workspace" / "README").write_text("nothing to do\n")
    (folder / "instruction.md").write_text("nothing to do\n")
    (folder / "verifier" / "verify.py").write_text(PROBE_VERIFIER.format(imports=imports, program=program,
                                                                         users=tuple(users)))
    (folder / "task.toml").write_text(
        f'name = "{folder.name}"\nkind = "speedup"\ndescription = "a probe of the runs\' view"\n'
        '[resources]\ncpus = 1\nmemory = "4g"\n[verifier]\ncommand = "python3 verify.py"\ntimeout_s = 1200\n'
        'repeats = 1\n[scoring]\nreference = 1.0\n')
    return folder


def probe(task: Path, env: dict) -> dict:
    """The details of a probe task's verdict under --sandbox local (it must be correct)."""
    r = rdbench("verify", str(task), "--submission", str(task / "workspace"), "--sandbox", "local", timeout=1800,
                env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)["details"]


IDENTITY = '''
import getpass, grp, json, os, pwd, sys
import marker_module
json.dump({"getuser": getpass.getuser(), "pwd": pwd.getpwuid(os.getuid()).pw_name,
           "group": grp.getgrgid(os.getgid()).gr_name, "home": os.path.expanduser("~"),
           "env": [os.environ.get("USER"), os.environ.get("LOGNAME")], "marker": marker_module.VALUE,
           "tmp": os.listdir("/tmp"), "executable": sys.executable}, open("out.json", "w"))
'''


@pytest.mark.slow
@needs_bwrap
@pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="needs a system Python at /usr/bin/python3")
def test_runs_have_a_name_and_their_python_below_tmp(tmp_path):
    """The runs' users are named (getpass, pwd, grp, `~`, USER, LOGNAME) in a private
    /etc/passwd; a Python whose prefix and a PYTHONPATH entry lie below /tmp (which bubblewrap
    replaces with an empty, private one) are bound back for the run, and nothing else of the
    host's /tmp is there."""
    shared = Path(tempfile.mkdtemp(prefix="rdbench-test-local-", dir="/tmp"))
    try:
        shared.chmod(0o755)
        subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", "--without-pip", str(shared / "venv")], check=True)
        (shared / "lib").mkdir()
        (shared / "lib" / "marker_module.py").write_text("VALUE = 'from PYTHONPATH below /tmp'\n")
        env = {"PATH": f"{shared / 'venv' / 'bin'}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(shared / "lib")}
        d = probe(probe_task(tmp_path / "identity", IDENTITY), env)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    assert "bubblewrap" in d["isolation"], d
    for who in ("candidate", "baseline"):
        run = d[who]
        name = f"rdbench-{who}"
        assert run["getuser"] == run["pwd"] == run["group"] == name and run["env"] == [name, name], run
        assert run["home"] == run["work"] and run["marker"] == "from PYTHONPATH below /tmp", run
        assert run["executable"].startswith(str(shared)), run
        # the private /tmp holds only what was bound back: the sandbox's root and the Python's folder
        assert sorted(run["tmp"]) == sorted([shared.name, Path(run["work"]).parts[2]]), run
