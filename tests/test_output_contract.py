"""No derivative name, table column or analysis.json key is spelled outside the contract.

``src/microvba/io/derivatives.py`` owns every output name; the stages write through it and
the report reads through it. This test parses every other module of ``src/`` and fails when
a string literal (docstrings and comments excepted: they document the names) holds a
fragment of a derivative file name, or is exactly a column name of an output table or a key
of ``analysis.json``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import microvba
from microvba.io import derivatives as D

ROOT = Path(microvba.__file__).parent
CONTRACT = ROOT / "io" / "derivatives.py"

#: pieces of derivative file names (BIDS entities and suffixes, randomise map names, tables)
NAME_FRAGMENTS = (
    "_dwimap", "_dwiref", "desc-", "space-", "_model-", "_param-", "_xfm", "from-dwi",
    "_corrp", "famcorrp", "_logp", "famlogp", "unclogp", "fdrlogp", "fdrp_", "_tstat",
    "tstat1", "tstat2", "clusters.tsv", "correlations.tsv", "cluster-labels", "cluster-means",
    "analysis.json", "qc.tsv", "planted_vs_found", "report.html", "_randomise.json",
    "_regions.json", "_cluster-", "_vocab-", "_decoding", "decoding.tsv", "decoding.json",
    "npc-", "npc_clusters", "_scatter", "dropped-features", "_bar.png", "_polar.png",
    "registration_qc", "gm_mask", "dwi-series", "participant_settings", "_dseg",
    "desc-truth")

#: (module, literal) pairs that look like an output name but are not one, and why
ALLOWED = {
    # the association-map cache under $MICROVBA_CACHE (not an output of a run)
    ("decode/maps.py", "_vocab-"),
    # a key of the simulation's code/ground_truth.json (an input), spelled as the column
    ("workflows/planted.py", "study_r"),
}
#: the public databases' own file names (inputs, named by their publishers)
INPUT_PREFIXES = ("data-neurosynth_", "data-neuroquery_")
#: modules whose tables are not outputs of a run: the decoding cache's feature tables
COLUMNS_ALLOWED_IN = {"decode/maps.py"}

#: names that are also the tool's inputs (BIDS participants.tsv), the provenance module's
#: sidecar key, an atlas name, or counts that every sidecar's parameters use
NOT_OUTPUT_ONLY = {D.PARTICIPANT_ID, "SoftwareVersions", "n_subjects", "n_voxels",
                   "n_clusters", "brainnetome", "harvard_oxford", "aal"}


def _columns_and_keys() -> set[str]:
    names = set()
    for attr in dir(D):
        value = getattr(D, attr)
        if attr.endswith("COLUMNS") and isinstance(value, tuple):
            names |= set(value)
    names |= set(D.ANALYSIS_EXTRA_KEYS) | set(D.SUMMARY_KEYS)
    names |= {c for a in ("brainnetome", "harvard_oxford", "aal") for c in D.atlas_columns(a)}
    # a column spelled as a whole literal is only recognisable when it is not a plain word
    return {n for n in names if "_" in n} - NOT_OUTPUT_ONLY


def _literals(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)):
            skip.add(id(body[0].value))  # docstring
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            skip |= {id(n) for n in ast.walk(node.value)}  # public function names
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            skip.add(id(node.value))  # attribute docstrings ("#:" style strings)
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip]


def _offences() -> list[str]:
    columns = _columns_and_keys()
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        if path == CONTRACT:
            continue
        rel = path.relative_to(ROOT).as_posix()
        for line, text in _literals(path):
            if (rel, text) in ALLOWED or text.startswith(INPUT_PREFIXES):
                continue
            hits = [f for f in NAME_FRAGMENTS if f in text]
            if text in columns and rel not in COLUMNS_ALLOWED_IN:
                hits.append(f"column/key {text!r}")
            if hits:
                bad.append(f"{rel}:{line}: {text[:60]!r} ({', '.join(hits)})")
    return bad


def test_no_output_name_or_column_outside_the_contract():
    bad = _offences()
    assert not bad, ("spell these through microvba.io.derivatives:\n" + "\n".join(bad))


def test_the_check_would_catch_a_stray_spelling(tmp_path, monkeypatch):
    stray = tmp_path / "microvba"
    (stray / "io").mkdir(parents=True)
    (stray / "io" / "derivatives.py").write_text('X = "clusters.tsv"\n')
    (stray / "stage.py").write_text(
        '"""Writes fa_tfce_corrp_tstat1 (a docstring may name it)."""\n'
        'NAME = f"{prefix}_desc-brain_mask.nii.gz"\n'
        'row = {"q_fdr": 0.1, "participant_id": "sub-01"}\n')
    monkeypatch.setattr(sys.modules[__name__], "ROOT", stray)
    monkeypatch.setattr(sys.modules[__name__], "CONTRACT", stray / "io" / "derivatives.py")
    bad = _offences()
    assert len(bad) == 2
    assert "desc-" in bad[0] and "column/key 'q_fdr'" in bad[1]
