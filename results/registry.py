"""Model strings and the model registry: `PROVIDER/NAME` parsed into a ModelSpec, and
models.toml (display names, release dates, prices per million tokens) read into ModelInfo.
No SDK is imported here: tables, plots and price checks need none."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

PROVIDERS = ("anthropic", "openai", "openai-responses", "openai-compatible")
#: the model registry (display names, release dates, prices); RDBENCH_MODELS points elsewhere
MODELS_TOML = Path(__file__).resolve().parent.parent / "models.toml"


@dataclass
class ModelSpec:
    """A --model string: which provider's API, which model, which server."""

    provider: str
    name: str
    base_url: str | None = None

    @classmethod
    def parse(cls, s: str, base_url: str | None = None) -> "ModelSpec":
        """Raises ValueError saying how to write it."""
        provider, sep, name = s.partition("/")
        if not sep or not name or provider not in PROVIDERS:
            raise ValueError(f"model {s!r}: write PROVIDER/NAME with PROVIDER one of {', '.join(PROVIDERS)}")
        if provider == "openai-compatible":
            base_url = base_url or os.environ.get("RDBENCH_BASE_URL")
            if not base_url:
                raise ValueError(f"model {s!r} needs a server: --base-url http://HOST:PORT/v1 (or RDBENCH_BASE_URL)")
        return cls(provider, name, base_url)

    def missing_key(self) -> str | None:
        """The environment variable this provider's SDK needs and does not have, if any."""
        if self.provider == "anthropic":
            ok = os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN")
            return None if ok else "ANTHROPIC_API_KEY"
        if self.provider in ("openai", "openai-responses"):
            return None if os.environ.get("OPENAI_API_KEY") else "OPENAI_API_KEY"
        return None  # an OpenAI-compatible server may take no key

    def price(self) -> tuple[float, float] | None:
        """(input, output) dollars per million tokens, or None when models.toml has none."""
        info = load_models().get(registry_id(f"{self.provider}/{self.name}"))
        if info is None or info.input_usd_per_mtok is None or info.output_usd_per_mtok is None:
            return None
        return info.input_usd_per_mtok, info.output_usd_per_mtok


class ModelInfo(BaseModel):
    """One [[model]] entry of models.toml."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(description="anthropic | openai | openai-compatible | ...")
    model: str = Field(description="the provider's model name, as in --model PROVIDER/MODEL")
    name: str | None = Field(None, description="display name for tables and plots")
    released: date | None = Field(None, description="release date: the x axis of the trend plots")
    input_usd_per_mtok: float | None = Field(None, ge=0, description="dollars per million input tokens")
    output_usd_per_mtok: float | None = Field(None, ge=0, description="dollars per million output tokens")

    @property
    def id(self) -> str:
        return f"{self.provider}/{self.model}"

    @property
    def display(self) -> str:
        return self.name or self.id


def registry_id(model: str) -> str:
    """The registry entry a --model string uses: the Responses API shares OpenAI's models."""
    provider, _, name = model.partition("/")
    return f"openai/{name}" if provider == "openai-responses" else model


def load_models(path: Path | None = None) -> dict[str, ModelInfo]:
    """models.toml by "provider/model". Raises ValueError naming the file and entry when malformed."""
    path = path or Path(os.environ.get("RDBENCH_MODELS") or MODELS_TOML)
    try:
        entries = tomllib.loads(path.read_text()).get("model", [])
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"{path}: {e}") from None
    out = {}
    for i, entry in enumerate(entries):
        try:
            info = ModelInfo.model_validate(entry)
        except ValidationError as e:
            raise ValueError(f"{path}: model entry {i + 1}: {e}") from None
        out[info.id] = info
    return out
