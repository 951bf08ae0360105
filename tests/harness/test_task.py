"""Task folders: one clear error per malformed folder, never a traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.scaffold import scaffold
from harness.task import TaskError, find_tasks, load_task
from tests.conftest import TASKS, rdbench


@pytest.fixture
def task_dir(tmp_path) -> Path:
    return scaffold("demo", tmp_path)


def test_example_task_loads():
    t = load_task(TASKS / "py-primes")
    assert t.name == "py-primes" and t.kind == "speedup" and t.resources.cpus == 1
    assert t.path == (TASKS / "py-primes").resolve()
    assert "prime" in t.instruction


def test_scaffold_loads(task_dir):
    t = load_task(task_dir)
    assert t.name == "demo" and (task_dir / "solution" / "program.py").is_file()


@pytest.mark.parametrize("edit, expected", [
    (lambda s: s.replace("cpus = 1", 'cpus = "two"'), r"task.toml: resources.cpus: Input should be a valid integer"),
    (lambda s: s.replace("cpus = 1", "cpu = 1"), r"task.toml: resources.cpu: unknown key"),
    (lambda s: s.replace('kind = "speedup"', 'kind = "fastness"'), r"task.toml: kind: Input should be 'speedup' or 'score'"),
    (lambda s: s.replace('memory = "1g"', 'memory = "lots"'), r"task.toml: resources.memory: .*'lots' is not a size like 512m or 4g$"),
    (lambda s: s.replace("reference = 5.0", ""), r"task.toml: scoring.reference: Field required"),
    (lambda s: s.replace('name = "demo"', 'name = "Bad Name"'), r"task.toml: name: String should match pattern"),
    (lambda s: s + "\n[[[", r"task.toml: not valid TOML"),
])
def test_malformed_toml_names_file_key_and_problem(task_dir, edit, expected):
    toml = task_dir / "task.toml"
    toml.write_text(edit(toml.read_text()))
    with pytest.raises(TaskError, match=expected):
        load_task(task_dir)


@pytest.mark.parametrize("missing", ["instruction.md", "workspace", "verifier", "task.toml"])
def test_missing_parts_are_named(task_dir, missing):
    p = task_dir / missing
    shutil.rmtree(p) if p.is_dir() else p.unlink()
    with pytest.raises(TaskError, match=missing):
        load_task(task_dir)


def test_cli_reports_bad_task_without_traceback(task_dir):
    toml = task_dir / "task.toml"
    toml.write_text(toml.read_text().replace("cpus = 1", "cpus = 0"))
    r = rdbench("tasks", "validate", str(task_dir), "--schema-only")
    assert r.returncode == 1
    assert "resources.cpus: Input should be greater than or equal to 1" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_tasks_list_shows_invalid_tasks_too(tmp_path):
    scaffold("good", tmp_path)
    bad = scaffold("bad", tmp_path)
    (bad / "task.toml").write_text("name = 3")
    assert [p.name for p in find_tasks(tmp_path)] == ["bad", "good"]
    r = rdbench("tasks", "list", "--root", str(tmp_path))
    assert r.returncode == 1
    assert "good" in r.stdout and "invalid" in r.stdout


def test_tasks_new_refuses_bad_names_and_existing_folders(tmp_path):
    assert rdbench("tasks", "new", "Bad Name", "--root", str(tmp_path)).returncode == 2
    assert rdbench("tasks", "new", "ok", "--root", str(tmp_path)).returncode == 0
    r = rdbench("tasks", "new", "ok", "--root", str(tmp_path))
    assert r.returncode == 2 and "already exists" in r.stderr


@pytest.mark.docker
@pytest.mark.slow
def test_scaffold_validates_as_generated(base_image, tmp_path):
    """The whole check: schema, oracle reaches the reference, nop stays at 1x."""
    path = scaffold("fresh", tmp_path)
    r = rdbench("tasks", "validate", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "valid" in r.stdout and "oracle" in r.stdout and "nop" in r.stdout
