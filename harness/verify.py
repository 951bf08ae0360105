"""The verifier driver: grade one submission folder in a FRESH sandbox.

    /submission  the candidate (root-owned 0700: the kit stages private copies per run)
    /baseline    the task's pristine workspace/
    /verifier    the task's verifier/ plus the kits of harness/kits/ and the parameters
                 file written from task.toml (root-only: the candidate cannot read it)

The verdict is read from the verifier's stdout, on a line tagged with a random token
that only this process and the verifier know: never from a file the candidate could
write, never from a line the candidate could print. Paths, names, the tag and the parameters
are the contract's (harness/kits/contract.py), shared with the kit.
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
from .kits import contract
from .task import TaskSpec

#: The in-sandbox kits, every kits/*.py copied flat beside every task's verifier (they import
#: each other by bare name). Run by root: verify_kit.py (timing, verdicts; re-exports
#: root_params.py, root_staging.py, root_processes.py), kernel_kit.py and kernelbench_kit.py;
#: by the candidate's user: candidate_runner.py; by the witness: witness_replay.py; shared:
#: contract.py (also the host's), kernel_cases.py, kernel_module.py. Read when a verifier
#: sandbox is prepared, never at import.
KITS_DIR = Path(__file__).parent / "kits"


class VerifierError(Exception):
    """The verifier crashed, timed out or printed no valid verdict: an infrastructure error."""


def verifier_config(task: TaskSpec, image: str, cpuset: str | None, labels: dict[str, str], gpus=()) -> SandboxConfig:
    return SandboxConfig(image=image, cpuset=cpuset, memory=task.resources.memory, pids=task.resources.pids,
                         role="verifier", labels=labels, workdir=contract.VERIFIER, gpus=list(gpus),
                         disk=task.resources.disk)


def quiet(backend, cpuset: str | None, cores: CorePool, freeze: bool = True):
    """While a verifier times on `cpuset`: the backend's agent sandboxes on those cores, of
    every rdbench process sharing `cores`' lock folder, frozen (if `freeze` and the backend
    declares it can: `backend.freezes`, then `backend.quiet`)."""
    if not freeze or not backend.freezes:  # declared by the backend (sandbox.Sandbox)
        return nullcontext()
    return backend.quiet(cpuset, cores.lock_dir)


def prepare(sb: Sandbox, task: TaskSpec) -> None:
    """Copy the baseline and the verifier in (done before the submission exists)."""
    sb.copy_in(task.path / "workspace", contract.BASELINE, owner=0, mode=0o700)
    sb.copy_in(task.path / "verifier", contract.VERIFIER, owner=0, mode=0o700)
    for kit in sorted(KITS_DIR.glob("*.py")):
        sb.write_file(f"{contract.VERIFIER}/{kit.name}", kit.read_bytes(), mode=0o600)
    write_params(sb, task)


def params_text(task: TaskSpec, repeats: int | None = None, submission: str = contract.SUBMISSION,
                baseline: str = contract.BASELINE) -> str:
    """The parameters file: task.toml's [verifier] and [scoring] (`repeats` overrides the
    task's number of timed runs), and where the verifier finds the two folders."""
    v, s = task.verifier, task.scoring
    return contract.write_params({
        "task": task.name, "kind": task.kind, "submission": submission, "baseline": baseline,
        "repeats": repeats or v.repeats, "timeout_s": v.timeout_s, "fresh_inputs": v.fresh_inputs,
        "plausible_max": s.plausible_max, "tolerance": s.tolerance, "reference": s.reference, "base": s.base,
        "task_params": v.params,
    })


def write_params(sb: Sandbox, task: TaskSpec, repeats: int | None = None) -> None:
    """The parameters file, beside the kits."""
    text = params_text(task, repeats, sb.path(contract.SUBMISSION), sb.path(contract.BASELINE))
    sb.write_file(f"{contract.VERIFIER}/{contract.PARAMS_FILE}", text.encode(), mode=0o600)


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
    sb.copy_in(submission, contract.SUBMISSION, owner=0, mode=0o700)
    write_params(sb, task, repeats)
    token = secrets.token_hex(16)
    seed = secrets.randbits(62) if seed is None else seed
    env = {contract.ENV_TOKEN: token, contract.ENV_SEED: str(seed), "PYTHONDONTWRITEBYTECODE": "1"}
    live = None
    if log_dir is not None:  # stderr lines reach the log as the verifier writes them
        log_dir.mkdir(parents=True, exist_ok=True)
        live = open(log_dir / "verifier.stderr", "w")
    try:
        sinks = [x for x in (live, on_stderr) if x is not None]
        r = sb.exec(task.verifier.command, cwd=contract.VERIFIER, env=env, timeout=task.verifier.timeout_s,
                    max_output=4 << 20, on_output=_stderr_to(sinks))
    finally:
        if live is not None:
            live.close()
    if log_dir is not None:
        (log_dir / "verifier.stdout").write_text(r.stdout)
    if r.timed_out:
        raise VerifierError(f"verifier timed out after {task.verifier.timeout_s:.0f} s")
    fault = f"{contract.HOST_FAULT_TAG} {token} "
    for ln in r.stdout.splitlines():
        if ln.startswith(fault):
            try:
                why = json.loads(ln[len(fault):])
            except json.JSONDecodeError:
                why = ln[len(fault):]
            raise VerifierError(f"this host cannot run the task's programs: {why}")
    lines = contract.result_payloads(r.stdout, token)
    if not lines:
        tail = r.stderr.strip()[-1500:]
        raise VerifierError(f"verifier printed no verdict (exit {r.returncode}): {tail}")
    if len(lines) > 1:  # the verifier emits once: anything more is a leak or a forgery
        raise VerifierError(f"verifier printed {len(lines)} verdicts; refusing all of them")
    try:
        result = VerifierResult.model_validate(json.loads(lines[0]))
    except (json.JSONDecodeError, ValidationError) as e:
        raise VerifierError(f"verifier printed an invalid verdict: {e}") from e
    # secret until now; recorded so that a surprising verdict can be reproduced (`rdbench verify --seed`)
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
