"""Declared capabilities: what a backend class says it can do (freezing, frozen time, images,
GPUs, leftovers) and what an agent class says it needs (hooks, images, wire families) are what
the harness asks, and the declarations match the behaviour. No Docker: the fake backend and
recording subclasses of it (the fast tier)."""

from __future__ import annotations

import threading
from contextlib import contextmanager

import pytest

from agents import AGENTS, AgentResult, BaseAgent
from harness import api
from results.providers import PROVIDERS, of_wire
from results.registry import ModelSpec
from sandbox import BACKENDS, SandboxBase, SandboxConfig, get_backend
from sandbox.fake import FakeSandbox
from tests.tiny import tiny_task

CALLS: list[tuple] = []
_lock = threading.Lock()


def _call(*what) -> None:
    with _lock:
        CALLS.append(what)


class Recorder(FakeSandbox):
    """The fake backend with a `quiet` that records each timing phase it is asked to freeze."""

    @classmethod
    @contextmanager
    def quiet(cls, cpuset, lock_dir):
        _call("quiet", cls.freezes)
        yield

    @classmethod
    def remove_leftovers(cls, own: bool = False, alive: bool = False) -> list[str]:
        _call("leftovers", own)
        return []


class Freezing(Recorder):
    freezes = True


class ImageAgent(BaseAgent):
    name, needs_images = "image-agent", True


class HookedAgent(BaseAgent):
    """Records its hooks: the harness calls them, declared on the base, for every agent."""

    name = "hooked"

    def prepare_sandbox(self, config: SandboxConfig) -> SandboxConfig:
        _call("prepare", config.role)
        return config

    def release(self) -> None:
        _call("release")

    def run(self, sandbox, ctx) -> AgentResult:
        return AgentResult(stop_reason="submitted")


@pytest.fixture
def registered(monkeypatch, tmp_path):
    CALLS.clear()
    for name, cls in (("recorder", "Recorder"), ("freezing", "Freezing")):
        monkeypatch.setitem(BACKENDS, name, (__name__, cls, None))
    for name, cls in (("image-agent", "ImageAgent"), ("hooked", "HookedAgent")):
        monkeypatch.setitem(AGENTS, name, (__name__, cls))
    return tiny_task(tmp_path / "tasks")


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_every_backend_declares_its_capabilities(name):
    try:
        cls = get_backend(name)
    except Exception as e:  # noqa: BLE001 - a backend whose SDK is missing here
        pytest.skip(str(e))
    assert issubclass(cls, SandboxBase)
    for flag in ("isolates", "freezes", "needs_images", "gpus"):
        assert isinstance(getattr(cls, flag), bool), (name, flag)
    # a backend that declares freezing can be asked to (quiet), one that does not has no way to be
    assert cls.freezes == callable(getattr(cls, "quiet", None)), name
    assert isinstance(cls.remove_leftovers(own=True), list)


def test_the_fake_backend_declares_nothing_and_is_never_frozen():
    sb = FakeSandbox(SandboxConfig(image="local"))
    try:
        assert not (FakeSandbox.isolates or FakeSandbox.freezes or FakeSandbox.needs_images or FakeSandbox.gpus)
        assert sb.frozen_s() == 0.0 and FakeSandbox.remove_leftovers() == []
    finally:
        sb.close()


@pytest.mark.parametrize("backend,frozen", [("recorder", False), ("freezing", True)])
def test_a_timing_phase_freezes_only_where_the_backend_declares_it(registered, tmp_path, backend, frozen):
    """The same class with and without `freezes`: its quiet() is called only when declared."""
    (trial,) = api.run([registered], agent="oracle", sandbox=backend, out=tmp_path / "run", db=tmp_path / "i.db",
                       repeats=1, freeze=True)
    assert trial.correct, trial.error
    phases = [c for c in CALLS if c[0] == "quiet"]
    assert bool(phases) == frozen and all(declared for _, declared in phases)
    assert trial.frozen_s == 0.0


def test_a_backend_without_images_gets_no_build_and_no_image_agent(registered):
    assert api.images([registered], "recorder") == {registered.name: "local"}  # nothing built
    hosts = [n for n in BACKENDS if get_backend(n).needs_images]
    with pytest.raises(api.ApiError, match="runs its CLI from an image: use --sandbox " + " or ".join(hosts)):
        api.run([registered], agent="image-agent", sandbox="recorder")


def test_agent_hooks_are_called_through_the_base_class(registered, tmp_path):
    (trial,) = api.run([registered], agent="hooked", sandbox="recorder", out=tmp_path / "run",
                       db=tmp_path / "i.db", repeats=1)
    assert trial.error is None, trial.error
    assert [c for c in CALLS if c[0] in ("prepare", "release")] == [("prepare", "agent"), ("release",)]


def test_leftovers_are_removed_where_the_command_starts_sandboxes(registered):
    from harness.cli_support import containers

    with containers("recorder"):
        pass
    with containers(None):  # a cluster's nodes run the sandboxes: nothing to remove here
        pass
    assert [c for c in CALLS if c[0] == "leftovers"] == [("leftovers", False)]


def test_an_agent_accepts_the_wire_families_it_declares(monkeypatch):
    wire = next(iter(PROVIDERS.values())).wire
    other = next(p for p in PROVIDERS.values() if p.wire != wire)

    class OneWire(BaseAgent):
        name, wires = "one-wire", (wire,)

    for p in of_wire(wire):
        assert OneWire().accepts(ModelSpec.parse(f"{p}/m", base_url="http://127.0.0.1:9/v1")) is None
    assert "wire family" in OneWire().accepts(ModelSpec.parse(f"{other.name}/m", base_url="http://127.0.0.1:9/v1"))
    assert BaseAgent.wires == () and api.agent_spec("oracle", f"{other.name}/m", base_url="http://x/v1").model
