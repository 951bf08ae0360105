"""The Python API: run agents on tasks, verify a folder, read the results, with no CLI.

    from harness import api

    trials = api.run(["tasks/py-primes"], agent="oracle", trials=2, out="runs/demo")  # -> [TrialResult]
    trials = api.run(resume="runs/demo")                        # re-runs only its unfinished trials
    verdict = api.verify("tasks/py-primes", "tasks/py-primes/solution")     # -> VerifierResult
    for g in api.results(task="py-primes"):                     # per task x model, from runs/results.db
        print(g.label, g.geomean, g.success_rate)

The CLI's `run`, `verify` and `results` are these functions plus a terminal: the composition
of a run (its agent spec checked, its folder, the images, the executor, the results index)
lives here once. A request the API refuses is an ApiError with one clear message; a fault of
the sandbox or the verifier is its own exception (sandbox.SandboxError, VerifierError).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .run import Run, create_run, execute, new_run_id, open_run, with_limits

if TYPE_CHECKING:
    from results.aggregate import Group
    from results.records import AgentSpec, TrialResult, VerifierResult
    from results.store import Store

    from .executors import Executor
    from .task import TaskSpec
    from .trial import TrialSpec


class ApiError(Exception):
    """A request that cannot run: a bad task, agent, model or option, a missing image or
    executor. `code`: the exit status the CLI gives it (2: the request; 1: the machine)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def load_tasks(names: list[str | Path], root: Path | None = None) -> list["TaskSpec"]:
    """Tasks by folder path, or by name under `root` (default: $RDBENCH_TASKS, else ./tasks)."""
    from .task import TaskError, resolve_task

    root = root or Path(os.environ.get("RDBENCH_TASKS", "tasks"))
    try:
        return [resolve_task(str(n), root) for n in names]
    except TaskError as e:
        raise ApiError(str(e)) from None


