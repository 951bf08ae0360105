"""Keeping a conversation under the model's context window, for hours of work.

Before each model call the request's size is estimated (characters per token learnt from the
provider's own counts). Past ELIDE_AT of the window's input share, the long tool outputs older
than the last KEEP_TURNS turns are replaced by a note that says so; past COMPACT_AT, the model
summarises its work so far and the conversation restarts from the task's instruction, that
summary and the last KEEP_AFTER_COMPACT turns, verbatim. A provider's context-overflow error
(the estimate was wrong, or the window is smaller than we were told) shrinks the window to the
one the error names and compacts before the call is retried. Every elision and compaction is
an event in transcript.jsonl.
"""

from __future__ import annotations

from typing import Callable

from . import ContextOverflow, Model, ModelError, ToolSpec
from .budget import Budget

ELIDE_AT = 0.7
COMPACT_AT = 0.85
KEEP_TURNS = 4
KEEP_AFTER_COMPACT = 2
#: tokens kept free for what the estimate cannot see (message framing, tool-call ids)
MARGIN = 1000
SUMMARY_PROMPT = """Your conversation is about to be compacted to fit your context window: everything but the
task, this summary and your last turns will be dropped. Write the summary you will continue from: what you
tried, what you measured (with the numbers), what worked and what did not, the current state of the files in
/workspace, and what you planned to do next. Write only the summary; do not call tools."""
NO_SUMMARY = "(no summary: the conversation was too long to summarise; check the state of /workspace)"


def max_output_tokens(window: int) -> int:
    """The reply's token cap for a window: 8192, or a quarter of a small window."""
    return max(256, min(8192, window // 4))


class ContextManager:
    """One per conversation (main agent or sub-agent)."""

    def __init__(self, window: int, log: Callable[..., None], counts: dict[str, int]):
        self.window = window
        self.log = log
        self.counts = counts  # shared by the trial's conversations: {"elisions": n, "compactions": n}

    @property
    def limit(self) -> int:
        """Tokens a request may take."""
        return max(1000, self.window - max_output_tokens(self.window) - MARGIN)

    def before_step(self, model: Model, tools: list[ToolSpec], budget: Budget) -> None:
        size = model.size()
        if size > ELIDE_AT * self.limit:
            self._elide(model, KEEP_TURNS, size)
        if model.size() > COMPACT_AT * self.limit:
            self.compact(model, tools, budget, reason=f"{model.size()} tokens estimated, limit {self.limit}")

    def overflowed(self, model: Model, tools: list[ToolSpec], budget: Budget, e: ContextOverflow) -> None:
        """The provider refused a request as too long: believe it, and compact."""
        size = model.size()
        new = e.limit if e.limit and e.limit < self.window else int(min(self.window, size) * 0.8)
        self.log(type="context_overflow", error=str(e)[:500], estimated_tokens=size, window=self.window,
                 new_window=new)
        self.window = max(2000, new)
        self.compact(model, tools, budget, reason="the provider's context-overflow error")

    def _elide(self, model: Model, keep: int, size: int) -> int:
        n = model.elide(keep)
        if n:
            self.counts["elisions"] = self.counts.get("elisions", 0) + 1
            self.log(type="elision", outputs=n, kept_turns=keep, tokens_before=size, tokens_after=model.size())
        return n

    def compact(self, model: Model, tools: list[ToolSpec], budget: Budget, reason: str) -> None:
        """Summarise and restart the conversation. The summary call counts in the budget."""
        before = model.size()
        summary = None
        for attempt in range(2):
            if attempt:  # the summary request itself was too long: elide everything, then try once more
                self._elide(model, 0, model.size())
            try:
                budget.before_call(turn=False)
                reply = model.summarise(tools, SUMMARY_PROMPT, timeout=budget.time_left())
            except ContextOverflow:
                continue
            budget.charge(reply, turn=False)
            self.log(type="model_call", purpose="summary", text=reply.text, input_tokens=reply.input_tokens,
                     output_tokens=reply.output_tokens, cache_read_tokens=reply.cache_read_tokens,
                     cache_write_tokens=reply.cache_write_tokens, latency_s=round(reply.latency_s, 3))
            summary = reply.text.strip() or None
            break
        model.compact(summary or NO_SUMMARY, KEEP_AFTER_COMPACT)
        if model.size() > COMPACT_AT * self.limit:  # the kept turns alone are too long
            model.elide(0)
        self.counts["compactions"] = self.counts.get("compactions", 0) + 1
        self.log(type="compaction", reason=reason, tokens_before=before, tokens_after=model.size(),
                 kept_turns=KEEP_AFTER_COMPACT, summary=summary or NO_SUMMARY)
        if model.size() > self.limit:
            raise ModelError(f"the conversation cannot be made to fit a {self.window}-token window "
                             f"({model.size()} tokens after compaction)")
