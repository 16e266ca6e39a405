"""Partial correlations of cluster means with a score, their intervals, FDR, and a
leave-one-subject-out (non-circular) estimate.

Partial correlation
-------------------
With covariates :math:`C` (plus an intercept), the partial correlation of :math:`x` and
:math:`y` is the Pearson correlation of their OLS residuals on :math:`[1, C]`,

.. math:: r_{xy \\cdot C} = \\frac{e_x^\\top e_y}{\\lVert e_x \\rVert \\lVert e_y \\rVert},
   \\qquad e_v = (I - H) v,\\; H = Z (Z^\\top Z)^{-1} Z^\\top,\\; Z = [1, C].

The Spearman version ranks :math:`x`, :math:`y` and every covariate first (as R's ``cor`` and
pingouin do). With :math:`n` subjects and :math:`k` covariates:

- p: two-sided, :math:`t = r \\sqrt{(n - k - 2)/(1 - r^2)}` on :math:`n - k - 2` df;
- CI: Fisher :math:`z = \\operatorname{artanh} r`, standard error :math:`1/\\sqrt{n - k - 3}`,
  back-transformed with tanh;
- bootstrap CI: percentile interval of ``n_boot`` resamples of subjects (ranks recomputed in
  each resample for Spearman).

These equal ``pingouin.partial_corr`` (r and p). Categorical covariates (text, bool or pandas
categories) are dummy-coded with the first level dropped.

Circularity and the leave-one-subject-out estimate
--------------------------------------------------
A cluster found by testing the same voxel-wise correlation is selected *because* its noise
happened to align with the score, so its in-sample r is biased upwards (Kriegeskorte et al.,
2009; Vul et al., 2009): it is descriptive only. :func:`loso_r` gives a non-circular estimate
(Esterman et al., 2010): for each subject :math:`i`,

1. the voxel-wise partial correlation map is computed from the other :math:`n - 1` subjects
   (exactly, by down-dating the full-sample cross products);
2. the cluster is redefined on that map by a rule that never looks at subject :math:`i`:
   the map's one-sided ``p < p_threshold`` voxels are grouped into connected components and
   ranked by cluster mass (sum of t); the fold's cluster is the component of the same rank as the
   full-sample component that overlaps the in-sample cluster (rank 1, the heaviest, for a
   single cluster); any other rule can be given as ``define_cluster(train_index) -> mask``;
3. subject :math:`i`'s mean over that cluster is its held-out value.

The partial correlation of the :math:`n` held-out values with the score is the LOSO r, with the
same Fisher CI. Subject :math:`i`'s data never shape the voxels it is averaged over.

Why a rank and not a location: matching each fold's cluster to the in-sample cluster by
position (the component nearest to, or overlapping, the in-sample peak) looks harmless but is
circular: the in-sample peak sits where every subject's noise happened to align with the score,
the fold maps barely move when one subject is left out, so each held-out subject is measured
where its own noise was selected. On null cohorts (no effect) that rule gave a mean "LOSO" r of
0.27 (in-sample 0.47), while the rank rule gives 0.01 (``benchmarks/bench_circularity.py``,
figures in ``benchmarks/RESULTS.md``). When a weak effect is not reliably the strongest
cluster, the rank rule picks other clusters in some folds, and the LOSO r honestly shrinks
toward 0 (read it with ``mean_fold_overlap``). Clusters from a TFCE map of smoothed data, followed
up on the unsmoothed metric, give noisier fold clusters, so the LOSO r is conservative there.

References
----------
Esterman M, Tamber-Rosenau BJ, Chiu YC, Yantis S. Avoiding non-independence in fMRI data
analysis: leave one subject out. NeuroImage. 2010;50:572-576.
Kriegeskorte N, Simmons WK, Bellgowan PS, Baker CI. Circular analysis in systems
neuroscience: the dangers of double dipping. Nat Neurosci. 2009;12:535-540.
Vul E, Harris C, Winkielman P, Pashler H. Puzzlingly high correlations in fMRI studies of
emotion, personality, and social cognition. Perspect Psychol Sci. 2009;4:274-290.
Benjamini Y, Hochberg Y. Controlling the false discovery rate. J R Stat Soc B. 1995;57:289-300.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .._validation import InputError, check_choice, check_in_range
from ..io import derivatives
from ..stats.clusters import fdr_bh
from ..stats.design import dummy_code, is_categorical
from .means import cluster_means, subject_matrix

__all__ = ["IN_SAMPLE_NOTE", "METHODS", "bootstrap_ci", "cluster_means", "covariate_matrix",
           "fdr_bh", "fisher_ci", "loso_cluster_means", "loso_r", "partial_corr",
           "partial_corr_or_nan", "residualise", "subject_matrix"]

METHODS = ("pearson", "spearman")
IN_SAMPLE_NOTE = ("descriptive: the cluster was selected on the same data, so the in-sample r "
                  "is inflated; see loso_r for the non-circular estimate")


# --------------------------------------------------------------------------- inputs


def covariate_matrix(covariates: pd.DataFrame | np.ndarray | None, n: int) -> np.ndarray:
    """Numeric (n, k) covariate matrix; text/bool/category columns dummy-coded (drop first)."""
    if covariates is None:
        return np.empty((n, 0))
    if isinstance(covariates, pd.Series):
        covariates = covariates.to_frame()
    if isinstance(covariates, pd.DataFrame):
        # numeric columns as they are, then the dummies of the categorical ones
        cat = [name for name in covariates.columns if is_categorical(covariates[name])]
        cols = [covariates[name].to_numpy(dtype=float)[:, None]
                for name in covariates.columns if name not in cat]
        cols += [dummy_code(covariates[name], str(name))[0] for name in cat]
        c = np.column_stack(cols) if cols else np.empty((len(covariates), 0))
        if cat:  # a subject missing a category is missing from the analysis
            c[covariates[cat].isna().any(axis=1).to_numpy()] = np.nan
    else:
        c = np.asarray(covariates, dtype=float)
    if c.ndim == 1:
        c = c[:, None]
    if c.ndim != 2 or c.shape[0] != n:
        raise InputError(f"covariates must have one row per subject ({n}); got shape "
                         f"{c.shape}", file="parameter covariates",
                         fix="Pass an (n_subjects, k) table or array, rows in subject order.")
    return c


def _clean(x, y, covariates) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise InputError(f"x and y differ in length ({x.size} vs {y.size})",
                         file="parameters x, y", fix="Pass one value per subject in both.")
    c = covariate_matrix(covariates, x.size)
    keep = np.isfinite(x) & np.isfinite(y) & np.all(np.isfinite(c), axis=1)
    x, y, c = x[keep], y[keep], c[keep]
    n, k = c.shape
    if n - k - 3 < 1:
        raise InputError(f"too few complete subjects ({n}) for {k} covariate(s): a partial "
                         f"correlation needs n - k - 3 >= 1", file="parameters x, y",
                         fix="Use more subjects or fewer covariates.")
    const = [j for j in range(k) if np.ptp(c[:, j]) == 0]
    if const:
        raise InputError(f"covariate column(s) {const} are constant over the {n} subjects",
                         file="parameter covariates", fix="Drop constant covariates.")
    return x, y, c


def _rank(a: np.ndarray, axis: int = 0) -> np.ndarray:
    return stats.rankdata(a, axis=axis)


def residualise(x, y, covariates=None, method: str = "pearson"
                ) -> tuple[np.ndarray, np.ndarray]:
    """Residuals of ``x`` and ``y`` on ``[1, covariates]`` (ranks first for Spearman).

    Rows with a missing value are dropped. These are the axes of the partial-correlation
    scatter plot.
    """
    check_choice("method", method, METHODS)
    x, y, c = _clean(x, y, covariates)
    if method == "spearman":
        x, y = _rank(x), _rank(y)
        c = _rank(c) if c.size else c
    z = np.column_stack([np.ones(len(x)), c])
    beta, *_ = np.linalg.lstsq(z, np.column_stack([x, y]), rcond=None)
    res = np.column_stack([x, y]) - z @ beta
    return res[:, 0], res[:, 1]


# --------------------------------------------------------------------------- partial r


def _pvalue(r: float, dof: int) -> float:
    if np.isclose(r * r, 1.0):
        return 0.0
    t = r * np.sqrt(dof / (1.0 - r * r))
    return float(2.0 * stats.t.sf(abs(t), dof))


def fisher_ci(r: float, n: int, k: int = 0, ci: float = 0.95) -> tuple[float, float]:
    """Fisher-z confidence interval of a (partial) correlation, SE ``1/sqrt(n - k - 3)``."""
    if abs(r) >= 1.0:
        return float(r), float(r)
    crit = stats.norm.ppf(0.5 + ci / 2.0)
    z, se = np.arctanh(r), 1.0 / np.sqrt(n - k - 3)
    return float(np.tanh(z - crit * se)), float(np.tanh(z + crit * se))


def _batched_partial_r(data: np.ndarray) -> np.ndarray:
    """Partial r of columns 0 and 1 given the rest, for a batch (B, n, p) of samples."""
    centred = data - data.mean(axis=1, keepdims=True)
    cov = np.einsum("bni,bnj->bij", centred, centred)
    prec = np.linalg.pinv(cov, hermitian=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return -prec[:, 0, 1] / np.sqrt(prec[:, 0, 0] * prec[:, 1, 1])


def bootstrap_ci(x: np.ndarray, y: np.ndarray, c: np.ndarray, method: str, ci: float,
                 n_boot: int, seed: int, batch: int = 500) -> tuple[float, float]:
    """Percentile bootstrap CI of the partial r (subjects resampled with replacement)."""
    rng = np.random.default_rng(seed)
    data = np.column_stack([x, y, c])
    n = len(x)
    rs = []
    for start in range(0, n_boot, batch):
        idx = rng.integers(0, n, size=(min(batch, n_boot - start), n))
        sample = data[idx]
        if method == "spearman":
            sample = _rank(sample, axis=1)
        rs.append(_batched_partial_r(sample))
    r = np.concatenate(rs)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(r, [0.5 - ci / 2.0, 0.5 + ci / 2.0])
    return float(lo), float(hi)


def partial_corr(x, y, covariates: pd.DataFrame | np.ndarray | None = None,
                 method: str = "pearson", ci: float = 0.95, n_boot: int = 2000,
                 seed: int = 0) -> dict:
    """Partial correlation of ``x`` and ``y`` controlling ``covariates``.

    Parameters
    ----------
    x, y
        One value per subject (NaN rows are dropped together with their covariates).
    covariates
        (n, k) table or array, or None for a plain correlation.
    method
        ``"pearson"`` or ``"spearman"``.
    ci
        Confidence level of both intervals.
    n_boot
        Bootstrap resamples (0 skips the bootstrap; its bounds are then NaN).
    seed
        Seed of the bootstrap.

    Returns
    -------
    dict
        ``n``, ``k`` (covariate columns after dummy coding), ``dof`` (n - k - 2), ``r``,
        ``ci_low``, ``ci_high`` (Fisher z), ``p`` (two-sided t test), ``boot_ci_low``,
        ``boot_ci_high``, ``method``.
    """
    check_choice("method", method, METHODS)
    ci = check_in_range("ci", ci, 0.0, 1.0)
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 0:
        raise InputError(f"The 'n_boot' parameter must be an int >= 0. Got {n_boot!r} instead.",
                         file="parameter n_boot", fix="Pass e.g. 2000, or 0 for no bootstrap.")
    x, y, c = _clean(x, y, covariates)
    n, k = c.shape
    rx, ry = residualise(x, y, c, method)
    denom = np.sqrt((rx @ rx) * (ry @ ry))
    r = float(np.clip(rx @ ry / denom, -1.0, 1.0)) if denom > 0 else float("nan")
    lo, hi = fisher_ci(r, n, k, ci) if np.isfinite(r) else (np.nan, np.nan)
    blo, bhi = (bootstrap_ci(x, y, c, method, ci, int(n_boot), seed) if n_boot
                else (float("nan"), float("nan")))
    p = _pvalue(r, n - k - 2) if np.isfinite(r) else float("nan")
    return dict(zip(derivatives.PARTIAL_CORR_KEYS,
                    (n, k, n - k - 2, r, lo, hi, p, blo, bhi, method), strict=True))


def partial_corr_or_nan(x, y, covariates=None, method: str = "pearson", ci: float = 0.95,
                        n_boot: int = 0, seed: int = 0) -> dict:
    """:func:`partial_corr`, or NaNs (with the count ``n``) when too few values are finite."""
    x = np.asarray(x, dtype=float).ravel()
    k = covariate_matrix(covariates, x.size).shape[1]
    n = int(np.isfinite(x).sum())
    if n - k - 3 < 1:
        nan = float("nan")
        return dict(zip(derivatives.PARTIAL_CORR_KEYS,
                        (n, k, n - k - 2, nan, nan, nan, nan, nan, nan, method), strict=True))
    return partial_corr(x, y, covariates, method, ci, n_boot, seed)


# --------------------------------------------------------------------------- LOSO


class _FoldMaps:
    """Voxel-wise partial r of the score with Y, for the full sample and leave-one-out folds.

    Sufficient statistics of the standardised data are computed once; each fold down-dates
    them by the held-out subject, O(p * n_voxels) per fold instead of refitting.
    """

    def __init__(self, Y: np.ndarray, score: np.ndarray, c: np.ndarray) -> None:
        n = len(score)
        self.mu = Y.mean(axis=0)
        sd = Y.std(axis=0)
        self.sd = np.where(sd > 0, sd, 1.0)
        self.Y = Y
        s = (score - score.mean()) / (score.std() or 1.0)
        self.s = s
        self.D = np.column_stack([np.ones(n), c])
        self.G = self.D.T @ self.D
        Z = (Y - self.mu) / self.sd
        self.B = self.D.T @ Z
        self.yy = np.einsum("ij,ij->j", Z, Z)
        self.ys = s @ Z
        self.bs = self.D.T @ s
        self.ss = s @ s
        self.n, self.p = n, self.D.shape[1]

    def r_map(self, held_out: int | None = None) -> np.ndarray:
        G, B, yy, ys, bs, ss = self.G, self.B, self.yy, self.ys, self.bs, self.ss
        if held_out is not None:
            d, z, s = self.D[held_out], (self.Y[held_out] - self.mu) / self.sd, self.s[held_out]
            G, B = G - np.outer(d, d), B - np.outer(d, z)
            yy, ys, bs, ss = yy - z * z, ys - z * s, bs - d * s, ss - s * s
        Gi = np.linalg.pinv(G, hermitian=True)
        GB = Gi @ B
        sxy = ys - GB.T @ bs
        sxx = yy - np.einsum("ij,ij->j", B, GB)
        syy = ss - bs @ Gi @ bs
        with np.errstate(invalid="ignore", divide="ignore"):
            r = sxy / np.sqrt(np.maximum(sxx, 0) * max(syy, 0))
        return np.where(np.isfinite(r), r, 0.0)


class _Components:
    """Suprathreshold components of a partial-r map, ranked by their mass.

    Voxels with one-sided ``p < p_threshold`` (t of the partial r on ``dof`` df, in the
    direction of ``sign``) are grouped into ``connectivity``-connected components, ranked by
    cluster mass (sum of t over the component): on unsmoothed maps a single noisy voxel can
    out-peak a real cluster, but not out-weigh it.
    """

    def __init__(self, mask: np.ndarray, sign: int, p_threshold: float, dof: int,
                 connectivity: int) -> None:
        from .clusters import structure

        self.mask, self.sign, self.dof = mask, sign, dof
        self.t_crit = stats.t.isf(p_threshold, dof)
        self.struct = structure(connectivity)

    def ranked(self, r: np.ndarray) -> np.ndarray:
        """Per column: rank of its component (1 = largest mass), 0 = subthreshold."""
        from scipy import ndimage

        t = self.sign * r * np.sqrt(self.dof / np.maximum(1.0 - r * r, 1e-12))
        vol = np.zeros(self.mask.shape, dtype=bool)
        vol[self.mask] = t > self.t_crit
        lab = ndimage.label(vol, structure=self.struct)[0][self.mask]
        n = int(lab.max())
        if n == 0:
            return lab
        mass = np.bincount(lab, weights=t, minlength=n + 1)[1:]
        rank = np.empty(n + 1, dtype=np.int64)
        rank[0] = 0
        rank[1 + np.argsort(-mass, kind="stable")] = np.arange(1, n + 1)
        return rank[lab]


def _cluster_ranks(ranked: np.ndarray, cols: list[np.ndarray]) -> list[int]:
    """Rank of the full-sample component that overlaps each in-sample cluster most (0: none)."""
    out = []
    for cl in cols:
        hit = ranked[cl]
        hit = hit[hit > 0]
        out.append(int(np.bincount(hit).argmax()) if hit.size else 0)
    return out


def loso_cluster_means(Y: np.ndarray, score, covariates=None, *, mask_img=None,
                       clusters: Sequence[np.ndarray] | None = None, sign: int = 1,
                       define_cluster: Callable[[np.ndarray], np.ndarray] | None = None,
                       p_threshold: float = 0.01, connectivity: int = 26,
                       Y_select: np.ndarray | None = None) -> dict:
    """Held-out cluster means of every subject, one column per cluster (see :func:`loso_r`).

    ``Y_select`` (same shape as ``Y``, e.g. the smoothed metric) defines the clusters when
    given; the held-out means are always taken from ``Y``.

    Returns
    -------
    dict
        ``held_out`` (n, m) held-out means (NaN when a fold has no cluster of that rank),
        ``in_sample`` (n, m) means over the in-sample clusters, ``clusters`` (in-sample column
        indices), ``ranks`` (rank of each cluster in the full-sample map, 0 = not found),
        ``fold_overlap`` (n, m) fraction of the in-sample cluster inside each fold's cluster, ``fold_n_voxels`` (n, m).
    """
    Y = np.asarray(Y, dtype=float)
    score = np.asarray(score, dtype=float).ravel()
    n = len(score)
    if Y.ndim != 2 or Y.shape[0] != n:
        raise InputError(f"Y must be (n_subjects={n}, n_voxels); got shape {Y.shape}",
                         file="parameter Y", fix="Pass one row per subject.")
    c = covariate_matrix(covariates, n)
    if not (np.all(np.isfinite(Y)) and np.all(np.isfinite(score)) and np.all(np.isfinite(c))):
        raise InputError("Y, score and covariates must be finite for the leave-one-out "
                         "estimate", file="parameter Y",
                         fix="Drop subjects with missing values and voxels outside the data.")
    if define_cluster is not None:
        return _loso_callable(Y, n, define_cluster)
    if mask_img is None:
        raise InputError("the leave-one-out cluster needs the voxel positions",
                         file="parameter mask_img",
                         fix="Pass mask_img (Y's columns are its nonzero voxels in C order) "
                             "or define_cluster=callable(train_index) -> voxel mask.")
    mask = np.asarray(getattr(mask_img, "dataobj", mask_img)) > 0
    if mask.sum() != Y.shape[1]:
        raise InputError(f"mask has {mask.sum()} voxels but Y has {Y.shape[1]} columns",
                         file="parameter mask_img", fix="Pass the mask Y was extracted with.")
    if Y_select is not None:
        Y_select = np.asarray(Y_select, dtype=float)
        if Y_select.shape != Y.shape or not np.all(np.isfinite(Y_select)):
            raise InputError(f"Y_select must be finite and shaped like Y {Y.shape}",
                             file="parameter Y_select", fix="Pass the smoothed Y, or None.")
    maps = _FoldMaps(Y if Y_select is None else Y_select, score, c)
    k = c.shape[1]
    full = _Components(mask, sign, p_threshold, n - k - 2, connectivity).ranked(maps.r_map())
    if clusters is None:  # the in-sample cluster: the heaviest component
        clusters = [np.flatnonzero(full == 1)] if full.max() else [np.array([], int)]
    cols = [np.flatnonzero(cl) if np.asarray(cl).dtype == bool else np.asarray(cl, int)
            for cl in clusters]
    ranks = _cluster_ranks(full, cols)
    folds = _Components(mask, sign, p_threshold, n - 1 - k - 2, connectivity)
    held, overlap, size = (np.full((n, len(cols)), np.nan) for _ in range(3))
    for i in range(n):
        ranked = folds.ranked(maps.r_map(held_out=i))
        for j, (cl, q) in enumerate(zip(cols, ranks, strict=True)):
            fc = np.flatnonzero(ranked == q) if q else np.array([], int)
            if fc.size:
                held[i, j] = Y[i, fc].mean()
                overlap[i, j] = np.intersect1d(fc, cl).size / max(cl.size, 1)
            size[i, j] = fc.size
    with np.errstate(invalid="ignore"):
        in_sample = np.column_stack([Y[:, cl].mean(axis=1) if cl.size else np.full(n, np.nan)
                                     for cl in cols])
    return {"held_out": held, "in_sample": in_sample, "clusters": cols, "ranks": ranks,
            "fold_overlap": overlap, "fold_n_voxels": size}


def _loso_callable(Y: np.ndarray, n: int, define_cluster) -> dict:
    full = np.flatnonzero(define_cluster(np.arange(n)))
    held, overlap, size = (np.empty((n, 1)) for _ in range(3))
    for i in range(n):
        fc = np.flatnonzero(define_cluster(np.delete(np.arange(n), i)))
        held[i, 0] = Y[i, fc].mean() if fc.size else np.nan
        overlap[i, 0] = np.intersect1d(fc, full).size / max(full.size, 1)
        size[i, 0] = fc.size
    return {"held_out": held, "in_sample": Y[:, full].mean(axis=1)[:, None],
            "clusters": [full], "fold_overlap": overlap, "fold_n_voxels": size}


def loso_r(Y: np.ndarray, score, covariates=None, *, mask_img=None,
           cluster: np.ndarray | None = None, sign: int = 1,
           define_cluster: Callable[[np.ndarray], np.ndarray] | None = None,
           p_threshold: float = 0.01, connectivity: int = 26, method: str = "pearson",
           ci: float = 0.95, n_boot: int = 0, seed: int = 0) -> dict:
    """Leave-one-subject-out (non-circular) partial correlation of a cluster mean with a score.

    Parameters
    ----------
    Y
        (n_subjects, n_voxels) metric values (e.g. unsmoothed, in the analysis mask).
    score, covariates
        As in :func:`partial_corr`; rows in the order of ``Y``.
    mask_img
        3-D mask image/array whose nonzero voxels (C order) are ``Y``'s columns.
    cluster
        In-sample cluster (boolean over columns, or column indices), e.g. from a TFCE map.
        Default: the heaviest (largest-mass) suprathreshold component of the full-sample voxel-wise
        partial-r map.
    sign
        +1 (positive correlation expected) or -1.
    define_cluster
        Optional rule ``f(train_index) -> boolean voxel mask`` replacing the default one.
    p_threshold, connectivity
        Cluster-forming threshold (one-sided p of the voxel-wise partial r on ``n - k - 2``
        df) and connectivity of the component maps.
    method, ci, n_boot, seed
        Of the final partial correlations (see :func:`partial_corr`).

    Returns
    -------
    dict
        ``r``, ``ci_low``, ``ci_high``, ``p``, ``boot_ci_low``, ``boot_ci_high``, ``n``,
        ``method`` of the held-out means; ``in_sample_r``, ``in_sample_ci_low``,
        ``in_sample_ci_high``, ``in_sample_p`` (descriptive); ``held_out_means``;
        ``cluster_n_voxels``; ``rank`` (of the cluster's component in the full-sample map);
        ``n_folds_missing`` (folds without a component of that rank); ``mean_fold_overlap``
        (mean fraction of the in-sample cluster inside the fold clusters) and
        ``mean_fold_n_voxels`` (how stable the fold clusters are).
    """
    if sign not in (1, -1):
        raise InputError(f"sign must be +1 or -1. Got {sign!r} instead.",
                         file="parameter sign", fix="Pass 1 or -1.")
    out = loso_cluster_means(Y, score, covariates, mask_img=mask_img,
                             clusters=None if cluster is None else [np.asarray(cluster)],
                             sign=sign, define_cluster=define_cluster,
                             p_threshold=p_threshold, connectivity=connectivity)
    held = out["held_out"][:, 0]
    loso = partial_corr_or_nan(held, score, covariates, method, ci, n_boot, seed)
    ins = partial_corr_or_nan(out["in_sample"][:, 0], score, covariates, method, ci, 0, seed)
    result = dict(loso)
    result.update({"in_sample_r": ins[derivatives.R],
                   "in_sample_ci_low": ins[derivatives.CI_LOW],
                   "in_sample_ci_high": ins[derivatives.CI_HIGH], "in_sample_p": ins[derivatives.P],
                   "held_out_means": held,
                   "cluster_n_voxels": int(out["clusters"][0].size),
                   "rank": int(out.get("ranks", [1])[0]),
                   "n_folds_missing": int(np.isnan(held).sum()),
                   "mean_fold_overlap": float(np.nanmean(out["fold_overlap"]))
                   if np.isfinite(out["fold_overlap"]).any() else float("nan"),
                   "mean_fold_n_voxels": float(np.mean(out["fold_n_voxels"])),
                   "in_sample_note": IN_SAMPLE_NOTE})
    return result
