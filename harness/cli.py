"""The `rdbench` command line."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from agents.llm import ModelSpec
from results.summary import fmt_value, summary_table
from sandbox import SandboxError

from .run import RunConfig, RunError, create_run, execute, new_run_id, open_run, with_limits
from .task import TaskError, TaskSpec, find_tasks, load_task, resolve_task

app = typer.Typer(help="rdbench: evaluate AI agents on AI R&D engineering tasks.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
tasks_app = typer.Typer(help="List, validate and scaffold task folders.", no_args_is_help=True)
images_app = typer.Typer(help="Build sandbox images (offline).", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")
app.add_typer(images_app, name="images")
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

TASKS_ROOT = Path(os.environ.get("RDBENCH_TASKS", "tasks"))
SANDBOX_HELP = "docker (isolated) or local (no isolation: for machines without Docker)"


def fail(msg: str, code: int = 2):
    err.print(f"[bold red]error:[/] {msg}", highlight=False)
    raise typer.Exit(code)


def load_tasks(names: list[str]) -> list[TaskSpec]:
    try:
        return [resolve_task(n, TASKS_ROOT) for n in names]
    except TaskError as e:
        fail(str(e))


def docker_client():
    from sandbox.docker import client_from_env

    return client_from_env()


def ensure_images(tasks: list[TaskSpec], backend: str) -> dict[str, str]:
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


def print_summary(results, title: str) -> None:
    console.print(summary_table(results, title))


def _sigterm(signum, frame):
    raise KeyboardInterrupt


@app.command()
def run(
    tasks: list[str] = typer.Argument(None, help="task folders or names under ./tasks"),
    agent: Optional[str] = typer.Option(None, help="oracle | nop (default: oracle, or the LLM agent when --model is given)"),
    model: Optional[str] = typer.Option(None, help="anthropic/<model>, openai/<model>, openai-compatible/<model>"),
    base_url: Optional[str] = typer.Option(None, help="the model server, e.g. http://127.0.0.1:8000/v1 (openai-compatible)"),
    replay: Optional[Path] = typer.Option(None, help="a trial's transcript.jsonl: re-run its tool calls (agent replay)"),
    max_turns: Optional[int] = typer.Option(None, min=1, help="override the tasks' agent turn limit"),
    max_cost_usd: Optional[float] = typer.Option(None, min=0.0, help="override the tasks' agent cost limit"),
    agent_timeout: Optional[float] = typer.Option(None, min=1.0, help="override the tasks' agent wall time, seconds"),
    trials: int = typer.Option(1, min=1, help="trials per task"),
    concurrency: int = typer.Option(1, min=1, help="trials at once (timing phases never share cores)"),
    out: Optional[Path] = typer.Option(None, help="run folder (default: runs/<run-id>)"),
    resume: Optional[Path] = typer.Option(None, help="a run folder: re-run only its unfinished trials"),
    sandbox: str = typer.Option("docker", help=SANDBOX_HELP),
    repeats: Optional[int] = typer.Option(None, min=1, help="timed runs per program (default: the task's; fewer is noisier)"),
):
    """Run an agent on tasks and print the verdicts."""
    if resume is not None:
        if tasks or agent or model or repeats or base_url or replay or max_turns or max_cost_usd or agent_timeout:
            fail("--resume takes the tasks, agent, model and repeats from the run's run.json; give none of them")
        try:
            the_run = open_run(resume)
        except (RunError, TaskError) as e:
            fail(str(e))
    else:
        if not tasks:
            fail("name at least one task (e.g. tasks/py-primes), or --resume a run")
        if model is not None:
            try:
                ModelSpec.parse(model, base_url)
            except ValueError as e:
                fail(str(e))
        agent = agent or ("react" if model else "replay" if replay else "oracle")
        if agent == "react" and model is None:
            fail("the react agent needs --model PROVIDER/NAME")
        if agent == "replay" and (replay is None or not replay.is_file()):
            fail(f"the replay agent needs --replay PATH/transcript.jsonl (got {replay})")
        from agents import AGENTS

        if agent not in AGENTS:
            fail(f"unknown agent {agent!r}; choose one of {', '.join(sorted(AGENTS))}")
        if sandbox not in ("docker", "local"):
            fail(f"unknown sandbox backend {sandbox!r}; choose docker or local")
        limits = {k: v for k, v in {"max_turns": max_turns, "max_cost_usd": max_cost_usd,
                                     "timeout_s": agent_timeout}.items() if v is not None}
        specs = [with_limits(t, limits) for t in load_tasks(tasks)]
        if model is not None and ModelSpec.parse(model, base_url).price() is None:
            costly = [t.name for t in specs if t.agent.max_cost_usd is not None]
            if costly:
                fail(f"{', '.join(costly)}: max_cost_usd is set but agents/prices.toml has no price for {model}; "
                     "add one (dollars per million tokens)")
        run_id = new_run_id()
        config = RunConfig(run_id=run_id, tasks=[str(t.path) for t in specs], agent=agent, model=model,
                           trials=trials, concurrency=concurrency, backend=sandbox, repeats=repeats,
                           base_url=base_url, replay=str(replay.resolve()) if replay else None, limits=limits)
        try:
            the_run = create_run(config, out or Path("runs") / run_id, specs)
        except RunError as e:
            fail(str(e))
    cfg = the_run.config
    try:
        images = ensure_images(the_run.tasks, cfg.backend)
    except SandboxError as e:
        fail(str(e), 1)
    if cfg.backend == "docker":  # what a crashed (killed) run left behind on this machine
        from sandbox.docker import remove_containers

        leftovers = remove_containers(docker_client())
        if leftovers:
            err.print(f"removed {len(leftovers)} container(s) left by dead runs")
    pending = the_run.pending()
    err.print(f"run [bold]{cfg.run_id}[/] -> {the_run.run_dir}: {len(pending)} trial(s) to run, agent {cfg.agent}"
              f"{', model ' + cfg.model if cfg.model else ''}, concurrency {cfg.concurrency}")
    done = {"n": 0}

    def on_done(spec, r):
        done["n"] += 1
        err.print(f"[{done['n']}/{len(pending)}] {spec.trial_id}: {r.verdict} {fmt_value(r)}"
                  f"{'  ' + r.error if r.error else ''}", highlight=False)

    old = signal.signal(signal.SIGTERM, _sigterm)
    try:
        execute(the_run, images=images, on_start=lambda s: err.print(f"[dim]start {s.trial_id}[/]"), on_done=on_done)
    except KeyboardInterrupt:
        if cfg.backend == "docker":
            from sandbox.docker import remove_containers

            removed = remove_containers(docker_client(), run_id=cfg.run_id)
            err.print(f"interrupted: removed {len(removed)} container(s)")
        err.print(f"resume with: rdbench run --resume {the_run.run_dir}")
        raise typer.Exit(130)
    finally:
        signal.signal(signal.SIGTERM, old)
    results = the_run.all_results()
    print_summary(results, f"run {cfg.run_id}")
    if any(r.error_class == "infra" for r in results):
        err.print(f"[red]infrastructure errors: these trials are not scores; re-run them with "
                  f"rdbench run --resume {the_run.run_dir}[/]")
        raise typer.Exit(1)


@app.command()
def verify(
    task: str = typer.Argument(..., help="task folder or name"),
    submission: Path = typer.Option(..., help="folder to grade, like the task's workspace/"),
    sandbox: str = typer.Option("docker", help=SANDBOX_HELP),
    repeats: Optional[int] = typer.Option(None, min=1, help="timed runs per program (default: the task's)"),
):
    """Grade any folder with a task's verifier, in a fresh sandbox. Exit 0: correct; 3: incorrect."""
    from sandbox import get_backend

    from .cores import CorePool
    from .verify import VerifierError, verify_folder

    spec = load_tasks([task])[0]
    if not submission.is_dir():
        fail(f"{submission}: not a folder")
    try:
        image = ensure_images([spec], sandbox)[spec.name]
        with CorePool().exclusive(spec.resources.cpus) as cpuset:
            v = verify_folder(spec, submission, backend=get_backend(sandbox), image=image, cpuset=cpuset,
                             repeats=repeats)
    except (SandboxError, VerifierError) as e:
        fail(str(e), 1)
    console.print_json(v.model_dump_json())
    raise typer.Exit(0 if v.correct else 3)


