"""Figures of the report, each returned as a matplotlib Figure.

Figures are built as bare :class:`matplotlib.figure.Figure` objects (Agg canvas, not managed
by pyplot), so building a report neither needs a display nor changes the caller's backend.

The corrected statistical maps are shown as papers show them: the t map restricted to the
voxels that survive family-wise error correction (``corrp > 1 - alpha``, randomise's 1-p
convention), positive effects in warm and negative effects in cool colours, as a glass brain
(maximum-intensity projections) above a montage of axial slices through the clusters' peaks,
drawn with nilearn's ``plot_glass_brain`` and ``plot_stat_map``.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib as mpl
import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import ndimage

from ..io import derivatives as D

#: paper-like defaults for every figure of the report
STYLE: dict[str, object] = {
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.facecolor": "white",
}
def signed_cmap() -> mpl.colors.Colormap:
    """nilearn's ``cold_hot`` without its white ends, so the strongest voxels stay visible."""
    from nilearn.plotting.cm import cold_hot

    return mpl.colors.ListedColormap(cold_hot(np.linspace(0.12, 0.88, 256)), name="cold_hot_trim")


#: axial extent (MNI mm) where padding slices still show brain
_BRAIN_Z_MM = (-50.0, 78.0)
#: registration similarity measures of microvba's QC, preferred over other numeric columns
QC_MEASURES = D.QC_MEASURES
POSITIVE = "#c0392b"
NEGATIVE = "#2c6fbb"
NEUTRAL = "#555555"


def significant_t(tstat: nib.spatialimages.SpatialImage,
                  corrp: nib.spatialimages.SpatialImage | None,
                  alpha: float = 0.05, sign: int = 1) -> nib.Nifti1Image:
    """Signed t map restricted to FWE-significant voxels.

    .. math:: s(v) = \\operatorname{sign} \\cdot t(v)\\,[\\,1 - p_{FWE}(v) > 1 - \\alpha\\,]

    Parameters
    ----------
    tstat
        t map of one contrast (randomise ``_tstat1`` for the positive, ``_tstat2`` for the
        negative direction, where ``tstat2 = -tstat1``).
    corrp
        ``1 - p`` corrected map of the same contrast; ``None`` gives an empty map.
    alpha
        Family-wise error rate.
    sign
        ``+1`` for the positive contrast, ``-1`` to show the negative contrast in cool colours.
    """
    t = np.asarray(tstat.dataobj, dtype=np.float32)
    if corrp is None:
        keep = np.zeros(t.shape, dtype=bool)
    else:
        keep = np.asarray(corrp.dataobj, dtype=np.float32) > 1.0 - alpha
    out = np.where(keep & np.isfinite(t), np.abs(t) * np.sign(sign), 0.0).astype(np.float32)
    return nib.Nifti1Image(out, tstat.affine)


def combine_signs(images: list[nib.Nifti1Image]) -> nib.Nifti1Image:
    """Sum signed significance maps on one grid (positive and negative never overlap)."""
    data = sum(np.asarray(img.dataobj, dtype=np.float32) for img in images)
    return nib.Nifti1Image(np.asarray(data, dtype=np.float32), images[0].affine)


def peak_cuts(img: nib.Nifti1Image, n_cuts: int = 5, min_gap_mm: float = 6.0) -> list[float]:
    """Axial cut heights (mm) through the peaks of the clusters of a thresholded map.

    One cut per cluster peak (largest clusters first, at least ``min_gap_mm`` apart), padded
    with neighbouring heights around the largest cluster's peak up to ``n_cuts``.
    """
    data = np.abs(np.asarray(img.dataobj, dtype=np.float32))
    labels, n = ndimage.label(data > 0)
    if n == 0:
        return []
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(sizes, kind="stable")[::-1] + 1  # largest cluster first
    ijk = np.asarray(ndimage.maximum_position(data, labels, order), dtype=float)
    peaks = [float(z) for z in nib.affines.apply_affine(img.affine, ijk)[:, 2]]
    step = max(min_gap_mm, float(np.abs(img.affine[2, 2])) * 2)
    cuts: list[float] = []
    pads = [z for k in range(1, n_cuts) for s in (-1, 1)
            if _BRAIN_Z_MM[0] <= (z := peaks[0] + k * step * s) <= _BRAIN_Z_MM[1]]
    for z in peaks + pads:
        if len(cuts) >= n_cuts:
            break
        if all(abs(z - c) >= min_gap_mm for c in cuts):
            cuts.append(round(z, 1))
    return sorted(cuts)


