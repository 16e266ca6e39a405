"""Known smooth random deformations (the simulator's subjects)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from microvba._validation import InputError
from microvba.registration.qc import dice
from microvba.simulate.deformation import random_warp


def test_inverse_and_forward_points_agree(template4, rng):
    warp = random_warp(template4.t1, rng)
    pts = rng.uniform(-50, 50, (200, 3))
    np.testing.assert_allclose(warp.to_template(warp.to_subject(pts)), pts, atol=1e-2)
    np.testing.assert_allclose(warp.to_subject(warp.to_template(pts)), pts, atol=1e-2)
    assert warp.to_subject(pts[0]).shape == (3,)


def test_field_scale_and_invertibility(template4, rng):
    warp = random_warp(template4.t1, rng, max_displacement_mm=3.0, rotation_deg=0,
                       translation_mm=0)
    norms = np.linalg.norm(warp.displacement, axis=-1)
    assert norms.max() == pytest.approx(3.0, rel=1e-4)
    assert warp.max_jacobian_norm < 1.0
    np.testing.assert_allclose(warp.rigid, np.eye(4))


def test_reproducible(template4):
    a = random_warp(template4.t1, np.random.default_rng(3))
    b = random_warp(template4.t1, np.random.default_rng(3))
    np.testing.assert_array_equal(a.displacement, b.displacement)
    np.testing.assert_array_equal(a.rigid, b.rigid)


def test_identity_warp_is_identity(template4, rng):
    warp = random_warp(template4.t1, rng, max_displacement_mm=0, rotation_deg=0,
                       translation_mm=0)
    out = np.asarray(warp.apply(template4.gm).dataobj)
    np.testing.assert_allclose(out, np.asarray(template4.gm.dataobj), atol=1e-6)


def test_translation_matches_scipy_shift(template4, rng):
    """A pure translation t moves image content by -t (pull-back), as scipy's shift does."""
    warp = random_warp(template4.t1, rng, max_displacement_mm=0, rotation_deg=0,
                       translation_mm=10)
    shift_vox = -warp.rigid[:3, 3] / 4.0
    gm = np.asarray(template4.gm.dataobj)
    expected = ndimage.shift(gm, shift_vox, order=1, mode="constant")
    got = np.asarray(warp.apply(template4.gm).dataobj)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_inverse_apply_undoes_apply(template4, rng):
    warp = random_warp(template4.t1, rng)
    gm = np.asarray(template4.gm.dataobj) >= 0.5
    moved = warp.apply(template4.gm)
    assert dice(np.asarray(moved.dataobj) >= 0.5, gm) < 0.8
    back = np.asarray(warp.inverse_apply(moved).dataobj) >= 0.5
    assert dice(back, gm) > 0.85  # two linear resamplings on a 4 mm grid


def test_apply_4d_and_nearest(template4, rng):
    warp = random_warp(template4.t1, rng)
    labels = (np.asarray(template4.gm.dataobj) > 0.5).astype(np.float32) * 7
    stack = nib.Nifti1Image(np.stack([labels, labels * 2], -1), template4.affine)
    out = np.asarray(warp.apply(stack, order=0).dataobj)
    assert out.shape == template4.shape + (2,)
    assert set(np.unique(out[..., 0])) <= {0.0, 7.0}
    np.testing.assert_array_equal(out[..., 1], out[..., 0] * 2)


@pytest.mark.parametrize("kwargs, match", [
    ({"max_displacement_mm": -1}, "max_displacement_mm"),
    ({"smoothness_mm": 0}, "smoothness_mm"),
    ({"rotation_deg": 400}, "rotation_deg"),
    ({"translation_mm": -2}, "translation_mm"),
])
def test_bad_parameters(template4, rng, kwargs, match):
    with pytest.raises(InputError, match=match):
        random_warp(template4.t1, rng, **kwargs)


def test_bad_reference(rng):
    img = nib.Nifti1Image(np.zeros((5, 5, 1), np.float32), np.eye(4))
    with pytest.raises(InputError, match="reference image must be 3-D"):
        random_warp(img, rng)
