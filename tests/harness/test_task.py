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


def test_schema_version_is_checked(task_dir):
    assert load_task(task_dir).schema_version == 1
    toml = task_dir / "task.toml"
    toml.write_text(toml.read_text().replace("schema_version = 1", "schema_version = 2"))
    with pytest.raises(TaskError, match=r"task.toml: schema_version: .*reads schema_version 1 only"):
        load_task(task_dir)


@pytest.mark.parametrize("task", sorted(p.name for p in find_tasks(TASKS)))
def test_every_shipped_task_declares_its_schema_and_draws_fresh_inputs(task):
    text = (TASKS / task / "task.toml").read_text()
    assert "schema_version = 1" in text
    assert load_task(TASKS / task).verifier.fresh_inputs is True


def test_validate_warns_about_a_task_without_fresh_inputs(task_dir):
    r = rdbench("tasks", "validate", str(task_dir), "--schema-only")
    assert r.returncode == 0 and "schema ok" in r.stdout and "warning" not in r.stdout, r.stdout
    toml = task_dir / "task.toml"
    toml.write_text(toml.read_text().replace("fresh_inputs = true", "fresh_inputs = false"))
    r = rdbench("tasks", "validate", str(task_dir), "--schema-only")
    assert r.returncode == 0, r.stdout + r.stderr
    out = " ".join(r.stdout.split())
    assert "warning:" in out and "fresh_inputs = false" in out and "page cache" in out, r.stdout


def test_scoring_tolerance_decides_validates_verdict(task_dir):
    """`[scoring] tolerance` is what `tasks validate` allows the oracle and nop: editing it in
    task.toml changes the verdict."""
    from harness.validate import check
    from results.records import TrialResult

    oracle = TrialResult(task="demo", agent="oracle", trial=0, run_id="r", correct=True, value=3.0)
    assert check(load_task(task_dir), oracle) is None  # reference 5.0, tolerance 0.5: at least 2.5
    toml = task_dir / "task.toml"
    toml.write_text(toml.read_text().replace("tolerance = 0.5", "tolerance = 0.3"))
    assert "below reference" in check(load_task(task_dir), oracle)  # at least 3.5 now
