"""Exact TFCE against a brute-force reference, nilearn's stepped TFCE and known values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from microvba._validation import InputError
from microvba.stats.tfce import CONNECTIVITY_RANK, neighbour_table, tfce, tfce_masked


def brute_force_tfce(t: np.ndarray, H: float = 2.0, E: float = 0.5, conn: int = 6) -> np.ndarray:
    """Threshold at every distinct positive value, label with scipy and sum exactly."""
    struct = ndimage.generate_binary_structure(3, CONNECTIVITY_RANK[conn])
    heights = np.unique(t[t > 0])[::-1]
    out = np.zeros(t.shape)

    def F(h):
        return h ** (H + 1) / (H + 1)

    for k, dk in enumerate(heights):
        below = heights[k + 1] if k + 1 < heights.size else 0.0
        lab, _ = ndimage.label(t >= dk, struct)
        extent = np.bincount(lab.ravel())[lab].astype(float)
        out += np.where(lab > 0, extent ** E, 0.0) * (F(dk) - F(below))
    return out


def smooth_map(rng, shape=(14, 13, 12), sigma=1.5, decimals=1):
    x = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return np.round(x / x.std() * 2.0, decimals)  # rounding creates many ties


@pytest.mark.parametrize("conn", [6, 18, 26])
def test_exact_tfce_equals_brute_force(rng, conn):
    for _ in range(2):
        t = smooth_map(rng)
        assert np.unique(t[t > 0]).size < (t > 0).sum() / 3  # ties are present
        ref = brute_force_tfce(t, conn=conn)
        got = tfce(t, connectivity=conn)
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-9 * ref.max())
        assert np.all(got[t <= 0] == 0)


@pytest.mark.parametrize(("H", "E"), [(2.0, 0.5), (1.0, 1.0), (3.0, 0.25)])
def test_exact_tfce_other_exponents(rng, H, E):
    t = smooth_map(rng, shape=(10, 11, 9), decimals=2)
    np.testing.assert_allclose(tfce(t, H=H, E=E, connectivity=26),
                               brute_force_tfce(t, H=H, E=E, conn=26), rtol=1e-6)


def test_single_voxel_and_plateau():
    t = np.zeros((5, 5, 5))
    t[2, 2, 2] = 3.0
    assert tfce(t)[2, 2, 2] == pytest.approx(9.0)  # int_0^3 h^2 dh
    t[1:4, 1:4, 1:4] = 2.0  # a 27-voxel plateau of height 2
    t[2, 2, 2] = 3.0
    got = tfce(t)
    # the peak: 27^0.5 * 8/3 below 2, then 1 voxel from 2 to 3
    assert got[2, 2, 2] == pytest.approx(np.sqrt(27) * 8 / 3 + (27 - 8) / 3)
    assert got[1, 1, 1] == pytest.approx(np.sqrt(27) * 8 / 3)


def test_negative_tail_via_minus(rng):
    t = smooth_map(rng)
    np.testing.assert_allclose(tfce(-t), brute_force_tfce(-t), rtol=1e-6)


def test_converges_to_nilearn_stepped_tfce(rng):
    from nilearn.mass_univariate._utils import calculate_tfce

    t = ndimage.gaussian_filter(rng.standard_normal((12, 12, 12)), 1.5)
    t = t / t.std() * 2.5
    struct = ndimage.generate_binary_structure(3, 1)
    exact = tfce(t, connectivity=6)
    errors = []
    for dh in (0.2, 0.05, 0.0125):
        stepped = calculate_tfce(t[..., None], struct, E=0.5, H=2, dh=dh,
                                 two_sided_test=False)[..., 0]
        step = t.max() / round(t.max() / dh)  # nilearn's actual step (linspace to the max)
        errors.append(np.abs(stepped * step - exact).max() / exact.max())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.01


def test_masked_kernel_matches_volume(rng):
    t = smooth_map(rng, decimals=3)
    mask = np.ones(t.shape, bool)
    mask[:2] = False
    t_masked = np.where(mask, t, 0.0)
    neigh = neighbour_table(mask, 18)
    np.testing.assert_allclose(tfce_masked(t[mask], neigh), tfce(t_masked, connectivity=18)[mask],
                               rtol=1e-12)
    # negative tail swept from the same order
    np.testing.assert_allclose(tfce_masked(t[mask], neigh, sign=-1),
                               tfce(-t_masked, connectivity=18)[mask], rtol=1e-12)


def test_max_only_sweep_equals_full_map_max(rng):
    """The permutation null evaluates TFCE only at local maxima: same maximum."""
    from microvba.stats.tfce import TfceWorkspace

    for _ in range(5):
        t = smooth_map(rng, decimals=2)
        mask = np.ones(t.shape, bool)
        values = t[mask].astype(np.float32)
        neigh = neighbour_table(mask, 6)
        order = np.argsort(values)
        ws = TfceWorkspace(values.size, 0.5)
        for sign in (1, -1):
            full = np.empty(values.size)
            best_full = ws.sweep(values, order, sign, neigh, 2.0, full)
            assert full.max() == best_full
            assert ws.sweep(values, order, sign, neigh, 2.0) == pytest.approx(best_full,
                                                                              rel=1e-12)
        assert np.all(ws.parent == -1)  # workspace restored


def test_tfce_errors():
    with pytest.raises(InputError, match="3-D map"):
        tfce(np.zeros((4, 4)))
    with pytest.raises(InputError, match="connectivity"):
        tfce(np.zeros((4, 4, 4)), connectivity=8)
    with pytest.raises(InputError, match="exponents"):
        tfce(np.zeros((4, 4, 4)), H=-1.0)
    with pytest.raises(InputError, match="mask must be 3-D"):
        neighbour_table(np.ones((3, 3), bool))
    assert not tfce(-np.ones((3, 3, 3))).any()


def test_radix_order_equals_stable_argsort():
    """The O(V) radix sort of float32 maps gives np.argsort(kind="stable")'s permutation:
    ties, -0.0 and +0.0, subnormals, infinities, tiny and large maps."""
    from microvba.stats.tfce import HeightOrder

    rng = np.random.default_rng(11)
    for V in (1, 2, 3, 100, 5000, 70_000):
        t = (rng.standard_normal(V) * rng.choice([1e-3, 1.0, 30.0], V)).astype(np.float32)
        if V >= 100:
            t[:10] = 0.0
            t[10:20] = -0.0
            t[20:25] = np.inf
            t[25:28] = -np.inf
            t[30:40] = np.float32(1e-42)  # subnormal
            t[40:50] = np.float32(-1e-42)
            t[60:80] = t[80:100]  # ties
        order = HeightOrder(V)(t)
        np.testing.assert_array_equal(order, np.argsort(t, kind="stable"))
        assert np.all(t[order][1:] >= t[order][:-1])
    # other dtypes fall back to numpy
    x = rng.standard_normal(50)
    np.testing.assert_array_equal(HeightOrder(50)(x), np.argsort(x, kind="stable"))


def test_tfce_with_radix_order_matches_reference(rng):
    """The permutation engine's sweep with the radix order equals brute-force TFCE."""
    from microvba.stats.tfce import HeightOrder, TfceWorkspace

    mask = np.ones((9, 8, 7), bool)
    t = ndimage.gaussian_filter(rng.standard_normal(mask.shape), 1.2)
    t = (t / t.std() * 2).astype(np.float32)
    neigh = neighbour_table(mask, 6)
    order = HeightOrder(t.size)(t.ravel())
    ws = TfceWorkspace(t.size, 0.5)
    for sign in (1, -1):
        out = np.zeros(t.size)
        best = ws.sweep(t.ravel(), order, sign, neigh, 2.0, out)
        ref = brute_force_tfce(sign * t.astype(np.float64))
        np.testing.assert_allclose(out.reshape(mask.shape), ref, rtol=1e-5, atol=1e-6)
        assert best == pytest.approx(ref.max(), rel=1e-5)
        assert ws.sweep(t.ravel(), order, sign, neigh, 2.0) == pytest.approx(best, rel=1e-12)
