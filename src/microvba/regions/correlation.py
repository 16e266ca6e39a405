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

The p-value and CI of the LOSO r (:func:`loso_inference`): the held-out pairs are not
independent (each fold's cluster is chosen by the other held-out subjects), so the t-test p
and Fisher CI that assume they are reject a true null in ~45 % of null cohorts (n = 64).
With ``n_perm`` the whole leave-one-out is redone on Freedman-Lane permuted scores; the
permutation p holds its level; the CI is Fisher's where that test rejects and is widened to
the null replicates' spread where it does not (``benchmarks/RESULTS.md``, *LOSO calibration
(session 7)*).

References
----------
Esterman M, Tamber-Rosenau BJ, Chiu YC, Yantis S. Avoiding non-independence in fMRI data
analysis: leave one subject out. NeuroImage. 2010;50:572-576.
Kriegeskorte N, Simmons WK, Bellgowan PS, Baker CI. Circular analysis in systems
neuroscience: the dangers of double dipping. Nat Neurosci. 2009;12:535-540.
Vul E, Harris C, Winkielman P, Pashler H. Puzzlingly high correlations in fMRI studies of
emotion, personality, and social cognition. Perspect Psychol Sci. 2009;4:274-290.
Benjamini Y, Hochberg Y. Controlling the false discovery rate. J R Stat Soc B. 1995;57:289-300.
Freedman D, Lane D. A nonstochastic interpretation of reported significance levels. J Bus Econ
Stat. 1983;1:292-298.
Winkler AM, Ridgway GR, Webster MA, Smith SM, Nichols TE. Permutation inference for the general
linear model. NeuroImage. 2014;92:381-397.
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
           "fdr_bh", "fisher_ci", "loso_cluster_means", "loso_inference", "loso_r",
           "partial_corr", "partial_corr_or_nan", "permuted_scores", "residualise",
           "subject_matrix"]

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
    them by the held-out subject, O(p * n_voxels) per fold instead of refitting. The
    score-free part is kept when :meth:`set_score` swaps in a permuted score.
    """

    def __init__(self, Y: np.ndarray, score: np.ndarray, c: np.ndarray) -> None:
        n = len(score)
        self.mu = Y.mean(axis=0)
        sd = Y.std(axis=0)
        self.sd = np.where(sd > 0, sd, 1.0)
        self.Y = Y
        self.D = np.column_stack([np.ones(n), c])
        self.G = self.D.T @ self.D
        self.Z = (Y - self.mu) / self.sd
        self.B = self.D.T @ self.Z
        self.yy = np.einsum("ij,ij->j", self.Z, self.Z)
        self.n, self.p = n, self.D.shape[1]
        self.cache_folds = False
        self._sxx: dict[int, np.ndarray] = {}
        self.set_score(score)

    def set_score(self, score: np.ndarray) -> None:
        s = (score - score.mean()) / (score.std() or 1.0)
        self.s = s
        self.ys = s @ self.Z
        self.bs = self.D.T @ s
        self.ss = s @ s

    def r_map(self, held_out: int | None = None) -> np.ndarray:
        """Partial r map of all subjects, or of all but ``held_out`` (exact down-date)."""
        G, B, yy, ys, bs, ss = self.G, self.B, self.yy, self.ys, self.bs, self.ss
        if held_out is None:
            Gi = np.linalg.pinv(G, hermitian=True)
            w = Gi @ bs
            sxy = ys - B.T @ w
            sxx = yy - np.einsum("ij,ij->j", B, Gi @ B)
            syy = ss - bs @ w
        else:
            d, z, s = self.D[held_out], self.Z[held_out], self.s[held_out]
            Gi = np.linalg.pinv(G - np.outer(d, d), hermitian=True)
            bs = bs - d * s
            w = Gi @ bs
            # (B - d z')' w = B'w - z (d'w); the score-free sxx is cached per fold
            sxy = ys - np.einsum("i,ij->j", w, B)  # einsum: no BLAS threads for a matvec
            sxy -= z * (s - d @ w)
            sxx = self._sxx_fold(held_out, Gi)
            syy = ss - s * s - bs @ w
        with np.errstate(invalid="ignore", divide="ignore"):
            r = sxy / (np.sqrt(np.maximum(sxx, 0)) * np.sqrt(max(syy, 0)))
        return np.where(np.isfinite(r), r, 0.0)

    def _sxx_fold(self, i: int, Gi: np.ndarray) -> np.ndarray:
        """Residual sum of squares of the standardised Y in fold ``i`` (kept when
        ``cache_folds`` is set: the permutations reuse it)."""
        if i in self._sxx:
            return self._sxx[i]
        d, z = self.D[i], self.Z[i]
        B = self.B - np.outer(d, z)
        sxx = self.yy - z * z - np.einsum("ij,ij->j", B, Gi @ B)
        if self.cache_folds:
            self._sxx[i] = sxx
        return sxx


def _forward_neighbours(mask: np.ndarray, connectivity: int) -> np.ndarray:
    """(n_voxels, n_offsets) column index of each in-mask voxel's "forward" neighbours.

    Half of the ``connectivity`` offsets (the lexicographically positive ones), so each
    edge of the voxel graph appears once; -1 where the neighbour is outside the mask.
    """
    from .clusters import structure

    st = structure(connectivity)
    offsets = [tuple(o) for o in np.argwhere(st) - 1 if tuple(o) > (0, 0, 0)]
    index = np.full(mask.shape, -1, dtype=np.int64)
    index[mask] = np.arange(int(mask.sum()))
    padded = np.pad(index, 1, constant_values=-1)
    coords = np.argwhere(mask) + 1
    return np.column_stack([padded[coords[:, 0] + a, coords[:, 1] + b, coords[:, 2] + c]
                            for a, b, c in offsets]) if offsets else np.empty((len(coords), 0),
                                                                              np.int64)


class _Components:
    """Suprathreshold components of a partial-r map, ranked by their mass.

    Voxels with one-sided ``p < p_threshold`` (t of the partial r on ``dof`` df, in the
    direction of ``sign``) are grouped into ``connectivity``-connected components, ranked by
    cluster mass (sum of t over the component): on unsmoothed maps a single noisy voxel can
    out-peak a real cluster, but not out-weigh it. Components are found on the graph of the
    suprathreshold voxels only (their in-mask neighbours, precomputed once), which gives the
    components of ``scipy.ndimage.label`` on the volume at a fraction of its cost (the
    permutation null relabels a map per fold and permutation).
    """

    def __init__(self, mask: np.ndarray, sign: int, p_threshold: float, dof: int,
                 connectivity: int) -> None:
        self.mask, self.sign, self.dof = mask, sign, dof
        self.t_crit = stats.t.isf(p_threshold, dof)
        self.r_crit = self.t_crit / np.sqrt(dof + self.t_crit ** 2)
        self.neighbours = _forward_neighbours(mask, connectivity)

    def ranked(self, r: np.ndarray) -> np.ndarray:
        """Per column: rank of its component (1 = largest mass), 0 = subthreshold."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        on = self.sign * r > self.r_crit  # t > t_crit, t = r sqrt(dof / (1 - r^2))
        idx = np.flatnonzero(on)
        out = np.zeros(r.shape, dtype=np.int64)
        if idx.size == 0:
            return out
        ri = self.sign * r[idx]
        t = ri * np.sqrt(self.dof / np.maximum(1.0 - ri * ri, 1e-12))
        nb = self.neighbours[idx]
        ok = nb >= 0
        ok[ok] = on[nb[ok]]
        pos = np.full(r.shape, -1, dtype=np.int64)
        pos[idx] = np.arange(idx.size)
        a = np.broadcast_to(np.arange(idx.size)[:, None], nb.shape)[ok]
        b = pos[nb[ok]]
        graph = coo_matrix((np.ones(a.size, np.int8), (a, b)), shape=(idx.size, idx.size))
        n, lab = connected_components(graph, directed=False)
        mass = np.bincount(lab, weights=t, minlength=n)
        rank = np.empty(n, dtype=np.int64)
        rank[np.argsort(-mass, kind="stable")] = np.arange(1, n + 1)
        out[idx] = rank[lab]
        return out


