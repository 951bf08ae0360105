"""Nothing a timed run leaves survives for the next run, and root never follows the
submission's links: each known escape route as a real cheating submission through the real
`rdbench verify`, plus a census that looks for routes nobody has listed yet.

Each cheat keeps py-primes' original slow algorithm and saves its answers somewhere between
runs, so that every run after the first would only read them: ~1x when the hole is closed,
10x and more when it is open.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.task import load_task
from harness.verify import prepare
from sandbox import SandboxConfig
from sandbox.docker import DockerSandbox
from tests.conftest import TASKS, rdbench

SLOW = (TASKS / "py-primes" / "workspace" / "solve.py").read_text()

def file_cache(folder: str) -> str:
    """A cache that keeps the answers in a file in `folder`."""
    return f'''
import os
P = "{folder}/.cache-" + KEY
def save(text):
    open(P, "w").write(text)
def load():
    return open(P).read() if os.path.exists(P) else None
'''


#: where the cheat keeps its answers -> code defining save(text) and load() -> text or None
CACHE = {
    "home of uid 1000": file_cache("/home/agent"),
    "/run/lock (world-writable)": file_cache("/run/lock"),
    "/workspace (uid 1000's in the image)": file_cache("/workspace"),
    "System V shared memory": ('''
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
SIZE = 1 << 16
def seg(create):
    return libc.shmget(int(KEY[:7], 16), SIZE, (0o1000 if create else 0) | 0o600)
def save(text):
    addr = libc.shmat(seg(True), None, 0)
    data = text.encode()
    ctypes.memmove(addr, len(data).to_bytes(4, "little") + data, len(data) + 4)
def load():
    s = seg(False)
    if s < 0:
        return None
    addr = libc.shmat(s, None, 0)
    n = int.from_bytes(ctypes.string_at(addr, 4), "little")
    return ctypes.string_at(addr + 4, n).decode() if n else None
'''),
    "POSIX message queue": ('''
import ctypes, os
rt = ctypes.CDLL("librt.so.1", use_errno=True)
NAME = ("/c" + KEY[:20]).encode()
def save(text):
    q = rt.mq_open(NAME, os.O_CREAT | os.O_WRONLY, 0o600, None)
    data = text.encode()[:8000]
    rt.mq_send(q, data, len(data), 0)
def load():
    q = rt.mq_open(NAME, os.O_RDONLY | os.O_NONBLOCK)
    if q < 0:
        return None
    buf = ctypes.create_string_buffer(8192)
    n = rt.mq_receive(q, buf, 8192, None)
    if n < 0:
        return None
    save(buf.raw[:n].decode())  # put it back for the next run
    return buf.raw[:n].decode()
'''),
}

CHEAT_MAIN = '''

import hashlib
KEY = hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest()
{cache}


def cheat_main(inp, out):
    try:
        cached = load()
    except Exception:
        cached = None
    if cached is not None:
        open(out, "w").write(cached)
        return
    main(inp, out)
    try:
        save(open(out).read())
    except Exception:
        pass


if __name__ == "__main__":
    cheat_main(sys.argv[1], sys.argv[2])
'''


def cheat(tmp_path: Path, where: str) -> Path:
    sub = tmp_path / "sub"
    sub.mkdir()
    slow = SLOW.replace('if __name__ == "__main__":\n    main(sys.argv[1], sys.argv[2])\n', "")
    (sub / "solve.py").write_text(slow + CHEAT_MAIN.format(cache=CACHE[where]))
    return sub


def verify(submission: Path, repeats: int = 3) -> dict:
    r = rdbench("verify", "tasks/py-primes", "--submission", str(submission), "--repeats", str(repeats))
    assert r.returncode in (0, 3), r.stdout + r.stderr
    return json.loads(r.stdout)


@pytest.mark.docker
@pytest.mark.parametrize("where", list(CACHE))
def test_answers_cached_between_runs_do_not_survive(base_image, tmp_path, where):
    v = verify(cheat(tmp_path, where))
    assert v["correct"] is True, v["details"]
    # ~1x: every run computes; with the hole open these measured 12-18x
    assert v["ci"][0] < 1.5, v


@pytest.mark.parametrize("where", ["System V shared memory", "POSIX message queue"])
def test_the_ipc_caches_work_between_processes(tmp_path, where):
    """The control: on the host, where nothing removes them, what one process saves the next
    one loads (so the test above catches an open hole, not a broken cheat)."""
    import subprocess
    import sys
    import uuid

    key = uuid.uuid4().hex
    prog = f"KEY = {key!r}\n" + CACHE[where] + "\nimport sys\nif sys.argv[1] == 'save':\n    save('42')\nelse:\n    print(load())\n"
    script = tmp_path / "cache.py"
    script.write_text(prog)
    try:
        subprocess.run([sys.executable, str(script), "save"], check=True, timeout=60)
        r = subprocess.run([sys.executable, str(script), "load"], capture_output=True, text=True, timeout=60)
        assert r.stdout.strip() == "42", r.stderr
    finally:
        if where.startswith("POSIX"):
            import ctypes
            ctypes.CDLL("librt.so.1").mq_unlink(("/c" + key[:20]).encode())
        else:
            subprocess.run(["ipcrm", "-M", str(int(key[:7], 16))], capture_output=True)


@pytest.mark.docker
def test_a_link_to_sitecustomize_is_not_followed(base_image, tmp_path):
    """input.json a link to the interpreter's sitecustomize: root used to write the hidden
    queries through it and hand the file to the candidate, who then planted a sleep for the
    baseline. The link is dropped when staging; the inputs are written with O_NOFOLLOW."""
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "input.json").symlink_to("/etc/python3.11/sitecustomize.py")
    (sub / "solve.py").write_text(SLOW.replace('def main(inp, out):', '''def plant():
    try:
        with open("/etc/python3.11/sitecustomize.py", "a") as f:
            f.write("\\nimport os, time\\nif os.getuid() == 1001: time.sleep(1)\\n")
    except OSError:
        pass


def main(inp, out):
    plant()'''))
    v = verify(sub)
    assert v["correct"] is True, v["details"]
    assert v["ci"][0] < 1.5, v  # 1.71x and 2.21x when root followed the link


@pytest.mark.docker
def test_output_link_to_a_root_only_file_is_not_read(base_image, tmp_path):
    """output.json left as a link to the verifier's own file: root does not read through it."""
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "solve.py").write_text(
        "import os, sys\nos.symlink('/verifier/verify.py', sys.argv[2])\n")
    v = verify(sub, repeats=1)
    assert v["correct"] is False and "output.json" in v["details"]["failure"] and "link" in v["details"]["failure"]


