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
    minp_p,
    npc_tables,
    perm_p,
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


def brute_force_minp(M, obs, groups, tail=False, joint=False):
    """Family-wise p of every voxel, straight from the definition (Westfall & Young).

    With ``tail`` the maps' p-values come from :func:`perm_p` (checked against scipy's
    generalised Pareto in ``test_tail_p_values``), the rest is the definition."""
    n_img, n_sign, n_stat, N = M.shape

    def pfun(null, xs):
        if tail:  # one fit per map, shared by every value
            return perm_p(null, np.asarray(xs), tail=True)
        return np.array([np.mean(null >= x) for x in xs])

    p = np.array([[[pfun(M[m, s, k], M[m, s, k]) for k in range(n_stat)]
                   for s in range(n_sign)] for m in range(n_img)])
    out = {}
    for group in groups:
        minp = np.min([p[m, s] for m, s in group], axis=0)  # (n_stat, N)
        if joint:  # every statistic of every map of the group in one family
            minp = np.broadcast_to(minp.min(axis=0), minp.shape)
        for m, s in group:
            for k in range(n_stat):
                p_map = pfun(M[m, s, k], obs[m, s][k])
                out[m, s, k] = np.array([np.mean(minp[k] <= q * (1 + 1e-9)) for q in p_map])
    return out


@pytest.fixture(scope="module")
def brute_force_case():
    """A tiny problem and its brute-force maxima (computed once for the module)."""
    Ys, X, mask = tiny_problem(np.random.default_rng(7))
    n_perm = 720  # 6! : exhaustive, so the rearrangements are known
    return Ys, X, mask, n_perm, brute_force_maxima(Ys, X, mask, n_perm)


@pytest.mark.parametrize(("across", "method", "joint"), [
    ("all", "minp", False), ("metrics", "minp", False), ("signs", "minp", False),
    ("all", "minp-tail", False), ("all", "minp-tail", True), ("metrics", "minp", True)])
def test_minp_equals_brute_force(brute_force_case, across, method, joint):
    Ys, X, mask, n_perm, (M, obs) = brute_force_case
    M, obs = M.copy(), dict(obs)
    res = randomise_family(Ys, X, C, mask, n_perm=n_perm, cluster_threshold=None,
                           family_method=method, correct_across=across, n_jobs=1,
                           family_statistics=("vox", "tfce") if joint else ())
    assert res["m0"].params["exhaustive"] and res["m0"].params["n_perm"] == n_perm
    for m, name in enumerate(Ys):
        for s in range(2):
            np.testing.assert_allclose(res[name].null_max[f"vox_tstat{s + 1}"], M[m, s, 0],
                                       rtol=1e-3, atol=1e-4)  # float32 kernel
    # the brute force on the product's own maxima (float32 kernels: ties at 1e-6 apart)
    for m, name in enumerate(Ys):
        for s in range(2):
            M[m, s, 0] = res[name].null_max[f"vox_tstat{s + 1}"]
            M[m, s, 1] = res[name].null_max[f"tfce_tstat{s + 1}"]
            # ... and its observed maps (equal to the lstsq ones to rounding, but a voxel at
            # the map's maximum must compare equal to the null's entry 0)
            t_obs, tf_obs = obs[m, s]
            np.testing.assert_allclose(res[name].maps[f"tstat{s + 1}"], t_obs, rtol=1e-8,
                                       atol=1e-10)
            np.testing.assert_allclose(res[name].maps[f"tfce_tstat{s + 1}"], tf_obs,
                                       rtol=1e-8, atol=1e-10)
            obs[m, s] = (res[name].maps[f"tstat{s + 1}"], res[name].maps[f"tfce_tstat{s + 1}"])
    expected = brute_force_minp(M, obs, Family(across).groups(len(Ys), 2),
                                tail=method == "minp-tail", joint=joint)
    for m, name in enumerate(Ys):
        for s in range(2):
            for k, stat in enumerate(("vox", "tfce")):
                got = 1.0 - res[name].maps[f"{stat}_famcorrp_tstat{s + 1}"]
                np.testing.assert_allclose(got, expected[m, s, k], atol=1e-12,
                                           err_msg=f"{name} {stat} sign {s}")
                if method == "minp-tail":
                    continue
                # never below the per-map p (the family is larger)
                assert np.all(got >= 1.0 - res[name].maps[f"{stat}_corrp_tstat{s + 1}"] - 1e-12)
            union = res[name].maps.get(f"tfcevox_famcorrp_tstat{s + 1}")
            if not joint:
                assert union is None
                continue
            np.testing.assert_allclose(1.0 - union, np.minimum(expected[m, s, 0],
                                                               expected[m, s, 1]), atol=1e-12)
    if joint:
        assert res["m0"].params["family_statistics"] == ["tfce", "vox"]


