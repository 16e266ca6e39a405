"""Partial correlations against pingouin, FDR, cluster means and the leave-one-out r."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from microvba._validation import InputError
from microvba.regions.correlation import (
    IN_SAMPLE_NOTE,
    cluster_means,
    fdr_bh,
    fisher_ci,
    loso_r,
    partial_corr,
    residualise,
)
from microvba.simulate.region_cohort import simulate_region_cohort


@pytest.fixture
def cohort(rng) -> pd.DataFrame:
    n = 64
    df = pd.DataFrame({"age": rng.normal(40, 10, n), "edu": rng.integers(8, 20, n) * 1.0,
                       "hamd": rng.normal(20, 5, n), "u": rng.normal(size=n)})
    df["metric"] = 0.001 + 1e-5 * df["age"] + 2e-5 * rng.normal(size=n)  # tiny scale, like MD
    df["score"] = 3e4 * df["metric"] + 0.05 * df["hamd"] + rng.normal(size=n)
    return df


@pytest.mark.parametrize("method", ["pearson", "spearman"])
@pytest.mark.parametrize("covar", [["age"], ["age", "edu", "hamd"], ["age", "edu", "hamd", "u"]])
def test_partial_corr_equals_pingouin(cohort, method, covar):
    pg = pytest.importorskip("pingouin")
    ref = pg.partial_corr(cohort, x="metric", y="score", covar=covar, method=method)
    res = partial_corr(cohort["metric"], cohort["score"], cohort[covar], method=method,
                       n_boot=0)
    assert res["n"] == ref["n"].iloc[0] == 64 and res["k"] == len(covar)
    assert abs(res["r"] - ref["r"].iloc[0]) < 1e-8
    assert abs(res["p"] - ref["p_val"].iloc[0]) < 1e-8
    lo, hi = pg.compute_esci(stat=res["r"], nx=64 - len(covar), ny=64 - len(covar),
                             eftype="r", decimals=10)
    assert res["ci_low"] == pytest.approx(lo, abs=1e-9)
    assert res["ci_high"] == pytest.approx(hi, abs=1e-9)


def test_no_covariates_equal_scipy(cohort):
    for method, fn in (("pearson", stats.pearsonr), ("spearman", stats.spearmanr)):
        res = partial_corr(cohort["metric"], cohort["score"], None, method=method, n_boot=0)
        r, p = fn(cohort["metric"], cohort["score"])
        assert res["r"] == pytest.approx(r, abs=1e-12) and res["p"] == pytest.approx(p, rel=1e-9)


def test_missing_rows_dropped_like_pingouin(cohort):
    pg = pytest.importorskip("pingouin")
    df = cohort.copy()
    df.loc[[3, 10], "score"] = np.nan
    df.loc[5, "age"] = np.nan
    ref = pg.partial_corr(df, x="metric", y="score", covar=["age", "edu"])
    res = partial_corr(df["metric"], df["score"], df[["age", "edu"]], n_boot=0)
    assert res["n"] == 61 and abs(res["r"] - ref["r"].iloc[0]) < 1e-8


def test_categorical_covariate_dummy_coded(cohort, rng):
    df = cohort.copy()
    df["sex"] = rng.choice(["F", "M"], len(df))
    res = partial_corr(df["metric"], df["score"], df[["age", "sex"]], n_boot=0)
    manual = partial_corr(df["metric"], df["score"],
                          np.column_stack([df["age"], df["sex"] == "M"]), n_boot=0)
    assert res["k"] == 2 and res["r"] == pytest.approx(manual["r"], abs=1e-12)


def test_bootstrap_ci_seeded_and_sensible(cohort):
    a = partial_corr(cohort["metric"], cohort["score"], cohort[["age"]], n_boot=1000, seed=3)
    b = partial_corr(cohort["metric"], cohort["score"], cohort[["age"]], n_boot=1000, seed=3)
    assert a["boot_ci_low"] == b["boot_ci_low"] and a["boot_ci_high"] == b["boot_ci_high"]
    assert a["boot_ci_low"] < a["r"] < a["boot_ci_high"]
    # close to the Fisher interval for a well-behaved sample
    assert abs(a["boot_ci_low"] - a["ci_low"]) < 0.1 and abs(a["boot_ci_high"] - a["ci_high"]) < 0.1
    s = partial_corr(cohort["metric"], cohort["score"], cohort[["age"]], "spearman", n_boot=500)
    assert s["boot_ci_low"] < s["r"] < s["boot_ci_high"]


def test_fisher_ci_width_uses_n_minus_k_minus_3():
    lo, hi = fisher_ci(0.0, 28, 5)
    assert hi == pytest.approx(np.tanh(1.959963984540054 / np.sqrt(20)), rel=1e-12)
    assert lo == -hi


def test_fdr_equals_statsmodels():
    smm = pytest.importorskip("statsmodels.stats.multitest")
    p = np.array([0.001, 0.02, 0.03, 0.2, 0.04, np.nan])
    q = fdr_bh(p)
    ref = smm.multipletests(p[:5], method="fdr_bh")[1]
    assert np.allclose(q[:5], ref) and np.isnan(q[5])


def test_residualise_axes_give_r(cohort):
    rx, ry = residualise(cohort["metric"], cohort["score"], cohort[["age", "edu"]])
    r = np.corrcoef(rx, ry)[0, 1]
    assert r == pytest.approx(partial_corr(cohort["metric"], cohort["score"],
                                           cohort[["age", "edu"]], n_boot=0)["r"], abs=1e-12)
    assert abs(rx.mean()) < 1e-12 and abs(np.corrcoef(rx, cohort["age"])[0, 1]) < 1e-10


def test_cluster_means(rng):
    data = rng.normal(size=(6, 5, 4, 7)).astype(np.float32)
    labels = np.zeros((6, 5, 4), np.int32)
    labels[:2] = 1
    labels[4:, :2] = 3
    data[0, 0, 0, 2] = np.nan
    img = nib.Nifti1Image(data, np.eye(4))
    out = cluster_means(img, nib.Nifti1Image(labels, np.eye(4)), subjects=list("abcdefg"))
    assert list(out.columns) == ["cluster_1", "cluster_3"] and list(out.index) == list("abcdefg")
    assert np.allclose(out["cluster_3"], data[labels == 3].mean(axis=0), atol=1e-6)
    assert np.isfinite(out.loc["c", "cluster_1"])
    assert out.loc["c", "cluster_1"] == pytest.approx(np.nanmean(data[labels == 1][:, 2]),
                                                      abs=1e-6)
    as_list = cluster_means([nib.Nifti1Image(data[..., i], np.eye(4)) for i in range(7)],
                            labels)
    assert np.allclose(as_list.to_numpy(), out.to_numpy(), equal_nan=True)
    assert np.allclose(cluster_means(data, labels).to_numpy(), out.to_numpy(), equal_nan=True)


def _loso_runs(planted_r, n_cohorts, n=48):
    ins, loso, oracle = [], [], []
    for seed in range(n_cohorts):
        c = simulate_region_cohort(n=n, planted_r=planted_r, amplitude=2.0, seed=seed,
                                   shape=(14, 14, 14))
        mimg = nib.Nifti1Image(c.mask.astype(np.uint8), c.affine)
        res = loso_r(c.Y, c.score, c.age[:, None], mask_img=mimg, sign=1)
        assert res["in_sample_note"] == IN_SAMPLE_NOTE and res["n"] == n
        assert res["ci_low"] < res["r"] < res["ci_high"] and res["rank"] == 1
        ins.append(res["in_sample_r"])
        loso.append(res["r"])
        oracle.append(partial_corr(c.Y[:, c.region.ravel()].mean(1), c.score, c.age,
                                   n_boot=0)["r"])
    return np.array(ins), np.array(loso), np.array(oracle)


def test_loso_r_honest_on_null_cohorts():
    """No effect: the in-sample cluster r is large, the leave-one-out r is about 0."""
    ins, loso, _ = _loso_runs(0.0, 8)
    assert ins.mean() > 0.3 and (ins > loso).all()
    assert abs(loso.mean()) < 2.5 * 0.27 / np.sqrt(8)


def test_loso_r_recovers_planted_r():
    ins, loso, oracle = _loso_runs(0.6, 6)
    assert abs(loso.mean() - 0.6) < 2.5 * 0.1 / np.sqrt(6)
    assert np.corrcoef(loso, oracle)[0, 1] > 0.8


def test_loso_explicit_cluster_and_rank(rng):
    c = simulate_region_cohort(n=40, planted_r=0.6, amplitude=2.0, seed=1, shape=(12, 12, 12))
    mimg = nib.Nifti1Image(c.mask.astype(np.uint8), c.affine)
    res = loso_r(c.Y, c.score, None, mask_img=mimg, cluster=c.region.ravel())
    assert res["rank"] == 1 and res["cluster_n_voxels"] == c.region.sum()
    # the wrong direction: nothing suprathreshold overlaps the cluster, no held-out values
    empty = loso_r(c.Y, c.score, None, mask_img=mimg, cluster=c.region.ravel(), sign=-1)
    assert empty["rank"] == 0 and empty["n_folds_missing"] == 40 and np.isnan(empty["r"])


def test_loso_r_with_define_cluster(rng):
    n = 30
    z = rng.normal(size=n)
    Y = rng.normal(size=(n, 50))
    Y[:, :5] += z[:, None]
    score = z + rng.normal(size=n)
    res = loso_r(Y, score, None, define_cluster=lambda idx: np.arange(50) < 5)
    fixed = partial_corr(Y[:, :5].mean(1), score, None, n_boot=0)
    assert res["r"] == pytest.approx(fixed["r"]) == pytest.approx(res["in_sample_r"])
    assert res["mean_fold_overlap"] == 1.0


def test_bad_inputs(cohort):
    x, y = cohort["metric"], cohort["score"]
    with pytest.raises(InputError, match="'method' parameter must be one of"):
        partial_corr(x, y, method="kendall")
    with pytest.raises(InputError, match="'n_boot' parameter must be an int >= 0"):
        partial_corr(x, y, n_boot=-1)
    with pytest.raises(InputError, match="'ci' parameter must be in"):
        partial_corr(x, y, ci=95)
    with pytest.raises(InputError, match="x and y differ in length"):
        partial_corr(x[:10], y)
    with pytest.raises(InputError, match="too few complete subjects"):
        partial_corr(x[:5], y[:5], cohort[["age", "edu", "hamd"]].iloc[:5])
    with pytest.raises(InputError, match="constant over the"):
        partial_corr(x, y, np.ones(len(x)))
    with pytest.raises(InputError, match="covariates must have one row per subject"):
        partial_corr(x, y, np.ones((3, 2)))
    Y = np.random.default_rng(0).normal(size=(len(x), 8))
    with pytest.raises(InputError, match="needs the voxel positions"):
        loso_r(Y, y)
    with pytest.raises(InputError, match="mask has 27 voxels but Y has 8 columns"):
        loso_r(Y, y, mask_img=np.ones((3, 3, 3)))
    with pytest.raises(InputError, match="sign must be"):
        loso_r(Y, y, sign=0)
    with pytest.raises(InputError, match="Y must be"):
        loso_r(Y[:5], y, mask_img=np.ones((2, 2, 2)))
    with pytest.raises(InputError, match="must be finite"):
        loso_r(np.full_like(Y, np.nan), y, mask_img=np.ones((2, 2, 2)))
    with pytest.raises(InputError, match="must be 4-D"):
        cluster_means(np.zeros((2, 2, 2)), np.ones((2, 2, 2)))
    with pytest.raises(InputError, match="3-D images, one per subject"):
        cluster_means([np.zeros((2, 2, 2))], np.ones((2, 2, 2)))
    with pytest.raises(InputError, match="subject 0's image has shape"):
        cluster_means(np.zeros((3, 2, 2, 4)), np.ones((2, 2, 2)))
    with pytest.raises(InputError, match="3 subject labels for 4 images"):
        cluster_means(np.zeros((2, 2, 2, 4)), np.ones((2, 2, 2)), subjects=list("abc"))


def test_covariate_dummies_equal_pandas_get_dummies():
    """The one dummy coding (stats.design.dummy_code) gives the covariate matrix pandas'
    ``get_dummies(drop_first=True)`` gives; a missing category leaves the subject out."""
    from microvba.regions.correlation import covariate_matrix

    rng = np.random.default_rng(3)
    n = 30
    df = pd.DataFrame({"age": rng.normal(size=n), "sex": rng.choice(["F", "M"], n),
                       "edu": rng.normal(size=n), "site": rng.choice(["a", "b", "c"], n),
                       "flag": rng.choice([True, False], n)})
    df.loc[3, "site"] = np.nan
    df.loc[5, "age"] = np.nan
    cat = ["sex", "site", "flag"]
    ref = pd.get_dummies(df, columns=cat, drop_first=True, dtype=float)
    ref.loc[df[cat].isna().any(axis=1).to_numpy()] = np.nan
    np.testing.assert_array_equal(covariate_matrix(df, n), ref.to_numpy(float))
