"""The GLM and Freedman-Lane: t maps against statsmodels and nilearn, permutation schemes."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm

from microvba._validation import InputError
from microvba.stats._kernels import freedman_lane_t
from microvba.stats.glm import (
    check_blocks,
    draw_rearrangements,
    freedman_lane,
    n_possible,
    projection_weights,
)


@pytest.fixture
def data(rng):
    n, V = 30, 40
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.normal(50, 10, size=n),
                         rng.integers(0, 2, n)])
    Y = rng.normal(size=(n, V)) + 0.3 * X[:, [1]] + 0.02 * X[:, [2]]
    return X, Y


def test_t_equals_statsmodels(data):
    X, Y = data
    fl = freedman_lane(X, np.array([0, 1.0, 0, 0]))
    t = fl.t_stat(fl.residualise(Y))
    ref = np.array([sm.OLS(Y[:, v], X).fit().tvalues[1] for v in range(Y.shape[1])])
    assert np.abs(t - ref).max() <= 1e-6
    assert fl.df == X.shape[0] - X.shape[1] and not fl.sign_flip


def test_general_contrast_equals_statsmodels(data):
    X, Y = data
    c = np.array([0, 1.0, -0.5, 2.0])
    fl = freedman_lane(X, c)
    t = fl.t_stat(fl.residualise(Y))
    ref = np.array([sm.OLS(Y[:, v], X).fit().t_test(c).tvalue.item() for v in range(5)])
    np.testing.assert_allclose(t[:5], ref, rtol=1e-8)


def test_t_equals_nilearn_permuted_ols(data):
    from nilearn.mass_univariate import permuted_ols

    X, Y = data
    fl = freedman_lane(X, np.array([0, 1.0, 0, 0]))
    t = fl.t_stat(fl.residualise(Y))
    out = permuted_ols(X[:, [1]], Y, confounding_vars=X[:, 2:], model_intercept=True,
                       n_perm=0, verbose=0, output_type="dict")
    assert np.abs(t - out["t"][0]).max() <= 1e-6


def test_permuted_t_is_freedman_lane_refit(data, rng):
    """The fused kernel equals refitting OLS on Y* = P R_Z Y + H_Z Y."""
    X, Y = data
    fl = freedman_lane(X, np.array([0, 1.0, 0, 0]))
    e = fl.residualise(Y)
    Z = X[:, [0, 2, 3]]
    fitted = Z @ np.linalg.lstsq(Z, Y, rcond=None)[0]
    perm, signs = draw_rearrangements(rng, X.shape[0], 3, False, None)
    Ws = np.stack([projection_weights(fl.basis, perm[i], signs[i]) for i in range(3)])
    ee = np.einsum("ij,ij->j", e.astype(np.float32).astype(float), e.astype(np.float32))
    out = np.empty((3, Y.shape[1]))
    freedman_lane_t(Ws.astype(np.float32), e.astype(np.float32), ee, float(fl.df), out)
    for i in range(3):
        Ystar = e[perm[i]] + fitted
        ref = np.array([sm.OLS(Ystar[:, v], X).fit().tvalues[1] for v in range(Y.shape[1])])
        np.testing.assert_allclose(out[i], ref, rtol=2e-4, atol=2e-4)


def test_one_sample_uses_sign_flips(rng):
    n = 15
    fl = freedman_lane(np.ones((n, 1)), np.array([1.0]))
    assert fl.sign_flip and fl.df == n - 1
    Y = rng.normal(0.5, 1, size=(n, 6))
    t = fl.t_stat(fl.residualise(Y))
    ref = Y.mean(0) / (Y.std(0, ddof=1) / np.sqrt(n))
    np.testing.assert_allclose(t, ref, rtol=1e-10)
    perm, signs = draw_rearrangements(rng, n, 5, True, None)
    assert np.all(perm == np.arange(n)) and set(np.unique(signs)) == {-1.0, 1.0}
    assert n_possible(n, True, None) == 2.0 ** n


def test_blocks_permute_within(rng):
    blocks = check_blocks(np.array(["a"] * 5 + ["b"] * 7), 12)
    perm, signs = draw_rearrangements(rng, 12, 50, False, blocks)
    assert np.all(signs == 1)
    assert np.all(perm[:, :5] < 5) and np.all(perm[:, 5:] >= 5)
    assert np.all(np.sort(perm, axis=1) == np.arange(12))
    assert len({tuple(p) for p in perm}) > 40
    assert n_possible(12, False, blocks) == 120.0 * 5040.0
    with pytest.raises(InputError, match="one label per subject"):
        check_blocks(np.zeros(5), 12)


def test_glm_errors(data):
    X, _ = data
    with pytest.raises(InputError, match="4 design columns"):
        freedman_lane(X, np.array([0, 1.0]))
    with pytest.raises(InputError, match="all zeros"):
        freedman_lane(X, np.zeros(4))


def test_constant_voxels_get_t_zero_in_observed_and_permuted(data):
    """A voxel equal in every subject has no residual: t must be exactly 0, not rounding."""
    X, Y = data
    Y = Y.copy()
    Y[:, 3] = 0.7317  # constant
    Y[:, 5] = 123.456  # constant, large
    c = np.zeros(X.shape[1])
    c[1] = 1
    fl = freedman_lane(X, c)
    e = fl.residualise(Y)
    t = fl.t_stat(e)
    assert t[3] == 0.0 and t[5] == 0.0 and np.all(t[[0, 1, 2, 4]] != 0)
    from microvba.stats.permutation import randomise

    mask = np.ones((Y.shape[1], 1, 1), bool)
    res = randomise(Y.astype(np.float32), X, c, mask, n_perm=20, tfce=False,
                    cluster_threshold=None, n_jobs=1)
    assert res.maps["tstat1"][3] == 0.0 and res.maps["vox_p_tstat1"][3] == 0.0  # 1 - p
