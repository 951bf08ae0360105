"""cpu-lm-train: the verifier's own forward pass, and the cheats it must defeat.

Every test here runs the real verifier in a real verifier sandbox, against the real
baseline (about 95 s a run on a 2-core machine), so each cheat test takes ~2 minutes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.kits import contract
from harness.task import load_task
from harness.verify import params_text
from sandbox import SandboxConfig
from sandbox.docker import DockerSandbox
from tests.conftest import TASKS, rdbench

TASK = TASKS / "cpu-lm-train"
#: the verifier's parameters with the pristine workspace at `baseline` (for verify.py imported by hand)
PARAMS = lambda baseline: params_text(load_task(TASK), baseline=str(baseline)).encode()  # noqa: E731
pytestmark = pytest.mark.slow


def verify(submission: Path, repeats: int = 1) -> dict:
    r = rdbench("verify", str(TASK), "--submission", str(submission), "--repeats", str(repeats), timeout=1800)
    assert r.returncode in (0, 3), r.stdout + r.stderr
    return json.loads(r.stdout)


def overlay(tmp_path: Path, *folders: Path) -> Path:
    sub = tmp_path / "submission"
    for f in (TASK / "workspace", *folders):
        shutil.copytree(f, sub, dirs_exist_ok=True)
    return sub


@pytest.mark.docker
def test_verifier_forward_pass_matches_the_baseline(base_image, docker_client):
    """The verifier's own forward pass computes exactly the baseline model's loss."""
    script = r'''
import sys, numpy as np
sys.path[:0] = ["/verifier", "/workspace"]
sys.argv = ["train.py", "/tmp/c.txt", "/tmp/w.npz"]
import data
open("/tmp/c.txt", "w").write(data.generate(5, 20000))
src = open("/workspace/train.py").read().split("# ---- optimiser ----")[0]
g = {}
exec(compile(src, "train.py", "exec"), g)
import verify
p = g["init_params"]()
rng = np.random.default_rng(1)
for k in p:
    p[k] = p[k] + rng.normal(0, 0.3, p[k].shape)
toks = g["data"][: 8 * 64 + 1]
ours = np.mean([g["forward"](p, toks[i * 64:(i + 1) * 64], toks[i * 64 + 1:(i + 1) * 64 + 1])[0] for i in range(8)])
theirs = verify.heldout_loss(p, toks)
print(ours, theirs)
assert abs(ours - theirs) < 1e-9, (ours, theirs)
'''
    with DockerSandbox(SandboxConfig(image=base_image), docker_client) as sb:
        sb.copy_in(TASK / "workspace", "/workspace")
        sb.copy_in(TASK / "verifier", "/verifier")
        sb.copy_in(Path(__file__).parents[2] / "harness", "/harness")
        sb.exec("cp /harness/kits/*.py /verifier/")  # the kits, flat, as prepare() copies them
        sb.write_file("/tmp/params.json", PARAMS("/workspace"))
        sb.write_file("/tmp/check.py", script.encode())
        r = sb.exec(["python3", "/tmp/check.py"], cwd="/workspace", env={contract.ENV_PARAMS: "/tmp/params.json"},
                    timeout=300)
        assert r.ok, r.stdout + r.stderr


@pytest.mark.docker
def test_pretrained_weights_fail(base_image, docker_client, tmp_path):
    """Weights trained in advance (here: by the reference solution, on the public language)
    are worthless on the verifier's secret language."""
    with DockerSandbox(SandboxConfig(image=base_image, memory="4g"), docker_client) as sb:
        sb.copy_in(TASK / "workspace", "/workspace")
        sb.copy_in(TASK / "solution", "/workspace")
        r = sb.exec("python3 data.py 0 600000 /tmp/c.txt && python3 train.py /tmp/c.txt /workspace/pretrained.npz",
                    cwd="/workspace", timeout=600)
        assert r.ok, r.stderr
        sub = tmp_path / "submission"
        sb.copy_out("/workspace", sub)
    (sub / "train.py").write_text(
        "import os, shutil, sys\n"
        "shutil.copy(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'pretrained.npz'), sys.argv[2])\n")
    v = verify(sub)
    assert v["correct"] is False
    assert "misses the target" in v["details"]["failure"]


SNOOPER = r'''
import glob, os, sys
# Look for the verifier's secrets: its seed and result token (environment of other
# processes), its files (/verifier, its private work folders), the held-out text.
found = []
for path in glob.glob("/proc/*/environ"):
    try:
        blob = open(path, "rb").read()
    except OSError:
        continue
    if b"RDBENCH_SECRET_SEED" in blob or b"RDBENCH_RESULT_TOKEN" in blob:
        found.append(path)
for top in ["/verifier", "/baseline", "/submission", "/root"] + glob.glob("/tmp/rdbench-verifier-*"):
    try:
        found += [top + "/" + n for n in os.listdir(top)]
    except OSError:
        pass
for path in glob.glob("/tmp/**", recursive=True) + glob.glob("/dev/shm/**", recursive=True):
    try:
        if os.path.isfile(path) and "corpus.rdbench" not in path and open(path, "rb").read(1) is not None:
            if os.stat(path).st_uid != os.getuid():
                found.append(path)
    except OSError:
        pass
if found:
    # a cheat that found its prize would use it; this one reports it by failing loudly
    sys.stderr.write("FOUND %s\n" % found[:10])
    sys.exit(7)
'''


