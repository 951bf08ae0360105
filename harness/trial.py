"""One trial, start to end: a function of (task, agent spec, index, output folder).

1. agent sandbox from the task's image, /workspace = task's workspace/
2. the agent runs; /workspace is copied out as the submission; the sandbox is destroyed
3. a FRESH verifier sandbox grades the submission on cores (and GPUs) held exclusively
4. trial.json is written, whatever happened (except on cancellation: then nothing is,
   so that --resume runs the trial again)
"""

from __future__ import annotations

import difflib
import filecmp
import shutil
import stat
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from agents import AgentContext, AgentError, ModelError, get_agent
from results.records import AgentSpec, TrialResult, trial_id, write_json_atomic
from sandbox import tree
from sandbox import AGENT_UID, SandboxConfig, SandboxError, SandboxFileNotFound, SandboxTooLarge, get_backend

from .cores import CorePool
from .task import TaskSpec
from .verify import VerifierError, grade, prepare, quiet, verifier_config


#: the largest /workspace taken as a submission (bytes); a larger one is the agent's failure
MAX_SUBMISSION = 2 << 30


class Cancelled(Exception):
    """The run was interrupted; the trial leaves no result."""


@dataclass
class TrialSpec:
    task: TaskSpec
    agent: AgentSpec
    index: int
    out_dir: Path
    run_id: str
    #: timed runs per program in the verifier (None: the task's own number)
    repeats: int | None = None
    #: freeze agent sandboxes on the verifier's cores while it times (RunConfig.freeze)
    freeze: bool = True

    @property
    def trial_id(self) -> str:
        return trial_id(self.task.name, self.agent.name, self.index)

    def record(self, **outcome) -> TrialResult:
        """This trial's trial.json as it starts (its identity and its task's scoring), with `outcome`."""
        task = self.task
        return TrialResult(task=task.name, agent=self.agent.name, model=self.agent.model, trial=self.index,
                           model_settings=self.agent.model_settings(), run_id=self.run_id, kind=task.kind,
                           score_base=task.scoring.base, score_reference=task.scoring.reference,
                           started_at=now(), **outcome)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def make_patch(base: Path, new: Path, limit: int = 2 << 20, max_file: int = 1 << 20) -> str:
    """A unified diff from `base` to `new` (text files; binaries and files over `max_file`
    bytes are named, not shown). The folders are walked by `sandbox.tree` (iterative,
    bounded: a deep chain the agent left is no RecursionError)."""
    out = []
    try:
        names = sorted(set(tree.files(base)) | set(tree.files(new)))
    except tree.TreeTooLarge as e:
        return f"(no patch: {e})\n"
    for rel in names:
        a, b = base / rel, new / rel
        if max(_size(a), _size(b)) > max_file:
            if _size(a) != _size(b) or not filecmp.cmp(a, b, shallow=False):
                out.append(f"Large files a/{rel} and b/{rel} differ\n")
            continue
        da = a.read_bytes() if _size(a) >= 0 else b""
        db = b.read_bytes() if _size(b) >= 0 else b""
        if da == db:
            continue
        try:
            la, lb = da.decode().splitlines(True), db.decode().splitlines(True)
        except UnicodeDecodeError:
            out.append(f"Binary files a/{rel} and b/{rel} differ\n")
            continue
        out.extend(difflib.unified_diff(la, lb, f"a/{rel}", f"b/{rel}"))
        if sum(map(len, out)) > limit:
            out.append("... (patch cut)\n")
            break
    return "".join(out)


def _size(p: Path) -> int:
    """The size of regular file `p`, -1 when it is none (missing, a folder, a link)."""
    try:
        st = p.lstat()
    except OSError:
        return -1
    return st.st_size if stat.S_ISREG(st.st_mode) else -1


def take_submission(sb, dst: Path, lost: bool, limit: int = MAX_SUBMISSION) -> None:
    """Copy /workspace out of the agent's sandbox. What the agent caused is an AgentError: a
    /workspace over `limit` bytes, or one that cannot be copied after the agent lost its own
    sandbox (killed the exec server). Other SandboxErrors pass (infrastructure)."""
    if not lost:
        r = sb.exec("du -sb . 2>/dev/null | tail -n 1", cwd="/workspace", timeout=300)
        size = r.stdout.split()[0] if r.stdout.split() else ""
        if size.isdigit() and int(size) > limit:
            raise AgentError(f"the submission (/workspace) is {int(size) / 2**20:.0f} MiB, over the "
                             f"{limit / 2**20:.0f} MiB limit; not copied")
    try:
        sb.copy_out("/workspace", dst)
    except SandboxFileNotFound as e:
        raise AgentError(f"the agent removed /workspace: {e}") from e
    except SandboxTooLarge as e:  # the backend's own cap (files du could not see)
        raise AgentError(f"the submission (/workspace) is over the size limit: {e}") from e
    except SandboxError as e:
        if lost:
            raise AgentError(f"the agent lost its sandbox, and /workspace could not be copied out: {e}") from e
        raise


