"""The verifier driver: grade one submission folder in a FRESH sandbox.

    /submission  the candidate (root-owned 0700: the kit stages private copies per run)
    /baseline    the task's pristine workspace/
    /verifier    the task's verifier/ plus the kits of harness/kits/ (root-only: the
                 candidate cannot read it)

The verdict is read from the verifier's stdout, on a line tagged with a random token
that only this process and the verifier know: never from a file the candidate could
write, never from a line the candidate could print.
"""

from __future__ import annotations

import json
import secrets
from contextlib import nullcontext
from pathlib import Path

from pydantic import ValidationError

from results.records import VerifierResult
from sandbox import Sandbox, SandboxConfig

from .cores import CorePool, GpuPool
from .task import TaskSpec

#: The in-sandbox kits, copied beside every task's verifier: the timing and isolation
#: discipline (verify_kit.py), and the shared verifier of kernel tasks (kernel_kit.py and its
#: candidate-side half kernel_runner.py, used by tasks/triton-*). Read when a verifier
#: sandbox is prepared, never at import.
KITS_DIR = Path(__file__).parent / "kits"
RESULT_TAG = "RDBENCH_RESULT"
#: The kit's line (verify_kit.check_host) saying that this host cannot run the task's programs
#: as the runs' users, before any of the submission ran: an infrastructure error.
HOST_FAULT_TAG = "RDBENCH_HOST_FAULT"


class VerifierError(Exception):
    """The verifier crashed, timed out or printed no valid verdict: an infrastructure error."""


def verifier_config(task: TaskSpec, image: str, cpuset: str | None, labels: dict[str, str], gpus=()) -> SandboxConfig:
    return SandboxConfig(image=image, cpuset=cpuset, memory=task.resources.memory, pids=task.resources.pids,
                         role="verifier", labels=labels, workdir="/verifier", gpus=list(gpus), disk=task.resources.disk)


def quiet(backend, cpuset: str | None, cores: CorePool, freeze: bool = True):
    """While a verifier times on `cpuset`: the backend's agent sandboxes on those cores, of
    every rdbench process sharing `cores`' lock folder, frozen (if `freeze` and the backend
    declares it can: `backend.freezes`, then `backend.quiet`)."""
    if not freeze or not backend.freezes:  # declared by the backend (sandbox.Sandbox)
        return nullcontext()
    return backend.quiet(cpuset, cores.lock_dir)


def prepare(sb: Sandbox, task: TaskSpec) -> None:
    """Copy the baseline and the verifier in (done before the submission exists)."""
    sb.copy_in(task.path / "workspace", "/baseline", owner=0, mode=0o700)
    sb.copy_in(task.path / "verifier", "/verifier", owner=0, mode=0o700)
    for kit in sorted(KITS_DIR.glob("*.py")):
        sb.write_file(f"/verifier/{kit.name}", kit.read_bytes(), mode=0o600)


def _stderr_to(sinks):
    """An on_output that hands the verifier's stderr, as it comes, to each of `sinks` (files or
    callables): its progress lines reach the run's log and `rdbench verify`'s stderr live."""
    def write(stream: str, text: str) -> None:
        if stream != "stderr":
            return
        for sink in sinks:
            if callable(sink):
                sink(text)
            else:
                sink.write(text)
                sink.flush()
    return write if sinks else None


def grade(sb: Sandbox, task: TaskSpec, submission: Path, log_dir: Path | None = None,
          repeats: int | None = None, seed: int | None = None, on_stderr=None) -> VerifierResult:
    """Copy the submission into a prepared verifier sandbox and run the verifier.
    `repeats` overrides the task's number of timed runs (fewer: quicker, noisier).
    `on_stderr(text)` gets the verifier's stderr (its progress lines) as it is written."""
    sb.copy_in(submission, "/submission", owner=0, mode=0o700)
    token = secrets.token_hex(16)
    seed = secrets.randbits(62) if seed is None else seed
    env = {
        "RDBENCH_RESULT_TOKEN": token,
        "RDBENCH_SECRET_SEED": str(seed),
        "RDBENCH_SUBMISSION": sb.path("/submission"),
        "RDBENCH_BASELINE": sb.path("/baseline"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "RDBENCH_REPEATS": str(repeats or task.verifier.repeats),
        "RDBENCH_VERIFIER_TIMEOUT": str(task.verifier.timeout_s),
    }
    live = None
    if log_dir is not None:  # stderr lines reach the log as the verifier writes them
        log_dir.mkdir(parents=True, exist_ok=True)
        live = open(log_dir / "verifier.stderr", "w")
    try:
        sinks = [x for x in (live, on_stderr) if x is not None]
        r = sb.exec(task.verifier.command, cwd="/verifier", env=env, timeout=task.verifier.timeout_s,
                    max_output=4 << 20, on_output=_stderr_to(sinks))
    finally:
        if live is not None:
            live.close()
    if log_dir is not None:
        (log_dir / "verifier.stdout").write_text(r.stdout)
    if r.timed_out:
        raise VerifierError(f"verifier timed out after {task.verifier.timeout_s:.0f} s")
    fault = f"{HOST_FAULT_TAG} {token} "
    for ln in r.stdout.splitlines():
        if ln.startswith(fault):
            try:
                why = json.loads(ln[len(fault):])
            except json.JSONDecodeError:
                why = ln[len(fault):]
            raise VerifierError(f"this host cannot run the task's programs: {why}")
    prefix = f"{RESULT_TAG} {token} "
    lines = [ln[len(prefix):] for ln in r.stdout.splitlines() if ln.startswith(prefix)]
    if not lines:
        tail = r.stderr.strip()[-1500:]
        raise VerifierError(f"verifier printed no verdict (exit {r.returncode}): {tail}")
    if len(lines) > 1:  # the verifier emits once: anything more is a leak or a forgery
        raise VerifierError(f"verifier printed {len(lines)} verdicts; refusing all of them")
    try:
        result = VerifierResult.model_validate(json.loads(lines[0]))
    except (json.JSONDecodeError, ValidationError) as e:
        raise VerifierError(f"verifier printed an invalid verdict: {e}") from e
    # secret until now; recorded so that a surprising verdict can be reproduced (RDBENCH_SECRET_SEED)
    result.details["secret_seed"] = seed
    return result


def verify_folder(task: TaskSpec, submission: Path, *, backend, image: str, cpuset: str | None = None,
                  labels: dict[str, str] | None = None, log_dir: Path | None = None,
                  repeats: int | None = None, gpus: list[int] | None = None,
                  seed: int | None = None, on_stderr=None) -> VerifierResult:
    """Grade a folder from scratch: fresh sandbox, prepare, grade, destroy. `gpus` None: the
    task's number of this machine's GPUs, held under the machine-wide GPU locks meanwhile."""
    if gpus is None:
        with GpuPool().exclusive(task.resources.gpus) as held:
            return verify_folder(task, submission, backend=backend, image=image, cpuset=cpuset, labels=labels,
                                 log_dir=log_dir, repeats=repeats, gpus=held, seed=seed, on_stderr=on_stderr)
    sb = backend(verifier_config(task, image, cpuset, labels or {}, gpus))
    try:
        prepare(sb, task)
        return grade(sb, task, submission, log_dir, repeats, seed, on_stderr)
    finally:
        sb.close()