@tasks_app.command("list")
def tasks_list(root: Path = typer.Option(TASKS_ROOT, help="folder of task folders")):
    """List the tasks under a folder (a malformed one is listed with its error)."""
    table = Table()
    for col in ("name", "kind", "cpus", "gpus", "reference", "description"):
        table.add_column(col)
    bad = 0
    for path in find_tasks(root):
        try:
            t = load_task(path)
        except TaskError as e:
            bad += 1
            table.add_row(path.name, "[red]invalid[/]", "", "", "", str(e).splitlines()[0])
            continue
        table.add_row(t.name, t.kind, str(t.resources.cpus), str(t.resources.gpus), str(t.scoring.reference),
                      t.description)
    console.print(table)
    raise typer.Exit(1 if bad else 0)


@tasks_app.command("validate")
def tasks_validate(
    path: Path,
    sandbox: str = typer.Option("docker", help=SANDBOX_HELP),
    schema_only: bool = typer.Option(False, help="check task.toml and the folder layout only"),
):
    """Check a task: the schema, then that the oracle reaches its reference and nop stays at the base."""
    from .validate import validate_task

    try:
        spec = load_task(path)
    except TaskError as e:
        fail(str(e), 1)
    console.print(f"[green]schema ok[/]: {spec.name} ({spec.kind})")
    if schema_only:
        return
    try:
        images = ensure_images([spec], sandbox)
    except SandboxError as e:
        fail(str(e), 1)
    with tempfile.TemporaryDirectory(prefix="rdbench-validate-") as tmp:
        problems, results = validate_task(spec, images, Path(tmp), sandbox)
    print_summary(results, f"validate {spec.name}")
    for p in problems:
        err.print(f"[red]problem:[/] {p}", highlight=False)
    if problems:
        raise typer.Exit(1)
    console.print(f"[green]valid[/]: {spec.name}")


