"""Permutation inference: determinism, p-value conventions, FWE sanity, family, outputs."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from microvba._validation import InputError
from microvba.stats import fdr_bh, label_clusters, randomise, randomise_family, tfce
from microvba.stats.clusters import find_clusters
from microvba.stats.tfce import neighbour_table

SHAPE = (10, 10, 8)


def smooth_data(rng, n, shape=SHAPE, sigma=1.2):
    mask = np.ones(shape, bool)
    mask[0] = False
    vols = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
                     for _ in range(n)])
    Y = vols[:, mask]
    return Y / Y.std(), mask


@pytest.fixture
def cohort(rng):
    n = 20
    Y, mask = smooth_data(rng, n)
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.normal(size=n)])
    return Y, X, mask


def run(Y, X, mask, **kw):
    kw.setdefault("n_perm", 120)
    kw.setdefault("cluster_threshold", 2.0)
    kw.setdefault("batch_size", 50)
    return randomise(Y, X, np.array([0, 1.0, 0]), mask, **kw)


def test_deterministic_across_workers_and_executors(cohort):
    Y, X, mask = cohort
    a = run(Y, X, mask, n_jobs=1, seed=3)
    b = run(Y, X, mask, n_jobs=2, seed=3)
    c = run(Y, X, mask, seed=3, batch_map=lambda f, items: [f(i) for i in reversed(items)][::-1])
    for other in (b, c):
        assert a.maps.keys() == other.maps.keys()
        for k in a.maps:
            np.testing.assert_array_equal(a.maps[k], other.maps[k], err_msg=k)
        for k in a.null_max:
            np.testing.assert_array_equal(a.null_max[k], other.null_max[k], err_msg=k)
    d = run(Y, X, mask, n_jobs=1, seed=4)
    assert not np.array_equal(a.null_max["tfce_tstat1"], d.null_max["tfce_tstat1"])


def test_observed_maps_and_p_conventions(cohort):
    Y, X, mask = cohort
    r = run(Y, X, mask, n_perm=80)
    t = r.maps["tstat1"]
    np.testing.assert_array_equal(r.maps["tstat2"], -t)
    vol = np.zeros(mask.shape)
    vol[mask] = t
    np.testing.assert_allclose(r.maps["tfce_tstat1"], tfce(np.where(mask, vol, 0))[mask],
                               rtol=1e-10)
    np.testing.assert_allclose(r.maps["tfce_tstat2"], tfce(np.where(mask, -vol, 0))[mask],
                               rtol=1e-10)
    # permutation 0 is the unpermuted data
    assert r.null_max["vox_tstat1"][0] == pytest.approx(t.max())
    assert r.null_max["tfce_tstat1"][0] == pytest.approx(r.maps["tfce_tstat1"].max())
    for key in ("vox_corrp_tstat1", "tfce_corrp_tstat2", "vox_p_tstat1"):
        p = 1 - r.maps[key]
        assert p.min() >= 1 / 80 - 1e-12 and p.max() <= 1
        assert np.allclose(r.maps[key.replace("corrp", "logp").replace("vox_p", "vox_unclogp")],
                           -np.log10(p))
    # FWE p >= uncorrected p; FDR q >= uncorrected p
    assert np.all(r.maps["vox_corrp_tstat1"] <= r.maps["vox_p_tstat1"] + 1e-12)
    assert np.all(r.maps["vox_fdrp_tstat1"] <= r.maps["vox_p_tstat1"] + 1e-12)
    # the largest t has the smallest corrected p
    assert r.maps["vox_corrp_tstat1"][np.argmax(t)] == r.maps["vox_corrp_tstat1"].max()
    assert r.params["method"] == "freedman_lane" and r.params["n_perm"] == 80


def test_voxel_fwe_p_by_hand(cohort):
    Y, X, mask = cohort
    r = run(Y, X, mask, n_perm=60, tfce=False, cluster_threshold=None)
    null = r.null_max["vox_tstat1"]
    t = r.maps["tstat1"]
    expected = np.array([(null >= v).mean() for v in t])
    np.testing.assert_allclose(1 - r.maps["vox_corrp_tstat1"], expected)
    assert "tfce_tstat1" not in r.maps and "clustere_corrp_tstat1" not in r.maps


def test_planted_effect_is_found_and_null_is_quiet(rng):
    n = 24
    Y, mask = smooth_data(rng, n)
    score = rng.normal(size=n)
    X = np.column_stack([np.ones(n), score])
    r0 = randomise(Y, X, np.array([0, 1.0]), mask, n_perm=200, cluster_threshold=2.5)
    for key in ("tfce_corrp_tstat1", "vox_corrp_tstat1", "clustere_corrp_tstat1"):
        assert (r0.maps[key] > 0.95).mean() < 0.05
    coords = np.argwhere(mask)
    blob = np.linalg.norm(coords - [5, 5, 4], axis=1) <= 2.5
    Y1 = Y + 1.2 * np.outer((score - score.mean()) / score.std(), blob)
    r1 = randomise(Y1, X, np.array([0, 1.0]), mask, n_perm=200, cluster_threshold=2.5)
    for key in ("tfce_corrp_tstat1", "vox_corrp_tstat1", "clustere_corrp_tstat1",
                "clusterm_corrp_tstat1"):
        assert (r1.maps[key][blob] > 0.95).mean() > 0.5, key
        assert (r1.maps[key][~blob] > 0.95).mean() < 0.1, key
    assert (r1.maps["tfce_corrp_tstat2"] > 0.95).sum() == 0


def test_sign_flip_one_sample(rng):
    n = 16
    Y, mask = smooth_data(rng, n)
    r = randomise(Y + 0.0, np.ones((n, 1)), np.array([1.0]), mask, n_perm=100,
                  cluster_threshold=2.5)
    assert r.params["method"] == "sign_flip"
    np.testing.assert_allclose(r.maps["tstat1"],
                               Y.mean(0) / (Y.std(0, ddof=1) / np.sqrt(n)), rtol=1e-8)


def test_exchangeability_blocks_change_the_null(cohort):
    Y, X, mask = cohort
    blocks = np.repeat(["s1", "s2"], 10)
    a = run(Y, X, mask, exchangeability_blocks=blocks, n_perm=60)
    b = run(Y, X, mask, n_perm=60)
    assert a.params["exchangeability_blocks"] == 2
    np.testing.assert_array_equal(a.maps["tstat1"], b.maps["tstat1"])
    assert not np.array_equal(a.null_max["vox_tstat1"], b.null_max["vox_tstat1"])


def test_family_uses_same_permutations(cohort, rng):
    Y, X, mask = cohort
    Y2 = smooth_data(rng, 20)[0]
    fam = randomise_family({"fa": Y, "md": Y2}, X, np.array([0, 1.0, 0]), mask, n_perm=60,
                           cluster_threshold=2.0, batch_size=50)
    single = run(Y, X, mask, n_perm=60)
    for k in single.maps:
        np.testing.assert_array_equal(fam["fa"].maps[k], single.maps[k], err_msg=k)
    for stat in ("vox", "tfce", "clustere", "clusterm"):
        expected = np.max([fam[m].null_max[f"{stat}_tstat{k}"] for m in ("fa", "md")
                           for k in (1, 2)], axis=0)
        np.testing.assert_array_equal(fam["fa"].null_max[f"{stat}_family"], expected)
        assert np.all(fam["fa"].maps[f"{stat}_famcorrp_tstat1"]
                      <= fam["fa"].maps[f"{stat}_corrp_tstat1"] + 1e-12)
    assert fam["md"].params["family"] == ["fa", "md"]


def test_clusters_match_scipy_label(rng):
    t = ndimage.gaussian_filter(rng.standard_normal((14, 14, 12)), 1.0) * 6
    for conn, rank in ((6, 1), (18, 2), (26, 3)):
        labels, cl = label_clusters(t, 1.0, conn)
        ref, n_ref = ndimage.label(t > 1.0, ndimage.generate_binary_structure(3, rank))
        assert cl.n_clusters == n_ref
        sizes = np.sort(np.bincount(ref.ravel())[1:])[::-1]
        np.testing.assert_array_equal(cl.extent, sizes)
        # same partition of voxels
        pairs = {(a, b) for a, b in zip(labels[t > 1.0], ref[t > 1.0], strict=True)}
        assert len(pairs) == n_ref
        k = 1
        np.testing.assert_allclose(cl.mass[k - 1], t[labels == k].sum())
    mask = np.ones(t.shape, bool)
    neg = find_clusters(t[mask], neighbour_table(mask, 26), 1.0, sign=-1)
    assert neg.extent.sum() == (t < -1.0).sum()


def test_fdr_bh_equals_statsmodels(rng):
    from statsmodels.stats.multitest import fdrcorrection

    p = rng.uniform(size=300) ** 3
    np.testing.assert_allclose(fdr_bh(p), fdrcorrection(p)[1], rtol=1e-12)


def test_save_writes_images_and_sidecar(cohort, tmp_path):
    Y, X, mask = cohort
    r = run(Y, X, mask, n_perm=30)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    paths = r.save(tmp_path / "out", "fa", mask, affine)
    assert paths["tfce_corrp_tstat1"].name == "fa_tfce_corrp_tstat1.nii.gz"
    img = nib.load(paths["tstat1"])
    np.testing.assert_allclose(img.get_fdata()[mask], r.maps["tstat1"], rtol=1e-6)
    assert np.all(img.get_fdata()[~mask] == 0)
    side = json.loads(paths["sidecar"].read_text())
    assert side["Parameters"]["n_perm"] == 30 and side["Parameters"]["tfce_connectivity"] == 6
    assert "1 - p" in side["Convention"]
    assert "Freedman-Lane" in side["Methods"] and "computed exactly" in side["Methods"]
    assert not list((tmp_path / "out").glob(".tmp-*"))
    with pytest.raises(InputError, match="the mask has"):
        r.to_images(mask[:-1], affine)


def test_input_errors(cohort):
    Y, X, mask = cohort
    c = np.array([0, 1.0, 0])
    with pytest.raises(InputError, match="expected \\(n_subjects"):
        randomise(Y[:, :-1], X, c, mask, n_perm=10)
    with pytest.raises(InputError, match="design has 19 rows"):
        randomise(Y, X[:-1], c, mask, n_perm=10)
    with pytest.raises(InputError, match="NaN/inf"):
        randomise(np.where(np.arange(Y.shape[1]) == 3, np.nan, Y), X, c, mask, n_perm=10)
    with pytest.raises(InputError, match="n_perm"):
        randomise(Y, X, c, mask, n_perm=0)
    with pytest.raises(InputError, match="tfce_connectivity"):
        randomise(Y, X, c, mask, n_perm=10, tfce_connectivity=7)
    with pytest.raises(InputError, match="cluster_threshold"):
        randomise(Y, X, c, mask, n_perm=10, cluster_threshold=-1.0)
    with pytest.raises(InputError, match="mask must be a 3-D"):
        randomise(Y, X, c, mask[0], n_perm=10)
    with pytest.raises(InputError, match="mask is empty"):
        randomise(Y, X, c, np.zeros_like(mask), n_perm=10)
    with pytest.raises(InputError, match="non-empty dict"):
        randomise_family({}, X, c, mask)
    with pytest.raises(InputError, match="n_jobs"):
        randomise(Y, X, c, mask, n_perm=10, n_jobs=0)
    with pytest.raises(InputError, match="TFCE exponents"):
        randomise(Y, X, c, mask, n_perm=10, tfce_E=-1.0)


def test_negating_the_data_swaps_the_directions(cohort):
    Y, X, mask = cohort
    a = run(Y, X, mask, n_perm=60, seed=2)
    b = run(-Y, X, mask, n_perm=60, seed=2)
    for key in a.maps:
        if key.endswith("tstat2"):
            np.testing.assert_allclose(a.maps[key], b.maps[key[:-1] + "1"], rtol=1e-6,
                                       atol=1e-9, err_msg=key)
    for stat in ("vox", "tfce", "clustere", "clusterm"):
        np.testing.assert_allclose(a.null_max[f"{stat}_tstat2"], b.null_max[f"{stat}_tstat1"],
                                   rtol=1e-6)


def test_methods_text_states_the_tested_direction(cohort):
    Y, X, mask = cohort
    both = run(Y, X, mask, n_perm=20, tfce=False, cluster_threshold=None)
    one = run(Y, X, mask, n_perm=20, tfce=False, cluster_threshold=None, two_sided=False)
    assert "testing both directions" in both.methods()
    assert "both directions" not in one.methods()
    assert "positive direction" in one.methods()


def test_enumerate_rearrangements_covers_each_once():
    from itertools import permutations

    from microvba.stats.glm import enumerate_rearrangements

    perm, signs = enumerate_rearrangements(0, 24, 4, False, None)
    assert perm[0].tolist() == [0, 1, 2, 3] and np.all(signs == 1)
    assert {tuple(p) for p in perm} == set(permutations(range(4)))
    blocks = np.array([0, 1, 0, 1, 1])
    perm, _ = enumerate_rearrangements(0, 12, 5, False, blocks)  # 2! * 3!
    assert len({tuple(p) for p in perm}) == 12
    assert np.all(blocks[perm] == blocks)  # nobody leaves its block
    _, signs = enumerate_rearrangements(0, 8, 3, True, None)
    assert np.all(signs[0] == 1) and len({tuple(s) for s in signs}) == 8
    # batches are slices of one list
    a, _ = enumerate_rearrangements(0, 24, 4, False, None)
    b, _ = enumerate_rearrangements(10, 5, 4, False, None)
    assert np.array_equal(a[10:15], b)


def test_exhaustive_when_fewer_rearrangements_than_requested(rng):
    n = 5  # 120 permutations
    Y, mask = smooth_data(rng, n)
    X = np.column_stack([np.ones(n), np.arange(n, dtype=float), rng.normal(size=n)])
    a = run(Y, X, mask, n_perm=5000, seed=1, tfce=False)
    b = run(Y, X, mask, n_perm=5000, seed=2, tfce=False)
    assert a.params["exhaustive"] and a.params["n_perm"] == 120
    assert a.params["n_perm_requested"] == 5000
    for k in a.maps:  # every rearrangement once: the seed no longer matters
        np.testing.assert_array_equal(a.maps[k], b.maps[k], err_msg=k)
    # exact p-values: multiples of 1/120 (maps hold 1 - p)
    q = a.maps["vox_corrp_tstat1"] * 120
    np.testing.assert_allclose(np.round(q), q, atol=1e-3)
