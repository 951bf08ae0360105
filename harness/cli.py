"""The `rdbench` command line. Each command imports what it uses when it runs, so that
`rdbench --help` stays quick; what the commands share is in cli_support.py."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from results.providers import model_help, self_hosted

from .cli_audit import SANDBOX_HELP, tasks_audit, tasks_validate
from .cli_images import images_app
from .cli_support import TASKS_ROOT, console, err, fail

app = typer.Typer(help="rdbench: evaluate AI agents on AI R&D engineering tasks.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
tasks_app = typer.Typer(help="List, validate and scaffold task folders.", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")
app.add_typer(images_app, name="images")
import_app = typer.Typer(help="Import task folders from other suites.", no_args_is_help=True)
tasks_app.add_typer(import_app, name="import")
tasks_app.command("validate")(tasks_validate)
tasks_app.command("audit")(tasks_audit)
results_app = typer.Typer(help="Per task x model figures from the results index; `results import` rebuilds it.",
                          invoke_without_command=True)
app.add_typer(results_app, name="results")

DB_HELP = "the results index (default: $RDBENCH_DB, else results.db beside the run folders: runs/results.db)"
REPEATS_HELP = "timed runs per program (default: the task's [verifier] repeats; fewer is quicker and noisier)"
EXECUTOR_HELP = "local (this machine; the default) or ray (a Ray cluster: pip install -e '.\\[ray]')"  # escaped for rich
RAY_ADDRESS_HELP = "the Ray cluster, HOST:PORT of its head (default: $RAY_ADDRESS; --resume: the run's)"


@app.command()
def run(
    tasks: list[str] = typer.Argument(None, help="task folders or names under ./tasks"),
    agent: Optional[str] = typer.Option(None, help="oracle | nop | replay | react | claude-code | codex (default: "
                                        "oracle; react when "
                                        "--model is given; replay when --replay is)"),
    model: Optional[str] = typer.Option(None, help=model_help()),
    base_url: Optional[str] = typer.Option(None, help="the model server, e.g. http://127.0.0.1:8000/v1 "
                                           f"({', '.join(self_hosted())})"),
    replay: Optional[Path] = typer.Option(None, help="a trial's transcript.jsonl: re-run its tool calls (agent replay)"),
    max_turns: Optional[int] = typer.Option(None, min=1, help="override the tasks' agent turn limit"),
    max_cost_usd: Optional[float] = typer.Option(None, min=0.0, help="override the tasks' agent cost limit"),
    agent_timeout: Optional[float] = typer.Option(None, min=1.0, help="override the tasks' agent wall time, seconds"),
    model_arg: Optional[list[str]] = typer.Option(None, help="KEY=VALUE, repeatable: a model setting over models.toml's "
                                                  "(thinking_budget=16000, reasoning_effort=high, temperature=0.2)"),
    context_window: Optional[int] = typer.Option(None, min=1000, help="the model's context window, tokens "
                                                 "(default: models.toml's, else 32000)"),
    trials: int = typer.Option(1, min=1, help="trials per task"),
    concurrency: Optional[int] = typer.Option(None, min=1, help="trials at once (default 1; with --executor ray, as "
                                              "many as the cluster's CPUs fit); timing phases never share cores"),
    out: Optional[Path] = typer.Option(None, file_okay=False, help="run folder (default: runs/<run-id>)"),
    resume: Optional[Path] = typer.Option(None, help="a run folder: re-run only its unfinished trials"),
    sandbox: str = typer.Option("docker", help=SANDBOX_HELP),
    repeats: Optional[int] = typer.Option(None, min=1, help=REPEATS_HELP),
    db: Optional[Path] = typer.Option(None, help=DB_HELP),
    executor: Optional[str] = typer.Option(None, help=EXECUTOR_HELP),
    ray_address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help=RAY_ADDRESS_HELP),
    freeze: bool = typer.Option(True, "--freeze/--no-freeze", help="freeze agent sandboxes on a verifier's cores "
                                "while it times (recorded in run.json)"),
):
    """Run an agent on tasks and print the verdicts; every finished trial is indexed in the results index."""
    from rich.markup import escape

    from . import api
    from .cli_support import api_errors, containers, dim, live_progress, parse_model_args, print_summary, warn
    from .executors import ExecutorError

    with api_errors():  # --resume takes the rest from the run's run.json (and refuses it given)
        plan = api.plan(tasks, agent=agent, model=model, base_url=base_url, replay=replay,
                        limits={"max_turns": max_turns, "max_cost_usd": max_cost_usd, "timeout_s": agent_timeout},
                        model_args=parse_model_args(model_arg or []), context_window=context_window, trials=trials,
                        concurrency=concurrency, sandbox=sandbox, repeats=repeats, out=out, executor=executor,
                        ray_address=ray_address, freeze=freeze, resume=resume, db=db, log=dim, warn=warn)
    cfg, pending, run_dir = plan.run.config, plan.pending, plan.run.run_dir
    with containers(cfg.backend if plan.local else None, resume_hint=f"resume with: rdbench run --resume {run_dir}"):
        err.print(f"run [bold]{cfg.run_id}[/] -> {run_dir}: {len(pending)} trial(s) to run, agent "
                  f"{cfg.agent.name}{', model ' + cfg.agent.model if cfg.agent.model else ''}, "
                  + (f"concurrency {cfg.concurrency}" if plan.local else f"on the Ray cluster {cfg.ray_address or ''}"))
        with live_progress(cfg.run_id, pending) as (on_start, on_done):
            try:
                results = plan.execute(on_start, on_done)
            except ExecutorError as e:
                fail(escape(str(e)), 1)
    print_summary(results, f"run {cfg.run_id}")
    err.print(f"indexed in {plan.store.path}: compare with rdbench results --db {plan.store.path}", highlight=False)
    if any(r.error_class == "infra" for r in results):
        err.print(f"[red]infrastructure errors: these trials are not scores; re-run them with "
                  f"rdbench run --resume {run_dir}[/]")
        raise typer.Exit(1)


@app.command()
def verify(
    task: str = typer.Argument(..., help="task folder or name"),
    submission: Path = typer.Option(..., help="folder to grade, like the task's workspace/"),
    sandbox: str = typer.Option("docker", help=SANDBOX_HELP),
    repeats: Optional[int] = typer.Option(None, min=1, help=REPEATS_HELP),
    seed: Optional[int] = typer.Option(None, min=0, help="the secret seed (default: a fresh random one); "
                                       "a trial's is in its details.secret_seed, to reproduce its verdict"),
):
    """Grade any folder with a task's verifier, in a fresh sandbox. Exit 0: correct; 3: incorrect."""
    from sandbox import SandboxError

    from . import api
    from .cli_support import api_errors, containers, dim
    from .verify import VerifierError

    try:
        with api_errors(), containers(sandbox):
            v = api.verify(task, submission, sandbox=sandbox, repeats=repeats, seed=seed, log=dim,
                           on_stderr=sys.stderr.write)  # the verifier's progress lines, live
    except (SandboxError, VerifierError) as e:
        fail(str(e), 1)
    console.print_json(v.model_dump_json())
    raise typer.Exit(0 if v.correct else 3)


