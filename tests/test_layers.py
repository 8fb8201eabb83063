"""The package's folders are its data flow: no import points upward, and none hides a circle inside a function.

Read from the source (ast), not by importing, so that every import counts: top-level, inside a function, and
under TYPE_CHECKING. If this graph has no upward edge and no cycle, moving every bench import to the top of
its file could not make an import circular.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import bench

BENCH = Path(bench.__file__).parent

# Lowest first. A module may import its own package and any package of a lower rank; packages of one rank
# (scenario and worker) do not import each other. The loose modules of bench/ are the bottom.
RANKS = {
    "": 0,  # bench/__init__.py, bench/errors.py
    "spec": 1,
    "results": 2,
    "engine": 3,
    "ops": 4,
    "scenario": 5,
    "worker": 5,
    "judge": 6,
    "report": 7,
    "runner": 8,
    "estimate": 8,  # cost estimates before a run: reads scenarios' cases and stored results, runs nothing
    "bisect": 9,
    "cli": 10,
    "__main__": 11,
}
# Only these packages (besides ops itself) may import bench.ops: the op registry is read by the loader, the
# executor and the repro writer/report, never by what the ops call.
OPS_IMPORTERS = {"ops", "scenario", "worker", "judge", "report", "estimate"}
# A bench import inside a function is for a module that pulls in one of these (the parent process stays
# light), and says so in a comment on its line or the line above.
HEAVY = {
    "torch",
    "transformers",
    "peft",
    "matplotlib",
    "pandas",
    "pyarrow",
    "scipy",
    "bitsandbytes",
    "accelerate",
}
MAX_LINES = 400
MAX_FUNCTION_LINES = 80  # more needs "long because ..." in the docstring


def module_name(path: Path) -> str:
    parts = list(path.relative_to(BENCH.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(BENCH.rglob("*.py"))}


def package_of(mod: str) -> str:
    parts = mod.split(".")
    if len(parts) == 2 and parts[1] == "__main__":
        return "__main__"
    if len(parts) == 2 and (BENCH / f"{parts[1]}.py").exists():
        return ""
    return parts[1] if len(parts) > 1 else ""


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom | ast.Import) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([base] if base else []))
    out = []
    for a in node.names:
        sub = f"{base}.{a.name}"
        out.append(sub if sub in MODULES else base)
    return out


class Import:
    def __init__(self, source: str, target: str, line: int, local: bool):
        self.source, self.target, self.line, self.local = source, target, line, local

    def __repr__(self):
        where = "in a function" if self.local else "at top level"
        return f"{MODULES[self.source].relative_to(BENCH.parent)}:{self.line} imports {self.target} {where}"


def imports_of(mod: str) -> list[Import]:
    path = MODULES[mod]
    tree = ast.parse(path.read_text(), str(path))
    out: list[Import] = []

    def visit(node, local):
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in _resolve(mod, path.name == "__init__.py", child):
                    out.append(Import(mod, target, child.lineno, local))
            visit(child, inner)

    visit(tree, False)
    return out


def bench_edges() -> list[Import]:
    return [
        i for m in MODULES for i in imports_of(m) if i.target.split(".")[0] == "bench" and i.target in MODULES
    ]


def upward(edges: list[Import]) -> list[Import]:
    bad = []
    for e in edges:
        src, dst = package_of(e.source), package_of(e.target)
        if src == dst:
            continue
        if RANKS[dst] >= RANKS[src] or (dst == "ops" and src not in OPS_IMPORTERS):
            bad.append(e)
    return bad


def cycles(edges: list[Import]) -> list[list[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for e in edges:
        if e.target != e.source:
            graph[e.source].add(e.target)
    # A package imports its own __init__ implicitly; edges to a package's __init__ are real edges.
    found, state = [], {}

    def dfs(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                dfs(nxt, stack)
        stack.pop()
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m, [])
    return found


def heavy_modules(graph: dict[str, list[Import]] | None = None) -> set[str]:
    """The bench modules whose top-level imports pull in a heavy library, directly or through bench modules."""
    graph = graph if graph is not None else {m: imports_of(m) for m in MODULES}
    direct, deps = set(), {m: set() for m in graph}
    for m, imports in graph.items():
        for i in imports:
            if i.local:
                continue
            if i.target.split(".")[0] in HEAVY:
                direct.add(m)
            elif i.target in graph:
                deps[m].add(i.target)
    heavy = set(direct)
    changed = True
    while changed:
        changed = False
        for m, ds in deps.items():
            if m not in heavy and ds & heavy:
                heavy.add(m)
                changed = True
    return heavy


def long_functions(path: Path) -> list[str]:
    """Functions over MAX_FUNCTION_LINES lines whose docstring does not say why they are long."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            doc = " ".join((ast.get_docstring(node) or "").split())
            if length > MAX_FUNCTION_LINES and "long because" not in doc.lower():
                out.append(f"{path.name}:{node.lineno} {node.name} ({length} lines)")
    return out


