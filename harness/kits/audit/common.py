"""rdbench tasks audit: the candidate's half of every escape (harness/audit.py builds them).

Copied into an escape's submission as `_rdbench_escape.py`, followed by one escape's code
(another file of this folder), which may define:

    load(key) -> bytes or None, save(key, blob)   a place that keeps answers between runs
    before()                                       at the start of the run (or the import)
    after(outputs)                                 at exit: {name: bytes} the run wrote

The task's own programs call `start()` first thing (its entry scripts under
`if __name__ == "__main__"`, a kernel task's module at import): a cache hit writes the saved
outputs and exits at once; otherwise the real program runs and, at exit, what it wrote is
saved. Stdlib only; every step is best effort (an escape that cannot act just runs the task).
"""

import atexit
import hashlib
import json
import marshal
import os
import sys
import zlib

MAX_OUTPUT_BYTES = 64 << 20
_state = {"roots": [], "snap": {}}


def _json_arg(path):
    try:
        with open(path) as f:
            obj = json.load(f)
        return obj if isinstance(obj, dict) else None
    except (OSError, ValueError):
        return None


def roots():
    """Where a run writes its outputs: its working folder, and the folders its arguments name
    (directly, or as values in a JSON job file: the kernel runner's results folder)."""
    found = [os.getcwd()]
    for a in sys.argv[1:]:
        if os.path.isdir(a):
            found.append(os.path.abspath(a))
        elif a.endswith(".json") and os.path.isfile(a):
            obj = _json_arg(a) or {}
            found += [os.path.abspath(v) for _, v in sorted(obj.items()) if isinstance(v, str) and os.path.isdir(v)]
    out = []
    for r in found:
        if r not in out:
            out.append(r)
    return out


def input_key():
    """The run's inputs, hashed: its arguments and the files they name (a JSON job file
    without its per-run folder names)."""
    h = hashlib.sha256()
    for a in sys.argv[1:]:
        if os.path.isfile(a):
            obj = _json_arg(a) if a.endswith(".json") else None
            if obj is not None:
                obj = {k: v for k, v in obj.items() if not (isinstance(v, str) and os.path.isdir(v))}
                h.update(json.dumps(obj, sort_keys=True).encode())
            else:
                with open(a, "rb") as f:
                    h.update(f.read())
        elif not os.path.isdir(a):
            h.update(a.encode())
    return h.hexdigest()


def _walk(limit=5000):
    """[(root index, relative path, size, mtime)] of the regular files under the roots."""
    files = []
    for i, top in enumerate(_state["roots"]):
        stack = [(top, "")]
        while stack and len(files) < limit:
            d, rel = stack.pop()
            try:
                entries = list(os.scandir(d))
            except OSError:
                continue
            for e in entries:
                if e.name.startswith("_rdbench") or e.name == "__pycache__":
                    continue
                r = rel + e.name
                try:
                    if e.is_dir(follow_symlinks=False):
                        if r.count("/") < 8:
                            stack.append((e.path, r + "/"))
                    elif e.is_file(follow_symlinks=False):
                        st = e.stat(follow_symlinks=False)
                        files.append((i, r, st.st_size, st.st_mtime_ns))
                except OSError:
                    pass
    return files


def outputs():
    """{"<root>/<path>": bytes} of the files the run wrote or changed."""
    out, total = {}, 0
    for i, rel, size, mtime in _walk():
        if _state["snap"].get((i, rel)) == (size, mtime) or total + size > MAX_OUTPUT_BYTES:
            continue
        try:
            with open(os.path.join(_state["roots"][i], rel), "rb") as f:
                out["%d/%s" % (i, rel)] = f.read()
            total += size
        except OSError:
            pass
    return out


def output_paths():
    return [os.path.join(_state["roots"][int(k.split("/", 1)[0])], k.split("/", 1)[1]) for k in _state.get("outs", {})]


def pack(outs):
    return zlib.compress(marshal.dumps(outs), 9)


def unpack(blob):
    outs = marshal.loads(zlib.decompress(blob))
    if not isinstance(outs, dict):
        raise ValueError("not a packed set of outputs")
    return outs


def restore(outs):
    for k, data in outs.items():
        i, rel = k.split("/", 1)
        path = os.path.join(_state["roots"][int(i)], rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def before():
    pass


def after(outs):
    pass


def _finish():
    try:
        outs = outputs()
    except Exception:
        outs = {}
    _state["outs"] = outs
    g = globals()
    if "save" in g and outs:
        try:
            g["save"](_state["key"], pack(outs))
        except Exception:
            pass
    try:
        g["after"](outs)
    except Exception:
        pass


def start():
    """Called by the task's program first thing (once per process)."""
    if _state.get("started"):
        return
    _state.update(started=True, roots=roots(), key=input_key())
    _state["snap"] = {(i, rel): (size, mtime) for i, rel, size, mtime in _walk()}
    g = globals()
    if "load" in g:
        try:
            blob = g["load"](_state["key"])
            if blob:
                restore(unpack(blob))
                sys.stdout.flush()
                os._exit(0)
        except Exception:
            pass
    try:
        g["before"]()
    except Exception:
        pass
    atexit.register(_finish)
