"""Task folders: task.toml loaded into a validated TaskSpec.

    tasks/<name>/
      task.toml        maps one to one onto TaskSpec below
      instruction.md   what the agent is told
      workspace/       the starting code (the baseline), copied to /workspace
      verifier/        hidden from the agent; runs only in the verifier sandbox
      solution/        overlaid on workspace/ by the oracle agent
      environment/     optional Dockerfile (FROM ${RDBENCH_BASE}, or any registry image)
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .kits import contract


class TaskError(Exception):
    """A malformed task folder. The message names the file, the key and what is wrong."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Resources(_Strict):
    cpus: int = Field(1, ge=1, le=256, description="cores pinned to each sandbox (and held exclusively while timing)")
    memory: str = Field("2g", description="memory limit per sandbox, Docker syntax: 512m, 4g")
    gpus: int = Field(0, ge=0, le=16, description="whole GPUs per trial")
    pids: int = Field(512, ge=16, description="process limit per sandbox")
    disk: str = Field("4g", description="the most the agent can write in its sandbox (/workspace, /tmp, "
                                        "/var/tmp together), same syntax as memory; past it: ENOSPC")

    @field_validator("memory", "disk")
    @classmethod
    def _memory(cls, v: str) -> str:
        if not re.fullmatch(r"\d+(\.\d+)?[kmg]?", v.lower()):
            raise ValueError(f"{v!r} is not a size like 512m or 4g")
        return v.lower()


class AgentLimits(_Strict):
    max_turns: int = Field(100, ge=1, description="model calls before the agent is stopped")
    max_input_tokens: int | None = Field(None, ge=1, description="input tokens, summed over the trial")
    max_output_tokens: int | None = Field(None, ge=1, description="output tokens, summed over the trial")
    max_cost_usd: float | None = Field(None, gt=0, description="dollars, from the price table")
    timeout_s: float = Field(3600, gt=0, description="wall time of the agent phase")
    max_subagent_depth: int = Field(1, ge=0, le=4, description="sub-agents of sub-agents; 0 = no delegate tool")
    max_subagents: int = Field(4, ge=0, description="sub-agents started per trial")
    provider_tools: list[str] = Field([], description="provider-side tools (web_search, web_fetch, code_execution, "
                                      "file_search, mcp, ...) an installed agent may use through the gateway; "
                                      "default none: they would give the sandbox the network by proxy")

    @field_validator("provider_tools")
    @classmethod
    def _provider_tools(cls, v: list[str]) -> list[str]:
        from agents.gateway.policy import KINDS  # the gateway owns the kinds it tells apart

        if unknown := sorted(set(v) - set(KINDS.values())):
            raise ValueError(f"unknown provider-side tools {unknown}; known: {', '.join(sorted(set(KINDS.values())))}")
        return sorted(set(v))


class VerifierSpec(_Strict):
    command: str = Field("python3 verify.py", description="run in /verifier as root; prints the verdict")
    timeout_s: float = Field(1800, gt=0, description="wall time of the whole verification")
    repeats: int = Field(5, ge=1, le=100, description="timed runs of baseline and of candidate")
    fresh_inputs: bool = Field(True, description="every timed pair (baseline run i, candidate run i) gets inputs "
                                                 "no earlier run saw; false: `tasks validate` warns")
    params: dict[str, str | int | float | bool | list | dict] = Field(
        {}, description="anything else the task's verify.py reads, by name (verify_kit.param(NAME))")


class Scoring(_Strict):
    reference: float = Field(description="value the oracle (solution/) reaches: a speedup, or a score")
    base: float = Field(1.0, description="value of the unchanged workspace: 1.0 for speedups, the base score else")
    plausible_max: float | None = Field(None, gt=0, description="values above are flagged for review")
    tolerance: float = Field(0.3, gt=0, lt=1, description="`tasks validate`: oracle >= reference x (1 - this); nop within this of base")


class TaskSpec(_Strict):
    schema_version: int = Field(contract.SCHEMA_VERSION, description="the task.toml format this file is written in")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", description="unique, lowercase; used in paths")
    kind: Literal["speedup", "score"] = Field(description="what the verifier's value means")
    description: str = Field(description="one line, for listings")
    resources: Resources = Resources()
    agent: AgentLimits = AgentLimits()
    verifier: VerifierSpec = VerifierSpec()
    scoring: Scoring
    #: the task folder (set by load_task, not read from the file)
    path: Path = Field(Path("."), exclude=True)

    @field_validator("schema_version")
    @classmethod
    def _schema(cls, v: int) -> int:
        if v != contract.SCHEMA_VERSION:
            raise ValueError(f"this rdbench reads schema_version {contract.SCHEMA_VERSION} only")
        return v

    @property
    def instruction(self) -> str:
        return (self.path / "instruction.md").read_text()

    @property
    def dockerfile_dir(self) -> Path | None:
        env = self.path / "environment"
        return env if (env / "Dockerfile").is_file() else None


REQUIRED = {"instruction.md": "file", "workspace": "folder", "verifier": "folder"}


def load_task(path: str | Path) -> TaskSpec:
    """Load and validate a task folder. Raises TaskError with one clear message."""
    folder = Path(path)
    toml_path = folder / "task.toml"
    if not folder.is_dir():
        raise TaskError(f"{folder}: no such task folder")
    if not toml_path.is_file():
        raise TaskError(f"{toml_path}: missing (every task folder has a task.toml)")
    try:
        data = tomllib.loads(toml_path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise TaskError(f"{toml_path}: not valid TOML: {e}") from None
    try:
        spec = TaskSpec.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            key = ".".join(str(x) for x in err["loc"]) or "(top level)"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key (a typo?)"
            elif err["type"] != "missing" and "input" in err and repr(err["input"]) not in msg:
                msg += f" (got {err['input']!r})"
            problems.append(f"{toml_path}: {key}: {msg}")
        raise TaskError("\n".join(problems)) from None
    for name, kind in REQUIRED.items():
        p = folder / name
        if not (p.is_file() if kind == "file" else p.is_dir()):
            raise TaskError(f"{p}: missing {kind} (required in every task folder)")
    spec.path = folder.resolve()
    return spec


def find_tasks(root: str | Path) -> list[Path]:
    """Task folders (those holding a task.toml) directly under `root`."""
    root = Path(root)
    return sorted(p.parent for p in root.glob("*/task.toml"))


def resolve_task(name_or_path: str, tasks_root: Path) -> TaskSpec:
    """A task by folder path, or by name under `tasks_root`."""
    p = Path(name_or_path)
    if not p.exists() and (tasks_root / name_or_path).exists():
        p = tasks_root / name_or_path
    return load_task(p)


def task_scoring(paths: list[str]) -> dict[str, dict]:
    """The fields an older trial.json lacks (kind, score_base, score_reference) by task name,
    for those of `paths` that still hold a valid task: the results index's TaskReader."""
    out = {}
    for path in paths:
        try:
            t = load_task(path)
        except TaskError:
            continue
        out[t.name] = {"kind": t.kind, "score_base": t.scoring.base, "score_reference": t.scoring.reference}
    return out


def task_names(folder: str | Path) -> list[str]:
    """The names of the task folders under `folder` (a malformed one: its folder's name)."""
    names = []
    for path in find_tasks(folder):
        try:
            names.append(load_task(path).name)
        except TaskError:
            names.append(path.name)
    return names