@tasks_app.command("list")
def tasks_list(root: Path = typer.Option(TASKS_ROOT, help="folder of task folders")):
    """List the tasks under a folder (a malformed one is listed with its error)."""
    from rich.table import Table

    from .task import TaskError, find_tasks, load_task

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


@tasks_app.command("new")
def tasks_new(name: str, root: Path = typer.Option(TASKS_ROOT, help="where to create the task folder")):
    """Scaffold a task folder that validates as generated."""
    from .scaffold import scaffold

    try:
        path = scaffold(name, root)
    except (ValueError, FileExistsError) as e:
        fail(str(e))
    console.print(f"created {path}; check it with: rdbench tasks validate {path}")


@import_app.command("kernelbench")
def tasks_import_kernelbench(
    paths: list[Path] = typer.Argument(..., help="a KernelBench checkout's KernelBench/levelN folders, or problem files"),
    out: Path = typer.Option(..., help="where to write the task folders (one per problem)"),
    sandbox: str = typer.Option("docker", help="where the problems are probed at reduced sizes: " + SANDBOX_HELP),
    probe: bool = typer.Option(True, help="run each problem at its reduced sizes before importing it (needs --sandbox)"),
):
    """KernelBench problems as tasks: ModelNew in Triton against the problem's Model (README: KernelBench)."""
    from .kernelbench import cli_import

    cli_import(paths, out, sandbox, probe)


