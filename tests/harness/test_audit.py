"""`rdbench tasks audit`: the catalogue of task-agnostic escapes, each a real submission built
from the task's own starting point or oracle and graded by the real `rdbench verify` path in
real verifier sandboxes.

The controls come first: run as plain processes on the host, where nothing removes what one
run leaves, the caches do carry the answers from one run to the next (so a row that holds
means the verifier stopped the escape, not that the escape is broken)."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
import uuid

import pytest

from harness import audit_build as build
from harness.audit import catalogue
from harness.task import load_task
from tests.conftest import TASKS, rdbench

#: Rows that fail on this branch because their fix lives on another branch of issue 22, or is
#: escapes known not to hold, by task kind (none: every row of every shipped task must hold)
PENDING: dict[str, set[str]] = {"program": set(), "module": set()}
VERDICTS = {"correct", "incorrect", "infra", "crash", "moot"}


def audit(task: str, *extra: str, timeout: float = 3600) -> tuple[int, list[dict]]:
    r = rdbench("tasks", "audit", task, "--format", "json", *extra, timeout=timeout)
    assert r.returncode in (0, 1), r.stdout + r.stderr
    return r.returncode, json.loads(r.stdout)


def check_rows(kind: str, code: int, rows: list[dict], names: list[str]) -> None:
    assert [r["escape"] for r in rows] == names
    for r in rows:
        assert r["verdict"] in VERDICTS and r["reason"], r
        if r["escape"] not in PENDING[kind]:
            assert r["held"], r
        if r["held"]:
            assert r["verdict"] in ("correct", "incorrect", "moot"), r  # never infra, never a crash
    assert rows[0]["escape"] == "canary"
    assert code == (0 if all(r["held"] for r in rows) else 1)


# ---- the shapes of the shipped tasks ----

def test_every_shipped_task_has_a_shape_and_a_catalogue():
    shapes = {p.name: build.task_shape(load_task(p)) for p in sorted(TASKS.iterdir()) if (p / "task.toml").is_file()}
    assert shapes["py-primes"].kind == shapes["cpu-lm-train"].kind == shapes["posttrain-mini"].kind == "program"
    reference = (TASKS / "triton-softmax/verifier/reference.py").read_text()
    assert shapes["triton-softmax"] == build.Shape("module", "kernel", "softmax", reference=reference)
    assert {s.module for n, s in shapes.items() if n.startswith("triton-")} == {"kernel"}
    kernel_only = {"kernel-torch-behind-decoy", "kernel-no-triton-forger"}
    assert not kernel_only & {e.name for e in catalogue(shapes["py-primes"])}
    assert kernel_only <= {e.name for e in catalogue(shapes["triton-rmsnorm"])}


def test_list_and_unknown_escape():
    r = rdbench("tasks", "audit", "py-primes", "--list")
    assert r.returncode == 0 and "cache-page-cache" in r.stdout and "kernel-torch" not in r.stdout, r.stdout + r.stderr
    r = rdbench("tasks", "audit", "py-primes", "--only", "no-such-escape")
    assert r.returncode == 2 and "no escape named no-such-escape" in r.stderr, r.stderr


def test_a_program_escape_wraps_every_entry_script(tmp_path):
    spec = load_task(TASKS / "py-primes")
    sub = build.with_escape(spec, build.task_shape(spec), tmp_path / "sub", "slow.py")
    text = (sub / "solve.py").read_text()
    assert text.index(build.ESCAPE_MODULE + ".start()") < text.index("def main") and text.startswith('"""')
    assert (sub / "_rdbench_escape.py").read_text().endswith((build.KIT / "slow.py").read_text())