def test_every_bench_module_is_read():
    assert len(MODULES) > 100 and "bench.worker.execute" in MODULES


def test_no_import_points_upward():
    assert upward(bench_edges()) == []


def test_no_import_circle_even_inside_functions():
    assert cycles(bench_edges()) == []


def test_an_import_inside_a_function_is_for_a_heavy_module_and_says_so():
    heavy = heavy_modules()
    bad = []
    for e in bench_edges():
        if not e.local:
            continue
        lines = MODULES[e.source].read_text().splitlines()
        commented = "#" in lines[e.line - 1] or lines[e.line - 2].strip().startswith("#")
        if e.target not in heavy or not commented:
            bad.append(e)
    assert bad == []


def test_at_most_three_loose_modules():
    loose = sorted(p.name for p in BENCH.glob("*.py"))
    assert len(loose) <= 3, loose


def test_every_module_is_under_the_line_limit():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_no_function_is_over_the_line_limit_without_a_reason():
    assert [f for p in MODULES.values() for f in long_functions(p)] == []


def test_every_package_has_a_rank():
    packages = {package_of(m) for m in MODULES}
    assert packages <= set(RANKS), packages - set(RANKS)


# Negative controls: the checks above find what they look for.


def test_control_an_upward_edge_is_found():
    edge = Import("bench.spec.cases", "bench.results.records", 1, True)
    assert upward([edge]) == [edge]
    assert upward([Import("bench.engine.subject", "bench.ops", 1, False)])  # engine may not read the registry
    assert upward([Import("bench.worker.execute", "bench.ops", 1, False)]) == []


def test_control_a_circle_is_found():
    a, b = "bench.spec.cases", "bench.spec.schema"
    assert cycles([Import(a, b, 1, False), Import(b, a, 1, True)])


def test_control_heavy_modules_are_found_through_bench_imports():
    graph = {
        "bench.a": [Import("bench.a", "torch", 1, False)],
        "bench.b": [Import("bench.b", "bench.a", 1, False)],
        "bench.c": [Import("bench.c", "bench.b", 1, True), Import("bench.c", "matplotlib", 2, True)],
    }
    assert heavy_modules(graph) == {"bench.a", "bench.b"}


def test_control_a_light_module_is_not_heavy():
    assert "bench.errors" not in heavy_modules() and "bench.spec.schema" not in heavy_modules()


def test_control_a_long_function_is_found(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "m.py").write_text(
        f'def f():\n{body}\n\n\ndef g():\n    """Long because: a table."""\n{body}\n'
    )
    assert long_functions(tmp_path / "m.py") == [f"m.py:1 f ({MAX_FUNCTION_LINES + 1} lines)"]


def test_the_parent_process_imports_no_heavy_library():
    """Every bench module is light at import: the CLI, the runner and the report load without torch, so a
    function-local import is never needed for speed (the parent side stays light by this test)."""
    code = (
        "import importlib, sys\n"
        f"for m in {sorted(m for m in MODULES if not m.endswith('__main__'))!r}:\n"
        "    importlib.import_module(m)\n"
        f"print(sorted(k for k in {sorted(HEAVY)!r} if k in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
