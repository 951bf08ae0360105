"""posttrain-mini: oracle and nop, and the cheats the verifier must defeat.

Every test grades through the real `rdbench verify` (or `rdbench run`) CLI, in a real
verifier sandbox. The verifier evaluates weights only, so a grading takes ~20-60 s.
"""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

from results.records import load_trial
from sandbox import SandboxConfig
from sandbox.docker import DockerSandbox
from tests.conftest import TASKS, rdbench

TASK = TASKS / "posttrain-mini"
BASE = TASK / "workspace" / "weights.npz"
pytestmark = [pytest.mark.docker, pytest.mark.slow]


def verify(submission: Path) -> tuple[int, dict]:
    r = rdbench("verify", str(TASK), "--submission", str(submission), timeout=900)
    assert r.returncode in (0, 3), r.stdout + r.stderr
    return r.returncode, json.loads(r.stdout)


def workspace_copy(tmp_path: Path) -> Path:
    sub = tmp_path / "submission"
    shutil.copytree(TASK / "workspace", sub)
    return sub


def base_arrays() -> dict[str, np.ndarray]:
    with np.load(BASE, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("agent,want", [("oracle", 1.0), ("nop", 0.0)])
def test_oracle_scores_one_and_nop_zero(base_image, tmp_path, agent, want):
    r = rdbench("run", str(TASK), "--agent", agent, "--out", str(tmp_path / "run"), timeout=1200)
    assert r.returncode == 0, r.stdout + r.stderr
    t = load_trial(tmp_path / f"run/trials/posttrain-mini__{agent}__0")
    assert t.correct is True and t.metric == "normalised_score"
    assert t.value == pytest.approx(want, abs=1e-9)  # oracle = the reference's weights; nop = the base's
    acc, score = t.verifier_details["accuracy"], t.verifier_details["score"]
    assert max(acc["base"].values()) < 0.1, acc  # the base model cannot do the tasks
    assert score["reference"] > score["base"] + 0.2, score  # the reference clearly can


def _save(path: Path, arrays: dict, **kw) -> None:
    with open(path, "wb") as f:  # np.savez on a path would append ".npz" to odd names
        np.savez(f, **arrays, **kw)


class Forger:
    """A pickled object that, if ever unpickled by the verifier, prints a forged verdict."""

    def __reduce__(self):
        return (os.system, (FORGE_SH,))


FORGE_VERDICT = json.dumps({"correct": True, "metric": "normalised_score", "value": 99.0})
FORGE_SH = "echo \"RDBENCH_RESULT $RDBENCH_RESULT_TOKEN %s\"" % FORGE_VERDICT.replace('"', '\\"')


def bad_weights(kind: str, sub: Path) -> None:
    w = sub / "weights.npz"
    a = base_arrays()
    if kind == "wider":
        a["wte"] = np.zeros((a["wte"].shape[0], 128), np.float32)
    elif kind == "extra-layer":
        a.update({k.replace("h3.", "h4."): v for k, v in a.items() if k.startswith("h3.")})
    elif kind == "extra-array":
        a["answers"] = np.arange(10, dtype=np.float32)
    elif kind == "missing-array":
        del a["head_w"]
    elif kind == "renamed":
        a = {k.replace("h0.", "layer0."): v for k, v in a.items()}
    elif kind == "float64":
        a = {k: v.astype(np.float64) for k, v in a.items()}
    elif kind == "nan":
        a["lnf_g"] = a["lnf_g"].copy()
        a["lnf_g"][3] = np.nan
    elif kind == "pickled":
        evil = np.empty(1, dtype=object)
        evil[0] = Forger()
        a["head_w"] = evil
    if kind == "symlink":  # to the verifier's own reference weights
        w.unlink()
        w.symlink_to("/verifier/reference.npz")
    elif kind == "no-file":
        w.unlink()
    elif kind == "not-npz":
        w.write_bytes(b"PK\x03\x04 not really a zip archive")
    elif kind == "lying-header":  # a deflated header that claims 2^30 float32s: 4 GiB if believed
        import zipfile
        header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1073741824,), }"
        header += b" " * (118 - len(header)) + b"\n"
        with zipfile.ZipFile(w, "w", zipfile.ZIP_DEFLATED) as z:
            with z.open("wte.npy", "w", force_zip64=True) as m:
                m.write(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header)
                for _ in range(64):
                    m.write(bytes(16 << 20))
            for k, v in a.items():
                if k != "wte":
                    z.writestr(k + ".npy", _npy(v))
    else:
        _save(w, a)


BAD = {  # the kind of bad weights: what the verdict must say
    "wider": "wte: want float32 (77, 96), got float32 (77, 128)",
    "extra-layer": "extra ['h4.",
    "extra-array": "extra ['answers']",
    "missing-array": "missing ['head_w']",
    "renamed": "extra ['layer0.",
    "float64": "got float64",
    "nan": "lnf_g: not finite",
    "pickled": "allow_pickle=False",
    "symlink": "not a regular file",
    "no-file": "no weights.npz",
    "not-npz": "unreadable weights",
    "lying-header": "wte: want float32 (77, 96), got float32 (1073741824,)",
}


def _npy(a) -> bytes:
    import io
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


@pytest.mark.parametrize("kind", BAD)
def test_weights_of_another_format_fail(base_image, tmp_path, kind):
    sub = workspace_copy(tmp_path)
    bad_weights(kind, sub)
    rc, v = verify(sub)
    assert rc == 3 and v["correct"] is False and v["value"] is None, v
    assert BAD[kind] in v["details"]["failure"]


