"""The one writer of decoding outputs: tables, figures and sidecar summaries.

Used by ``microvba decode`` (:mod:`microvba.cli.decode`), the group stage
(:func:`microvba.decode.stage.decode_clusters`, :func:`microvba.decode.stage.decode_regions`),
so that a table and its figures have the same names and contents whichever route wrote them:

``<stem>_decoding.tsv``
    ROI association table (:meth:`~microvba.decode.decoder.Decoder.decode_roi`), with
    ``<stem>_bar.png`` and ``<stem>_polar.png``;
``<stem>_mapdecoding.tsv``
    map correlation table (:meth:`~microvba.decode.decoder.Decoder.decode_map`), with
    ``<stem>_map_bar.png`` and ``<stem>_map_polar.png`` when figures are asked for;
``<stem>_dropped-features.tsv``
    the features without a map (feature, n_selected, reason, label).

Every file is written atomically (a temporary name, renamed when complete).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .._provenance import atomic_path, save_figure
from ..io import derivatives as D

#: the kinds of decoding table (ROI association, unthresholded-map correlation)
KINDS = (D.DECODING, D.MAP_DECODING)
#: resolution of the saved figures
FIGURE_DPI = 150
#: columns of the dropped-features sidecar, in order
DROPPED_COLUMNS = list(D.DROPPED_FEATURE_COLUMNS)


def write_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Atomically write a decoding table as TSV (6 significant digits)."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    return Path(path)


def write_figures(table: pd.DataFrame, stem: str | Path, kind: str = D.DECODING,
                  top: int = 15, dpi: int = FIGURE_DPI) -> dict[str, Path]:
    """The bar (top ``top`` features) and polar plots of a table
    (:func:`microvba.io.derivatives.decoding_figure_name`)."""
    from .figures import bar_chart, polar_plot

    stem = Path(stem)
    bar, polar = (stem.with_name(D.decoding_figure_name(stem.name, f, kind))
                  for f in D.FIGURE_KINDS)
    return {"bar": save_figure(bar_chart(table, top=top), bar, dpi=dpi),
            "polar": save_figure(polar_plot(table), polar, dpi=dpi)}


def write_decoding(table: pd.DataFrame, stem: str | Path, kind: str = D.DECODING,
                   figures: bool = True, top: int = 15) -> dict[str, Path]:
    """Write one decoding table (``kind`` ``"decoding"`` or ``"mapdecoding"``) and, with
    ``figures``, its bar and polar plots; return ``{"tsv", "bar", "polar"}`` paths."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    stem = Path(stem)
    out = {"tsv": write_table(table, stem.with_name(D.decoding_table_name(stem.name, kind)))}
    if figures:
        out.update(write_figures(table, stem, kind=kind, top=top))
    return out


def write_dropped(dropped: pd.DataFrame, stem: str | Path) -> Path | None:
    """``<stem>_dropped-features.tsv`` listing the features without a map (``None`` when
    every feature has one: no file)."""
    if not len(dropped):
        return None
    stem = Path(stem)
    return write_table(dropped[DROPPED_COLUMNS],
                       stem.with_name(D.dropped_features_name(stem.name)))


def dropped_summary(dropped: pd.DataFrame, path: Path | None) -> dict[str, Any]:
    """Sidecar entry of the dropped features: count, table name, count per reason."""
    return {"n": int(len(dropped)), "table": path.name if path is not None else None,
            "reasons": {str(k): int(v) for k, v in dropped["reason"].value_counts().items()}}


def roi_summary(table: pd.DataFrame) -> dict[str, Any]:
    """Sidecar entry of an ROI table: voxels decoded and voxels outside the brain mask."""
    return {"voxels_decoded": table.attrs["roi_voxels"],
            "voxels_outside_brain_mask": table.attrs["roi_voxels_outside_mask"],
            "fraction_outside_brain_mask": round(table.attrs["roi_fraction_outside_mask"], 6)}


def null_summary(table: pd.DataFrame, kind: str) -> dict[str, Any]:
    """Sidecar entry of the spatial null behind a table's ``p_null``."""
    return {"n_null": table.attrs.get("n_null"),
            "method": "ROI translations" if kind == D.DECODING else
                      "in-support Gaussian-field surrogates, rank-matched",
            D.P_NULL: "empirical (k+1)/(n+1); GPD tail below 10 exceedances"}