def backend(name: str):
    """The Sandbox class of a backend name (sandbox.BACKENDS)."""
    from sandbox import BACKENDS, get_backend

    if name not in BACKENDS:
        raise ApiError(f"unknown sandbox backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return get_backend(name)


def images(tasks: list["TaskSpec"], sandbox: str, build: bool = True,
           log: Callable[[str], None] = _stderr) -> dict[str, str]:
    """The image of each task, built if missing (base image offline, then task Dockerfiles);
    with `build` False only the tags (a cluster's nodes hold the images: hashes of their inputs).
    Raises sandbox.SandboxError when one cannot be built."""
    if not backend(sandbox).needs_images:
        return {t.name: "local" for t in tasks}
    from sandbox.images import base_image_tag, build_base_image, build_dockerfile_image, dockerfile_image_tag

    if not build:
        base = base_image_tag()
        return {t.name: dockerfile_image_tag(t.dockerfile_dir, base) if t.dockerfile_dir else base for t in tasks}
    from sandbox.docker import client_from_env

    client = client_from_env()
    base = build_base_image(client, log=log)
    found = {t.name: build_dockerfile_image(client, t.dockerfile_dir, base, log=log) if t.dockerfile_dir else base
             for t in tasks}
    gpu_preflight(client, tasks, found)
    return found


def gpu_preflight(client, tasks: list["TaskSpec"], images: dict[str, str]) -> None:
    """Tasks that want GPUs, on a machine that has some, under Docker: the engine must be able
    to give containers a GPU (the NVIDIA container toolkit), else one clear ApiError before any
    trial. (Without a GPU on the machine, kernel tasks check correctness in the interpreter.)"""
    wanting = [t for t in tasks if t.resources.gpus]
    if not wanting:
        return
    from sandbox.gpu import detect_gpus, engine_gpu_problem

    gpus = detect_gpus()
    if gpus and (problem := engine_gpu_problem(client, images[wanting[0].name], gpus[:wanting[0].resources.gpus])):
        raise ApiError(f"{', '.join(t.name for t in wanting)} want(s) a GPU and this machine has {len(gpus)}, "
                       f"but {problem}", 1)


def agents_images(agent: str, images: dict[str, str], sandbox: str) -> None:
    """An installed agent's image over each task's image exists (else: how to build it)."""
    from agents import agent_class
    from sandbox import BACKENDS, SandboxError
    from sandbox.images import agents_image

    if not agent_class(agent).needs_images:
        return
    if not backend(sandbox).needs_images:
        hosts = [name for name in BACKENDS if backend(name).needs_images]
        raise ApiError(f"the {agent} agent runs its CLI from an image: use --sandbox {' or '.join(hosts)}")
    from sandbox.docker import client_from_env

    try:
        for tag in sorted(set(images.values())):
            agents_image(client_from_env(), tag)
    except SandboxError as e:
        raise ApiError(str(e), 1) from None


def get_executor(name: str, address: str | None = None, log: Callable[[str], None] = _stderr) -> "Executor":
    """The executor called `name` (local, or ray: a Ray cluster, with the command that installs
    Ray when it is missing)."""
    from .executors import EXECUTORS, RAY_HINT, LocalExecutor

    if name == "local":
        return LocalExecutor()
    if name == "ray":
        try:
            import ray  # noqa: F401  (the optional extra)
        except ImportError:
            raise ApiError(RAY_HINT) from None
        from .ray_exec import RayExecutor

        return RayExecutor(address, log=log)
    raise ApiError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")


def agent_spec(agent: str | None = None, model: str | None = None, *, base_url: str | None = None,
               replay: str | Path | None = None, limits: dict[str, float | None] | None = None,
               model_args: dict[str, Any] | None = None, context_window: int | None = None) -> "AgentSpec":
    """The run's AgentSpec, checked once: a model string that parses, an agent that exists and
    has what it needs (a model and its API key; a transcript to replay). The default agent:
    react with a model, replay with a transcript, else oracle."""
    from agents import AGENTS, agent_class
    from results.providers import of_wire
    from results.records import AgentSpec

    replay = Path(replay) if replay else None
    agent = agent or ("react" if model else "replay" if replay else "oracle")
    spec = AgentSpec(name=agent, model=model, base_url=base_url, replay=str(replay.resolve()) if replay else None,
                     limits={k: v for k, v in (limits or {}).items() if v is not None},
                     model_args=dict(model_args or {}), context_window=context_window)
    try:
        model_spec = spec.model_spec
    except ValueError as e:
        raise ApiError(str(e)) from None
    if agent not in AGENTS:
        raise ApiError(f"unknown agent {agent!r}; choose one of {', '.join(sorted(AGENTS))}")
    declared = agent_class(agent)()  # what it calls and needs, as its class declares
    if declared.wires != ():  # it calls a model: one it speaks, whose key the host holds
        form = "PROVIDER" if declared.wires is None else "|".join(p for w in declared.wires for p in of_wire(w)[:1])
        if model_spec is None or declared.accepts(model_spec):
            raise ApiError(f"the {agent} agent needs --model {form}/NAME")
        if missing := model_spec.missing_key():
            where = "it stays on the host: the sandbox gets a placeholder" if declared.needs_images else \
                "keys stay on the host; none enters the sandbox"
            raise ApiError(f"{model}: no API key: set {missing} ({where})")
    if agent == "replay" and (replay is None or not replay.is_file()):
        raise ApiError(f"the replay agent needs --replay PATH/transcript.jsonl (got {replay})")
    spec.version = declared.version  # an installed agent's CLI, pinned
    return spec


def new_run(tasks: list[str | Path], spec: "AgentSpec", *, trials: int = 1, concurrency: int | None = None,
            sandbox: str = "docker", repeats: int | None = None, out: Path | None = None, executor: str = "local",
            ray_address: str | None = None, freeze: bool = True) -> Run:
    """A new run folder for the tasks, their limits overridden as the spec says."""
    from results.records import RunConfig, RunError

    if not tasks:
        raise ApiError("name at least one task (e.g. tasks/py-primes), or --resume a run")
    backend(sandbox)
    agents_images(spec.name, {}, sandbox)  # an installed agent on a backend without images: refused here
    try:
        specs = [with_limits(t, spec.limits.given()) for t in load_tasks(tasks)]
    except ValueError as e:  # an override the task's [agent] schema refuses
        raise ApiError(str(e)) from None
    if backend(sandbox).host_runtime and executor != "ray":  # a cluster's nodes run the trials, not this host
        preflight(specs)
    if spec.model_spec is not None and spec.model_spec.price() is None:
        costly = [t.name for t in specs if t.agent.max_cost_usd is not None]
        if costly:
            raise ApiError(f"{', '.join(costly)}: max_cost_usd is set but models.toml has no price for {spec.model}; "
                           "add one (dollars per million tokens)")
    run_id = new_run_id()
    # a cluster run without a concurrency: as many trials at once as the cluster's resources fit (0)
    concurrency = concurrency or (0 if executor == "ray" else 1)
    config = RunConfig(run_id=run_id, tasks=[str(t.path) for t in specs], agent=spec, trials=trials,
                       concurrency=concurrency, backend=sandbox, repeats=repeats, executor=executor,
                       ray_address=ray_address, freeze=freeze,
                       provider_tools={t.name: t.agent.provider_tools for t in specs if t.agent.provider_tools})
    try:
        return create_run(config, Path(out) if out else Path("runs") / run_id, specs)
    except RunError as e:
        raise ApiError(str(e)) from None


def resumed_run(run_dir: Path, executor: str | None = None, ray_address: str | None = None) -> Run:
    """The run in `run_dir`, on the executor (and Ray address) given now, else its run.json's."""
    from results.records import RunError

    from .task import TaskError

    try:
        the_run = open_run(Path(run_dir))
    except (RunError, TaskError) as e:
        raise ApiError(str(e)) from None
    cfg = the_run.config
    if executor is not None and executor != cfg.executor:
        cfg.executor, cfg.concurrency = executor, (0 if executor == "ray" else cfg.concurrency or 1)
    cfg.ray_address = ray_address or cfg.ray_address
    if backend(cfg.backend).host_runtime and cfg.executor != "ray":
        preflight(the_run.tasks)
    return the_run


def preflight(tasks: list[TaskSpec]) -> None:
    """Before the first trial on the local backend: the verifier's runs can run what the
    tasks need (else an ApiError with the cause and the fix, exit 2)."""
    from .preflight import PreflightError, check_local

    try:
        check_local(tasks)
    except PreflightError as e:
        raise ApiError(f"--sandbox local: {e}") from None


@dataclass
class Plan:
    """A run ready to execute: its folder, images, executor and results index."""

    run: Run
    images: dict[str, str]
    executor: "Executor"
    store: "Store"
    warn: Callable[[str], None] = _stderr

    @property
    def local(self) -> bool:
        return self.run.config.executor == "local"

    @property
    def pending(self) -> list["TrialSpec"]:
        return self.run.pending()

    def execute(self, on_start: Callable[["TrialSpec"], None] = lambda s: None,
                on_done: Callable[["TrialSpec", "TrialResult"], None] = lambda s, r: None) -> list["TrialResult"]:
        """Run the pending trials, each indexed as it finishes; returns every trial of the run.
        Raises harness.executors.ExecutorError when the executor fails."""
        from results.store import RunIndexer

        execute(self.run, images=self.images, on_start=on_start, on_done=on_done, executor=self.executor,
                index=RunIndexer(self.store, self.run.run_dir, self.warn))
        return self.run.all_results()


def plan(tasks: list[str | Path] | None = None, *, agent: str | None = None, model: str | None = None,
         base_url: str | None = None, replay: str | Path | None = None, limits: dict[str, float | None] | None = None,
         model_args: dict[str, Any] | None = None, context_window: int | None = None, trials: int = 1,
         concurrency: int | None = None, sandbox: str = "docker", repeats: int | None = None,
         out: Path | None = None, executor: str | None = None, ray_address: str | None = None,
         freeze: bool = True, resume: Path | None = None, db: Path | None = None,
         log: Callable[[str], None] = _stderr, warn: Callable[[str], None] = _stderr) -> Plan:
    """A new run of `tasks` (or, with `resume`, the unfinished trials of a run folder, whose
    run.json says the rest), checked and ready: see `run` for the options."""
    from sandbox import SandboxError

    if resume is not None:
        if (tasks or agent or model or base_url or replay or any(v is not None for v in (limits or {}).values())
                or model_args or context_window or repeats):
            raise ApiError("resume takes the tasks, agent, model and repeats from the run's run.json; "
                           "give none of them")
        the_run = resumed_run(resume, executor, ray_address)
        runner = get_executor(the_run.config.executor, the_run.config.ray_address, log)
    else:
        spec = agent_spec(agent, model, base_url=base_url, replay=replay, limits=limits, model_args=model_args,
                          context_window=context_window)
        runner = get_executor(executor or "local", ray_address, log)
        the_run = new_run(list(tasks or []), spec, trials=trials, concurrency=concurrency, sandbox=sandbox,
                          repeats=repeats, out=out, executor=executor or "local", ray_address=ray_address,
                          freeze=freeze)
    cfg = the_run.config
    local = cfg.executor == "local"
    try:
        found = images(the_run.tasks, cfg.backend, build=local, log=log)  # a cluster's nodes hold their own
    except SandboxError as e:
        raise ApiError(str(e), 1) from None
    agents_images(cfg.agent.name, found if local else {}, cfg.backend)
    return Plan(the_run, found, runner, index(db, the_run.run_dir.parent), warn)


def run(tasks: list[str | Path] | None = None, *, on_start: Callable[["TrialSpec"], None] = lambda s: None,
        on_done: Callable[["TrialSpec", "TrialResult"], None] = lambda s, r: None, **options) -> list["TrialResult"]:
    """Run an agent on tasks; every trial of the run is returned (and indexed in the results
    index, `db`, default: results.db beside the run folder). The options are the CLI's:
    agent, model, base_url, replay, limits ({"max_turns", "max_cost_usd", "timeout_s"}),
    model_args, context_window, trials, concurrency, sandbox ("docker", "local", "fake"),
    repeats, out, executor, ray_address, freeze, resume (a run folder), db, log, warn."""
    return plan(tasks, **options).execute(on_start, on_done)


def verify(task: str | Path, submission: str | Path, *, sandbox: str = "docker", repeats: int | None = None,
           seed: int | None = None, log: Callable[[str], None] = _stderr,
           on_stderr: Callable[[str], None] | None = None) -> "VerifierResult":
    """Grade any folder with a task's verifier, in a fresh sandbox, on cores held exclusively;
    `on_stderr(text)` gets the verifier's stderr (its progress lines) as it is written.
    Raises sandbox.SandboxError or harness.verify.VerifierError when grading itself fails."""
    from .cores import CorePool
    from .verify import quiet, verify_folder

    spec = load_tasks([task])[0]
    if not Path(submission).is_dir():
        raise ApiError(f"{submission}: not a folder")
    cls = backend(sandbox)
    image = images([spec], sandbox, log=log)[spec.name]
    pool = CorePool()
    with pool.exclusive(spec.resources.cpus) as cpuset, quiet(cls, cpuset, pool):
        return verify_folder(spec, Path(submission), backend=cls, image=image, cpuset=cpuset, repeats=repeats,
                             seed=seed, on_stderr=on_stderr)


def index(db: Path | None = None, runs: Path | None = None) -> "Store":
    """The results index at `db` (default: $RDBENCH_DB, else results.db in the folder of run
    folders `runs`, else in runs/); it reads task folders through harness.task only."""
    from results.store import Store, default_db

    from .task import task_scoring

    return Store(Path(db) if db else default_db(Path(runs) if runs else Path("runs")), tasks=task_scoring)


def open_store(db: Path | None = None) -> "Store":
    """The results index (see `index`), which must exist."""
    store = index(db)
    if not store.path.exists():
        raise ApiError(f"{store.path}: no results index yet; run a task, or build one with rdbench results import runs/")
    return store


def results(db: Path | None = None, *, task: str | None = None, p: float = 1.0, by: str = "task") -> list["Group"]:
    """Per task x model (and settings): trials, success rate, geomean and mean speedups with
    bootstrap CIs, fast_p at `p`, scores, cost; ordered by task (then model) or by model."""
    from results.aggregate import aggregate, order
    from results.registry import load_models
    from results.store import StoreError

    if by not in ("task", "model"):
        raise ApiError("by is task or model")
    store = open_store(db)
    try:
        return order(aggregate(store.rows(task=task), load_models(), p=p), by)
    except StoreError as e:
        raise ApiError(str(e), 1) from None
    except ValueError as e:  # a malformed models.toml
        raise ApiError(str(e)) from None
