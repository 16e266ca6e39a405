"""The regional follow-up stage of one metric and one direction of the correlation.

For the significant clusters of a corrected map (``corrp > 1 - alpha``):

1. cluster table (:func:`~microvba.regions.clusters.cluster_table`): size, peak, centre of
   mass, sub-peaks, with atlas labels of each cluster (percentage per label) and of its peak;
2. per-subject cluster means of the **unsmoothed** normalised metric, with the score and the
   covariates beside them;
3. partial correlation of each cluster mean with the score controlling the covariates
   (Pearson and Spearman; Fisher CI, p, bootstrap CI, Benjamini-Hochberg q across clusters);
4. the leave-one-subject-out r (:func:`~microvba.regions.correlation.loso_r`) beside the
   in-sample r, which is flagged as descriptive (the cluster was selected on the same data);
5. scatter plots of the residualised metric against the residualised score.

Files written by :meth:`RegionsResult.save` (``<tag>`` = ``<metric>_pos`` or ``<metric>_neg``):

=================================  ========================================================
``<tag>_clusters.tsv``             one row per cluster: size, peak, centre, sub-peaks, labels
``<tag>_cluster-labels.tsv``       percentage of each cluster in each atlas label (long)
``<tag>_cluster-means.tsv``        subject x cluster means, score and covariates beside
``<tag>_correlations.tsv``         r, CI, p, bootstrap CI, q (FDR), LOSO r and CI, per method
``<tag>_clusters.nii.gz``          cluster label image (cluster ``k`` = ``k``)
``<tag>_cluster-<k>_scatter.png``  residualised metric vs residualised score
``<tag>_regions.json``             parameters, software versions, input summary
=================================  ========================================================

Columns of ``<tag>_correlations.tsv`` (one row per cluster and method): ``cluster_id``,
``method``, ``n``, ``k`` (covariate columns after dummy coding), ``r``, ``ci_low``/``ci_high``
(Fisher z, SE ``1/sqrt(n - k - 3)``), ``p``, ``q_fdr`` (Benjamini-Hochberg across this map's
clusters, per method), ``boot_ci_low``/``boot_ci_high`` (percentile bootstrap), ``loso_r``,
``loso_ci_low``/``loso_ci_high``, ``loso_p`` (with ``loso_n_perm`` > 0, the default: the
permutation p and permutation-calibrated Fisher CI of
:func:`~microvba.regions.correlation.loso_inference`, the whole leave-one-out redone on
Freedman-Lane permuted scores; with 0 the t-test p and Fisher CI, anti-conservative where the
fold clusters wander), ``loso_n``, ``loso_rank`` (mass rank of the
cluster's component in the full-sample partial-r map; 0 = none, LOSO not estimable),
``loso_mean_overlap`` (mean fraction of the cluster inside the fold clusters: how stable the
fold clusters are) and ``r_interpretation`` (the in-sample r is descriptive).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from .._logging import get_logger
from .._provenance import make_sidecar, save_figure, save_nifti, write_json, write_text
from .._validation import InputError, ProblemCollector, check_choice
from ..io import derivatives
from .atlases import (
    ATLASES,
    Atlas,
    as_atlases,
    label_clusters,
    label_coordinates,
    summarise_labels,
)
from .clusters import cluster_table
from .correlation import (
    IN_SAMPLE_NOTE,
    METHODS,
    cluster_means,
    fdr_bh,
    loso_cluster_means,
    loso_inference,
    partial_corr,
    residualise,
    subject_matrix,
)

log = get_logger(__name__)

SIGN_TAG = derivatives.SIGN_TAG
#: permutations of the whole leave-one-out behind ``loso_p`` and ``loso_ci_*`` (0: analytic)
LOSO_N_PERM = 199


@dataclass
class RegionsResult:
    """Clusters, labels, means, correlations and figures of one metric and sign."""

    metric: str
    sign: str
    clusters: pd.DataFrame
    labels: pd.DataFrame
    means: pd.DataFrame
    correlations: pd.DataFrame
    label_img: nib.Nifti1Image
    figures: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        return derivatives.region_tag(self.metric, self.sign)

    def save(self, out_dir: str | Path | None = None) -> dict[str, Path]:
        """Write every table, the label image, the figures and a JSON sidecar (atomically).

        ``out_dir`` defaults to the folder given to :func:`follow_up`.
        """
        out_dir = out_dir if out_dir is not None else self.parameters.get("out_dir")
        if out_dir is None:
            raise InputError("no output folder", file="RegionsResult.save",
                             fix="Pass save(out_dir) or follow_up(..., out_dir=...).")
        out = Path(out_dir)
        tag = self.tag
        def name(what: str) -> Path:
            return out / derivatives.region_file(tag, what)

        paths = {
            "clusters": write_text(name("clusters"), self.clusters.to_csv(sep="\t", index=False)),
            "labels": write_text(name("labels"), self.labels.to_csv(sep="\t", index=False)),
            "means": write_text(name("means"), self.means.to_csv(sep="\t", index=True)),
            "correlations": write_text(name("correlations"),
                                       self.correlations.to_csv(sep="\t", index=False)),
            "label_img": save_nifti(self.label_img, name("label_img")),
        }
        for key, fig in self.figures.items():
            paths[f"figure_{key}"] = save_figure(fig, out / derivatives.scatter_name(tag, key),
                                                 dpi=120)
        sidecar = make_sidecar(self.parameters, n_clusters=len(self.clusters),
                               Outputs={k: p.name for k, p in paths.items()})
        paths["sidecar"] = write_json(name("sidecar"), sidecar)
        return paths


# --------------------------------------------------------------------------- checks


def _check_inputs(participants: pd.DataFrame, score: str, covariates: Sequence[str],
                  n_images: int, sign: str) -> None:
    check_choice("sign", sign, list(SIGN_TAG))
    problems = ProblemCollector()
    for col in [score, *covariates]:
        if col not in participants.columns:
            problems.add("participants", f"column {col!r} is missing",
                         f"Use one of: {', '.join(map(str, participants.columns))}.")
    if score in participants.columns and not pd.api.types.is_numeric_dtype(participants[score]):
        problems.add("participants", f"the score column {score!r} is not numeric",
                     "Pass a numeric score column.")
    if len(participants) != n_images:
        problems.add("participants", f"{len(participants)} participants but {n_images} metric "
                     "images", "Pass one image per participant, in the table's order.")
    problems.raise_if_any()


def _n_images(imgs) -> int:
    if isinstance(imgs, nib.spatialimages.SpatialImage):
        return imgs.shape[3] if imgs.ndim == 4 else 1
    if isinstance(imgs, np.ndarray):
        return imgs.shape[3] if imgs.ndim == 4 else 1
    return len(imgs)


def _load_atlases(atlases: Iterable[str | Atlas], data_dir, missing_atlas: str) -> list[Atlas]:
    loaded = []
    for a in ([atlases] if isinstance(atlases, str | Atlas) else atlases):
        try:
            loaded += as_atlases([a], data_dir)
        except InputError as exc:
            if missing_atlas == "error":
                raise
            log.warning("atlas %s skipped: %s", a, exc)
    return loaded


# --------------------------------------------------------------------------- pieces


def _label_table(table: pd.DataFrame, label_img, atlases: list[Atlas]
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    if not len(table) or not atlases:
        return table, pd.DataFrame(columns=list(derivatives.CLUSTER_LABEL_COLUMNS))
    long = label_clusters(label_img, atlases)
    summary = summarise_labels(long)
    peaks = label_coordinates(table[list(derivatives.PEAK_XYZ)].to_numpy(float), atlases)
    peaks = peaks.drop(columns=["x", "y", "z"]).rename(
        columns={a.name: derivatives.atlas_columns(a.name)[2] for a in atlases})
    table = table.merge(summary, on=derivatives.CLUSTER_ID, how="left")
    table = pd.concat([table.reset_index(drop=True), peaks.reset_index(drop=True)], axis=1)
    table.insert(1, derivatives.REGION, table[derivatives.atlas_columns(atlases[0].name)[1]])
    return table, long


def _scatter(rx: np.ndarray, ry: np.ndarray, title: str, row: dict, metric: str, score: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.6, 3.2))
    ax = fig.add_subplot()
    ax.scatter(ry, rx, s=14, color="#1f77b4", alpha=0.8, edgecolor="none")
    if np.ptp(ry) > 0:
        slope, icpt = np.polyfit(ry, rx, 1)
        xs = np.linspace(ry.min(), ry.max(), 2)
        ax.plot(xs, slope * xs + icpt, color="#d62728", lw=1.2)
    ax.set_xlabel(f"{score} (residualised)")
    ax.set_ylabel(f"{metric.upper()} cluster mean (residualised)")
    r, lo, hi, p = (row[k] for k in (derivatives.R, derivatives.CI_LOW, derivatives.CI_HIGH,
                                     derivatives.P))
    text = (f"r = {r:.2f} [{lo:.2f}, {hi:.2f}] (in-sample)\n"
            f"p = {p:.2g}, LOSO r = {row.get(derivatives.LOSO_R, np.nan):.2f}")
    ax.set_title(title, fontsize=8)
    ax.text(0.02, 0.98, text, transform=ax.transAxes, va="top", fontsize=7)
    fig.tight_layout()
    return fig


def _smoothed_matrix(metric_imgs, mask: np.ndarray, affine: np.ndarray, fwhm_mm: float,
                     rows: np.ndarray) -> np.ndarray:
    """Rows of subjects' volumes smoothed inside ``mask`` (normalised by the smoothed mask)."""
    from scipy import ndimage

    from .means import _volumes

    getters, _ = _volumes(metric_imgs)
    vox = np.sqrt(np.sum(np.asarray(affine)[:3, :3] ** 2, axis=0))
    sigma = fwhm_mm / np.sqrt(8 * np.log(2)) / vox
    weight = ndimage.gaussian_filter(mask.astype(float), sigma)
    out = np.empty((len(rows), int(mask.sum())))
    for j, i in enumerate(rows):
        vol = np.where(mask, np.nan_to_num(np.asarray(getters[i](), float)), 0.0)
        out[j] = ndimage.gaussian_filter(vol, sigma)[mask] / weight[mask]
    return out


