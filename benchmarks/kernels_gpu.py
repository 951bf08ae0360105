"""The Triton kernel tasks on a real GPU: what a session with a GPU runs to close issue 7.

For every kernel task: the oracle's measured speedup against PyTorch eager (with its CI and
the speedup against torch.compile), the naive workspace's, and the verdict on every cheat of
tests/tasks/test_kernels.py (each must fail), the side-stream cheat included.

    .venv/bin/python benchmarks/kernels_gpu.py [--sandbox local|docker] [--repeats 3] [--out kernels.json]

`--sandbox local` (the default) runs on a GPU box without Docker: the verifier and the runner
are host processes of the calling user (no isolation: run it only on these known
submissions). It needs python3 with a CUDA build of torch and triton on PATH. With
`--sandbox docker`, the engine needs the NVIDIA container toolkit, and the base image a CUDA
torch. Every grading holds the GPU through the machine-wide GPU lock (harness/cores.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.cores import detect_gpus  # noqa: E402
from tests.tasks.test_kernels import CHEATS, KERNEL_TASKS, PRELUDE, SIDE_STREAM, submission  # noqa: E402


def grade(task: str, sub: Path, sandbox: str, repeats: int) -> dict:
    exe = Path(sys.executable).with_name("rdbench")
    r = subprocess.run([str(exe), "verify", str(ROOT / "tasks" / task), "--submission", str(sub), "--sandbox", sandbox,
                        "--repeats", str(repeats)], capture_output=True, text=True, cwd=ROOT, timeout=3600)
    if r.returncode not in (0, 3):
        return {"correct": None, "error": (r.stderr or r.stdout)[-2000:]}
    return json.loads(r.stdout)


def line(name: str, v: dict) -> str:
    if v.get("correct") is None:
        return f"  {name:<60} ERROR {v.get('error', '')[-300:]}"
    if not v["correct"]:
        return f"  {name:<60} failed: {v['details'].get('failure', '')[:140]}"
    d = v["details"]
    ci = v.get("ci") or [float("nan")] * 2
    value = f"{v['value']:.2f}x [{ci[0]:.2f}, {ci[1]:.2f}]" if v.get("value") is not None else d.get("unavailable", "-")
    vs_compile = d.get("vs_compile")
    comp = f", {vs_compile:.2f}x vs torch.compile" if vs_compile else f", {d.get('compile_note', '')[:60]}"
    return f"  {name:<60} correct: {value} vs eager{comp}{'  FLAGGED: ' + v['flagged'] if v.get('flagged') else ''}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sandbox", default="local", choices=["local", "docker"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if not detect_gpus():
        sys.exit("no NVIDIA GPU here (nvidia-smi lists none): this benchmark needs one")
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        def run(key: str, task: str, **edit) -> dict:
            folder = Path(tmp) / key.replace(" ", "_").replace("/", "_")
            folder.mkdir()
            v = grade(task, submission(folder, task, **edit), args.sandbox, args.repeats)
            results[key] = v
            print(line(key, v), flush=True)
            return v

        for task in KERNEL_TASKS:
            print(task, flush=True)
            run(f"{task}/oracle", task)
            run(f"{task}/nop", task, solution=False)
        print("cheats (each must fail)", flush=True)
        for name, (code, _) in {**CHEATS, "runs on a side stream": (SIDE_STREAM, "")}.items():
            run(f"triton-softmax/{name}", "triton-softmax", append=PRELUDE + code)
    cheats_passed = [k for k, v in results.items() if "/oracle" not in k and "/nop" not in k and v.get("correct")]
    slow_oracles = [k for k, v in results.items() if k.endswith("/oracle") and not (v.get("value") or 0) > 1.0]
    print("cheats that passed: %s" % (cheats_passed or "none"))
    print("oracles not faster than eager: %s" % (slow_oracles or "none"))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
