"""Is the cpu-lm-train verifier a good instrument? Three checks, in one run:

1. A/A: the baseline graded against itself; its speedup CI must cover 1.0.
2. The ladder: rungs 1..3 and the reference solution, in order; speedups must increase.
3. The roofline: the reference solution's training FLOPs over the machine's measured fp32
   GEMM throughput (in the sandbox, on the same cores) is a lower bound on its time;
   printed as "the reference solution reaches X % of the machine's peak".

    .venv/bin/python benchmarks/verifier_validity.py [--aa-repeats 3] [--ladder-repeats 1]

Takes about 20 minutes on a 2-core machine (every grading runs the ~95 s baseline).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from sandbox import SandboxConfig
from sandbox.docker import DockerSandbox, client_from_env
from sandbox.images import build_base_image

ROOT = Path(__file__).resolve().parent.parent
TASK = ROOT / "tasks" / "cpu-lm-train"
LADDER = TASK / "solution-ladder"
#: each rung is the ladder's common program plus the rung's own rung.py; the reference solution tops it
RUNGS = [[LADDER / "common", p] for p in sorted(LADDER.glob("[0-9]*")) if p.is_dir()] + [[TASK / "solution"]]

# model shape (see workspace/train.py) and the reference solution's recipe
V, T, L, C, BATCH = 32, 64, 2, 64, 16
PEAK_SCRIPT = """
import time, numpy as np
a = np.random.rand(2048, 2048).astype(np.float32); b = np.random.rand(2048, 2048).astype(np.float32)
a @ b
best = 0.0
for _ in range(5):
    t = time.perf_counter(); a @ b; dt = time.perf_counter() - t
    best = max(best, 2 * 2048 ** 3 / dt)
print(best)
"""


def grade(overlays: list[Path], repeats: int) -> dict:
    """Grade the workspace with `overlays` copied over it, in order."""
    with tempfile.TemporaryDirectory() as tmp:
        sub = Path(tmp) / "sub"
        shutil.copytree(TASK / "workspace", sub)
        for folder in overlays:
            shutil.copytree(folder, sub, dirs_exist_ok=True)
        r = subprocess.run([str(Path(sys.executable).with_name("rdbench")), "verify", str(TASK), "--submission", str(sub),
                            "--repeats", str(repeats)], capture_output=True, text=True, cwd=ROOT)
        if r.returncode not in (0, 3):
            raise SystemExit(f"verify failed: {r.stderr[-2000:]}")
        return json.loads(r.stdout)


def training_flops(steps: int) -> float:
    """Matmul FLOPs of forward+backward (6 per weight per token) plus causal attention."""
    weights = L * (C * 3 * C + C * C + 2 * C * 4 * C) + C * V
    tokens = BATCH * T
    attention = L * 2 * 2 * BATCH * T * T * C * 3  # QK^T and AV, forward and twice in backward
    return steps * (6 * weights * tokens + attention)


def solution_steps() -> int:
    for line in (TASK / "solution" / "train.py").read_text().splitlines():
        if line.startswith("max_steps"):
            return int(line.split("=")[1].split("#")[0])
    raise SystemExit("no max_steps in solution/train.py")


def fmt(v: dict) -> str:
    if not v["correct"]:
        return f"FAILED: {v['details'].get('failure')}"
    ci = v.get("ci") or [float("nan")] * 2
    return (f"{v['value']:7.2f}x  CI [{ci[0]:.2f}, {ci[1]:.2f}]  baseline {min(v['baseline_s']):.1f}-"
            f"{max(v['baseline_s']):.1f} s  candidate {min(v['candidate_s']):.2f}-{max(v['candidate_s']):.2f} s  "
            f"loss {v['details']['candidate_loss'][-1]:.3f} (target {v['details']['target_loss']:.3f})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--aa-repeats", type=int, default=3)
    ap.add_argument("--ladder-repeats", type=int, default=1)
    args = ap.parse_args()
    client = client_from_env()
    image = build_base_image(client)

    aa = grade([], args.aa_repeats)
    covers = aa["correct"] and aa["ci"][0] <= 1.0 <= aa["ci"][1]
    print(f"A/A   baseline vs itself ({args.aa_repeats} repeats): {fmt(aa)}  A/A noise {aa['aa_noise']:.1%}  "
          f"CI covers 1.0: {'yes' if covers else 'NO'}", flush=True)

    values, last = [], None
    for rung in RUNGS:
        v = last = grade(rung, args.ladder_repeats)
        values.append(v["value"] if v["correct"] else 0.0)
        print(f"rung  {rung[-1].relative_to(TASK)}: {fmt(v)}", flush=True)
    increasing = all(a < b for a, b in zip(values, values[1:]))
    print(f"ladder speedups increase: {'yes' if increasing else 'NO'} ({' < '.join(f'{x:.1f}' for x in values)})")

    with DockerSandbox(SandboxConfig(image=image, cpuset="0,1"), client) as sb:
        sb.write_file("/tmp/peak.py", PEAK_SCRIPT.encode())
        peak = float(sb.exec(["python3", "/tmp/peak.py"], timeout=300).stdout)
    flops = training_flops(solution_steps())
    bound = flops / peak
    sol_time = min(last["candidate_s"])  # RUNGS ends with the reference solution
    print(f"roofline: reference trains {flops / 1e9:.0f} GFLOP; measured fp32 GEMM peak {peak / 1e9:.0f} GFLOP/s "
          f"-> lower bound {bound:.2f} s; it takes {sol_time:.2f} s: the reference solution reaches "
          f"{100 * bound / sol_time:.1f} % of the machine's peak")
    return 0 if covers and increasing else 1


if __name__ == "__main__":
    sys.exit(main())
