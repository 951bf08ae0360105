"""`rdbench report`: one self-contained HTML file, loaded in a real headless Chromium
(Debian's `chromium`): no console errors, the expected numbers on the page, agent text
escaped, sub-agents nested."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from results.records import TrialResult
from tests.agents.fake_api import FakeAPI, Step, submit
from tests.conftest import TASKS, rdbench

SIEVE = (TASKS / "py-primes" / "solution" / "solve.py").read_text()
INJECTION = '<script>console.error("injected")</script><img src=x onerror="console.error(\'img\')">'


def chromium(page: Path, tmp_path: Path) -> tuple[str, list[str]]:
    """Load a page in headless Chromium: (the DOM after scripts ran, console messages)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("the report test needs Debian's chromium (bash .ci/setup installs it)")
    r = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
                        "--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0 and "</html>" in r.stdout, r.stderr[-3000:]
    return r.stdout, [line for line in r.stderr.splitlines() if ":CONSOLE" in line]


def test_the_browser_check_sees_console_errors(tmp_path):
    """The check itself can fail: a page with a script error is caught."""
    page = tmp_path / "bad.html"
    page.write_text('<!doctype html><html><body><p>12.34x</p><script>console.error("boom"); nope();</script>'
                    "</body></html>")
    dom, console = chromium(page, tmp_path)
    assert "12.34x" in dom
    assert any("boom" in line for line in console) and any("nope is not defined" in line for line in console)


class SubAgentText(HTMLParser):
    """The text inside <details class="sub"> elements, and the text outside them."""

    def __init__(self):
        super().__init__()
        self.depth, self.sub_at, self.inside, self.outside = 0, None, [], []

    def handle_starttag(self, tag, attrs):
        if tag == "details":
            self.depth += 1
            if self.sub_at is None and ("class", "sub") in attrs:
                self.sub_at = self.depth

    def handle_endtag(self, tag):
        if tag == "details":
            if self.sub_at == self.depth:
                self.sub_at = None
            self.depth -= 1

    def handle_data(self, data):
        (self.inside if self.sub_at is not None else self.outside).append(data)


@pytest.fixture(scope="module")
def react_run(base_image, tmp_path_factory):
    """A real LLM-agent trial (against the local fake API) that delegates to a sub-agent and
    writes HTML into its transcript."""
    root = tmp_path_factory.mktemp("react-runs")
    script = [Step(text=INJECTION, tool_calls=[("delegate", {"task": "Replace solve.py with a sieve."})]),
              Step(text="sub-agent at work", tool_calls=[("create", {"path": "solve.py", "content": SIEVE})]),
              Step(tool_calls=[("report", {"report": "sieve written </details></pre><b>bold</b>"})]),
              submit("main agent submits")]
    with FakeAPI(script) as api:
        r = rdbench("run", "py-primes", "--model", "anthropic/claude-opus-4-5", "--repeats", "3",
                    "--out", str(root / "react"),
                    env={"ANTHROPIC_BASE_URL": api.url, "ANTHROPIC_API_KEY": "test-key-not-real", "RDBENCH_DB": ""})
    assert r.returncode == 0, r.stderr
    return root / "react"


@pytest.mark.docker
def test_report_of_an_llm_run_in_a_real_browser(react_run, tmp_path):
    out = tmp_path / "report.html"
    r = rdbench("report", str(react_run), "--out", str(out))
    assert r.returncode == 0, r.stderr
    html = out.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "the report must not need a network"
    dom, console = chromium(out, tmp_path)
    assert console == [], console
    assert 'data-ready="1"' in dom  # the page's own script ran to its end
    (group,) = json.loads(rdbench("results", "--format", "json", "--db", str(react_run.parent / "results.db")).stdout)
    assert group["label"] == "Claude Opus 4.5"
    assert f"{group['geomean']:.2f}x [{group['geomean_ci_low']:.2f}, {group['geomean_ci_high']:.2f}]" in dom
    (trial,) = [TrialResult.model_validate_json(p.read_text()) for p in react_run.glob("trials/*/trial.json")]
    assert f"{trial.value:.2f}x [{trial.ci[0]:.2f}, {trial.ci[1]:.2f}]" in dom
    assert f"${trial.usage.cost_usd:.4f}" in dom and trial.usage.cost_usd > 0
    # agent text is shown as text, never run as markup
    assert "&lt;script&gt;console.error(\"injected\")&lt;/script&gt;" in dom and "<b>bold</b>" not in dom
    # the diff, and the sub-agent's events nested in their own collapsible block
    assert "+++ b/solve.py" in dom and "Eratosthenes" in dom
    parser = SubAgentText()
    parser.feed(dom)
    inside, outside = "".join(parser.inside), "".join(parser.outside)
    assert "sub-agent main.sub1: Replace solve.py with a sieve." in inside
    assert "sub-agent at work" in inside and "report" in inside and "sieve written" in inside
    assert "main agent submits" in outside and "sub-agent at work" not in outside
    png = re.search(r'id="trend"[^>]*src="data:image/png;base64,([^"]+)"', html)
    assert png and base64.b64decode(png.group(1))[:4] == b"\x89PNG"


@pytest.mark.docker
def test_report_of_the_oracle_run_shows_its_numbers(primes_runs, tmp_path):
    out = tmp_path / "oracle.html"
    r = rdbench("report", str(primes_runs.oracle), "--out", str(out))
    assert r.returncode == 0, r.stderr
    dom, console = chromium(out, tmp_path)
    assert console == [], console
    groups = {g["label"]: g for g in json.loads(
        rdbench("results", "--format", "json", "--db", str(primes_runs.db)).stdout)}
    for g in groups.values():  # this run's row, and the nop run's in the comparison across runs
        assert f"{g['geomean']:.2f}x [{g['geomean_ci_low']:.2f}, {g['geomean_ci_high']:.2f}]" in dom
    for p in primes_runs.oracle.glob("trials/*/trial.json"):
        t = TrialResult.model_validate_json(p.read_text())
        assert f"{t.value:.2f}x [{t.ci[0]:.2f}, {t.ci[1]:.2f}]" in dom
        assert f"{t.baseline_s[0]:.4g}" in dom
    assert "+++ b/solve.py" in dom  # the oracle's diff against the baseline


def test_report_of_a_folder_that_is_no_run(tmp_path):
    r = rdbench("report", str(tmp_path), "--out", str(tmp_path / "x.html"))
    assert r.returncode == 1 and "not a run folder" in r.stderr
