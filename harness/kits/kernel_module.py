"""rdbench kernel kit, nn.Module problems (KernelBench's format): what the verifier, the runner and
the witness share about a problem file (kernel_kit.md, "nn.Module problems").

A problem file defines `Model(nn.Module)`, `get_inputs()` and `get_init_inputs()`, with its
sizes as module-level constants. The verifier hands the runner and the witness the file's
*text* in their job (never a path into the candidate's folder) and the sizes to use (the
CPU path scales the big constants down). All three build inputs and parameters the same way,
from seeds the verifier draws from the secret seed:

- parameters: `torch.manual_seed(init_seed)`, `get_init_inputs()`, `torch.manual_seed(init_seed)`,
  `Cls(*init_inputs)`: the same seed for `Model` and `ModelNew`, as KernelBench does, so a
  `ModelNew` made of the same modules in the same order gets the same weights;
- inputs: `torch.manual_seed(seed)`, `get_inputs()`, with the device as the default device.
"""

import ast

import torch

#: KernelBench's tolerances (atol = rtol), by the dtype of the problem's output
#: (src/kernelbench/eval.py, get_tolerance_for_precision); integer and bool outputs: exact.
TOLERANCE = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 1e-2, "float64": 1e-4}


def sized_source(text, sizes):
    """The problem's source with its module-level constants `NAME = value` set to `sizes[NAME]`
    (values the importer chose: ints or tuples of ints); the rest unchanged."""
    tree = ast.parse(text)
    for stmt in tree.body:
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
                and stmt.targets[0].id in sizes):
            value = sizes[stmt.targets[0].id]
            stmt.value = ast.copy_location(ast.parse(repr(tuple(value) if isinstance(value, list) else value),
                                                     mode="eval").body, stmt.value)
    return ast.unparse(ast.fix_missing_locations(tree))


def load_problem(text, sizes, name="kernelbench_problem"):
    """The problem file's namespace (Model, get_inputs, get_init_inputs, ...) at `sizes`."""
    scope = {"__name__": name}
    exec(compile(sized_source(text, sizes or {}), "<problem %s>" % name, "exec"), scope)
    return scope


def _to(x, device, dtype=None):
    if not isinstance(x, torch.Tensor):
        return x
    x = x.to(device)
    return x.to(dtype) if dtype is not None and x.is_floating_point() else x


def draw_inputs(scope, seed, device, dtype=None):
    """The forward arguments of one call, drawn from `seed` (floating tensors cast to `dtype` if given)."""
    torch.manual_seed(seed)
    with torch.device(device):  # drawn on the device (KernelBench's sizes are too big to draw on the CPU)
        return [_to(x, device, dtype) for x in scope["get_inputs"]()]


def build(cls, scope, init_seed, device, dtype=None):
    """`cls(*get_init_inputs())` with its parameters drawn from `init_seed` (KernelBench's set_seed
    before the init inputs and again before the constructor)."""
    torch.manual_seed(init_seed)
    with torch.device(device):
        init = [_to(x, device) for x in scope["get_init_inputs"]()]
    torch.manual_seed(init_seed)
    with torch.no_grad(), torch.device(device):
        model = cls(*init)
        model = model.to(device)
        if dtype is not None:
            model = model.to(dtype)
    return model


def state(model):
    """A module's parameters and buffers, in registration order (what `ModelNew` must match)."""
    return list(model.state_dict(keep_vars=True).values())


def reference(scope, case, device):
    """The expected output of one call, Model in float64 where the problem allows it (else in its
    own precision): (output on the CPU, the output dtype a candidate must return, the precision used)."""
    try:
        with torch.no_grad():
            model = build(scope["Model"], scope, case["init_seed"], device)
            native = _native(model(*draw_inputs(scope, case["seed"], device)))
            model = build(scope["Model"], scope, case["init_seed"], device, torch.float64)
            out = _native(model(*draw_inputs(scope, case["seed"], device, torch.float64)))
        precision = "float64"
    except (RuntimeError, TypeError):  # an op without float64 support: the problem's own precision
        with torch.no_grad():
            model = build(scope["Model"], scope, case["init_seed"], device)
            out = native = _native(model(*draw_inputs(scope, case["seed"], device)))
        precision = str(native.dtype).replace("torch.", "")
    return out.detach().cpu(), str(native.dtype).replace("torch.", ""), precision


