"""NODDI noise floor per voxel, S0 handling, failed voxels and reproducibility (issue #13;
issue #14 point 7)."""

from __future__ import annotations

import numpy as np
import pytest

from microvba._validation import InputError
from microvba.models.noddi import NoddiModel, noddi_signal
from microvba.models.noise import choose_method


def _truth(rng, n):
    mu = rng.normal(size=(n, 3))
    return (rng.uniform(0.3, 0.8, n), rng.uniform(0.05, 0.6, n), rng.uniform(0.0, 0.3, n),
            mu / np.linalg.norm(mu, axis=1, keepdims=True))


def _rician(clean, sigma, rng):
    sigma = np.asarray(sigma)[..., None]
    return np.sqrt((clean + sigma * rng.normal(size=clean.shape)) ** 2
                   + (sigma * rng.normal(size=clean.shape)) ** 2)


def _image(gtab, rng, shape=(12, 12, 6), snr=20.0):
    """An image with S0 varying 0.3-3x smoothly across voxels and a constant per-voxel SNR:
    sigma = S0 / snr differs tenfold across the image (a single floor cannot fit it)."""
    n = int(np.prod(shape))
    icvf, odi, iso, mu = _truth(rng, n)
    x = np.linspace(0, 1, shape[0])[:, None, None]
    s0 = (0.3 * 10.0 ** x * np.ones(shape)).ravel() * 1000.0
    clean = s0[:, None] * noddi_signal(gtab.bvals, gtab.bvecs, icvf, odi, iso, mu)
    sigma = s0 / snr
    data = _rician(clean, sigma, rng).reshape(shape + (-1,)).astype(np.float32)
    return data, sigma.reshape(shape), (icvf, odi, iso)


@pytest.mark.parametrize("scheme,method", [("three_shell", "b0"), ("dsi515", "pairs")])
def test_sigma_recovered_within_10_percent(scheme, method, request, rng):
    """The per-voxel sigma (pooled 3x3x3 in the mask) recovers a known, spatially varying
    sigma within 10 % (b0 repeats on the 3-shell scheme, antipodal pairs on DSI-515)."""
    gtab = request.getfixturevalue(scheme)
    data, sigma, _ = _image(gtab, rng, shape=(16, 8, 5))
    model = NoddiModel(gtab, noise=method)
    est = np.sqrt(model.noise_variance(data.reshape(-1, gtab.n_volumes))).reshape(sigma.shape)
    from microvba.models.noise import pool_variance

    pooled = np.sqrt(pool_variance(est ** 2, np.ones(sigma.shape, bool)))
    # interior voxels: the pooled estimate of a sigma varying along x follows it within 10 %
    ratio = (pooled / sigma)[1:-1, 1:-1, 1:-1]
    assert abs(np.median(ratio) - 1) < 0.05
    assert np.quantile(np.abs(ratio - 1), 0.9) < 0.10


def test_auto_choices(three_shell, dsi515):
    assert choose_method(6, 0, 3000.0) == "none"      # clinical multi-shell: toolbox-like
    assert choose_method(1, 257, 4000.0) == "pairs"   # full-sphere DSI
    assert choose_method(5, 0, 7000.0) == "b0"
    assert choose_method(1, 0, 7000.0) == "residual"  # half-sphere DSI, one b0
    assert NoddiModel(three_shell).s0_mode == "fixed"  # several b0s: the toolbox's choice
    assert NoddiModel(dsi515).s0_mode == "fixed"       # one b0: fixed too (simulations)
    assert NoddiModel(dsi515, s0="fit").s0_mode == "fit"
    tb = NoddiModel(dsi515, compat="toolbox")
    assert (tb.s0_mode, tb.noise_method) == ("fixed", "none")
    for kw, match in ((dict(s0="free"), "'s0' parameter"), (dict(noise="mad"), "'noise'"),
                      (dict(compat="amico"), "'compat'")):
        with pytest.raises(InputError, match=match):
            NoddiModel(three_shell, **kw)
    with pytest.raises(InputError, match="noise='b0' needs at least two b0"):
        NoddiModel(dsi515, noise="b0")
    with pytest.raises(InputError, match="noise='pairs' needs repeated"):
        NoddiModel(three_shell, noise="pairs")


