"""`rdbench verify`: the secret seed is recorded after grading, and can be given back to
reproduce a verdict."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TASKS, rdbench

pytestmark = pytest.mark.docker  # every test here needs the Docker engine


def verify(*extra: str) -> dict:
    r = rdbench("verify", "tasks/py-primes", "--submission", str(TASKS / "py-primes" / "solution"), *extra)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def test_secret_seed_is_recorded_and_reusable(base_image):
    fresh = [verify("--repeats", "1")["details"]["secret_seed"] for _ in range(2)]
    assert all(isinstance(s, int) for s in fresh) and fresh[0] != fresh[1]
    assert verify("--repeats", "1", "--seed", "12345")["details"]["secret_seed"] == 12345
