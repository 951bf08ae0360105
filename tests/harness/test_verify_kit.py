"""The verify kit's statistics and timing order (pure functions; no sandbox)."""

from __future__ import annotations

import random

import pytest

from tests.kits import KITS, kit_imports, load_kit

kit = load_kit("verify_kit")  # an in-sandbox kit, not a host module


def test_median():
    assert kit.median([3, 1, 2]) == 2
    assert kit.median([4, 1, 2, 3]) == 2.5
    with pytest.raises(ValueError):
        kit.median([])


def test_bootstrap_ci_brackets_the_ratio_and_narrows_with_less_noise():
    rng = random.Random(0)
    noisy_b = [1.0 + rng.gauss(0, 0.1) for _ in range(9)]
    noisy_c = [0.1 + rng.gauss(0, 0.01) for _ in range(9)]
    lo, hi = kit.bootstrap_ratio_ci(noisy_b, noisy_c)
    ratio = kit.median(noisy_b) / kit.median(noisy_c)
    assert lo <= ratio <= hi
    lo2, hi2 = kit.bootstrap_ratio_ci([1.0, 1.001, 0.999] * 3, [0.1, 0.1001, 0.0999] * 3)
    assert hi2 - lo2 < hi - lo


def test_aa_noise():
    assert kit.aa_noise([1.0, 1.0, 1.0, 1.0]) == 0.0
    assert kit.aa_noise([1.0, 1.1, 1.0, 1.1]) == pytest.approx(1 - 1 / 1.1)
    assert kit.aa_noise([1.0]) is None


def test_interleaved_randomises_order_and_skips_warmup():
    calls = []

    def prog(name, secs):
        def f():
            calls.append(name)
            return secs, True, ""
        return f

    b, c, ok, _ = kit.interleaved(prog("b", 2.0), prog("c", 1.0), repeats=20, warmup=2, seed=1)
    assert ok and len(b) == len(c) == 20 and set(b) == {2.0}
    firsts = calls[0::2]
    assert 0 < firsts.count("b") < len(firsts)  # neither always goes first


def test_interleaved_stops_at_first_wrong_candidate():
    b, c, ok, note = kit.interleaved(lambda: (1.0, True, ""), lambda: (0.1, False, "wrong"), repeats=5, seed=0)
    assert not ok and note == "wrong" and c == []


def test_interleaved_broken_baseline_is_a_verifier_fault():
    with pytest.raises(RuntimeError, match="baseline failed"):
        kit.interleaved(lambda: (1.0, False, "crash"), lambda: (0.1, True, ""), repeats=3, seed=0)


def test_speedup_verdict_flags_implausible_values():
    v = kit.speedup_verdict([1.0] * 5, [0.001] * 5, True, plausible_max=100)
    assert v["value"] == pytest.approx(1000) and "plausibility" in v["flagged"]
    v = kit.speedup_verdict([1.0] * 5, [0.5] * 5, True, plausible_max=100)
    assert "flagged" not in v and v["ci"] == [pytest.approx(2.0), pytest.approx(2.0)]
    v = kit.speedup_verdict([1.0], [], False, "wrong")
    assert v["correct"] is False and v["value"] is None and v["details"]["failure"] == "wrong"


def test_interleaved_baseline_first_fixes_only_the_first_pair():
    calls = []

    def prog(name):
        def f():
            calls.append(name)
            return 1.0, True, ""
        return f

    kit.interleaved(prog("b"), prog("c"), repeats=30, warmup=0, seed=3, baseline_first=True)
    assert calls[0] == "b"
    assert "c" in calls[2::2]  # later pairs are still shuffled


# ---- the parameters file and fresh inputs for every timed pair ----

import json  # noqa: E402

contract = load_kit("contract")  # the in-sandbox copy of harness/kits/contract.py


@pytest.fixture
def params(tmp_path, monkeypatch):
    """Point the kit at a parameters file of our own; returns a function that (re)writes it."""
    path = tmp_path / contract.PARAMS_FILE

    def write(**changes):
        values = {"task": "t", "kind": "speedup", "submission": "/s", "baseline": "/b", "repeats": 4,
                  "timeout_s": 300, "fresh_inputs": True, "plausible_max": 50.0, "tolerance": 0.3,
                  "reference": 5.0, "base": 1.0, "task_params": {"n": 7}}
        values.update(changes)
        path.write_text(contract.write_params(values))
        kit._state.pop("params", None)
        kit._state.pop("fresh_inputs", None)

    monkeypatch.setenv(contract.ENV_PARAMS, str(path))
    monkeypatch.setenv(contract.ENV_SEED, "12345")
    write()
    yield write
    kit._state.pop("params", None)
    kit._state.pop("fresh_inputs", None)


def recorder(seen, who):
    def run(inputs):
        seen.append((who, inputs))
        return 1.0, True, ""
    return run