def corrected_map_figure(significant: nib.Nifti1Image, *, title: str = "",
                         bg_img: nib.Nifti1Image | None = None,
                         vmax: float | None = None) -> Figure:
    """Glass brain (L, R, y, z projections) above an axial montage of a signed corrected map.

    Parameters
    ----------
    significant
        Signed t map, zero outside the significant voxels (see :func:`significant_t`).
    title
        Figure title (metric and correction).
    bg_img
        Background of the slice montage (default: nilearn's MNI152 template).
    vmax
        Colour scale limit (default: the largest ``|t|``).
    """
    from nilearn import plotting

    data = np.asarray(significant.dataobj, dtype=np.float32)
    vmax = float(vmax or np.max(np.abs(data)) or 1.0)
    cmap = signed_cmap()
    with mpl.rc_context(STYLE):
        fig = Figure(figsize=(8.0, 3.4))
        plotting.plot_glass_brain(
            significant, figure=fig, axes=(0.0, 0.5, 1.0, 0.5), display_mode="lyrz",
            plot_abs=False, cmap=cmap, vmin=-vmax, vmax=vmax, threshold=1e-6,
            colorbar=True, title=title or None, annotate=True)
        cuts = peak_cuts(significant) or 5
        kwargs = {} if bg_img is None else {"bg_img": bg_img}
        plotting.plot_stat_map(
            significant, figure=fig, axes=(0.0, 0.0, 1.0, 0.48), display_mode="z",
            cut_coords=cuts, cmap=cmap, vmin=-vmax, vmax=vmax, threshold=1e-6,
            colorbar=False, annotate=True, black_bg=False, draw_cross=False, **kwargs)
    return fig


def qc_similarity_figure(qc: pd.DataFrame, outlier_column: str = D.OUTLIER) -> Figure:
    """Strip plot of each registration similarity measure across subjects, outliers in red."""
    subject = D.PARTICIPANT_ID
    columns = [c for c in QC_MEASURES if c in qc.columns] or [
        c for c in qc.columns
        if c not in (subject, outlier_column) and pd.api.types.is_numeric_dtype(qc[c])
        and not pd.api.types.is_bool_dtype(qc[c])]
    outlier = (qc[outlier_column].astype(str).str.lower().isin(("true", "1", "yes"))
               if outlier_column in qc else pd.Series(False, index=qc.index))
    rng = np.random.default_rng(0)  # jitter only, fixed for reproducible figures
    with mpl.rc_context(STYLE):
        fig = Figure(figsize=(1.6 + 1.6 * max(len(columns), 1), 2.4))
        axes = fig.subplots(1, max(len(columns), 1), squeeze=False)
        for ax, col in zip(axes[0], columns, strict=False):
            y = qc[col].to_numpy(dtype=float)
            x = rng.uniform(-0.18, 0.18, size=y.size)
            ax.scatter(x[~outlier], y[~outlier], s=12, color=NEUTRAL, alpha=0.7, linewidths=0)
            ax.scatter(x[outlier], y[outlier], s=22, color=POSITIVE, marker="D", label="outlier")
            if subject in qc:
                for xi, yi, sub in zip(x[outlier], y[outlier], qc[subject][outlier],
                                       strict=True):
                    ax.annotate(str(sub), (xi, yi), xytext=(4, 0), textcoords="offset points",
                                fontsize=6, color=POSITIVE, va="center")
            ax.set_xlim(-0.6, 0.6)
            ax.set_xticks([])
            ax.set_title(col)
        if not columns:
            axes[0, 0].text(0.5, 0.5, "no similarity measure", ha="center", va="center")
            axes[0, 0].set_axis_off()
        fig.tight_layout()
    return fig


