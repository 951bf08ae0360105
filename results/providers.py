"""The provider registry: one record per model provider, the only place that names one.

Model parsing (results.registry.ModelSpec), the built-in agent's SDK adapters (agents/llm.py,
reached through `ModelSpec.record`: agents import nothing from here), the gateway, the installed
agents' checks (by wire family), the CLI's help and the Ray executor's environment (which key
variables travel) all read these records. A new provider is one more `Provider(...)` in
PROVIDERS. Stdlib only: no SDK is imported here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Provider:
    """How rdbench reaches one provider's models (`--model NAME/MODEL`)."""

    name: str
    #: the HTTP API family spoken on the wire: what an installed agent accepts and the gateway
    #: forwards (Messages-style or Responses/Chat-Completions-style endpoints)
    wire: str
    #: how a reply's usage reads (agents.wire.usage_tokens): "messages", "responses" or "chat"
    usage: str
    #: the class of agents/llm.py that speaks it (it imports `sdk`, lazily)
    adapter: str
    sdk: str
    #: credential variables, any one of which serves (the first is the one to ask for);
    #: `key_required` False: the server may take none and the SDK gets `placeholder_key`
    key_vars: tuple[str, ...] = ()
    #: the header each of `key_vars` is sent in ("authorization": as a bearer token)
    key_headers: tuple[str, ...] = ()
    key_required: bool = True
    placeholder_key: str | None = None
    #: the variable that points its SDK elsewhere, and the real API's address
    base_url_var: str | None = None
    default_base_url: str | None = None
    #: a server address is required (--base-url or RDBENCH_BASE_URL): a self-hosted server
    needs_base_url: bool = False
    #: other PROVIDER spellings that mean this one
    aliases: tuple[str, ...] = ()
    #: models.toml entries it shares (its own name when None)
    models_of: str | None = None
    #: cache prices as a factor of the input price, for an entry that lists none
    cache_read_factor: float = 1.0
    cache_write_factor: float = 1.0
    #: one line for the CLI's --model help
    about: str = field(default="", compare=False)

    def missing_key(self) -> str | None:
        """The variable to set when none of `key_vars` is set and one is required."""
        if not self.key_required or any(os.environ.get(v) for v in self.key_vars):
            return None
        return self.key_vars[0] if self.key_vars else None

    def api_key(self) -> str | None:
        """The first key set, else the placeholder (None: let the SDK complain)."""
        return next((os.environ[v] for v in self.key_vars if os.environ.get(v)), None) or self.placeholder_key

    def auth(self) -> dict[str, str]:
        """The header that carries the first key set (the gateway's, to the real API); {} if none."""
        for var, header in zip(self.key_vars, self.key_headers or ("authorization",) * len(self.key_vars)):
            if key := os.environ.get(var):
                return {header: f"Bearer {key}" if header == "authorization" else key}
        return {}

    def base_url(self) -> str:
        """The API's address from the environment, else the real one."""
        return (os.environ.get(self.base_url_var) if self.base_url_var else None) or self.default_base_url or ""


_A = dict(wire="messages", usage="messages", adapter="AnthropicModel", sdk="anthropic",
          key_vars=("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"), key_headers=("x-api-key", "authorization"),
          base_url_var="ANTHROPIC_BASE_URL", default_base_url="https://api.anthropic.com")
_O = dict(wire="completions", sdk="openai", key_vars=("OPENAI_API_KEY",), base_url_var="OPENAI_BASE_URL",
          default_base_url="https://api.openai.com/v1")

PROVIDERS: dict[str, Provider] = {p.name: p for p in (
    # Anthropic's cache writes (5 minutes) cost 1.25x the input price, as its price list says
    Provider("anthropic", **_A, cache_write_factor=1.25, about="anthropic/<model>"),
    Provider("openai", usage="chat", adapter="OpenAIChatModel", **_O, about="openai/<model>"),
    Provider("openai-responses", usage="responses", adapter="OpenAIResponsesModel", **_O, models_of="openai",
             about="openai-responses/<model>"),
    Provider("openai-compatible", usage="chat", adapter="OpenAIChatModel",
             **{**_O, "default_base_url": None}, key_required=False, placeholder_key="EMPTY",
             needs_base_url=True, about="openai-compatible/<model>"),
)}


def find(name: str) -> Provider | None:
    """The record of a PROVIDER spelling (its name or an alias)."""
    return PROVIDERS.get(name) or next((p for p in PROVIDERS.values() if name in p.aliases), None)


def names() -> tuple[str, ...]:
    return tuple(PROVIDERS)


def of_wire(wire: str) -> tuple[str, ...]:
    """The providers whose API speaks `wire`."""
    return tuple(p.name for p in PROVIDERS.values() if p.wire == wire)


def key_vars() -> tuple[str, ...]:
    """Every credential variable of every provider (what a remote worker needs from the driver)."""
    return tuple(dict.fromkeys(v for p in PROVIDERS.values() for v in p.key_vars))


def base_url_vars() -> tuple[str, ...]:
    """Every variable that points a provider's SDK at another server."""
    return tuple(dict.fromkeys(p.base_url_var for p in PROVIDERS.values() if p.base_url_var))


def model_help() -> str:
    """The --model option's help: every provider's form."""
    return ", ".join(p.about or f"{p.name}/<model>" for p in PROVIDERS.values())


def self_hosted() -> tuple[str, ...]:
    """The providers whose server --base-url names."""
    return tuple(p.name for p in PROVIDERS.values() if p.needs_base_url)
