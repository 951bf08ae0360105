"""Timing beside busy agents: what freezing buys, measured in one go.

    .venv/bin/python benchmarks/isolation.py [--trials 3] [--agent-time 30]

A 2-process A/A task (py-primes' verifier; a program that splits its queries over 2
processes; the candidate is the baseline) on 2 pinned cores, with agents that keep both
their cores busy: a scripted model (tests/agents/fake_api.py) whose every turn is a bash
call spinning 2 processes, until the agent's wall time ends. Three runs:

- quiet:   concurrency 1: each verifier times alone (the agent before it has ended);
- frozen:  concurrency = the cores: a verifier times while the next trial's agent spins on
           the same cores, frozen meanwhile (the default);
- unfrozen: the same with --no-freeze (what the issue measured: +60 % median baseline time).

Per trial: the median baseline time and the A/A ratio (median baseline / median candidate,
1.0 ideally), and the seconds its agent spent frozen; then each busy run's median baseline
time as a ratio to the quiet run's (target: the frozen run within 1.3x), with min/max over
its trials to show the noise. Trials whose verifier overlapped no spinning agent are marked.
By default the runs use a lock folder of their own (RDBENCH_CACHE): on a machine shared
with other rdbench processes, their verifiers would otherwise freeze these agents as well.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from results.records import TrialResult  # noqa: E402
from tests.agents.fake_api import FakeAPI, Step  # noqa: E402

#: the A/A program: py-primes' own counter (copied beside it as primes.py), its queries
#: split over 2 processes
TWO_PROCESS = '''"""Count the primes in query ranges, on 2 processes."""

import json
import sys
from multiprocessing import Pool

from primes import count_primes


def count(q):
    return count_primes(*q)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        queries = json.load(f)["queries"]
    with Pool(2) as pool:
        counts = pool.map(count, queries, chunksize=1)
    with open(sys.argv[2], "w") as f:
        json.dump({"counts": counts}, f)
'''
#: one agent turn: both cores busy for 5 s of CPU time each
SPIN = ("for i in 1 2; do python3 -c \"import time\nwhile time.process_time() < 5: pass\" & done; wait; "
        "echo spun")


def make_task(root: Path) -> Path:
    task = root / "aa-two-process"
    shutil.copytree(ROOT / "tasks" / "py-primes", task)
    for folder in ("workspace", "solution"):
        shutil.copy(ROOT / "tasks" / "py-primes" / "workspace" / "solve.py", task / folder / "primes.py")
        (task / folder / "solve.py").write_text(TWO_PROCESS)
    toml = task / "task.toml"
    toml.write_text(toml.read_text().replace('name = "py-primes"', 'name = "aa-two-process"')
                    .replace("cpus = 1", "cpus = 2"))
    return task


RDBENCH = str(Path(sys.executable).with_name("rdbench"))
SPINNER = ["--model", "anthropic/claude-bench", "--max-turns", "100000"]


def spinning():
    return FakeAPI([Step(tool_calls=[("bash", {"command": SPIN, "timeout": 120})])], repeat_last=True)


@contextmanager
def neighbour(task: Path, out: Path, env: dict):
    """Another rdbench run beside: one trial whose agent spins both cores until it is stopped
    (SIGINT, as Ctrl-C). Yields a function: the seconds its agent has spent frozen so far."""
    with spinning() as api:
        p = subprocess.Popen([RDBENCH, "run", str(task), *SPINNER, "--agent-timeout", "36000", "--out",
                              str(out / "neighbour")], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "ANTHROPIC_BASE_URL": api.url, "ANTHROPIC_API_KEY": "fake", **env})
        try:
            while not api.requests:  # its agent is under way
                time.sleep(0.2)
            record = Path(env.get("RDBENCH_CACHE", Path.home() / ".cache" / "rdbench")) / "locks" / "freeze-docker.json"

            def frozen() -> float:
                state = json.loads(record.read_text()) if record.exists() else {"frozen": {}}
                return sum(e["total"] + (time.time() - e["since"] if e["since"] else 0) for e in state["frozen"].values())

            yield frozen
        finally:
            p.send_signal(signal.SIGINT)
            p.wait(300)


def run(name: str, task: Path, out: Path, trials: int, concurrency: int, agent_time: float, *extra: str,
        env: dict | None = None):
    with spinning() as api:
        agent = extra if "--agent" in extra else (*SPINNER, "--agent-timeout", str(agent_time), *extra)
        r = subprocess.run([RDBENCH, "run", str(task), "--trials", str(trials), "--concurrency", str(concurrency),
                            "--out", str(out / name), *agent], cwd=ROOT, capture_output=True, text=True,
                           env={**os.environ, "ANTHROPIC_BASE_URL": api.url, "ANTHROPIC_API_KEY": "fake", **(env or {})})
    if r.returncode != 0:
        sys.exit(f"{name}: rdbench run failed:\n{r.stderr[-3000:]}")
    results = [TrialResult.model_validate_json(p.read_text()) for p in sorted((out / name).glob("trials/*/trial.json"))]
    return results


def busy_during(t: TrialResult, others: list[TrialResult], phases: dict) -> bool:
    """Whether another trial's agent ran (by its start and end) during t's verification."""
    s, e = t.verify_window
    return any(o is not t and phases[o.trial][0] < e and phases[o.trial][1] > s for o in others)


def agent_spans(out: Path, name: str) -> dict[int, tuple[float, float]]:
    """trial -> (first, last) Unix time of its agent's transcript events, from the transcript."""
    spans = {}
    for p in (out / name).glob("trials/*/transcript.jsonl"):
        ts = [json.loads(line).get("t") for line in p.read_text().splitlines()]
        ts = [t for t in ts if isinstance(t, (int, float))]
        if ts:
            spans[int(p.parent.name.rsplit("__", 1)[1])] = (min(ts), max(ts))
    return spans


