"""The Ray executor: a run's trials on a Ray cluster (the optional `ray` extra).

Driver (the machine that runs `rdbench run`): connects to the cluster, checks every alive
node (Docker answers, the run's images are there), ships each task folder once to the
object store, and submits one Ray task per trial asking for the task's `cpus` (and
`gpus`), so that Ray never puts more trials on a node than its CPUs hold (the rest wait in
Ray's queue, where an autoscaler sees them); a trial is shown as started when its node
starts it (a message on a queue actor on the driver's node). As each
trial finishes, its folder comes back as a tar in the task's return value and is unpacked
into the run folder: no shared filesystem is assumed.

Node (a Ray worker process): unpacks the task folder, runs harness.trial.run_trial exactly
as the local executor does, on its own CorePool (whose reservations hold machine-wide),
stamps trial.json with the node, and returns the folder.

Faults: a trial whose node or worker dies is written as an `infra` error (never a score),
so `rdbench run --resume` runs it again wherever Ray places it; Ray does not retry it
behind the run's back (max_retries=0). On Ctrl-C the driver cancels every trial
(KeyboardInterrupt in the worker: run_trial removes its sandboxes), force-kills what does
not stop, then removes the run's containers on every node.

Secrets: the model's API keys set on the driver travel in the job's runtime_env
(env_vars), so they reach only the Ray worker processes that run the agent loop; the
sandbox gets no environment from its host.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import socket
import tarfile
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import ray
from ray.exceptions import RayError, RayTaskError
from ray.util.queue import Queue
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from agents import agent_class
from results import providers
from results.records import TrialResult, write_json_atomic
from sandbox import get_backend
from sandbox.images import agents_image_tag

from .cores import CorePool
from .executors import ExecutorError
from .trial import TrialSpec, now, run_trial

#: what travels from the driver's environment to the nodes (model keys only when the
#: run's agent calls a model); never into a sandbox
#: (the keys and server addresses: every provider record's, results/providers.py)
CONFIG_VARS = ("RDBENCH_BASE_URL", "RDBENCH_MODEL_RETRIES", "RDBENCH_SESSION")
#: seconds a cancelled trial gets to remove its own sandboxes before it is killed
CANCEL_GRACE_S = 20.0


def tar_folder(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=".")
    return buf.getvalue()


def untar_folder(data: bytes, dest: Path) -> None:
    """Unpack a tar_folder() into `dest`, replacing what was there (a resumed trial's old folder)."""
    incoming = dest.with_name(dest.name + ".incoming")
    shutil.rmtree(incoming, ignore_errors=True)
    incoming.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(incoming, filter="data")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(incoming, dest)


def forwarded_env(agent_calls_model: bool) -> dict[str, str]:
    names = providers.base_url_vars() + CONFIG_VARS + (providers.key_vars() if agent_calls_model else ())
    return {k: os.environ[k] for k in names if os.environ.get(k)}


def this_node() -> dict[str, str]:
    return {"id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname()}


def _node_problem(images: list[str], backend: str) -> str | None:
    """Why this node cannot run the trials (None: it can)."""
    if not get_backend(backend).needs_images:
        return None
    from sandbox import SandboxError
    from sandbox.docker import client_from_env
    from sandbox.images import image_exists

    try:
        client = client_from_env()
    except SandboxError as e:
        return f"no Docker engine: {e}"
    missing = [tag for tag in images if not image_exists(client, tag)]
    if missing:
        agents = " --agents" if any(tag.startswith("rdbench-agents:") for tag in missing) else ""
        return (f"missing image(s) {', '.join(missing)}: build them there with `rdbench images build{agents}` (and "
                "the task names, for tasks with an environment/Dockerfile), from the same rdbench version as the "
                "driver")
    return None


@ray.remote(num_cpus=0, max_retries=0)
def probe_node(images: list[str], backend: str) -> tuple[dict[str, str], str | None]:
    """On one node: who it is, and why it cannot run trials (None: it can). Also removes
    containers that dead runs left on its Docker engine, as a local run does first."""
    problem = _node_problem(images, backend)
    if problem is None:
        get_backend(backend).remove_leftovers()
    return this_node(), problem


@ray.remote(num_cpus=0, max_retries=0)
def clean_node(run_id: str | None, dead_only: bool) -> tuple[dict[str, str], list[str]]:
    """On one node: remove rdbench containers (of `run_id`, or those of dead runs)."""
    from sandbox.docker import client_from_env, remove_containers

    return this_node(), remove_containers(client_from_env(), run_id=run_id, dead_only=dead_only)


def _task_folder(task_tar: bytes) -> Path:
    """The shipped task folder, unpacked once per node (content-addressed, so that trials of
    one task share it and a changed task never reads a stale copy)."""
    root = Path(tempfile.gettempdir()) / f"rdbench-ray-{os.getuid()}" / "tasks"
    folder = root / hashlib.sha256(task_tar).hexdigest()[:16]
    if not folder.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root))
        untar_folder(task_tar, tmp / "task")
        try:
            os.replace(tmp / "task", folder)
        except OSError:  # another worker of this node unpacked it first
            pass
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


