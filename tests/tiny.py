"""A tiny task folder for the fast tier (no Docker): the agent must make workspace/answer.txt
say 42; its verifier, stdlib only, answers in milliseconds with the verdict on the tagged line
(a speedup of 2.0 when correct)."""

from __future__ import annotations

from pathlib import Path

VERIFY = '''import json, os, pathlib
import contract  # the verifier contract (harness/kits/contract.py), copied beside this file
params = contract.read_params(pathlib.Path(contract.PARAMS_FILE).read_text())
answer = pathlib.Path(params.submission, "answer.txt").read_text().strip()
ok = answer == "42"
verdict = {"correct": ok, "metric": "speedup", "value": 2.0 if ok else None, "baseline_s": [0.2], "candidate_s": [0.1],
           "details": {"answer": answer, "repeats": params.repeats}}
print(contract.result_line(os.environ[contract.ENV_TOKEN], verdict), end="")
'''


def tiny_task(root: Path, name: str = "tiny", agent: str = "") -> Path:
    """The task folder `root/name`; `agent`: extra lines of its [agent] table."""
    d = root / name
    for sub in ("workspace", "verifier", "solution"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "workspace" / "answer.txt").write_text("0\n")
    (d / "solution" / "answer.txt").write_text("42\n")
    (d / "verifier" / "verify.py").write_text(VERIFY)
    (d / "instruction.md").write_text("Make answer.txt say 42.\n")
    (d / "task.toml").write_text(f'schema_version = 1\nname = "{name}"\nkind = "speedup"\ndescription = "a tiny task"\n'
                                 f"[agent]\n{agent}\n[verifier]\nrepeats = 2\ntimeout_s = 60\n"
                                 "[scoring]\nreference = 2.0\n")
    return d
