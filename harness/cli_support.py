"""What the CLI's commands share: the consoles and one-line errors, tasks and images, the
agent spec built (and checked) from the options, live progress, and `containers`: the
guard around every command that starts sandboxes.

Cheap to import: pydantic models, the SDKs and docker are imported by the functions that
use them, so `rdbench --help` stays quick.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from results.records import AgentSpec

    from .run import Run
    from .task import TaskSpec

console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
TASKS_ROOT = Path(os.environ.get("RDBENCH_TASKS", "tasks"))


def fail(msg: str, code: int = 2):
    err.print(f"[bold red]error:[/] {msg}", highlight=False)
    raise typer.Exit(code)


def warn(msg: str) -> None:
    err.print(f"[yellow]warning:[/] {msg}", highlight=False)


def load_tasks(names: list[str]) -> list["TaskSpec"]:
    from .task import TaskError, resolve_task

    try:
        return [resolve_task(n, TASKS_ROOT) for n in names]
    except TaskError as e:
        fail(str(e))


def docker_client():
    from sandbox.docker import client_from_env

    return client_from_env()


def ensure_images(tasks: list["TaskSpec"], backend: str) -> dict[str, str]:
    """The image of each task, built if missing (base image offline, then task Dockerfiles)."""
    if backend != "docker":
        return {t.name: "local" for t in tasks}
    from sandbox.images import build_base_image, build_dockerfile_image

    client = docker_client()
    base = build_base_image(client, log=lambda m: err.print(f"[dim]{m}[/]"))
    images = {}
    for t in tasks:
        env = t.dockerfile_dir
        images[t.name] = build_dockerfile_image(client, env, base, log=lambda m: err.print(f"[dim]{m}[/]")) if env else base
    return images


def images_or_fail(tasks: list["TaskSpec"], backend: str, build: bool = True) -> dict[str, str]:
    """The image of each task; built here unless `build` is False (a cluster run: then only
    the tags, which the nodes must hold; they are hashes of the images' inputs)."""
    from sandbox import SandboxError

    if not build and backend == "docker":
        from sandbox.images import base_image_tag, dockerfile_image_tag

        base = base_image_tag()
        return {t.name: dockerfile_image_tag(t.dockerfile_dir, base) if t.dockerfile_dir else base for t in tasks}
    try:
        return ensure_images(tasks, backend)
    except SandboxError as e:
        fail(str(e), 1)


def executor_or_fail(name: str, address: str | None):
    """The run's executor (harness.executors); an unknown one, or Ray not installed, is one clear error."""
    from rich.markup import escape

    from .executors import ExecutorError, get_executor

    try:
        return get_executor(name, address=address, log=lambda m: err.print(f"[dim]{escape(m)}[/]", highlight=False))
    except ExecutorError as e:
        fail(escape(str(e)))  # '.[ray]' is no markup


def remove_own_containers() -> list[str]:
    """Remove the containers this process started (labelled with its pid by the Docker backend)."""
    from sandbox.docker import remove_containers

    return remove_containers(docker_client(), own=True)


def remove_leftovers() -> list[str]:
    """Remove what crashed runs left on this machine. Best effort: a container that another
    process removes while the list is read (its teardown) is no error."""
    import docker.errors

    from sandbox.docker import remove_containers

    for _ in range(3):
        try:
            return remove_containers(docker_client())
        except docker.errors.NotFound:
            continue
    return []


def _exit_now_if_stuck(code: int) -> None:
    """Exit at once when a worker thread is still busy (a trial waiting on a model's answer
    would otherwise keep the process alive, and then call the model again): the containers
    are removed by now and an interrupted trial leaves no result to save."""
    busy = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if busy:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _sigterm(signum, frame):
    raise KeyboardInterrupt


@contextmanager
def containers(backend: str, resume_hint: str | None = None):
    """Around every command that starts sandboxes. Docker: first removes what crashed runs
    left on this machine. SIGTERM, and Ctrl-C even where the shell started us with SIGINT
    ignored (a background job), interrupt the command; then the containers it started are
    removed and it exits 130."""
    if backend == "docker":
        leftovers = remove_leftovers()
        if leftovers:
            err.print(f"removed {len(leftovers)} container(s) left by dead runs")
    old_term = signal.signal(signal.SIGTERM, _sigterm)
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    except KeyboardInterrupt:
        if backend == "docker":
            err.print(f"interrupted: removed {len(remove_own_containers())} container(s)")
        if resume_hint:
            err.print(resume_hint)
        _exit_now_if_stuck(130)
        raise typer.Exit(130)
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)