@tasks_app.command("new")
def tasks_new(name: str, root: Path = typer.Option(TASKS_ROOT, help="where to create the task folder")):
    """Scaffold a task folder that validates as generated."""
    from .scaffold import scaffold

    try:
        path = scaffold(name, root)
    except (ValueError, FileExistsError) as e:
        fail(str(e))
    console.print(f"created {path}; check it with: rdbench tasks validate {path}")


@images_app.command("build")
def images_build(
    tasks: list[str] = typer.Argument(None, help="tasks whose images to build (default: the base image)"),
    force: bool = typer.Option(False, help="rebuild the base image even if it exists"),
):
    """Build the base image offline (debootstrap + host-downloaded wheels) and task images."""
    from sandbox.images import build_base_image

    try:
        if force:
            build_base_image(docker_client(), log=lambda m: err.print(f"[dim]{m}[/]"), force=True)
        images = ensure_images(load_tasks(tasks or []), "docker")
        from sandbox.images import base_image_tag

        console.print(base_image_tag())
        for name, tag in images.items():
            console.print(f"{name}: {tag}")
    except SandboxError as e:
        fail(str(e), 1)


@app.command()
def clean(all_: bool = typer.Option(False, "--all", help="also containers of runs that still seem alive")):
    """Remove containers left by dead runs (label rdbench=1)."""
    from sandbox.docker import remove_containers

    try:
        removed = remove_containers(docker_client(), dead_only=not all_)
    except SandboxError as e:
        fail(str(e), 1)
    console.print(f"removed {len(removed)} container(s)" + (f": {' '.join(removed)}" if removed else ""))


def main():  # pragma: no cover
    sys.exit(app())
