"""`rdbench tasks new NAME`: a complete, runnable task folder to edit."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

TEMPLATE = Path(__file__).parent / "kits" / "template"


def scaffold(name: str, root: Path) -> Path:
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name):
        raise ValueError(f"task name {name!r}: use lowercase letters, digits, '.', '_' and '-'")
    dest = root / name
    if dest.exists():
        raise FileExistsError(f"{dest}: already exists")
    shutil.copytree(TEMPLATE, dest, ignore=shutil.ignore_patterns("__pycache__"))
    toml = dest / "task.toml"
    toml.write_text(toml.read_text().replace("{name}", name))
    return dest