@ray.remote(max_retries=0)
def run_on_node(spec: TrialSpec, task_tar: bytes, replay: bytes | None, image: str, backend: str,
                starts=None) -> tuple[str, bytes]:
    """One trial on this node, said on `starts` (a ray.util.queue.Queue) as it starts; returns
    (trial.json, the trial folder as a tar)."""
    node = this_node()
    problem = _node_problem([image], backend)
    if problem is not None:
        raise ExecutorError(f"node {node['id'][:12]} ({node['host']}) refused: {problem}")
    if starts is not None:  # sent, not waited for: a task blocked in ray.get lends its CPUs to another
        try:
            starts.actor.put_nowait.remote(spec.trial_id)
        except Exception:  # the progress display only: never the trial's fault
            pass
    work = Path(tempfile.mkdtemp(prefix="rdbench-ray-trial-"))
    try:
        agent = spec.agent
        if replay is not None:
            (work / "replay.jsonl").write_bytes(replay)
            agent = agent.model_copy(update={"replay": str(work / "replay.jsonl")})
        task = spec.task.model_copy(update={"path": _task_folder(task_tar)})
        spec = replace(spec, task=task, agent=agent, out_dir=work / spec.trial_id)
        result = run_trial(spec, image=image, cores=CorePool(), backend=backend)
        result.node = node
        write_json_atomic(spec.out_dir / "trial.json", result.model_dump(mode="json"))
        return result.model_dump_json(), tar_folder(spec.out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def infra_result(spec: TrialSpec, error: str) -> TrialResult:
    """The record of a trial the cluster lost (its node or worker died): never a score."""
    return spec.record(error_class="infra", error=error, finished_at=now())


class RayExecutor:
    """Trials on the Ray cluster at `address` (None: RAY_ADDRESS, else a new local one)."""

    def __init__(self, address: str | None, log=print):
        self.address = address
        self.log = log

    def connect(self, env: dict[str, str]) -> None:
        if ray.is_initialized():
            ray.shutdown()
        try:
            ray.init(address=self.address, runtime_env={"env_vars": env} if env else None,
                     logging_level=logging.WARNING, log_to_driver=False)
        except Exception as e:  # ConnectionError, or what a bad address raises
            raise ExecutorError(f"cannot reach the Ray cluster at {self.address or 'RAY_ADDRESS'}: {e}") from e

    def nodes(self) -> list[dict]:
        return [n for n in ray.nodes() if n.get("Alive")]

    def on_each_node(self, fn, *args, timeout: float = 120) -> list:
        """Run the remote `fn` on every alive node (pinned there); the answers of those that answered."""
        refs = [fn.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(*args)
                for n in self.nodes()]
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        out = []
        for ref in done:
            try:
                out.append(ray.get(ref))
            except RayError as e:
                self.log(f"a node did not answer: {type(e).__name__}: {e}")
        return out

    @staticmethod
    def fits(spec: TrialSpec, nodes: list[dict]) -> bool:
        """Whether one of `nodes` can ever hold the trial (Ray would wait for one forever)."""
        r = spec.task.resources
        return any(n["Resources"].get("CPU", 0) >= r.cpus and n["Resources"].get("GPU", 0) >= r.gpus for n in nodes)

    def preflight(self, config, todo: list[TrialSpec], images: dict[str, str]) -> None:
        nodes = self.nodes()
        for spec in {s.task.name: s for s in todo}.values():
            r = spec.task.resources
            if not self.fits(spec, nodes):
                raise ExecutorError(f"{spec.task.name}: no node of the cluster has {r.cpus} CPU(s) and {r.gpus} "
                                    "GPU(s) for one trial")
        needed = {images[s.task.name] for s in todo}
        if get_backend(config.backend).needs_images and agent_class(config.agent.name).needs_images:  # its CLIs
            needed |= {agents_image_tag(tag) for tag in needed}
        needed = sorted(needed)
        answers = self.on_each_node(probe_node, needed, config.backend)
        refused = [f"node {node['id'][:12]} ({node['host']}): {problem}" for node, problem in answers if problem]
        if refused:
            raise ExecutorError("the cluster has node(s) that cannot run trials; fix or remove them:\n  "
                                + "\n  ".join(refused))
        self.log(f"ray cluster: {len(answers)} node(s) ready ({', '.join(sorted({n['host'] for n, _ in answers}))})")

    def clean(self, run_id: str | None, dead_only: bool = True) -> list[tuple[dict[str, str], list[str]]]:
        """Remove rdbench containers on every node it reaches: those of `run_id`, else of dead runs."""
        self.connect(forwarded_env(False))
        try:
            return self.on_each_node(clean_node, run_id, dead_only)
        finally:
            ray.shutdown()

    def trials(self, config, todo, images, on_start):
        self.connect(forwarded_env(config.agent.model is not None))
        refs: dict = {}
        try:
            self.preflight(config, todo, images)
        except BaseException:  # refused: no trial started, nothing to cancel
            ray.shutdown()
            raise
        try:
            tasks = {s.task.name: ray.put(tar_folder(s.task.path)) for s in todo}
            replay = Path(config.agent.replay).read_bytes() if config.agent.replay else None
            limit = config.concurrency if config.concurrency > 0 else len(todo)
            queue = list(todo)
            checked, announced = time.monotonic(), set()
            starts = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": NodeAffinitySchedulingStrategy(
                ray.get_runtime_context().get_node_id(), soft=True)})  # the nodes' "started" messages
            while queue or refs:
                while queue and len(refs) < limit:
                    spec = queue.pop(0)
                    res = spec.task.resources
                    refs[run_on_node.options(num_cpus=res.cpus, num_gpus=res.gpus, name=spec.trial_id).remote(
                        spec, tasks[spec.task.name], replay, images[spec.task.name], config.backend, starts)] = spec
                # the starts first, then the results: a trial that started on a freed CPU is shown
                # after the one that freed it is done (its result gets half a second to arrive)
                began = self.started(starts)
                ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0.5 if began else 0)
                for ref in ready:
                    spec = refs.pop(ref)
                    yield spec, self.collect(ref, spec)
                live = {s.trial_id: s for s in refs.values()}
                for trial_id in began:
                    if trial_id in live and trial_id not in announced:
                        announced.add(trial_id)
                        on_start(live[trial_id])
                if refs:
                    ray.wait(list(refs), num_returns=1, timeout=0.5)
                if time.monotonic() - checked > 10:  # the only nodes that could hold a trial died
                    checked, nodes = time.monotonic(), self.nodes()
                    for ref, spec in [(r, s) for r, s in refs.items() if not self.fits(s, nodes)]:
                        ray.cancel(ref, force=True)
                        del refs[ref]
                        yield spec, self.lost(spec, f"no alive node of the cluster can hold this trial "
                                              f"({spec.task.resources.cpus} CPU(s), {spec.task.resources.gpus} GPU(s))")
        except BaseException:  # Ctrl-C, or the consumer stopped
            self.cancel(config.run_id, list(refs))
            raise
        finally:
            ray.shutdown()

    @staticmethod
    def started(starts: Queue) -> list[str]:
        """The trial ids the nodes said they started since the last look (none if the queue's
        actor is gone: the display then shows such trials when they are done)."""
        try:
            n = starts.qsize()
            return starts.get_nowait_batch(n) if n else []
        except Exception:  # RayActorError and kin: progress only
            return []

    def collect(self, ref, spec: TrialSpec) -> TrialResult:
        """A finished trial's result, its folder unpacked into the run folder."""
        try:
            result_json, folder = ray.get(ref)
        except RayTaskError as e:  # raised by rdbench on the node (a refused node): infrastructure
            return self.lost(spec, f"{type(e.cause).__name__}: {e.cause}" if isinstance(e.cause, Exception) else str(e))
        except RayError as e:  # the node or its worker died, the object was lost
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return self.lost(spec, f"the Ray node or worker running this trial was lost: {type(e).__name__}: {first}")
        untar_folder(folder, spec.out_dir)
        return TrialResult.model_validate_json(result_json)

    @staticmethod
    def lost(spec: TrialSpec, error: str) -> TrialResult:
        """Record a trial the cluster lost as an infrastructure error, in the run folder."""
        result = infra_result(spec, error)
        spec.out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(spec.out_dir / "trial.json", result.model_dump(mode="json"))
        return result

    def cancel(self, run_id: str, refs: list) -> None:
        """Stop the run's trials on the cluster and remove its containers on every node."""
        if refs:
            for ref in refs:
                ray.cancel(ref)  # KeyboardInterrupt in the worker: run_trial removes its sandboxes
            deadline = time.monotonic() + CANCEL_GRACE_S
            left = refs
            while left and time.monotonic() < deadline:
                _, left = ray.wait(left, num_returns=len(left), timeout=1.0)
            for ref in left:
                ray.cancel(ref, force=True)
            if left:
                ray.wait(left, num_returns=len(left), timeout=10.0)
        removed = self.on_each_node(clean_node, run_id, False, timeout=60)
        n = sum(len(ids) for _, ids in removed)
        self.log(f"cancelled {len(refs)} cluster trial(s); removed {n} container(s) on {len(removed)} node(s)")

