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
