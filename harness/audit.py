"""`rdbench tasks audit TASK`: a catalogue of task-agnostic escapes run against a task's own
verifier. Each escape is a real submission built from the task's starting point or oracle
(audit_build.py) and graded like `rdbench verify` grades a folder: a fresh verifier sandbox
on cores held exclusively. An escape *held* when it did not score: an incorrect verdict, a
value within the task's tolerance of its base (a speedup ~1x), or no value at all (a kernel
task without a GPU); never an infrastructure error (`infra`), never a crash of rdbench. The
kernel decoy and forger must be judged incorrect outright.
"""

from __future__ import annotations

import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from results.records import VerifierResult

from . import audit_build as build
from .task import TaskSpec

DEEP = 1500
FLOOD_MIB = 512


@dataclass(frozen=True)
class Escape:
    name: str
    what: str
    #: (spec, shape, folder to create) -> the submission folder
    make: Callable[[TaskSpec, build.Shape, Path], Path]
    #: timed runs per program: 3 where the escape could gain speed (answers kept between runs
    #: need runs after the one that keeps them; one timed pair cannot tell 1x from 2x); 1 where
    #: it must end incorrect
    repeats: int = 1
    must_fail: bool = False
    kinds: tuple[str, ...] = ("program", "module")
    #: acts only through the escape's code running in the verifier's runs (the hook): moot, and
    #: not run, where the canary shows that the verifier runs none of the submission's code
    hooked: bool = True

    @property
    def held_when(self) -> str:
        """When `judge` counts this escape as held, in words (`tasks audit --list`)."""
        if self.name == CANARY:
            return "incorrect (or on merit, if the verifier starts no process)"
        return "incorrect" if self.must_fail else "incorrect or no gain"


def _escape(code: str, params: dict | None = None):
    return lambda spec, shape, dest: build.with_escape(spec, shape, dest, code, params)


PLACES = {"home": "~", "workspace": "/workspace", "tmp": "/tmp", "var-tmp": "/var/tmp", "run-lock": "/run/lock",
          "dev-shm": "/dev/shm"}

CANARY = "canary"

CATALOGUE: list[Escape] = [
    Escape(CANARY, "the hook ends every run at once: shows that the escapes' code runs in the verifier's runs",
           _escape("canary.py"), must_fail=True),
    *(Escape(f"cache-{name}", f"answers kept between runs in {folder if folder != '~' else 'the home folder'}",
             _escape("cache_file.py", {"folder": folder}), repeats=3) for name, folder in PLACES.items()),
    Escape("cache-anywhere", "answers kept in every folder the run's user can create a file in",
           _escape("cache_anywhere.py"), repeats=3),
    Escape("cache-sysv-shm", "answers kept in System V shared memory", _escape("cache_sysv.py"), repeats=3),
    Escape("cache-posix-mqueue", "answers kept in a POSIX message queue", _escape("cache_mqueue.py"), repeats=3),
    Escape("cache-page-cache", "answers spelt in which pages of a root-owned file stay in the page cache",
           _escape("cache_pagecache.py"), repeats=3),
    Escape("daemon", "a daemon left running: serves answers on an abstract socket, burns the CPU",
           _escape("daemon.py"), repeats=3),
    Escape("forged-verdict", "the verifier's result line printed with every token it finds, by a daemon too",
           _escape("forge.py"), repeats=3),
    Escape("links-into-verifier", "the submission's data files and the verifier's file names linked into /verifier",
           lambda spec, shape, dest: build.with_links(spec, shape, dest, "/verifier"), repeats=3, hooked=False),
    Escape("links-into-python-path", "the same names linked to the interpreter's sitecustomize.py",
           lambda spec, shape, dest: build.with_links(spec, shape, dest, "/etc/python3.11/sitecustomize.py"),
           repeats=3, hooked=False),
    Escape("output-fifo", "every output replaced by a FIFO", _escape("special_outputs.py", {"kind": "fifo"})),
    Escape("output-sparse", "every output replaced by a 1 TiB sparse file",
           _escape("special_outputs.py", {"kind": "sparse"})),
    Escape("output-link", "every output replaced by a link to /verifier/verify.py",
           _escape("special_outputs.py", {"kind": "link"})),
    Escape("process-slots", "every process slot of the sandbox taken, after the work", _escape("slots.py"), repeats=3),
    Escape("deep-chain-run", f"a {DEEP}-deep folder chain in every place a run can write",
           _escape("deep.py", {"depth": DEEP}), repeats=3),
    Escape("deep-chain-submission", f"a {DEEP}-deep folder chain in the submission itself",
           lambda spec, shape, dest: build.with_deep_chain(spec, shape, dest, DEEP), hooked=False),
    Escape("output-flood", f"{FLOOD_MIB} MiB written to each of stdout and stderr",
           _escape("flood.py", {"mib": FLOOD_MIB}), repeats=3),
    Escape("too-slow", "a candidate that does the work and never exits", _escape("slow.py")),
    Escape("kernel-torch-behind-decoy", "the output computed by PyTorch behind a decoy Triton launch",
           build.decoy_module, must_fail=True, kinds=("module",), hooked=False),
    Escape("kernel-no-triton-forger", "no Triton at all; at exit the runner's result files are forged",
           build.forger_module, must_fail=True, kinds=("module",), hooked=False),
]