@pytest.mark.parametrize("s0,noise", [("fixed", "b0"), ("fit", "b0"), ("fixed", "none"),
                                      ("fit", "residual")])
def test_s0_scaling_leaves_fit_unchanged(three_shell, rng, s0, noise):
    """Scaling a voxel's signal by any factor leaves ICVF, ODI and ISOVF unchanged (the
    floor is in the voxel's own units)."""
    icvf, odi, iso, mu = _truth(rng, 40)
    clean = noddi_signal(three_shell.bvals, three_shell.bvecs, icvf, odi, iso, mu)
    data = _rician(1000.0 * clean, np.full(40, 50.0), rng)
    model = NoddiModel(three_shell, s0=s0, noise=noise)
    base = model.fit(data)
    for factor in (0.37, 2.0, 7.3, 1234.5):
        scaled = model.fit(data * factor)
        for k in ("icvf", "odi", "isovf"):
            np.testing.assert_allclose(getattr(scaled, k), getattr(base, k), rtol=0, atol=1e-6,
                                       err_msg=f"{k} x{factor}")
        np.testing.assert_allclose(scaled.sigma, base.sigma * factor, rtol=1e-4)


def test_fixed_s0_is_mean_b0(three_shell, rng):
    icvf, odi, iso, mu = _truth(rng, 30)
    clean = noddi_signal(three_shell.bvals, three_shell.bvecs, icvf, odi, iso, mu)
    data = _rician(800.0 * clean, np.full(30, 20.0), rng)
    fit = NoddiModel(three_shell, compat="toolbox").fit(data)
    np.testing.assert_allclose(fit.s0, data[:, three_shell.b0s_mask].mean(axis=1), rtol=1e-6)
    free = NoddiModel(three_shell, s0="fit", noise="none").fit(data)
    assert not np.allclose(free.s0, fit.s0, rtol=1e-4)


def test_failed_voxels_are_nan(three_shell, rng):
    icvf, odi, iso, mu = _truth(rng, 4)
    data = 500.0 * noddi_signal(three_shell.bvals, three_shell.bvecs, icvf, odi, iso, mu)
    data[1] = 0.0                                   # all zero
    data[2, three_shell.b0s_mask] = -1.0            # b0 <= 0
    fit = NoddiModel(three_shell).fit(data)
    assert np.isnan(fit.icvf[1:3]).all() and np.isnan(fit.odi[1:3]).all()
    assert np.isfinite(fit.icvf[[0, 3]]).all()
    assert fit.status.tolist() == [1, 3, 3, 1] and fit.n_failed == 2


def test_independent_of_threads_and_chunks(dsi515, rng):
    """Issue #14 point 7: each voxel's result depends on its own signal only: 1 and 2 numba
    threads, and different chunkings, give bit-identical parameters and directions."""
    import numba

    data, _, _ = _image(dsi515, rng, shape=(9, 7, 5))
    mask = np.ones(data.shape[:3], bool)
    mask[0, 0] = False
    model = NoddiModel(dsi515)
    before = numba.get_num_threads()
    try:
        results = []
        for threads, chunk in ((1, 20_000), (min(2, numba.config.NUMBA_NUM_THREADS), 20_000),
                               (1, 37), (min(2, numba.config.NUMBA_NUM_THREADS), 64)):
            numba.set_num_threads(threads)
            results.append(model.fit(data, mask, chunk_size=chunk))
    finally:
        numba.set_num_threads(before)
    for other in results[1:]:
        assert np.array_equal(other.params, results[0].params, equal_nan=True)
        assert np.array_equal(other.sigma, results[0].sigma, equal_nan=True)
    # a voxel fitted alone (a block of one) gives the same bits as inside the image
    v = (4, 3, 2)
    alone = model.fit_voxels(data[v][None], sigma=results[0].sigma[v][None])
    assert np.array_equal(alone[0], results[0].params[v])
    # the Fortran-ordered array nibabel returns is read in slabs: same maps
    fortran = model.fit(np.asfortranarray(data), mask, chunk_size=50)
    assert np.array_equal(fortran.params, results[0].params, equal_nan=True)


