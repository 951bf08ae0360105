"""`rdbench tasks import kernelbench PATH... --out DIR`: KernelBench problems as rdbench tasks.

A KernelBench problem file (ScalingIntelligence/KernelBench, `KernelBench/levelN/K_Name.py`)
defines `Model(nn.Module)`, `get_inputs()`, `get_init_inputs()` and its sizes as module-level
constants. Each becomes a task folder (templates in harness/kits/kernelbench_template/):

    kb-l1-023-softmax/
      task.toml, instruction.md
      workspace/model.py       the problem file, unchanged (the reference)
      workspace/model_new.py   where the agent writes ModelNew with Triton kernels
      verifier/verify.py       kernelbench_kit.main: the kernel kit's guards on an nn.Module
      verifier/problem.py      the problem file again (the verifier's own copy)
      verifier/problem.json    its name and the reduced sizes used without a GPU
      solution/NO_SOLUTION.md  KernelBench ships no Triton solutions: the oracle is the starting point

Sizes for the CPU path (the Triton interpreter): the module-level size constants (ints of 16
and more, also inside tuples) are capped, keeping each value's remainder modulo 8 (ragged
sizes stay ragged, multiples of 8 stay divisible by group counts); the probe (kernel_module's,
run in the base image) tries caps from small to large and keeps the largest whose inputs and
output hold at most ELEMENT_BUDGET elements, checking that Model runs, returns one tensor, is
repeatable and agrees with its own float64 run within KernelBench's tolerance. A problem
that fails at every cap is skipped with the reason.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

TEMPLATE = Path(__file__).parent / "kits" / "kernelbench_template"
KITS = Path(__file__).parent / "kits"
#: Module-level ints from this value up are sizes (smaller ones: kernel sizes, strides, dims, groups).
SIZE_MIN = 16
#: Caps tried on every size constant without a GPU, smallest first.
CAPS = (8, 16, 32, 64, 128, 256, 512)
#: Inputs plus output, in elements, that the interpreter checks in reasonable time.
ELEMENT_BUDGET = 1 << 17
#: What a problem file may import (the verifier's image has these; level 4's transformers it has not).
IMPORTS = ("torch", "math", "numpy", "typing", "collections", "functools", "itertools", "dataclasses")
NAME_RE = re.compile(r"^(\d+)_(.+)\.py$")


class ImportRefused(Exception):
    """A whole PATH that cannot be imported (level 4); the message says why."""


@dataclass
class Problem:
    path: Path
    level: int | None
    number: int
    title: str
    text: str
    constants: dict = field(default_factory=dict)
    cpu_sizes: dict = field(default_factory=dict)

    @property
    def task_name(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")[:48].strip("-") or "problem"
        return f"kb-l{self.level if self.level is not None else 0}-{self.number:03d}-{slug}"


@dataclass
class ImportReport:
    imported: list[tuple[Problem, Path]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def summary(self) -> str:
        reasons: dict[str, int] = {}
        for _, why in self.skipped:
            reasons[why.split(":")[0]] = reasons.get(why.split(":")[0], 0) + 1
        by = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
        return f"imported {len(self.imported)}, skipped {len(self.skipped)}" + (f" ({by})" if by else "")


def level_of(path: Path) -> int | None:
    for part in reversed(path.resolve().parts):
        m = re.fullmatch(r"level(\d+)", part)
        if m:
            return int(m.group(1))
    return None


def problem_files(paths: list[Path]) -> list[Path]:
    """The problem files of PATHs (folders: their K_Name.py files, by K). Raises ImportRefused."""
    files = []
    for p in paths:
        if level_of(p) == 4:
            raise ImportRefused(f"{p}: KernelBench level 4 is not importable: its problems fetch Hugging Face models "
                                "(transformers.from_pretrained) at run time, and verifier sandboxes have no network")
        if p.is_dir():
            found = sorted((f for f in p.glob("*.py") if NAME_RE.match(f.name)), key=lambda f: int(f.name.split("_")[0]))
            if not found:
                raise ImportRefused(f"{p}: no KernelBench problem files (N_Name.py) in this folder")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise ImportRefused(f"{p}: no such file or folder")
    return files


def _int(node: ast.AST) -> int | None:
    """The value of an integer constant expression (2048 * 2, 4096 // 2), else None."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        v = _int(node.operand)
        return -v if v is not None else None
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv)):
        a, b = _int(node.left), _int(node.right)
        if a is None or b is None or (isinstance(node.op, ast.FloorDiv) and b == 0):
            return None
        return {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}.get(type(node.op), a // b if b else None)
    return None


def constants(tree: ast.Module) -> dict:
    """Module-level NAME = int, or NAME = tuple of ints."""
    found = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            v = _int(stmt.value)
            if v is None and isinstance(stmt.value, ast.Tuple):
                items = [_int(e) for e in stmt.value.elts]
                v = tuple(items) if items and None not in items else None
            if v is not None:
                found[stmt.targets[0].id] = v
    return found


def parse(path: Path) -> Problem:
    """A problem file, checked for KernelBench's format. Raises ValueError with the reason to skip it."""
    m = NAME_RE.match(path.name)
    if not m:
        raise ValueError("not a problem file name: N_Name.py")
    try:
        text = path.read_text()
        tree = ast.parse(text, filename=str(path))
    except (OSError, UnicodeDecodeError, SyntaxError) as e:
        raise ValueError(f"unreadable: {type(e).__name__}: {e}") from None
    defs = {s.name: s for s in tree.body if isinstance(s, (ast.ClassDef, ast.FunctionDef))}
    for name, kind in (("Model", ast.ClassDef), ("get_inputs", ast.FunctionDef), ("get_init_inputs", ast.FunctionDef)):
        if not isinstance(defs.get(name), kind):
            raise ValueError(f"not KernelBench's format: no top-level {'class' if kind is ast.ClassDef else 'def'} {name}")
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        for n in names:
            if n.split(".")[0] not in IMPORTS:
                raise ValueError(f"imports {n}: not in the verifier's image (it has torch, triton, numpy)")
    return Problem(path=path, level=level_of(path), number=int(m.group(1)), title=m.group(2), text=text,
                   constants=constants(tree))


def _shrink(v: int, cap: int) -> int:
    if v < SIZE_MIN or v <= cap:
        return v
    r = v % 8
    return 8 * max(1, cap // 8 - (1 if r else 0)) + r


def candidates(consts: dict) -> list[dict]:
    """Size settings to try without a GPU, smallest first: every size constant capped."""
    out = []
    for cap in CAPS:
        sizes = {}
        for name, v in consts.items():
            new = tuple(_shrink(x, cap) for x in v) if isinstance(v, tuple) else _shrink(v, cap)
            if new != v:
                sizes[name] = list(new) if isinstance(new, tuple) else new
        if sizes not in out:
            out.append(sizes)
    return out or [{}]


def probe(problems: list[Problem], backend: str, image: str, timeout: float = 1800) -> dict[int, dict]:
    """Run kernel_module's probe on every problem's candidate sizes in one sandbox of `image`
    (network off, the agent's limits). Returns {index: {"sizes"...} or {"error"...}}."""
    from sandbox import SandboxConfig, get_backend

    job = {"budget": ELEMENT_BUDGET, "problems": [{"text": p.text, "candidates": candidates(p.constants)}
                                                  for p in problems]}
    sb = get_backend(backend)(SandboxConfig(image=image, memory="8g", pids=256))
    try:
        # write_file and cwd take sandbox paths; a command's arguments are seen from inside (sb.path)
        sb.write_file("/workspace/kernel_module.py", (KITS / "kernel_module.py").read_bytes())
        sb.write_file("/workspace/probe.json", json.dumps(job).encode())
        r = sb.exec(["python3", "-s", sb.path("/workspace/kernel_module.py"), "--probe", sb.path("/workspace/probe.json")],
                    timeout=timeout, cwd="/workspace", max_output=16 << 20)
    finally:
        sb.close()
    results = {}
    for line in r.stdout.splitlines():
        try:
            d = json.loads(line)
            results[int(d["index"])] = d
        except (ValueError, KeyError, TypeError):
            continue
    for i in range(len(problems)):
        if i not in results:
            tail = (r.stderr.strip().splitlines() or ["no output"])[-1][:300]
            results[i] = {"error": "the probe did not finish (timed out after %.0f s)" % timeout if r.timed_out
                          else f"the probe crashed: {tail}"}
    return results


def write_task(p: Problem, out: Path) -> Path:
    """The task folder of one problem, from the templates."""
    folder = out / p.task_name
    for sub in ("workspace", "verifier", "solution"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    fill = {"NAME": p.task_name, "TITLE": f"KernelBench level {p.level} problem {p.number}: {p.title}",
            "SOURCE": p.path.name}
    for tpl in sorted(TEMPLATE.rglob("*")):
        if tpl.is_file():
            rel = tpl.relative_to(TEMPLATE).with_name(tpl.name.removesuffix(".tpl"))
            text = tpl.read_text()
            for k, v in fill.items():
                text = text.replace("{{%s}}" % k, v)
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_text(text)
    (folder / "workspace" / "model.py").write_text(p.text)
    (folder / "verifier" / "problem.py").write_text(p.text)
    config = {"name": p.task_name, "level": p.level, "number": p.number, "title": p.title, "source": p.path.name,
              "draws": 5, "cpu_sizes": p.cpu_sizes,
              "original_sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in p.constants.items()
                                 if k in p.cpu_sizes}}
    (folder / "verifier" / "problem.json").write_text(json.dumps(config, indent=2) + "\n")
    return folder


def import_kernelbench(paths: list[Path], out: Path, *, backend: str | None = "docker", image: str | None = None,
                       log=lambda msg: None) -> ImportReport:
    """Import problem files or level folders into task folders under `out`. `backend` None:
    no probe (sizes are the first candidates, unchecked). Raises ImportRefused."""
    report = ImportReport()
    problems = []
    for f in problem_files(paths):
        try:
            problems.append(parse(f))
        except ValueError as e:
            report.skipped.append((f, str(e)))
    if backend is not None and problems:
        log(f"probing {len(problems)} problem(s) at reduced sizes in {image} ...")
        results = probe(problems, backend, image)
    else:
        results = {i: {"sizes": candidates(p.constants)[0]} for i, p in enumerate(problems)}
    out.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(problems):
        r = results[i]
        if "sizes" not in r:
            report.skipped.append((p.path, "fails its probe at every reduced size tried: " + str(r.get("error"))))
            continue
        p.cpu_sizes = r["sizes"]
        report.imported.append((p, write_task(p, out)))
    return report


# ---- the CLI's halves: `rdbench tasks import kernelbench` and `rdbench results --suite` ----

def cli_import(paths: list[Path], out: Path, sandbox: str, probe: bool) -> None:
    from sandbox import BACKENDS, SandboxError, get_backend

    from .cli_support import console, docker_client, err, fail

    if sandbox not in BACKENDS:
        fail(f"unknown sandbox backend {sandbox!r}; choose one of {', '.join(BACKENDS)}", 2)
    if probe and sandbox == "local":  # the probe runs `python3` on PATH here: it must import torch
        from .preflight import PreflightError, check_python

        try:
            check_python(["torch"])
        except PreflightError as e:
            fail(f"--sandbox local: {e}", 2)
    try:
        image = "local"
        if probe and get_backend(sandbox).needs_images:
            from sandbox.images import build_base_image

            image = build_base_image(docker_client(), log=lambda m: err.print(f"[dim]{m}[/]"))
        report = import_kernelbench(paths, out, backend=sandbox if probe else None, image=image,
                                    log=lambda m: err.print(f"[dim]{m}[/]", highlight=False))
    except (ImportRefused, SandboxError) as e:
        fail(str(e), 1)
    for path, why in report.skipped:
        err.print(f"[yellow]skipped[/] {path.name}: {why}", highlight=False)
    console.print(f"{report.summary()} -> {out}", highlight=False)


def suite_results(store, folder: Path, ps: list[float], format: str) -> None:
    """`rdbench results --suite DIR`: fast_p at each p over every task folder of DIR, per model."""
    import sys

    from rich.table import Table

    from results.store import StoreError
    from results.suite import suite_fast_p, suite_table_rows

    from .cli_support import console, fail, load_registry
    from .task import task_names

    tasks = task_names(folder)
    if not tasks:
        fail(f"{folder}: no task folders (with a task.toml) in it")
    try:
        rows = suite_fast_p(store.rows(tasks=tasks), tasks, ps, load_registry())
    except StoreError as e:
        fail(str(e), 1)
    if format == "json":
        sys.stdout.write(json.dumps([r.flat() for r in rows], indent=1) + "\n")
        return
    cols, cells = suite_table_rows(rows)
    if format == "csv":
        import csv

        csv.writer(sys.stdout, lineterminator="\n").writerows([cols] + cells)
        return
    table = Table(title=f"{folder}: {len(tasks)} problems (never-attempted ones count as not fast)")
    for c in cols:
        table.add_column(c)
    for row in cells:
        table.add_row(*row)
    console.print(table)
