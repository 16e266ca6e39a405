r"""Noise level :math:`\sigma` of a DWI series, per voxel, for the NODDI Rician noise floor.

Three estimators, chosen by what the scheme holds (``method="auto"``, :func:`choose_method`):

``b0``
    several b=0 volumes (>= :data:`MIN_B0_REPEATS`): the sample variance of the b0s
    (``ddof=1``). At b = 0 the signal is far above the noise, where the magnitude (Rician)
    variance equals the Gaussian :math:`\sigma^2` (Gudbjartsson & Patz 1995).
``pairs``
    one b0 but repeated diffusion-weighted directions (a full-sphere DSI grid: antipodal
    pairs, same b, direction up to sign): the half squared difference of each pair divided
    by the Rician variance factor of its mean, :math:`\hat\sigma^2 =
    \sum_i \tfrac12(x_a-x_b)_i^2 / \sum_i \xi(\bar x_i/\hat\sigma)`, over all pairs
    (a magnitude near the floor has a variance below :math:`\sigma^2`: :math:`\xi` from
    :math:`2\sigma^2+A^2-\mathrm E[M]^2`, Koay & Basser 2006).
``residual``
    neither: a NODDI fit of each voxel with the floor as a free parameter, then sigma from
    that fit's residuals, :math:`\hat\sigma^2 = \mathrm{RSS} / (\sum_i \xi_i - p)`
    (see :func:`microvba.models._noddi_kernels.free_floor`); it also absorbs model
    misfit, so it is the last resort.

In an image (``spatial`` not None) the per-voxel variances are pooled over the voxels of the
mask in a :data:`POOL_RADIUS` neighbourhood (3x3x3: 27 times the degrees of freedom of one
voxel), so that :math:`\sigma` follows slow spatial changes (coil sensitivity, bias field)
without the scatter of a 6-b0 estimate (about 30 % per voxel).

References
----------
Gudbjartsson H, Patz S (1995) The Rician distribution of noisy MRI data. Magn Reson Med
34:910-914.
Koay CG, Basser PJ (2006) Analytically exact correction scheme for signal extraction from
noisy magnitude MR signals. J Magn Reson 179:317-322.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

#: ``auto`` uses a floor only on schemes reaching this b-value (s/mm^2), where the
#: high-b signal sits near the noise floor
FLOOR_B_MIN = 4000.0
#: fewest b0 volumes for the ``b0`` estimator
MIN_B0_REPEATS = 3
#: fewest usable pairs of repeated diffusion-weighted directions for ``pairs``
MIN_PAIRS = 10
#: fixed-point iterations of the ``pairs`` estimator after its median start
PAIR_ITER = 4
#: neighbourhood radius (voxels) of the spatial pooling
POOL_RADIUS = 1
METHODS = ("auto", "b0", "pairs", "residual", "none")


def _rician_variance_table(u_max: float = 100.0, du: float = 0.01) -> np.ndarray:
    r""":math:`\xi` on a uniform grid of :math:`u = \mathrm E[M]/\sigma` from
    :math:`\sqrt{\pi/2}` (A = 0) to ``u_max`` (step ``du``): the variance of a Rician
    magnitude :math:`M` in units of :math:`\sigma^2`, :math:`\xi(\theta) = 2 + \theta^2 -
    \tfrac{\pi}{8} e^{-\theta^2/2}[(2+\theta^2) I_0(\theta^2/4) + \theta^2
    I_1(\theta^2/4)]^2` with :math:`\theta = A/\sigma` (Koay & Basser 2006), as a
    function of the mean :math:`\mathrm E[M]/\sigma = \sqrt{\pi/2}\,e^{-\theta^2/4}
    [(1+\theta^2/2) I_0 + \tfrac{\theta^2}{2} I_1](\theta^2/4)`."""
    from scipy.special import i0e, i1e

    theta = np.linspace(0.0, u_max + 2.0, 40001)
    x = theta * theta / 4.0
    mean = np.sqrt(np.pi / 2.0) * ((1.0 + 2.0 * x) * i0e(x) + 2.0 * x * i1e(x))
    xi = 2.0 + theta * theta - mean * mean
    u = np.arange(np.sqrt(np.pi / 2.0), u_max, du)
    return np.interp(u, mean, xi)


#: :math:`\xi(u)` on u = sqrt(pi/2) + k * _XI_DU (see :func:`_rician_variance_table`)
_XI_DU = 0.01
_XI_U0 = float(np.sqrt(np.pi / 2.0))
_XI = _rician_variance_table(du=_XI_DU)


def repeated_pairs(bvals: np.ndarray, labels: np.ndarray, b0s_mask: np.ndarray) -> np.ndarray:
    """(n_pairs, 2) volume indices of diffusion-weighted volumes in groups of exactly two
    equivalent volumes (``labels`` from :func:`~.gradients.antipodal_groups`)."""
    dw = ~np.asarray(b0s_mask, bool)
    counts = np.bincount(labels)
    keep = dw & (counts[labels] == 2)
    idx = np.flatnonzero(keep)
    order = idx[np.argsort(labels[idx], kind="stable")]
    return order.reshape(-1, 2) if order.size % 2 == 0 else np.empty((0, 2), np.int64)


def choose_method(n_b0: int, n_pairs: int, b_max: float) -> str:
    """The ``auto`` choice: ``pairs`` with >= :data:`MIN_PAIRS` repeated directions; else, on
    high-b schemes (b_max >= :data:`FLOOR_B_MIN`), ``b0`` with >= :data:`MIN_B0_REPEATS` b0
    volumes or ``residual``; else ``none``.

    Why ``none`` on clinical schemes: on the real multi-shell crops (b <= 3000) the b0
    repeats vary 20-30x more than the thermal noise (an MP-PCA estimate: sigma ~ 0.2 % of
    S0), from drift, motion and pulsation; a floor at that level biased every map (ICVF r
    against AMICO 0.73 instead of 0.97), while at the thermal level the floor changes the
    fit by far less than the noise: it is negligible there, as in the NODDI toolbox."""
    if n_pairs >= MIN_PAIRS:
        return "pairs"
    if b_max < FLOOR_B_MIN:
        return "none"
    if n_b0 >= MIN_B0_REPEATS:
        return "b0"
    return "residual"


def b0_variance(signals: np.ndarray, b0_idx: np.ndarray) -> np.ndarray:
    """Per-row sample variance (``ddof=1``) of the b0 volumes of ``signals`` (n, n_volumes)."""
    b0 = np.asarray(signals[:, b0_idx], dtype=np.float64)
    return np.var(b0, axis=1, ddof=1)


def pair_variance(signals: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    r"""Per-row :math:`\hat\sigma^2 = \sum_i \tfrac12(x_a-x_b)_i^2 / \sum_i
    \xi(\bar x_i / \hat\sigma)` over all pairs (:math:`\bar x_i` the pair's mean,
    :math:`\xi` the Rician variance factor, :func:`_rician_variance_table`: near the floor a
    magnitude varies less than :math:`\sigma^2`, 0.43 :math:`\sigma^2` at A = 0); started
    from the median of :math:`\tfrac12(x_a-x_b)^2` divided by 0.4549 (the median of
    :math:`\chi^2_1`) and refined :data:`PAIR_ITER` times. Using every pair, not only those
    far above the floor, halves the scatter of :math:`\hat\sigma` at SNR 10 on DSI-515
    (RESULTS.md, issue #13). NaN where no pair is finite.

    Compiled (numba), rows in parallel, reading ``signals`` in its own dtype: the
    vectorised NumPy form of the same estimator (a float64 copy of the whole chunk and
    five (n, n_pairs) temporaries) cost as much time as the NODDI fit itself on DSI-515."""
    s = np.asarray(signals)
    if s.dtype not in (np.float32, np.float64):
        s = s.astype(np.float64)
    s = np.ascontiguousarray(s)
    if not s.flags.writeable:  # one compiled specialisation (Dask hands read-only arrays)
        s = s.copy()
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    out = np.empty(s.shape[0])
    if pairs.shape[0] == 0:
        out[:] = np.nan
        return out
    _pair_variance_rows(s, np.ascontiguousarray(pairs[:, 0]),
                        np.ascontiguousarray(pairs[:, 1]), out)
    return out


@njit(cache=True, nogil=True, parallel=True)
def _pair_variance_rows(s, pa, pb, out):
    """:func:`pair_variance` of every row of ``s`` into ``out``."""
    n_pairs = pa.size
    n_rows = s.shape[0]
    block = 256
    for bi in prange((n_rows + block - 1) // block):
        work = np.empty((3, n_pairs))
        for v in range(bi * block, min((bi + 1) * block, n_rows)):
            out[v] = pair_variance_row(s, v, pa, pb, work)
    return out


@njit(cache=True, nogil=True)
def pair_variance_row(s, v, pa, pb, work):
    """:func:`pair_variance` of row ``v`` of ``s`` (``work``: (3, n_pairs) scratch); the
    NODDI fit kernel calls it too, so that an unpooled fit estimates its floor from the row
    it has already read (:func:`microvba.models._noddi_kernels.fit_voxels`)."""
    n_pairs = pa.size
    half_d2, mean, sel = work[0], work[1], work[2]
    total = 0.0
    sum_d2 = 0.0
    for i in range(n_pairs):
        xa = np.float64(s[v, pa[i]])
        xb = np.float64(s[v, pb[i]])
        half_d2[i] = 0.5 * (xa - xb) * (xa - xb)
        mean[i] = 0.5 * (xa + xb)
        sel[i] = half_d2[i]
        total += xa + xb
        sum_d2 += half_d2[i]
    if not np.isfinite(total):  # a NaN or inf in any pair
        return np.nan
    var = _median_inplace(sel) / 0.4549
    n_xi = _XI.size
    for _ in range(PAIR_ITER):
        if not (var > 0.0):
            return np.nan if n_pairs == 0 else var
        inv_du = 1.0 / (np.sqrt(var) * _XI_DU)
        acc = 0.0
        for i in range(n_pairs):  # xi(u) interpolated on its uniform grid, branch-free
            x = min(max((mean[i] * inv_du) - _XI_U0 / _XI_DU, 0.0), n_xi - 1.000001)
            k = np.int64(x)
            acc += _XI[k] + (x - k) * (_XI[k + 1] - _XI[k])
        var = sum_d2 / acc
    return var


@njit(cache=True, nogil=True)
def _select_inplace(a, lo, hi, k):
    """Partially order a[lo:hi + 1] so that a[k] holds its k-th smallest value (Hoare
    quickselect, median-of-three pivot; no allocation)."""
    while hi > lo:
        mid = (lo + hi) // 2
        # median of three to a[mid]
        if a[mid] < a[lo]:
            a[mid], a[lo] = a[lo], a[mid]
        if a[hi] < a[lo]:
            a[hi], a[lo] = a[lo], a[hi]
        if a[hi] < a[mid]:
            a[hi], a[mid] = a[mid], a[hi]
        pivot = a[mid]
        i, j = lo, hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            return


@njit(cache=True, nogil=True)
def _median_inplace(a):
    """Median of the finite values ``a`` (reordered in place), as :func:`numpy.median`:
    the middle value, or the mean of the two middle values for an even count.

    Two pivots from a sorted sample of 15 values bracket the middle ranks; one pass, free of
    unpredictable branches, counts the values below the lower pivot and gathers those
    between the pivots to the front of ``a``; the middle ranks are then selected among
    those few (about a third). If the bracket misses them (rare), a quickselect of all."""
    n = a.size
    k = n // 2
    lo_rank = k - 1 if n % 2 == 0 else k  # the lower middle rank (= k for odd n)
    if n >= 64:
        samp = np.empty(15)
        step = n // 15
        for t in range(15):
            samp[t] = a[t * step]
        for t in range(1, 15):  # insertion sort of the sample
            x = samp[t]
            u = t - 1
            while u >= 0 and samp[u] > x:
                samp[u + 1] = samp[u]
                u -= 1
            samp[u + 1] = x
        plo, phi = samp[4], samp[10]
        below = 0
        m = 0
        for i in range(n):
            x = a[i]
            below += x < plo
            inside = (x >= plo) & (x <= phi)
            # gather in place: a[m] is a value already read (m <= i)
            a[i] = a[m]
            a[m] = x
            m += inside
        if below <= lo_rank and k < below + m:
            mid = a[:m]
            _select_inplace(mid, 0, m - 1, k - below)
            upper = mid[k - below]
            if n % 2 == 1:
                return upper
            if k - 1 >= below:
                lower = mid[0]
                for i in range(1, k - below):
                    lower = max(lower, mid[i])
                return (lower + upper) / 2.0
        # the bracket missed the middle: select among all values (any order is fine)
    _select_inplace(a, 0, n - 1, k)
    upper = a[k]
    if n % 2 == 1:
        return upper
    lower = a[0]
    for i in range(1, k):
        lower = max(lower, a[i])
    return (lower + upper) / 2.0


def pool_variance(var_map: np.ndarray, mask: np.ndarray, radius: int = POOL_RADIUS
                  ) -> np.ndarray:
    """Mean of the finite variances of the mask in a (2 radius + 1)^3 neighbourhood of every
    voxel (a 3-D map; voxels whose neighbourhood holds none keep NaN)."""
    from scipy.ndimage import uniform_filter

    ok = mask & np.isfinite(var_map)
    size = 2 * radius + 1
    total = uniform_filter(np.where(ok, var_map, 0.0), size=size, mode="constant")
    n = uniform_filter(ok.astype(np.float64), size=size, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = np.where(n > 0.5 / size ** 3, total / np.maximum(n, 1e-300), np.nan)
    return np.where(mask, pooled, np.nan)