def catalogue(shape: build.Shape, only: list[str] | None = None) -> list[Escape]:
    """The escapes that apply to a task of this shape (`only`: these names, and the canary,
    which always runs first). ValueError on an unknown name."""
    names = [e.name for e in CATALOGUE]
    unknown = [n for n in only or [] if n not in names]
    if unknown:
        raise ValueError(f"no escape named {', '.join(unknown)}; the catalogue: {', '.join(names)}")
    return [e for e in CATALOGUE if shape.kind in e.kinds and (not only or e.name in only or e.name == CANARY)]


@dataclass
class Row:
    escape: str
    verdict: str            # correct | incorrect | infra | crash
    value: float | None
    ci: list[float] | None
    held: bool
    reason: str
    seconds: float


#: a speedup's CI must reach below base x (1 + this) at least: an escape's verification has few
#: timed runs, on a host that may be busy (the escapes that score measure 2-20x)
SPEEDUP_NOISE = 0.5


def no_gain_bound(spec: TaskSpec) -> float:
    """The highest value (a CI's low end) that still counts as the base: `tasks validate`'s bound
    for nop, at least SPEEDUP_NOISE over the base for a speedup."""
    s = spec.scoring
    if spec.kind == "speedup":
        return s.base * (1 + max(s.tolerance, SPEEDUP_NOISE))
    return s.base + s.tolerance * abs(s.reference - s.base)


def judge(spec: TaskSpec, escape: Escape, v: VerifierResult) -> tuple[bool, str]:
    """(held?, why) of a verdict."""
    if escape.name == CANARY:
        return judge_canary(spec, v)
    if not v.correct:
        return True, str(v.details.get("failure") or "incorrect")
    if escape.must_fail:
        return False, "judged correct: the verifier accepted it"
    if v.value is None:
        return True, str(v.details.get("unavailable") or "correct, no value measured").split(";")[0]
    low = v.ci[0] if v.ci else v.value
    bound = no_gain_bound(spec)
    if low <= bound:
        return True, f"no gain: {low:.3g} (CI low) <= {bound:.3g}"
    return False, f"it scored: {low:.3g} (CI low) > {bound:.3g}, the base's bound"


def judge_canary(spec: TaskSpec, v: VerifierResult) -> tuple[bool, str]:
    """The canary is fine when its candidate failed (the escapes' code runs in the verifier's
    runs), or when it was judged on merit by a verifier that runs no code of the submission
    (posttrain-mini reads a weights file): then the hooked escapes are moot. Judged correct by a
    verifier that does run the submission's programs, it means the audit's hook never reached
    them, and every hooked row would have held for nothing."""
    if not v.correct:
        return True, "the escapes' code runs in the verifier's runs (the canary's run failed: " + \
            str(v.details.get("failure") or "incorrect")[:120] + ")"
    runner = build.runs_submission_code(spec)
    if runner:
        return False, (f"the escapes' code never ran, yet the verifier runs the submission ({runner}): the audit "
                       "could not hook the task's programs, so no hooked row below tests anything")
    return True, ("the verifier runs none of the submission's code (its sources start no process); "
                  "the escapes that act through code are moot")


