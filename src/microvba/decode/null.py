"""Spatial nulls of the decoder and the p values drawn from them.

P values from a null sample
---------------------------
For an observed statistic :math:`s` and :math:`N` null statistics :math:`s_1 \\dots s_N`
(exchangeable with :math:`s` under the null), with :math:`M = \\#\\{s_i \\ge s\\}`:

* ``p_perm``, the empirical p (Phipson & Smyth 2010),
  :math:`p = (M + 1) / (N + 1)`, exact (valid at every level) but bounded below by
  :math:`1/(N+1)`;
* ``p_null``, the same empirical p when :math:`M \\ge 10`, and otherwise
  :math:`\\min(p_{perm}, p_{tail})` with the tail approximation of Knijnenburg et al.
  (2009, Bioinformatics 25:i161): the :math:`N_{exc} = \\min(250, \\lfloor N/10 \\rfloor)`
  largest null values are taken as exceedances over the threshold :math:`t` (midway between
  the :math:`N_{exc}`-th and :math:`(N_{exc}+1)`-th largest), a generalised Pareto
  distribution (GPD) is fitted to :math:`y = s_i - t` and

  .. math:: p_{tail} = \\frac{N_{exc}}{N}\\,\\bigl(1 - F_{\\mathrm{GPD}}(s - t)\\bigr),
            \\qquad 1 - F_{\\mathrm{GPD}}(y) = (1 - k y / \\sigma)^{1/k}

  (:math:`\\exp(-y/\\sigma)` at :math:`k = 0`). The GPD is fitted by probability-weighted
  moments (Hosking & Wallis 1987, Technometrics 29:339): with the exceedances in ascending
  order :math:`y_{(1)} \\le \\dots \\le y_{(n)}`, :math:`a_0 = \\bar y`,
  :math:`a_1 = \\tfrac1n \\sum_j (1 - p_j) y_{(j)}`, :math:`p_j = (j - 0.35)/n`,
  :math:`k = a_0/(a_0 - 2a_1) - 2`, :math:`\\sigma = 2a_0a_1/(a_0 - 2a_1)`.
  The shape is constrained to :math:`k \\le 0`: a heavy tail (:math:`k < 0`, e.g. the
  skewed log-odds null of a small ROI, on which a normal tail held 0.016 at 0.01 and 0.0024
  at 0.001) is followed as fitted, while a light tail (:math:`k > 0`, e.g. correlations of
  smooth maps, normal-like) gets the exponential tail (:math:`k = 0`,
  :math:`\\sigma = \\bar y`), which lies above it: with 1,000 resamples the fitted end point
  :math:`\\sigma/k` of a light tail sits near the largest resample and an unconstrained fit
  gave p 10 times too small at 3 SD of a normal null (and 0 beyond the end point). The tail
  p is therefore conservative for light tails (about 1.5x at 3 SD of a normal), and the
  minimum with the exact :math:`p_{perm}` keeps it from exceeding the permutation p. Unlike
  :math:`p_{perm}` it is not bounded below by :math:`1/(N+1)`, so a feature can survive the
  Benjamini-Hochberg correction over 50 topics or 2,000 terms with 1,000 resamples.
  Knijnenburg's Anderson-Darling goodness-of-fit loop (shrinking :math:`N_{exc}`) is not
  run.

Map null (spatially constrained surrogates)
-------------------------------------------
Cyclic shifts of a volume move a brain- or grey-matter-shaped support off the brain mask,
so their correlations with the (grey-matter-shaped) association maps are too small and the
null is anti-conservative. The surrogates here keep the support and the spatial
autocorrelation of the map instead:

1. the *support* is the set of brain-mask voxels where the map is nonzero (the whole mask
   for an unmasked map, the grey matter or a cluster for a masked one);
2. the map's smoothness is estimated inside the support, per axis :math:`a`, as the
   correlation :math:`\\rho_a` of the normal scores of the map's values at voxel pairs
   ``step`` voxels apart (both in the support);
3. surrogates are stationary Gaussian fields with the Gaussian autocorrelation
   :math:`\\rho(\\Delta) = \\prod_a \\rho_a^{(\\Delta_a/\\mathrm{step})^2}` (what smoothing
   white noise with a Gaussian kernel gives), drawn *exactly* on the ``step``-voxel lattice
   on which the null correlations are computed: the covariance is the Kronecker product of
   three small Toeplitz matrices :math:`C_a`, so a field is
   :math:`(L_x \\otimes L_y \\otimes L_z) w` with :math:`C_a = L_a L_a^\\top` and white
   :math:`w`;
4. each field is restricted to the support (zero elsewhere, as the map) and its values are
   replaced, rank for rank, by the map's own values there, so every surrogate has exactly
   the map's value distribution and support.

This is the "in-mask smoothed noise, re-masked and rank-matched" construction; it matches
the variogram at the lattice spacing (the first lag of BrainSMASH's variogram matching,
Burt et al. 2020, NeuroImage 220:117038) rather than over a range of distances, and it
assumes a Gaussian-shaped autocorrelation.
"""