def frozen_s(sb) -> float:
    """Seconds the sandbox has spent frozen so far (0 for a backend that never freezes)."""
    return round(sb.frozen_s(), 3)  # declared by every backend (sandbox.Sandbox)


class _Phases(dict):
    @contextmanager
    def __call__(self, name: str):
        t = time.monotonic()
        try:
            yield
        finally:
            self[name] = round(self.get(name, 0.0) + time.monotonic() - t, 4)


def run_trial(spec: TrialSpec, *, image: str, cores: CorePool, backend: str = "docker",
              cancel: threading.Event | None = None) -> TrialResult:
    """Run one trial and write its trial.json. Raises Cancelled if `cancel` is set meanwhile."""
    task = spec.task
    trial_dir = spec.out_dir
    trial_dir.mkdir(parents=True, exist_ok=True)
    (trial_dir / "logs").mkdir(exist_ok=True)
    (trial_dir / "logs" / "verifier.stderr").unlink(missing_ok=True)  # a resumed trial's: not live
    labels = {"rdbench.run": spec.run_id, "rdbench.trial": spec.trial_id}
    Backend = get_backend(backend)
    result = spec.record()
    phases = _Phases()
    sandboxes = []

    def open_sandbox(config: SandboxConfig):
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        sb = Backend(config)
        sandboxes.append(sb)
        return sb

    def close(sb) -> None:
        with phases("teardown"):
            sb.close()
        if sb in sandboxes:
            sandboxes.remove(sb)

    agent = None
    try:
        agent = get_agent(spec.agent.name)
        with phases("agent_sandbox"):
            # an agent may adjust its sandbox (installed agents: their CLIs' image, the gateway's socket)
            sb = open_sandbox(agent.prepare_sandbox(SandboxConfig(
                image=image, cpuset=cores.spread(task.resources.cpus, spec.index), memory=task.resources.memory,
                pids=task.resources.pids, role="agent", labels=labels,
                gpus=cores.gpus.spread(task.resources.gpus, spec.index), disk=task.resources.disk,
                lock_dir=str(cores.lock_dir))))
            sb.copy_in(task.path / "workspace", "/workspace", owner=AGENT_UID)
        with phases("agent"):
            outcome = agent.run(sb, AgentContext(task=task, trial_dir=trial_dir, agent=spec.agent))
        result.stop_reason, result.usage = outcome.stop_reason, outcome.usage
        submission = trial_dir / "submission"
        with phases("submission"):
            shutil.rmtree(submission, ignore_errors=True)  # a resumed trial starts clean
            take_submission(sb, submission, lost=outcome.stop_reason == "sandbox_lost")
            (trial_dir / "submission.patch").write_text(make_patch(task.path / "workspace", submission))
        result.frozen_s = frozen_s(sb)
        close(sb)
        with phases("verify"):
            # cores first, then GPUs, everywhere: no two trials can wait on each other
            with cores.exclusive(task.resources.cpus) as cpuset, cores.gpus.exclusive(task.resources.gpus) as gpus, \
                    quiet(Backend, cpuset, cores, spec.freeze):
                result.verify_cpuset, start = cpuset, time.time()
                vsb = open_sandbox(verifier_config(task, image, cpuset, labels, gpus))
                prepare(vsb, task)
                verdict = grade(vsb, task, submission, trial_dir / "logs", spec.repeats)
                result.verify_window = [start, time.time()]
        close(vsb)
        (trial_dir / "verifier.json").write_text(verdict.model_dump_json(indent=2))
        result.verification = verdict
        if gpus:
            result.details["verify_gpus"] = gpus
    except AgentError as e:
        result.error_class, result.error = "agent", str(e)
    except Cancelled:
        raise
    except Exception as e:  # an infrastructure fault: loud, and never a score
        if cancel is not None and cancel.is_set():
            raise Cancelled() from e
        result.error_class, result.error = "infra", f"{type(e).__name__}: {e}"
        if not isinstance(e, (SandboxError, VerifierError, ModelError)):  # a harness bug
            (trial_dir / "logs" / "traceback.txt").write_text(traceback.format_exc())
            result.error += " (traceback in logs/traceback.txt)"
    finally:
        for sb in list(sandboxes):
            close(sb)
        if agent is not None:
            agent.release()  # what prepare_sandbox made, also when the sandbox never started
    result.phases = dict(phases)
    result.finished_at = now()
    write_json_atomic(trial_dir / "trial.json", result.model_dump(mode="json"))
    return result
