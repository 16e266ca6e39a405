"""Each job has one implementation, called from every place that needs it (issue 17).

Parsed from the source (``ast``), so a second copy fails here whoever adds it.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import microvba

ROOT = Path(microvba.__file__).parent


@functools.cache
def _trees() -> dict[str, ast.Module]:
    return {str(p.relative_to(ROOT)): ast.parse(p.read_text()) for p in ROOT.rglob("*.py")}


@functools.cache
def _nodes() -> dict[str, list[ast.AST]]:
    return {path: list(ast.walk(tree)) for path, tree in _trees().items()}


def _defs(name: str) -> list[str]:
    return [f"{path}:{node.lineno}" for path, nodes in _nodes().items()
            for node in nodes
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name]


def _calls(attribute: str) -> list[str]:
    return [f"{path}:{node.lineno}" for path, nodes in _nodes().items()
            for node in nodes if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == attribute]


def _strings(text: str, exact: bool = False) -> list[str]:
    """String constants (docstrings left out) containing (or equal to) ``text``."""
    out = []
    for path, tree in _trees().items():
        docs = {id(owner.body[0].value) for owner in ast.walk(tree)
                if isinstance(owner, ast.Module | ast.ClassDef | ast.FunctionDef)
                and owner.body and isinstance(owner.body[0], ast.Expr)}
        out += [f"{path}:{node.lineno}" for node in ast.walk(tree)
                if isinstance(node, ast.Constant) and isinstance(node.value, str)
                and (node.value == text if exact else text in node.value)
                and id(node) not in docs]
    return out


def test_one_fdr_bh():
    assert [d.split(":")[0] for d in _defs("fdr_bh")] == ["_fdr.py"]
    from microvba.decode import decoder
    from microvba.regions import correlation
    from microvba.stats import clusters

    assert decoder.fdr_bh is clusters.fdr_bh and correlation.fdr_bh is clusters.fdr_bh


def test_one_dummy_coding():
    assert [d.split(":")[0] for d in _defs("dummy_code")] == ["stats/design.py"]
    assert not _calls("get_dummies")


def test_one_data_folder_resolver():
    """Only ``_paths`` reads $MICROVBA_DATA; the public names are aliases of it."""
    assert [s.split(":")[0] for s in _strings("MICROVBA_DATA", exact=True)] == ["_paths.py"]
    from microvba import _paths
    from microvba.decode.database import resolve_data_dir
    from microvba.regions.atlases import data_dir

    assert resolve_data_dir is _paths.data_dir and data_dir is _paths.data_dir


def test_one_brainnetome_loader():
    """The BN-246 image is named and read in one module (regions.atlases)."""
    assert {s.split(":")[0] for s in _strings("BN_Atlas_246_1mm")} == {"regions/atlases.py"}


def test_one_design_table_reader_and_one_image_stack_reader():
    assert [d.split(":")[0] for d in _defs("read_design_table")] == ["io/design_table.py"]
    assert [d.split(":")[0] for d in _defs("read_image_stack")] == ["io/image_stack.py"]
    assert not [c for c in _calls("read_csv") if c.startswith("cli/")]


def test_cli_carries_no_workflow():
    """The ``randomise`` and ``roi`` subcommands call one library function each: no
    permutation engine, FWE p, design builder, image reading or correlation in the CLI."""
    trees = _trees()
    for module in ("cli/randomise.py", "cli/roi.py"):
        names = {n.id for n in ast.walk(trees[module]) if isinstance(n, ast.Name)}
        names |= {a.name for n in ast.walk(trees[module]) if isinstance(n, ast.ImportFrom)
                  for a in n.names}
        for engine in ("randomise_family", "fwe_p", "make_design", "partial_corr",
                       "freedman_lane", "nib", "pd"):
            assert engine not in names, (module, engine)


def test_defaults_declared_once():
    """n_perm 5000, d_iso 3e-3 and the 'wm' preset are literal in ``_defaults`` only."""
    found = {5000: [], 3.0e-3: []}
    for path, tree in _trees().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and type(node.value) in (int, float) \
                    and node.value in found and not isinstance(node.value, bool):
                found[node.value].append(path)
    assert found[5000] == ["_defaults.py"]
    # 3e-3 is also the MD of CSF in the T1-like contrast (another quantity)
    assert sorted(set(found[3.0e-3])) == ["_defaults.py", "registration/contrast.py"]
    wm_defaults = [f"{path}:{node.lineno}" for path, nodes in _nodes().items()
                   for node in nodes if isinstance(node, ast.arguments)
                   for d in node.defaults + node.kw_defaults
                   if isinstance(d, ast.Constant) and d.value == "wm"]
    assert not wm_defaults


def test_group_stage_imports_at_the_top_except_heavy_stages():
    """workflows/group.py imports inside functions only what the command line must not load
    when it parses options (numba, matplotlib, the atlases, the report)."""
    tree = _trees()["workflows/group.py"]
    lazy = [node for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef)
            for node in ast.walk(fn) if isinstance(node, ast.ImportFrom | ast.Import)]
    heavy = {"stats", "registration", "regions", "decode", "report"}
    assert lazy and all(isinstance(n, ast.ImportFrom) and n.level == 2
                        and n.module.split(".")[0] in heavy for n in lazy), \
        [ast.unparse(n) for n in lazy]
