"""`rdbench report RUN`: one self-contained HTML file (inline CSS, JS and plot; no network).

Summary tables (this run, and every indexed run of the same tasks), the trend plot, and
per trial the verdict, timings, the agent's diff against the baseline and the transcript,
sub-agents nested and collapsible. Everything that comes from a run (agent text, tool
output, diffs, error messages) is HTML-escaped.
"""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path

from .aggregate import COLUMNS, Group, aggregate, table_cells
from .records import RunError, TrialResult, load_run
from .registry import ModelInfo
from .store import Store, StoreError, run_trials, trial_row
from .summary import fmt_value

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}h3{margin:.2em 0}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 7px;text-align:right}
td.l,th.l{text-align:left}th{background:#f4f4f4}
.correct{color:#176e1d;font-weight:600}.failed{color:#a66a00;font-weight:600}.infra{color:#b00020;font-weight:600}
pre{background:#f8f8f8;border:1px solid #e4e4e4;padding:6px;overflow-x:auto;white-space:pre-wrap;
word-break:break-word;max-height:40em;overflow-y:auto;margin:.3em 0}
.add{color:#176e1d}.del{color:#b00020}.hunk{color:#6a3fa0}
details{margin:.35em 0}summary{cursor:pointer}
details.trial{border:1px solid #ccc;border-radius:4px;padding:.4em .8em}
details.sub{border-left:3px solid #6a8fd8;padding-left:.8em;margin-left:.4em}
.ev{margin:.4em 0}.ctx{background:#fff8e1}.tag{display:inline-block;min-width:7em;color:#555;font-size:.9em}.err{color:#b00020}
.meta td{text-align:left}img{max-width:100%}
"""

JS = """
function setAll(open){document.querySelectorAll('details').forEach(function(d){d.open=open;});}
document.getElementById('expand-all').addEventListener('click',function(){setAll(true);});
document.getElementById('collapse-all').addEventListener('click',function(){setAll(false);});
document.body.setAttribute('data-ready','1');
"""

TRIAL_COLUMNS = ["trial", "verdict", "value [95% CI]", "A/A noise", "time", "note"]
VERDICT_CLASS = {"correct": "correct", "failed": "failed", "infra error": "infra"}


def e(x) -> str:
    return escape("" if x is None else str(x), quote=True)


def html_table(head: list[str] | None, rows: list[list[str]], left: int = 1, raw: bool = False, id: str = "") -> str:
    """A table (no header row when `head` is None); the first `left` columns left-aligned.
    Cells are escaped unless raw."""
    def cls(i):
        return ' class="l"' if i < left else ""
    attr = f' id="{e(id)}"' if id else ""
    out = [f"<table{attr}>"]
    if head:
        out.append("<tr>" + "".join(f"<th{cls(i)}>{e(h)}</th>" for i, h in enumerate(head)) + "</tr>")
    for r in rows:
        out.append("<tr>" + "".join(f"<td{cls(i)}>{c if raw else e(c)}</td>" for i, c in enumerate(r)) + "</tr>")
    return "\n".join(out) + "</table>"


def groups_html(groups: list[Group], id: str) -> str:
    if not groups:
        return "<p>no trials</p>"
    return html_table(list(COLUMNS), [table_cells(g) for g in groups], left=2, id=id)


def diff_html(patch: str) -> str:
    lines = []
    for line in patch.splitlines():
        cls = ("hunk" if line.startswith("@@") else "add" if line.startswith("+") and not line.startswith("+++")
               else "del" if line.startswith("-") and not line.startswith("---") else "")
        lines.append(f'<span class="{cls}">{e(line)}</span>' if cls else e(line))
    return "<pre class=diff>" + "\n".join(lines) + "</pre>"


def call_text(call: dict) -> str:
    """A tool call as its name and arguments, string arguments (a file's content) as they are."""
    args = call.get("args") if isinstance(call.get("args"), dict) else {"args": call.get("args")}
    lines = [f"{call.get('name')}:"]
    for k, v in args.items():
        v = v if isinstance(v, str) else json.dumps(v)
        lines.append(f"  {k}:" + (f"\n{v}" if "\n" in v else f" {v}"))
    return "\n".join(lines)


def event_html(ev: dict) -> str:
    kind = ev.get("type")
    if kind == "start":
        return (f'<div class=ev><span class=tag>start</span> {e(ev.get("model"))}'
                f'<details><summary>system prompt</summary><pre>{e(ev.get("system"))}</pre></details>'
                f'<pre>{e(ev.get("user"))}</pre></div>')
    if kind == "model_call":
        calls = "".join(f"<pre>{e(call_text(c))}</pre>" for c in ev.get("tool_calls") or [])
        text = f'<pre>{e(ev.get("text"))}</pre>' if ev.get("text") else ""
        return (f'<div class=ev><span class=tag>model call {e(ev.get("turn"))}</span> {e(ev.get("input_tokens"))} in /'
                f' {e(ev.get("output_tokens"))} out tokens, {e(ev.get("latency_s"))} s{text}{calls}</div>')
    if kind == "tool_result":
        err = " err" if ev.get("is_error") else ""
        out = str(ev.get("output", ""))
        return (f'<div class="ev{err}"><span class=tag>tool result</span> {e(ev.get("name"))}'
                f'{" (error)" if ev.get("is_error") else ""}, {len(out)} characters'
                f'<details{" open" if len(out) < 600 else ""}><summary>output</summary><pre>{e(out)}</pre>'
                "</details></div>")
    if kind == "elision":
        return (f'<div class="ev ctx"><span class=tag>elision</span> {e(ev.get("outputs"))} old tool outputs elided'
                f' (the last {e(ev.get("kept_turns"))} turns kept): {e(ev.get("tokens_before"))} -> '
                f'{e(ev.get("tokens_after"))} tokens</div>')
    if kind == "compaction":
        return (f'<div class="ev ctx"><span class=tag>compaction</span> {e(ev.get("reason"))}: '
                f'{e(ev.get("tokens_before"))} -> {e(ev.get("tokens_after"))} tokens, the last '
                f'{e(ev.get("kept_turns"))} turns kept<details><summary>summary</summary>'
                f'<pre>{e(ev.get("summary"))}</pre></details></div>')
    if kind == "context_overflow":
        return (f'<div class="ev ctx err"><span class=tag>context overflow</span> the provider refused '
                f'{e(ev.get("estimated_tokens"))} tokens (window {e(ev.get("window"))} -> '
                f'{e(ev.get("new_window"))})<pre>{e(ev.get("error"))}</pre></div>')
    if kind == "cli":  # an installed agent (agents/installed.py): which CLI ran, and how
        return (f'<div class=ev><span class=tag>cli</span> {e(ev.get("name"))} {e(ev.get("version"))}'
                f'<pre>{e(ev.get("command"))}</pre></div>')
    if kind == "refused":  # the model gateway refused a request from the sandbox
        return (f'<div class="ev err"><span class=tag>refused</span> {e(ev.get("method"))} {e(ev.get("path"))}: '
                f'{e(ev.get("status"))} {e(ev.get("reason"))}</div>')
    if kind in ("stop", "end"):
        fields = ", ".join(f"{k}: {v}" for k, v in ev.items() if k not in ("type", "agent", "t"))
        return f'<div class=ev><span class=tag>{e(kind)}</span> {e(fields)}</div>'
    return f'<div class=ev><span class=tag>{e(kind)}</span><pre>{e(json.dumps(ev, indent=1))}</pre></div>'


def transcript_html(events: list[dict]) -> str:
    """Events in order; a sub-agent's (agent "main.sub1", ...) in a <details> nested where it
    started, closed when its parent's events resume."""
    out, stack = [], ["main"]
    for ev in events:
        who = str(ev.get("agent") or "main")
        while len(stack) > 1 and not (who == stack[-1] or who.startswith(stack[-1] + ".")):
            stack.pop()
            out.append("</details>")
        if who != stack[-1]:
            stack.append(who)
            task = ev.get("user", "") if ev.get("type") == "start" else ""
            out.append(f'<details class=sub open><summary>sub-agent {e(who)}: {e(str(task)[:160])}</summary>')
        out.append(event_html(ev))
    out.extend("</details>" for _ in stack[1:])
    return "\n".join(out)


def read_events(path: Path) -> list[dict]:
    events = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            events.append({"type": "unparsable line", "line": line})
    return events


def trial_html(r: TrialResult, d: Path) -> str:
    v, u = r.verdict, r.usage
    meta = [["verdict", f'<span class="{VERDICT_CLASS[v]}">{e(v)}</span>'],
            ["value [95% CI]", e(fmt_value(r))], ["metric", e(r.metric)],
            ["A/A noise", e(f"{r.aa_noise:.1%}" if r.aa_noise is not None else "-")],
            ["baseline s", e(", ".join(f"{x:.4g}" for x in r.baseline_s) or "-")],
            ["candidate s", e(", ".join(f"{x:.4g}" for x in r.candidate_s) or "-")],
            ["phases", e(", ".join(f"{k} {s:.1f}s" for k, s in r.phases.items()))],
            ["tokens", e(f"{u.input_tokens} in / {u.output_tokens} out"
                         + (f" ({u.cache_read_tokens} read from and {u.cache_write_tokens} written to the cache)"
                            if u.cache_read_tokens or u.cache_write_tokens else ""))],
            ["model settings", e(", ".join(f"{k}={v}" for k, v in sorted(r.model_settings.items())))],
            ["context", e(f"{u.elisions} elisions, {u.compactions} compactions" if u.elisions or u.compactions
                          else "")],
            ["cost", e("unknown" if u.cost_usd is None else f"${u.cost_usd:.4f}")],
            ["stop reason", e(r.stop_reason)], ["flagged", e(r.flagged)], ["error", e(r.error)]]
    body = [html_table(None, [m for m in meta if m[1] not in ("", "None")], left=2, raw=True)]
    for name, details in (("verifier details", r.verifier_details), ("trial details", r.details)):
        if details:
            body.append(f'<details><summary>{name}</summary><pre>{e(json.dumps(details, indent=1))}</pre></details>')
    patch = d / "submission.patch"
    if patch.is_file():
        text = patch.read_text(errors="replace")
        n = sum(1 for line in text.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---"))
        body.append(f"<details><summary>diff against the baseline ({n} changed lines)</summary>"
                    f"{diff_html(text) if text else '<p>no change</p>'}</details>")
    transcript = d / "transcript.jsonl"
    if transcript.is_file():
        events = read_events(transcript)
        body.append(f"<details open><summary>transcript ({len(events)} events)</summary>{transcript_html(events)}"
                    "</details>")
    tid = r.trial_id
    return (f'<details class=trial id="trial-{e(tid)}" open><summary><h3 style="display:inline">{e(tid)}: '
            f'<span class="{VERDICT_CLASS[v]}">{e(v)}</span> {e(fmt_value(r))}</h3></summary>'
            + "\n".join(body) + "</details>")


def write_report(run_dir: Path, out: Path, store: Store, registry: dict[str, ModelInfo]) -> None:
    """Raises ValueError for a folder that is not a run."""
    try:
        config = load_run(run_dir)
    except RunError as err:
        raise ValueError(str(err)) from None
    trials = run_trials(run_dir, config.tasks, store.tasks)
    here = aggregate([trial_row(r, d) for r, d in trials], registry)
    names = sorted({r.task for r, _ in trials} | set(store.task_fields(config.tasks)))
    try:
        store.index_run(run_dir)  # idempotent: this run is in the comparison and the plot
        everywhere = aggregate(store.rows(tasks=names), registry)
    except StoreError as err:
        everywhere, note = here, f"<p>results index unavailable ({e(err)}): this run only</p>"
    else:
        note = f"<p>every run indexed in {e(store.path)}</p>"
    from .trends import png_bytes

    png = base64.b64encode(png_bytes(everywhere, registry, names)).decode()
    verdict_rows = []
    for r, _ in trials:
        tid = r.trial_id
        verdict_rows.append([f'<a href="#trial-{e(tid)}">{e(tid)}</a>',
                             f'<span class="{VERDICT_CLASS[r.verdict]}">{e(r.verdict)}</span>', e(fmt_value(r)),
                             e(f"{r.aa_noise:.1%}" if r.aa_noise is not None else "-"),
                             e(f"{sum(r.phases.values()):.1f}s"), e(r.error or r.flagged or r.stop_reason or "")])
    meta = [["run", config.run_id], ["folder", str(run_dir.resolve())], ["agent", config.agent.name],
            ["model", config.agent.model or "-"], ["tasks", ", ".join(config.tasks)], ["trials per task", config.trials],
            ["created", config.created_at]]
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>rdbench run {e(config.run_id)}</title>
<style>{CSS}</style></head><body>
<h1>rdbench run {e(config.run_id)}</h1>
{html_table(None, [[k, str(v)] for k, v in meta], left=2)}
<p><button id="expand-all">expand all</button> <button id="collapse-all">collapse all</button></p>
<h2>Summary: this run</h2>
{groups_html(here, "summary-run")}
<h2>Summary: every indexed run of these tasks</h2>
{note}
{groups_html(everywhere, "summary-all")}
<h2>Trend</h2>
<img id="trend" alt="trend plot: speedup or normalised score by model release date" src="data:image/png;base64,{png}">
<h2>Trials</h2>
{html_table(TRIAL_COLUMNS, verdict_rows, left=2, raw=True, id="trials")}
{"".join(trial_html(r, d) for r, d in trials)}
<script>{JS}</script>
</body></html>
"""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html)
