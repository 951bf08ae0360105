"""`rdbench run --executor ray` on a real Ray cluster of several nodes on loopback (`ray start`
--head plus `ray start --address`), every node on this machine's Docker: real containers,
real verifier runs, trial folders shipped home as each trial finishes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.scaffold import scaffold
from results.records import TrialResult
from results.store import Store
from tests.agents.fake_api import FakeAPI, Step, submit
from tests.conftest import ROOT, TASKS, rdbench

pytest.importorskip("ray", reason="the ray extra (pip install -e '.[ray]')")

RAY = str(Path(sys.executable).with_name("ray"))
KEYS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "OPENAI_API_KEY")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """Ray nodes on this machine, each a `ray start --block` in its own process group (so that
    one node can be killed alone, and only what the test started is stopped). The nodes'
    environment holds no API key: a key a trial sees came from the driver."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, cpus: int, env: dict | None = None) -> str:
        """Start node `name` (the head first) with `cpus` CPUs; its Ray node id once it joined."""
        head = not self.procs
        args = ["--head", "--port", str(self.port), "--temp-dir", str(self.tmp / "ray"), "--include-dashboard",
                "false"] if head else ["--address", self.address]
        clean = {k: v for k, v in os.environ.items() if k not in KEYS and k != "RAY_ADDRESS"}
        log = open(self.tmp / f"{name}.log", "w")
        self.procs[name] = subprocess.Popen(
            [RAY, "start", *args, "--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus),
             "--resources", json.dumps({f"node_{name}": 1}), "--object-store-memory", str(100 << 20),
             "--disable-usage-stats", "--block"],
            stdout=log, stderr=subprocess.STDOUT, env={**clean, **(env or {})}, start_new_session=True)
        deadline = time.time() + 180
        while time.time() < deadline:
            ids = [n["id"] for n in self.nodes() if n["alive"] and f"node_{name}" in n["resources"]]
            if ids:
                return ids[0]
            assert self.procs[name].poll() is None, (self.tmp / f"{name}.log").read_text()
            time.sleep(1)
        raise AssertionError(f"node {name} did not join: {(self.tmp / f'{name}.log').read_text()[-2000:]}")

    def nodes(self) -> list[dict]:
        code = ("import json, logging, ray; ray.init(address=%r, logging_level=logging.ERROR, log_to_driver=False)\n"
                "print(json.dumps([{'id': n['NodeID'], 'alive': n['Alive'], 'resources': n['Resources']} "
                "for n in ray.nodes()]))" % self.address)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        return json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 and r.stdout.strip() else []

    def kill(self, name: str) -> None:
        """Kill node `name` at once, as a machine that dies (its raylet and workers with it)."""
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 30)):  # SIGKILL: what a graceful stop left
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass

    def close(self) -> None:
        for name in reversed(list(self.procs)):  # workers before the head
            self.stop(name)


@pytest.fixture(scope="module")
def cluster(base_image, tmp_path_factory):
    """A head and a worker node of 1 CPU each: one py-primes trial at a time per node."""
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.ids = {"head": c.start("head", 1), "worker": c.start("worker", 1)}
        yield c
    finally:
        c.close()


def trials(run_dir: Path) -> dict[str, TrialResult]:
    return {p.parent.name: TrialResult.model_validate_json(p.read_text())
            for p in sorted((run_dir / "trials").glob("*/trial.json"))}


def files(trial_dir: Path) -> set[str]:
    return {str(p.relative_to(trial_dir)) for p in trial_dir.rglob("*") if p.is_file()}


def run_containers(docker_client, run_id: str) -> list:
    return docker_client.containers.list(all=True, filters={"label": f"rdbench.run={run_id}"}, ignore_removed=True)


