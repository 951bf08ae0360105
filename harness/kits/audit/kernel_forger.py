

# ---- escape (rdbench tasks audit): no Triton at all (this line says @triton.jit, for a text
# check), and at exit the runner's result files are rewritten: the report claims a launch per
# call (a no-launch run gets NaN outputs instead) and its timings are divided by 100 ----
import atexit as rdbench_atexit
import glob as rdbench_glob
import json as rdbench_json
import os as rdbench_os
import sys as rdbench_sys


def rdbench_forge():
    import torch
    try:
        with open(rdbench_sys.argv[-1]) as f:
            job = rdbench_json.load(f)
        results = job["results"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    outputs = rdbench_glob.glob(rdbench_os.path.join(results, "*.pt"))
    if job.get("mode") == "noop":
        for path in outputs:
            torch.save(torch.full_like(torch.load(path), float("nan")), path)
        return
    try:
        with open(rdbench_os.path.join(results, "report.json")) as f:
            report = rdbench_json.load(f)
    except (OSError, ValueError):
        report = {"calls": []}
    for call in report.get("calls", []):
        call["launches"] = 1
        call.pop("problems", None)
        plan = call.get("plan") or {"inputs": [1], "out": 2}
        plan["launches"] = [{"kernel": "kernel", "file": "MODULE.py", "grid": [1], "args": {}, "options": {}}]
        call["plan"] = plan
    for timing in report.get("timings", []):
        timing["launches"] = 20
        timing["wall_s"] = [t / 100 for t in timing.get("wall_s", [])]
        timing["event_s"] = [t / 100 for t in timing.get("event_s", []) or []]
    report["kernels"] = ["kernel"]
    with open(rdbench_os.path.join(results, "report.json"), "w") as f:
        rdbench_json.dump(report, f)


rdbench_atexit.register(rdbench_forge)
