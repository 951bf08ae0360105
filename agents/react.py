"""The LLM agent: a system prompt plus the task's instruction, tools executed in the sandbox.

The loop runs on the host (model calls leave from here; API keys never enter the sandbox).
Every model call, tool call and tool result is appended to transcript.jsonl as it happens.
Limits stop the agent by raising a StopAgent; whatever /workspace holds then is verified.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from typing import Callable

from sandbox import Sandbox, SandboxError

from . import AgentContext, AgentResult, BaseAgent, ContextOverflow, Model, ModelError, ModelTimeout, Reply
from .budget import Budget, SandboxLost, StopAgent, TimeLimit, Transcript
from .context import ContextManager, max_output_tokens
from .llm import make_model
from .tools import DELEGATE, REPORT, SUBMIT, TOOLS, ToolError, check_args, run_tool

SYSTEM = """You are an expert engineer working alone in a sandbox (Linux, no network). The task's
files are in /workspace; what /workspace holds when you call `submit` is graded by a hidden
verifier. Work in small verified steps: run code, measure, read errors. Call `submit` once,
when you are done."""

SUB_SYSTEM = """You are a sub-agent: another agent gave you one sub-task. You share its sandbox (/workspace).
Do the sub-task, then call `report` with what you did and found."""


class FrozenInTools:
    """The seconds a sandbox spent frozen (another trial timing on its cores) while a tool ran
    in it: the time the agent lost. Frozen time while the loop waited on its model cost the
    agent nothing (the model answered all the same), so it is not credited. Called like
    `frozen_s`; tools run inside `with frozen.tool():` (concurrent ones counted once)."""

    def __init__(self, frozen_s: Callable[[], float]):
        self._frozen_s, self._lock = frozen_s, threading.Lock()
        self._busy, self._base, self._total = 0, 0.0, 0.0

    @contextlib.contextmanager
    def tool(self):
        with self._lock:
            if self._busy == 0:
                self._base = self._frozen_s()
            self._busy += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1
                if self._busy == 0:
                    self._total += max(0.0, self._frozen_s() - self._base)

    def __call__(self) -> float:
        with self._lock:
            return self._total + (max(0.0, self._frozen_s() - self._base) if self._busy else 0.0)


@dataclass
class SubAgentPolicy:
    max_depth: int = 1      # sub-agents of sub-agents: 0 = no delegation at all
    max_count: int = 4      # sub-agents per trial
    share: float = 0.5      # of the remaining budget, for each sub-agent


class ReactAgent(BaseAgent):
    """The default agent whenever a model is given."""

    name = "react"
    wires = None  # any model an adapter of agents/llm.py speaks

    def __init__(self, max_retries: int | None = None, policy: SubAgentPolicy | None = None,
                 models: Callable[..., Model] = make_model):
        #: makes each conversation: make_model(spec, settings=, max_retries=, max_tokens=); a
        #: scripted model (agents/scripted.py) in the tests that need no model API
        self.models = models
        # retries of a failed request (backoff, retry-after honoured), all within the wall time
        self.max_retries = max_retries if max_retries is not None else int(os.environ.get("RDBENCH_MODEL_RETRIES", "6"))
        self.policy = policy or SubAgentPolicy()

    def run(self, sandbox: Sandbox, ctx: AgentContext) -> AgentResult:
        spec = ctx.agent.model_spec  # parsed once per run, where the run was built
        limits = ctx.task.agent
        self._frozen = FrozenInTools(sandbox.frozen_s) if sandbox.freezes else None  # declared by its backend
        budget = Budget(limits.max_turns, limits.max_input_tokens, limits.max_output_tokens, limits.max_cost_usd,
                        limits.timeout_s, spec.prices(), frozen=self._frozen)
        self._spec, self._sandbox, self._spawned = spec, sandbox, 0
        self._settings = ctx.agent.model_settings()
        self._window = ctx.agent.context_window or spec.context_window()
        self._counts = {"elisions": 0, "compactions": 0}
        self.policy = SubAgentPolicy(limits.max_subagent_depth, limits.max_subagents, self.policy.share)
        self._transcript = Transcript(ctx.trial_dir / "transcript.jsonl")
        try:
            stop_reason, _ = self._loop("main", SYSTEM, ctx.task.instruction, budget, depth=0)
        except StopAgent as e:
            stop_reason = e.reason
            self._transcript.log(agent="main", type="stop", reason=e.reason, detail=str(e))
        result = AgentResult(stop_reason=stop_reason, usage=budget.usage(**self._counts))
        self._transcript.log(agent="main", type="end", stop_reason=result.stop_reason, **result.usage.model_dump())
        return result

    def _loop(self, who: str, system: str, user: str, budget: Budget, depth: int) -> tuple[str, str]:
        """One agent's conversation until it submits (or reports). Returns (stop_reason, final text)."""
        transcript = self._transcript

        def log(**event):
            transcript.log(agent=who, **event)

        finish = "submit" if depth == 0 else "report"
        tools = TOOLS + [SUBMIT if depth == 0 else REPORT]
        if depth < self.policy.max_depth:
            tools.append(DELEGATE)
        context = ContextManager(self._window, log, self._counts)
        model = self.models(self._spec, settings=self._settings, max_retries=self.max_retries,
                           max_tokens=self._settings.get("max_tokens", max_output_tokens(self._window)))
        model.start(system, user)
        log(type="start", model=f"{self._spec.provider}/{self._spec.name}", system=system, user=user,
            settings=self._settings, context_window=self._window)
        while True:
            budget.before_call()
            reply = self._step(model, tools, budget, context)
            log(type="model_call", turn=budget.turns + 1, text=reply.text,
                tool_calls=[{"id": c.id, "name": c.name, "args": c.args} for c in reply.tool_calls],
                input_tokens=reply.input_tokens, output_tokens=reply.output_tokens,
                cache_read_tokens=reply.cache_read_tokens, cache_write_tokens=reply.cache_write_tokens,
                latency_s=round(reply.latency_s, 3))
            budget.charge(reply)
            if not reply.tool_calls:
                model.add_user(f"Use the tools to work on the task; call {finish} when you are done.")
                continue
            results, final = [], None
            for call in reply.tool_calls:
                try:
                    if call.name == finish:
                        args = check_args(call.name, call.args)
                        final, out = str(args.get("summary") or args.get("report") or ""), "ok"
                    elif call.name == "delegate" and depth < self.policy.max_depth:
                        out = self._delegate(who, check_args(call.name, call.args), budget, depth)
                    elif call.name in ("submit", "report", "delegate"):
                        raise ToolError(f"{call.name!r} is not a tool here")
                    else:
                        with self._frozen.tool() if self._frozen is not None else contextlib.nullcontext():
                            out = run_tool(self._sandbox, call.name, call.args, time_left=budget.time_left())
                    err = False
                except ToolError as e:
                    out, err = str(e), True
                except SandboxError as e:  # SandboxFileNotFound is a ToolError by now
                    log(type="tool_result", id=call.id, name=call.name, args=call.args, output=str(e), is_error=True)
                    raise SandboxLost(f"{call.name} lost the sandbox: {e}") from e
                if call.name != finish or err:
                    log(type="tool_result", id=call.id, name=call.name, args=call.args, output=out, is_error=err)
                results.append((call.id, out, err))
            model.add_results(results)
            if final is not None:
                return ("submitted" if depth == 0 else "reported"), final

    def _step(self, model, tools, budget: Budget, context: ContextManager) -> Reply:
        """One model call within the wall time, the conversation kept under the context window."""
        context.before_step(model, tools, budget)
        for attempt in range(4):
            try:
                return model.step(tools, timeout=budget.time_left())
            except ModelTimeout as e:
                raise TimeLimit(f"agent wall time, waiting for the model: {e}") from e
            except ContextOverflow as e:
                if attempt == 3:
                    raise ModelError(f"still too long for the model after {attempt} compactions: {e}") from e
                context.overflowed(model, tools, budget, e)
                budget.before_call()

    def _delegate(self, who: str, args: dict, budget: Budget, depth: int) -> str:
        if self._spawned >= self.policy.max_count:
            raise ToolError(f"no more sub-agents: the limit is {self.policy.max_count} per trial")
        self._spawned += 1
        sub = f"{who}.sub{self._spawned}"
        child = budget.child(self.policy.share)
        try:
            reason, report = self._loop(sub, SUB_SYSTEM, args["task"], child, depth + 1)
        except SandboxLost:
            raise
        except StopAgent as e:
            budget.before_call()  # the whole agent's limits stop it here; only the sub-agent's share is left
            self._transcript.log(agent=sub, type="end", stop_reason=e.reason, turns=child.turns)
            return f"the sub-agent stopped before reporting: {e.reason} ({e})"
        self._transcript.log(agent=sub, type="end", stop_reason=reason, turns=child.turns)
        return report or "(empty report)"
