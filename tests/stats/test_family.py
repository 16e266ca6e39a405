"""Family-wise correction across maps (Westfall-Young min-p) and NPC, against brute force."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage, stats

from microvba._validation import InputError
from microvba.stats import randomise_family, tfce
from microvba.stats.family import (
    Correction,
    Family,
    combine,
    combine_reference,
    minp_null,
    npc_tables,
)
from microvba.stats.glm import enumerate_rearrangements

C = np.array([0, 1.0, 0])


def tiny_problem(rng, n=6, shape=(4, 4, 3), n_img=3):
    mask = np.ones(shape, bool)
    mask[0, 0, 0] = False
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.normal(size=n)])
    Ys = {}
    for m in range(n_img):
        vols = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), 0.7 + 0.5 * m)
                         for _ in range(n)])
        Ys[f"m{m}"] = vols[:, mask] * (1 + 10 * m)  # different scales and smoothness
    return Ys, X, mask


def brute_force_t(Y, X, perm):
    """t of the score in [X] refitted on y* = P e_Z + H_Z y (Freedman-Lane), by lstsq."""
    Z = X[:, [0, 2]]
    bz = np.linalg.lstsq(Z, Y, rcond=None)[0]
    fitted, e = Z @ bz, Y - Z @ bz
    Ystar = e[perm] + fitted
    beta, *_ = np.linalg.lstsq(X, Ystar, rcond=None)
    res = Ystar - X @ beta
    df = X.shape[0] - X.shape[1]
    var = (res ** 2).sum(0) / df
    cov = np.linalg.inv(X.T @ X)[1, 1]
    return beta[1] / np.sqrt(var * cov)


def brute_force_maxima(Ys, X, mask, n_perm):
    """(n_img, 2, 2, N): per image and sign, max t and max TFCE of every rearrangement."""
    perms, _ = enumerate_rearrangements(0, n_perm, X.shape[0], False, None)
    out = np.zeros((len(Ys), 2, 2, n_perm))
    obs = {}
    for m, Y in enumerate(Ys.values()):
        for j in range(n_perm):
            t = brute_force_t(Y, X, perms[j])
            for s, sign in enumerate((1, -1)):
                vol = np.zeros(mask.shape)
                vol[mask] = sign * t
                tf = tfce(vol)[mask]
                out[m, s, 0, j] = max(0.0, (sign * t).max())
                out[m, s, 1, j] = tf.max()
                if j == 0:
                    obs[m, s] = (sign * t, tf)
    return out, obs


def brute_force_minp(M, obs, groups):
    """Family-wise p of every voxel, straight from the definition (Westfall & Young)."""
    n_img, n_sign, n_stat, N = M.shape
    p = np.array([[[[np.mean(M[m, s, k] >= M[m, s, k, j]) for j in range(N)]
                    for k in range(n_stat)] for s in range(n_sign)] for m in range(n_img)])
    out = {}
    for group in groups:
        minp = np.min([p[m, s] for m, s in group], axis=0)  # (n_stat, N)
        for m, s in group:
            for k in range(n_stat):
                p_map = np.array([np.mean(M[m, s, k] >= x) for x in obs[m, s][k]])
                out[m, s, k] = np.array([np.mean(minp[k] <= q) for q in p_map])
    return out


@pytest.mark.parametrize("across", ["all", "metrics", "signs"])
def test_minp_equals_brute_force(rng, across):
    Ys, X, mask = tiny_problem(rng)
    n_perm = 720  # 6! : exhaustive, so the rearrangements are known
    res = randomise_family(Ys, X, C, mask, n_perm=n_perm, cluster_threshold=None,
                           family_method="minp", correct_across=across, n_jobs=1)
    assert res["m0"].params["exhaustive"] and res["m0"].params["n_perm"] == n_perm
    M, obs = brute_force_maxima(Ys, X, mask, n_perm)
    for m, name in enumerate(Ys):
        for s in range(2):
            np.testing.assert_allclose(res[name].null_max[f"vox_tstat{s + 1}"], M[m, s, 0],
                                       rtol=1e-3, atol=1e-4)  # float32 kernel
    # the brute force on the product's own maxima (float32 kernels: ties at 1e-6 apart)
    for m, name in enumerate(Ys):
        for s in range(2):
            M[m, s, 0] = res[name].null_max[f"vox_tstat{s + 1}"]
            M[m, s, 1] = res[name].null_max[f"tfce_tstat{s + 1}"]
    expected = brute_force_minp(M, obs, Family(across).groups(len(Ys), 2))
    for m, name in enumerate(Ys):
        for s in range(2):
            for k, stat in enumerate(("vox", "tfce")):
                got = 1.0 - res[name].maps[f"{stat}_famcorrp_tstat{s + 1}"]
                np.testing.assert_allclose(got, expected[m, s, k], atol=1e-12,
                                           err_msg=f"{name} {stat} sign {s}")
                # never below the per-map p (the family is larger)
                assert np.all(got >= 1.0 - res[name].maps[f"{stat}_corrp_tstat{s + 1}"] - 1e-12)


def test_family_none_is_per_map_fwe(rng):
    Ys, X, mask = tiny_problem(rng, n=10, shape=(6, 6, 4))
    res = randomise_family(Ys, X, C, mask, n_perm=200, cluster_threshold=1.5,
                           family_method="minp", correct_across="none", n_jobs=1)
    for r in res.values():
        for stat in ("vox", "tfce", "clustere", "clusterm"):
            for k in (1, 2):
                np.testing.assert_allclose(r.maps[f"{stat}_famcorrp_tstat{k}"],
                                           r.maps[f"{stat}_corrp_tstat{k}"], atol=1e-12)


def test_minp_is_balanced_where_max_is_not(rng):
    """Two maps whose maxima differ in scale: min-p rejects each equally often, max does not."""
    N = 2000
    null = np.zeros((2, 1, 1, N))
    null[0, 0, 0] = rng.gumbel(3.0, 0.3, N)
    null[1, 0, 0] = rng.gumbel(300.0, 80.0, N)  # e.g. a smoother metric's TFCE
    counts = minp_null(null, Family.ALL.groups(2, 1))
    crit = np.quantile(counts[0, 0, 0] / N, 0.05)  # 5% family critical p
    p_own = np.stack([(null[m, 0, 0][None, :] >= null[m, 0, 0][:, None]).mean(1)
                      for m in range(2)])
    rates = (p_own <= crit).mean(axis=1)
    assert abs(rates[0] - rates[1]) < 1e-9 and 0.02 < rates[0] < 0.035
    fam_max = null.max(axis=(0, 1, 2))
    crit_max = np.quantile(fam_max, 0.95)
    max_rates = (null[:, 0, 0] > crit_max).mean(axis=1)
    assert max_rates[0] == 0.0 and max_rates[1] > 0.04


def test_settings_validation():
    assert Family.parse(True) is Family.ALL and Family.parse(False) is Family.NONE
    assert Family.parse("Metrics") is Family.METRICS
    assert Correction().across is Family.ALL and Correction().npc == ()
    assert Correction("signs", "fisher,Tippett").npc == ("fisher", "tippett")
    with pytest.raises(InputError, match="--correct-across"):
        Correction("everything")
    with pytest.raises(InputError, match="--npc"):
        Correction(npc=("stouffer",))
    with pytest.raises(InputError, match="family_method"):
        randomise_family({"a": np.zeros((5, 1))}, np.ones((5, 1)), np.ones(1),
                         np.ones((1, 1, 1), bool), family_method="bonferroni")


def test_npc_combination_matches_scipy(rng):
    t = rng.standard_normal((4, 3000)) * 3
    tab = npc_tables(20)
    for f in ("fisher", "tippett"):
        ref = combine_reference(t, f, 20)
        got = combine(t, f, tab)
        ok = (ref > -1) & (ref < 8)  # the grid region; outside it only monotonicity matters
        np.testing.assert_allclose(got[ok], ref[ok], atol=2e-3)
        order = np.argsort(ref)
        assert np.all(np.diff(got[order][ok[order]]) >= -2e-3)


def test_npc_p_values_uniform_under_the_null(rng):
    """Independent voxels, three correlated metrics, no effect: NPC voxel p ~ U(0, 1).

    The metrics share a component, so Fisher's parametric chi-square is not valid (it assumes
    independent partial tests) and its p-values are too small; the permutation p-values of
    the combined statistic are uniform (Kolmogorov-Smirnov).
    """
    n, shape = 30, (12, 12, 10)
    mask = np.ones(shape, bool)
    V = int(mask.sum())
    shared = rng.standard_normal((n, V))
    Ys = {m: 0.8 * shared + 0.6 * rng.standard_normal((n, V)) for m in ("fa", "md", "icvf")}
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.normal(size=n)])
    res = randomise_family(Ys, X, C, mask, n_perm=400, cluster_threshold=None, tfce=False,
                           npc=("fisher", "tippett"), n_jobs=1, seed=5)
    for f in ("fisher", "tippett"):
        p = 1.0 - res[f"npc_{f}"].maps["vox_p_tstat1"]
        # randomised p (Pesarin): continuous, exactly uniform under the null
        pr = np.clip(p - rng.uniform(0, 1.0 / 400, p.size), 0, 1)
        assert stats.kstest(pr, "uniform").pvalue > 0.01, f
        assert abs(np.mean(p < 0.05) - 0.05) < 0.02
    z = res["npc_fisher"].maps["tstat1"]
    p_param = stats.norm.sf(z)
    assert np.mean(p_param < 0.05) > 0.08  # the parametric combination would be invalid here


def test_npc_detects_a_shared_weak_effect(rng):
    """An effect spread over three metrics, each too weak alone: NPC finds it."""
    n, shape = 40, (10, 10, 8)
    mask = np.ones(shape, bool)
    score = rng.normal(size=n)
    X = np.column_stack([np.ones(n), score, rng.normal(size=n)])
    prof = np.zeros(shape)
    prof[3:7, 3:7, 2:6] = 1.0
    Ys = {}
    for m in ("fa", "md", "icvf"):
        vols = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), 1.0)
                         for _ in range(n)])
        vols /= vols.std()
        Ys[m] = (vols + 0.25 * (-1 if m == "md" else 1) * score[:, None, None, None] * prof
                 )[:, mask]
    res = randomise_family(Ys, X, C, mask, n_perm=300, cluster_threshold=None,
                           npc=("fisher",), n_jobs=1, seed=1)
    sig = res["npc_fisher"].maps["tfce_corrp_tstat1"] > 0.95
    inside = prof[mask] > 0
    assert sig[inside].mean() > 0.5 and not sig[~inside].any()
    assert res["npc_fisher"].params["npc"] == "fisher"


def test_npc_needs_two_images(rng):
    Ys, X, mask = tiny_problem(rng, n=8, n_img=1)
    with pytest.raises(InputError, match="two images"):
        randomise_family(Ys, X, C, mask, n_perm=20, npc=("fisher",))
