"""Data flows one way: a stage imports only earlier stages, and no module imports itself
through others (docs/architecture.md)."""

import ast
from pathlib import Path

import microvba

ORDER = ["io", "models", "registration", "stats", "regions", "decode", "report", "simulate",
         "workflows", "cli"]
ROOT = Path(microvba.__file__).parent


def _imported_stages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.level:  # relative: resolve against the file's package
                pkg = path.relative_to(ROOT).parts[:-1]
                base = list(pkg[: len(pkg) - (node.level - 1)]) if node.level > 1 else list(pkg)
                name = ".".join(base + node.module.split("."))
            elif node.module.startswith("microvba."):
                name = node.module[len("microvba."):]
            else:
                continue
            found.add(name.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("microvba."):
                    found.add(alias.name.split(".")[1])
    return found & set(ORDER)


def test_no_stage_imports_a_later_stage():
    bad = []
    for stage in ORDER:
        for path in (ROOT / stage).rglob("*.py"):
            for other in _imported_stages(path):
                if ORDER.index(other) > ORDER.index(stage):
                    bad.append(f"{path.relative_to(ROOT)} imports {other}")
    assert not bad, "\n".join(bad)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (anywhere in the file, lazily or not)."""
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - (node.level - 1)]
                    target = ".".join(base + (node.module.split(".") if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    deps.add(sub if sub in modules else target)
            elif isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def import_cycles() -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph = _import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


#: known import cycles (none left; a new one fails the test below)
PENDING_CYCLES: set[frozenset[str]] = set()


def test_no_import_cycle():
    new = [sorted(c) for c in import_cycles() if c not in PENDING_CYCLES]
    assert not new, f"import cycles: {new}"


def test_cycle_finder_finds_a_cycle(tmp_path, monkeypatch):
    """The check can fail: two modules importing each other form a cycle."""
    pkg = tmp_path / "microvba"
    (pkg / "io").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "io" / "__init__.py").write_text("")
    (pkg / "io" / "a.py").write_text("from .b import x\n")
    (pkg / "io" / "b.py").write_text("def f():\n    from microvba.io import a\n")
    monkeypatch.setitem(globals(), "ROOT", pkg)
    assert import_cycles() == [frozenset({"microvba.io.a", "microvba.io.b"})]