def _cluster_ranks(ranked: np.ndarray, cols: list[np.ndarray]) -> list[int]:
    """Rank of the full-sample component that overlaps each in-sample cluster most (0: none)."""
    out = []
    for cl in cols:
        hit = ranked[cl]
        hit = hit[hit > 0]
        out.append(int(np.bincount(hit).argmax()) if hit.size else 0)
    return out


def _held_out(maps: _FoldMaps, folds: _Components, Y: np.ndarray, cols: list[np.ndarray],
              ranks: list[int], overlap: bool = True):
    """Held-out means (n, m) over the fold clusters; with ``overlap`` also the fraction of
    each in-sample cluster inside the fold cluster and the fold cluster sizes."""
    n = Y.shape[0]
    held, ovl, size = (np.full((n, len(cols)), np.nan) for _ in range(3))
    for i in range(n):
        ranked = folds.ranked(maps.r_map(held_out=i))
        for j, (cl, q) in enumerate(zip(cols, ranks, strict=True)):
            fc = np.flatnonzero(ranked == q) if q else np.array([], int)
            if fc.size:
                held[i, j] = Y[i, fc].mean()
                if overlap:
                    ovl[i, j] = np.intersect1d(fc, cl).size / max(cl.size, 1)
            size[i, j] = fc.size
    return held, ovl, size


