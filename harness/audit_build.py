"""`rdbench tasks audit`: how an escape's submission is built from a task's own starting point
(workspace/) or oracle (workspace/ overlaid with solution/, as the oracle agent submits it).

A task's submission is one of two shapes, told apart by its verifier:
    program  the verifier runs the submission's programs (py-primes, cpu-lm-train; posttrain-mini's
             verifier runs none of them, so a program escape there changes nothing it reads)
    module   a kernel task (verify.py uses kernel_kit or kernelbench_kit): a runner process
             imports the submission's module and calls its entry (a function, or KernelBench's
             ModelNew class)

An escape's in-sandbox code (harness/kits/audit/) goes into the submission as `_rdbench_escape.py`;
the task's entry scripts (a program's files with `if __name__ == "__main__":`) or its module call
`_rdbench_escape.start()` first, then do their real work.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .task import TaskSpec

KIT = Path(__file__).parent / "kits" / "audit"
ESCAPE_MODULE = "_rdbench_escape"
PROGRAM_HOOK = (f'if __name__ == "__main__":  # rdbench tasks audit: the escape first, then the program\n'
                f"    import {ESCAPE_MODULE}\n    {ESCAPE_MODULE}.start()\n")
MODULE_HOOK = (f"import {ESCAPE_MODULE}  # rdbench tasks audit: the escape first, then the module\n"
               f"{ESCAPE_MODULE}.start()\n")
#: names the verifier's source mentions as files (inputs it writes, outputs it reads)
FILE_NAME = re.compile(r"^[\w.-]+\.(json|npz|npy|txt|pt|bin|csv|pkl|py)$")


@dataclass(frozen=True)
class Shape:
    """How the verifier runs a task's submission."""

    kind: str                      # "program" or "module"
    module: str | None = None      # module: the file the runner imports (without .py)
    entry: str | None = None       # module: the function (or class) it calls
    entry_is_class: bool = False   # KernelBench's ModelNew
    reference: str | None = None   # module, function entry: the verifier's PyTorch reference (source)


def task_shape(spec: TaskSpec) -> Shape:
    verify = spec.path / "verifier" / "verify.py"
    text = verify.read_text() if verify.is_file() else ""
    if "kernelbench_kit" in text:
        return Shape("module", "model_new", "ModelNew", entry_is_class=True)
    if "kernel_kit" not in text:
        return Shape("program")
    found = {}
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg in ("module", "entry") and isinstance(kw.value, ast.Constant):
                    found[kw.arg] = kw.value.value
    ref = spec.path / "verifier" / "reference.py"
    return Shape("module", found.get("module", "kernel"), found.get("entry"),
                 reference=ref.read_text() if ref.is_file() else None)


#: what in a verifier's source starts a process that can run submitted code: the verify kit's
#: run, the kernel kits' runners, or the standard library's own ways
RUNS_CODE = re.compile(r"\bkit\.run\(|\bkernel_kit\b|\bkernelbench_kit\b|\bsubprocess\b"
                       r"|\bos\.(system|exec\w*|spawn\w*|popen|posix_spawn\w*)\b")


def runs_submission_code(spec: TaskSpec) -> str:
    """Where the task's verifier starts a process that can run the submission's code
    ("verify.py:110 kit.run("), or "" if its sources start none (it only reads files)."""
    for src in sorted((spec.path / "verifier").glob("*.py")):
        for n, line in enumerate(src.read_text(errors="replace").splitlines(), 1):
            m = RUNS_CODE.search(line.split("#", 1)[0])
            if m:
                return f"{src.name}:{n} {m.group(0)}"
    return ""


def starting_point(spec: TaskSpec, dest: Path, oracle: bool = False) -> Path:
    """The task's workspace (with `oracle`, overlaid with its solution/) copied to `dest`."""
    shutil.copytree(spec.path / "workspace", dest, symlinks=True)
    if oracle and (spec.path / "solution").is_dir():
        shutil.copytree(spec.path / "solution", dest, symlinks=True, dirs_exist_ok=True)
    return dest


