"""Simulated participants and the exact partial-correlation construction."""

import numpy as np
import pandas as pd
import pytest

from microvba.simulate.phenotype import (
    COLUMNS,
    covariate_matrix,
    exact_partial_effect,
    partial_r,
    simulate_participants,
)


def test_participants_columns_ranges_and_correlations(rng):
    table = simulate_participants(2000, rng)
    assert list(table.columns) == list(COLUMNS)
    assert table["participant_id"].iloc[0] == "sub-0001"
    assert table["resilience"].between(0, 100).all()
    assert table["age"].between(18, 65).all()
    assert set(table["sex"]) == {"F", "M"}
    assert 0.58 < (table["sex"] == "F").mean() < 0.72
    r = np.corrcoef(table["resilience"], table["severity"])[0, 1]
    assert -0.5 < r < -0.3  # resilient patients are less depressed
    assert np.corrcoef(table["resilience"], table["education"])[0, 1] > 0.1


def test_partial_r_matches_pingouin(rng):
    pingouin = pytest.importorskip("pingouin")
    table = simulate_participants(64, rng)
    y = 0.02 * table["resilience"] + rng.normal(size=64)
    design = covariate_matrix(table)
    ours = partial_r(y.to_numpy(), table["resilience"].to_numpy(float), design)
    frame = table.assign(y=y, female=(table["sex"] == "F").astype(float))
    ref = pingouin.partial_corr(frame, x="y", y="resilience",
                                covar=["age", "female", "education", "severity"])
    assert ours == pytest.approx(float(ref["r"].iloc[0]), abs=1e-10)


@pytest.mark.parametrize("target", [0.48, 0.27, -0.27, 0.0])
def test_exact_partial_effect_hits_target(rng, target):
    table = simulate_participants(64, rng)
    score = table["resilience"].to_numpy(float)
    design = covariate_matrix(table)
    baseline = rng.normal(size=64) + 0.05 * table["age"].to_numpy()
    effect = exact_partial_effect(baseline, score, design, target)
    assert partial_r(baseline + effect, score, design) == pytest.approx(target, abs=1e-12)
    # the effect is orthogonal to the covariates: it changes no covariate association
    beta, *_ = np.linalg.lstsq(design, effect, rcond=None)
    np.testing.assert_allclose(beta, 0.0, atol=1e-10)


def test_covariate_matrix_codes_sex():
    table = pd.DataFrame({"age": [20, 30], "sex": ["F", "M"], "education": [10, 12],
                          "severity": [20, 25]})
    design = covariate_matrix(table)
    np.testing.assert_array_equal(design[:, 0], 1.0)
    np.testing.assert_array_equal(design[:, 2], [1.0, 0.0])