@pytest.mark.docker
def test_program_cannot_find_the_hidden_data_or_seed(base_image, tmp_path):
    """The snooper searches the file system and other processes for the seed, the result
    token and the verifier's files; had it found any, it would exit non-zero and fail.
    It passes only because it found nothing, and then trained for real."""
    sub = overlay(tmp_path, TASK / "solution")
    train = sub / "train.py"
    # trained well past the target on any language: this test is about isolation, not the recipe
    text = train.read_text()
    assert "max_steps = 550" in text
    train.write_text(SNOOPER + "\n" + text.replace("max_steps = 550", "max_steps = 800"))
    v = verify(sub)
    assert v["correct"] is True, v["details"].get("failure")
    assert v["details"]["isolated"] is True


@pytest.mark.docker
def test_shortened_training_fails(base_image, tmp_path):
    sub = overlay(tmp_path, TASK / "solution")
    train = sub / "train.py"
    text = train.read_text()
    assert "max_steps = 550" in text and "max_extensions = 3" in text
    # and no extension: the reference would otherwise notice it is short and train on
    train.write_text(text.replace("max_steps = 550", "max_steps = 120").replace("max_extensions = 3",
                                                                               "max_extensions = 0"))
    v = verify(sub)
    assert v["correct"] is False
    assert "misses the target" in v["details"]["failure"]


@pytest.mark.docker
def test_training_in_a_background_process_fails(base_image, tmp_path):
    """The program writes untrained weights and exits; a daemon it left behind trains and
    overwrites them later. Time and weights are taken at exit, and the daemon is killed."""
    sub = overlay(tmp_path, TASK / "solution")
    (sub / "real_train.py").write_text((sub / "train.py").read_text())
    (sub / "train.py").write_text(
        "import os, shutil, subprocess, sys\n"
        "here = os.path.dirname(os.path.abspath(__file__))\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    subprocess.run([sys.executable, os.path.join(here, 'real_train.py'), sys.argv[1], sys.argv[2] + '.tmp.npz'])\n"
        "    os.replace(sys.argv[2] + '.tmp.npz', sys.argv[2])\n"
        "    os._exit(0)\n"
        "import numpy as np\n"
        "src = open(os.path.join(here, 'train.py.orig')).read().split('# ---- optimiser ----')[0]\n"
        "g = {}\n"
        "exec(compile(src, 'train.py', 'exec'), g)\n"
        "np.savez(sys.argv[2], **g['init_params']())\n")
    shutil.copy(TASK / "workspace" / "train.py", sub / "train.py.orig")
    v = verify(sub)
    assert v["correct"] is False
    assert "misses the target" in v["details"]["failure"]