@pytest.mark.docker
def test_trials_land_on_both_nodes_and_come_home_like_a_local_run(cluster, tmp_path):
    r = rdbench("run", "tasks/py-primes", "--agent", "oracle", "--trials", "4", "--repeats", "2", "--executor", "ray",
                "--ray-address", cluster.address, "--out", str(tmp_path / "ray"))
    assert r.returncode == 0, r.stderr
    got = trials(tmp_path / "ray")
    assert len(got) == 4 and all(t.correct and t.value > 1.0 for t in got.values()), got
    assert {t.node["id"] for t in got.values()} == set(cluster.ids.values())  # both nodes ran trials
    assert {t.node["host"] for t in got.values()} == {socket.gethostname()}
    assert "[4/4]" in r.stderr  # live progress, as for a local run
    # every trial's folder came home, shaped like a local run's
    local = rdbench("run", "tasks/py-primes", "--agent", "oracle", "--repeats", "2", "--out", str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr
    (lt,) = trials(tmp_path / "local").values()
    assert lt.node is None
    want = files(tmp_path / "local/trials/py-primes__oracle__0")
    assert {"trial.json", "verifier.json", "submission.patch"} <= want
    for name, t in got.items():
        assert files(tmp_path / "ray/trials" / name) == want
        assert t.model_dump().keys() == lt.model_dump().keys()
        assert "sieve" in (tmp_path / "ray/trials" / name / "submission.patch").read_text()
    assert not list((tmp_path / "ray/trials").glob("*.incoming"))
    # and the index holds each trial once
    rows = [row for row in Store(tmp_path / "results.db").rows() if row.run_id == got["py-primes__oracle__0"].run_id]
    assert len(rows) == 4


@pytest.mark.docker
def test_a_trial_shows_as_started_when_its_node_starts_it(cluster, tmp_path):
    """All trials go to Ray at once, but a trial is shown as started only when a node starts
    it, after the one whose CPU it takes is done (2 nodes of 1 CPU: at most 2 at a time)."""
    from harness.api import images, new_run
    from harness.ray_exec import RayExecutor
    from harness.run import execute
    from results.records import AgentSpec

    run = new_run(["py-primes"], AgentSpec(name="oracle"), trials=3, concurrency=None, sandbox="docker", repeats=1,
                  out=tmp_path / "run", executor="ray", ray_address=cluster.address)
    running, most = set(), []

    def started(spec):
        running.add(spec.trial_id)
        most.append(len(running))

    got = execute(run, images=images(run.tasks, "docker", build=False),
                  executor=RayExecutor(cluster.address, log=lambda m: None), on_start=started,
                  on_done=lambda spec, r: running.discard(spec.trial_id))
    assert len(got) == 3 and all(r.correct for r in got), got
    assert max(most) == 2 and len(most) == 3, most


def slow_task(tmp_path: Path, cpus: int) -> Path:
    """A quick task whose verifier first sleeps, with `cpus` CPUs: a trial is long enough to
    stop a node in the middle of, and only a node that large can hold it."""
    task = scaffold("slow", tmp_path / "tasks")
    toml = task / "task.toml"
    toml.write_text(toml.read_text().replace("cpus = 1", f"cpus = {cpus}"))
    assert f"cpus = {cpus}" in toml.read_text()
    verify = task / "verifier" / "verify.py"
    verify.write_text("import time\ntime.sleep(30)\n" + verify.read_text())
    return task


def wait_for(cond, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")


@pytest.mark.docker
def test_node_lost_mid_run_gives_infra_trials_that_resume_finishes_elsewhere(cluster, docker_client, tmp_path):
    task, run_dir = slow_task(tmp_path, cpus=2), tmp_path / "run"
    cluster.start("victim", 4)  # the only node that holds a 2-CPU trial: both trials run there
    try:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("rdbench")), "run", str(task), "--agent", "oracle",
                                 "--trials", "2", "--repeats", "1", "--executor", "ray", "--ray-address",
                                 cluster.address, "--out", str(run_dir)],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        run_id = wait_for(lambda: (run_dir / "run.json").exists() and json.loads((run_dir / "run.json").read_text())
                          ["run_id"], 60, "run.json")
        # The 2-core host verifies one 2-CPU trial at a time, and an agent sandbox lives only
        # seconds: both trials' sandboxes need not ever exist at once. Wait until each trial has
        # had one (trial 1 then still sleeps in its verifier, trial 2 runs or waits for cores).
        seen: set[str] = set()

        def both_started() -> bool:
            seen.update(c.labels.get("rdbench.trial") for c in run_containers(docker_client, run_id))
            return len(seen) == 2

        wait_for(both_started, 240, lambda: f"both trials' sandboxes (seen: {seen}, rdbench exit: {proc.poll()})")
        assert not list(run_dir.glob("trials/*/trial.json")), "a trial ended before the node was killed"
        cluster.kill("victim")
        out, err = proc.communicate(timeout=300)
    finally:
        if "victim" in cluster.procs:
            cluster.stop("victim")
    assert proc.returncode == 1, err
    lost = trials(run_dir)
    assert len(lost) == 2 and all(t.error_class == "infra" and t.value is None for t in lost.values()), lost
    assert all("lost" in t.error for t in lost.values()), lost
    assert "--resume" in err
    # what the dead node's trials left on its Docker engine, `rdbench clean` removes through Ray
    r = rdbench("clean", "--executor", "ray", "--ray-address", cluster.address)
    assert r.returncode == 0, r.stderr
    assert "removed" in r.stdout and not run_containers(docker_client, run_id), r.stdout
    # --resume runs both again on a node that holds them, once each
    again = cluster.start("again", 4)
    try:
        r = rdbench("run", "--resume", str(run_dir), timeout=900)
    finally:
        cluster.stop("again")
    assert r.returncode == 0, r.stderr
    done = trials(run_dir)
    assert len(done) == 2 and all(t.correct and t.error_class is None for t in done.values()), done
    assert {t.node["id"] for t in done.values()} == {again}
    rows = [row for row in Store(tmp_path / "results.db").rows() if row.run_id == run_id]
    assert len(rows) == 2 and all(row.error_class is None for row in rows)


