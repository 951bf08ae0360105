"""Two real runs of the example task (oracle and nop) into one runs folder, shared by the
results tests: the index, `rdbench results`, the report and the plain (non-tty) output."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import TASKS, rdbench


@dataclass
class Runs:
    root: Path                      # the runs folder (its results.db is the default index)
    oracle: Path
    nop: Path
    outputs: dict[str, subprocess.CompletedProcess]

    @property
    def db(self) -> Path:
        return self.root / "results.db"


@pytest.fixture(scope="session")
def primes_runs(base_image, tmp_path_factory) -> Runs:
    root = tmp_path_factory.mktemp("runs")
    outputs = {}
    for agent in ("oracle", "nop"):
        r = rdbench("run", str(TASKS / "py-primes"), "--agent", agent, "--trials", "2", "--repeats", "3",
                    "--out", str(root / agent), env={"RDBENCH_DB": ""})
        assert r.returncode == 0, r.stderr
        outputs[agent] = r
    return Runs(root, root / "oracle", root / "nop", outputs)
