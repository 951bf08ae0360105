"""rdbench kernel kit, the witness: run as the witness's own user by the verifier (kernel_kit.py),
as `python3 -s witness_replay.py JOB.json`. It replays the runner's recorded launches from the
submission's kernel source only (never importing its modules). Why: candidate_runner.py's docstring."""

import os
import sys

if __name__ == "__main__":  # the working folder (the candidate's files) is not on sys.path
    sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) != os.getcwd()]

import ast  # noqa: E402 - after the sys.path fix
import builtins
import copy
import importlib
import importlib.util
import inspect
import json
import stat

import torch

from kernel_cases import (
    make_args, new_out, MAX_LAUNCHES, LAUNCH_OPTIONS, _dtype_name, timed_reps, note_process)


class Refused(Exception):
    """A recorded plan or a kernel the witness will not replay; the message says why."""


#: What a kernel body may contain. In the interpreter (TRITON_INTERPRET=1) a body runs as plain
#: Python, so it must not reach anything but Triton: no imports, no functions of its own, no
#: exception handling, no `_` attributes (`__globals__`, `__class__`, ...).
ALLOWED_NODES = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.For, ast.While, ast.If, ast.IfExp, ast.Break,
                 ast.Continue, ast.Pass, ast.Return, ast.Expr, ast.Call, ast.BinOp, ast.UnaryOp, ast.BoolOp,
                 ast.Compare, ast.Subscript, ast.Slice, ast.Tuple, ast.List, ast.Constant, ast.Name, ast.Attribute,
                 ast.keyword, ast.Assert, ast.JoinedStr, ast.FormattedValue,
                 ast.expr_context, ast.operator, ast.unaryop, ast.boolop, ast.cmpop)
BUILTINS = ("range", "min", "max", "int", "float", "bool", "len", "abs", "print")
#: Modules a kernel may reach (by an import at the top of its file, then attributes).
MODULES = ("triton", "triton.language", "triton.language.math", "triton.language.extra",
           "triton.language.extra.libdevice", "triton.language.extra.cuda", "triton.language.extra.cuda.libdevice",
           "math")
#: Of the `triton` package itself, only these (the rest is the compiler and runtime).
TRITON_TOP = ("language", "cdiv", "next_power_of_2", "constexpr")
#: Attribute names a kernel may use on its values (tensors, dtypes, constexprs): the public
#: interface of Triton's tensor and type classes, and their data attributes.
VALUE_ATTRS_EXTRA = ("dtype", "shape", "type", "numel", "element_ty", "value", "primitive_bitwidth", "name",
                     "int_bitwidth", "int_signedness", "fp_mantissa_width", "exponent_bias", "address_space")
VALUE_ATTRS_DENY = ("handle", "to_ir", "codegen_name", "cache_key_part", "mangle")
#: Files the witness parses: larger ones are refused.
MAX_SOURCE_BYTES = 2 << 20
#: Scratch buffers (storages a plan uses besides the inputs and `out`) are zero-filled by the
#: witness, at most this many times the bytes of the inputs and `out` (and at least 1 MiB).
SCRATCH_FACTOR = 16
PREFIX = "rdbench_"  # the witness's names in the module it builds; refused as a kernel's own names


def _value_attrs():
    import triton.language as tl
    names = set(VALUE_ATTRS_EXTRA)
    for cls in (tl.tensor, tl.dtype, tl.pointer_type, tl.block_type, tl.constexpr):
        names |= {n for n in dir(cls) if not n.startswith("_")}
    return names - set(VALUE_ATTRS_DENY)


def _from_triton_language(value):
    import triton.language as tl
    if isinstance(value, (bool, int, float, str, tl.dtype, tl.constexpr)):
        return True
    inner = getattr(value, "fn", None)  # Triton's own @jit functions (tl.max, ...): the function they wrap
    module = getattr(inner if inspect.isfunction(inner) else value, "__module__", None)
    return isinstance(module, str) and module.startswith("triton.language")


