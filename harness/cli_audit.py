"""The `rdbench tasks validate` and `rdbench tasks audit` commands (registered on `tasks` by
cli.py): a task author's checks of a task folder. Cheap to import, like cli.py."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .cli_support import console, err, fail

SANDBOX_HELP = ("docker (isolated) or local (no isolation: for machines without Docker); fake: tests and "
                "development only")


def _progress(i: int, n: int, row) -> None:
    from rich.markup import escape

    mark = "[green]held[/]" if row.held else "[red]NOT HELD[/]"
    err.print(f"[{i}/{n}] {row.escape}: {row.verdict}, {mark} ({row.seconds:.0f} s): {escape(row.reason[:160])}",
              highlight=False)


def _print_rows(rows, title: str) -> None:
    from .audit import table

    console.print(table(rows, title))


def tasks_validate(
    path: Path,
    sandbox: str = typer.Option("docker", help=SANDBOX_HELP),
    schema_only: bool = typer.Option(False, help="check task.toml and the folder layout only"),
    audit: bool = typer.Option(False, "--audit", help="then run the escape catalogue against the task's verifier "
                               "(rdbench tasks audit); an escape that is not held is a problem"),
):
    """Check a task: the schema, then that the oracle reaches its reference and nop stays at the base."""
    import tempfile
    import time

    from .cli_support import containers, images_or_fail, print_summary
    from .task import TaskError, load_task
    from .validate import audit as audit_task
    from .validate import schema_report, validate_task

    try:
        spec = load_task(path)
    except TaskError as e:
        fail(str(e), 1)
    console.print(schema_report(spec), highlight=False)
    if schema_only:
        return
    images = images_or_fail([spec], sandbox)
    with containers(sandbox), tempfile.TemporaryDirectory(prefix="rdbench-validate-") as tmp:
        problems, results = validate_task(spec, images, Path(tmp), sandbox)
        if audit:
            t0 = time.monotonic()
            found, rows = audit_task(spec, sandbox, on_row=_progress)
            problems += found
    print_summary(results, f"validate {spec.name}")
    if audit:
        _print_rows(rows, f"audit {spec.name}: {sum(r.held for r in rows)}/{len(rows)} held "
                          f"({time.monotonic() - t0:.0f} s)")
    for p in problems:
        err.print(f"[red]problem:[/] {p}", highlight=False)
    if problems:
        raise typer.Exit(1)
    console.print(f"[green]valid[/]: {spec.name}")


def tasks_audit(
    task: str = typer.Argument(..., help="task folder or name"),
    sandbox: str = typer.Option("docker", help=SANDBOX_HELP),
    only: Optional[list[str]] = typer.Option(None, help="run only this escape (repeatable; --list names them)"),
    list_: bool = typer.Option(False, "--list", help="list the escapes that apply to the task, run nothing"),
    format: str = typer.Option("table", "--format", help="table | json (the rows, on stdout)"),
):
    """Run task-agnostic escapes, built from the task's own starting point or oracle, against its
    verifier. Exit 0 when every escape held (did not score), 1 otherwise."""
    import dataclasses
    import json
    import time

    from rich.markup import escape
    from rich.table import Table

    from .audit import catalogue, grader, run_audit
    from .audit_build import task_shape
    from .cli_support import containers, images_or_fail, load_tasks

    if format not in ("table", "json"):
        fail("--format is table or json")
    spec = load_tasks([task])[0]
    shape = task_shape(spec)
    try:
        escapes = catalogue(shape, only)
    except ValueError as e:
        fail(str(e))
    if list_:
        t = Table(title=f"escapes for {spec.name} (a {shape.kind} task)")
        for col in ("escape", "what", "repeats", "held when"):
            t.add_column(col)
        for e in escapes:
            t.add_row(e.name, escape(e.what), str(e.repeats), e.held_when)
        console.print(t)
        return
    images_or_fail([spec], sandbox)  # built (or refused) once, before the first escape
    err.print(f"audit {spec.name}: {len(escapes)} escape(s), one verification each", highlight=False)
    t0 = time.monotonic()
    with containers(sandbox):
        rows = run_audit(spec, grader(spec, sandbox), [e.name for e in escapes], on_row=_progress)
    held = sum(r.held for r in rows)
    title = f"audit {spec.name}: {held}/{len(rows)} held ({time.monotonic() - t0:.0f} s)"
    if format == "json":
        err.print(title, highlight=False)
        print(json.dumps([dataclasses.asdict(r) for r in rows]))
    else:
        _print_rows(rows, title)
    raise typer.Exit(0 if held == len(rows) else 1)
