"""The agent's limits, without a model or a sandbox: the wall-time clock starts at the first
model call, so a slow host (SDK import, client set-up) cannot spend the agent's time."""

from __future__ import annotations

import time

import pytest

from agents.budget import Budget, TimeLimit, TurnLimit


def test_the_first_call_always_happens_and_the_clock_starts_there():
    budget = Budget(max_turns=5, max_input_tokens=None, max_output_tokens=None, max_cost_usd=None,
                    timeout_s=0.01, price=None)
    time.sleep(0.05)  # set-up slower than the whole budget
    budget.before_call()  # the first call is not refused
    time.sleep(0.05)
    with pytest.raises(TimeLimit):
        budget.before_call()


def test_a_sub_agent_shares_the_deadline_and_counts_turns_upward():
    budget = Budget(max_turns=2, max_input_tokens=None, max_output_tokens=None, max_cost_usd=None,
                    timeout_s=3600, price=None)
    budget.before_call()
    child = budget.child(0.5)
    assert child.deadline == budget.deadline and child.max_turns == 1
    budget.turns = 2
    with pytest.raises(TurnLimit):
        child.before_call()