class _Source:
    """One parsed .py file of the submission, with its top-level bindings (the last wins)."""

    def __init__(self, root, rel, index):
        self.rel, self.index = rel, index
        path = os.path.join(root, rel)
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            raise Refused("%s is not a regular file" % rel)
        if st.st_size > MAX_SOURCE_BYTES:
            raise Refused("%s is too large to read (%d bytes)" % (rel, st.st_size))
        with open(path, "rb") as f:
            text = f.read()
        try:
            self.tree = ast.parse(text, filename=rel)
        except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
            raise Refused("cannot parse %s: %s" % (rel, type(e).__name__))
        self.bindings = {}
        for stmt in self.tree.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.bindings[stmt.name] = stmt
            elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
                for alias in stmt.names:
                    if alias.name != "*":
                        bound = alias.asname or alias.name.split(".")[0]
                        self.bindings[bound] = (stmt, alias)
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign)) and all(
                    isinstance(t, ast.Name) for t in (stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target])):
                for t in (stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]):
                    self.bindings[t.id] = stmt
            else:  # bound some other way (a loop, a conditional, a tuple target): not resolvable statically
                for node in ast.walk(stmt):
                    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                        self.bindings[node.id] = stmt
                    elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
                        self.bindings[node.name] = stmt
                    elif isinstance(node, (ast.Import, ast.ImportFrom)):
                        for alias in node.names:
                            self.bindings[alias.asname or alias.name.split(".")[0]] = stmt


