"""The records a trial leaves: the verifier's verdict and the trial's result."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


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


class TrialResult(BaseModel):
    """trial.json. An infrastructure error is never a score: value stays None and the
    trial is re-run by --resume. An agent error is a real (failed) outcome."""

    task: str
    agent: str
    model: str | None = None
    trial: int
    run_id: str
    correct: bool | None = None
    metric: str | None = None
    value: float | None = None
    ci: list[float] | None = None
    baseline_s: list[float] = []
    candidate_s: list[float] = []
    aa_noise: float | None = None
    flagged: str | None = None
    phases: dict[str, float] = Field({}, description="seconds per phase: image, agent_sandbox, agent, submission, verify, teardown")
    verify_cpuset: str | None = Field(None, description="cores held exclusively while verifying")
    verify_window: list[float] | None = Field(None, description="[start, end] of verification, Unix time")
    error_class: ErrorClass | None = None
    error: str | None = None
    stop_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0
    started_at: str | None = None
    finished_at: str | None = None
    details: dict[str, Any] = {}

    @property
    def verdict(self) -> str:
        if self.error_class == "infra":
            return "infra error"
        if self.correct:
            return "correct"
        return "failed"
