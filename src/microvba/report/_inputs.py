"""Collect what the report shows from the derivatives folder, tolerating absent pieces.

The report is decoupled from the stages that produce its inputs: it reads files on disk
(``OUT/group/*.tsv``, ``analysis.json``, randomise-style maps, PNG figures) and records which
expected piece is missing or unreadable, so that the report says so instead of failing.

Layout read (every piece optional; alternative column spellings are accepted)::

    OUT/dataset_description.json
    OUT/sub-<label>/figures/sub-<label>[_ses-<label>]_*qc*.png     registration QC mosaics
    OUT/group/analysis.json                     parameters and software versions of the run
    OUT/group/participants.tsv                  cohort analysed (participant_id, score, covariates)
    OUT/group/qc.tsv                            participant_id, similarity columns, outlier
    OUT/group/space-<space>_desc-gm_mask.nii.gz analysis mask
    OUT/group/<metric>/*_tstat{1,2}.nii.gz      t maps (randomise names)
    OUT/group/<metric>/*_{tfce,vox,clustere,clusterm}_{corrp,famcorrp}_tstat{1,2}.nii.gz
    OUT/group/<metric>/*_randomise.json         settings sidecar
    OUT/group/<metric>/*_{pos,neg}_clusters.nii.gz   cluster label images (FWE p per cluster)
    OUT/group/<metric>/*scatter*.png            residualised scatter plots
    OUT/group/clusters.tsv, correlations.tsv    all clusters, partial correlations
    OUT/group/decoding/<metric>_<pos|neg>_cluster-<id>_vocab-<v>_decoding.tsv
                     (+ <stem>_bar.png, <stem>_polar.png, stem with or without "_decoding")
    OUT/group/planted_vs_found.tsv              simulations only
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .._validation import InputError

#: randomise-style map kinds, most preferred correction first
CORRP_KINDS: tuple[str, ...] = ("tfce", "vox", "clustere", "clusterm")
#: last name token before ``_tstatN`` of randomise outputs that are not the t map itself
_NOT_T = frozenset({"p", "logp", "corrp", "fdrp", "fdrlogp", "uncp", "unclogp", "famcorrp",
                    "famlogp", "tfce", "vox", "clustere", "clusterm"})
_DECODING_RE = re.compile(
    r"^(?P<metric>[A-Za-z0-9]+)_(?P<sign>pos|neg|\+|-|plus|minus)_cluster-(?P<cluster>[^_]+)"
    r"_vocab-(?P<vocab>[^_]+)_decoding\.tsv$")


@dataclass
class MetricMaps:
    """Randomise-style outputs of one metric (paths; any may be ``None``)."""

    metric: str
    tstat: dict[int, Path] = field(default_factory=dict)  # contrast (1 = +, 2 = -) -> path
    #: kind (``tfce``, ``vox``, ... ``tfce_fam`` for famcorrp) -> contrast -> path
    corrp: dict[str, dict[int, Path]] = field(default_factory=dict)
    #: cluster label images of the regional follow-up, by sign (``+``/``-``)
    cluster_labels: dict[str, Path] = field(default_factory=dict)
    sidecar: dict[str, Any] = field(default_factory=dict)


@dataclass
class DecodingResult:
    """One decoded cluster: the table and its figures."""

    metric: str
    sign: str
    cluster_id: str
    vocabulary: str
    table_path: Path
    bar: Path | None = None
    polar: Path | None = None


@dataclass
class ReportInputs:
    """Everything the report can show, read from one derivatives folder."""

    out_dir: Path
    dataset_description: dict[str, Any] = field(default_factory=dict)
    analysis: dict[str, Any] = field(default_factory=dict)
    participants: pd.DataFrame | None = None
    qc: pd.DataFrame | None = None
    qc_mosaics: dict[str, list[Path]] = field(default_factory=dict)
    mask: Path | None = None
    metrics: dict[str, MetricMaps] = field(default_factory=dict)
    scatter: dict[str, list[Path]] = field(default_factory=dict)
    clusters: pd.DataFrame | None = None
    correlations: pd.DataFrame | None = None
    decoding: list[DecodingResult] = field(default_factory=list)
    planted: pd.DataFrame | None = None
    missing: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def group_dir(self) -> Path:
        return self.out_dir / "group"


def _rel(inputs: ReportInputs, path: Path) -> str:
    try:
        return str(path.relative_to(inputs.out_dir))
    except ValueError:
        return str(path)


def _read_json(inputs: ReportInputs, path: Path, *, required: bool = True) -> dict[str, Any]:
    if not path.is_file():
        if required:
            inputs.missing.append(_rel(inputs, path))
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        inputs.unreadable.append(f"{_rel(inputs, path)} ({exc})")
        return {}
    if not isinstance(data, dict):
        inputs.unreadable.append(f"{_rel(inputs, path)} (expected a JSON object)")
        return {}
    return data


def read_tsv(inputs: ReportInputs, path: Path, *, required: bool = True) -> pd.DataFrame | None:
    """Read a TSV; record it as missing or unreadable instead of raising."""
    if not path.is_file():
        if required:
            inputs.missing.append(_rel(inputs, path))
        return None
    try:
        table = pd.read_csv(path, sep="\t")
    except pd.errors.EmptyDataError:  # what pandas writes for a table without rows/columns
        return pd.DataFrame()
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:
        inputs.unreadable.append(f"{_rel(inputs, path)} ({exc})")
        return None
    return table


def _metric_maps(folder: Path, metric: str) -> MetricMaps:
    maps = MetricMaps(metric)
    for p in sorted(folder.glob("*.nii*")):
        name = p.name
        m = re.search(r"_tstat(\d+)\.nii(\.gz)?$", name)
        if m is None:
            continue
        contrast = int(m.group(1))
        kind = re.search(r"_(tfce|vox|clustere|clusterm)_(corrp|famcorrp)_tstat\d+\.nii", name)
        if kind is not None:
            key = kind.group(1) + ("_fam" if kind.group(2) == "famcorrp" else "")
            maps.corrp.setdefault(key, {})[contrast] = p
        elif name[: m.start()].rsplit("_", 1)[-1] not in _NOT_T:
            maps.tstat[contrast] = p
    for sign, tag in (("+", "pos"), ("-", "neg")):
        found = sorted(folder.glob(f"*_{tag}_clusters.nii*"))
        if found:
            maps.cluster_labels[sign] = found[0]
    for sidecar in sorted(folder.glob("*_randomise.json")):
        try:
            data = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(data, dict):
            maps.sidecar = data
            break
    return maps


def _sibling_png(tsv: Path, suffix: str) -> Path | None:
    """``<stem>_<suffix>.png`` beside ``<stem>_decoding.tsv`` (or ``..._decoding_<suffix>``)."""
    for stem in (tsv.name[: -len("_decoding.tsv")], tsv.name[: -len(".tsv")]):
        png = tsv.with_name(f"{stem}_{suffix}.png")
        if png.is_file():
            return png
    return None


def _decoding(folder: Path) -> list[DecodingResult]:
    results = []
    for tsv in sorted(folder.glob("*_decoding.tsv")):
        m = _DECODING_RE.match(tsv.name)
        if m is None:
            continue
        sign = {"pos": "+", "plus": "+", "neg": "-", "minus": "-"}.get(m["sign"], m["sign"])
        results.append(DecodingResult(m["metric"], sign, m["cluster"], m["vocab"], tsv,
                                      _sibling_png(tsv, "bar"), _sibling_png(tsv, "polar")))
    return results


def _subject_of(path: Path) -> str:
    m = re.match(r"(sub-[A-Za-z0-9]+(?:_ses-[A-Za-z0-9]+)?)", path.name)
    return m.group(1) if m else path.parent.parent.name


def _add_model_options(analysis: dict, settings_path: Path) -> None:
    """The participant stage's per-model options (GQI sampling length, MAP-MRI order and
    Laplacian weight) for the methods paragraph, when recorded and not already there."""
    if not isinstance(analysis, dict) or "model_options" in analysis:
        return
    try:
        options = json.loads(settings_path.read_text(encoding="utf-8")).get("model_options")
    except (OSError, ValueError, AttributeError):
        return
    if isinstance(options, dict) and options:
        analysis["model_options"] = options


def load_inputs(out_dir: str | Path) -> ReportInputs:
    """Read the derivatives folder ``out_dir`` for the report.

    Raises
    ------
    InputError
        If ``out_dir`` is not a directory.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise InputError(
            "The output folder does not exist or is not a folder, so there is nothing to report.",
            file=out_dir,
            fix="Pass the derivatives folder written by 'microvba BIDS OUT participant|group'.")
    inputs = ReportInputs(out_dir=out_dir)
    group = inputs.group_dir
    inputs.dataset_description = _read_json(inputs, out_dir / "dataset_description.json")
    inputs.analysis = _read_json(inputs, group / "analysis.json")
    _add_model_options(inputs.analysis, out_dir / "logs" / "participant_settings.json")
    inputs.participants = read_tsv(inputs, group / "participants.tsv")
    if inputs.participants is not None and "participant_id" in inputs.participants:
        inputs.participants = inputs.participants.set_index("participant_id")
    inputs.qc = read_tsv(inputs, group / "qc.tsv")
    for png in sorted(out_dir.glob("sub-*/figures/sub-*qc*.png")):
        inputs.qc_mosaics.setdefault(_subject_of(png), []).append(png)
    if not inputs.qc_mosaics:
        inputs.missing.append("sub-*/figures/sub-*_qc*.png (registration QC mosaics)")
    masks = sorted(group.glob("space-*_desc-gm_mask.nii*"))
    inputs.mask = masks[0] if masks else None
    if inputs.mask is None:
        inputs.missing.append("group/space-*_desc-gm_mask.nii.gz")
    wanted = [str(m).lower() for m in inputs.analysis.get("metrics", [])]
    found = sorted(p.name for p in group.iterdir() if p.is_dir()) if group.is_dir() else []
    order = [m for m in wanted if m in found] + [m for m in found if m not in wanted]
    for metric in order:
        maps = _metric_maps(group / metric, metric)
        if maps.tstat or maps.corrp:
            inputs.metrics[metric] = maps
    for metric in wanted:
        if metric not in inputs.metrics:
            inputs.missing.append(f"group/{metric}/ (statistical maps of {metric})")
    if not wanted and not inputs.metrics:
        inputs.missing.append("group/<metric>/ (statistical maps)")
    for png in sorted(group.glob("*/*scatter*.png")):
        inputs.scatter.setdefault(png.parent.name, []).append(png)
    inputs.clusters = read_tsv(inputs, group / "clusters.tsv")
    inputs.correlations = read_tsv(inputs, group / "correlations.tsv")
    if (group / "decoding").is_dir():
        inputs.decoding = _decoding(group / "decoding")
    inputs.planted = read_tsv(inputs, group / "planted_vs_found.tsv", required=False)
    return inputs