def test_the_kit_reads_the_parameters_file(params):
    assert kit.repeats() == 4 and kit.param("n") == 7 and kit.BASELINE == "/b" and kit.SUBMISSION == "/s"
    params(repeats=2, baseline="/elsewhere")
    assert kit.repeats() == 2 and kit.BASELINE == "/elsewhere"
    with pytest.raises(KeyError):
        kit.param("undeclared")


def test_a_parameters_file_with_a_missing_or_unknown_key_is_refused():
    good = json.loads(contract.write_params({k: None for k in contract.PARAMS}))
    with pytest.raises(contract.ContractError, match="missing \\['repeats'\\]"):
        contract.read_params(json.dumps({k: v for k, v in good.items() if k != "repeats"}))
    with pytest.raises(contract.ContractError, match="unknown \\['repeat'\\]"):
        contract.write_params(dict(good, repeat=3))


def test_every_pair_gets_its_own_draw_and_both_runs_of_a_pair_the_same(params):
    seen = []
    b, c, ok, _ = kit.timed_pairs(lambda rng: rng.getrandbits(64), recorder(seen, "b"), recorder(seen, "c"), warmup=1)
    assert ok and len(b) == len(c) == 4
    pairs = [seen[i:i + 2] for i in range(0, len(seen), 2)]
    assert len(pairs) == 5 and all(p[0][1] == p[1][1] for p in pairs)  # a pair shares its inputs
    assert len({p[0][1] for p in pairs}) == 5  # and no pair sees another's
    again = []
    kit.timed_pairs(lambda rng: rng.getrandbits(64), recorder(again, "b"), recorder(again, "c"), warmup=1)
    assert sorted(x for _, x in again) == sorted(x for _, x in seen)  # the secret seed decides them
    assert kit.speedup_verdict(b, c, ok)["details"]["fresh_inputs"] is True


def test_a_draw_that_repeats_itself_stops_the_verifier(params):
    with pytest.raises(RuntimeError, match="must be fresh"):
        kit.timed_pairs(lambda rng: [1, 2, 3], lambda x: (1.0, True, ""), lambda x: (1.0, True, ""))


def test_without_fresh_inputs_the_first_draw_serves_every_pair(params):
    params(fresh_inputs=False)
    seen = []
    b, c, ok, _ = kit.timed_pairs(lambda rng: rng.getrandbits(64), recorder(seen, "b"), recorder(seen, "c"))
    assert ok and len({x for _, x in seen}) == 1
    assert kit.speedup_verdict(b, c, ok)["details"]["fresh_inputs"] is False


def test_the_judge_sees_both_runs_of_a_pair(params):
    def run(who):
        def f(pair):
            pair[who] = 1.0 if who == "b" else 1.1
            return 1.0, True, ""
        return f

    b, c, ok, note = kit.timed_pairs(lambda rng: {"n": rng.random()}, run("b"), run("c"),
                                     judge=lambda pair: (pair["c"] <= pair["b"] * 1.05, "too far"))
    assert not ok and note == "too far" and c == []


def test_the_plausibility_bound_is_the_tasks(params):
    assert kit.speedup_verdict([1.0] * 3, [0.01] * 3, True)["flagged"]  # 100x > 50
    params(plausible_max=500.0)
    assert "flagged" not in kit.speedup_verdict([1.0] * 3, [0.01] * 3, True)


# ---- the kits' files: named by who runs them, each small, each import copied in ----

RUN_BY = {"root": ("verify_kit", "root_params", "root_staging", "root_processes", "kernel_kit", "kernelbench_kit"),
          "candidate": ("candidate_runner",), "witness": ("witness_replay",),
          "shared": ("contract", "kernel_cases", "kernel_module")}


def test_every_kit_is_named_for_who_runs_it_and_under_600_lines():
    files = {p.stem: p for p in KITS.glob("*.py")}
    assert sorted(files) == sorted(n for names in RUN_BY.values() for n in names)
    for name, path in files.items():
        assert len(path.read_text().splitlines()) <= 600, name


def test_what_a_kit_imports_is_copied_beside_it():
    """prepare() copies every kits/*.py flat into /verifier; the kernel kit copies the runner, the
    witness and what they import into the candidate's folder: nothing either imports is left out."""
    import re

    public = re.search(r"for script in \(([^)]*)\)", (KITS / "kernel_kit.py").read_text()).group(1)
    copied = {s.strip().strip('"')[:-3] for s in public.split(",") if s.strip()}
    assert {"candidate_runner", "witness_replay"} <= copied
    for script in copied:
        lazy = {"kernel_module"}  # imported inside the nn.Module runners, copied all the same
        assert set(kit_imports(KITS / f"{script}.py")) | lazy <= copied, script


def test_the_kit_reexports_its_parts():
    """`kit.X` reaches every name of the root modules verify_kit is split into."""
    for part in ("root_params", "root_staging", "root_processes"):
        module = load_kit(part)
        for name, value in vars(module).items():
            if not name.startswith("__") and name not in ("contract",) and not isinstance(value, type(kit)):
                assert getattr(kit, name) is value, (part, name)