def permuted_scores(score: np.ndarray, c: np.ndarray, n_perm: int, seed: int) -> np.ndarray:
    """(n_perm, n) scores under the null, Freedman & Lane (1983): the score's fit on
    :math:`[1, C]` plus its permuted residuals, :math:`s^* = Hs + P(I - H)s` (plain
    permutations of the score without covariates)."""
    z = np.column_stack([np.ones(len(score)), c])
    fit = z @ np.linalg.lstsq(z, score, rcond=None)[0]
    res = score - fit
    rng = np.random.default_rng(seed)
    return np.stack([fit + res[rng.permutation(len(score))] for _ in range(n_perm)])


def loso_cluster_means(Y: np.ndarray, score, covariates=None, *, mask_img=None,
                       clusters: Sequence[np.ndarray] | None = None, sign: int = 1,
                       define_cluster: Callable[[np.ndarray], np.ndarray] | None = None,
                       p_threshold: float = 0.01, connectivity: int = 26,
                       Y_select: np.ndarray | None = None, n_perm: int = 0,
                       seed: int = 0) -> dict:
    """Held-out cluster means of every subject, one column per cluster (see :func:`loso_r`).

    ``Y_select`` (same shape as ``Y``, e.g. the smoothed metric) defines the clusters when
    given; the held-out means are always taken from ``Y``. With ``n_perm > 0`` the whole
    leave-one-out is redone on ``n_perm`` null scores (:func:`permuted_scores`; the fold
    clusters of the same mass ranks), for the permutation p and interval of
    :func:`loso_inference`.

    Returns
    -------
    dict
        ``held_out`` (n, m) held-out means (NaN when a fold has no cluster of that rank),
        ``in_sample`` (n, m) means over the in-sample clusters, ``clusters`` (in-sample column
        indices), ``ranks`` (rank of each cluster in the full-sample map, 0 = not found),
        ``fold_overlap`` (n, m) fraction of the in-sample cluster inside each fold's cluster,
        ``fold_n_voxels`` (n, m); with ``n_perm``: ``perm_scores`` (n_perm, n) and
        ``perm_held_out`` (n_perm, n, m).
    """
    Y = np.asarray(Y, dtype=float)
    score = np.asarray(score, dtype=float).ravel()
    n = len(score)
    if Y.ndim != 2 or Y.shape[0] != n:
        raise InputError(f"Y must be (n_subjects={n}, n_voxels); got shape {Y.shape}",
                         file="parameter Y", fix="Pass one row per subject.")
    if isinstance(n_perm, bool) or int(n_perm) != n_perm or n_perm < 0:
        raise InputError(f"The 'n_perm' parameter must be an int >= 0. Got {n_perm!r} "
                         "instead.", file="parameter n_perm",
                         fix="Pass e.g. 1000, or 0 for the Fisher interval and t-test p.")
    c = covariate_matrix(covariates, n)
    if not (np.all(np.isfinite(Y)) and np.all(np.isfinite(score)) and np.all(np.isfinite(c))):
        raise InputError("Y, score and covariates must be finite for the leave-one-out "
                         "estimate", file="parameter Y",
                         fix="Drop subjects with missing values and voxels outside the data.")
    if define_cluster is not None:
        if n_perm:
            raise InputError("permutations need the default (rank) fold-cluster rule, which "
                             "sees the score; define_cluster does not",
                             file="parameter n_perm", fix="Pass n_perm=0 with define_cluster.")
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
    maps.cache_folds = n_perm > 0
    k = c.shape[1]
    full = _Components(mask, sign, p_threshold, n - k - 2, connectivity).ranked(maps.r_map())
    if clusters is None:  # the in-sample cluster: the heaviest component
        clusters = [np.flatnonzero(full == 1)] if full.max() else [np.array([], int)]
    cols = [np.flatnonzero(cl) if np.asarray(cl).dtype == bool else np.asarray(cl, int)
            for cl in clusters]
    ranks = _cluster_ranks(full, cols)
    folds = _Components(mask, sign, p_threshold, n - 1 - k - 2, connectivity)
    held, overlap, size = _held_out(maps, folds, Y, cols, ranks)
    with np.errstate(invalid="ignore"):
        in_sample = np.column_stack([Y[:, cl].mean(axis=1) if cl.size else np.full(n, np.nan)
                                     for cl in cols])
    out = {"held_out": held, "in_sample": in_sample, "clusters": cols, "ranks": ranks,
           "fold_overlap": overlap, "fold_n_voxels": size}
    if n_perm:
        perm_scores = permuted_scores(score, c, int(n_perm), seed)
        perm_held = np.full((int(n_perm), n, len(cols)), np.nan)
        if any(ranks):
            for b, s_b in enumerate(perm_scores):
                maps.set_score(s_b)
                perm_held[b] = _held_out(maps, folds, Y, cols, ranks, overlap=False)[0]
        maps.set_score(score)
        out.update(perm_scores=perm_scores, perm_held_out=perm_held)
    return out


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