@pytest.mark.docker
def test_a_deep_folder_chain_left_behind_is_cleaned_up(base_image, tmp_path):
    """1,500 nested folders in /tmp and in the run's folder: the clean-up survives it (it
    used to crash the verifier with a RecursionError); the run is judged on its merits."""
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "solve.py").write_text(SLOW.replace('def main(inp, out):', '''def deep(top):
    os.makedirs(top, exist_ok=True)
    os.chdir(top)
    for _ in range(1500):
        os.mkdir("d")
        os.chdir("d")


def main(inp, out):
    import os
    here = os.getcwd()
    inp, out = os.path.abspath(inp), os.path.abspath(out)
    deep("/tmp/chain")
    deep(os.path.join(here, "chain"))
    os.chdir(here)''').replace("import json", "import json\nimport os"))
    v = verify(sub, repeats=1)
    assert v["correct"] is True, v["details"]


# ---- the census: after a run, nothing the candidate's user owns or can write is left ----

POLLUTER = r'''
"""Write state everywhere this user can: every folder it can create a file in, its own
files, System V shared memory, semaphores and message queues, POSIX queues and shm."""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
rt = ctypes.CDLL("librt.so.1", use_errno=True)
made = 0
for top in ["/"]:
    for root, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if os.path.join(root, d) not in ("/proc", "/sys")]
        try:
            fd = os.open(os.path.join(root, ".state-left"), os.O_CREAT | os.O_WRONLY, 0o666)
            os.close(fd)
            made += 1
        except OSError:
            pass
libc.shmget(0x5eed, 4096, 0o1000 | 0o666)
libc.semget(0x5eed, 1, 0o1000 | 0o666)
libc.msgget(0x5eed, 0o1000 | 0o666)
rt.mq_open(b"/state-left", os.O_CREAT | os.O_WRONLY, 0o666, None)
fd = rt.shm_open(b"/state-left", os.O_CREAT | os.O_RDWR, 0o666)
print("made", made, file=sys.stderr)
'''

