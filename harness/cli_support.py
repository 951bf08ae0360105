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
from rich.markup import escape

if TYPE_CHECKING:
    from .task import TaskSpec

console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
TASKS_ROOT = Path(os.environ.get("RDBENCH_TASKS", "tasks"))


def fail(msg: str, code: int = 2):
    err.print(f"[bold red]error:[/] {msg}", highlight=False)
    raise typer.Exit(code)


def warn(msg: str) -> None:
    err.print(f"[yellow]warning:[/] {msg}", highlight=False)


@contextmanager
def api_errors():
    """An ApiError of harness.api (a request refused) as one clear line and the exit status it names."""
    from .api import ApiError

    try:
        yield
    except ApiError as e:
        fail(escape(str(e)), e.code)  # '.[ray]' is no markup


def load_tasks(names: list[str]) -> list["TaskSpec"]:
    from .api import load_tasks

    with api_errors():
        return load_tasks(names, TASKS_ROOT)


def docker_client():
    from sandbox.docker import client_from_env

    return client_from_env()


def dim(msg: str) -> None:
    err.print(f"[dim]{escape(msg)}[/]", highlight=False)


def ensure_images(tasks: list["TaskSpec"], backend: str) -> dict[str, str]:
    """The image of each task, built if missing (harness.api.images). Raises SandboxError."""
    from .api import images

    return images(tasks, backend, log=dim)


def images_or_fail(tasks: list["TaskSpec"], backend: str) -> dict[str, str]:
    from sandbox import SandboxError

    try:
        with api_errors():  # the GPU preflight's refusal
            return ensure_images(tasks, backend)
    except SandboxError as e:
        fail(str(e), 1)


def executor_or_fail(name: str, address: str | None):
    """The run's executor (harness.api.get_executor); an unknown one, or Ray not installed, is one clear error."""
    from .api import get_executor

    with api_errors():
        return get_executor(name, address, log=dim)


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
def containers(backend: str | None, resume_hint: str | None = None):
    """Around every command that starts sandboxes on this machine with `backend` (None: they
    run elsewhere, on a cluster): first removes what crashed runs left here, where the backend
    leaves anything. SIGTERM, and Ctrl-C even where the shell started us with SIGINT ignored (a
    background job), interrupt the command; then the sandboxes it started are removed and it
    exits 130."""
    from sandbox import get_backend

    sandboxes = get_backend(backend) if backend else None
    if sandboxes is not None and (leftovers := sandboxes.remove_leftovers()):
        err.print(f"removed {len(leftovers)} {sandboxes.leftover_noun} left by dead runs")
    old_term = signal.signal(signal.SIGTERM, _sigterm)
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    except KeyboardInterrupt:
        if sandboxes is not None and (removed := sandboxes.remove_leftovers(own=True)):
            err.print(f"interrupted: removed {len(removed)} {sandboxes.leftover_noun}")
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