def _loso(metric_imgs, stat_img, label_img, table, rows: np.ndarray, score, cov, sign: int,
          fwhm_mm: float, n_perm: int = 0, seed: int = 0):
    """Held-out cluster means (n_complete, n_clusters), or None when not computable."""
    stat = np.asarray(stat_img.dataobj, dtype=float)
    labels = np.asarray(label_img.dataobj)
    mask = np.isfinite(stat) & (stat != 0) | (labels > 0)
    Y = subject_matrix(metric_imgs, mask)[rows]
    finite = np.all(np.isfinite(Y), axis=0)
    if not finite.all():
        mask[mask] = finite
        Y = Y[:, finite]
    cols = labels[mask]
    clusters = [cols == cid for cid in table[derivatives.CLUSTER_ID]]
    if any(c.sum() == 0 for c in clusters):
        log.warning("leave-one-out skipped: a cluster has no voxel with data in every subject")
        return None
    Y_sel = (_smoothed_matrix(metric_imgs, mask, stat_img.affine, fwhm_mm, rows)
             if fwhm_mm > 0 else None)
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), stat_img.affine)
    return loso_cluster_means(Y, score, cov, mask_img=mask_img, clusters=clusters, sign=sign,
                              Y_select=Y_sel, n_perm=n_perm, seed=seed)


