"""Registration quality control: similarity to the template, outlier flags, figures.

Per subject (:func:`registration_similarity`), in template space:

* ``correlation``: Pearson correlation of the warped T1-like contrast with the template T1
  inside the template brain mask;
* ``dice_gm``: Dice of the warped GM estimate (:math:`p \\ge 0.5`) with the template GM
  (:math:`p \\ge 0.5`), :math:`D = 2|A \\cap B| / (|A| + |B|)`;
* ``dice_brain``: Dice of the warped brain mask with the template brain mask.

:func:`flag_outliers` flags a subject whose similarity is far below the group's (robust z) or
below an absolute floor, so a failed registration (wrong affine, flipped axes) is never
silently included.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import nibabel as nib
import numpy as np
import pandas as pd

from .._validation import InputError
from ..io import derivatives as D
from .template import Template

SIMILARITY_COLUMNS = D.QC_MEASURES
#: a registration below any of these is flagged whatever the group does (also with 1 or 2
#: subjects, and already by the participant stage). Measured with the simulator
#: (``benchmarks/RESULTS.md``, "Registration QC floors"): correct registrations score a
#: correlation of 0.86-0.93 at 2 mm, 0.57-0.67 at 4 mm and 0.48 at 6 mm (noise-free maps
#: ~0.93); a header rotated by 90 degrees scores 0.31-0.37 at 4-6 mm (issue 14: 0.35 vs
#: 0.90 at 2 mm), so the correlation floor, 0.42, sits between the two at every grid.
#: Subtler failures (an A-P flip at 2 mm: ~0.44 / 0.59 / 0.92) are caught by the robust z
#: within the group.
ABSOLUTE_FLOORS: dict[str, float] = {D.QC_CORRELATION: 0.42, D.QC_DICE_BRAIN: 0.75,
                                     D.QC_DICE_GM: 0.3}


def below_floors(qc: Mapping[str, float], floors: Mapping[str, float] | None = None
                 ) -> list[str]:
    """The similarity measures of one subject that are below their absolute floor.

    Returns e.g. ``["correlation 0.347 < 0.42"]`` (a missing or non-finite value counts as
    below); empty when the registration passes.
    """
    floors = ABSOLUTE_FLOORS if floors is None else floors
    out = []
    for key, floor in floors.items():
        if key not in qc:
            continue
        value = float(qc[key])
        if not np.isfinite(value) or value < floor:
            out.append(f"{key} {value:.3f} < {floor:g}")
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient :math:`2|A \\cap B| / (|A| + |B|)` of two boolean arrays."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    denom = a.sum() + b.sum()
    return float(2.0 * np.logical_and(a, b).sum() / denom) if denom else 0.0


def registration_similarity(contrast: np.ndarray, gm: np.ndarray, mask: np.ndarray,
                            template: Template) -> dict[str, float]:
    """Similarity of warped subject images (template grid) with the template.

    Parameters
    ----------
    contrast
        Warped T1-like contrast (or warped T1w brain).
    gm
        Warped GM probability estimate.
    mask
        Warped brain mask.
    """
    t_mask = np.asarray(template.brain_mask.dataobj) > 0
    t1 = np.asarray(template.t1.dataobj, dtype=np.float64)[t_mask]
    c = np.nan_to_num(np.asarray(contrast, dtype=np.float64))[t_mask]
    corr = float(np.corrcoef(c, t1)[0, 1]) if c.std() > 0 else 0.0
    t_gm = np.asarray(template.gm.dataobj) >= 0.5
    return {
        D.QC_CORRELATION: corr,
        D.QC_DICE_GM: dice(np.asarray(gm) >= 0.5, t_gm),
        D.QC_DICE_BRAIN: dice(np.asarray(mask) > 0.5, t_mask),
    }


def robust_z(values: pd.Series, min_scale: float = 0.01) -> pd.Series:
    """Robust z-score :math:`(x - \\mathrm{median}) / (1.4826\\,\\max(\\mathrm{MAD}, s_0))`.

    The MAD is floored at ``min_scale`` so that a very homogeneous group does not turn tiny
    differences into large z.
    """
    x = values.astype(float)
    med = x.median()
    mad = (x - med).abs().median()
    return (x - med) / (1.4826 * max(float(mad), min_scale))


def flag_outliers(qc_table: pd.DataFrame, columns: Sequence[str] | None = None,
                  z_threshold: float = 3.0,
                  floors: Mapping[str, float] | None = None) -> pd.Series:
    """Flag subjects whose registration is an outlier.

    A subject is flagged when, for any similarity column, its robust z (:func:`robust_z`) is
    below ``-z_threshold`` (with 3 subjects or more), or its value is below the absolute
    floor (:data:`ABSOLUTE_FLOORS`), or the value is missing.

    Parameters
    ----------
    qc_table
        One row per subject, columns among ``correlation``, ``dice_gm``, ``dice_brain``.
    columns
        Columns to use (default: those of :data:`SIMILARITY_COLUMNS` present).
    z_threshold
        Robust-z cut-off (low side only: a bad registration lowers similarity).
    floors
        Absolute minima per column (default :data:`ABSOLUTE_FLOORS`).

    Returns
    -------
    pandas.Series of bool, indexed like ``qc_table``, named ``registration_outlier``.
    """
    columns = list(columns) if columns is not None else [
        c for c in SIMILARITY_COLUMNS if c in qc_table.columns]
    missing = [c for c in columns if c not in qc_table.columns]
    if not columns or missing:
        raise InputError(
            f"QC table lacks similarity columns {missing or list(SIMILARITY_COLUMNS)}",
            file="qc_table", fix=f"Pass a table with columns among {list(SIMILARITY_COLUMNS)}.")
    floors = ABSOLUTE_FLOORS if floors is None else floors
    flags = pd.Series(False, index=qc_table.index, name="registration_outlier")
    for col in columns:
        x = pd.to_numeric(qc_table[col], errors="coerce")
        flags |= x.isna()
        if x.notna().sum() >= 3:
            flags |= (robust_z(x.dropna()) < -z_threshold).reindex(x.index, fill_value=False)
        if col in floors:
            flags |= x < floors[col]
    return flags


# -- figures ------------------------------------------------------------------------------
def _slices(brain: np.ndarray, n: int) -> np.ndarray:
    """``n`` axial slices spread over the brain's extent (15 % to 85 %)."""
    zs = np.flatnonzero(brain.any(axis=(0, 1)))
    lo, hi = (zs[0], zs[-1]) if zs.size else (0, brain.shape[2] - 1)
    return np.linspace(lo + 0.15 * (hi - lo), lo + 0.85 * (hi - lo), n).astype(int)