def _pair_variance_numpy(signals, pairs):
    """The pairs estimator in vectorised NumPy (float64), with the Rician variance factor
    computed here from scipy's Bessel functions on a dense grid of theta (not the kernel's
    table): the reference for the compiled one."""
    from scipy.special import i0e, i1e

    from microvba.models.noise import PAIR_ITER

    theta = np.linspace(0.0, 200.0, 800001)
    x = theta ** 2 / 4.0
    mean_t = np.sqrt(np.pi / 2.0) * ((1.0 + 2.0 * x) * i0e(x) + 2.0 * x * i1e(x))
    xi_t = 2.0 + theta ** 2 - mean_t ** 2
    s = np.asarray(signals, dtype=np.float64)
    xa, xb = s[:, pairs[:, 0]], s[:, pairs[:, 1]]
    half_d2 = 0.5 * (xa - xb) ** 2
    mean = 0.5 * (xa + xb)
    var = np.median(half_d2, axis=1) / 0.4549
    with np.errstate(invalid="ignore", divide="ignore"):
        for _ in range(PAIR_ITER):
            u = mean / np.sqrt(var)[:, None]
            xi = np.interp(u, mean_t, xi_t, right=1.0)
            var = half_d2.sum(axis=1) / xi.sum(axis=1)
    return var


