"""The kernel tasks on a real GPU, in one command (issue 21): what a session with a GPU runs.

For every Triton task: the oracle's speedup against PyTorch eager (its CI, and the ratio
against torch.compile) and the naive workspace's; then KernelBench level-1 problems imported
with `rdbench tasks import kernelbench`, each unchanged starting point verified, and a Triton
ModelNew for the softmax problem; then every cheat of tests/tasks/test_kernels.py
(tests/tasks/kernel_cheats.py, the side stream included: each must fail, for its reason; one
timed repeat). One line is
printed per verification (with its seconds: the targets are 30 s for a kernel oracle, 3
repeats, and 20 s for a KernelBench problem), and the JSON (--out) is rewritten after each,
so a run cut off still says what it did.

Runs on a bare GPU machine: python3 with CUDA torch and Triton, no Docker, no venv, no
network (the project's pure-Python dependencies from wheels: /work/shared/GPU-RECIPE.md,
README "GPU"). rdbench is called as `python3 -c 'from harness.cli import main ...'` with this
checkout on PYTHONPATH, so no console script is needed.

    python3 benchmarks/kernels_gpu.py [--sandbox local] [--repeats 3] [--out kernels_gpu.json]
                                      [--kernelbench DIR/KernelBench/level1] [--budget 480]
    python3 benchmarks/kernels_gpu.py --cpu-rehearsal      # no GPU: a small run in the interpreter

Rehearsed on a CPU machine (2026-12-07): `--cpu-rehearsal` with PATH's python3 a system
Python the run uids can execute, CPU torch and Triton on PYTHONPATH, RDBENCH_BENCH_TMP
outside /tmp, bubblewrap on: 10 verifications in 82 s, the oracle, the starting point and
both KernelBench problems (imported with --sandbox local) correct, each cheat incorrect for
its reason.

`--sandbox local` (the default) needs no Docker (run it as root: the local backend's run
users); `--sandbox docker` needs the NVIDIA container toolkit and a CUDA image. Every
verification holds the GPU through the machine-wide GPU lock (harness/cores.py), one at a time.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.cores import detect_gpus  # noqa: E402
from tests.tasks.kernel_cheats import KERNEL_TASKS, TASKS, catalogue, submission  # noqa: E402

KB_PROBLEMS = ROOT / "tests" / "tasks" / "kernelbench_problems" / "level1"
#: The cheats of --cpu-rehearsal: one of each kind (a cache, a decoy, a forger, a kernel-body escape).
REHEARSED_CHEATS = ("caches outputs (memoised on the input's shape)", "softmax by PyTorch behind a self-checking decoy kernel",
                    "no Triton at all, forged runner files", "kernel body uses __import__")
RDBENCH = "import sys; from harness.cli import main; sys.argv[0] = 'rdbench'; main()"


def kb_softmax_model_new() -> str:
    """The Triton ModelNew of tests/tasks/test_kernelbench.py (read, not imported: no pytest here)."""
    tree = ast.parse((ROOT / "tests" / "tasks" / "test_kernelbench.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["SOFTMAX"]:
            return ast.literal_eval(node.value)
    raise LookupError("SOFTMAX is gone from tests/tasks/test_kernelbench.py")


class Bench:
    def __init__(self, args):
        self.args = args
        self.results: dict[str, dict] = {}
        self.start = time.monotonic()
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [
            os.environ.get("PYTHONPATH")] if p]))
        if args.cpu_rehearsal:
            self.env["TRITON_INTERPRET"] = "1"

    def left(self) -> float:
        return self.args.budget - (time.monotonic() - self.start)

    def rdbench(self, *argv: str, timeout: float) -> subprocess.CompletedProcess:
        """`rdbench ARGV`; past `timeout`, it and everything it started are killed (TimeoutExpired)."""
        proc = subprocess.Popen([sys.executable, "-c", RDBENCH, *argv], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=ROOT, env=self.env, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def save(self) -> None:
        if self.args.out:
            tmp = self.args.out.with_suffix(".tmp")
            tmp.write_text(json.dumps({"device": self.device(), "budget_s": self.args.budget,
                                       "elapsed_s": round(time.monotonic() - self.start, 1),
                                       "results": self.results}, indent=2))
            tmp.replace(self.args.out)

    def device(self) -> str | None:
        return next((v["details"].get("device") for v in self.results.values() if v.get("details")), None)

    def verify(self, key: str, task: Path, sub: Path, must_fail: str | None = None, repeats: int | None = None) -> dict:
        """One verification: a line printed, the JSON rewritten."""
        if self.left() < 10:
            v = {"correct": None, "error": "skipped: the benchmark's time budget is spent"}
        else:
            t0 = time.monotonic()
            try:
                r = self.rdbench("verify", str(task), "--submission", str(sub), "--sandbox", self.args.sandbox,
                                 "--repeats", str(repeats or self.args.repeats), timeout=self.left())
                v = (json.loads(r.stdout) if r.returncode in (0, 3)
                     else {"correct": None, "error": (r.stderr or r.stdout)[-2000:]})
            except subprocess.TimeoutExpired:
                v = {"correct": None, "error": "cut off: the benchmark's time budget ran out"}
            v["verify_s"] = round(time.monotonic() - t0, 1)
        if must_fail is not None:
            v["held"] = v.get("correct") is False and must_fail in v.get("details", {}).get("failure", "")
        self.results[key] = v
        print(line(key, v), flush=True)
        self.save()
        return v

    def kernel_tasks(self, tmp: Path) -> None:
        tasks = KERNEL_TASKS[:1] if self.args.cpu_rehearsal else KERNEL_TASKS
        for task in tasks:
            for who in ("oracle", "nop"):
                d = tmp / f"{task}-{who}"
                d.mkdir()
                self.verify(f"{task}/{who}", TASKS / task, submission(d, task, solution=who == "oracle"))

    def cheats(self, tmp: Path) -> None:
        """Every cheat, with one timed repeat (all but the side stream fail before any timing)."""
        cheats = catalogue(gpu=not self.args.cpu_rehearsal)
        if self.args.cpu_rehearsal:  # one of each kind
            cheats = {k: v for k, v in cheats.items() if k in REHEARSED_CHEATS}
        for i, (name, (task, make, reason)) in enumerate(cheats.items()):
            d = tmp / f"cheat-{i}"
            d.mkdir()
            self.verify(f"cheat/{name}", TASKS / task, make(d), must_fail=reason, repeats=1)

    def kernelbench(self, tmp: Path) -> None:
        files = sorted((f for f in self.args.kernelbench.glob("*.py") if f.name.split("_")[0].isdigit()),
                       key=lambda f: int(f.name.split("_")[0]))[:2 if self.args.cpu_rehearsal else 8]
        out = tmp / "kb-tasks"
        t0 = time.monotonic()
        try:
            r = self.rdbench("tasks", "import", "kernelbench", *map(str, files), "--out", str(out),
                             "--sandbox", self.args.import_sandbox or self.args.sandbox, timeout=self.left())
            imported = sorted(out.iterdir()) if out.is_dir() else []
            note = (r.stdout.strip().splitlines() or [""])[-1]
            errors = r.stderr.strip()[-2000:]
        except subprocess.TimeoutExpired:
            imported, note, errors = [], "cut off", "the benchmark's time budget ran out"
        self.results["kernelbench/import"] = {"correct": bool(imported), "files": [f.name for f in files],
                                             "imported": [p.name for p in imported], "note": note, "stderr": errors,
                                             "verify_s": round(time.monotonic() - t0, 1)}
        print(f"  {'kernelbench/import':<60} {len(imported)} of {len(files)} imported: {note} {errors[-200:]}",
              flush=True)
        self.save()
        for task in imported:
            d = tmp / f"kb-{task.name}"
            d.mkdir()
            sub = d / "submission"
            subprocess.run(["cp", "-r", str(task / "workspace"), str(sub)], check=True)
            self.verify(f"kernelbench/{task.name}/unchanged", task, sub)
            if "softmax" in task.name:
                d2 = tmp / f"kb-{task.name}-triton"
                subprocess.run(["cp", "-r", str(task / "workspace"), str(d2)], check=True)
                (d2 / "model_new.py").write_text(kb_softmax_model_new())
                self.verify(f"kernelbench/{task.name}/triton ModelNew", task, d2)

    def summary(self) -> None:
        res = self.results
        cheats = {k: v for k, v in res.items() if k.startswith("cheat/")}
        oracles = {k: v for k, v in res.items() if k.endswith("/oracle")}
        kb = {k: v for k, v in res.items() if k.startswith("kernelbench/") and "verify_s" in v and k != "kernelbench/import"}
        print("cheats that did not fail for their reason: %s" % ([k for k, v in cheats.items() if not v["held"]] or "none"))
        if any(v.get("value") is not None for v in oracles.values()):
            print("oracles not faster than eager: %s" % ([k for k, v in oracles.items() if not (v.get("value") or 0) > 1]
                                                         or "none"))
        else:
            print("no speedup measured (no GPU, or no oracle got that far)")
        print("slowest kernel-oracle verification: %s s (target 30 s); slowest KernelBench verification: %s s "
              "(target 20 s); whole benchmark %.0f s on %s" % (
                  max((v.get("verify_s", 0) for v in oracles.values()), default="-"),
                  max((v.get("verify_s", 0) for v in kb.values()), default="-"), time.monotonic() - self.start,
                  self.device()))


def line(name: str, v: dict) -> str:
    secs = f"{v.get('verify_s', 0):6.1f}s"
    if v.get("correct") is None:
        return f"  {name:<60} {secs} ERROR {v.get('error', '')[-300:]}"
    if not v["correct"]:
        held = {True: " (held)", False: " (NOT its reason)"}.get(v.get("held"), "")
        return f"  {name:<60} {secs} incorrect{held}: {v['details'].get('failure', '')[:140]}"
    d = v["details"]
    ci = v.get("ci") or [float("nan")] * 2
    value = (f"{v['value']:.2f}x [{ci[0]:.2f}, {ci[1]:.2f}] vs eager" if v.get("value") is not None
             else d.get("unavailable", "-")[:80])
    vs_compile = d.get("vs_compile")
    comp = f", {vs_compile:.2f}x vs torch.compile" if vs_compile else f" {d.get('compile_note', '')[:60]}"
    flag = "  FLAGGED: " + v["flagged"] if v.get("flagged") else ""
    return f"  {name:<60} {secs} correct: {value}{comp}{flag}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sandbox", default="local", choices=["local", "docker"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("kernels_gpu.json"))
    ap.add_argument("--kernelbench", type=Path, default=KB_PROBLEMS,
                    help="a KernelBench level-1 folder (its first 8 problems; default: the test problems)")
    ap.add_argument("--import-sandbox", choices=["local", "docker"], default=None,
                    help="where `tasks import kernelbench` probes the problems (default: --sandbox)")
    ap.add_argument("--budget", type=float, default=480, help="seconds for the whole benchmark (default 8 minutes)")
    ap.add_argument("--cpu-rehearsal", action="store_true",
                    help="no GPU: the same path in the Triton interpreter, on one task, four cheats, two problems")
    args = ap.parse_args()
    if not args.cpu_rehearsal and not detect_gpus():
        sys.exit("no NVIDIA GPU here (nvidia-smi lists none): this benchmark needs one (or --cpu-rehearsal)")
    bench = Bench(args)
    with tempfile.TemporaryDirectory(prefix="kernels-gpu-", dir=os.environ.get("RDBENCH_BENCH_TMP")) as tmp:
        os.chmod(tmp, 0o755)  # the local backend's run users read the submissions from here
        print("kernel tasks: oracles and starting points", flush=True)
        bench.kernel_tasks(Path(tmp))
        print("KernelBench level 1", flush=True)
        bench.kernelbench(Path(tmp))
        print("cheats (each must fail, for its reason)", flush=True)
        bench.cheats(Path(tmp))
    bench.summary()
    bench.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