@results_app.callback()
def results(
    ctx: typer.Context,
    by: str = typer.Option("task", help="order rows by task (then model) or by model (then task)"),
    format: str = typer.Option("table", "--format", help="table | csv | json"),
    task: Optional[str] = typer.Option(None, help="only this task"),
    p: Optional[list[float]] = typer.Option(None, help="fast_p threshold, repeatable (--p 0 --p 1 --p 1.5): share "
                                            "correct and faster than p x the baseline (default 1; per task: the first)"),
    suite: Optional[Path] = typer.Option(None, help="a folder of task folders (`tasks import kernelbench --out`): "
                                         "fast_p at each --p over all its problems, per model (README: KernelBench)"),
    db: Optional[Path] = typer.Option(None, help=DB_HELP),
):
    """Per task x model: trials, success, geomean and mean speedup (bootstrap 95 % CIs), fast_p, score, cost."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console

    from results.aggregate import to_csv, to_json
    from results.summary import groups_table

    from . import api
    from .cli_support import api_errors

    if by not in ("task", "model") or format not in ("table", "csv", "json"):
        fail("--by is task or model; --format is table, csv or json")
    with api_errors():
        if suite is not None:
            from .kernelbench import suite_results

            return suite_results(api.open_store(db), suite, p or [1.0], format)
        groups = api.results(db, task=task, p=p[0] if p else 1.0, by=by)
        store_path = api.open_store(db).path
    if format == "json":
        sys.stdout.write(to_json(groups) + "\n")
    elif format == "csv":
        sys.stdout.write(to_csv(groups))
    else:
        table = groups_table(groups, f"{store_path} ({len(groups)} task x model rows)", by)
        # off a terminal, as wide as the table needs: a file or a pipe gets whole rows
        out = console if console.is_terminal else Console(width=max(160, Console(width=1000).measure(table).maximum))
        out.print(table)


@results_app.command("import")
def results_import(
    runs_dir: Path = typer.Argument(..., help="a folder of run folders (runs/), or one run folder"),
    db: Optional[Path] = typer.Option(None, help="the index (default: $RDBENCH_DB, else results.db in RUNS_DIR)"),
):
    """(Re)build the index from run folders (the task folders are not needed): every trial.json is
    indexed; indexing twice changes nothing."""
    from results.store import StoreError

    from .api import index

    if not runs_dir.is_dir():
        fail(f"{runs_dir}: not a folder")
    single = (runs_dir / "run.json").exists()
    store = index(db, runs_dir.parent if single else runs_dir)
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
    from results.store import Store, StoreError, default_db
    from results.trends import plot_trends

    from .cli_support import load_registry

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
    from results.store import StoreError

    from .api import index
    from .cli_support import load_registry

    try:
        write_report(run_dir, out, index(db, run_dir.parent), load_registry())
    except (StoreError, ValueError) as e:
        fail(str(e), 1)
    console.print(f"wrote {out}", highlight=False)


@app.command()
def clean(all_: bool = typer.Option(False, "--all", help="also what runs that still seem alive hold"),
          sandbox: str = typer.Option("docker", help="the backend whose leftovers go: docker (containers labelled "
                                      "rdbench=1) or local (sandbox folders and their processes)"),
          executor: str = typer.Option("local", help="local (this machine) or ray (every node of the Ray cluster)"),
          ray_address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help=RAY_ADDRESS_HELP)):
    """Remove what dead runs left (containers labelled rdbench=1; with --sandbox local, sandbox
    folders and their processes), here or on every node of a Ray cluster."""
    from sandbox import SandboxError, get_backend

    from .cli_support import executor_or_fail

    if executor != "local":
        from rich.markup import escape

        from .executors import ExecutorError

        try:
            nodes = executor_or_fail(executor, ray_address).clean(None, dead_only=not all_)
        except ExecutorError as e:
            fail(escape(str(e)), 1)
        for node, removed in nodes:
            console.print(f"node {node['id'][:12]} ({node['host']}): removed {len(removed)} container(s)"
                          + (f": {' '.join(removed)}" if removed else ""), highlight=False)
        return
    try:
        backend = get_backend(sandbox)
        removed = backend.remove_leftovers(alive=all_)
    except (SandboxError, ValueError) as e:
        fail(str(e), 1)
    console.print(f"removed {len(removed)} {backend.leftover_noun}" + (f": {' '.join(removed)}" if removed else ""),
                  highlight=False)


def main():  # pragma: no cover
    sys.exit(app())