def qc_mosaic(maps: Mapping[str, nib.spatialimages.SpatialImage], template: Template,
              title: str = "", n_slices: int = 7):
    """Axial mosaic of warped maps (rows) with the template GM outline (p = 0.5) in red.

    Returns a :class:`matplotlib.figure.Figure` (no pyplot state involved).
    """
    from matplotlib.figure import Figure

    gm = np.asarray(template.gm.dataobj)
    zs = _slices(np.asarray(template.brain_mask.dataobj) > 0, n_slices)
    fig = Figure(figsize=(1.6 * n_slices, 1.9 * len(maps) + 0.4), dpi=100)
    axes = fig.subplots(len(maps), n_slices, squeeze=False)
    for r, (name, img) in enumerate(maps.items()):
        data = np.nan_to_num(np.asarray(img.dataobj, dtype=np.float32))
        nz = data[data != 0]
        vmin, vmax = (np.percentile(nz, [2, 98]) if nz.size else (0, 1))
        for c, z in enumerate(zs):
            ax = axes[r, c]
            ax.imshow(data[:, :, z].T, origin="lower", cmap="gray", vmin=vmin, vmax=vmax)
            ax.contour(gm[:, :, z].T, levels=[0.5], colors="r", linewidths=0.5)
            ax.set_axis_off()
            if c == 0:
                ax.set_title(name.upper(), fontsize=8, loc="left")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(wspace=0.02, hspace=0.15, left=0.01, right=0.99, bottom=0.01)
    return fig


def similarity_figure(qc_table: pd.DataFrame, flags: pd.Series | None = None):
    """Strip plot of each similarity measure across subjects, outliers in red."""
    from matplotlib.figure import Figure

    cols = [c for c in SIMILARITY_COLUMNS if c in qc_table.columns]
    flags = flag_outliers(qc_table) if flags is None else flags
    fig = Figure(figsize=(2.2 * len(cols) + 0.5, 3.0), dpi=100)
    axes = fig.subplots(1, len(cols), squeeze=False)[0]
    x = np.arange(len(qc_table))
    for ax, col in zip(axes, cols, strict=True):
        vals = qc_table[col].to_numpy(dtype=float)
        colors = np.where(flags.to_numpy(), "tab:red", "tab:blue")
        ax.scatter(x, vals, c=colors, s=14)
        ax.set_title(col, fontsize=9)
        ax.set_xticks(x)
        ax.set_xticklabels([str(i) for i in qc_table.index], rotation=90, fontsize=6)
        ax.set_ylim(min(0.0, np.nanmin(vals)) if vals.size else 0, 1.0)
    fig.tight_layout()
    return fig
