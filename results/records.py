"""The records a run leaves, and their readers: below everything that uses them (this
module imports nothing of harness/ or agents/, so the index, the report and a remote
node read them without the orchestrator).

    runs/<run-id>/run.json                          RunConfig (its AgentSpec inline)
    runs/<run-id>/trials/<task>__<agent>__<n>/      trial.json: TrialResult; verifier.json: VerifierResult
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer, model_validator

from .registry import ModelSpec


class VerifierResult(BaseModel):
    """The verifier contract: one JSON object, validated before anything is recorded."""

    model_config = ConfigDict(extra="ignore")

    correct: bool
    metric: str = Field(description='"speedup" or a score name')
    value: float | None = Field(None, description="speedup (baseline/candidate) or raw score; None when incorrect")
    ci: list[float] | None = Field(None, min_length=2, max_length=2, description="95 % confidence interval of value")
    baseline_s: list[float] = []
    candidate_s: list[float] = []
    aa_noise: float | None = Field(None, description="relative difference between two halves of the baseline's timings")
    flagged: str | None = Field(None, description="why the value needs a human's review (implausible speedup)")
    details: dict[str, Any] = {}

    @model_validator(mode="after")
    def _consistent(self):
        if self.correct and self.value is None and not self.details.get("unavailable"):
            raise ValueError("a correct result needs a value (or details.unavailable, saying why there is none)")
        if self.value is not None and not self.value >= 0:
            raise ValueError(f"value must be a non-negative number, got {self.value}")
        return self


ErrorClass = Literal["agent", "infra"]


class Usage(BaseModel):
    """What an agent's model calls used: agents.AgentResult carries one, trial.json nests it."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = Field(0.0, description="dollars, from the price table; None: unknown price")
    cache_read_tokens: int = Field(0, description="input tokens read from the provider's prompt cache")
    cache_write_tokens: int = Field(0, description="input tokens written to the provider's prompt cache")
    uncached_cost_usd: float | None = Field(None, description="what the tokens would have cost with no prompt cache")
    elisions: int = Field(0, description="times old tool outputs were elided to fit the context window")
    compactions: int = Field(0, description="times the conversation was summarised to fit the context window")


#: the keys an older, flat trial.json held at its top level: of the verdict, and of the usage
_FLAT_VERDICT = ("metric", "value", "ci", "baseline_s", "candidate_s", "aa_noise", "flagged")
_FLAT_USAGE = tuple(Usage.model_fields)


class TrialResult(BaseModel):
    """trial.json: one trial, the one record of it from the verifier's verdict to the index.

    The verifier's verdict is nested whole (`verification`, as in verifier.json) and so is the
    agent's model use (`usage`); what a reader wants of them (`value`, `ci`, ...) is read
    through, never copied. An infrastructure error is never a score: `correct` and `value` are
    None and the trial is re-run by --resume. An agent error is a real (failed) outcome."""

    task: str
    agent: str
    model: str | None = None
    model_settings: dict[str, Any] = Field({}, description="the model's settings for this trial "
                                           "(models.toml's args, then --model-arg): part of its row's identity")
    trial: int
    run_id: str
    kind: Literal["speedup", "score"] | None = Field(None, description="the task's kind (None: an older trial.json)")
    score_base: float | None = Field(None, description="the task's scoring.base, for normalised scores")
    score_reference: float | None = Field(None, description="the task's scoring.reference")
    verification: VerifierResult | None = Field(None, description="the verifier's verdict (verifier.json); None "
                                                "when the trial ended before it was verified")
    usage: Usage = Usage()
    phases: dict[str, float] = Field({}, description="seconds per phase: agent_sandbox, agent, submission, verify, teardown")
    verify_cpuset: str | None = Field(None, description="cores held exclusively while verifying")
    verify_window: list[float] | None = Field(None, description="[start, end] of verification, Unix time")
    frozen_s: float = Field(0.0, description="seconds the agent's sandbox was frozen while other trials timed on "
                                             "its cores (not counted against the agent's wall time)")
    error_class: ErrorClass | None = None
    error: str | None = None
    stop_reason: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    node: dict[str, str] | None = Field(None, description="where it ran on a cluster: {id: the Ray node id, "
                                        "host: its host name}; None for a local run")
    details: dict[str, Any] = Field({}, description="the trial's own notes (the GPUs it verified on); the "
                                    "verifier's are verification.details")

    @model_validator(mode="before")
    @classmethod
    def _read_flat(cls, data):
        """An older trial.json: the verdict's and the usage's keys at its top level."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "usage" not in data:
            data["usage"] = {k: data.pop(k) for k in _FLAT_USAGE if k in data}
        if "verification" not in data:
            flat = {k: data.pop(k) for k in _FLAT_VERDICT if k in data}
            correct = data.pop("correct", None)
            if correct is not None:  # it was verified, or failed before (then correct is False)
                details = data.pop("details", {}) or {}
                data["details"] = {k: details.pop(k) for k in ("verify_gpus",) if k in details}
                flat["metric"] = flat.get("metric") or data.get("kind") or "speedup"
                data["verification"] = {"correct": correct, **flat, "details": details}
        return data

    # what readers want of the verdict, read through (never stored twice)
    @property
    def correct(self) -> bool | None:
        """None for an infrastructure error (no outcome), else whether the verifier passed it."""
        if self.error_class == "infra":
            return None
        return self.verification is not None and self.verification.correct

    @property
    def value(self) -> float | None:
        """The speedup or score of a correct trial; None otherwise."""
        return self.verification.value if self.correct else None

    @property
    def metric(self) -> str | None:
        return self.verification.metric if self.verification is not None else None

    @property
    def ci(self) -> list[float] | None:
        return self.verification.ci if self.correct else None

    @property
    def baseline_s(self) -> list[float]:
        return self.verification.baseline_s if self.verification is not None else []

    @property
    def candidate_s(self) -> list[float]:
        return self.verification.candidate_s if self.verification is not None else []

    @property
    def aa_noise(self) -> float | None:
        return self.verification.aa_noise if self.verification is not None else None

    @property
    def flagged(self) -> str | None:
        return self.verification.flagged if self.verification is not None else None

    @property
    def verifier_details(self) -> dict[str, Any]:
        """The verifier's details (failure, unavailable, ...); {} when unverified."""
        return self.verification.details if self.verification is not None else {}

    @property
    def verdict(self) -> str:
        if self.error_class == "infra":
            return "infra error"
        if self.correct:
            return "correct"
        return "failed"

    @property
    def trial_id(self) -> str:
        return trial_id(self.task, self.agent, self.trial)