def test_median_matches_numpy(rng):
    from microvba.models.noise import _median_inplace

    for n in (1, 2, 3, 4, 5, 10, 11, 63, 64, 65, 256, 257, 1000):
        for t in range(40):
            kind = t % 4
            x = (rng.normal(size=n), rng.integers(0, 4, n).astype(float),
                 np.sort(rng.chisquare(1, n)), np.sort(rng.normal(size=n))[::-1].copy())[kind]
            assert _median_inplace(x.copy()) == np.median(x), (n, kind)
    # the sampled pivots miss the middle ranks (every sampled position holds a top value):
    # the fallback selection over all values
    x = np.arange(257.0)
    x[::257 // 15] += 1000.0
    assert _median_inplace(x.copy()) == np.median(x)


def test_compiled_pairs_and_fused_fit_equal_the_two_pass_fit(dsi515, rng):
    """The compiled pairs estimator equals the NumPy formula (to 1e-4: the kernel
    tabulates the Rician variance factor on a grid of E[M]/sigma), and the fit that estimates
    each row's variance in its own pass (unpooled rows) gives the maps of the two-pass fit
    (variance first, then the fit with that sigma) to 1e-6: the only difference is the
    sigma -> variance round trip of the two-pass route (about one ulp)."""
    data, _, _ = _image(dsi515, rng, shape=(10, 6, 4))
    rows = data.reshape(-1, dsi515.n_volumes)
    rows[3] = np.nan                      # a row without an estimate
    rows[5, ::7] = rows[5, 1::7][: rows[5, ::7].size]  # broken pairs in another
    model = NoddiModel(dsi515)
    assert model.noise_method == "pairs"
    ref = _pair_variance_numpy(rows, model._pairs)
    from microvba.models.noise import pair_variance

    np.testing.assert_allclose(pair_variance(rows, model._pairs), ref, rtol=1e-4)
    assert np.isnan(ref[3])
    fused = model.fit(rows)
    var = pair_variance(rows, model._pairs)
    two_pass = model.fit_voxels(rows, sigma=np.sqrt(np.nan_to_num(var)))
    np.testing.assert_allclose(fused.sigma, np.sqrt(np.nan_to_num(var)), rtol=1e-12)
    for col in range(9):
        np.testing.assert_allclose(fused.params[:, col], two_pass[:, col], rtol=0, atol=1e-6,
                                   equal_nan=True)
    assert np.isnan(fused.params[3]).all() and np.isfinite(fused.params[[0, 5]]).all()


def _half_sphere(gtab):
    from microvba.models.gradients import GradientTable, antipodal_groups

    keep = np.sort(np.unique(antipodal_groups(gtab.bvals, gtab.bvecs), return_index=True)[1])
    return GradientTable(gtab.bvals[keep], gtab.bvecs[keep])


@pytest.mark.parametrize("half,snr", [(False, 10.0), (True, 20.0), (True, 50.0)])
def test_unpooled_sigma_precise_per_voxel(dsi515, rng, half, snr):
    """Without spatial pooling, one voxel's sigma (pairs on the full DSI-515 sphere at SNR
    10, where most pairs sit near the floor; fit residuals on the half sphere at SNR 20 and
    50, where the floor parameter alone is barely determined) is unbiased within 5 % and
    scatters by less than 10 % between voxels (the earlier estimators: +-15 % for pairs
    at SNR 10, +-26 % and +-61 % for the fitted floor)."""
    gtab = _half_sphere(dsi515) if half else dsi515
    n = 120
    icvf, odi, iso, mu = _truth(rng, n)
    s0 = 1000.0 * np.exp(rng.uniform(np.log(0.3), np.log(3.0), n))
    clean = s0[:, None] * noddi_signal(gtab.bvals, gtab.bvecs, icvf, odi, iso, mu)
    data = _rician(clean, s0 / snr, rng).astype(np.float32)
    model = NoddiModel(gtab)
    assert model.noise_method == ("residual" if half else "pairs")
    ratio = np.sqrt(model.noise_variance(data)) / (s0 / snr)
    assert abs(np.median(ratio) - 1.0) < 0.05
    assert np.std(ratio) < 0.10


def test_low_snr_voxels_iterate_to_convergence(dsi515, rng, monkeypatch):
    """Voxels with sigma/S0 > 1/LOW_SNR take extra Levenberg-Marquardt iterations (until
    the residual falls by < 0.1 %): their objective is then within 0.1 % of three full
    iterations'; voxels above that SNR keep the single iteration (their maps differ from
    the three-iteration fit's)."""
    from microvba.models import noddi
    from microvba.models._noddi_kernels import LOW_SNR, LOW_SNR_ITER

    assert noddi.N_DIR_ITER < LOW_SNR_ITER
    icvf, odi, iso, mu = _truth(rng, 60)
    clean = 1000.0 * noddi_signal(dsi515.bvals, dsi515.bvecs, icvf, odi, iso, mu)
    snr = np.where(np.arange(60) < 30, 10.0, 60.0)
    data = _rician(clean, 1000.0 / snr, rng).astype(np.float32)
    model = NoddiModel(dsi515)
    sigma = 1000.0 / snr  # given, so that both fits use the same floor
    low = sigma / 1000.0 > 1.0 / LOW_SNR
    gated = model.fit_voxels(data, sigma=sigma)
    # an iteration count at or above LOW_SNR_ITER switches the gate off: every voxel runs
    # exactly that many iterations (no early stop)
    monkeypatch.setattr(noddi, "N_DIR_ITER", LOW_SNR_ITER)
    full = model.fit_voxels(data, sigma=sigma)
    nrmse = 4  # OUT_NRMSE
    assert np.all(gated[low, nrmse] <= full[low, nrmse] * (1 + 1e-3))
    assert np.any(np.abs(gated[~low, :3] - full[~low, :3]) > 1e-6)