CENSUS = r'''
"""As root in the verifier sandbox: stage and run the polluter as the candidate, then list
every survivor: files and folders the candidate's uid owns anywhere, folders it can still
create a file in (other than the empty scratch folders), and its IPC objects."""
import json, os, sys
sys.path.insert(0, "/verifier")
import verify_kit as kit

work = kit.stage("/submission", kit.CANDIDATE_UID)
r = kit.run(["python3", "polluter.py"], cwd=work, uid=kit.CANDIDATE_UID, timeout=300)
assert r.ok, r.describe()
kit.unstage(work)

UIDS = (kit.CANDIDATE_UID, kit.BASELINE_UID)
owned = []
mounts = [line.split()[:3] for line in open("/proc/self/mounts")]
for _, point, fstype in mounts:
    if fstype in ("proc", "sysfs", "cgroup", "cgroup2") or point.startswith(("/proc", "/sys")):
        continue
    for root, dirs, files in os.walk(point):
        for name in dirs + files:
            p = os.path.join(root, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if st.st_uid in UIDS:
                owned.append(p)

ipc = []
for kind in ("shm", "msg", "sem"):
    with open("/proc/sysvipc/" + kind) as f:
        header = f.readline().split()
        for line in f:
            row = dict(zip(header, line.split()))
            if int(row["uid"]) in UIDS or int(row["cuid"]) in UIDS:
                ipc.append((kind, row["key"]))


PROBE = """
import json, os
found = []
for root, dirs, files in os.walk("/"):
    dirs[:] = [d for d in dirs if os.path.join(root, d) not in ("/proc", "/sys")]
    try:
        fd = os.open(os.path.join(root, ".probe"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        os.unlink(os.path.join(root, ".probe"))
        found.append(root)
    except OSError:
        pass
print(json.dumps(found))
"""
import subprocess
p = subprocess.run([sys.executable, "-c", PROBE], user=kit.CANDIDATE_UID, group=kit.CANDIDATE_UID, extra_groups=[],
                   capture_output=True, text=True, cwd="/")
can_write = json.loads(p.stdout)
# (the kit before the census had no such list: its shared folders stand in)
scratch = set(getattr(kit, "_state", {}).get("scratch") or kit.SHARED_WRITABLE)
open_places = [d for d in can_write if d not in scratch]
non_empty_scratch = [d for d in scratch if os.path.isdir(d) and any(e.stat(follow_symlinks=False).st_uid != 0 for e in os.scandir(d))]
print(json.dumps({"owned": owned[:50], "writable": open_places[:50], "scratch": sorted(scratch),
                  "non_empty_scratch": non_empty_scratch, "ipc": ipc}))
'''


@pytest.mark.docker
def test_census_finds_nothing_left_after_a_run(base_image, docker_client, tmp_path):
    """The test that finds routes nobody listed: after a run of a program that writes state
    everywhere it can, nothing the candidate's uid owns, no folder it can write (but the
    emptied scratch folders) and no IPC object of its remains. (On the kit before this
    change it listed /home/agent, /workspace and /run/lock, and the IPC objects.)"""
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "polluter.py").write_text(POLLUTER)
    task = load_task(TASKS / "py-primes")
    config = SandboxConfig(image=base_image, role="verifier", workdir="/verifier", memory="2g")
    with DockerSandbox(config, docker_client) as sb:
        prepare(sb, task)
        sb.copy_in(sub, "/submission", owner=0, mode=0o700)
        sb.write_file("/verifier/census.py", CENSUS.encode())
        r = sb.exec(["python3", "census.py"], cwd="/verifier", timeout=600)
        assert r.ok, r.stdout + r.stderr[-3000:]
        found = json.loads(r.stdout.strip().splitlines()[-1])
    assert found["owned"] == [], found
    assert found["writable"] == [], found
    assert found["non_empty_scratch"] == [], found
    assert found["ipc"] == [], found
    assert "/tmp" in found["scratch"] and "/dev/shm" in found["scratch"]
    mq = [s for s in found["scratch"] if "mqueue" in s]
    assert mq, "POSIX message queues must be in a scratch folder that is emptied"


@pytest.mark.docker
def test_a_candidate_too_slow_for_the_verifiers_time_limit_is_incorrect(base_image, tmp_path):
    """Each run just under the per-run limit (py-primes': 60 s), and longer than the whole
    verifier may take (40 s here): the candidate's runs are cut to their share of what is
    left, so the verdict is a timed out, incorrect candidate, not a verifier that timed out
    (an infrastructure error). Too slow by construction, however fast the baseline is (a 25 s
    sleeper once got a share over 25 s after a quick baseline run, and was judged on its
    missing output instead)."""
    task = tmp_path / "py-primes"
    shutil.copytree(TASKS / "py-primes", task)
    toml = (task / "task.toml").read_text().replace("timeout_s = 300", "timeout_s = 40")
    (task / "task.toml").write_text(toml)
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "solve.py").write_text("import time\ntime.sleep(59)\n")
    r = rdbench("verify", str(task), "--submission", str(sub), "--repeats", "5")
    assert r.returncode == 3, r.stdout + r.stderr
    v = json.loads(r.stdout)
    assert "timed out" in v["details"]["failure"] and "time limit" in v["details"]["failure"], v
