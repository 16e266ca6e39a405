"""Collect what the report shows from the derivatives folder, through the output contract.

The report reads files on disk, never the stages' objects; every name it opens and every
column it reads comes from :mod:`microvba.io.derivatives`, the module the stages write
through, so a writer and this reader cannot disagree silently. A piece that is absent
(no decoding run, no simulation truth) is listed as missing and the report says so; a table
that exists with a renamed or missing column, or a sign spelled other than ``+``/``-``, is an
:class:`~microvba._validation.InputError` naming the file (never blank cells).

Layout read: see the module docstring of :mod:`microvba.io.derivatives` (``OUT/group/...``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .._validation import InputError
from ..io import derivatives as D

#: randomise-style statistics, most preferred correction first
CORRP_KINDS: tuple[str, ...] = D.STATS
#: suffix of a :attr:`MetricMaps.corrp` kind corrected over the family of maps
FAMILY_KIND = "_fam"


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
class ScatterPlot:
    """Residualised scatter plot of one cluster."""

    metric: str
    sign: str
    cluster_id: str
    path: Path


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
    scatter: dict[str, list[ScatterPlot]] = field(default_factory=dict)
    clusters: pd.DataFrame | None = None
    correlations: pd.DataFrame | None = None
    decoding: list[DecodingResult] = field(default_factory=list)
    planted: pd.DataFrame | None = None
    missing: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def group_dir(self) -> Path:
        return D.group_dir(self.out_dir)


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


def read_tsv(inputs: ReportInputs, path: Path, *, required: bool = True,
             columns: tuple[str, ...] = ()) -> pd.DataFrame | None:
    """Read a TSV written by a stage; record it as missing or unreadable instead of raising.

    ``columns`` are those the contract guarantees for the table: a table with rows that
    lacks any of them is an error, as is a ``sign`` column with another spelling.

    Raises
    ------
    InputError
        When the table exists but lacks a contract column or spells a sign otherwise.
    """
    if not path.is_file():
        if required:
            inputs.missing.append(_rel(inputs, path))
        return None
    try:
        table = pd.read_csv(path, sep="\t", dtype={D.SIGN: str})
    except pd.errors.EmptyDataError:  # what pandas writes for a table without rows/columns
        return pd.DataFrame()
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:
        inputs.unreadable.append(f"{_rel(inputs, path)} ({exc})")
        return None
    if len(table) or len(table.columns):
        D.check_columns(table.columns, columns, path)
    if D.SIGN in table.columns:
        table[D.SIGN] = [D.parse_sign(v, path) for v in table[D.SIGN]]
    return table


def _metric_maps(folder: Path, metric: str) -> MetricMaps:
    maps = MetricMaps(metric)
    for sign in D.SIGNS:
        contrast = D.CONTRAST_OF_SIGN[sign]
        path = folder / D.randomise_map_name(metric, D.tstat_key(contrast))
        if path.is_file():
            maps.tstat[contrast] = path
        for stat in D.STATS:
            for family in (False, True):
                path = folder / D.randomise_map_name(
                    metric, D.corrp_key(stat, contrast, family=family))
                if path.is_file():
                    kind = stat + (FAMILY_KIND if family else "")
                    maps.corrp.setdefault(kind, {})[contrast] = path
        labels = folder / D.region_file(D.region_tag(metric, sign), "label_img")
        if labels.is_file():
            maps.cluster_labels[sign] = labels
    sidecar = folder / D.randomise_sidecar_name(metric)
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        data = None
    if isinstance(data, dict):
        maps.sidecar = data
    return maps


def _cluster_keys(clusters: pd.DataFrame | None) -> list[tuple[str, str, str]]:
    """(metric, sign, cluster id) of every row of ``clusters.tsv``, in its order."""
    if clusters is None or clusters.empty:
        return []
    return [(str(m), s, str(int(float(c)))) for m, s, c in
            zip(clusters[D.METRIC], clusters[D.SIGN], clusters[D.CLUSTER_ID], strict=True)]


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


def _decoding(inputs: ReportInputs) -> list[DecodingResult]:
    """The decoding tables of every cluster of ``clusters.tsv`` in every vocabulary."""
    folder = inputs.group_dir / D.DECODING_DIR
    vocabularies = inputs.analysis.get("vocabularies") or D.VOCABULARIES
    results = []
    for metric, sign, cid in _cluster_keys(inputs.clusters):
        for vocab in vocabularies:
            stem = D.decoding_stem(D.region_tag(metric, sign), vocab, cid)
            tsv = folder / D.decoding_table_name(stem)
            if tsv.is_file():
                bar, polar = (_existing(folder / D.decoding_figure_name(stem, f))
                              for f in D.FIGURE_KINDS)
                results.append(DecodingResult(metric, sign, cid, vocab, tsv, bar, polar))
    return results


def _scatter(inputs: ReportInputs) -> dict[str, list[ScatterPlot]]:
    out: dict[str, list[ScatterPlot]] = {}
    for metric, sign, cid in _cluster_keys(inputs.clusters):
        png = inputs.group_dir / metric / D.scatter_name(D.region_tag(metric, sign),
                                                         D.cluster_figure_key(cid))
        if png.is_file():
            out.setdefault(metric, []).append(ScatterPlot(metric, sign, cid, png))
    return out


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
        If ``out_dir`` is not a directory, or a table lacks a column of the contract.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise InputError(
            "The output folder does not exist or is not a folder, so there is nothing to report.",
            file=out_dir,
            fix="Pass the derivatives folder written by 'microvba BIDS OUT participant|group'.")
    inputs = ReportInputs(out_dir=out_dir)
    group = inputs.group_dir
    inputs.dataset_description = _read_json(inputs, out_dir / D.DATASET_DESCRIPTION_JSON)
    inputs.analysis = _read_json(inputs, group / D.ANALYSIS_JSON)
    _add_model_options(inputs.analysis,
                       out_dir / D.LOGS_DIR / D.PARTICIPANT_SETTINGS_JSON)
    space = str(inputs.analysis.get("space") or D.SPACE_MNI)
    inputs.participants = read_tsv(inputs, group / D.GROUP_PARTICIPANTS_TSV,
                                   columns=(D.PARTICIPANT_ID,))
    if inputs.participants is not None and D.PARTICIPANT_ID in inputs.participants:
        inputs.participants = inputs.participants.set_index(D.PARTICIPANT_ID)
    inputs.qc = read_tsv(inputs, group / D.QC_TSV, columns=(D.PARTICIPANT_ID, D.OUTLIER))
    if inputs.qc is not None and D.PARTICIPANT_ID in inputs.qc:
        for prefix in inputs.qc[D.PARTICIPANT_ID].astype(str):
            png = D.qc_mosaic_path(out_dir, prefix, space)
            if png.is_file():
                inputs.qc_mosaics.setdefault(prefix, []).append(png)
    if not inputs.qc_mosaics:
        inputs.missing.append(f"sub-*/figures/{D.qc_mosaic_name('sub-*', space)} "
                              "(registration QC mosaics)")
    mask = group / D.group_mask_name(space)
    inputs.mask = mask if mask.is_file() else None
    if inputs.mask is None:
        inputs.missing.append(_rel(inputs, mask))
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
    inputs.clusters = read_tsv(inputs, group / D.CLUSTERS_TSV, columns=D.GROUP_CLUSTER_COLUMNS)
    inputs.correlations = read_tsv(inputs, group / D.CORRELATIONS_TSV,
                                   columns=(*D.CORRELATION_COLUMNS, D.METRIC, D.SIGN))
    inputs.scatter = _scatter(inputs)
    inputs.decoding = _decoding(inputs)
    inputs.planted = read_tsv(inputs, group / D.PLANTED_TSV, required=False,
                              columns=D.PLANTED_COLUMNS)
    return inputs
