"""The model gateway's cost: added latency per call and calls per second through it, against the
same fake API called directly.

    .venv/bin/python benchmarks/gateway.py [--n 200] [--rounds 3] [--threads 8]

Each call is one Anthropic Messages request (~2 KB) with a small streamed answer, on a fresh
connection (as the gateway serves one call per connection): direct = HTTP to the fake over
TCP; gateway = the trial's Unix socket (the secret sent first), admission against the limits,
the transcript and raw-exchange logs written, the call forwarded to the same fake. Prints,
per round, the median and 10th/90th percentile of one call's latency (sequential calls) and
the calls per second with `--threads` clients at once (the fake's listen queue holds 5:
more at once measures its SYN drops); the spread over rounds is the noise.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import subprocess  # noqa: E402

from agents.gateway import Gateway, socket_dir  # noqa: E402
from agents.react import Budget, Transcript  # noqa: E402
from results.registry import ModelSpec  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
#: the fake API in a process of its own (its threads do not share this process's interpreter lock)
FAKE = """import sys
from tests.agents.fake_api import FakeAPI, Step
with FakeAPI([Step(text="ok", usage=(500, 20))], repeat_last=True) as api:
    print(api.url, flush=True)
    sys.stdin.read()
"""

BODY = json.dumps({"model": "m", "max_tokens": 64, "stream": True,
                   "messages": [{"role": "user", "content": "Make the training loop faster. " * 60}]}).encode()


def _post(conn: http.client.HTTPConnection) -> None:
    conn.request("POST", "/v1/messages", body=BODY, headers={"content-type": "application/json", "x-api-key": "x"})
    r = conn.getresponse()
    r.read()
    conn.close()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}")


def _direct(url: str):
    port = int(url.rsplit(":", 1)[1])
    return lambda: _post(http.client.HTTPConnection("127.0.0.1", port, timeout=60))


def _via(gw: Gateway):
    class Conn(http.client.HTTPConnection):
        def connect(self):
            self.sock = gw.connect()
    return lambda: _post(Conn("sandbox", timeout=60))


def latencies(call, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        out.append(time.perf_counter() - t)
    return out


def throughput(call, n: int, threads: int) -> float:
    left = [n]
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            call()
    ts = [threading.Thread(target=worker) for _ in range(threads)]
    t = time.perf_counter()
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    return n / (time.perf_counter() - t)


def _pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="calls per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=4, help="clients at once for the throughput figure")
    args = ap.parse_args()
    os.environ["ANTHROPIC_API_KEY"] = "sk-bench-not-a-key"
    rows = []
    fake = subprocess.Popen([sys.executable, "-c", FAKE], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True)
    url = fake.stdout.readline().strip()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ANTHROPIC_BASE_URL"] = url
        d = socket_dir(os.getuid())
        budget = Budget(10 ** 9, None, None, None, 10 ** 6, None)
        with Gateway(ModelSpec("anthropic", "m"), budget, Transcript(Path(tmp) / "t.jsonl"), d / "gw.sock",
                     Path(tmp) / "raw") as gw:
            direct, via = _direct(url), _via(gw)
            latencies(direct, 20), latencies(via, 20)  # warm-up
            for r in range(args.rounds):
                ld, lg = latencies(direct, args.n), latencies(via, args.n)
                td, tg = throughput(direct, args.n, args.threads), throughput(via, args.n, args.threads)
                rows.append((statistics.median(ld), statistics.median(lg), td, tg))
                print(f"round {r + 1}: latency direct {1e3 * statistics.median(ld):.2f} ms "
                      f"(p10 {1e3 * _pct(ld, .1):.2f}, p90 {1e3 * _pct(ld, .9):.2f}), gateway "
                      f"{1e3 * statistics.median(lg):.2f} ms (p10 {1e3 * _pct(lg, .1):.2f}, p90 {1e3 * _pct(lg, .9):.2f}); "
                      f"throughput x{args.threads}: direct {td:.0f}/s, gateway {tg:.0f}/s", flush=True)
        d.rmdir()
    fake.communicate("")
    added = [g - dd for dd, g, _, _ in rows]
    print(f"added latency per call: median {1e3 * statistics.median(added):.2f} ms "
          f"(rounds {', '.join(f'{1e3 * a:.2f}' for a in added)}); calls/s through the gateway: "
          f"{', '.join(f'{tg:.0f}' for *_, tg in rows)} vs direct {', '.join(f'{td:.0f}' for *_, td, _ in rows)}")


if __name__ == "__main__":
    main()
