"""Small simulated cohorts with one planted regional effect of known partial r.

Shared by the tests and ``benchmarks/bench_circularity.py``. Model, for subject i and voxel v:

.. math:: Y_{iv} = a\\, z_i\\, 1[v \\in R] + e_{iv} + \\beta\\, \\mathrm{age}_i, \\qquad
          s_i = \\rho\\, z_i + \\sqrt{1 - \\rho^2}\\, u_i + \\gamma\\, \\mathrm{age}_i,

with :math:`z, u` standard normal, :math:`e_i` white noise smoothed by a Gaussian of
``smooth_vox`` voxels (periodic boundary) and scaled to unit variance per voxel. The planted
partial correlation (given age) of the true region mean :math:`\\bar Y_{iR}` with the score is

.. math:: r_R = \\frac{\\rho\\, a}{\\sqrt{a^2 + \\sigma_R^2}}, \\qquad
          \\sigma_R^2 = \\operatorname{Var}(\\bar e_{iR}) = \\lVert L 1_R \\rVert^2 / |R|^2,

where :math:`L` is the (symmetric, circulant) smoothing operator normalised to unit voxel
variance; :math:`\\rho` is solved from the requested :math:`r_R`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass
class RegionCohort:
    Y: np.ndarray          # (n, n_voxels) in mask order (C order of the full grid)
    score: np.ndarray      # (n,)
    age: np.ndarray        # (n,) covariate
    mask: np.ndarray       # 3-D bool (all voxels)
    region: np.ndarray     # 3-D bool, the planted region
    planted_r: float       # population partial r of the region mean with the score
    affine: np.ndarray


def _smooth(w: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(w, sigma, mode="wrap") if sigma > 0 else w


def region_noise_variance(shape, region: np.ndarray, sigma: float) -> float:
    """Variance of the region mean of unit-variance smoothed noise (exact, periodic)."""
    delta = np.zeros(shape)
    delta[tuple(s // 2 for s in shape)] = 1.0
    voxel_var = float(np.sum(_smooth(delta, sigma) ** 2))
    lr = _smooth(region.astype(float), sigma)
    return float(np.sum(lr ** 2) / region.sum() ** 2 / voxel_var)


def simulate_region_cohort(n: int = 64, *, planted_r: float = 0.45, shape=(18, 18, 18),
                           region_size: int = 5, amplitude: float = 1.0,
                           smooth_vox: float = 1.0, seed: int = 0) -> RegionCohort:
    """Cohort with one cubic region whose mean correlates with the score at ``planted_r``."""
    rng = np.random.default_rng(seed)
    region = np.zeros(shape, dtype=bool)
    lo = [s // 2 - region_size // 2 for s in shape]
    region[tuple(slice(a, a + region_size) for a in lo)] = True
    var_r = region_noise_variance(shape, region, smooth_vox)
    rho = planted_r * np.sqrt(amplitude ** 2 + var_r) / amplitude
    if not abs(rho) < 1:
        raise ValueError(f"planted_r={planted_r} is not reachable with amplitude={amplitude}")
    z, u = rng.standard_normal(n), rng.standard_normal(n)
    age = rng.normal(40.0, 10.0, n)
    score = rho * z + np.sqrt(1 - rho ** 2) * u + 0.02 * (age - 40.0)
    delta = np.zeros(shape)
    delta[tuple(s // 2 for s in shape)] = 1.0
    norm = np.sqrt(np.sum(_smooth(delta, smooth_vox) ** 2))
    Y = np.empty((n, int(np.prod(shape))))
    for i in range(n):
        e = _smooth(rng.standard_normal(shape), smooth_vox) / norm
        Y[i] = (amplitude * z[i] * region + e + 0.01 * (age[i] - 40.0)).ravel()
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    return RegionCohort(Y, score, age, np.ones(shape, dtype=bool), region, float(planted_r),
                        affine)
