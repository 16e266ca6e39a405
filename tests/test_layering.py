"""Data flows one way: a stage imports only earlier stages (docs/architecture.md)."""

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
    """Module -> the package modules it imports anywhere (module level or in a function)."""
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = (package[: len(package) - node.level + 1] if node.level else [])
                target = ".".join(base + ([node.module] if node.module else []))
                subs = [f"{target}.{a.name}" for a in node.names
                        if f"{target}.{a.name}" in modules]
                deps |= set(subs)
                if len(subs) < len(node.names) and target in modules:
                    deps.add(target)  # names defined in the module (package) itself
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in modules}
        graph[name] = deps - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


#: cycles known and being removed elsewhere (issue 17: decode's database <-> maps is split
#: in the decode work); an entry may go, none may be added
KNOWN_CYCLES = [["microvba.decode.database", "microvba.decode.maps"]]


def test_no_import_cycle():
    cycles = [c for c in _cycles(_import_graph()) if c not in KNOWN_CYCLES]
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_cycle_check_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    # the report's former cycle (html.build_report imported _sections, which imports html)
    graph = _import_graph()
    assert "microvba.report.html" in graph["microvba.report._sections"]
    assert not graph["microvba.report.html"] & {m for m in graph if m.startswith(
        "microvba.report._")}
