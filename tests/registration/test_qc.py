"""Registration QC: similarity measures, outlier flags, figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import dice as scipy_dice

from microvba._validation import InputError
from microvba.registration.qc import (
    dice,
    flag_outliers,
    qc_mosaic,
    registration_similarity,
    robust_z,
    similarity_figure,
)


def test_dice_matches_scipy(rng):
    a = rng.random(500) > 0.4
    b = rng.random(500) > 0.6
    assert dice(a, b) == pytest.approx(1 - scipy_dice(a, b))
    assert dice(a, a) == 1.0
    assert dice(np.zeros(4, bool), np.zeros(4, bool)) == 0.0


def test_template_is_perfectly_similar_to_itself(template4):
    t1 = np.asarray(template4.t1.dataobj)
    sim = registration_similarity(t1, np.asarray(template4.gm.dataobj),
                                  np.asarray(template4.brain_mask.dataobj), template4)
    assert sim == pytest.approx({"correlation": 1.0, "dice_gm": 1.0, "dice_brain": 1.0})
    flipped = registration_similarity(t1[:, ::-1], np.asarray(template4.gm.dataobj)[:, ::-1],
                                      np.asarray(template4.brain_mask.dataobj)[:, ::-1],
                                      template4)
    assert flipped["correlation"] < 0.5 and flipped["dice_gm"] < 0.6


def test_robust_z_against_hand_computation():
    x = pd.Series([1.0, 2.0, 3.0, 4.0, 100.0])
    z = robust_z(x, min_scale=0)
    assert z.iloc[2] == 0
    assert z.iloc[4] == pytest.approx((100 - 3) / (1.4826 * 1.0))


def test_flag_outliers_group_and_floors(rng):
    n = 12
    table = pd.DataFrame({
        "correlation": rng.normal(0.9, 0.01, n),
        "dice_gm": rng.normal(0.88, 0.01, n),
        "dice_brain": rng.normal(0.98, 0.003, n),
    }, index=[f"sub-{i:02d}" for i in range(n)])
    assert not flag_outliers(table).any()
    table.loc["sub-03", "dice_gm"] = 0.70  # far below the group, above the floor
    table.loc["sub-07", "correlation"] = 0.25  # below the absolute floor
    table.loc["sub-09", "dice_brain"] = np.nan
    flags = flag_outliers(table)
    assert flags.name == "registration_outlier"
    assert flags[flags].index.tolist() == ["sub-03", "sub-07", "sub-09"]
    # high similarity is never an outlier
    table.loc["sub-05", "dice_gm"] = 0.99
    assert not flag_outliers(table)["sub-05"]


def test_flag_outliers_two_subjects_uses_floors_only():
    table = pd.DataFrame({"correlation": [0.9, 0.2]}, index=["a", "b"])
    assert flag_outliers(table).tolist() == [False, True]


def test_flag_outliers_errors():
    with pytest.raises(InputError, match="lacks similarity columns"):
        flag_outliers(pd.DataFrame({"x": [1.0]}))
    with pytest.raises(InputError, match="lacks similarity columns"):
        flag_outliers(pd.DataFrame({"dice_gm": [1.0]}), columns=["correlation"])


def test_figures(template4):
    fig = qc_mosaic({"fa": template4.wm, "md": template4.csf}, template4, title="x",
                    n_slices=4)
    assert len(fig.axes) == 8
    table = pd.DataFrame({"correlation": [0.9, 0.91, 0.3], "dice_gm": [0.9, 0.9, 0.5]})
    fig = similarity_figure(table)
    assert len(fig.axes) == 2