def _r_only(x: np.ndarray, y: np.ndarray, c: np.ndarray, method: str) -> float:
    """Partial r of the complete rows (NaN when fewer than k + 4)."""
    keep = np.isfinite(x) & np.isfinite(y)
    x, y, c = x[keep], y[keep], c[keep]
    if len(x) - c.shape[1] - 3 < 1:
        return float("nan")
    if method == "spearman":
        x, y = _rank(x), _rank(y)
        c = _rank(c) if c.size else c
    z = np.column_stack([np.ones(len(x)), c])
    xy = np.column_stack([x, y])
    e = xy - z @ np.linalg.lstsq(z, xy, rcond=None)[0]
    denom = np.sqrt((e[:, 0] @ e[:, 0]) * (e[:, 1] @ e[:, 1]))
    return float(e[:, 0] @ e[:, 1] / denom) if denom > 0 else float("nan")


def loso_inference(held_out, score, covariates=None, method: str = "pearson",
                   ci: float = 0.95, perm_held_out: np.ndarray | None = None,
                   perm_scores: np.ndarray | None = None, n_boot: int = 0,
                   seed: int = 0) -> dict:
    """Partial correlation of the held-out means with the score, p and CI calibrated by the
    permutation null when it is given.

    Without permutations this is :func:`partial_corr_or_nan` (t-test p, Fisher CI). Those
    assume the n held-out pairs are independent; they are not: fold :math:`i`'s cluster is
    chosen by every other subject :math:`j`, and subject :math:`j`'s cluster by :math:`i`.
    A subject who supports a cluster keeps it selected in the other folds, where it is
    measured, and pushes it out of its own fold when it is left out, so the terms
    :math:`x_i s_i` of the held-out r are correlated across subjects. Under the null the mean
    LOSO r is ~0 (it is non-circular) but its spread is about twice the Fisher SE
    :math:`1/\\sqrt{n-k-3}` on the benchmark's cohorts (``benchmarks/RESULTS.md``,
    *LOSO calibration*), so the t-test p is anti-conservative and the Fisher CI too narrow.
    This is not a baseline effect (expressing each held-out value relative to the training
    subjects' voxel means or SDs leaves the spread as it is), and it is worst exactly where
    the null fold clusters are stable, so no stability rule rescues the analytic p.

    With the null replicates :math:`r^*_b` (the whole leave-one-out redone on
    :func:`permuted_scores`, ``b = 1..B``):

    - p: :math:`p = (1 + \\#\\{b : |r^*_b| \\ge |r|\\}) / (1 + B)`, two-sided, exact up
      to Monte-Carlo error without covariates (Freedman-Lane with them);
    - CI: where the test rejects (:math:`p \\le \\alpha`, :math:`\\alpha = 1 - \\text{ci}`)
      the Fisher interval :math:`\\tanh(z \\pm z_{1-\\alpha/2}/\\sqrt{n-k-3})`,
      :math:`z = \\operatorname{artanh} r`; otherwise :math:`\\tanh(z \\pm h)` with
      :math:`h = \\max(z_{1-\\alpha/2}/\\sqrt{n-k-3},\\; |z^*|_{(m)})`, where
      :math:`|z^*|_{(m)}` is the :math:`m`-th largest null :math:`|\\operatorname{artanh}
      r^*_b|`, :math:`m = \\max(1, \\lfloor \\alpha (B + 1) \\rfloor)`: the Fisher interval
      widened to the null replicates' spread, which contains 0. The interval therefore
      excludes 0 exactly when :math:`p \\le \\alpha` (so under the null it covers 0 at the
      permutation test's level), and where the effect is established it is Fisher's, which
      is accurate there: the folds of a real, reliably found cluster barely wander. Coverage
      at planted effects is measured in ``benchmarks/bench_circularity.py`` (RESULTS.md): it
      stays below 0.95 only for weak effects that the selection often misses (n = 64,
      r = 0.27), where the LOSO r itself is pulled toward 0. Choose :math:`B + 1` a multiple
      of :math:`1/\\alpha` (e.g. 199 for 95 %).

    Returns
    -------
    dict
        The keys of :func:`partial_corr` plus ``n_perm`` (null replicates used) and
        ``null_sd_z`` (their SD in Fisher z; NaN without permutations).
    """
    out = partial_corr_or_nan(held_out, score, covariates, method, ci, n_boot, seed)
    out.update(n_perm=0, null_sd_z=float("nan"))
    if perm_held_out is None or not np.isfinite(out[derivatives.R]):
        return out
    y = np.asarray(score, dtype=float).ravel()
    c = covariate_matrix(covariates, y.size)
    r_null = np.array([_r_only(np.asarray(x, float), s, c, method)
                       for x, s in zip(perm_held_out, perm_scores, strict=True)])
    r_null = r_null[np.isfinite(r_null)]
    if r_null.size < 2:
        return out
    r = out[derivatives.R]
    out[derivatives.P] = float((1 + np.sum(np.abs(r_null) >= abs(r) - 1e-12))
                               / (1 + r_null.size))
    z_null = np.arctanh(np.clip(r_null, -0.999999, 0.999999))
    sd = float(np.std(z_null, ddof=1))
    m = max(1, int(np.floor((1.0 - ci) * (r_null.size + 1) + 1e-9)))
    h_null = float(np.sort(np.abs(z_null))[::-1][min(m, r_null.size) - 1])
    h = stats.norm.ppf(0.5 + ci / 2.0) / np.sqrt(out[derivatives.N] - out["k"] - 3)
    if out[derivatives.P] > 1.0 - ci:  # not rejected: widened to the null's spread
        h = max(h, h_null)
    z = np.arctanh(np.clip(r, -0.999999, 0.999999))
    out[derivatives.CI_LOW], out[derivatives.CI_HIGH] = (float(np.tanh(z - h)),
                                                         float(np.tanh(z + h)))
    out.update(n_perm=int(r_null.size), null_sd_z=sd)
    return out


