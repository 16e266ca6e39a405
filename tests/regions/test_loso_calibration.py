"""Calibration of the leave-one-subject-out r's p-value and CI (permutation null).

The analytic t-test p / Fisher CI of the held-out means do not hold their level on null
cohorts (the fold clusters depend on the other held-out subjects); the permutation null of
the whole leave-one-out does. Small grids and few permutations keep these fast; the full
figures are ``benchmarks/bench_circularity.py`` (RESULTS.md, *LOSO calibration*).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.stats import norm

from microvba._validation import InputError
from microvba.regions.clusters import structure
from microvba.regions.correlation import (
    _Components,
    _FoldMaps,
    loso_inference,
    loso_r,
    partial_corr,
    permuted_scores,
)
from microvba.simulate.region_cohort import simulate_region_cohort

ALPHA = 0.05


def _null_runs(n_cohorts: int = 40, n: int = 24, n_perm: int = 19):
    rows = []
    for seed in range(n_cohorts):
        c = simulate_region_cohort(n=n, planted_r=0.0, amplitude=2.0, seed=seed,
                                   shape=(10, 10, 10), region_size=4)
        perm = loso_r(c.Y, c.score, c.age[:, None], mask_img=c.mask, n_perm=n_perm, seed=seed)
        fisher = loso_r(c.Y, c.score, c.age[:, None], mask_img=c.mask)
        assert perm["r"] == fisher["r"] or np.isnan(perm["r"])  # same estimate
        rows.append((perm["r"], perm["p"], perm["ci_low"], perm["ci_high"], fisher["p"],
                     fisher["ci_low"], fisher["ci_high"]))
    a = np.array(rows, float)
    return a[np.isfinite(a[:, 0])]


def test_permutation_p_holds_its_level_on_null_cohorts():
    """No effect anywhere: the permutation p rejects at about 5 %, the analytic p at ~30 %.

    40 null cohorts (n = 24, 10^3 grid), 19 permutations (p <= 0.05 is then an exact 5 %
    test). Binomial(40, 0.05) exceeds 6 rejections with probability 0.004; the seeds are
    fixed, so the test is deterministic.
    """
    a = _null_runs()
    k = len(a)
    assert k >= 35
    perm_rate, fisher_rate = np.mean(a[:, 1] <= ALPHA), np.mean(a[:, 4] <= ALPHA)
    assert perm_rate <= ALPHA + 2.5 * np.sqrt(ALPHA * (1 - ALPHA) / k)
    assert fisher_rate > 0.2  # the old output: anti-conservative
    # the estimate stays non-circular: mean LOSO r about 0 (its null SD is ~0.35 here)
    assert abs(a[:, 0].mean()) < 2.5 * 0.35 / np.sqrt(k)
    # the interval covers the null exactly when the test accepts; Fisher's does not
    perm_cover = (a[:, 2] <= 0) & (0 <= a[:, 3])
    assert np.array_equal(perm_cover, a[:, 1] > ALPHA) and perm_cover.mean() >= 0.85
    assert np.mean((a[:, 5] <= 0) & (0 <= a[:, 6])) < 0.8


def test_planted_effect_recovered_with_permutation_inference():
    """r = 0.6 planted: same LOSO r as before (within sampling error of the truth), the
    smallest possible permutation p, and the Fisher CI, which covers the planted r."""
    for seed in range(4):
        c = simulate_region_cohort(n=48, planted_r=0.6, amplitude=2.0, seed=seed,
                                   shape=(14, 14, 14))
        res = loso_r(c.Y, c.score, c.age[:, None], mask_img=c.mask, n_perm=19, seed=seed)
        oracle = partial_corr(c.Y[:, c.region.ravel()].mean(1), c.score, c.age, n_boot=0)
        assert abs(res["r"] - oracle["r"]) < 0.15  # sampling SD of r at n = 48: ~0.09
        assert res["p"] == pytest.approx(1 / 20) and res["n_perm"] == 19
        assert res["ci_low"] < 0.6 < res["ci_high"]
        # rejected (p <= 0.05): the Fisher interval, as for an established effect
        fisher = np.tanh(np.arctanh(res["r"]) + np.array([-1, 1]) * norm.ppf(0.975) / np.sqrt(44))
        assert [res["ci_low"], res["ci_high"]] == pytest.approx(fisher, abs=1e-12)


def test_permuted_scores_are_freedman_lane(rng):
    n = 30
    c = rng.normal(size=(n, 2))
    s = c @ [1.0, -0.5] + rng.normal(size=n)
    perms = permuted_scores(s, c, 5, seed=3)
    z = np.column_stack([np.ones(n), c])
    fit = z @ np.linalg.lstsq(z, s, rcond=None)[0]
    for p in perms:  # fitted part kept, residuals permuted
        assert np.allclose(np.sort(p - fit), np.sort(s - fit))
        assert not np.allclose(p, s)
    assert np.array_equal(perms, permuted_scores(s, c, 5, seed=3))
    plain = permuted_scores(s, np.empty((n, 0)), 3, seed=1)
    assert all(np.allclose(np.sort(p), np.sort(s)) for p in plain)


def test_fold_maps_equal_direct_partial_r_after_a_new_score(rng):
    """The down-dated fold map is the partial r of the other n - 1 subjects, also once a
    permuted score is swapped in (the score-free part is cached)."""
    n, v = 20, 40
    Y = rng.normal(size=(n, v)) + rng.normal(size=(1, v))
    cov = rng.normal(size=(n, 2))
    s = rng.normal(size=n)
    maps = _FoldMaps(Y, s, cov)
    maps.cache_folds = True
    for score in (s, rng.permutation(s)):
        maps.set_score(score)
        for i in (0, 7):
            keep = np.delete(np.arange(n), i)
            ref = [partial_corr(Y[keep, j], score[keep], cov[keep], n_boot=0)["r"]
                   for j in range(v)]
            assert np.allclose(maps.r_map(held_out=i), ref, atol=1e-10)
        ref = [partial_corr(Y[:, j], score, cov, n_boot=0)["r"] for j in range(v)]
        assert np.allclose(maps.r_map(), ref, atol=1e-10)


@pytest.mark.parametrize("connectivity", [6, 18, 26])
def test_components_equal_ndimage_label(rng, connectivity):
    for _ in range(3):
        mask = ndimage.gaussian_filter(rng.standard_normal((15, 17, 13)), 1) > -0.3
        r = np.tanh(ndimage.gaussian_filter(rng.standard_normal(mask.shape), 1)[mask])
        comp = _Components(mask, 1, 0.05, 30, connectivity)
        got = comp.ranked(r)
        t = r * np.sqrt(30 / (1 - r * r))
        vol = np.zeros(mask.shape, bool)
        vol[mask] = t > comp.t_crit
        lab = ndimage.label(vol, structure=structure(connectivity))[0][mask]
        mass = np.bincount(lab, weights=t)[1:]
        rank = np.zeros(lab.max() + 1, int)
        rank[1 + np.argsort(-mass, kind="stable")] = np.arange(1, lab.max() + 1)
        assert lab.max() > 1 and np.array_equal(got, rank[lab])


def test_loso_inference_without_permutations_is_the_analytic_one(rng):
    x, y = rng.normal(size=30), rng.normal(size=30)
    out = loso_inference(x, y)
    ref = partial_corr(x, y, n_boot=0)
    assert out["p"] == pytest.approx(ref["p"]) and out["ci_low"] == pytest.approx(ref["ci_low"])
    assert out["n_perm"] == 0 and np.isnan(out["null_sd_z"])


def test_bad_n_perm():
    c = simulate_region_cohort(n=12, planted_r=0.0, seed=0, shape=(6, 6, 6), region_size=2)
    with pytest.raises(InputError, match="n_perm"):
        loso_r(c.Y, c.score, mask_img=c.mask, n_perm=-1)
    with pytest.raises(InputError, match="define_cluster"):
        loso_r(c.Y, c.score, define_cluster=lambda idx: np.arange(c.Y.shape[1]) < 5, n_perm=9)
