"""The verifier contract: everything the host (harness/verify.py) and the in-sandbox kit
(verify_kit.py) agree on, each value written once, here.

Stdlib only, Python 3.8+: the host imports it as `harness.kits.contract`; the harness copies
it into every verifier sandbox as /verifier/contract.py, beside verify_kit.py, which
imports it as `contract`.

    /submission  the candidate          /baseline  the task's pristine workspace/
    /verifier    the task's verifier/, the kits, and the parameters file (root-only)

The parameters file (PARAMS_FILE, JSON) is written by the host at every verification from
task.toml's [verifier] and [scoring] (and a --repeats override); the kit reads it and
nothing else for these values: no default is restated in the kit or in a task's verify.py.
The per-verification secrets (the result token, the secret seed) travel in the verifier's
environment only, never in a file.
"""

import json

#: task.toml's `schema_version` this harness reads (harness/task.py refuses others)
SCHEMA_VERSION = 1

SUBMISSION = "/submission"
BASELINE = "/baseline"
VERIFIER = "/verifier"
#: beside the kits in VERIFIER
PARAMS_FILE = "rdbench_params.json"

#: the verdict line: RESULT_TAG, the token, the JSON verdict
RESULT_TAG = "RDBENCH_RESULT"
#: the line saying that this host cannot run programs as the runs' users at all (the kit's
#: check_host, before any of the submission ran): an infrastructure error, never a verdict
HOST_FAULT_TAG = "RDBENCH_HOST_FAULT"
ENV_TOKEN = "RDBENCH_RESULT_TOKEN"
ENV_SEED = "RDBENCH_SECRET_SEED"
#: another parameters file than the one beside the kit (tests, a verifier run by hand)
ENV_PARAMS = "RDBENCH_PARAMS"

#: the parameters file's keys, each with what it means; write_params and read_params accept
#: exactly these (a missing or unknown key is an error on both sides)
PARAMS = {
    "task": "the task's name",
    "kind": "speedup | score",
    "submission": "where the candidate is, as the verifier sees it (SUBMISSION in a container)",
    "baseline": "where the pristine workspace is, as the verifier sees it",
    "repeats": "timed runs of baseline and of candidate ([verifier] repeats, or --repeats)",
    "timeout_s": "wall time of the whole verification ([verifier] timeout_s)",
    "fresh_inputs": "every timed pair gets inputs no earlier run saw ([verifier] fresh_inputs)",
    "plausible_max": "values above are flagged for review, or null ([scoring] plausible_max)",
    "tolerance": "how far the oracle may fall below the reference, and nop stray from the base "
                 "(`tasks validate`; [scoring] tolerance)",
    "reference": "what the oracle reaches ([scoring] reference)",
    "base": "what the unchanged workspace reaches ([scoring] base)",
    "task_params": "anything else the task declares ([verifier.params]), by name",
}


class ContractError(Exception):
    """A parameters file or verdict line that does not follow this contract."""


def _checked(params):
    missing = sorted(set(PARAMS) - set(params))
    extra = sorted(set(params) - set(PARAMS))
    if missing or extra:
        raise ContractError("verifier parameters: missing %s, unknown %s" % (missing, extra))
    return params


def write_params(params):
    """The parameters file's text, from a dict of exactly the PARAMS keys."""
    return json.dumps(_checked(dict(params)), indent=1, sort_keys=True)


def read_params(text):
    """The parameters, from the file's text: an object whose attributes are the PARAMS keys."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ContractError("verifier parameters: not JSON: %s" % e)
    if not isinstance(data, dict):
        raise ContractError("verifier parameters: not a JSON object")
    return Params(_checked(data))


class Params(object):
    """The verifier's parameters (attributes: the PARAMS keys)."""

    def __init__(self, values):
        self.__dict__.update(values)

    def __repr__(self):
        return "Params(%r)" % self.__dict__


def result_line(token, verdict):
    """The one line that carries a verdict to the host."""
    return "%s %s %s\n" % (RESULT_TAG, token, json.dumps(verdict))


def result_payloads(stdout, token):
    """The JSON texts of every verdict line carrying `token` in a verifier's stdout."""
    prefix = "%s %s " % (RESULT_TAG, token)
    return [ln[len(prefix):] for ln in stdout.splitlines() if ln.startswith(prefix)]
