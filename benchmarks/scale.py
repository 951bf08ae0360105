"""Per-trial overhead of the Ray executor against the local one, on py-primes with the oracle.

    .venv/bin/python benchmarks/scale.py [--trials 4] [--rounds 3] [--ray-address HOST:PORT]

Each round runs `trials` trials one at a time (concurrency 1) through the local executor,
then the same through the Ray executor, alternating so that a loaded host slows both. With
no --ray-address (nor RAY_ADDRESS), a one-node cluster is started on this machine for the
benchmark (`ray start --head`) and stopped after. Per executor, per round:

- wall per trial: the run's wall time after its first trial started, over the trials;
- overhead per trial: that, less the trial's own phases (sandboxes, agent, verifier) as
  trial.json records them: what the executor adds (Ray: scheduling, shipping the task
  folder, the worker, the trial folder's trip home);
- start-up: from execute() to the first trial started (Ray: connect, check every node).

It prints medians (min..max over rounds, to show the noise) and the ratios Ray / local
taken in this one run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.api import get_executor  # noqa: E402
from harness.run import create_run, execute, new_run_id  # noqa: E402
from harness.task import load_task  # noqa: E402
from results.records import AgentSpec, RunConfig  # noqa: E402
from sandbox.docker import client_from_env  # noqa: E402
from sandbox.images import build_base_image  # noqa: E402


def one_run(kind: str, address: str | None, trials: int, out: Path) -> dict[str, float]:
    task = load_task(ROOT / "tasks" / "py-primes")
    config = RunConfig(run_id=new_run_id(), tasks=[str(task.path)], agent=AgentSpec(name="oracle"), trials=trials,
                       concurrency=1, repeats=1, executor=kind, ray_address=address)
    run = create_run(config, out / config.run_id, [task])
    image = build_base_image(client_from_env(), log=lambda m: None)
    first: list[float] = []
    t0 = time.perf_counter()
    results = execute(run, images={task.name: image}, executor=get_executor(kind, address=address, log=lambda m: None),
                      on_start=lambda s: first.append(time.perf_counter()) if not first else None)
    wall = time.perf_counter() - first[0]
    bad = [r.error for r in results if not r.correct]
    if len(results) != trials or bad:
        raise SystemExit(f"{kind}: {len(results)} of {trials} trials, failures: {bad}")
    inside = sum(sum(r.phases.values()) for r in results)
    return {"startup_s": first[0] - t0, "wall_per_trial_s": wall / trials,
            "overhead_per_trial_s": (wall - inside) / trials}


def start_head() -> tuple[str, subprocess.Popen]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray = str(Path(sys.executable).with_name("ray"))
    proc = subprocess.Popen([ray, "start", "--head", "--port", str(port), "--node-ip-address", "127.0.0.1",
                             "--num-cpus", str(os.cpu_count() or 1), "--include-dashboard", "false",
                             "--disable-usage-stats", "--block"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"127.0.0.1:{port}"
    deadline = time.time() + 180
    while subprocess.run([ray, "status", "--address", address], capture_output=True).returncode != 0:
        if time.time() > deadline or proc.poll() is not None:
            stop(proc)
            raise SystemExit("the one-node Ray cluster did not start")
        time.sleep(2)
    return address, proc


def stop(proc: subprocess.Popen) -> None:
    for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 30)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(grace)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS"))
    args = ap.parse_args()
    head = None
    address = args.ray_address
    if address is None:
        address, head = start_head()
    rows: dict[str, list[dict[str, float]]] = {"local": [], "ray": []}
    try:
        with tempfile.TemporaryDirectory(prefix="rdbench-scale-") as tmp:
            for _ in range(args.rounds):
                for kind in ("local", "ray"):
                    rows[kind].append(one_run(kind, address, args.trials, Path(tmp)))
    finally:
        if head is not None:
            stop(head)
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in rows.items()}
    for kind, runs in rows.items():
        for m in runs[0]:
            xs = [r[m] for r in runs]
            print(f"{kind:<6} {m:<22} median {med[kind][m] * 1000:8.0f} ms   (min {min(xs) * 1000:.0f}, "
                  f"max {max(xs) * 1000:.0f}, rounds={len(xs)}, trials/round={args.trials})")
    ratio = med["ray"]["wall_per_trial_s"] / med["local"]["wall_per_trial_s"]
    extra = med["ray"]["overhead_per_trial_s"] - med["local"]["overhead_per_trial_s"]
    over = med["ray"]["overhead_per_trial_s"] / med["local"]["overhead_per_trial_s"]
    print(f"ratio ray/local, wall per trial: {ratio:.2f}x; executor overhead per trial: {over:.2f}x "
          f"(Ray adds {extra * 1000:.0f} ms per trial; start-up {med['ray']['startup_s']:.1f} s once per run)")
    print(json.dumps({"ratio_wall_per_trial": round(ratio, 3), "ratio_overhead_per_trial": round(over, 3),
                      "ray_extra_ms_per_trial": round(extra * 1000), "medians": med}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