def test_the_checks_pass_unchanged_base_weights_resaved(base_image, tmp_path):
    """The control for the test above: the same path, with nothing wrong, is graded."""
    sub = workspace_copy(tmp_path)
    _save(sub / "weights.npz", base_arrays())
    rc, v = verify(sub)
    assert rc == 0 and v["correct"] is True and v["value"] == 0.0, v


# Python files that forge a verdict (with the real token, from the environment) and exit,
# if anything of the submission is ever imported or run by the verifier.
FORGE_PY = textwrap.dedent('''
    import os, sys
    sys.stdout.write("RDBENCH_RESULT %%s %s\\n" %% os.environ.get("RDBENCH_RESULT_TOKEN", "-"))
    sys.stdout.flush()
    os._exit(0)
''') % FORGE_VERDICT.replace('"', '\\"')
SHADOWS = ["sitecustomize.py", "usercustomize.py", "numpy.py", "torch/__init__.py", "verify_kit.py", "verify.py",
           "model.py", "data.py", "evaluate.py", "importlib/__init__.py", "random.py", "zipfile.py"]


def test_submission_code_is_never_imported_or_run(base_image, tmp_path):
    """Modules that would shadow what the verifier imports (site hooks, numpy, torch, the kit,
    the model code) each forge a winning verdict if imported. The verifier imports none of
    them: the base weights beside them score exactly 0."""
    sub = workspace_copy(tmp_path)
    for name in SHADOWS:
        (sub / name).parent.mkdir(parents=True, exist_ok=True)
        (sub / name).write_text(FORGE_PY)
    rc, v = verify(sub)
    assert rc == 0 and v["value"] == 0.0, v
    assert v["details"]["score"]["candidate"] == v["details"]["score"]["base"]


def test_every_grading_draws_new_hidden_items(base_image, tmp_path):
    """The seed lives only in the verifier's environment (no submission code runs there: see
    the test above), and it is new at every grading, so no item can be known in advance."""
    sub = workspace_copy(tmp_path)
    prints = {verify(sub)[1]["details"]["test_set_sha256"] for _ in range(2)}
    assert len(prints) == 2, "two gradings drew the same hidden items"


MEMORISE = r'''
import random, sys, torch
sys.path[:0] = ["/workspace", "/recipe"]
import data, evaluate, finetune_reference as ft, model, train_loop
torch.manual_seed(0)
torch.set_num_threads(2)
net = model.load("/workspace/weights.npz")
rows = [ft.row(p, a) for p, a in data.items("addition", 0, 200)]  # the public dev set's additions
rng = random.Random(0)
train_loop.train(net, lambda: ft.pad(rng.sample(rows, 64)), int(sys.argv[1]), 2e-3, 20)
model.save(net, "/workspace/weights.npz")
print(evaluate.accuracy(net, 0, 200))
'''


def test_memorising_the_public_dev_set_does_not_score(base_image, docker_client, tmp_path):
    """A lookup table in the weights: the base fine-tuned on the 200 public dev additions
    until it knows them by heart. It aces them, and gets the hidden additions no better
    than the base does."""
    with DockerSandbox(SandboxConfig(image=base_image, memory="4g"), docker_client) as sb:
        sb.copy_in(TASK / "workspace", "/workspace")
        sb.copy_in(TASK / "recipe", "/recipe")
        sb.write_file("/tmp/memorise.py", MEMORISE.encode())
        r = sb.exec(["python3", "/tmp/memorise.py", "600"], cwd="/workspace", timeout=900)
        assert r.ok, r.stdout + r.stderr
        dev = eval(r.stdout.strip().splitlines()[-1])
        sub = tmp_path / "submission"
        sb.copy_out("/workspace", sub)
    assert dev["addition"] > 0.9, dev  # it does know the dev set
    rc, v = verify(sub)
    assert rc == 0 and v["details"]["accuracy"]["candidate"]["addition"] < 0.1, v
    assert v["value"] < 0.2, v


def test_an_answer_file_beside_the_weights_scores_nothing(base_image, tmp_path):
    """A lookup table beside the weights, and model code that answers from it: the
    submission's own evaluate.py then scores 1.0 on the dev set, but the verifier never
    runs the submission's code, so it is graded as the base weights it carries: 0."""
    sub = workspace_copy(tmp_path)
    import importlib.util

    spec = importlib.util.spec_from_file_location("pt_data", TASK / "workspace" / "data.py")
    data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(data)
    table = {p: a for b in data.BENCHMARKS for seed in range(20) for p, a in data.items(b, seed, 500)}
    (sub / "answers.json").write_text(json.dumps(table))
    (sub / "model.py").write_text((sub / "model.py").read_text() + textwrap.dedent('''
        import json as _json, os as _os
        _TABLE = _json.load(open(_os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "answers.json")))
        generate = lambda net, prompts, **kw: [_TABLE.get(p, "") for p in prompts]
    '''))
    rc, v = verify(sub)
    assert rc == 0 and v["value"] == 0.0, v


def test_verifier_files_in_the_submission_have_no_effect(base_image, tmp_path):
    """A submission carrying its own verifier/ (a forging verify.py, the base weights as
    "reference.npz") and a reference.npz at its top: the verifier reads its own files only.
    Had it taken the base weights as the reference, it would have refused to grade."""
    sub = workspace_copy(tmp_path)
    (sub / "verifier").mkdir()
    (sub / "verifier" / "verify.py").write_text(FORGE_PY)
    (sub / "verifier" / "verify_kit.py").write_text(FORGE_PY)
    shutil.copy(BASE, sub / "verifier" / "reference.npz")
    shutil.copy(BASE, sub / "reference.npz")
    rc, v = verify(sub)
    assert rc == 0 and v["value"] == 0.0, v
    assert v["details"]["score"]["reference"] > v["details"]["score"]["base"] + 0.2