def report(name: str, results: list[TrialResult], quiet_median: float | None, spans: dict) -> float:
    print(f"\n{name}:")
    medians = []
    for t in results:
        if not t.correct or not t.baseline_s:
            print(f"  trial {t.trial}: {t.verdict} {t.error or ''}")
            continue
        m = statistics.median(t.baseline_s)
        medians.append(m)
        busy = "" if not spans or busy_during(t, results, spans) else "  (no agent ran meanwhile)"
        rel = f"  {m / quiet_median:.2f}x quiet" if quiet_median else ""
        print(f"  trial {t.trial}: median baseline {m:.3f} s{rel}  A/A {t.value:.3f}  frozen {t.frozen_s:.1f} s  "
              f"stop {t.stop_reason}  cores {t.verify_cpuset}{busy}")
    med = statistics.median(medians)
    rel = (f" = {med / quiet_median:.2f}x quiet (trials {min(medians) / quiet_median:.2f}x to "
           f"{max(medians) / quiet_median:.2f}x)") if quiet_median else ""
    aa = [t.value for t in results if t.value]
    print(f"  median baseline {med:.3f} s{rel}; A/A {min(aa):.3f} to {max(aa):.3f}; "
          f"frozen in all {sum(t.frozen_s for t in results):.1f} s")
    return med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=3, help="trials per busy run (the quiet run: the same)")
    ap.add_argument("--agent-time", type=float, default=30.0, help="each agent's wall time, seconds")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per program")
    ap.add_argument("--shared-locks", action="store_true", help="use this machine's lock folder: other rdbench "
                    "processes' verifiers then freeze these agents too, and these verifiers theirs (default: a "
                    "private one, so that the three runs differ only in what they measure)")
    ap.add_argument("--neighbour", action="store_true", help="instead: A/A trials of the nop agent one at a time, "
                    "alone, then beside another run whose agent spins both cores throughout (frozen, then not)")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="rdbench-isolation-") as tmp:
        root = Path(tmp)
        task, out = make_task(root), root / "runs"
        common = ("--repeats", str(args.repeats))
        env = {} if args.shared_locks else {"RDBENCH_CACHE": str(root / "cache")}
        if args.neighbour:
            return beside_a_neighbour(task, out, args.trials, common, env)
        quiet = run("quiet", task, out, args.trials, 1, args.agent_time, *common, env=env)
        frozen = run("frozen", task, out, args.trials, cores, args.agent_time, *common, env=env)
        unfrozen = run("unfrozen", task, out, args.trials, cores, args.agent_time, *common, "--no-freeze", env=env)
        print(f"{cores} cores; A/A task on 2 processes, 2 pinned cores; agents spin 2 processes each; "
              f"{'shared' if args.shared_locks else 'private'} lock folder; load average {os.getloadavg()[0]:.1f}")
        base = report("quiet (concurrency 1)", quiet, None, {})
        f = report(f"busy, frozen (concurrency {cores})", frozen, base, agent_spans(out, "frozen"))
        u = report(f"busy, not frozen (concurrency {cores}, --no-freeze)", unfrozen, base, agent_spans(out, "unfrozen"))
        print(f"\nmedian baseline time beside busy agents: frozen {f / base:.2f}x quiet (target <= 1.3x: "
              f"{'MET' if f / base <= 1.3 else 'MISSED'}), not frozen {u / base:.2f}x quiet")


def beside_a_neighbour(task: Path, out: Path, trials: int, common: tuple, env: dict) -> None:
    nop = ("--agent", "nop", *common)
    quiet = run("quiet", task, out, trials, 1, 0, *nop, env=env)
    with neighbour(task, out / "n1", env) as frozen_for:
        frozen = run("frozen", task, out, trials, 1, 0, *nop, env=env)
        frozen_s = frozen_for()
    with neighbour(task, out / "n2", env):
        unfrozen = run("unfrozen", task, out, trials, 1, 0, *nop, "--no-freeze", env=env)
    print(f"{len(os.sched_getaffinity(0))} cores; A/A task on 2 processes, 2 pinned cores; a neighbour run's agent "
          f"spins 2 processes on the same cores; load average {os.getloadavg()[0]:.1f}")
    base = report("quiet (alone)", quiet, None, {})
    f = report("beside the busy neighbour, frozen", frozen, base, {})
    print(f"  the neighbour's agent spent {frozen_s:.1f} s frozen")
    u = report("beside the busy neighbour, not frozen (--no-freeze)", unfrozen, base, {})
    print(f"\nmedian baseline time beside a busy agent: frozen {f / base:.2f}x quiet (target <= 1.3x: "
          f"{'MET' if f / base <= 1.3 else 'MISSED'}), not frozen {u / base:.2f}x quiet")


if __name__ == "__main__":
    main()