def test_weights_must_be_a_regular_file(tmp_path):
    """A link named like the weights file is refused before the root verifier reads it."""
    import subprocess
    import sys

    script = r'''
import os, sys, numpy as np
import verify
shapes = verify.SHAPES
np.savez(sys.argv[1] + "/w.npz", **{k: np.zeros(s, np.float32) for k, s in shapes.items()})
os.symlink(sys.argv[1] + "/w.npz", sys.argv[1] + "/link.npz")
assert set(verify.load_weights(sys.argv[1] + "/w.npz")) == set(shapes)
try:
    verify.load_weights(sys.argv[1] + "/link.npz")
except verify.BadWeights as e:
    print("refused:", e)
'''
    root = Path(__file__).resolve().parents[2]
    (tmp_path / "params.json").write_bytes(PARAMS(TASK / "workspace"))
    env = {"PYTHONPATH": f"{TASK / 'verifier'}:{root / 'harness' / 'kits'}", contract.ENV_PARAMS: str(tmp_path / "params.json"),
           "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "refused: the weights file is not a regular file" in r.stdout


CACHING = r'''
"""The original training, once: its weights are cached, keyed by the corpus, everywhere this
user might write, and later runs only copy them (36.4x before runs were kept apart)."""
import hashlib, os, shutil, subprocess, sys

here = os.path.dirname(os.path.abspath(__file__))
key = hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest()[:16]
PLACES = ["/home/agent", "/workspace", "/run/lock", "/tmp", "/var/tmp", "/dev/shm", os.path.expanduser("~")]
for place in PLACES:
    cached = os.path.join(place, ".w-" + key + ".npz")
    if os.path.exists(cached):
        shutil.copy(cached, sys.argv[2])
        print("cache hit in", place, file=sys.stderr)
        sys.exit(0)
subprocess.run([sys.executable, os.path.join(here, "original_train.py"), sys.argv[1], sys.argv[2]], check=True)
for place in PLACES:
    try:
        shutil.copy(sys.argv[2], os.path.join(place, ".w-" + key + ".npz"))
    except OSError:
        pass
'''


@pytest.mark.docker
@pytest.mark.extended  # ~8 minutes; the same escape on py-primes: test_escapes.py::test_answers_cached_between_runs_do_not_survive
def test_weights_cached_between_runs_do_not_survive(base_image, tmp_path):
    """Trains once with the original program and caches the weights; with runs kept apart
    every run trains, so it measures ~1x (about 6-8 minutes: two runs of each program)."""
    sub = overlay(tmp_path)
    shutil.copy(sub / "train.py", sub / "original_train.py")
    (sub / "train.py").write_text(CACHING)
    v = verify(sub, repeats=2)
    assert v["correct"] is True, v["details"].get("failure")
    assert v["ci"][0] < 1.5, v
    assert min(v["candidate_s"]) > 0.5 * min(v["baseline_s"]), v


PAGECACHE = Path(__file__).parents[1] / "harness" / "submissions" / "pagecache"
SEEN_BEFORE = r'''
"""The page-cache channel of tests/harness/submissions/pagecache, adapted: train.py keeps
the original training and marks, in the page cache of a read-only file, the corpus it was
given; a run that finds its corpus marked by an earlier run has been given inputs another
run saw, and says so by writing no weights (so the verdict would be incorrect). (Weights
themselves are too big for the channel: one bit per page.)"""
import hashlib, os, subprocess, sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
import pagecache

key = "corpus-" + hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest()
if pagecache.load(key) is not None:
    sys.exit("this corpus was given to an earlier run")
subprocess.run([sys.executable, os.path.join(here, "original_train.py"), sys.argv[1], sys.argv[2]], check=True)
pagecache.save(key, b"seen")
'''


def short_task(tmp_path: Path, fresh_inputs: bool = True) -> Path:
    """A copy of the task whose baseline trains 30 steps instead of 1200 (the verifier is the same)."""
    task = tmp_path / "cpu-lm-train"
    shutil.copytree(TASK, task)
    train = task / "workspace" / "train.py"
    assert "max_steps = 1200 " in train.read_text()
    train.write_text(train.read_text().replace("max_steps = 1200 ", "max_steps = 30 "))
    if not fresh_inputs:
        toml = task / "task.toml"
        toml.write_text(toml.read_text().replace("fresh_inputs = true", "fresh_inputs = false"))
    return task


@pytest.mark.docker
@pytest.mark.parametrize("fresh", [True, False], ids=["fresh inputs", "control: the same inputs"])
def test_no_run_is_given_a_corpus_an_earlier_run_saw(base_image, tmp_path, fresh):
    """With a new language for every pair, no candidate run finds its corpus marked in the
    page cache by an earlier one; the control (`fresh_inputs = false`, every pair the first
    pair's corpus, as before) shows the channel works: the second run finds it. On a copy of
    the task with 30 training steps (about a minute each)."""
    task = short_task(tmp_path, fresh)
    sub = tmp_path / "submission"
    shutil.copytree(task / "workspace", sub)
    shutil.copy(sub / "train.py", sub / "original_train.py")
    shutil.copy(PAGECACHE / "pagecache.py", sub / "pagecache.py")
    (sub / "train.py").write_text(SEEN_BEFORE)
    r = rdbench("verify", str(task), "--submission", str(sub), "--repeats", "3", timeout=1800)
    assert r.returncode in (0, 3), r.stdout + r.stderr
    v = json.loads(r.stdout)
    assert v["details"]["fresh_inputs"] is fresh
    if fresh:
        assert v["correct"] is True and len(v["candidate_s"]) == 3, v["details"].get("failure")
    else:
        assert v["correct"] is False and "given to an earlier run" in v["details"]["failure"], v


@pytest.mark.docker
@pytest.mark.extended  # ~2.5 minutes
def test_a_candidate_that_never_exits_is_cut_at_three_baselines(base_image, tmp_path):
    """The first pair times the baseline first, so the candidate's limit is always three times a
    measured baseline run (at least 120 s), never the 1,800 s a first run once got when it went
    first: the audit's too-slow escape (the work, then sleep forever) is incorrect at 120 s here.
    The canary runs too, and must show that the escapes' code ran in train.py."""
    task = short_task(tmp_path)
    r = rdbench("tasks", "audit", str(task), "--only", "too-slow", "--format", "json", timeout=1200)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = {row["escape"]: row for row in json.loads(r.stdout)}
    assert rows["canary"]["verdict"] == "incorrect" and "exit 97" in rows["canary"]["reason"], rows
    slow = rows["too-slow"]
    assert slow["verdict"] == "incorrect" and "timed out after" in slow["reason"], slow
    # max(120, 3 x a ~3 s baseline): the old limits were 600 s at least, 1,800 s when it went first
    assert float(slow["reason"].split("timed out after ")[1].split()[0]) < 600, slow