def _native(out):
    if type(out) is not torch.Tensor:
        raise TypeError("Model returned a %s, not a single torch.Tensor" % type(out).__name__)
    return out


def compare(got, want, dtype):
    """None if `got` matches the reference within KernelBench's tolerance for `dtype`, else why.
    Where the reference is not finite (an inf the problem really produces) `got` must be equal."""
    if not (got.is_floating_point() or got.is_complex()):
        if torch.equal(got.to(want.dtype) if want.dtype != got.dtype else got, want):
            return None
        bad = got.to(want.dtype) != want
        return "%d of %d elements differ (an exact output)" % (int(bad.sum()), bad.numel())
    tol = TOLERANCE.get(dtype, 1e-4)
    g, w = got.double(), want.double()
    finite = torch.isfinite(w)
    if not torch.equal(torch.isfinite(g), finite) or not torch.equal(g[~finite], w[~finite]):
        return "non-finite values where the reference has none (elements never written?), or the other way round"
    err = (g - w).abs()[finite]
    bad = err > tol + tol * w.abs()[finite]
    if bad.any():
        return "max abs error %.3g (tolerance %.3g + %.3g * |ref|, KernelBench's for %s), %d of %d elements off" % (
            err.max().item(), tol, tol, dtype, int(bad.sum()), bad.numel())
    return None


def probe(text, sizes, seed=0, device="cpu", budget=None):
    """What the importer checks of a problem at `sizes` (kernelbench.py runs this in the base image):
    (None, elements of the inputs and output) if Model runs, returns one tensor, is repeatable and,
    in its own precision, matches its float64 run within KernelBench's tolerance (else no
    candidate could pass); else (why not, elements). Inputs over `budget` elements are not run."""
    scope = load_problem(text, sizes)
    for name in ("Model", "get_inputs", "get_init_inputs"):
        if not callable(scope.get(name)):
            return "defines no %s" % name, 0
    inputs = draw_inputs(scope, seed + 1, device)
    numel = sum(x.numel() for x in inputs if isinstance(x, torch.Tensor))
    if budget is not None and numel > budget:
        return "over budget", numel
    case = {"seed": seed + 1, "init_seed": seed}
    want, dtype, precision = reference(scope, case, device)
    numel += want.numel()
    with torch.no_grad():  # twice in a row, not reseeded: a random forward (dropout) gives other values
        model, args = build(scope["Model"], scope, seed, device), draw_inputs(scope, seed + 1, device)
        runs = [_native(model(*args)).cpu() for _ in range(2)]
    if not torch.equal(runs[0], runs[1]) and not (runs[0].is_floating_point() and torch.equal(
            runs[0].nan_to_num(), runs[1].nan_to_num()) and torch.equal(runs[0].isnan(), runs[1].isnan())):
        return "Model gives other values on the same inputs and seed (random or non-deterministic)", numel
    if want.numel() == 0:
        return "Model's output is empty at these sizes", numel
    why = compare(runs[0], want, dtype)
    if why and precision == "float64":
        return "Model in %s against Model in float64: %s" % (dtype, why), numel
    return None, numel


def probe_main(job_path):
    """One JSON line per problem: {"index", "sizes" (the largest candidate that passed within the
    job's element budget; else the smallest that passed), "elements"} or {"index", "error"}.
    Candidates come smallest first."""
    import json
    import traceback
    with open(job_path) as f:
        job = json.load(f)
    for i, problem in enumerate(job["problems"]):
        result = {"index": i}
        for sizes in problem["candidates"]:
            try:
                why, numel = probe(problem["text"], sizes, budget=job["budget"] if "sizes" in result else None)
            except Exception as e:  # the problem's own code failing at these sizes
                lines = str(e).strip().splitlines()
                why, numel = "%s: %s" % (type(e).__name__, lines[-1][:300] if lines else
                                         traceback.format_exc(limit=1)[-300:]), 0
            if why is None and ("sizes" not in result or numel <= job["budget"]):
                result.update(sizes=sizes, elements=numel)
                result.pop("error", None)
            elif "sizes" not in result:
                result["error"] = why
            if numel > job["budget"] and "sizes" in result:
                break
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    import sys
    if sys.argv[1:2] == ["--probe"]:
        probe_main(sys.argv[2])
