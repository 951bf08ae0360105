"""Harness overhead, measured against the machine's own Docker floor in one run.

    .venv/bin/python benchmarks/overhead.py [--n 10]

Prints medians (and min/max, to show the noise) of:
- floor: `docker run --rm IMAGE true` (CLI), and `docker exec CONTAINER true` (CLI);
- exec latency: Sandbox.exec(["true"]) in a running Docker sandbox;
- trial overhead: a whole nop trial with a trivial verifier (no timing work), from
  start to verdict to teardown, through harness.trial.run_trial;
- CLI start-up: `rdbench --help`, as a ratio to a bare `python3 -c pass` (target <= 0.3 s);
- verifier isolation per timed run: in a verifier sandbox, the verify kit's stage + run +
  kill + scrub + unstage around `python3 -c pass` and around py-primes' baseline, as the
  time added to the run itself (and the one-off census before the first run).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.cores import CorePool
from harness.scaffold import scaffold
from harness.task import load_task
from harness.trial import TrialSpec, run_trial
from results.records import AgentSpec
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


def cli_startup(n):
    """`rdbench --help` against the bare interpreter: what the CLI's imports add to each command."""
    rdbench = str(Path(sys.executable).with_name("rdbench"))
    bare = timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), n)
    cli = timed(lambda: subprocess.run([rdbench, "--help"], check=True, capture_output=True), n)
    row("floor: python3 -c pass", bare)
    row("rdbench --help", cli, target=0.3)
    print(f"rdbench --help / python3 -c pass = {statistics.median(cli) / statistics.median(bare):.1f}x")


KIT_BENCH = r"""
import statistics, sys, time
sys.path.insert(0, "/verifier")
import verify_kit as kit
t = time.perf_counter(); kit._kit_dir(); census = time.perf_counter() - t
for name, cmd in (("python3 -c pass", ["python3", "-c", "pass"]),
                  ("py-primes baseline", ["python3", "solve.py", "input.json", "output.json"])):
    added, runs = [], []
    for i in range(N):
        t = time.perf_counter()
        work = kit.stage("/baseline", kit.BASELINE_UID)
        kit.write_input(work + "/input.json", '{"queries": [[0, 300000]]}', kit.BASELINE_UID)
        r = kit.run(cmd, cwd=work, uid=kit.BASELINE_UID, timeout=120)
        kit.unstage(work)
        total = time.perf_counter() - t
        assert r.ok, r.describe()
        runs.append(r.wall_s)
        added.append(total - r.wall_s)
    print("%s|%.4f|%.4f|%.4f|%.4f|%.4f" % (name, statistics.median(runs), statistics.median(added), min(added),
                                         max(added), census))
"""


def kit_overhead(client, image, n):
    """What the kit's isolation adds to each timed run, inside a real verifier sandbox."""
    task = load_task(Path(__file__).resolve().parent.parent / "tasks" / "py-primes")
    config = SandboxConfig(image=image, role="verifier", workdir="/verifier", memory="2g")
    with DockerSandbox(config, client) as sb:
        from harness.verify import prepare
        prepare(sb, task)
        sb.write_file("/verifier/kit_bench.py", KIT_BENCH.replace("range(N)", f"range({n})").encode())
        r = sb.exec(["python3", "kit_bench.py"], cwd="/verifier", timeout=1200)
        assert r.ok, r.stderr
    for line in r.stdout.strip().splitlines():
        name, run, added, lo, hi, census = line.split("|")
        print(f"kit per run around {name:<20} run {float(run) * 1000:8.1f} ms   added median "
              f"{float(added) * 1000:7.1f} ms (min {float(lo) * 1000:.1f}, max {float(hi) * 1000:.1f}) = "
              f"{float(added) / float(run):.2f}x the run")
    print(f"kit census before the first run (once per verification): {float(census) * 1000:.0f} ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10)
    args = ap.parse_args()
    cli_startup(max(args.n, 20))
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
            spec = TrialSpec(task=task, agent=AgentSpec(name="nop"), index=i[0], out_dir=Path(tmp) / "run" / str(i[0]),
                             run_id="bench")
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
    kit_overhead(client, image, args.n)
    print(f"ratios: trial / docker-run floor = {statistics.median(ours_trial) / statistics.median(floor_run):.2f}; "
          f"docker exec / Sandbox.exec = {statistics.median(floor_exec) / statistics.median(ours_exec):.0f}x")


if __name__ == "__main__":
    main()