def _correlations(means: pd.DataFrame, table: pd.DataFrame, participants: pd.DataFrame,
                  score: str, covariates: Sequence[str], held_out, methods: Sequence[str],
                  n_boot: int, seed: int) -> pd.DataFrame:
    """One row per cluster and method, columns :data:`derivatives.CORRELATION_COLUMNS`:
    cluster, method, the in-sample partial correlation (n, k, r, CI, p), the FDR q across
    this map's clusters (per method), the bootstrap CI, the LOSO r (its CI, p, n, the mass
    rank of the fold clusters and their mean overlap) and the note on the in-sample r."""
    cov = participants[list(covariates)] if covariates else None
    C = derivatives.CORRELATION_COLUMNS
    rows = []
    for method in methods:
        block = []
        for j, cid in enumerate(table[derivatives.CLUSTER_ID]):
            res = partial_corr(means[derivatives.cluster_mean_column(cid)].to_numpy(float),
                               participants[score].to_numpy(float), cov, method, 0.95,
                               n_boot, seed)
            if held_out is not None:
                perm = held_out.get("perm_values")
                lo = loso_inference(held_out["values"][:, j], held_out["score"],
                                    held_out["cov"], method, 0.95,
                                    None if perm is None else perm[:, :, j],
                                    held_out.get("perm_scores"), 0, seed)
                overlap = held_out["overlap"][:, j]
                loso = (*(lo[k] for k in derivatives.LOSO_OF_PARTIAL.values()),
                        held_out["ranks"][j],
                        float(np.nanmean(overlap)) if np.isfinite(overlap).any() else np.nan)
            else:
                loso = (np.nan, np.nan, np.nan, np.nan, 0, 0, np.nan)
            # C[2:8] = n, k, r, ci_low, ci_high, p; C[9:11] the bootstrap CI (q at C[8])
            block.append(dict(zip(C, (int(cid), method, *(res[k] for k in C[2:8]), np.nan,
                                      *(res[k] for k in C[9:11]), *loso, IN_SAMPLE_NOTE),
                                  strict=True)))
        q = fdr_bh([b[C[7]] for b in block])
        for b, qv in zip(block, q, strict=True):
            b[C[8]] = float(qv)
        rows += block
    return pd.DataFrame(rows, columns=list(C))