@pytest.mark.docker
def test_keys_reach_the_agent_loop_on_a_node_but_never_a_sandbox(cluster, tmp_path):
    secret = "sk-ray-secret-" + os.urandom(6).hex()
    script = [Step(tool_calls=[("bash", {"command": "env; cat /proc/1/environ | tr '\\0' '\\n'; echo ENV-DONE"})]),
              submit("looked around")]
    with FakeAPI(script) as api:
        r = rdbench("run", "py-primes", "--model", "anthropic/claude-test", "--repeats", "1", "--executor", "ray",
                    "--ray-address", cluster.address, "--out", str(tmp_path / "run"),
                    env={"ANTHROPIC_API_KEY": secret, "ANTHROPIC_BASE_URL": api.url})
    assert r.returncode == 0, r.stderr
    (t,) = trials(tmp_path / "run").values()
    # the nodes have no key of their own: the SDK on the node called the API with the driver's
    assert t.stop_reason == "submitted" and len(api.requests) == 2 and t.node is not None
    trial_dir = tmp_path / "run/trials/py-primes__react__0"
    transcript = (trial_dir / "transcript.jsonl").read_text()
    assert "ENV-DONE" in transcript and "PATH=" in transcript  # the sandbox's environment, printed
    for p in trial_dir.rglob("*"):
        if p.is_file():
            assert secret not in p.read_text(errors="replace"), p


@pytest.mark.docker
def test_ctrl_c_cancels_cluster_trials_and_removes_their_containers(cluster, docker_client, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([str(Path(sys.executable).with_name("rdbench")), "run", str(TASKS / "py-primes"),
                             "--agent", "nop", "--trials", "2", "--executor", "ray", "--ray-address", cluster.address,
                             "--out", str(run_dir)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_id = wait_for(lambda: (run_dir / "run.json").exists() and json.loads((run_dir / "run.json").read_text())
                      ["run_id"], 60, "run.json")
    wait_for(lambda: run_containers(docker_client, run_id), 180, "a sandbox of the run")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "cancelled 2 cluster trial(s)" in err and "resume with" in err
    assert not run_containers(docker_client, run_id)
    assert not trials(run_dir)  # an interrupted trial leaves no result


@pytest.mark.docker
def test_a_node_without_docker_is_refused_by_name(cluster, tmp_path):
    nodock = cluster.start("nodock", 1, env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    try:
        r = rdbench("run", "py-primes", "--agent", "oracle", "--executor", "ray", "--ray-address", cluster.address,
                    "--out", str(tmp_path / "run"))
    finally:
        cluster.stop("nodock")
    assert r.returncode == 1
    assert f"node {nodock[:12]}" in r.stderr and "no Docker engine" in r.stderr, r.stderr
    assert not list(tmp_path.glob("run/trials/*/trial.json"))  # refused before any trial started


@pytest.mark.docker
def test_nodes_without_an_installed_agents_image_are_refused_before_any_trial(cluster, tmp_path):
    task = scaffold("own-image", tmp_path / "tasks")  # a task image of its own: no agents image over it anywhere
    (task / "environment").mkdir()
    (task / "environment" / "Dockerfile").write_text("FROM scratch\n")
    r = rdbench("run", str(task), "--agent", "claude-code", "--model", "anthropic/claude-sonnet-4-5", "--executor",
                "ray", "--ray-address", cluster.address, "--out", str(tmp_path / "run"),
                env={"ANTHROPIC_API_KEY": "sk-x"})
    err = " ".join(r.stderr.split())  # as rich wrapped it
    assert r.returncode == 1, r.stderr
    assert "rdbench-agents:" in err and "rdbench images build --agents" in err and "cancelled" not in err, err
    assert not list(tmp_path.glob("run/trials/*/trial.json"))


def test_without_ray_the_executor_says_how_to_install_it_and_help_never_imports_it(tmp_path):
    code = ("import sys; sys.modules['ray'] = None\nfrom harness.cli import app\n"
            f"sys.argv = ['rdbench', 'run', 'py-primes', '--executor', 'ray', '--out', {str(tmp_path / 'run')!r}]\n"
            "app()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "pip install -e '.[ray]'" in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()
    code = ("import sys; sys.argv = ['rdbench', '--help']\nfrom harness.cli import app\ntry:\n    app()\n"
            "except SystemExit:\n    pass\nprint('ray' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.stdout.strip().splitlines()[-1] == "False", r.stdout + r.stderr
