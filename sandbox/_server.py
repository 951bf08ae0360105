"""The exec server: one persistent process inside each sandbox (stdlib only, Python 3.8+).

It reads one JSON request per line on stdin and answers one JSON line on stdout, so a
tool call costs a pipe round trip and a fork instead of a `docker exec` (~150 ms).
Its stdout carries nothing but answers: commands get pipes of their own.

Requests: {"op": "exec", "cmd": [...], "cwd", "env", "timeout", "max_output", "stream"}
          {"op": "spawn", "cmd": [...], "cwd", "env"} -> {"handle"}: started in the background
          {"op": "poll", "handle"} -> {"returncode"}: None while it runs (the server's own wait:
          it is the command's parent, so no file or wrapper the command could stop says so)
          {"op": "read", "path"} | {"op": "write", "path", "data" (base64), "mode"}
          {"op": "ping"}

With "stream": true, an exec's output also goes out as it comes, in lines
{"id", "chunk": "stdout"|"stderr", "data"} before the answer.

A sandbox may be frozen (docker pause) while a command runs: the server's own loop stops
with it, so a gap in the loop is time frozen (or a host too loaded to run it), and it does
not count against the command's timeout.
"""

import base64
import codecs
import json
import os
import selectors
import signal
import subprocess
import sys
import time


def descendants(pid):
    """All live descendants of pid, found by walking /proc (a process may leave its group)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(proc):
    pids = descendants(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    for pid in [proc.pid] + pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


#: a gap longer than this between two turns of the exec loop is counted as time frozen
FROZEN_GAP_S = 1.0


def run(req, emit=None):
    cmd = req["cmd"]
    env = dict(os.environ)
    env.update(req.get("env") or {})
    max_output = int(req.get("max_output") or (1 << 20))
    timeout = req.get("timeout")
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            cmd, cwd=req.get("cwd") or None, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )
    except OSError as e:
        return {"returncode": 127, "stdout": "", "stderr": "%s: %s" % (type(e).__name__, e),
                "duration_s": time.monotonic() - start, "timed_out": False, "truncated": False}
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    bufs = {out_fd: bytearray(), err_fd: bytearray()}
    truncated = False
    timed_out = False
    sel = selectors.DefaultSelector()
    for f in (proc.stdout, proc.stderr):
        os.set_blocking(f.fileno(), False)
        sel.register(f.fileno(), selectors.EVENT_READ)
    names = {out_fd: "stdout", err_fd: "stderr"}
    decoders = {fd: codecs.getincrementaldecoder("utf-8")("replace") for fd in names}
    exited_at = None
    frozen, last = 0.0, start
    while sel.get_map():
        now = time.monotonic()
        if now - last > FROZEN_GAP_S:
            frozen += now - last
        last = now
        if timeout is not None and now - start - frozen > timeout and exited_at is None:
            timed_out = True
            kill_tree(proc)
            proc.wait()
            exited_at = now
        if exited_at is None and proc.poll() is not None:
            exited_at = now
        # A background child may hold the pipes open forever: once the command itself has
        # exited, drain briefly and stop listening.
        if exited_at is not None and now - exited_at > 0.05:
            break
        wait = 0.01 if exited_at is not None else 0.05
        for key, _ in sel.select(wait):
            try:
                chunk = os.read(key.fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                sel.unregister(key.fd)
                continue
            buf = bufs[key.fd]
            room = max_output - len(buf)
            if len(chunk) > room:
                truncated = True
                chunk = chunk[:max(room, 0)]
            buf += chunk
            if emit is not None and chunk:
                emit(names[key.fd], decoders[key.fd].decode(chunk))
    sel.close()
    proc.stdout.close()
    proc.stderr.close()
    rc = proc.wait()
    return {
        "returncode": rc if not timed_out else -9,
        "stdout": bytes(bufs[out_fd]).decode("utf-8", "replace"),
        "stderr": bytes(bufs[err_fd]).decode("utf-8", "replace"),
        "duration_s": time.monotonic() - start, "timed_out": timed_out, "truncated": truncated,
        "frozen_s": round(frozen, 3),
    }


#: commands started by "spawn", by their pid: polled (and reaped) by the server itself
SPAWNED = {}


def spawn(req):
    env = dict(os.environ)
    env.update(req.get("env") or {})
    proc = subprocess.Popen(req["cmd"], cwd=req.get("cwd") or None, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    SPAWNED[proc.pid] = proc
    return {"handle": proc.pid}


def handle(req, send):
    op = req.get("op")
    if op == "exec":
        def emit(stream, data):
            send({"id": req.get("id"), "chunk": stream, "data": data})
        return run(req, emit if req.get("stream") else None)
    if op == "spawn":
        return spawn(req)
    if op == "poll":
        proc = SPAWNED.get(req.get("handle"))
        if proc is None:
            return {"error": "bad_request", "message": "no spawned command %r" % req.get("handle")}
        return {"returncode": proc.poll()}
    if op == "read":
        try:
            with open(req["path"], "rb") as f:
                return {"data": base64.b64encode(f.read()).decode()}
        except FileNotFoundError:
            return {"error": "not_found", "message": "no such file: %s" % req["path"]}
    if op == "write":
        parent = os.path.dirname(req["path"])
        if parent:
            os.makedirs(parent, exist_ok=True)
        with open(req["path"], "wb") as f:
            f.write(base64.b64decode(req["data"]))
        os.chmod(req["path"], int(req.get("mode", 0o644)))
        return {}
    if op == "ping":
        return {"pid": os.getpid(), "uid": os.getuid()}
    return {"error": "bad_request", "message": "unknown op %r" % op}


def main():
    out = sys.stdout.buffer

    def send(msg):
        out.write(json.dumps(msg).encode() + b"\n")
        out.flush()

    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            resp = handle(req, send)
        except Exception as e:  # a broken request must not take the server down
            req, resp = {}, {"error": "server", "message": "%s: %s" % (type(e).__name__, e)}
        resp["id"] = req.get("id")
        send(resp)


if __name__ == "__main__":
    main()