def test_joint_statistics_validation():
    Ys, X, mask = tiny_problem(np.random.default_rng(1), n=8, shape=(3, 3, 3), n_img=2)
    for kwargs in ({"family_statistics": ("tfce", "voxel")},
                   {"family_statistics": ("tfce", "vox"), "family_method": "max"},
                   {"family_statistics": ("tfce", "vox"), "tfce": False},
                   {"family_statistics": ("clustere", "vox"), "cluster_threshold": None}):
        kw = {"family_method": "minp", "cluster_threshold": None, **kwargs}
        with pytest.raises(InputError, match="family_statistics"):
            randomise_family(Ys, X, C, mask, n_perm=10, n_jobs=1, **kw)


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
    minp = minp_null(null, Family.ALL.groups(2, 1))
    crit = np.quantile(minp[0, 0, 0], 0.05)  # 5% family critical p
    p_own = np.stack([(null[m, 0, 0][None, :] >= null[m, 0, 0][:, None]).mean(1)
                      for m in range(2)])
    rates = (p_own <= crit).mean(axis=1)
    assert abs(rates[0] - rates[1]) < 1e-9 and 0.02 < rates[0] < 0.035
    fam_max = null.max(axis=(0, 1, 2))
    crit_max = np.quantile(fam_max, 0.95)
    max_rates = (null[:, 0, 0] > crit_max).mean(axis=1)
    assert max_rates[0] == 0.0 and max_rates[1] > 0.04


def test_tail_p_values(rng):
    """Tail p-values: scipy's generalised Pareto above the 90th percentile, ranks below."""
    N = 500
    null = rng.gumbel(10.0, 2.0, N)
    x = np.linspace(0, 30, 200)
    p = perm_p(null, x, tail=True)
    u = np.sort(null)[N - 50 - 1]
    exc = null[null > u] - u
    xi, _, scale = stats.genpareto.fit(exc, floc=0)
    above = x > u
    np.testing.assert_allclose(p[above], 50 / N * stats.genpareto.sf(x[above] - u, xi, 0, scale),
                               rtol=1e-6)
    np.testing.assert_array_equal(p[~above], perm_p(null, x[~above]))
    assert np.all(np.diff(p) <= 1e-15)  # monotone
    # beyond the permutations: close to the true Gumbel tail, not stuck at 1/N (with 5,000
    # maxima, i.e. 500 exceedances; with 50 the fit is valid but much less precise)
    big = rng.gumbel(10.0, 2.0, 5000)
    q = stats.gumbel_r.isf([0.01, 0.001, 1e-5], 10.0, 2.0)
    ratio = perm_p(big, q[:2], tail=True) / np.array([0.01, 0.001])
    assert np.all((ratio > 0.4) & (ratio < 2.5)), ratio
    assert perm_p(big, q[-1:])[0] == 0.0 and 0 < perm_p(big, q[-1:], tail=True)[0] < 1e-4
    # too few distinct values in the tail (e.g. many zero cluster maxima): the ranks
    ties = np.r_[np.zeros(480), np.arange(20.0)]
    np.testing.assert_array_equal(perm_p(ties, x, tail=True), perm_p(ties, x))


def test_minp_tail_reaches_the_level_ranks_cannot_fast():
    """Fast sibling of the slow test below: one null experiment of 14 exchangeable maps and
    200 permutations, every permutation taken in turn as the observed data (all are
    exchangeable with it). Rank min-p rejects none of them: each map's own maximum has p = 1/200,
    so the family minimum is 1/200 at every permutation holding some map's maximum (13-14
    of the 200) and no family p can fall below 0.05. Tail min-p is free of these ties: it rejects about 5% of them, and each
    rejection is a map's largest values."""
    rng = np.random.default_rng(3)
    F, N = 14, 200
    null = rng.gumbel(5.0, 1.0, (F, 1, 1, N))
    for tail in (False, True):
        fam = minp_null(null, Family.ALL.groups(F, 1), tail=tail)
        p = np.array([minp_p(null[m, 0, 0], null[m, 0, 0], fam[m, 0, 0], tail)
                      for m in range(F)])  # (F, N): every entry as the observed value
        rejected = (p < 0.05).any(axis=0)
        if not tail:
            assert not rejected.any()
            assert p.min() >= 0.05
        else:
            assert 0.02 <= rejected.mean() <= 0.05, rejected.mean()
            for m in range(F):  # monotone in the statistic: only a map's top values
                sig = p[m] < 0.05
                if sig.any():
                    assert null[m, 0, 0][sig].min() > np.quantile(null[m, 0, 0], 0.9)


@pytest.mark.slow
def test_minp_tail_reaches_the_level_ranks_cannot():
    """14 exchangeable maps, 200 permutations: rank min-p can never reject (floor(0.05 x 200
    / 14) = 0) while tail min-p rejects in about 5% of null experiments (300 independent
    experiments; about 3 min: ``-m slow``)."""
    rng = np.random.default_rng(3)
    F, N, reps = 14, 200, 300
    hits = {False: 0, True: 0}
    for _ in range(reps):
        null = rng.gumbel(5.0, 1.0, (F, 1, 1, N))  # entry 0 (observed) exchangeable
        for tail in (False, True):
            fam = minp_null(null, Family.ALL.groups(F, 1), tail=tail)
            p = min(minp_p(null[m, 0, 0, :1], null[m, 0, 0], fam[m, 0, 0], tail)[0]
                    for m in range(F))
            hits[tail] += p < 0.05
    assert hits[False] == 0
    assert 0.02 < hits[True] / reps < 0.09, hits


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