def _after_preamble(source: str) -> int:
    """The line after a module's docstring and `from __future__` imports (0: the top)."""
    try:
        body = ast.parse(source).body
    except SyntaxError:
        return 0
    end = 0
    for i, node in enumerate(body):
        docstring = i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        if docstring or (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
            end = node.end_lineno or end
        else:
            break
    return end


def insert_hook(path: Path, hook: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    at = _after_preamble("".join(lines))
    path.write_text("".join(lines[:at]) + hook + "".join(lines[at:]))


def entry_scripts(folder: Path, named: list[str] = ()) -> list[Path]:
    """The programs of a submission: its .py files that run something as `__main__`, and those
    the verifier names (`named`: a script with no such guard, as cpu-lm-train's train.py, runs
    as `__main__` all the same; before, its escapes went into a file it only imports, never ran,
    and every row "held" for nothing)."""
    guarded = {p for p in folder.rglob("*.py") if re.search(r"__name__\s*==\s*['\"]__main__['\"]", p.read_text())}
    return sorted(guarded | {folder / n for n in named if n.endswith(".py") and (folder / n).is_file()})


def with_escape(spec: TaskSpec, shape: Shape, dest: Path, code: str, params: dict | None = None,
                oracle: bool = False) -> Path:
    """The starting point (or oracle) whose programs (or module) run `code` (a file of
    harness/kits/audit/) before their own work: the common hooks, then the escape's."""
    sub = starting_point(spec, dest, oracle)
    text = (KIT / "common.py").read_text() + f"\nPARAMS = {params or {}!r}\n\n" + (KIT / code).read_text()
    (sub / f"{ESCAPE_MODULE}.py").write_text(text)
    if shape.kind == "module":
        insert_hook(sub / f"{shape.module}.py", MODULE_HOOK)
    else:
        for script in entry_scripts(sub, verifier_file_names(spec)):
            insert_hook(script, PROGRAM_HOOK)
    return sub


def verifier_file_names(spec: TaskSpec) -> list[str]:
    """File names the task's verifier source mentions (what it writes and reads)."""
    names = set()
    for src in (spec.path / "verifier").glob("*.py"):
        try:
            tree = ast.parse(src.read_text())
        except SyntaxError:
            continue
        names |= {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                  and FILE_NAME.match(n.value)}
    return sorted(names)


def with_links(spec: TaskSpec, shape: Shape, dest: Path, target: str) -> Path:
    """The starting point with every data file (not .py) and every file name the verifier
    mentions replaced by a link to `target` (a verifier file, or a file on the Python path), and
    a link to the verifier's folder: what a root verifier following them would write or read."""
    verifier = spec.path / "verifier"
    targets = {target} if target != "/verifier" else {f"/verifier/{p.name}" for p in verifier.iterdir()}
    sub = with_escape(spec, shape, dest, "links.py", {"targets": sorted(targets | {"/verifier/verify.py"})})
    for name in verifier_file_names(spec) + [p.name for p in sub.iterdir() if p.is_file() and p.suffix != ".py"]:
        path = sub / name
        if path.suffix == ".py" and path.exists():
            continue  # the programs themselves stay
        # a data file links to the verifier's file of its kind (e.g. its reference weights)
        same = sorted(verifier.glob(f"*{path.suffix}")) if target == "/verifier" else []
        link = f"/verifier/{same[0].name}" if same else (f"{target}/verify.py" if target == "/verifier" else target)
        path.unlink(missing_ok=True)
        path.symlink_to(link)
    (sub / "rdbench-verifier").symlink_to("/verifier")
    return sub


def with_deep_chain(spec: TaskSpec, shape: Shape, dest: Path, depth: int) -> Path:
    """The starting point holding a chain of `depth` nested folders."""
    sub = starting_point(spec, dest)
    subprocess.run(["sh", "-c", f"cd {str(sub)!r} && for i in $(seq {depth}); do mkdir d && cd d || exit 1; done"],
                   check=True, stdout=subprocess.DEVNULL)
    return sub


def decoy_module(spec: TaskSpec, shape: Shape, dest: Path) -> Path:
    """Kernel tasks: the oracle whose entry does its work with PyTorch behind a decoy Triton launch."""
    sub = starting_point(spec, dest, oracle=True)
    code = (KIT / "kernel_decoy.py").read_text() + "\n\n"
    if shape.entry_is_class:
        code += (KIT / "kernel_decoy_class.py").read_text().replace("ENTRY", shape.entry)
    else:
        code += (f"REFERENCE_SOURCE = {shape.reference!r}\n\n"
                 + (KIT / "kernel_decoy_function.py").read_text().replace("ENTRY", shape.entry))
    module = sub / f"{shape.module}.py"
    module.write_text(module.read_text() + code)
    return sub


def forger_module(spec: TaskSpec, shape: Shape, dest: Path) -> Path:
    """Kernel tasks: no Triton at all (PyTorch, or KernelBench's Model unchanged) and, at exit,
    the runner's result files rewritten to claim Triton launches and faster times."""
    sub = starting_point(spec, dest)
    module = sub / f"{shape.module}.py"
    forge = (KIT / "kernel_forger.py").read_text().replace("MODULE", shape.module)
    if shape.entry_is_class:
        module.write_text(module.read_text() + forge)
    else:
        module.write_text('"""Our kernel: written with @triton.jit, of course."""\n\n'
                          f"REFERENCE_SOURCE = {shape.reference!r}\n\n"
                          + (KIT / "kernel_forger_function.py").read_text().replace("ENTRY", shape.entry) + forge)
    return sub


def remove_tree(path: Path) -> None:
    """Remove a built submission, deep chains included (rm: no recursion limit)."""
    subprocess.run(["rm", "-rf", "--", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
