"""Before the first trial on `--sandbox local`: can this host run what the tasks need, the way
the verifier will run it?

The local backend's verifier runs as root on the host, from the `python3` on PATH, and runs
every program under test as uids of no account (sandbox/local.py): the task's programs from
`python3` on PATH, the kernel kit's runner from the verifier's own interpreter. A Python those
uids cannot execute (one under /root, or under any 0700 folder), packages they cannot read, or
a temporary folder they cannot enter would make every verification an infrastructure error
(harness/kits/verify_kit.py's check_host). This says so once, with the fix, before anything
starts.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .task import TaskSpec

KITS_DIR = Path(__file__).parent / "kits"
#: The variables a run keeps of the caller's (the kit's PASS_ENV, in part).
_ENV = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "CUDA_VISIBLE_DEVICES")
#: Imports the modules named on the command line; prints sys.executable and whether torch sees a GPU.
_PROGRAM = ("import importlib, json, sys\n"
            "print(sys.executable, flush=True)\n"
            "[importlib.import_module(m) for m in sys.argv[1:]]\n"
            "cuda = sys.modules['torch'].cuda.is_available() if 'torch' in sys.modules else None\n"
            "print(json.dumps({'executable': sys.executable, 'cuda': cuda}))\n")
_FIX_PYTHON = ("put a Python that every user can read and execute first on PATH (the system's /usr/bin/python3, "
               "or a venv outside /root and other private folders) with the packages the tasks need, or open "
               "the folders above it to others (chmod o+x)")


class PreflightError(Exception):
    """This host cannot run the tasks on the local backend; the message says why and how to fix it."""


def _imports(path: Path, module_level: bool = False) -> set[str]:
    """Top-level names of the absolute imports of a Python file (none if it does not parse);
    `module_level`: only its module-level import statements (a kit imports some packages only
    in the functions that need them: verify_kit's numpy)."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return set()
    names = set()
    for node in tree.body if module_level else ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def needed_modules(task: "TaskSpec") -> list[str]:
    """The third-party modules a task's verifier and programs import, with those of the kits
    they use (kernel_kit: torch, triton): what the runs' Python must import."""
    kits = {p.stem: p for p in KITS_DIR.glob("*.py")}
    files = [p for sub in ("verifier", "workspace", "solution") for p in sorted((task.path / sub).rglob("*.py"))]
    own = {p.stem for p in files} | set(kits)
    found: set[str] = set()
    seen_kits: set[str] = set()
    while files:
        f = files.pop()
        names = _imports(f, module_level=f.parent == KITS_DIR)
        found |= names
        for kit in (names & set(kits)) - seen_kits:
            seen_kits.add(kit)
            files.append(kits[kit])
    return sorted(n for n in found if n not in own and n not in sys.stdlib_module_names and n != "__future__")


def _run(argv: list[str], cwd: str, uid: int | None, modules: list[str]) -> tuple[dict | None, str]:
    """Run the check program with `argv[0]` as `uid` (None: as this process); (its report, or None and why)."""
    env = {k: os.environ[k] for k in _ENV if k in os.environ}
    env.update(HOME=cwd, TMPDIR=cwd)
    user = {} if uid is None else {"user": uid, "group": uid, "extra_groups": []}
    try:
        r = subprocess.run([*argv, "-s", "-c", _PROGRAM, *modules], cwd=cwd, env=env, capture_output=True,
                           text=True, timeout=300, **user)
    except subprocess.TimeoutExpired:
        return None, "it did not finish in 300 s"
    except OSError as e:  # not executable, not found, or the folder not enterable
        return None, f"{e.strerror or e}: {e.filename}" if e.filename else str(e)
    if r.returncode != 0:
        why = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1][:300]
        return None, why + (f" (in {r.stdout.splitlines()[0]})" if r.stdout.strip() else "")
    try:
        return json.loads(r.stdout.strip().splitlines()[-1]), ""
    except (ValueError, IndexError):
        return None, f"it printed no report: {r.stdout[-200:]!r}"


def check_python(modules: list[str]) -> dict:
    """`python3` on PATH runs here, as this process's user, and imports `modules`. Returns its
    report ({"executable", "cuda"}); raises PreflightError."""
    if shutil.which("python3") is None:
        raise PreflightError(f"no python3 on PATH: the local backend runs the tasks' programs with it; {_FIX_PYTHON}")
    report, why = _run(["python3"], os.getcwd(), None, modules)
    if report is None:
        raise PreflightError(f"python3 on PATH ({shutil.which('python3')}) cannot import "
                             f"{', '.join(modules) or 'anything'}: {why}; install them for it, or {_FIX_PYTHON}")
    return report


def check_local(tasks: list["TaskSpec"]) -> None:
    """What the local backend's verifier will do, in small: the verifier's Python imports what the
    tasks need; as root, a run's uid can enter the temporary folder where sandboxes live and run
    the task's `python3` and the verifier's own interpreter, importing the same, seeing the GPU
    root sees. Raises PreflightError (cause and fix)."""
    modules = sorted({m for t in tasks for m in needed_modules(t)})
    root = check_python(modules)
    if os.geteuid() != 0:  # no user separation on this host: the runs are this user's
        return
    from sandbox import SandboxError
    from sandbox.local import claim_uids, release_uids

    try:
        held = claim_uids(1)
    except SandboxError as e:
        raise PreflightError(str(e)) from e
    uid = held[0][0]
    try:
        home = tempfile.mkdtemp(prefix="rdbench-preflight-")
    except OSError as e:
        release_uids(held)
        raise PreflightError(f"cannot make a temporary folder: {e}") from e
    try:
        os.chmod(home, 0o711)
        os.chown(home, uid, uid)
        # the kernel kit's runs use the verifier's own interpreter; the tasks' programs, python3 on PATH
        for exe in ([root["executable"]] if modules else []) + ["python3"]:
            if exe == "python3" and modules:  # the same Python as the verifier's: checked already
                which, _ = _run([exe], home, uid, [])
                if which is not None and which["executable"] == root["executable"]:
                    continue
            report, why = _run([exe], home, uid, modules)
            if report is None:
                what = "python3 on PATH" if exe == "python3" else f"the verifier's Python {exe}"
                raise PreflightError(
                    f"the verifier's runs (uid {uid}, no account of this host) cannot run {what}"
                    f"{' importing ' + ', '.join(modules) if modules else ''}: {why}. Fix: {_FIX_PYTHON}; and the "
                    f"temporary folder {tempfile.gettempdir()} (TMPDIR) must let every user enter it")
            if root["cuda"] and not report["cuda"]:
                raise PreflightError(f"torch sees a GPU as root but not as uid {uid} (the verifier's runs): let "
                                     "every user open /dev/nvidia* (mode 0666, as the NVIDIA driver sets by default)")
    finally:
        shutil.rmtree(home, ignore_errors=True)
        release_uids(held)
