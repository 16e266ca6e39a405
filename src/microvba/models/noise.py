r"""Noise level :math:`\sigma` of a DWI series, per voxel, for the NODDI Rician noise floor.

Three estimators, chosen by what the scheme holds (``method="auto"``, :func:`choose_method`):

``b0``
    several b=0 volumes (>= :data:`MIN_B0_REPEATS`): the sample variance of the b0s
    (``ddof=1``). At b = 0 the signal is far above the noise, where the magnitude (Rician)
    variance equals the Gaussian :math:`\sigma^2` (Gudbjartsson & Patz 1995).
``pairs``
    one b0 but repeated diffusion-weighted directions (a full-sphere DSI grid: antipodal
    pairs, same b, direction up to sign): half the mean squared difference of each pair,
    over the pairs whose mean is at least :data:`PAIR_MIN_FRACTION` of the b0 (a Rician
    magnitude closer to the floor has a smaller variance).
``residual``
    neither: the noise variance fitted freely by the NODDI model in each voxel (see
    :func:`microvba.models._noddi_kernels.free_floor`); it also absorbs model misfit, so it
    is the last resort.

In an image (``spatial`` not None) the per-voxel variances are pooled over the voxels of the
mask in a :data:`POOL_RADIUS` neighbourhood (3x3x3: 27 times the degrees of freedom of one
voxel), so that :math:`\sigma` follows slow spatial changes (coil sensitivity, bias field)
without the scatter of a 6-b0 estimate (about 30 % per voxel).

References
----------
Gudbjartsson H, Patz S (1995) The Rician distribution of noisy MRI data. Magn Reson Med
34:910-914.
"""

from __future__ import annotations

import numpy as np

#: ``auto`` uses a floor only on schemes reaching this b-value (s/mm^2), where the
#: high-b signal sits near the noise floor
FLOOR_B_MIN = 4000.0
#: fewest b0 volumes for the ``b0`` estimator
MIN_B0_REPEATS = 3
#: fewest usable pairs of repeated diffusion-weighted directions for ``pairs``
MIN_PAIRS = 10
#: pairs whose mean is below this many sigma are not used (Rician variance < sigma^2)
PAIR_MIN_SNR = 3.0
#: neighbourhood radius (voxels) of the spatial pooling
POOL_RADIUS = 1
METHODS = ("auto", "b0", "pairs", "residual", "none")


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
    r"""Per-row :math:`\hat\sigma^2 = \tfrac12\langle(x_a-x_b)^2\rangle` over the pairs whose
    mean is at least :data:`PAIR_MIN_SNR` times :math:`\hat\sigma` (there the Rician
    variance is within a few % of :math:`\sigma^2`); started from the median of
    :math:`\tfrac12(x_a-x_b)^2` over all pairs divided by 0.4549 (the median of
    :math:`\chi^2_1`) and refined twice. NaN where no pair qualifies."""
    s = np.asarray(signals, dtype=np.float64)
    xa, xb = s[:, pairs[:, 0]], s[:, pairs[:, 1]]
    half_d2 = 0.5 * (xa - xb) ** 2
    mean = 0.5 * (xa + xb)
    var = np.median(half_d2, axis=1) / 0.4549
    with np.errstate(invalid="ignore", divide="ignore"):
        for _ in range(2):
            use = mean >= PAIR_MIN_SNR * np.sqrt(var)[:, None]
            n = use.sum(axis=1)
            var = np.where(n > 0, np.sum(np.where(use, half_d2, 0.0), axis=1) / n, np.nan)
    return var


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
