"""NODDI posterior means at the bounds in low-SNR voxels (issue #13, point 4).

The estimator (``NoddiModel(bound_mean=True)``, the default) replaces, in voxels with a noise
floor above S0 / LOW_SNR, each bounded parameter's clipped least-squares value by the mean
of the Laplace (Gaussian) likelihood times a uniform prior on its range: a truncated-normal
mean. Checked here against scipy (closed form and numerical integration), for its limits
and monotonicity, and on simulated low-SNR voxels against the planted truth."""

from __future__ import annotations

import numpy as np
import pytest

from microvba.models._noddi_kernels import LOW_SNR, truncated_normal_mean
from microvba.models.noddi import NoddiModel, kappa_to_odi, noddi_signal


def _numerical_posterior_mean(mu, sd, lo, hi):
    """E[x] under a N(mu, sd^2) likelihood times a uniform prior on [lo, hi], by quadrature
    (scipy.integrate.quad on the unnormalised density, shifted by its maximum on the
    range so that far-outside centres do not underflow)."""
    from scipy.integrate import quad

    top = min(max(mu, lo), hi)

    def dens(x):
        return np.exp(-0.5 * ((x - mu) ** 2 - (top - mu) ** 2) / sd ** 2)

    pts = [top]
    z = quad(dens, lo, hi, points=pts, epsabs=0, epsrel=1e-12, limit=200)[0]
    m1 = quad(lambda x: x * dens(x), lo, hi, points=pts, epsabs=0, epsrel=1e-12,
              limit=200)[0]
    return m1 / z


@pytest.mark.parametrize("mu,sd", [(0.3, 0.1), (-0.05, 0.08), (-0.4, 0.05), (1.2, 0.3),
                                   (0.5, 5.0), (0.02, 0.2), (-2.0, 0.07), (0.98, 0.01)])
def test_truncated_mean_equals_numerical_posterior_mean(mu, sd):
    """The closed form equals the posterior mean integrated numerically and scipy's
    truncated-normal mean, inside, near and far outside the range."""
    from scipy.stats import truncnorm

    ours = truncated_normal_mean(mu, sd, 0.0, 1.0)
    assert ours == pytest.approx(_numerical_posterior_mean(mu, sd, 0.0, 1.0), abs=1e-9)
    ref = truncnorm.mean((0.0 - mu) / sd, (1.0 - mu) / sd, loc=mu, scale=sd)
    if np.isfinite(ref):
        assert ours == pytest.approx(ref, abs=1e-7)


def test_truncated_mean_limits_and_monotone():
    """Equals the centre where the sd is tiny beside the distance to the bounds, the
    clipped value without an sd, the midpoint for a flat likelihood; strictly increasing
    in the centre (so it keeps the ranking that clipping at a bound throws away) and
    inside the open range."""
    for mu in (0.2, 0.5, 0.9):
        assert truncated_normal_mean(mu, 1e-6, 0.0, 1.0) == pytest.approx(mu, abs=1e-12)
    assert truncated_normal_mean(-0.3, 0.0, 0.0, 1.0) == 0.0
    assert truncated_normal_mean(1.3, 0.0, 0.0, 1.0) == 1.0
    assert truncated_normal_mean(0.1, 1e4, 0.0, 1.0) == pytest.approx(0.5, abs=1e-6)
    centres = np.linspace(-3.0, 4.0, 2001)
    for sd in (0.01, 0.05, 0.2, 1.0):
        e = np.array([truncated_normal_mean(m, sd, 0.0, 1.0) for m in centres])
        assert np.all(np.diff(e) > 0), sd
        assert np.all((e > 0.0) & (e < 1.0)), sd
    # far outside (beyond the 30-sd tail expansion) it stays continuous and inside
    assert 0.0 < truncated_normal_mean(-31.0, 1.0, 0.0, 1.0) < \
        truncated_normal_mean(-29.0, 1.0, 0.0, 1.0)
    assert truncated_normal_mean(-29.999, 1.0, 0.0, 1.0) == pytest.approx(
        truncated_normal_mean(-30.001, 1.0, 0.0, 1.0), rel=1e-3)