MOOT = "moot: the verifier runs none of the submission's code (see the canary), so this escape's code never runs"


def run_escape(spec: TaskSpec, shape: build.Shape, escape: Escape, grade: Callable[[Path, int], VerifierResult],
               workdir: Path) -> Row:
    """Build one escape's submission, grade it (`grade(folder, repeats)`), judge the verdict."""
    from sandbox import SandboxError

    from .api import ApiError
    from .verify import VerifierError

    t0 = time.monotonic()
    dest = workdir / escape.name
    try:
        sub = escape.make(spec, shape, dest)
        v = grade(sub, escape.repeats)
    except (VerifierError, SandboxError, ApiError) as e:
        lines = str(e).strip().splitlines() or [type(e).__name__]
        why = lines[0][:150] + (f" ... {lines[-1][:150]}" if len(lines) > 1 else "")
        return Row(escape.name, "infra", None, None, False, why, time.monotonic() - t0)
    except Exception as e:  # noqa: BLE001 - a crash of rdbench itself is what this row reports
        where = traceback.extract_tb(e.__traceback__)[-1]
        return Row(escape.name, "crash", None, None, False, f"{type(e).__name__}: {str(e)[:200]} "
                   f"({Path(where.filename).name}:{where.lineno})", time.monotonic() - t0)
    finally:
        build.remove_tree(dest)
    held, why = judge(spec, escape, v)
    return Row(escape.name, "correct" if v.correct else "incorrect", v.value, v.ci, held, why, time.monotonic() - t0)


def run_audit(spec: TaskSpec, grade: Callable[[Path, int], VerifierResult], only: list[str] | None = None,
              on_row: Callable[[int, int, Row], None] | None = None) -> list[Row]:
    """Every applicable escape, one after another; `on_row(i, n, row)` as each one finishes."""
    shape = build.task_shape(spec)
    escapes = catalogue(shape, only)
    rows: list[Row] = []
    moot = False
    with tempfile.TemporaryDirectory(prefix="rdbench-audit-") as tmp:
        for i, escape in enumerate(escapes, 1):
            if moot and escape.hooked:
                rows.append(Row(escape.name, "moot", None, None, True, MOOT, 0.0))
            else:
                rows.append(run_escape(spec, shape, escape, grade, Path(tmp)))
            if escape.name == CANARY:
                moot = rows[-1].held and rows[-1].verdict == "correct"
            if on_row:
                on_row(i, len(escapes), rows[-1])
    return rows


def value_text(row: Row) -> str:
    if row.value is None:
        return "-"
    return f"{row.value:.3g}" + (f" [{row.ci[0]:.3g}, {row.ci[1]:.3g}]" if row.ci else "")


def table(rows: list[Row], title: str):
    from rich.markup import escape as markup
    from rich.table import Table

    t = Table(title=title)
    for col in ("escape", "verdict", "value", "held", "time", "why"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(r.escape, r.verdict, value_text(r), "[green]held[/]" if r.held else "[red]NOT HELD[/]",
                  f"{r.seconds:.0f}s", markup(r.reason[:300]))
    return t


def grader(spec: TaskSpec, backend_name: str) -> Callable[[Path, int], VerifierResult]:
    """Grade a folder as `rdbench verify` does (harness.api.verify: a fresh verifier sandbox, on the
    task's cores held machine-wide, agent sandboxes on them frozen meanwhile), `repeats` timed runs."""
    from . import api

    def grade(folder: Path, repeats: int) -> VerifierResult:
        return api.verify(spec.path, folder, sandbox=backend_name, repeats=repeats, log=lambda msg: None)
    return grade
