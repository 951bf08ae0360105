"""Model strings and the model registry: `PROVIDER/NAME` parsed into a ModelSpec, and
models.toml (display names, release dates, prices per million tokens, context windows,
default settings) read into ModelInfo.
No SDK is imported here: tables, plots and price checks need none."""

from __future__ import annotations

import functools
import os
import tomllib
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .providers import PROVIDERS, Provider, find

#: the model registry (display names, release dates, prices); RDBENCH_MODELS points elsewhere
MODELS_TOML = Path(__file__).resolve().parent.parent / "models.toml"
#: the context window assumed for a model models.toml does not know (tokens): small enough for
#: most servers; --context-window says otherwise, and an overflow error shrinks it
DEFAULT_CONTEXT_WINDOW = 32_000


@dataclass
class ModelSpec:
    """A --model string: which provider's API, which model, which server."""

    provider: str
    name: str
    base_url: str | None = None

    @classmethod
    def parse(cls, s: str, base_url: str | None = None) -> "ModelSpec":
        """Raises ValueError saying how to write it."""
        given, sep, name = s.partition("/")
        record = find(given)
        if not sep or not name or record is None:
            raise ValueError(f"model {s!r}: write PROVIDER/NAME with PROVIDER one of {', '.join(PROVIDERS)}")
        if record.needs_base_url:
            base_url = base_url or os.environ.get("RDBENCH_BASE_URL")
            if not base_url:
                raise ValueError(f"model {s!r} needs a server: --base-url http://HOST:PORT/v1 (or RDBENCH_BASE_URL)")
        return cls(record.name, name, base_url)

    @property
    def record(self) -> Provider:
        """The provider registry's record of this model's provider (results/providers.py)."""
        return PROVIDERS[self.provider]

    def missing_key(self) -> str | None:
        """The environment variable this provider's SDK needs and does not have, if any."""
        return self.record.missing_key()

    def info(self) -> "ModelInfo | None":
        """This model's models.toml entry, if it has one."""
        return load_models().get(registry_id(f"{self.provider}/{self.name}"))

    def price(self) -> tuple[float, float] | None:
        """(input, output) dollars per million tokens, or None when models.toml has none."""
        prices = self.prices()
        return None if prices is None else (prices.input, prices.output)

    def prices(self) -> "Prices | None":
        """All four prices (cache reads and writes included), or None when models.toml has none.
        A cache price missing from the entry is the input price times the provider record's
        factor (1 unless its price list says otherwise): never less than the truth."""
        info, record = self.info(), self.record
        if info is None or info.input_usd_per_mtok is None or info.output_usd_per_mtok is None:
            return None
        read, write = (info.input_usd_per_mtok * f for f in (record.cache_read_factor, record.cache_write_factor))
        return Prices(info.input_usd_per_mtok, info.output_usd_per_mtok,
                      read if info.cache_read_usd_per_mtok is None else info.cache_read_usd_per_mtok,
                      write if info.cache_write_usd_per_mtok is None else info.cache_write_usd_per_mtok)

    def context_window(self) -> int:
        """Tokens the model reads at most: models.toml's, else a conservative default."""
        info = self.info()
        return info.context_window if info is not None and info.context_window else DEFAULT_CONTEXT_WINDOW

    def default_args(self) -> dict:
        """models.toml's `args` for this model (reasoning and sampling settings)."""
        info = self.info()
        return dict(info.args) if info is not None else {}


@dataclass(frozen=True)
class Prices:
    """Dollars per million tokens."""

    input: float
    output: float
    cache_read: float
    cache_write: float

    def cost(self, input_tokens: int, output_tokens: int, cache_read: int = 0, cache_write: int = 0) -> float:
        """`input_tokens` counts every prompt token, the cached ones (read or written) included."""
        plain = max(0, input_tokens - cache_read - cache_write)
        return (plain * self.input + cache_read * self.cache_read + cache_write * self.cache_write
                + output_tokens * self.output) / 1e6


class ModelInfo(BaseModel):
    """One [[model]] entry of models.toml."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(description="a provider of results/providers.py")
    model: str = Field(description="the provider's model name, as in --model PROVIDER/MODEL")
    name: str | None = Field(None, description="display name for tables and plots")
    released: date | None = Field(None, description="release date: the x axis of the trend plots")
    input_usd_per_mtok: float | None = Field(None, ge=0, description="dollars per million input tokens")
    output_usd_per_mtok: float | None = Field(None, ge=0, description="dollars per million output tokens")
    cache_read_usd_per_mtok: float | None = Field(None, ge=0, description="dollars per million prompt tokens read "
                                                  "from the provider's cache (default: the input price)")
    cache_write_usd_per_mtok: float | None = Field(None, ge=0, description="dollars per million prompt tokens "
                                                   "written to the cache (default: input price x the provider's factor)")
    context_window: int | None = Field(None, ge=1000, description="tokens the model reads at most (prompt + output)")
    args: dict[str, Any] = Field({}, description="default --model-arg settings: thinking_budget, reasoning_effort, "
                                 "temperature, ...")

    @property
    def id(self) -> str:
        return f"{self.provider}/{self.model}"

    @property
    def display(self) -> str:
        return self.name or self.id


def registry_id(model: str) -> str:
    """The registry entry a --model string uses: a provider may share another's models (its
    record's `models_of`: the Responses API shares OpenAI's)."""
    provider, _, name = model.partition("/")
    record = find(provider)
    return f"{record.models_of or record.name}/{name}" if record is not None else model


def load_models(path: Path | None = None) -> dict[str, ModelInfo]:
    """models.toml by "provider/model", read once per process (again only when the file changes).
    Raises ValueError naming the file and entry when malformed."""
    path = Path(path or os.environ.get("RDBENCH_MODELS") or MODELS_TOML)
    try:
        st = path.stat()
    except OSError as e:
        raise ValueError(f"{path}: {e}") from None
    return dict(_read_models(path, st.st_mtime_ns, st.st_size))


@functools.lru_cache(maxsize=8)
def _read_models(path: Path, _mtime_ns: int, _size: int) -> dict[str, ModelInfo]:
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
