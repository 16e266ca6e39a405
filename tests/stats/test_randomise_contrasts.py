"""``stats.randomise``: the library entry point of ``microvba randomise`` (issue 17).

Checked against things it does not compute itself: the per-contrast engine
(:func:`randomise_family`), a brute-force maximum-statistic family correction written here,
a least-squares t computed here, and the table design against a design built by hand.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from microvba._validation import InputError
from microvba.stats.family import Correction, Family
from microvba.stats.permutation import randomise_family
from microvba.stats.randomise import (
    Contrast,
    check_rearrangements,
    drop_constant_voxels,
    randomise_contrasts,
    table_design,
)

SHAPE = (6, 6, 4)


def problem(rng, n=12):
    mask = np.ones(SHAPE, bool)
    V = int(mask.sum())
    score, age = rng.normal(size=n), rng.normal(size=n)
    Y = rng.normal(size=(n, V))
    Y[:, :20] += 1.2 * score[:, None]
    X = np.column_stack([np.ones(n), score, age])
    return Y, X, mask


def test_one_vector_equals_randomise_family(rng):
    Y, X, mask = problem(rng)
    c = np.array([0.0, 1.0, 0.0])
    got = randomise_contrasts(Y, X, c, mask, n_perm=60, seed=3, n_jobs=1, image="fa",
                              cluster_threshold=2.0,
                              correction=Correction(across=Family.ALL))
    ref = randomise_family({"fa": Y}, X, c, mask, n_perm=60, seed=3, n_jobs=1,
                           cluster_threshold=2.0, family_maps=True)["fa"]
    assert set(got.maps) == set(ref.maps)
    for name in ref.maps:
        np.testing.assert_array_equal(got.maps[name], ref.maps[name])
    assert got.params["image"] == "fa"
    np.testing.assert_array_equal(got.maps["tstat2"], -got.maps["tstat1"])


def test_t_is_the_least_squares_t(rng):
    Y, X, mask = problem(rng)
    got = randomise_contrasts(Y, X, [Contrast(2, "score", np.array([0.0, 1.0, 0.0]))], mask,
                              n_perm=20, n_jobs=1, tfce=False, cluster_threshold=None)
    beta, *_ = np.linalg.lstsq(X, Y, rcond=None)
    resid = Y - X @ beta
    df = X.shape[0] - X.shape[1]
    se = np.sqrt((resid ** 2).sum(0) / df * np.linalg.inv(X.T @ X)[1, 1])
    np.testing.assert_allclose(got.maps["tstat2"], beta[1] / se, rtol=1e-5)
    assert "tstat1" not in got.maps  # numbered by the contrast, as FSL


def test_contrasts_are_tested_in_their_own_direction_and_renumbered(rng):
    Y, X, mask = problem(rng)
    cons = [Contrast(1, "pos", np.array([0.0, 1.0, 0.0])),
            Contrast(3, "age", np.array([0.0, 0.0, 1.0]))]
    got = randomise_contrasts(Y, X, cons, mask, n_perm=50, seed=5, n_jobs=1,
                              cluster_threshold=2.5)
    for c in cons:
        ref = randomise_family({"data": Y}, X, c.vector, mask, n_perm=50, seed=5, n_jobs=1,
                               cluster_threshold=2.5, two_sided=False, family_maps=False)["data"]
        for name, value in ref.maps.items():
            np.testing.assert_array_equal(got.maps[name.replace("tstat1", f"tstat{c.number}")],
                                          value)
    assert got.params["tested"] == ["pos", "age"]
    assert [c["tstat"] for c in got.params["contrasts"]] == ["tstat1", "tstat3"]
    assert got.params["corrcon"] is False
    assert not any("famcorrp" in k for k in got.maps)


def test_family_over_contrasts_is_the_max_statistic(rng):
    """``*_famcorrp``: p against the maximum over the contrasts of each permutation's
    maximum (brute force here from the per-contrast nulls)."""
    Y, X, mask = problem(rng)
    cons = [Contrast(1, "pos", np.array([0.0, 1.0, 0.0])),
            Contrast(2, "neg", np.array([0.0, -1.0, 0.0])),
            Contrast(3, "age", np.array([0.0, 0.0, 1.0]))]
    got = randomise_contrasts(Y, X, cons, mask, n_perm=80, seed=2, n_jobs=1,
                              cluster_threshold=2.0, correction=Correction(across="all"))
    assert got.params["corrcon"] is True
    for stat, obs_name in (("vox", "tstat{k}"), ("tfce", "tfce_tstat{k}")):
        family = np.max([got.null_max[f"{stat}_tstat{k}"] for k in (1, 2, 3)], axis=0)
        for k in (1, 2, 3):
            obs = got.maps[obs_name.format(k=k)]
            p = np.array([(family >= v).mean() for v in obs])
            np.testing.assert_allclose(1.0 - got.maps[f"{stat}_famcorrp_tstat{k}"], p,
                                       atol=1e-12)
            # never below the per-contrast FWE p: the family is larger
            assert np.all(got.maps[f"{stat}_famcorrp_tstat{k}"]
                          <= got.maps[f"{stat}_corrp_tstat{k}"] + 1e-12)


def test_family_needs_one_kind_of_rearrangement(rng):
    Y, X, mask = problem(rng)
    one_sample = Contrast(1, "mean", np.array([1.0, 0.0, 0.0]))
    slope = Contrast(2, "score", np.array([0.0, 1.0, 0.0]))
    X1 = X.copy()
    X1[:, 1:] -= X1[:, 1:].mean(0)
    methods = check_rearrangements(X1, [one_sample, slope], Correction(across="none"))
    assert methods == {1: True, 2: False}
    with pytest.raises(InputError, match="same rearrangements for every contrast"):
        check_rearrangements(X1, [one_sample, slope], Correction(across="all"), source="c.con")


def test_table_design_defaults_and_errors():
    table = pd.DataFrame({"participant_id": [f"sub-{i}" for i in range(8)],
                          "score": np.arange(8.0), "age": [30, 41, 25, 38, 50, 33, 29, 45],
                          "sex": list("FMFMFMMF"), "scan": [f"s{i}.nii" for i in range(8)],
                          "site": [1, 1, 1, 1, 2, 2, 2, 2]})
    tab = table_design(table, "score", blocks="site", source="d.tsv")
    # every other column but the id, the blocks and the text identifier (scan)
    assert tab.covariates == ("age", "sex")
    assert tab.design.names == ["intercept", "score", "age", "sex[M]"]
    np.testing.assert_array_equal(tab.design.matrix[:, 3], (table["sex"] == "M").to_numpy(float))
    np.testing.assert_array_equal(tab.blocks, table["site"].to_numpy())
    with pytest.raises(InputError, match="--contrast column 'nope' is missing"):
        table_design(table, "nope", source="d.tsv")
    with pytest.raises(InputError, match="blocks column 'x' is not in the design"):
        table_design(table, "score", blocks="x", source="d.tsv")
    const = table.assign(age=1.0)
    with pytest.raises(InputError, match="without --covariates every other design column"):
        table_design(const, "score", source="d.tsv")


def test_drop_constant_voxels():
    Y = np.array([[1.0, 2.0, 5.0], [1.0, 3.0, 5.0], [1.0, 4.0, 6.0]])
    mask = np.zeros((2, 2, 1), bool)
    mask.flat[[0, 1, 3]] = True
    Y2, mask2 = drop_constant_voxels(Y, mask, "in.nii.gz")
    np.testing.assert_array_equal(Y2, Y[:, 1:])
    assert mask2.flat[0] == 0 and mask2.sum() == 2 and mask.sum() == 3  # input unchanged
    with pytest.raises(InputError, match="same value in all images"):
        drop_constant_voxels(np.ones((3, 2)), np.ones((2, 1, 1), bool), "in.nii.gz")
