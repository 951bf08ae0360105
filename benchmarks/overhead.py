"""Harness overhead, measured against the machine's own Docker floor in one run.

    .venv/bin/python benchmarks/overhead.py [--n 10]

Prints medians (and min/max, to show the noise) of:
- floor: `docker run --rm IMAGE true` (CLI), and `docker exec CONTAINER true` (CLI);
- exec latency: Sandbox.exec(["true"]) in a running Docker sandbox;
- trial overhead: a whole nop trial with a trivial verifier (no timing work), from
  start to verdict to teardown, through harness.trial.run_trial.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from harness.cores import CorePool
from harness.scaffold import scaffold
from harness.task import load_task
from harness.trial import TrialSpec, run_trial
from sandbox import SandboxConfig
from sandbox.docker import DockerSandbox, client_from_env
from sandbox.images import build_base_image

TRIVIAL_VERIFIER = """import verify_kit as kit
kit.emit({"correct": True, "metric": "speedup", "value": 1.0})
"""


def timed(fn, n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def row(name, xs, target=None):
    med = statistics.median(xs)
    t = f"  target <= {target * 1000:.0f} ms: {'MET' if med <= target else 'MISSED'}" if target else ""
    print(f"{name:<44} median {med * 1000:8.1f} ms   min {min(xs) * 1000:8.1f}   max {max(xs) * 1000:8.1f}   n={len(xs)}{t}")
    return med


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10)
    args = ap.parse_args()
    client = client_from_env()
    image = build_base_image(client)

    floor_run = timed(lambda: subprocess.run(["docker", "run", "--rm", "--network", "none", image, "true"],
                                             check=True, capture_output=True), args.n)
    with DockerSandbox(SandboxConfig(image=image), client) as sb:
        cid = sb.container.id
        floor_exec = timed(lambda: subprocess.run(["docker", "exec", cid, "true"], check=True, capture_output=True),
                           args.n)
        sb.exec(["true"])
        ours_exec = timed(lambda: sb.exec(["true"]), max(args.n, 50))

    with tempfile.TemporaryDirectory() as tmp:
        task_dir = scaffold("overhead", Path(tmp) / "tasks")
        (task_dir / "verifier" / "verify.py").write_text(TRIVIAL_VERIFIER)
        task = load_task(task_dir)
        cores = CorePool()
        phases = []

        def trial(i=[0]):
            i[0] += 1
            spec = TrialSpec(task=task, agent="nop", index=i[0], out_dir=Path(tmp) / "run" / str(i[0]), run_id="bench")
            r = run_trial(spec, image=image, cores=cores)
            assert r.correct, r.error
            phases.append(r.phases)

        trial()  # warm-up
        phases.clear()
        ours_trial = timed(trial, args.n)

    print(f"machine floor and rdbench, {args.n} runs each (image {image})")
    row("floor: docker run --rm IMAGE true", floor_run)
    row("floor: docker exec CONTAINER true", floor_exec)
    row("rdbench: Sandbox.exec(['true'])", ours_exec, target=0.030)
    row("rdbench: nop trial, start->verdict->teardown", ours_trial, target=3.0)
    print("nop trial phases (median ms): " + ", ".join(
        f"{k} {statistics.median(p.get(k, 0) for p in phases) * 1000:.0f}" for k in phases[0]))
    print(f"ratios: trial / docker-run floor = {statistics.median(ours_trial) / statistics.median(floor_run):.2f}; "
          f"docker exec / Sandbox.exec = {statistics.median(floor_exec) / statistics.median(ours_exec):.0f}x")


if __name__ == "__main__":
    main()