# --------------------------------------------------------------------------- stage


def follow_up(stat_img: nib.spatialimages.SpatialImage,
              corrp_img: nib.spatialimages.SpatialImage | None,
              metric_imgs_unsmoothed, participants: pd.DataFrame, score: str,
              covariates: Sequence[str], metric: str, sign: str, out_dir: str | Path | None,
              atlases: Iterable[str | Atlas] = ATLASES, data_dir: str | Path | None = None,
              alpha: float = 0.05, methods: Sequence[str] = METHODS, n_boot: int = 2000,
              seed: int = 0, connectivity: int = 26, min_distance_mm: float = 8.0,
              loso: bool = True, loso_fwhm_mm: float = 6.0, figures: bool = True,
              missing_atlas: str = "warn", threshold: float | None = None,
              loso_n_perm: int = LOSO_N_PERM) -> RegionsResult:
    """Regional follow-up of one metric and one sign (see the module docstring).

    Parameters
    ----------
    stat_img, corrp_img
        Statistic map and its corrected ``1 - p`` map (clusters: ``corrp > 1 - alpha``). With
        ``corrp_img=None``, clusters are ``stat > threshold``.
    metric_imgs_unsmoothed
        4-D image (subjects last), list of 3-D images or 4-D array, on the stat map's grid.
    participants
        One row per image, same order; must hold ``score`` and ``covariates``.
    score, covariates
        Column names.
    metric, sign
        Metric name (file names) and ``"+"`` / ``"-"`` (the expected direction).
    out_dir
        Where :meth:`RegionsResult.save` writes if called with no folder (not written here).
    atlases, data_dir
        Atlas names or loaded :class:`~microvba.regions.atlases.Atlas` objects (load them once
        when following up several maps); ``missing_atlas="warn"`` skips one that is not
        available with a warning, ``"error"`` raises.
    methods
        Correlation methods, ``pearson`` first by default.
    loso, loso_fwhm_mm
        Compute the leave-one-subject-out r; its fold clusters are defined on the metric
        smoothed with this FWHM (pass the statistics stage's FWHM; 0 = unsmoothed), the
        held-out means are taken from the unsmoothed metric, like the in-sample means.
    loso_n_perm
        Permutations of the whole leave-one-out for ``loso_p`` and ``loso_ci_*``
        (:func:`~microvba.regions.correlation.loso_inference`; seeded by ``seed``); 0 gives
        the t-test p and Fisher CI, which do not hold their level on null data
        (``benchmarks/RESULTS.md``, *LOSO calibration*). About 0.2-0.4 s per permutation at
        64 subjects x 140k voxels.
    """
    check_choice("missing_atlas", missing_atlas, ["warn", "error"])
    for m in methods:
        check_choice("methods", m, METHODS)
    covariates = list(covariates)
    _check_inputs(participants, score, covariates, _n_images(metric_imgs_unsmoothed), sign)
    table, label_img = cluster_table(stat_img, corrp_img=corrp_img, alpha=alpha,
                                     threshold=threshold, connectivity=connectivity,
                                     min_distance_mm=min_distance_mm)
    atlas_objs = _load_atlases(atlases, data_dir, missing_atlas)
    table, long = _label_table(table, label_img, atlas_objs)
    table.insert(1, derivatives.METRIC, metric)
    table.insert(2, derivatives.SIGN, sign)
    means = cluster_means(metric_imgs_unsmoothed, label_img, subjects=list(participants.index))
    means.index.name = participants.index.name or "participant"
    for col in [score, *covariates]:
        means[col] = participants[col].to_numpy()
    held = None
    cov_df = participants[covariates] if covariates else None
    if loso and len(table):
        complete = participants[[score, *covariates]].notna().all(axis=1).to_numpy()
        rows = np.flatnonzero(complete)
        cov_rows = cov_df.iloc[rows] if cov_df is not None else None
        s = participants[score].to_numpy(float)[rows]
        out = _loso(metric_imgs_unsmoothed, stat_img, label_img, table, rows, s, cov_rows,
                    1 if sign == "+" else -1, loso_fwhm_mm, loso_n_perm, seed)
        if out is not None:
            held = {"values": out["held_out"], "score": s, "cov": cov_rows,
                    "overlap": out["fold_overlap"], "ranks": out["ranks"],
                    "perm_values": out.get("perm_held_out"),
                    "perm_scores": out.get("perm_scores")}
    corrs = _correlations(means, table, participants, score, covariates, held, methods,
                          n_boot, seed)
    figs = {}
    if figures and len(table):
        cid_col, region_col = derivatives.CLUSTER_ID, derivatives.REGION
        first = corrs[corrs["method"] == methods[0]].set_index(cid_col)
        for cid in table[cid_col]:
            rx, ry = residualise(means[derivatives.cluster_mean_column(cid)],
                                 participants[score], cov_df, methods[0])
            region = table.loc[table[cid_col] == cid, region_col].iloc[0] \
                if region_col in table else ""
            title = f"{metric.upper()} {sign} cluster {cid} {region}".strip()
            figs[derivatives.cluster_figure_key(cid)] = _scatter(rx, ry, title, first.loc[cid].to_dict(), metric,
                                              score)
    params = {"metric": metric, "sign": sign, "score": score, "covariates": covariates,
              "alpha": alpha, "threshold": threshold, "connectivity": connectivity,
              "min_distance_mm": min_distance_mm, "methods": list(methods), "n_boot": n_boot,
              "seed": seed, "loso": loso, "loso_fwhm_mm": loso_fwhm_mm,
              "loso_n_perm": loso_n_perm, "atlases": [a.name for a in atlas_objs],
              "n_subjects": len(participants), "out_dir": str(out_dir) if out_dir else None,
              derivatives.R_INTERPRETATION: IN_SAMPLE_NOTE,
              "loso_method": "Esterman et al. 2010: each subject's cluster is the component of "
                             "the same mass rank in the voxel-wise partial-r map (one-sided "
                             "p < 0.01, 26-connected) of the other subjects",
              "loso_inference": (f"permutation p and permutation-calibrated Fisher CI, "
                                 f"{loso_n_perm} Freedman-Lane permutations of the whole "
                                 "leave-one-out" if loso and loso_n_perm else
                                 "t-test p and Fisher CI (anti-conservative where the fold "
                                 "clusters wander)")}
    return RegionsResult(metric, sign, table, long, means, corrs, label_img, figs, params)
