"""Gradient schemes of the simulator."""

import numpy as np
import pytest

from microvba._validation import InputError
from microvba.simulate.schemes import dsi515_table, gradient_scheme


def test_dsi515_is_dipy_grid_rescaled_to_bmax_4000():
    bvals, bvecs = gradient_scheme("dsi515")
    raw_b, raw_g = dsi515_table()
    assert bvals.shape == (515,) and bvecs.shape == (515, 3)
    assert bvals.max() == pytest.approx(4000.0)
    assert (bvals == 0).sum() == 1
    np.testing.assert_allclose(bvals, np.round(raw_b * 4000 / raw_b.max(), 1))
    np.testing.assert_allclose(np.linalg.norm(bvecs[bvals > 0], axis=1), 1.0, atol=1e-6)
    # the q-space grid is a cubic lattice: q / q_min has integer coordinates
    q = bvecs * np.sqrt(bvals / bvals[bvals > 0].min())[:, None]
    np.testing.assert_allclose(q, np.round(q), atol=1e-3)
    assert len(np.unique(np.round(bvals))) == 23  # b=0 plus 22 "shells" of a DSI grid


def test_half_sphere_keeps_one_of_each_antipodal_pair():
    full_b, full_g = gradient_scheme("dsi515")
    half_b, half_g = gradient_scheme("dsi515-half")
    assert half_b.size == 258
    q_half = np.round(half_g * np.sqrt(half_b)[:, None], 3)
    q_full = {tuple(v) for v in np.round(full_g * np.sqrt(full_b)[:, None], 3)}
    recovered = {tuple(v) for v in q_half} | {tuple(-v + 0.0) for v in q_half}
    assert recovered == q_full


def test_multishell_scheme():
    bvals, bvecs = gradient_scheme("multishell")
    values, counts = np.unique(bvals, return_counts=True)
    assert values.tolist() == [0, 1000, 2000, 3000]
    assert counts.tolist() == [6, 30, 60, 90]
    np.testing.assert_allclose(np.linalg.norm(bvecs[bvals > 0], axis=1), 1.0)
    # directions of a shell are spread: no two closer than 10 degrees (antipodes equal)
    g = bvecs[bvals == 3000]
    cos = np.abs(g @ g.T) - 2 * np.eye(len(g))
    assert np.degrees(np.arccos(cos.max())) > 10


def test_unknown_scheme_is_refused():
    with pytest.raises(InputError, match="'scheme' parameter must be one of"):
        gradient_scheme("dsi1000")
