"""Design matrices: coding, contrasts and every input error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from microvba._validation import InputError
from microvba.stats.design import check_design_matrix, make_design


@pytest.fixture
def participants(rng):
    n = 12
    return pd.DataFrame({
        "participant_id": [f"sub-{i:02d}" for i in range(n)],
        "resilience": rng.normal(60, 10, n),
        "age": rng.normal(35, 8, n),
        "sex": ["F", "M", "M", "F"] * 3,
        "site": ["a", "b", "c"] * 4,
    })


def test_numeric_and_dummy_coding(participants):
    d = make_design(participants, "resilience", ["age", "sex", "site"])
    assert d.names == ["intercept", "resilience", "age", "sex[M]", "site[b]", "site[c]"]
    assert d.matrix.shape == (12, 6)
    np.testing.assert_array_equal(d.matrix[:, 0], 1.0)
    np.testing.assert_array_equal(d.matrix[:, 1], participants["resilience"])
    np.testing.assert_array_equal(d.matrix[:, 3], (participants["sex"] == "M").astype(float))
    np.testing.assert_array_equal(d.matrix[:, 5], (participants["site"] == "c").astype(float))
    assert d.levels["site"] == ["a", "b", "c"]
    np.testing.assert_array_equal(d.contrast("resilience"), [0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(d.contrast("-age"), [0, 0, -1, 0, 0, 0])


def test_design_matches_patsy_style_coding(participants):
    """Same column space as statsmodels' formula coding."""
    import statsmodels.formula.api as smf

    d = make_design(participants, "resilience", ["age", "sex"])
    y = np.arange(12.0) ** 1.5
    ours = np.linalg.lstsq(d.matrix, y, rcond=None)[0]
    ref = smf.ols("y ~ resilience + age + C(sex)", data=participants.assign(y=y)).fit()
    np.testing.assert_allclose(ours[1], ref.params["resilience"], rtol=1e-10)


@pytest.mark.parametrize(("change", "covariates", "match"), [
    (lambda df: df, ["income"], "column 'income' is missing"),
    (lambda df: df.assign(age=[np.nan] + [30.0] * 11), ["age"], "missing value"),
    (lambda df: df.assign(resilience=5.0), [], "constant across subjects"),
    (lambda df: df.assign(resilience=["x"] * 12), [], "not numeric"),
    (lambda df: df.assign(age=30.0), ["age"], "covariate 'age' is constant"),
    (lambda df: df.assign(sex="F"), ["sex"], "single level"),
    (lambda df: df.assign(age2=df["age"] * 2), ["age", "age2"], "rank deficient"),
    (lambda df: df, ["resilience"], "listed twice"),
])
def test_design_errors(participants, change, covariates, match):
    with pytest.raises(InputError, match=match):
        make_design(change(participants), "resilience", covariates)


def test_unknown_contrast_and_no_dof(participants):
    d = make_design(participants, "resilience", ["age"])
    with pytest.raises(InputError, match="No design column named 'iq'"):
        d.contrast("iq")
    with pytest.raises(InputError, match="no residual"):
        make_design(participants.iloc[:3], "resilience", ["age", "sex"])
    with pytest.raises(InputError, match="NaN or infinite"):
        check_design_matrix(np.array([[1.0, np.nan], [1.0, 2.0], [1.0, 3.0]]))
    with pytest.raises(InputError, match="must be 2-D"):
        check_design_matrix(np.ones((2, 2, 2)))
