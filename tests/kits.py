"""The in-sandbox kits (harness/kits/*.py) imported on the host as a verifier sandbox imports
them: each by its bare name (`import verify_kit`, whose own `import contract` then finds the
kit's contract), loaded by path with importlib, so no test edits sys.path."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

KITS = Path(__file__).resolve().parents[1] / "harness" / "kits"


def kit_imports(path: Path) -> list[str]:
    """The kits `path` imports at module level (by bare name, as in the sandbox)."""
    names = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return [n for n in names if (KITS / f"{n}.py").is_file()]


def load_kit(name: str):
    """harness/kits/NAME.py as module NAME, after the kits it imports (each loaded once)."""
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(KITS / f"{name}.py"):
        return sys.modules[name]
    path = KITS / f"{name}.py"
    for dep in kit_imports(path):
        load_kit(dep)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
