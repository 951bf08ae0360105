"""The house rules that keep the packages easy to change: arrows only downward, results
free of the orchestrator and the SDKs, small modules, and a CLI that imports only what a
command uses (checked by what is imported, not by a clock: no host is too slow for it)."""

from __future__ import annotations

import subprocess
import sys

from benchmarks.import_graph import main as import_graph
from tests.conftest import ROOT

HEAVY = ("pydantic", "anthropic", "openai", "docker", "matplotlib", "harness.task", "results.records")


def test_import_graph_points_only_downward_and_modules_stay_small(capsys):
    assert import_graph() == 0, capsys.readouterr().out


def test_help_imports_no_sdk_docker_pydantic_or_matplotlib():
    code = ("import sys; sys.argv = ['rdbench', '--help']\nfrom harness.cli import app\ntry:\n    app()\n"
            "except SystemExit:\n    pass\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"