def decoding_bar_figure(table: pd.DataFrame, *, title: str = "", n_top: int = 10,
                        label_col: str = D.LABEL, stat_col: str | None = D.LOG_ODDS,
                        significant_col: str = D.SIGNIFICANT) -> Figure:
    """Horizontal bar chart of the top decoded features (used when no bar PNG was saved);
    the columns default to those of a decoding table (:data:`derivatives.DECODING_COLUMNS`)."""
    if stat_col is not None and (stat_col not in table
                                 or not pd.api.types.is_numeric_dtype(table[stat_col])):
        stat_col = None
    with mpl.rc_context(STYLE):
        fig = Figure(figsize=(4.2, 0.3 * n_top + 0.8))
        ax = fig.subplots()
        if stat_col is None:
            ax.text(0.5, 0.5, "no numeric statistic", ha="center", va="center")
            ax.set_axis_off()
            return fig
        top = table.sort_values(stat_col, ascending=False).head(n_top)[::-1]
        labels = [str(s)[:40] for s in top[label_col]]
        colours = POSITIVE
        if significant_col in top:
            colours = [POSITIVE if str(v).lower() in ("true", "1") else "#bbbbbb"
                       for v in top[significant_col]]
        ax.barh(labels, top[stat_col].astype(float), color=colours)
        ax.set_xlabel(stat_col)
        ax.set_title(title)
        fig.tight_layout()
    return fig


def decoding_heatmap_figure(values: pd.DataFrame, significant: pd.DataFrame | None = None,
                            *, statistic: str = D.LOG_ODDS, title: str = "") -> Figure:
    """Regions (rows) x top features (columns) heatmap of the decoding statistic, as the
    study-level Neurosynth figures show it; ``significant`` cells are starred."""
    with mpl.rc_context(STYLE):
        n_r, n_c = values.shape
        fig = Figure(figsize=(max(4.0, 0.32 * n_c + 2.6), max(1.6, 0.32 * n_r + 1.6)))
        ax = fig.subplots()
        data = values.to_numpy(float)
        lim = np.nanmax(np.abs(data)) if np.isfinite(data).any() else 1.0
        im = ax.imshow(data, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
        ax.set_xticks(range(n_c), [str(c)[:28] for c in values.columns], rotation=60,
                      ha="right")
        ax.set_yticks(range(n_r), [str(r)[:40] for r in values.index])
        if significant is not None:
            for i, j in np.argwhere(significant.to_numpy(bool)):
                ax.text(j, i, "*", ha="center", va="center", fontsize=9)
        fig.colorbar(im, ax=ax, label=statistic, shrink=0.8)
        ax.set_title(title)
        fig.tight_layout()
    return fig


def figure_png(fig: Figure, dpi: int = 90) -> bytes:
    """PNG bytes of a figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def thumbnail_png(path: str | Path, max_width: int = 900) -> bytes:
    """PNG bytes of an image file, downscaled to at most ``max_width`` pixels wide.

    A PNG that is narrow enough is returned as it is, without decoding. A downscaled image is
    stored with a 256-colour palette (fast octree): QC mosaics and plots are grey levels plus
    a few line colours, so this keeps them legible at a third of the size, which matters
    when 64 subjects' mosaics are embedded in one file.
    """
    from PIL import Image

    with Image.open(path) as im:
        if im.format == "PNG" and im.width <= max_width:
            return Path(path).read_bytes()
        rgb = im.convert("RGB")
        if rgb.width > max_width:
            rgb = rgb.resize((max_width, max(1, round(rgb.height * max_width / rgb.width))),
                             Image.LANCZOS)
        buf = io.BytesIO()
        rgb.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(buf, format="PNG")
    return buf.getvalue()
