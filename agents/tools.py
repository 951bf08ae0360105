"""The LLM agent's tools: their schemas, the check of a call's arguments against them, and
their execution in the sandbox.

Whatever a model sends is checked before it runs: arguments that are not a JSON object, a
missing or mistyped argument, a timeout that is not a finite positive number. Every such
mistake is a ToolError, which goes back to the model as a tool error; a SandboxError passes
(the caller decides whose fault it was).
"""

from __future__ import annotations

import math
import posixpath
from typing import Any

from sandbox import Sandbox, SandboxError, SandboxFileNotFound

from . import ToolSpec

OUTPUT_CAP = 10_000
BASH_TIMEOUT_DEFAULT = 120.0
BASH_TIMEOUT_MAX = 600.0

TOOLS = [
    ToolSpec("bash", "Run a bash command in /workspace. Returns exit code, stdout and stderr (long output is cut).",
             {"type": "object", "properties": {"command": {"type": "string"},
                                               "timeout": {"type": "number", "description": "seconds, default 120"}},
              "required": ["command"]}),
    ToolSpec("view", "Show a file with line numbers, or list a folder.",
             {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}),
    ToolSpec("create", "Create or overwrite a file with the given content.",
             {"type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
              "required": ["path", "content"]}),
    ToolSpec("str_replace", "Replace the one exact occurrence of old_str in a file with new_str.",
             {"type": "object", "properties": {"path": {"type": "string"}, "old_str": {"type": "string"},
                                               "new_str": {"type": "string"}},
              "required": ["path", "old_str", "new_str"]}),
]
SUBMIT = ToolSpec("submit", "End the attempt: /workspace as it is now is graded.",
                  {"type": "object", "properties": {"summary": {"type": "string"}}})
DELEGATE = ToolSpec(
    "delegate", "Start a sub-agent on a sub-task. It shares this sandbox, has its own context and a share of the "
    "budget, and its final report comes back as this tool's result.",
    {"type": "object", "properties": {"task": {"type": "string", "description": "what the sub-agent must do"}},
     "required": ["task"]})
REPORT = ToolSpec("report", "End your sub-task and hand your report to the agent that started you.",
                  {"type": "object", "properties": {"report": {"type": "string"}}, "required": ["report"]})
SPECS = {t.name: t for t in [*TOOLS, SUBMIT, DELEGATE, REPORT]}


class ToolError(Exception):
    """What the model did wrong with a tool: goes back to it as a tool error."""


class Unparsable:
    """Arguments that were not JSON at all (kept as the model sent them, for the transcript)."""

    def __init__(self, text: Any):
        self.text = text

    def __repr__(self) -> str:
        return f"unparsable arguments {str(self.text)[:200]!r}"


_TYPES = {"string": str, "number": (int, float), "integer": int, "boolean": bool, "object": dict, "array": list}


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def check_args(name: str, args: Any) -> dict:
    """`args` checked against tool `name`'s schema: an object, required keys present, known keys
    of the right type (null for an optional key means absent). Returns the arguments to use.
    Raises ToolError saying what is wrong."""
    spec = SPECS.get(name)
    if spec is None:
        raise ToolError(f"unknown tool {name!r}; the tools are {', '.join(SPECS)}")
    if isinstance(args, Unparsable):
        raise ToolError(f"{name}: the arguments are not valid JSON: {str(args.text)[:200]!r}")
    if not isinstance(args, dict):
        raise ToolError(f"{name}: the arguments must be a JSON object, got {_kind(args)}")
    props, required = spec.parameters.get("properties", {}), spec.parameters.get("required", [])
    args = {k: v for k, v in args.items() if v is not None or k in required}
    missing = [k for k in required if k not in args]
    if missing:
        raise ToolError(f"{name}: missing argument{'s' * (len(missing) > 1)} {', '.join(map(repr, missing))}")
    for key, value in args.items():
        want = props.get(key, {}).get("type")
        if want is None:
            continue  # an unknown key: JSON schema allows it, and the tool ignores it
        ok = isinstance(value, _TYPES[want]) and (want == "boolean" or not isinstance(value, bool))
        if not ok:
            raise ToolError(f"{name}: argument {key!r} must be a {want}, got {_kind(value)}")
        if want == "number" and not math.isfinite(value):
            raise ToolError(f"{name}: argument {key!r} must be a finite number, got {value}")
    return args


def bash_timeout(args: dict, time_left: float | None) -> tuple[float, str]:
    """The timeout of one bash call: the model's (default 120 s), at most 600 s and at most the
    agent's remaining wall time. Returns (seconds, a note when it was clipped)."""
    asked = float(args.get("timeout", BASH_TIMEOUT_DEFAULT))
    if asked <= 0:
        raise ToolError(f"bash: timeout must be a positive number of seconds, got {asked:g}")
    timeout, note = min(asked, BASH_TIMEOUT_MAX), ""
    if time_left is not None and time_left < timeout:
        timeout, note = max(1.0, time_left), f" (timeout cut to the agent's remaining time, {max(1.0, time_left):.0f} s)"
    return timeout, note


def _path(p: str) -> str:
    return posixpath.normpath(posixpath.join("/workspace", p))


def cut(text: str, cap: int = OUTPUT_CAP) -> str:
    if len(text) <= cap:
        return text
    return text[: cap // 2] + f"\n[... {len(text) - cap} characters cut ...]\n" + text[-cap // 2:]


def run_tool(sb: Sandbox, name: str, args: Any, time_left: float | None = None) -> str:
    """Check and execute one tool call. Raises ToolError for the model's mistakes (and for any
    failure of the call that is not the sandbox's own); SandboxError passes."""
    args = check_args(name, args)
    try:
        return _execute(sb, name, args, time_left)
    except (ToolError, SandboxError):
        raise
    except UnicodeError:
        raise ToolError("not a text file (or text that cannot be encoded)") from None
    except Exception as e:  # nothing the model sends may crash the loop
        raise ToolError(f"{name} failed: {type(e).__name__}: {e}") from None


def _execute(sb: Sandbox, name: str, args: dict, time_left: float | None) -> str:
    try:
        if name == "bash":
            timeout, note = bash_timeout(args, time_left)
            r = sb.exec(args["command"], cwd="/workspace", timeout=timeout)
            head = f"exit code {r.returncode}" + (f" (timed out after {timeout:.0f} s)" if r.timed_out else "") + note
            return cut(f"{head}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")
        if name == "view":
            path = _path(args["path"])
            r = sb.exec(["test", "-d", path])
            if r.returncode == 0:
                return cut(sb.exec(["ls", "-la", path]).stdout)
            text = sb.read_file(path).decode("utf-8", "replace")
            return cut("".join(f"{i:6d}\t{line}\n" for i, line in enumerate(text.splitlines(), 1)))
        if name == "create":
            sb.write_file(_path(args["path"]), args["content"].encode())
            return f"wrote {len(args['content'])} characters to {_path(args['path'])}"
        if name == "str_replace":
            path = _path(args["path"])
            text = sb.read_file(path).decode()
            n = text.count(args["old_str"])
            if n != 1:
                raise ToolError(f"old_str occurs {n} times in {path}; it must occur exactly once")
            sb.write_file(path, text.replace(args["old_str"], args["new_str"]).encode())
            return f"replaced 1 occurrence in {path}"
    except SandboxFileNotFound as e:
        raise ToolError(str(e)) from None
    raise ToolError(f"{name!r} is not a tool that runs in the sandbox here")
