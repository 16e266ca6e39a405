"""Helpers shared by the report sections: column lookup, cell formatting, map loading."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

import nibabel as nib
import pandas as pd

from .._logging import get_logger
from ._inputs import CORRP_KINDS, MetricMaps, ReportInputs
from .html import (
    data_uri,
    format_number,
    format_p,
)
from .methods import lookup

log = get_logger(__name__)

_CORRECTIONS = {"tfce": "TFCE", "vox": "voxel-wise max t", "clustere": "cluster extent",
                "clusterm": "cluster mass"}
#: corrp kind (see :data:`._inputs.CORRP_KINDS`; ``_fam``: famcorrp maps) -> words
_KIND_NAMES = {**_CORRECTIONS, **{f"{k}_fam": f"{v} (FWE over all metrics and directions)"
                                  for k, v in _CORRECTIONS.items()}}
_SIGN = {"+": "+", "pos": "+", "positive": "+", "plus": "+", "1": "+", "1.0": "+",
         "-": "-", "−": "-", "neg": "-", "negative": "-", "minus": "-", "2": "-", "-1": "-",
         "-1.0": "-", "2.0": "-"}
FIGURE_DPI = 90


# ----------------------------------------------------------------------------- helpers
def _sign(value: Any) -> str:
    return _SIGN.get(str(value).strip().lower(), str(value))


def _sign_html(value: Any) -> str:
    s = _sign(value)
    cls = {"+": "pos", "-": "neg"}.get(s, "")
    return f'<span class="{cls}">{"+" if s == "+" else "−" if s == "-" else escape(s)}</span>'


def _pick(table: pd.DataFrame, *names: str) -> str | None:
    lower = {str(c).lower(): c for c in table.columns}
    for name in names:
        if name.lower() in lower:
            return lower[name.lower()]
    return None


def _cell(col: str | None, decimals: int = 2, p: bool = False):
    def render(row: pd.Series) -> str:
        if col is None:
            return ""
        value = row[col]
        if p:
            try:
                return format_p(float(value))
            except (TypeError, ValueError):
                return escape(str(value))
        return format_number(value, decimals)
    return render


def _family_corrected(value: Any) -> bool:
    """True when the analysis corrected a family of maps (``correct_across`` not none)."""
    from ..stats.family import Family

    if value is None:
        return False
    try:
        return Family.parse(value) is not Family.NONE
    except ValueError:
        return _is_true(value)


def _is_true(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "1.0", "yes", "y")


def _metric_label(metric: str) -> str:
    return metric.upper()


def _alpha(inputs: ReportInputs) -> float:
    try:
        return float(lookup(inputs.analysis, "alpha", "fwe_alpha", default=0.05))
    except (TypeError, ValueError):
        return 0.05


def _n_perm(inputs: ReportInputs, maps: MetricMaps | None = None) -> Any:
    n = lookup(inputs.analysis, "n_perm", "n_permutations", "permutations")
    if n is None and maps is not None:
        n = lookup(maps.sidecar, "Parameters.n_perm", "n_perm", "Parameters.n_permutations")
    return n


def _kind(inputs: ReportInputs, maps: MetricMaps) -> str | None:
    wanted = str(lookup(inputs.analysis, "correction", "inference", default="tfce")).lower()
    wanted = {"voxel": "vox", "cluster": "clustere"}.get(wanted, wanted)
    family = lookup(inputs.analysis, "correct_across", "correct_across_metrics", "family")
    if _family_corrected(family) and f"{wanted}_fam" in maps.corrp:
        return f"{wanted}_fam"
    if wanted in maps.corrp:
        return wanted
    return next((k for k in CORRP_KINDS if k in maps.corrp), None)


def _load(path: Path | None) -> nib.spatialimages.SpatialImage | None:
    if path is None:
        return None
    try:
        return nib.load(str(path))
    except (OSError, ValueError, nib.filebasedimages.ImageFileError) as exc:
        log.warning("could not read %s: %s", path, exc)
        return None


def _img_tag(png: bytes, alt: str) -> str:
    return f'<img src="{data_uri(png)}" alt="{escape(alt)}">'

def _text(col: str):
    return lambda r: "" if col not in r or pd.isna(r[col]) else escape(str(r[col]))


def _norm_key(value: Any) -> str:
    s = _sign(value)
    if s in ("+", "-"):
        return s
    try:
        return str(int(float(value)))
    except (TypeError, ValueError):
        return str(value).lower()


def _cluster_region(inputs: ReportInputs, metric: Any, sign: Any, cluster_id: Any) -> str:
    c = inputs.clusters
    if c is None or c.empty or not {"metric", "sign", "cluster_id", "region"} <= set(c.columns):
        return ""
    want = (str(metric).lower(), _norm_key(sign), _norm_key(cluster_id))
    for _, row in c.iterrows():
        if (row["metric"], _norm_key(row["sign"]), _norm_key(row["cluster_id"])) == want:
            return "" if pd.isna(row["region"]) else str(row["region"])
    return ""