def parse_model_args(pairs: list[str]) -> dict:
    """--model-arg KEY=VALUE pairs; a VALUE that reads as JSON (16000, 0.2, true) is that value."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(f"--model-arg {pair!r}: write KEY=VALUE, e.g. thinking_budget=16000 or reasoning_effort=high")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def agent_spec(agent: str | None, model: str | None, base_url: str | None, replay: Path | None,
               limits: dict[str, float | None], model_args: list[str] = (),
               context_window: int | None = None) -> "AgentSpec":
    """The run's AgentSpec, checked once: a model string that parses, an agent that exists and
    has what it needs (a model and its API key; a transcript to replay)."""
    from agents import AGENTS
    from results.records import AgentSpec

    agent = agent or ("react" if model else "replay" if replay else "oracle")
    spec = AgentSpec(name=agent, model=model, base_url=base_url, replay=str(replay.resolve()) if replay else None,
                     limits={k: v for k, v in limits.items() if v is not None},
                     model_args=parse_model_args(list(model_args)), context_window=context_window)
    try:
        model_spec = spec.model_spec
    except ValueError as e:
        fail(str(e))
    if agent == "react" and model_spec is None:
        fail("the react agent needs --model PROVIDER/NAME")
    if agent == "react" and (missing := model_spec.missing_key()):
        fail(f"{model}: no API key: set {missing} (keys stay on the host; none enters the sandbox)")
    if agent == "replay" and (replay is None or not replay.is_file()):
        fail(f"the replay agent needs --replay PATH/transcript.jsonl (got {replay})")
    if agent in ("claude-code", "codex"):  # installed agents: a CLI in the sandbox, its model through a gateway
        from sandbox.images import AGENT_CLIS

        wants = "anthropic" if agent == "claude-code" else "openai"
        if model_spec is None or not model_spec.provider.startswith(wants):
            fail(f"the {agent} agent needs --model {wants}/NAME")
        if missing := model_spec.missing_key():
            fail(f"{model}: no API key: set {missing} (it stays on the host: the sandbox gets a placeholder)")
        spec.version = AGENT_CLIS[agent][1]
    if agent not in AGENTS:
        fail(f"unknown agent {agent!r}; choose one of {', '.join(sorted(AGENTS))}")
    return spec


def agents_images_or_fail(agent: str, images: dict[str, str], backend: str) -> None:
    """An installed agent's image over each task's image exists (else: how to build it)."""
    from sandbox import SandboxError
    from sandbox.images import AGENT_CLIS, agents_image

    if agent not in AGENT_CLIS:
        return
    if backend != "docker":
        fail(f"the {agent} agent runs its CLI from an image: use --sandbox docker")

    try:
        for tag in sorted(set(images.values())):
            agents_image(docker_client(), tag)
    except SandboxError as e:
        fail(str(e), 1)


def new_run(task_names: list[str], spec: "AgentSpec", *, trials: int, concurrency: int | None, backend: str,
            repeats: int | None, out: Path | None, executor: str = "local", ray_address: str | None = None,
            freeze: bool = True) -> "Run":
    """A new run folder for the tasks, their limits overridden as the spec says."""
    from results.records import RunConfig, RunError

    from .run import create_run, new_run_id, with_limits

    if not task_names:
        fail("name at least one task (e.g. tasks/py-primes), or --resume a run")
    if backend not in ("docker", "local"):
        fail(f"unknown sandbox backend {backend!r}; choose docker or local")
    agents_images_or_fail(spec.name, {}, backend)  # an installed agent on --sandbox local: refused here
    try:
        tasks = [with_limits(t, spec.limits.given()) for t in load_tasks(task_names)]
    except ValueError as e:  # an override the task's [agent] schema refuses
        fail(str(e))
    if spec.model_spec is not None and spec.model_spec.price() is None:
        costly = [t.name for t in tasks if t.agent.max_cost_usd is not None]
        if costly:
            fail(f"{', '.join(costly)}: max_cost_usd is set but models.toml has no price for {spec.model}; "
                 "add one (dollars per million tokens)")
    run_id = new_run_id()
    # a cluster run without --concurrency: as many trials at once as the cluster's resources fit (0)
    concurrency = concurrency or (0 if executor == "ray" else 1)
    config = RunConfig(run_id=run_id, tasks=[str(t.path) for t in tasks], agent=spec, trials=trials,
                       concurrency=concurrency, backend=backend, repeats=repeats, executor=executor,
                       ray_address=ray_address, freeze=freeze,
                       provider_tools={t.name: t.agent.provider_tools for t in tasks if t.agent.provider_tools})
    try:
        return create_run(config, out or Path("runs") / run_id, tasks)
    except RunError as e:
        fail(str(e))


def resumed_run(run_dir: Path, executor: str | None = None, ray_address: str | None = None) -> "Run":
    """The run in `run_dir`, on the executor (and Ray address) given now, else its run.json's."""
    from results.records import RunError

    from .run import open_run
    from .task import TaskError

    try:
        the_run = open_run(run_dir)
    except (RunError, TaskError) as e:
        fail(str(e))
    cfg = the_run.config
    if executor is not None and executor != cfg.executor:
        cfg.executor, cfg.concurrency = executor, (0 if executor == "ray" else cfg.concurrency or 1)
    cfg.ray_address = ray_address or cfg.ray_address
    return the_run


@contextmanager
def live_progress(run_id: str, pending):
    """(on_start, on_done) for execute: a rich Live table on a terminal; otherwise plain lines
    (one per started and finished trial, no redraws or escape codes)."""
    from results.summary import fmt_value

    done = {"n": 0}

    def line(spec, r):
        done["n"] += 1
        return (f"[{done['n']}/{len(pending)}] {spec.trial_id}: {r.verdict} {fmt_value(r)}"
                f"{'  ' + r.error if r.error else ''}")

    if not (sys.stdout.isatty() and err.is_terminal):
        yield (lambda s: err.print(f"[dim]start {s.trial_id}[/]"),
               lambda s, r: err.print(line(s, r), highlight=False))
        return
    from rich.live import Live

    from results.progress import RunProgress

    counts = {}
    for s in pending:
        counts[s.task.name] = counts.get(s.task.name, 0) + 1
    progress = RunProgress(f"run {run_id}", counts)

    def on_done(spec, r):
        progress.done(spec.trial_id, r)
        live.console.print(line(spec, r), highlight=False)

    with Live(progress, console=err, refresh_per_second=4) as live:
        yield (lambda s: progress.start(s.task.name, s.trial_id, s.out_dir), on_done)


def print_summary(results, title: str) -> None:
    from results.summary import summary_table

    console.print(summary_table(results, title))


def load_registry() -> dict:
    from results.registry import load_models

    try:
        return load_models()
    except ValueError as e:
        fail(str(e))