class KernelSource:
    """Builds, from the submission's source only, a module holding the recorded kernels and what
    they use: other kernels (also from other files of the submission), literal constants, and
    imports of triton, triton.language and math. Every body is checked against the whitelist
    first; decorators are dropped (autotune and heuristics already gave the launch its final
    meta-parameters) and replaced by a plain `triton.jit`."""

    def __init__(self, root):
        self.root = root
        self.sources = {}
        self.ids = {}  # (file, name) -> the name in the built module (None: a builtin)
        self.lines = []  # the built module's definitions, in dependency order
        self.params = {}  # the name in the built module of a kernel -> its parameter names
        self.value_attrs = _value_attrs()

    def source(self, rel):
        rel = os.path.normpath(rel) if isinstance(rel, str) else ""
        if (os.path.isabs(rel) or rel.startswith("..") or not rel.endswith(".py")
                or not os.path.isfile(os.path.join(self.root, rel))):
            raise Refused("the recorded kernel file %r is not a .py file of the submission" % rel[:200])
        if rel not in self.sources:
            self.sources[rel] = _Source(self.root, rel, len(self.sources))
        return self.sources[rel]

    def kernel(self, rel, name):
        """The built module's name of kernel `name` defined at the top of file `rel`."""
        src = self.source(rel)
        stmt = src.bindings.get(name)
        if not isinstance(stmt, ast.FunctionDef):
            raise Refused("the recorded kernel %s is not a top-level def in %s" % (name, rel))
        return self.resolve(src, name, "the recorded launch")

    # -- names --

    def resolve(self, src, name, where):
        """The built module's name for module-level `name` of `src`, defining what it needs."""
        key = (src.rel, name)
        if key in self.ids:
            return self.ids[key]
        stmt = src.bindings.get(name)
        if stmt is None:
            if name in BUILTINS:
                self.ids[key] = None
                return None
            raise Refused("%s: the name %s is not defined at the top of %s" % (where, name, src.rel))
        gid = "%s%d_%s" % (PREFIX, src.index, name)
        self.ids[key] = gid  # before the body: a kernel may name itself
        if isinstance(stmt, ast.FunctionDef):
            self.define_kernel(src, stmt, gid)
        elif isinstance(stmt, tuple):
            other = self.import_(src, stmt[0], stmt[1], gid, where)
            if other is not None:  # a name imported from another file of the submission
                self.ids[key] = other
                return other
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            self.define_constant(src, stmt, gid, where)
        else:
            raise Refused("%s: %s (line %d of %s) is not a kernel, a literal constant, or an import of triton, "
                          "triton.language or math" % (where, name, getattr(stmt, "lineno", 0), src.rel))
        return gid

    def static_value(self, src, node):
        """The object a Name/Attribute chain rooted at an allowed import stands for, else None."""
        attrs = []
        while isinstance(node, ast.Attribute):
            attrs.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        stmt = src.bindings.get(node.id)
        if not isinstance(stmt, tuple):
            return None
        obj = self.imported(src, stmt[0], stmt[1], "a constant")
        if obj is None:
            return None
        return self.walk_attrs(obj, reversed(attrs), "a constant")

    def imported(self, src, stmt, alias, where):
        """The object an import of an allowed module binds, or None for a submission import."""
        if isinstance(stmt, ast.Import):
            top = alias.name if alias.asname else alias.name.split(".")[0]
            if top not in MODULES:
                raise Refused("%s: imports %s (a kernel may use only triton, triton.language and math)" % (where, alias.name))
            return importlib.import_module(top)
        if stmt.level == 0 and stmt.module in MODULES:
            return self.walk_attrs(importlib.import_module(stmt.module), [alias.name], where)
        return None

    def walk_attrs(self, obj, attrs, where):
        """Follow attributes from an allowed module: modules must be allowed ones, other values
        Triton's (or math's); past a non-module value, only the value attributes."""
        for a in attrs:
            if a.startswith("_"):
                raise Refused("%s: the attribute %s is not allowed in a Triton kernel" % (where, a))
            if not inspect.ismodule(obj):
                if a not in self.value_attrs:
                    raise Refused("%s: the attribute .%s is not allowed in a Triton kernel" % (where, a))
                return None  # a value: not followed statically
            mod = obj.__name__
            if mod == "triton" and a not in TRITON_TOP:
                raise Refused("%s: triton.%s is not allowed in a Triton kernel" % (where, a))
            try:
                value = getattr(obj, a)
            except AttributeError:
                raise Refused("%s: %s has no attribute %s" % (where, mod, a))
            if inspect.ismodule(value):
                if value.__name__ not in MODULES:
                    raise Refused("%s: the module %s is not allowed in a Triton kernel" % (where, value.__name__))
            elif mod not in ("math", "triton") and not _from_triton_language(value):
                raise Refused("%s: %s.%s is not allowed in a Triton kernel" % (where, mod, a))
            obj = value
        return obj

    def import_(self, src, stmt, alias, gid, where):
        """Define `gid` as an allowed import; or resolve a name imported from the submission."""
        obj = self.imported(src, stmt, alias, where)
        if obj is not None:
            if inspect.ismodule(obj):
                self.lines.append("import %s as %s" % (obj.__name__, gid))
            else:
                self.lines.append("from %s import %s as %s" % (stmt.module, alias.name, gid))
            return None
        if isinstance(stmt, ast.Import):  # pragma: no cover - imported() refused it
            raise Refused("%s: imports %s" % (where, alias.name))
        base = os.path.dirname(src.rel) if stmt.level else ""
        for _ in range(max(0, stmt.level - 1)):
            base = os.path.dirname(base)
        parts = (stmt.module or "").split(".") if stmt.module else []
        for candidate in (os.path.join(base, *parts) + ".py", os.path.join(base, *parts, "__init__.py")):
            if os.path.isfile(os.path.join(self.root, candidate)):
                return self.resolve(self.source(candidate), alias.name, where)
        raise Refused("%s: imports from %s (a kernel may use only triton, triton.language, math and other "
                      "files of the submission)" % (where, "." * stmt.level + (stmt.module or "")))

    def define_constant(self, src, stmt, gid, where):
        """NAME = literal, NAME = tl.constexpr(literal), NAME: tl.constexpr = literal."""
        import triton.language as tl
        value, wrap = stmt.value, False
        if isinstance(stmt, ast.AnnAssign):
            wrap = self.static_value(src, stmt.annotation) is tl.constexpr
        if (isinstance(value, ast.Call) and len(value.args) == 1 and not value.keywords
                and self.static_value(src, value.func) is tl.constexpr):
            value, wrap = value.args[0], True
        try:
            literal = ast.literal_eval(value) if value is not None else None
        except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
            literal = Refused
        if value is None or not (literal is None or type(literal) in (bool, int, float, str)):
            raise Refused("%s: %s (line %d of %s) is not a literal constant" % (where, gid.split("_", 2)[-1],
                                                                                stmt.lineno, src.rel))
        self.lines.append("%s = %s" % (gid, ("%stl.constexpr(%r)" % (PREFIX, literal)) if wrap else repr(literal)))

    # -- kernels --

    def define_kernel(self, src, fdef, gid):
        where = "kernel %s (%s)" % (fdef.name, src.rel)
        a = fdef.args
        if a.vararg or a.kwarg:
            raise Refused("%s: *args and **kwargs are not allowed in a Triton kernel" % where)
        params = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]
        local = set(params)
        for stmt in fdef.body:
            for node in ast.walk(stmt):
                if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
                    local.add(node.id)
        if any(n.startswith(PREFIX) for n in local):
            raise Refused("%s: names starting with %s are reserved" % (where, PREFIX))
        renames = {}
        # defaults are evaluated where the def is: module names only
        for expr in a.defaults + [d for d in a.kw_defaults if d is not None]:
            self.check(expr, src, set(), where, renames)
        for stmt in fdef.body:
            self.check(stmt, src, local, where, renames)
        node = _Rename(renames, local).visit(copy.deepcopy(fdef))
        node.name = gid
        # Annotations: Triton's interpreter compiles kernels with `from __future__ import
        # annotations` and reads an annotation by its text ("tl.constexpr"), so each one that
        # stands for an object of triton.language is written as `tl.NAME` (the built module binds
        # `tl`); others are dropped.
        import triton.language as tl
        for p in node.args.posonlyargs + node.args.args + node.args.kwonlyargs:
            original = next(q for q in a.posonlyargs + a.args + a.kwonlyargs if q.arg == p.arg).annotation
            p.annotation = None
            try:
                value = self.static_value(src, original) if original is not None else None
            except Refused:
                value = None
            tail = original.attr if isinstance(original, ast.Attribute) else getattr(original, "id", None)
            if value is not None and tail and getattr(tl, tail, None) is value:
                p.annotation = ast.Attribute(value=ast.Name(id="tl", ctx=ast.Load()), attr=tail, ctx=ast.Load())
        node.returns = None
        node.decorator_list = [ast.Attribute(value=ast.Name(id=PREFIX + "triton", ctx=ast.Load()), attr="jit",
                                             ctx=ast.Load())]
        # docstrings dropped: the interpreter finds a kernel's `def` line by text
        node.body = [s for s in node.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
        node.body = node.body or [ast.Pass()]
        self.lines.append(ast.unparse(ast.fix_missing_locations(node)))
        self.params[gid] = params

    def check(self, node, src, local, where, renames):
        """The whitelist, node by node: the node's kind first, then (innermost first, so that a
        refusal names the deepest offence) its children, then its names and attributes."""
        if not isinstance(node, ALLOWED_NODES):
            raise Refused("%s, line %s: %s is not allowed in a Triton kernel" % (
                where, getattr(node, "lineno", "?"), type(node).__name__))
        if isinstance(node, ast.keyword) and node.arg is None:
            raise Refused("%s: **kwargs are not allowed in a Triton kernel" % where)
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise Refused("%s, line %d: the attribute .%s is not allowed in a Triton kernel" % (
                where, node.lineno, node.attr))
        for child in ast.iter_child_nodes(node):
            self.check(child, src, local, where, renames)
        if isinstance(node, ast.Name):
            if node.id not in local:
                if node.id not in src.bindings and node.id not in BUILTINS and hasattr(builtins, node.id):
                    raise Refused("%s, line %d: the builtin %s is not allowed in a Triton kernel" % (
                        where, node.lineno, node.id))
                gid = self.resolve(src, node.id, where)
                if gid is not None:
                    renames[node.id] = gid
        elif isinstance(node, ast.Attribute):
            attrs, root = [], node
            while isinstance(root, ast.Attribute):
                attrs.append(root.attr)
                root = root.value
            attrs.reverse()
            stmt = src.bindings.get(root.id) if isinstance(root, ast.Name) and root.id not in local else None
            if isinstance(stmt, tuple) and self.imported(src, stmt[0], stmt[1], where) is not None:
                self.walk_attrs(self.imported(src, stmt[0], stmt[1], where), attrs, where)
            elif node.attr.startswith("_") or node.attr not in self.value_attrs:
                raise Refused("%s, line %d: the attribute .%s is not allowed in a Triton kernel" % (
                    where, node.lineno, node.attr))

    def module(self, folder):
        """Write the built module into `folder` and import it (by path: nothing on sys.path)."""
        path = os.path.join(folder, "rdbench_witness_kernels.py")
        text = "\n\n".join(["import triton as %striton" % PREFIX,
                            "import triton.language as %stl  # the interpreter looks for triton.language here" % PREFIX,
                            "import triton.language as tl  # for annotations: tl.constexpr"]
                           + self.lines) + "\n"
        with open(path, "w") as f:
            f.write(text)
        spec = importlib.util.spec_from_file_location("rdbench_witness_kernels", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["rdbench_witness_kernels"] = module
        spec.loader.exec_module(module)
        return module


class _Rename(ast.NodeTransformer):
    """Module-level names of a kernel body -> their names in the built module."""

    def __init__(self, renames, local):
        self.renames, self.local = renames, local

    def visit_Name(self, node):
        if node.id in self.renames and node.id not in self.local:
            return ast.copy_location(ast.Name(id=self.renames[node.id], ctx=node.ctx), node)
        return node

    def visit_arguments(self, node):  # defaults and annotations: module scope
        saved, self.local = self.local, set()
        node = self.generic_visit(node)
        self.local = saved
        return node


def _is_int(x, lo=0, hi=1 << 62):
    return type(x) is int and lo <= x <= hi


class Witness:
    """One witness process: builds the recorded kernels, then replays plans (check or time mode)."""

    def __init__(self, job):
        self.job = job
        self.device = job["device"]
        self.kernels = {}  # (file, name) -> kernel object of the built module
        self.replayed = 0
        self.km = self.scope = None
        if job.get("problem") is not None:  # an nn.Module problem: the verifier's copy of its file
            import kernel_module
            self.km = kernel_module
            self.scope = kernel_module.load_problem(job["problem"], job.get("sizes"))

    def build(self, plans):
        import triton.language as tl
        self.tl = tl
        source = KernelSource(os.getcwd())
        wanted = []
        for plan in plans:
            launches = plan.get("launches") if isinstance(plan, dict) else None
            if not isinstance(launches, list) or plan.get("overflow") or len(launches) > MAX_LAUNCHES:
                raise Refused("a malformed or too long launch plan (at most %d launches a call)" % MAX_LAUNCHES)
            for launch in launches:
                if not isinstance(launch, dict) or "unrecordable" in launch:
                    raise Refused("a launch could not be recorded: %s" % str(
                        launch.get("unrecordable") if isinstance(launch, dict) else launch)[:300])
                name, rel = launch.get("kernel"), launch.get("file")
                if not (isinstance(name, str) and name.isidentifier() and isinstance(rel, str)):
                    raise Refused("a malformed launch record")
                if (rel, name) not in wanted:
                    wanted.append((rel, name))
        ids = {key: source.kernel(*key) for key in wanted}
        module = source.module(self.job["home"])
        self.kernels = {key: (getattr(module, gid), source.params[gid]) for key, gid in ids.items()}
        return sorted("%s:%s" % key for key in wanted)

    def tensor_view(self, spec, storages):
        t = spec.get("tensor") if isinstance(spec, dict) else None
        if not isinstance(t, dict):
            raise Refused("a malformed tensor argument")
        shape, stride, offset, dtype = t.get("shape"), t.get("stride"), t.get("offset"), t.get("dtype")
        dt = getattr(torch, dtype, None) if isinstance(dtype, str) and dtype.isidentifier() else None
        if (not isinstance(dt, torch.dtype) or not isinstance(shape, list) or not isinstance(stride, list)
                or len(shape) != len(stride) or len(shape) > 8 or not all(_is_int(n, 0, 1 << 40) for n in shape + stride)
                or not _is_int(offset, 0, 1 << 40)):
            raise Refused("a malformed tensor argument")
        storage = storages[t["key"]]
        size = torch.empty(0, dtype=dt).element_size()
        end = offset + (sum((n - 1) * s for n, s in zip(shape, stride)) + 1 if all(shape) else 0)
        if end * size > storage.nbytes():
            raise Refused("a recorded tensor view reaches past its buffer")
        return torch.empty(0, dtype=dt, device=self.device).set_(storage, offset, shape, stride)

    def scalar(self, spec):
        if isinstance(spec, dict) and "value" in spec and len(spec) == 1:
            v = spec["value"]
            if v is None or type(v) in (bool, int, float) or (type(v) is str and len(v) <= 200):
                return v
        if isinstance(spec, dict) and isinstance(spec.get("tl_dtype"), str) and len(spec) == 1:
            d = self.tl.dtype
            if spec["tl_dtype"] in d.SINT_TYPES + d.UINT_TYPES + d.FP_TYPES + d.OTHER_TYPES:
                return self.tl.dtype(spec["tl_dtype"])
        raise Refused("an argument the witness cannot replay: %s" % json.dumps(spec)[:200])

    def prepare(self, plan, case, seed):
        """The launches of `plan` on the verifier's inputs drawn from `seed`, a NaN-filled `out`, and
        zero-filled scratch: (go, result) as timed_reps wants them."""
        args, out = make_args(case, seed, self.device), new_out(case, self.device)
        inputs = plan.get("inputs")
        if not isinstance(inputs, list) or len(inputs) != len(args) or not _is_int(plan.get("out")):
            raise Refused("a malformed launch plan (its inputs and out)")
        storages, given = {}, 0
        for key, a in zip(inputs, args):
            if isinstance(a, torch.Tensor):
                if not _is_int(key):
                    raise Refused("a malformed launch plan (its inputs)")
                storages[key] = a.untyped_storage()
                given += a.untyped_storage().nbytes()
        storages[plan["out"]] = out.untyped_storage()
        given += out.untyped_storage().nbytes()
        return self.launches(plan, storages, given, out)

    def prepare_module(self, plan, case, seed, init_seed):
        """The same for an nn.Module problem: the inputs drawn from `seed`, the storages of ModelNew's
        parameters and buffers filled with *Model*'s (built from `init_seed` by the problem's own
        code), the returned tensor's storage filled with 0xFF bytes (NaN for floats), scratch zeros."""
        km = self.km
        args = km.draw_inputs(self.scope, seed, self.device)
        inputs, params, out_spec = plan.get("inputs"), plan.get("params"), plan.get("out")
        if (not isinstance(inputs, list) or len(inputs) != len(args) or not isinstance(params, list)
                or not isinstance(out_spec, dict)):
            raise Refused("a malformed launch plan (its inputs, parameters and output)")
        storages, given = {}, 0
        for key, a in zip(inputs, args):
            if isinstance(a, torch.Tensor):
                if not _is_int(key) or key in storages:
                    raise Refused("a malformed launch plan (its inputs)")
                storages[key] = a.untyped_storage()
                given += a.untyped_storage().nbytes()
        ref = [t for t in km.state(km.build(self.scope["Model"], self.scope, init_seed, self.device))
               if isinstance(t, torch.Tensor)]
        if len(params) != len(ref):
            raise Refused("ModelNew has %d parameters and buffers, Model has %d: build ModelNew from the same modules "
                          "in the same order, so that the same seed gives the same weights (as KernelBench requires)"
                          % (len(params), len(ref)))
        for i, (spec, value) in enumerate(zip(params, ref)):
            t = spec if isinstance(spec, dict) else {}
            if not (_is_int(t.get("key")) and _is_int(t.get("nbytes"), 0, 1 << 40)):
                raise Refused("a malformed launch plan (its parameters)")
            if any(t["key"] == k for k in inputs if k is not None):
                raise Refused("a parameter of ModelNew shares its storage with an input")
            if t["key"] not in storages:
                storages[t["key"]] = torch.zeros(t["nbytes"], dtype=torch.uint8, device=self.device).untyped_storage()
                given += t["nbytes"]
            view = self.tensor_view({"tensor": t}, storages)
            if list(view.shape) != list(value.shape) or view.dtype != value.dtype:
                raise Refused("ModelNew's parameter or buffer #%d is %s %s, Model's is %s %s: build ModelNew from the "
                              "same modules in the same order (as KernelBench requires)" % (
                                  i, list(view.shape), _dtype_name(view.dtype), list(value.shape),
                                  _dtype_name(value.dtype)))
            view.copy_(value.detach())
        if not (_is_int(out_spec.get("key")) and _is_int(out_spec.get("nbytes"), 0, 1 << 40)):
            raise Refused("a malformed launch plan (its output)")
        if out_spec["key"] in storages:
            raise Refused("the returned tensor aliases an input or a parameter")
        storages[out_spec["key"]] = torch.full((out_spec["nbytes"],), 255, dtype=torch.uint8,
                                               device=self.device).untyped_storage()
        given += out_spec["nbytes"]
        out = self.tensor_view({"tensor": out_spec}, storages)
        return self.launches(plan, storages, given, out)

    def launches(self, plan, storages, given, out):
        """The recorded launches on `storages` (the rest of the plan's storages: scratch, zero-filled)."""
        scratch = {}
        for launch in plan["launches"]:
            for spec in list(launch.get("args", {}).values()) if isinstance(launch.get("args"), dict) else []:
                t = spec.get("tensor") if isinstance(spec, dict) else None
                if isinstance(t, dict):
                    if not (_is_int(t.get("key")) and _is_int(t.get("nbytes"), 0, 1 << 40)):
                        raise Refused("a malformed tensor argument")
                    if t["key"] not in storages:
                        scratch[t["key"]] = max(scratch.get(t["key"], 0), t["nbytes"])
        if sum(scratch.values()) > max(SCRATCH_FACTOR * given, 1 << 20):
            raise Refused("the plan's scratch buffers (%d bytes) are more than %dx the inputs and output" % (
                sum(scratch.values()), SCRATCH_FACTOR))
        for key, n in scratch.items():
            storages[key] = torch.zeros(n, dtype=torch.uint8, device=self.device).untyped_storage()
        calls = []
        for launch in plan["launches"]:
            kernel, params = self.kernels[(launch["file"], launch["kernel"])]
            grid, kwargs, options = launch.get("grid"), launch.get("args"), launch.get("options", {})
            if (not isinstance(grid, list) or not 1 <= len(grid) <= 3 or not all(_is_int(g, 0, (1 << 31) - 1) for g in grid)
                    or not isinstance(kwargs, dict) or not isinstance(options, dict)):
                raise Refused("a malformed launch record of %s" % launch["kernel"])
            if not set(kwargs) <= set(params) or not set(options) <= set(LAUNCH_OPTIONS):
                raise Refused("a launch of %s with arguments it does not have: %s" % (
                    launch["kernel"], sorted(set(kwargs) - set(params)) + sorted(set(options) - set(LAUNCH_OPTIONS))))
            kw = {k: (self.tensor_view(v, storages) if isinstance(v, dict) and "tensor" in v else self.scalar(v))
                  for k, v in kwargs.items()}
            kw.update({k: self.scalar(v) for k, v in options.items()})
            calls.append((kernel, tuple(grid), kw))

        def go():
            for kernel, grid, kw in calls:
                kernel[grid](**kw)
            self.replayed += len(calls)

        return go, (lambda: out)

    def main(self):
        job = self.job
        report = {}
        if job["mode"] == "check":
            replays = job["replays"]
            report["kernels"] = self.build([r["plan"] for r in replays])
            for r in replays:
                case = job["cases"][r["case"]]
                go, result = (self.prepare_module(r["plan"], case, r["seed"], r["init_seed"]) if self.km
                              else self.prepare(r["plan"], case, r["seed"]))
                go()
                torch.save(result().detach().cpu(), os.path.join(job["results"], r["save"]))
        else:
            plans = job["plans"]
            report["kernels"] = self.build(plans)
            by_case = {id(c): p for c, p in zip(job["cases"], plans)}

            def prepare(case, seed):
                if self.km:
                    return self.prepare_module(by_case[id(case)], case, seed, case["init_seed"])
                return self.prepare(by_case[id(case)], case, seed)

            report["timings"] = timed_reps(job["cases"], job["reps"], job.get("warmup", 3), self.device, prepare,
                                           job["results"] if job.get("save") else None)
        report["launches"] = self.replayed
        return report


def witness_main(job_path):
    note_process()
    with open(job_path) as f:
        job = json.load(f)
    try:
        report = Witness(job).main()
    except Refused as e:
        report = {"refused": str(e)[:2000]}
    except Exception as e:  # a kernel that fails to compile or to run, a record that breaks a check
        report = {"refused": "replaying the recorded Triton launches failed: %s: %s" % (type(e).__name__, str(e)[:1500])}
    with open(os.path.join(job["results"], "report.json"), "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    witness_main(sys.argv[1])
