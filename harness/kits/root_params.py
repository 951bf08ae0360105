"""rdbench verify kit, root side: the verification's parameters (read from the file the host
writes, contract.PARAMS_FILE), the runs' users, the verifier's log and time limit.

Part of the verify kit (verify_kit.py re-exports every name here: task verifiers use `kit.X`);
runs as root in the verifier sandbox, copied there beside verify_kit.py. Stdlib only.
"""

import os
import random
import sys
import time

import contract


#: The candidate's and the baseline's users (the image's uids 1000 and 1001; the local
#: backend picks uids that no account of its host uses).
CANDIDATE_UID = int(os.environ.get("RDBENCH_CANDIDATE_UID", 1000))
BASELINE_UID = int(os.environ.get("RDBENCH_BASELINE_UID", 1001))
RUN_UIDS = (CANDIDATE_UID, BASELINE_UID)
#: Places any user can write; emptied of what a run left after each run.
SHARED_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/dev/mqueue")
#: Environment passed to programs under test: nothing of the verifier's own.
PASS_ENV = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "TZ", "CUDA_VISIBLE_DEVICES", "TRITON_INTERPRET",
            "CUDA_DEVICE_ORDER")
#: Filesystems the census never walks (no files a run could keep state in).
_PSEUDO_FS = {"proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "securityfs", "debugfs", "tracefs",
              "bpf", "pstore", "configfs", "fusectl", "hugetlbfs", "binfmt_misc", "autofs", "nsfs"}

_STARTED = time.time()
LOCAL = os.environ.get("RDBENCH_LOCAL_SANDBOX") == "1"
#: what the kit learns once per verification (its folders, the parameters, bubblewrap)
_state = {}


def log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def params():
    """The verification's parameters (contract.PARAMS: task.toml's [verifier] and [scoring],
    written by the host beside this file; read once)."""
    if "params" not in _state:
        path = os.environ.get(contract.ENV_PARAMS) or os.path.join(
            os.path.dirname(os.path.abspath(__file__)), contract.PARAMS_FILE)
        with open(path) as f:
            _state["params"] = contract.read_params(f.read())
    return _state["params"]


def param(name):
    """A value the task declares in task.toml's [verifier.params] (KeyError if it does not)."""
    return params().task_params[name]


def __getattr__(name):
    # kit.SUBMISSION, kit.BASELINE: where the candidate and the pristine workspace are, as
    # this verifier sees them (read from the parameters when first asked for)
    if name in ("SUBMISSION", "BASELINE"):
        return getattr(params(), name.lower())
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def deadline():
    """When the verifier must be done (its time limit, with a margin): candidate runs are cut
    to what is left of it, so a slow candidate fails as timed out instead of making the whole
    verifier time out (which would be an infrastructure error, never scored)."""
    return _STARTED + 0.9 * params().timeout_s - 5


def isolated():
    """True when programs under test run as other users than the verifier (root)."""
    return os.geteuid() == 0


def isolation():
    """How the runs were kept apart, in words (recorded in every verdict)."""
    if not isolated():
        return "none: the verifier is not root, so runs share its user"
    if not LOCAL:
        return "container: own users, read-only but for emptied scratch folders, IPC removed after each run"
    if _state.get("bwrap"):
        return "local + bubblewrap: own users, no network, private /tmp, /var/tmp, /dev/shm per run"
    return "local: own users, their processes, files and IPC removed after each run; network and host files shared"


def repeats():
    """Timed runs per program: the task's [verifier] repeats, or a --repeats override."""
    return params().repeats


def secret_seed():
    """The per-verification secret seed, for hidden inputs. Never passed to programs under test."""
    seed = os.environ.get(contract.ENV_SEED)
    if seed is None:
        seed = _state.setdefault("seed", str(random.SystemRandom().getrandbits(63)))
    return int(seed)


class SubmissionError(Exception):
    """Something the submission or its run made that the verifier refuses to touch."""
