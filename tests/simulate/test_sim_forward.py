"""The simulator's fast NODDI forward model against the exact one, and the true tensors."""

import numpy as np
import pytest

from microvba.models.noddi import noddi_signal
from microvba.simulate.forward import (
    NoddiSimulator,
    add_rician_noise,
    excess_tensor,
    fit_tensor,
    tensor_metrics,
    tensor_scalars,
)
from microvba.simulate.schemes import gradient_scheme


@pytest.fixture(scope="module")
def dsi():
    return gradient_scheme("dsi515")


def _voxels(rng, n, odi_min=0.08):
    return (rng.uniform(0.05, 0.95, n), rng.uniform(odi_min, 0.98, n),
            rng.uniform(0.0, 0.6, n), rng.normal(size=(n, 3)))


@pytest.mark.parametrize("d_par", [1.1e-3, 1.7e-3])
def test_quadrature_matches_exact_noddi(dsi, rng, d_par):
    bvals, bvecs = dsi
    icvf, odi, isovf, mu = _voxels(rng, 40)
    fast = NoddiSimulator(bvals, bvecs).signal(icvf, odi, isovf, mu, d_par=d_par)
    exact = noddi_signal(bvals, bvecs, icvf, odi, isovf, mu, d_par=d_par)
    err = np.abs(fast - exact)
    # largest at b = 4000 and low dispersion; far below the noise (sigma = 1/30 .. 1/85)
    assert err.max() < 2.5e-3
    assert err.mean() < 2e-4


def test_voxelwise_d_par_groups_equal_separate_calls(dsi, rng):
    bvals, bvecs = dsi
    icvf, odi, isovf, mu = _voxels(rng, 40)
    d_par = np.where(np.arange(40) % 2 == 0, 1.1e-3, 1.7e-3)
    sim = NoddiSimulator(bvals, bvecs)
    mixed = sim.signal(icvf, odi, isovf, mu, d_par=d_par)
    for d in (1.1e-3, 1.7e-3):
        sel = d_par == d
        np.testing.assert_allclose(mixed[sel], sim.signal(icvf[sel], odi[sel], isovf[sel],
                                                          mu[sel], d_par=d), atol=1e-6)


def test_excess_tensor_adds_exactly_to_the_fitted_tensor(dsi, rng):
    bvals, bvecs = dsi
    icvf, odi, isovf, mu = _voxels(rng, 30)
    sim = NoddiSimulator(bvals, bvecs)
    d_a, d_r, d_p = (rng.uniform(-5e-5, 5e-5, 30) for _ in range(3))
    base = fit_tensor(sim.signal(icvf, odi, isovf, mu), bvals, bvecs)
    moved = fit_tensor(sim.signal(icvf, odi, isovf, mu, delta_axial=d_a, delta_radial=d_r,
                                  delta_planar=d_p), bvals, bvecs)
    np.testing.assert_allclose(moved - base, excess_tensor(mu, d_a, d_r, d_p), atol=2e-8)


def test_planar_split_changes_fa_only():
    mu = np.array([[0.0, 0.0, 1.0], [0.6, 0.8, 0.0]])
    axial = excess_tensor(mu, 1.0e-3, 0.7e-3)  # axially symmetric tensors
    split = axial + excess_tensor(mu, 0.0, 0.0, 0.1e-3)
    a, s = tensor_scalars(axial), tensor_scalars(split)
    for m in ("ad", "rd", "md"):
        np.testing.assert_allclose(s[m], a[m], rtol=1e-12)
    assert np.all(s["fa"] > a["fa"])


def test_true_tensor_matches_dipy_ols(dsi, rng):
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import TensorModel

    bvals, bvecs = dsi
    icvf, odi, isovf, mu = _voxels(rng, 25)
    signal = NoddiSimulator(bvals, bvecs).signal(icvf, odi, isovf, mu)
    keep = bvals <= 1750
    gtab = gradient_table(bvals[keep], bvecs=bvecs[keep])
    fit = TensorModel(gtab, fit_method="OLS").fit(signal[:, keep].astype(np.float64))
    ours = tensor_metrics(signal, bvals, bvecs, bmax=1750)
    np.testing.assert_allclose(ours["fa"], fit.fa, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours["md"], fit.md, rtol=1e-6)
    np.testing.assert_allclose(ours["ad"], fit.ad, rtol=1e-6)
    np.testing.assert_allclose(ours["rd"], fit.rd, rtol=1e-6)


def test_rician_noise_floor(rng):
    sigma = 2.0
    zero = add_rician_noise(np.zeros(200_000), sigma, rng)
    assert zero.mean() == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.01)  # Rayleigh
    high = add_rician_noise(np.full(200_000, 100.0), sigma, rng)
    assert high.std() == pytest.approx(sigma, rel=0.02)


def test_demo_signals_fit_back_to_their_parameters(rng):
    """The demo's signals (pure NODDI, one d_par) are what the fitter's model expects."""
    from microvba.models import NoddiModel
    from microvba.models.gradients import GradientTable
    from microvba.simulate.microstructure import GREY, WHITE

    assert GREY.d_par == WHITE.d_par == 1.1e-3  # the demo fits with tissue="gm"
    bvals, bvecs = gradient_scheme("dsi515-half")
    n = 400
    icvf, odi, isovf = rng.uniform(0.3, 0.55, n), rng.uniform(0.4, 0.7, n), rng.uniform(0, .1, n)
    mu = rng.normal(size=(n, 3))
    signal = NoddiSimulator(bvals, bvecs).signal(icvf, odi, isovf, mu, d_par=GREY.d_par)
    fit = NoddiModel(GradientTable(bvals, bvecs), d_par=GREY.d_par).fit(signal)
    np.testing.assert_allclose(fit.icvf, icvf, atol=5e-3)
    np.testing.assert_allclose(fit.odi, odi, atol=1e-2)
    np.testing.assert_allclose(fit.isovf, isovf, atol=5e-3)


def test_planted_tensor_mechanisms():
    from microvba.simulate.effects import tensor_effect

    mu = np.array([[0.0, 0.0, 1.0], [0.6, 0.8, 0.0]])
    base = excess_tensor(mu, 0.9e-3, 0.8e-3)  # a nearly isotropic cortical tensor
    a0 = tensor_scalars(base)
    fa = tensor_scalars(base + 1e-5 * excess_tensor(mu, *tensor_effect(mu, "fa")))
    np.testing.assert_allclose(fa["md"], a0["md"], rtol=1e-12)  # MD unchanged
    assert np.all(fa["fa"] > a0["fa"] + 1e-3)  # first order, even near isotropy
    ad = tensor_scalars(base + 1e-5 * excess_tensor(mu, *tensor_effect(mu, "ad")))
    np.testing.assert_allclose(ad["ad"] - a0["ad"], 1e-5, rtol=1e-9)
    with pytest.raises(ValueError, match="no tensor mechanism"):
        tensor_effect(mu, "md")


def test_signal_independent_of_blas_threads(dsi, rng):
    """A seeded cohort must not depend on the BLAS thread count of the process simulating it
    (serial run vs worker processes): OpenBLAS's multi-threaded sgemm rounds differently."""
    from threadpoolctl import threadpool_limits

    sim = NoddiSimulator(*dsi)
    args = _voxels(rng, 3000)
    with threadpool_limits(limits=1, user_api="blas"):
        one = sim.signal(*args)
    with threadpool_limits(limits=2, user_api="blas"):
        two = sim.signal(*args)
    np.testing.assert_array_equal(one, two)
