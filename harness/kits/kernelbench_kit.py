"""rdbench kernel kit for nn.Module problems (KernelBench's format, `rdbench tasks import
kernelbench`): the verifier's half. The candidate writes `ModelNew` in `model_new.py`; it is
checked against the problem's `Model` with every guard of kernel_kit (kernel_kit.md):
launch plans recorded by the runner, replayed by the witness on the verifier's inputs and on
new ones, aliasing, bitwise repeatability, the out-of-process runner; plus KernelBench's own
rules: the same seed for Model's and ModelNew's parameters, KernelBench's tolerances for the
output's dtype, at least 5 hidden input draws. An imported task's verify.py calls `main(HERE)`.

verifier/problem.py    the problem file, unchanged
verifier/problem.json  {"name", "draws", "cpu_sizes": {NAME: value}}: the
                       module-level size constants used without a GPU (the Triton interpreter)
"""

import json
import os
import tempfile

import torch

import kernel_module as km
from kernel_kit import Verifier, py_files, read_text

MODULE, ENTRY = "model_new", "ModelNew"


class ModuleProblem:
    """An imported problem, as kernel_kit.Verifier reads a Problem."""

    def __init__(self, folder):
        with open(os.path.join(folder, "problem.json")) as f:
            self.config = json.load(f)
        with open(os.path.join(folder, "problem.py")) as f:
            self.text = f.read()
        self.name = self.config["name"]
        self.module, self.entry = MODULE, ENTRY
        self.plausible_max = None  # task.toml's [scoring] plausible_max (the parameters file)
        self.draws = max(5, int(self.config.get("draws", 5)))

    def reference(self):
        return None  # the problem file's Model, built per draw (kernel_module.reference)

    def cases(self, rng, gpu):
        return [{"label": "draw %d" % i, "init_seed": rng.getrandbits(40)} for i in range(self.draws)]

    def bench_cases(self, gpu):
        return [{"label": "bench"}]  # its seeds: drawn from the secret seed (ModuleVerifier.seeded)


class ModuleVerifier(Verifier):
    def __init__(self, problem, kit):
        super().__init__(problem, kit)
        # without a GPU, the importer's reduced sizes (the Triton interpreter); with one, the problem's own
        self.sizes = {} if self.gpu else dict(problem.config.get("cpu_sizes") or {})
        self.scope = km.load_problem(problem.text, self.sizes)
        self.wanted = {}
        self.details["sizes"] = ({"scaled": self.sizes, "note": "the problem's module-level size constants, "
                                  "scaled down for the Triton interpreter"} if self.sizes else "the problem's own")

    def seeded(self, cases):
        return [c if "init_seed" in c else dict(c, init_seed=self.rng.getrandbits(40)) for c in super().seeded(cases)]

    def launch(self, src, uid, job, extra_files=(), witness=False):
        return super().launch(src, uid, dict(job, problem=self.p.text, sizes=self.sizes), extra_files, witness)

    def expected(self, case, seed):
        key = (seed, case["init_seed"])
        if key not in self.wanted:
            want, dtype, precision = km.reference(self.scope, dict(case, seed=seed), self.device)
            case["out"] = {"shape": list(want.shape), "dtype": dtype}
            self.details["reference"] = "Model in %s" % precision
            self.wanted = {key: want}  # one at a time: the GPU path's outputs are large
            if self.gpu:
                torch.cuda.empty_cache()
        return self.wanted[key]

    def compare(self, got, want, case):
        return km.compare(got, want, case["out"]["dtype"])

    def reference_src(self):
        return tempfile.mkdtemp(prefix="rdbench-reference-")  # the runner times the problem's Model (from its job)

    def unchanged(self):
        """True when the submission's .py files are exactly the starting workspace's (bounded walks)."""
        def sources(root):
            return {rel: read_text(root, rel) for rel in py_files(root)}
        return sources(self.kit.SUBMISSION) == sources(self.kit.BASELINE)

    def self_check(self, cases):
        """The unchanged starting point (ModelNew is the problem's Model, in PyTorch), run by the
        runner like a candidate: right within the tolerances and repeatable, or the task is broken."""
        job = {"mode": "check", "module": MODULE, "entry": ENTRY, "cases": cases, "reps": 2}
        self.kit.log("running the unchanged starting point on %d draws (runner)" % len(cases))
        ok, note, report, parent = self.launch(self.kit.SUBMISSION, self.kit.CANDIDATE_UID, job)
        try:
            if not ok:
                return "the unchanged starting point failed: " + note
            calls = report.get("calls") or []
            for i, case in enumerate(cases):
                want = self.expected(case, case["seed"])
                outs = []
                for r in range(2):
                    t, why = self.load(parent, "c%d_r%d.pt" % (i, r), case)
                    why = why or self.compare(t, want, case)
                    if why:
                        return "the unchanged starting point (Model itself), %s: %s" % (case["label"], why)
                    outs.append(t)
                if not torch.equal(outs[0], outs[1]):
                    return "the unchanged starting point (Model itself) is not repeatable on %s" % case["label"]
                self.kit.log("draw %d/%d ok (runner)" % (i + 1, len(cases)))
            return None if len(calls) == 2 * len(cases) else "the runner's report is incomplete"
        finally:
            self.remove(parent)

    cpu_checked = "at reduced sizes (details.sizes)"

    def check_run(self, cases):
        problem, checked, plans = super().check_run(cases)
        return problem, dict(checked, reference=self.details.get("reference")), plans

    def run(self):
        cases = self.seeded(self.p.cases(self.rng, self.gpu))
        details = dict(self.details, task=self.p.name, cases=["%s (seed drawn from the secret seed)" % c["label"]
                                                              for c in cases])
        if not self.unchanged():
            return self.graded(details, cases)
        problem = self.self_check(cases)
        details["reference"] = self.details.get("reference")
        if problem:
            return self.kit.speedup_verdict([], [], False, problem, details=details)
        details["unchanged"] = True
        details["unavailable"] = ("the submission is the unchanged starting point (ModelNew is the problem's PyTorch "
                                  "Model): it matches the reference, and there is no speedup to measure")
        return self.kit.speedup_verdict([], [], True, details=details)


def main(folder):
    import verify_kit as kit
    kit.emit(ModuleVerifier(ModuleProblem(folder), kit).run())