def _low_snr_cell(gtab, rng, n, snr):
    """White-matter-like voxels (ICVF 0.45-0.85, ODI 0.02-0.3, ISOVF 0-0.2) with S0 0.3-3x
    and Rician noise at the given per-voxel SNR."""
    icvf = rng.uniform(0.45, 0.85, n)
    odi = rng.uniform(0.02, 0.3, n)
    iso = rng.uniform(0.0, 0.2, n)
    mu = rng.normal(size=(n, 3))
    mu /= np.linalg.norm(mu, axis=1, keepdims=True)
    s0 = 1000.0 * np.exp(rng.uniform(np.log(0.3), np.log(3.0), n))
    clean = s0[:, None] * noddi_signal(gtab.bvals, gtab.bvecs, icvf, odi, iso, mu)
    sigma = s0 / snr
    noisy = np.sqrt((clean + sigma[:, None] * rng.normal(size=clean.shape)) ** 2
                    + (sigma[:, None] * rng.normal(size=clean.shape)) ** 2)
    return noisy.astype(np.float32), sigma, (icvf, odi, iso)


def test_low_snr_isovf_ranking_restored(dsi515):
    """On simulated DSI-515 voxels at SNR 10 (sigma given), the clipped least-squares ISOVF
    sits on its bound 0 in many voxels; the posterior means leave none there, raise the
    correlation of ISOVF with the truth and lower its MAE; ICVF and ODI do not get worse
    (r and MAE). With bound_mean=False the fit is the clipped least-squares one."""
    rng = np.random.default_rng(1313)
    data, sigma, (icvf, odi, iso) = _low_snr_cell(dsi515, rng, 600, 10.0)
    new = NoddiModel(dsi515, bound_mean=True).fit_voxels(data, sigma=sigma)
    old = NoddiModel(dsi515, bound_mean=False).fit_voxels(data, sigma=sigma)

    def r(a, b):
        return np.corrcoef(a, b)[0, 1]

    def mae(a, b):
        return np.mean(np.abs(a - b))

    assert np.mean(old[:, 1] == 0.0) > 0.10
    assert np.mean(new[:, 1] == 0.0) == 0.0
    assert r(new[:, 1], iso) > r(old[:, 1], iso) + 0.02
    assert mae(new[:, 1], iso) < mae(old[:, 1], iso)
    for est_new, est_old, truth in ((new[:, 0], old[:, 0], icvf),
                                    (kappa_to_odi(new[:, 2]), kappa_to_odi(old[:, 2]), odi)):
        assert r(est_new, truth) > r(est_old, truth) - 0.005
        assert mae(est_new, truth) < mae(est_old, truth) + 0.002
    # directions, S0 and the residual are those of the least-squares fit
    np.testing.assert_array_equal(new[:, 4:], old[:, 4:])


def test_gate_leaves_other_voxels_bit_identical(dsi515, three_shell):
    """Only voxels with a floor above S0 / LOW_SNR and S0 fixed change: voxels well above
    that SNR, fits without a floor, free S0 and the toolbox preset are bit-identical with the
    estimator on or off; the sidecar says which estimator ran."""
    rng = np.random.default_rng(7)
    data, sigma, _ = _low_snr_cell(dsi515, rng, 80, 10.0)
    # the gate reads the measured b0 (sigma / mean b0 > 1 / LOW_SNR): at twice that SNR
    # no voxel's b0 is noisy enough to cross it
    hi_data, hi_sigma, _ = _low_snr_cell(dsi515, rng, 80, 2.0 * LOW_SNR)
    on, off = NoddiModel(dsi515), NoddiModel(dsi515, bound_mean=False)
    assert on.bound_mean and not off.bound_mean
    np.testing.assert_array_equal(on.fit_voxels(hi_data, sigma=hi_sigma),
                                  off.fit_voxels(hi_data, sigma=hi_sigma))
    np.testing.assert_array_equal(on.fit_voxels(data, floor=0.0),
                                  off.fit_voxels(data, floor=0.0))
    assert not np.array_equal(on.fit_voxels(data, sigma=sigma),
                              off.fit_voxels(data, sigma=sigma))
    free_on, free_off = NoddiModel(dsi515, s0="fit"), NoddiModel(dsi515, s0="fit",
                                                                 bound_mean=False)
    np.testing.assert_array_equal(free_on.fit_voxels(data, sigma=sigma),
                                  free_off.fit_voxels(data, sigma=sigma))
    # the clinical default (no floor) and the toolbox preset never use it
    three = _low_snr_cell(three_shell, rng, 40, 10.0)[0]
    default = NoddiModel(three_shell)
    assert default.noise_method == "none"
    np.testing.assert_array_equal(default.fit(three).params,
                                  NoddiModel(three_shell, bound_mean=False).fit(three).params)
    toolbox = NoddiModel(dsi515, compat="toolbox")
    assert not toolbox.bound_mean
    assert "least squares" in toolbox.parameters()["bounded_estimates"]
    assert "posterior mean at bounds" in on.parameters()["bounded_estimates"]
