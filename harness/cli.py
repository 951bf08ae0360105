"""The `rdbench` command line."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from agents.llm import ModelSpec
from results.store import Store, StoreError, default_db
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
results_app = typer.Typer(help="Per task x model figures from the results index; `results import` rebuilds it.",
                          invoke_without_command=True)
app.add_typer(results_app, name="results")
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

TASKS_ROOT = Path(os.environ.get("RDBENCH_TASKS", "tasks"))
SANDBOX_HELP = "docker (isolated) or local (no isolation: for machines without Docker)"
DB_HELP = "the results index (default: $RDBENCH_DB, else results.db beside the run folders: runs/results.db)"


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


@contextmanager
def live_progress(run_id: str, pending):
    """(on_start, on_done) for execute: a rich Live table on a terminal; otherwise plain lines
    (one per started and finished trial, no redraws or escape codes)."""
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
        yield (lambda s: progress.start(s.task.name, s.trial_id), on_done)


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
    db: Optional[Path] = typer.Option(None, help=DB_HELP),
):
    """Run an agent on tasks and print the verdicts; every finished trial is indexed in the results index."""
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
        if agent == "react":
            missing = ModelSpec.parse(model, base_url).missing_key()
            if missing:
                fail(f"{model}: no API key: set {missing} (keys stay on the host; none enters the sandbox)")
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
                fail(f"{', '.join(costly)}: max_cost_usd is set but models.toml has no price for {model}; "
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
    store = Store(db or default_db(the_run.run_dir.parent))
    old = signal.signal(signal.SIGTERM, _sigterm)
    # Ctrl-C cleans up even where the shell started us with SIGINT ignored (a background job)
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with live_progress(cfg.run_id, pending) as (on_start, on_done):
            execute(the_run, images=images, on_start=on_start, on_done=on_done, store=store,
                    on_warning=lambda m: err.print(f"[yellow]warning:[/] {m}", highlight=False))
    except KeyboardInterrupt:
        if cfg.backend == "docker":
            from sandbox.docker import remove_containers

            removed = remove_containers(docker_client(), run_id=cfg.run_id)
            err.print(f"interrupted: removed {len(removed)} container(s)")
        err.print(f"resume with: rdbench run --resume {the_run.run_dir}")
        raise typer.Exit(130)
    finally:
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, old_int)
    results = the_run.all_results()
    print_summary(results, f"run {cfg.run_id}")
    err.print(f"indexed in {store.path}: compare with rdbench results --db {store.path}", highlight=False)
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
    seed: Optional[int] = typer.Option(None, min=0, help="the secret seed (default: a fresh random one); "
                                       "a trial's is in its details.secret_seed, to reproduce its verdict"),
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
                             repeats=repeats, seed=seed)
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


def open_store(db: Path | None) -> Store:
    store = Store(db or default_db())
    if not store.path.exists():
        fail(f"{store.path}: no results index yet; run a task, or build one with rdbench results import runs/")
    return store


def load_registry() -> dict:
    from agents.llm import load_models

    try:
        return load_models()
    except ValueError as e:
        fail(str(e))


@results_app.callback()
def results(
    ctx: typer.Context,
    by: str = typer.Option("task", help="order rows by task (then model) or by model (then task)"),
    format: str = typer.Option("table", "--format", help="table | csv | json"),
    task: Optional[str] = typer.Option(None, help="only this task"),
    p: float = typer.Option(1.0, help="fast_p threshold: share of trials correct and faster than p x the baseline"),
    db: Optional[Path] = typer.Option(None, help=DB_HELP),
):
    """Per task x model: trials, success, geomean and mean speedup (bootstrap 95 % CIs), fast_p, score, cost."""
    if ctx.invoked_subcommand is not None:
        return
    from results.aggregate import aggregate, order, to_csv, to_json
    from results.summary import groups_table

    if by not in ("task", "model") or format not in ("table", "csv", "json"):
        fail("--by is task or model; --format is table, csv or json")
    store = open_store(db)
    try:
        groups = order(aggregate(store.rows(task=task), load_registry(), p=p), by)
    except StoreError as e:
        fail(str(e), 1)
    if format == "json":
        sys.stdout.write(to_json(groups) + "\n")
    elif format == "csv":
        sys.stdout.write(to_csv(groups))
    else:
        table = groups_table(groups, f"{store.path} ({len(groups)} task x model rows)", by)
        # off a terminal, as wide as the table needs: a file or a pipe gets whole rows
        out = console if console.is_terminal else Console(width=max(160, Console(width=1000).measure(table).maximum))
        out.print(table)


@results_app.command("import")
def results_import(
    runs_dir: Path = typer.Argument(..., help="a folder of run folders (runs/), or one run folder"),
    db: Optional[Path] = typer.Option(None, help="the index (default: $RDBENCH_DB, else results.db in RUNS_DIR)"),
):
    """(Re)build the index from run folders: every trial.json is indexed; indexing twice changes nothing."""
    if not runs_dir.is_dir():
        fail(f"{runs_dir}: not a folder")
    single = (runs_dir / "run.json").exists()
    store = Store(db or default_db(runs_dir.parent if single else runs_dir))
    try:
        report = store.import_runs(runs_dir)
    except StoreError as e:
        fail(str(e), 1)
    for s in report.skipped:
        err.print(f"[yellow]skipped:[/] {s}", highlight=False)
    console.print(f"indexed {report.trials} trial(s) of {report.runs} run(s) in {store.path}", highlight=False)


@app.command()
def trends(
    out: Path = typer.Option(..., help="the plot: FILE.png or FILE.svg"),
    task: Optional[str] = typer.Option(None, help="one task (default: every indexed task, one panel each)"),
    stat: str = typer.Option("geomean", help="speedup tasks: geomean or mean"),
    db: Optional[Path] = typer.Option(None, help=DB_HELP),
):
    """Plot speedup (log axis) or normalised score by model release date, beside the published figures."""
    from results.aggregate import aggregate
    from results.trends import plot_trends

    if out.suffix.lower() not in (".png", ".svg") or stat not in ("geomean", "mean"):
        fail("--out is a .png or .svg file; --stat is geomean or mean")
    store = Store(db or default_db())
    try:
        rows = store.rows(task=task) if store.path.exists() else []
    except StoreError as e:
        fail(str(e), 1)
    registry = load_registry()
    notes = plot_trends(aggregate(rows, registry), registry, out, tasks=[task] if task else None, stat=stat)
    for n in notes:
        err.print(f"[dim]{n}[/]", highlight=False)
    console.print(f"wrote {out}", highlight=False)


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="a run folder (runs/<run-id>)"),
    out: Path = typer.Option(..., help="the HTML file to write"),
    db: Optional[Path] = typer.Option(None, help=DB_HELP + "; its other runs of the same tasks feed the trend plot"),
):
    """Write one self-contained HTML report of a run: summaries, trend plot, per trial verdict, diff, transcript."""
    from results.report import write_report

    try:
        write_report(run_dir, out, Store(db or default_db(run_dir.parent)), load_registry())
    except (StoreError, ValueError) as e:
        fail(str(e), 1)
    console.print(f"wrote {out}", highlight=False)


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