@pytest.mark.parametrize("task", ["py-primes", "cpu-lm-train"])
def test_the_escape_goes_into_the_program_the_verifier_runs(tmp_path, task):
    """Every program the verifier names gets the hook, guarded or not: cpu-lm-train's train.py
    is a script without `if __name__ == "__main__"`, and its escapes once went only into
    data.py (which it imports), so they never ran and every row held for nothing."""
    spec = load_task(TASKS / task)
    sub = build.with_escape(spec, build.task_shape(spec), tmp_path / "sub", "slow.py")
    named = [n for n in build.verifier_file_names(spec) if n.endswith(".py") and (sub / n).is_file()]
    assert named, "the verifier names no program of the submission"
    for name in named:
        assert build.ESCAPE_MODULE + ".start()" in (sub / name).read_text(), name
    # and it runs first when the program runs: the too-slow escape's start() takes no time,
    # so run the hooked program with an escape module that only says it ran
    (sub / f"{build.ESCAPE_MODULE}.py").write_text("def start():\n    print('ESCAPE-RAN', flush=True)\n"
                                                   "    raise SystemExit(0)\n")
    r = subprocess.run([sys.executable, named[0]], cwd=sub, capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "ESCAPE-RAN", r.stdout + r.stderr


def test_judge_holds_only_what_did_not_score():
    from harness.audit import Escape, judge
    from results.records import VerifierResult

    primes, posttrain = load_task(TASKS / "py-primes"), load_task(TASKS / "posttrain-mini")
    cache, decoy = Escape("c", "", None, repeats=3), Escape("d", "", None, must_fail=True)

    def v(correct=True, value=None, ci=None, **details):
        return VerifierResult(correct=correct, metric="speedup", value=value, ci=ci, details=details)

    assert judge(primes, cache, v(False, failure="wrong counts")) == (True, "wrong counts")
    assert judge(primes, cache, v(value=1.2, ci=[0.9, 1.6]))[0] is True
    assert judge(primes, cache, v(value=4.0, ci=[2.1, 5.0]))[0] is False  # the page cache on py-primes: 2-7x
    assert judge(primes, cache, v(unavailable="no GPU"))[0] is True
    assert judge(primes, decoy, v(unavailable="no GPU"))[0] is False  # a kernel cheat must be incorrect
    assert judge(posttrain, cache, v(value=0.0, ci=[0.0, 0.0]))[0] is True
    assert judge(posttrain, cache, v(value=1.0, ci=[0.9, 1.0]))[0] is False  # the reference's weights read back


def test_the_canary_tells_which_verifiers_run_submitted_code():
    """Static half of the canary's judgement: which verifiers start processes (and so must have
    run the canary's failing hook), and what its verdicts mean."""
    from harness.audit import CANARY, Escape, judge
    from results.records import VerifierResult

    runs = {p.name: build.runs_submission_code(load_task(p)) for p in sorted(TASKS.iterdir())
            if (p / "task.toml").is_file()}
    assert runs.pop("posttrain-mini") == "" and all(runs.values()), runs
    assert runs["py-primes"].startswith("verify.py:") and "kit.run(" in runs["py-primes"]
    canary = Escape(CANARY, "", None, must_fail=True)
    primes, posttrain = load_task(TASKS / "py-primes"), load_task(TASKS / "posttrain-mini")
    failed = VerifierResult(correct=False, metric="speedup", details={"failure": "exit 97"})
    passed = VerifierResult(correct=True, metric="speedup", value=1.0, ci=[0.9, 1.1])
    assert judge(primes, canary, failed)[0] and judge(posttrain, canary, failed)[0]
    held, why = judge(primes, canary, passed)
    assert not held and "never ran" in why and "kit.run(" in why
    held, why = judge(posttrain, canary, passed)
    assert held and "runs none of the submission's code" in why


@pytest.mark.slow
def test_the_canary_catches_an_audit_whose_hook_never_runs(monkeypatch):
    """The bug b2f58a0 fixed, put back: the hook goes into no program, so no escape's code runs
    and every row would hold for nothing. The canary's candidate is then judged correct by a
    verifier that runs programs: its row does not hold, and the audit fails (real py-primes
    verifications, local sandbox)."""
    from harness.audit import grader, run_audit

    spec = load_task(TASKS / "py-primes")
    rows = run_audit(spec, grader(spec, "local"), only=["cache-tmp"])
    assert [(r.escape, r.verdict, r.held) for r in rows] == [("canary", "incorrect", True), ("cache-tmp", "correct", True)]
    assert "exit 97" in rows[0].reason
    monkeypatch.setattr(build, "entry_scripts", lambda folder, named=(): [])
    rows = run_audit(spec, grader(spec, "local"), only=["cache-tmp"])
    assert [(r.escape, r.verdict, r.held) for r in rows] == [("canary", "correct", False), ("cache-tmp", "correct", True)]
    assert "never ran" in rows[0].reason


@pytest.mark.docker
@pytest.mark.slow
def test_escapes_that_need_code_are_moot_where_the_verifier_runs_none(base_image):
    """posttrain-mini's verifier reads the weights file and runs nothing of the submission: the
    canary is judged on merit (held), the hooked escapes are moot (not run), the static ones
    (a deep chain in the submission) still go through the verifier."""
    code, rows = audit("posttrain-mini", "--only", "cache-tmp", "--only", "deep-chain-submission")
    assert code == 0, rows
    assert [(r["escape"], r["verdict"]) for r in rows] == [("canary", "correct"), ("cache-tmp", "moot"),
                                                           ("deep-chain-submission", "correct")]
    assert "runs none of the submission's code" in rows[0]["reason"] and rows[1]["seconds"] == 0


# ---- the controls: with nothing removing them, the caches carry answers between runs ----

CONTROLS = {"file": "cache_file.py", "System V shared memory": "cache_sysv.py",
            "POSIX message queue": "cache_mqueue.py", "page cache": "cache_pagecache.py"}


def carried_once(folder, place) -> bool:
    """One round: a run computes and keeps its answer, then a run that can no longer compute
    must answer from the cache alone."""
    spec = load_task(TASKS / "py-primes")
    params = {"folder": str(folder)} if place == "file" else {}
    sub = build.with_escape(spec, build.task_shape(spec), folder / "sub", CONTROLS[place], params)
    lo = 10_000 + uuid.uuid4().int % 1_000_000  # queries no other run has seen: a key of its own
    (sub / "input.json").write_text(json.dumps({"queries": [[lo, lo + 300]]}))
    key = None
    try:
        first = subprocess.run([sys.executable, "solve.py", "input.json", "output.json"], cwd=sub, timeout=120)
        assert first.returncode == 0
        answer = (sub / "output.json").read_text()
        (sub / "output.json").unlink()
        # the program can no longer compute: only a cache hit (which exits before it) answers
        (sub / "solve.py").write_text((sub / "solve.py").read_text() + "\nraise SystemExit(7)\n")
        key = subprocess.run([sys.executable, "-c", "import _rdbench_escape as e, sys; sys.argv = ['solve.py', "
                              "'input.json', 'output.json']; print(e.input_key())"], cwd=sub, capture_output=True,
                             text=True, check=True).stdout.strip()
        second = subprocess.run([sys.executable, "solve.py", "input.json", "output.json"], cwd=sub, timeout=120)
        return second.returncode == 0 and (sub / "output.json").read_text() == answer
    finally:
        if key and place == "System V shared memory":
            subprocess.run(["ipcrm", "-M", str(int(key[:7], 16))], capture_output=True)
        elif key and place == "POSIX message queue":
            ctypes.CDLL("librt.so.1").mq_unlink(("/rdbench-" + key[:20]).encode())


@pytest.mark.parametrize("place", list(CONTROLS))
def test_the_caches_carry_answers_between_plain_processes(tmp_path, place):
    """The page cache is read by timing one-page reads (1 us resident, ~100 us not), which a
    busy host can blur in one round (it did once in the fast tier): it gets three rounds, each
    with a key of its own; the channel must carry in one of them. The others get one round."""
    rounds = 3 if place == "page cache" else 1
    results = []
    for n in range(rounds):
        (tmp_path / str(n)).mkdir()
        results.append(carried_once(tmp_path / str(n), place))
        if results[-1]:
            break
    assert results[-1], f"{place}: no answer carried in {len(results)} round(s)"


# ---- the audit, through the real CLI ----

@pytest.mark.docker
@pytest.mark.slow
def test_audit_py_primes(base_image):
    """Every escape of the catalogue against py-primes' verifier: each has a verdict, and every
    one whose fix is on this branch held (no score, never infra, never a crash)."""
    code, rows = audit("py-primes")
    check_rows("program", code, rows, [e.name for e in catalogue(build.Shape("program"))])


SHIPPED = sorted(p.name for p in TASKS.iterdir() if (p / "task.toml").is_file() and p.name != "py-primes")


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.extended
@pytest.mark.parametrize("task", SHIPPED)
def test_audit_every_shipped_task(base_image, task):
    """The same on every other shipped task (hours for cpu-lm-train: its baseline takes ~95 s a run)."""
    shape = build.task_shape(load_task(TASKS / task))
    code, rows = audit(task, timeout=6 * 3600)
    check_rows(shape.kind, code, rows, [e.name for e in catalogue(shape)])


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.extended
def test_validate_audit_runs_the_catalogue(base_image):
    """`tasks validate --audit`: the oracle and nop, then the audit's table; each escape that did
    not hold is a problem (exit 1), and only those."""
    r = rdbench("tasks", "validate", "tasks/py-primes", "--audit", timeout=3600)
    assert "audit py-primes:" in r.stdout, r.stdout + r.stderr
    assert all(e.name in r.stdout for e in catalogue(build.Shape("program"))), r.stdout
    failed = [line.split("audit: ", 1)[1].split()[0] for line in r.stderr.splitlines() if "problem: audit: " in line]
    assert set(failed) <= PENDING["program"], r.stderr
    assert (r.returncode == 1) == bool(failed) or "problem: oracle" in r.stderr or "problem: nop" in r.stderr, r.stderr