class LimitOverrides(BaseModel):
    """Overrides of the tasks' [agent] limits (--max-turns and the like); None keeps the task's."""

    model_config = ConfigDict(extra="forbid")

    max_turns: int | None = Field(None, ge=1, description="model calls before the agent is stopped")
    max_cost_usd: float | None = Field(None, ge=0, description="dollars, from the price table")
    timeout_s: float | None = Field(None, ge=1, description="wall time of the agent phase, seconds")

    def given(self) -> dict[str, float]:
        """The overrides that are set, as task.toml's [agent] keys."""
        return self.model_dump(exclude_none=True)


class AgentSpec(BaseModel):
    """What attempts the tasks: validated once where the CLI builds it, then carried whole
    through the run, each trial and the agent."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="oracle | nop | replay | react | claude-code | codex (agents.AGENTS)")
    model: str | None = Field(None, description="PROVIDER/NAME, for agents that call a model")
    base_url: str | None = Field(None, description="the model server (OpenAI-compatible); never a secret")
    replay: str | None = Field(None, description="a transcript.jsonl whose tool calls the replay agent re-runs")
    limits: LimitOverrides = LimitOverrides()
    model_args: dict[str, Any] = Field({}, description="--model-arg KEY=VALUE settings (thinking_budget, "
                                       "reasoning_effort, temperature, ...), over models.toml's `args`")
    context_window: int | None = Field(None, ge=1000, description="--context-window: tokens, over models.toml's")
    version: str | None = Field(None, description="an installed agent's CLI version (claude-code, codex): pinned, "
                                "as in its image")

    def model_settings(self) -> dict[str, Any]:
        """The model's settings for this run: models.toml's defaults, then --model-arg's."""
        spec = self.model_spec
        return {**(spec.default_args() if spec is not None else {}), **self.model_args}

    @cached_property
    def model_spec(self) -> ModelSpec | None:
        """The parsed model string (parsed once per run). Raises ValueError when malformed."""
        return None if self.model is None else ModelSpec.parse(self.model, self.base_url)


#: run.json keeps the agent's fields at its top level, as before AgentSpec existed
_AGENT_KEYS = ("model", "base_url", "replay", "limits", "model_args", "context_window", "version")


class RunConfig(BaseModel):
    """run.json: what a run was asked to do, enough to resume it."""

    run_id: str
    tasks: list[str]
    agent: AgentSpec
    trials: int = 1
    concurrency: int = 1
    backend: str = "docker"
    #: timed runs per program in the verifier (None: each task's own number)
    repeats: int | None = None
    #: where trials run: local (this machine) or ray (a cluster; concurrency 0: as many as it fits)
    executor: str = "local"
    #: the Ray cluster's address (None: RAY_ADDRESS, else a local cluster)
    ray_address: str | None = None
    #: freeze agent sandboxes on the cores of a verifier while it times (--no-freeze: off)
    freeze: bool = True
    #: task -> the provider-side tools (web search, ...) its [agent] provider_tools lets an
    #: installed agent's gateway forward; a task not named here allows none
    provider_tools: dict[str, list[str]] = {}
    created_at: str = ""

    @model_validator(mode="before")
    @classmethod
    def _read_flat(cls, data):
        if isinstance(data, dict) and isinstance(data.get("agent"), str):
            data = dict(data)
            data["agent"] = {"name": data.pop("agent"), **{k: data.pop(k) for k in _AGENT_KEYS if k in data}}
        return data

    @model_serializer(mode="wrap")
    def _write_flat(self, handler):
        out = handler(self)
        agent = out.pop("agent")
        limits = agent.pop("limits") or {}
        return {**out, "agent": agent.pop("name"), **agent,
                "limits": {k: v for k, v in limits.items() if v is not None}}


class RunError(Exception):
    """A run that cannot start or resume (bad folder, bad run.json)."""


def trial_id(task: str, agent: str, index: int) -> str:
    return f"{task}__{agent}__{index}"


def trial_dir(run_dir: Path, task: str, agent: str, index: int) -> Path:
    return run_dir / "trials" / trial_id(task, agent, index)


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def load_trial(path: Path) -> TrialResult | None:
    """A trial folder's trial.json; None when it has none yet (or a torn one)."""
    try:
        return TrialResult.model_validate_json((path / "trial.json").read_text())
    except (OSError, ValidationError):
        return None


def finished(t: TrialResult | None) -> bool:
    return t is not None and t.error_class != "infra"


def load_run(run_dir: Path) -> RunConfig:
    """Raises RunError for a folder without a valid run.json."""
    try:
        return RunConfig.model_validate_json((run_dir / "run.json").read_text())
    except OSError:
        raise RunError(f"{run_dir}: not a run folder (no run.json)") from None
    except ValidationError as e:
        raise RunError(f"{run_dir / 'run.json'}: invalid: {e}") from None
