"""Helpers shared by the report sections: cell formatting, signs, map loading."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

import nibabel as nib
import pandas as pd

from .._logging import get_logger
from ..io import derivatives as D
from ._inputs import CORRP_KINDS, FAMILY_KIND, MetricMaps, ReportInputs
from .html import (
    data_uri,
    format_number,
    format_p,
)

log = get_logger(__name__)

_CORRECTIONS = {"tfce": "TFCE", "vox": "voxel-wise max t", "clustere": "cluster extent",
                "clusterm": "cluster mass"}
#: corrp kind (see :data:`._inputs.CORRP_KINDS`; ``_fam``: famcorrp maps) -> words
_KIND_NAMES = {**_CORRECTIONS, **{f"{k}{FAMILY_KIND}": f"{v} (FWE over all metrics and "
                                  "directions)" for k, v in _CORRECTIONS.items()}}
FIGURE_DPI = 90


# ----------------------------------------------------------------------------- helpers
def _sign(value: Any) -> str:
    """The contract's one spelling of a direction (``+``/``-``; anything else an error)."""
    return D.parse_sign(value)


def _sign_html(value: Any) -> str:
    s = _sign(value)
    return f'<span class="{D.SIGN_TAG[s]}">{"+" if s == "+" else "−"}</span>'


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
        return float(inputs.analysis.get("alpha", 0.05))
    except (TypeError, ValueError):
        return 0.05


def _n_perm(inputs: ReportInputs, maps: MetricMaps | None = None) -> Any:
    n = inputs.analysis.get("n_perm")
    if n is None and maps is not None:
        n = (maps.sidecar.get("Parameters") or {}).get("n_perm")
    return n


def _kind(inputs: ReportInputs, maps: MetricMaps) -> str | None:
    """The corrected maps the report shows: TFCE (the group stage's correction) over the
    family of maps when the analysis corrected one, else within each map; another
    statistic only when a folder has no TFCE map (``randomise --no-tfce``)."""
    family = _family_corrected(inputs.analysis.get("correct_across"))
    for stat in CORRP_KINDS:
        if family and f"{stat}{FAMILY_KIND}" in maps.corrp:
            return f"{stat}{FAMILY_KIND}"
        if stat in maps.corrp:
            return stat
    return None


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
    """A cluster id as text (``1.0`` and ``1`` are one cluster)."""
    try:
        return str(int(float(value)))
    except (TypeError, ValueError):
        return str(value)


def _cluster_region(inputs: ReportInputs, metric: Any, sign: Any, cluster_id: Any) -> str:
    """The region label of a cluster (``clusters.tsv``; empty without an atlas)."""
    c = inputs.clusters
    if c is None or c.empty or D.REGION not in c.columns:
        return ""
    want = (str(metric), _sign(sign), _norm_key(cluster_id))
    for metric_, sign_, cid, region in zip(c[D.METRIC], c[D.SIGN], c[D.CLUSTER_ID],
                                           c[D.REGION], strict=True):
        if (str(metric_), sign_, _norm_key(cid)) == want:
            return "" if pd.isna(region) else str(region)
    return ""


