"""Gradient tables: shells, b0s, DSI detection, validation."""

from __future__ import annotations

import numpy as np
import pytest

from microvba._validation import InputError
from microvba.models.gradients import GradientTable, cluster_shells


def test_shell_clustering_with_jitter():
    bvals = np.array([0, 5, 995, 1000, 1010, 1990, 2005, 3000, 2995])
    shells, index = cluster_shells(bvals)
    assert shells.tolist() == [1000.0, 2000.0, 3000.0]
    assert index.tolist() == [-1, -1, 0, 0, 0, 1, 1, 2, 2]


def test_three_shell_summary(three_shell):
    s = three_shell.summary()
    assert s["shells"] == [1000.0, 2000.0, 3000.0]
    assert s["directions_per_shell"] == [30, 45, 60]
    assert s["n_b0"] == 6 and not s["dsi_grid"]
    assert np.allclose(np.linalg.norm(three_shell.bvecs[~three_shell.b0s_mask], axis=1), 1)


def test_dsi_grid_detected(dsi515):
    assert dsi515.is_dsi
    assert len(dsi515.shells) == 22
    assert "DSI grid" in dsi515.describe()


def test_bvecs_normalised_and_transposed():
    g = GradientTable([0, 1000, 1000, 1000], np.array([[0, 2, 0, 0], [0, 0, 3, 0],
                                                       [0, 0, 0, 0.5]]))
    assert np.allclose(g.bvecs[1:], np.eye(3))


def test_real_crops(shared_data):
    d = shared_data / "dwi"
    g = GradientTable.from_files(d / "msmt_dwi.bval", d / "msmt_dwi.bvec")
    assert g.shells.tolist() == [700.0, 1200.0, 2800.0]
    assert g.directions_per_shell() == [16, 30, 50]


@pytest.mark.parametrize("bvals, bvecs, match", [
    ([0, 1000], np.zeros((3, 3)), "2 b-values but 3 b-vectors"),
    ([0, 1000], np.array([[0, 0, 0], [0, 0, 0]]), "zero b-vector"),
    ([0, -5], np.array([[0, 0, 0], [1, 0, 0]]), "finite and non-negative"),
    ([0, 1000], np.ones((2, 4)), "must be an \\(n, 3\\) array"),
])
def test_bad_tables(bvals, bvecs, match):
    with pytest.raises(InputError, match=match):
        GradientTable(bvals, bvecs)
