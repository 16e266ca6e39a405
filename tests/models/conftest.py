"""Schemes shared by the model tests."""

from __future__ import annotations

import numpy as np
import pytest

from microvba.models.gradients import GradientTable


def sphere_points(n: int, seed: int) -> np.ndarray:
    """Quasi-uniform unit vectors (electrostatic repulsion, DIPY)."""
    from dipy.core.sphere import HemiSphere, disperse_charges

    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, 3))
    hemi, _ = disperse_charges(HemiSphere(xyz=v / np.linalg.norm(v, axis=1, keepdims=True)),
                               200)
    return hemi.vertices


@pytest.fixture(scope="session")
def three_shell() -> GradientTable:
    """b = 0 x6, 1000 x30, 2000 x45, 3000 x60."""
    parts_b = [np.zeros(6)]
    parts_g = [np.zeros((6, 3))]
    for b, n, seed in ((1000.0, 30, 1), (2000.0, 45, 2), (3000.0, 60, 3)):
        parts_b.append(np.full(n, b))
        parts_g.append(sphere_points(n, seed))
    return GradientTable(np.concatenate(parts_b), np.concatenate(parts_g))


@pytest.fixture(scope="session")
def dsi515() -> GradientTable:
    from dipy.data import get_fnames

    table = np.loadtxt(get_fnames(name="dsi515btable"))
    return GradientTable(table[:, 0], table[:, 1:])