def loso_r(Y: np.ndarray, score, covariates=None, *, mask_img=None,
           cluster: np.ndarray | None = None, sign: int = 1,
           define_cluster: Callable[[np.ndarray], np.ndarray] | None = None,
           p_threshold: float = 0.01, connectivity: int = 26, method: str = "pearson",
           ci: float = 0.95, n_boot: int = 0, seed: int = 0, n_perm: int = 0) -> dict:
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
        Of the final partial correlations (see :func:`partial_corr`); ``seed`` also seeds
        the permutations.
    n_perm
        Null replicates of the whole leave-one-out for the p-value and CI
        (:func:`loso_inference`); 0: t-test p and Fisher CI, which are anti-conservative
        where the fold clusters wander (under the null above all).

    Returns
    -------
    dict
        ``r``, ``ci_low``, ``ci_high``, ``p``, ``boot_ci_low``, ``boot_ci_high``, ``n``,
        ``method``, ``n_perm``, ``null_sd_z`` of the held-out means; ``in_sample_r``,
        ``in_sample_ci_low``, ``in_sample_ci_high``, ``in_sample_p`` (descriptive);
        ``held_out_means``; ``cluster_n_voxels``; ``rank`` (of the cluster's component in the
        full-sample map); ``n_folds_missing`` (folds without a component of that rank);
        ``mean_fold_overlap`` (mean fraction of the in-sample cluster inside the fold
        clusters) and ``mean_fold_n_voxels`` (how stable the fold clusters are).
    """
    if sign not in (1, -1):
        raise InputError(f"sign must be +1 or -1. Got {sign!r} instead.",
                         file="parameter sign", fix="Pass 1 or -1.")
    out = loso_cluster_means(Y, score, covariates, mask_img=mask_img,
                             clusters=None if cluster is None else [np.asarray(cluster)],
                             sign=sign, define_cluster=define_cluster,
                             p_threshold=p_threshold, connectivity=connectivity,
                             n_perm=n_perm, seed=seed)
    held = out["held_out"][:, 0]
    perm = out.get("perm_held_out")
    loso = loso_inference(held, score, covariates, method, ci,
                          None if perm is None else perm[:, :, 0], out.get("perm_scores"),
                          n_boot, seed)
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
