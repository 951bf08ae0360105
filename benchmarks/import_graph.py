"""The import graph of the four packages, and its rules; exit 1 when one is broken.

    .venv/bin/python benchmarks/import_graph.py

Arrows go only downward:  harness -> agents, sandbox, results;  agents -> sandbox, results (the
records an agent fills: its Usage).
results (records, registry, index, tables, plots) imports none of the others and no model
SDK; sandbox imports none of the others. Between modules, no circle (a lazy import inside a
function counts: it is a dependency all the same). Imports under `if TYPE_CHECKING:` are
annotations, not dependencies, and are left out. Also: no host-side module over 400 lines
(the in-sandbox kits excluded).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "agents", "sandbox", "results")
ALLOWED = {"harness": {"agents", "sandbox", "results"}, "agents": {"sandbox", "results"}, "sandbox": set(), "results": set()}
SDKS = {"anthropic", "openai", "docker"}
#: run only inside sandboxes: copied in, never imported by the host
IN_SANDBOX = "harness/kits/"  # the in-sandbox kits and the task template: never imported on the host
MAX_LINES = 400


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports(path: Path, package: str) -> set[str]:
    """Top-level names of what `path` imports at run time (relative imports resolved to `package`)."""
    out = set()

    def walk(nodes):
        for node in nodes:
            if isinstance(node, ast.If) and _type_checking(node):
                walk(node.orelse)
                continue
            if isinstance(node, ast.Import):
                out.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                out.add(package if node.level else (node.module or "").split(".")[0])
            walk(ast.iter_child_nodes(node))

    walk(ast.parse(path.read_text()).body)
    return out


def module_imports(path: Path, module: str) -> set[str]:
    """The modules of the four packages that `path` (module `module`) imports at run time."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()

    def known(name: str) -> str | None:
        parts = name.split(".")
        while parts:
            candidate = ROOT.joinpath(*parts)
            if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
                return ".".join(parts)
            parts.pop()
        return None

    def walk(nodes):
        for node in nodes:
            if isinstance(node, ast.If) and _type_checking(node):
                walk(node.orelse)
                continue
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package.rsplit(".", node.level - 1)[0] if node.level else ""
                head = ".".join(x for x in (base, node.module or "") if x)
                names = [f"{head}.{a.name}" for a in node.names] if not node.module else [head]
                names += [head] if not node.module else []
            for name in names:
                found = known(name)
                if found and found.split(".")[0] in PACKAGES and found != module:
                    out.add(found)
            walk(ast.iter_child_nodes(node))

    walk(ast.parse(path.read_text()).body)
    return out


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    arrows, problems, modules = {}, [], {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            if rel.startswith(IN_SANDBOX):
                continue
            module = rel[:-3].replace("/", ".").removesuffix(".__init__")
            modules[module] = module_imports(path, module)
            names = imports(path, pkg)
            for dep in names & set(PACKAGES) - {pkg}:
                arrows.setdefault((pkg, dep), []).append(rel)
                if dep not in ALLOWED[pkg]:
                    problems.append(f"{rel}: {pkg} -> {dep} (an upward arrow)")
            if pkg == "results" and names & SDKS:
                problems.append(f"{rel}: results imports an SDK ({', '.join(sorted(names & SDKS))})")
            lines = len(path.read_text().splitlines())
            if lines > MAX_LINES:
                problems.append(f"{rel}: {lines} lines (at most {MAX_LINES})")
    for (a, b), files in sorted(arrows.items()):
        print(f"{a:>8} -> {b:<8} ({len(files)} modules: {', '.join(Path(f).name for f in files)})")
    for group in circles(modules):
        problems.append(f"an import circle: {' <-> '.join(group)}")
    for p in problems:
        print(f"PROBLEM: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