from __future__ import annotations

import numpy as np
from scipy import special

#: fewer exceedances than this switch ``p_null`` from the empirical p to the GPD tail
MIN_EXCEEDANCES = 10
#: largest number of exceedances the GPD is fitted to (Knijnenburg et al. 2009)
N_EXCEEDANCES = 250


def empirical_p(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """One-sided :math:`(1 + \\#\\{s_0 \\ge s\\}) / (1 + N)` per row of ``null`` (NaN-safe:
    a NaN null value never exceeds)."""
    null = np.nan_to_num(np.asarray(null, dtype=float), nan=-np.inf)
    exceed = (null >= np.asarray(observed, float)[:, None] - 1e-12).sum(axis=1)
    return (1.0 + exceed) / (1.0 + null.shape[1])


def gpd_fit_pwm(y: np.ndarray) -> tuple[float, float]:
    """Shape ``k`` and scale ``sigma`` of a GPD fitted to exceedances ``y`` >= 0 by
    probability-weighted moments (Hosking & Wallis 1987); survival
    :math:`(1 - k y/\\sigma)^{1/k}` (scipy's ``genpareto`` with ``c = -k``)."""
    y = np.sort(np.asarray(y, dtype=float))
    n = y.size
    p = (np.arange(1, n + 1) - 0.35) / n
    a0 = y.mean()
    a1 = np.mean((1.0 - p) * y)
    den = a0 - 2.0 * a1
    if not np.isfinite(den) or den <= 0 or a0 <= 0:
        return np.nan, np.nan
    return float(a0 / den - 2.0), float(2.0 * a0 * a1 / den)


def gpd_sf(y: float, k: float, sigma: float) -> float:
    """Survival function of the GPD (Hosking & Wallis parameterisation)."""
    if y <= 0:
        return 1.0
    if abs(k) < 1e-9:
        return float(np.exp(-y / sigma))
    base = 1.0 - k * y / sigma
    if base <= 0:
        return 0.0
    return float(base ** (1.0 / k))


def tail_p(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """``p_null`` of the module docstring: empirical p, or its minimum with the GPD tail
    (shape constrained to :math:`k \\le 0`) when fewer than :data:`MIN_EXCEEDANCES` null
    values reach the observed one."""
    observed = np.asarray(observed, dtype=float)
    null = np.asarray(null, dtype=float)
    p = empirical_p(observed, null)
    n = null.shape[1]
    n_exc = min(N_EXCEEDANCES, n // 10)
    if n_exc < 10:
        return p
    exceed = np.round(p * (1 + n) - 1).astype(int)
    for f in np.flatnonzero((exceed < MIN_EXCEEDANCES) & np.isfinite(observed)):
        row = null[f][np.isfinite(null[f])]
        if row.size < 10 * n_exc:
            continue
        row = np.sort(row)
        t = 0.5 * (row[-n_exc - 1] + row[-n_exc])
        y = row[-n_exc:] - t
        k, sigma = gpd_fit_pwm(y)
        if not (np.isfinite(k) and np.isfinite(sigma) and sigma > 0):
            continue  # degenerate tail (ties): keep the empirical p
        if k > 0:  # light tail: exponential bound (module docstring)
            k, sigma = 0.0, float(y.mean())
        p[f] = min(p[f], max(n_exc / row.size * gpd_sf(observed[f] - t, k, sigma),
                             np.finfo(float).tiny))
    return p


# ----------------------------------------------------------------------------- map null
def normal_scores(x: np.ndarray) -> np.ndarray:
    """Rank-based normal scores :math:`\\Phi^{-1}((r - 1/2)/n)` (ties: average ranks)."""
    from scipy.stats import rankdata

    r = rankdata(x)
    return special.ndtri((r - 0.5) / x.size)


def lag_correlations(vol: np.ndarray, support: np.ndarray, lag: int) -> np.ndarray:
    """Per axis, the correlation of the normal scores of ``vol`` at voxel pairs ``lag``
    voxels apart, both in ``support`` (0 when fewer than 30 pairs)."""
    scores = np.zeros(vol.shape, dtype=np.float64)
    scores[support] = normal_scores(vol[support])
    out = np.zeros(3)
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis] = slice(0, -lag)
        hi[axis] = slice(lag, None)
        both = support[tuple(lo)] & support[tuple(hi)]
        if both.sum() < 30:
            continue
        a = scores[tuple(lo)][both]
        b = scores[tuple(hi)][both]
        out[axis] = np.corrcoef(a, b)[0, 1]
    return np.clip(np.nan_to_num(out), 0.0, 0.999)


def _axis_factor(rho: float, m: int) -> np.ndarray:
    """Square root (m, m) of the Toeplitz covariance :math:`\\rho^{(i-j)^2}`."""
    d = np.arange(m)
    cov = rho ** ((d[:, None] - d[None, :]) ** 2).astype(float) if rho > 0 else np.eye(m)
    w, v = np.linalg.eigh(cov)
    return (v * np.sqrt(np.clip(w, 0.0, None))).astype(np.float32)


def gaussian_fields(rho: np.ndarray, shape: tuple[int, int, int], n: int,
                    rng: np.random.Generator) -> np.ndarray:
    """(n, *shape) float32 stationary Gaussian fields, unit variance, correlation
    :math:`\\prod_a \\rho_a^{\\Delta_a^2}` at lattice offset :math:`\\Delta`."""
    lx, ly, lz = (_axis_factor(float(r), m) for r, m in zip(rho, shape, strict=True))
    w = rng.standard_normal((n, *shape), dtype=np.float32)
    x = np.einsum("ai,nijk->najk", lx, w, optimize=True)
    x = np.einsum("bj,najk->nabk", ly, x, optimize=True)
    return np.einsum("ck,nabk->nabc", lz, x, optimize=True)


def surrogate_maps(vol: np.ndarray, brain: np.ndarray, points: np.ndarray, n: int,
                   rng: np.random.Generator, step: int = 3,
                   batch: int = 100) -> tuple[np.ndarray, dict]:
    """Spatially constrained surrogates of ``vol`` read at lattice ``points`` (module doc).

    Parameters
    ----------
    vol
        The map on the grid (zero outside the brain).
    brain
        Boolean brain mask of the grid.
    points
        (n_points, 3) voxel indices, all multiples of ``step`` (the null lattice).
    n
        Number of surrogates.

    Returns
    -------
    surrogates
        (n, n_points) float32: zero outside the support, the map's own lattice values,
        permuted by the rank of a Gaussian field, inside it.
    info
        ``rho`` (per-axis correlation at ``step`` voxels) and ``n_support`` (lattice points
        in the support).
    """
    support = brain & (vol != 0)
    rho = lag_correlations(vol, support, step)
    values = vol[tuple(points.T)]
    in_sup = support[tuple(points.T)]
    sup_pts = points[in_sup] // step
    out = np.zeros((n, points.shape[0]), dtype=np.float32)
    info = {"rho": rho.tolist(), "n_support": int(in_sup.sum())}
    if sup_pts.shape[0] < 2:
        return out + values[None, :].astype(np.float32), info
    lo = sup_pts.min(axis=0)
    shape = tuple(int(s) for s in sup_pts.max(axis=0) - lo + 1)
    rel = sup_pts - lo
    target = np.sort(values[in_sup]).astype(np.float32)
    cols = np.flatnonzero(in_sup)
    for b0 in range(0, n, batch):
        nb = min(batch, n - b0)
        fields = gaussian_fields(rho, shape, nb, rng)[:, rel[:, 0], rel[:, 1], rel[:, 2]]
        order = np.argsort(fields, axis=1)
        ranked = np.empty_like(fields)
        np.put_along_axis(ranked, order, np.broadcast_to(target, fields.shape), axis=1)
        out[b0:b0 + nb, cols] = ranked
    return out, info
