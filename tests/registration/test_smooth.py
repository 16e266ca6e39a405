"""Gaussian smoothing restricted to the mask (normalised convolution)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from microvba._validation import InputError
from microvba.registration.smooth import smooth_in_mask


@pytest.fixture
def volume(rng):
    return rng.normal(1.0, 0.3, (30, 32, 28))


def test_fwhm_zero_is_masked_copy(volume):
    mask = np.zeros(volume.shape, bool)
    mask[5:20, 5:20, 5:20] = True
    out = smooth_in_mask(volume, mask, 0, 2.0)
    np.testing.assert_array_equal(out[mask], volume[mask])
    assert np.all(out[~mask] == 0)
    assert out is not volume


def test_full_mask_interior_matches_nilearn(volume):
    from nilearn.image import smooth_img

    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    mask = np.ones(volume.shape, bool)
    ours = smooth_in_mask(volume, mask, 6.0, 2.0)
    ref = smooth_img(nib.Nifti1Image(volume, affine), fwhm=6.0).get_fdata()
    core = (slice(8, -8),) * 3  # beyond the kernel radius, boundary handling is irrelevant
    np.testing.assert_allclose(ours[core], ref[core], rtol=1e-6, atol=1e-8)


def test_no_bleeding_from_outside_the_mask(volume):
    mask = np.zeros(volume.shape, bool)
    mask[10:20, 8:24, 6:22] = True
    a = smooth_in_mask(volume, mask, 8.0, 2.0)
    polluted = np.where(mask, volume, 1000.0)
    b = smooth_in_mask(polluted, mask, 8.0, 2.0)
    np.testing.assert_allclose(a, b)
    # a constant inside the mask stays exactly constant, even at the border
    c = smooth_in_mask(np.where(mask, 3.0, 50.0), mask, 8.0, 2.0)
    np.testing.assert_allclose(c[mask], 3.0)
    assert np.all(c[~mask] == 0)
    assert a[mask].std() < volume[mask].std() / 2


def test_4d_layouts_agree(volume, rng):
    stack = np.stack([volume, volume * 2 + rng.normal(0, 0.1, volume.shape)], axis=-1)
    mask = volume > 0.8
    last = smooth_in_mask(stack, mask, 5.0, (2.0, 2.0, 2.5))
    first = smooth_in_mask(np.moveaxis(stack, -1, 0), mask, 5.0, (2.0, 2.0, 2.5),
                           subjects_axis="first")
    np.testing.assert_allclose(np.moveaxis(first, 0, -1), last)
    np.testing.assert_allclose(last[..., 1], smooth_in_mask(stack[..., 1], mask, 5.0,
                                                            (2.0, 2.0, 2.5)))


def test_float32_kept(volume):
    out = smooth_in_mask(volume.astype(np.float32), volume > 0, 4.0, 2.0)
    assert out.dtype == np.float32


@pytest.mark.parametrize("args, kwargs, match", [
    ((np.zeros((4, 4)), np.ones((4, 4), bool), 4.0, 2.0), {}, "must be 3-D or 4-D"),
    ((np.zeros((4, 4, 4)), np.ones((4, 4, 5), bool), 4.0, 2.0), {}, "does not match"),
    ((np.zeros((4, 4, 4)), np.ones((4, 4, 4), bool), -1.0, 2.0), {}, "'fwhm_mm'"),
    ((np.zeros((4, 4, 4)), np.ones((4, 4, 4), bool), 4.0, 0.0), {}, "voxel_size"),
    ((np.zeros((4, 4, 4, 2)), np.ones((4, 4, 4), bool), 4.0, 2.0),
     {"subjects_axis": "middle"}, "'subjects_axis'"),
])
def test_errors(args, kwargs, match):
    with pytest.raises(InputError, match=match):
        smooth_in_mask(*args, **kwargs)


def test_nan_is_treated_as_outside(volume):
    mask = np.ones(volume.shape, bool)
    holed = volume.copy()
    holed[15, 16, 14] = np.nan
    out = smooth_in_mask(holed, mask, 6.0, 2.0)
    explicit = mask.copy()
    explicit[15, 16, 14] = False
    ref = smooth_in_mask(np.where(explicit, volume, 0), explicit, 6.0, 2.0)
    assert np.all(np.isfinite(out)) and out[15, 16, 14] == 0
    np.testing.assert_allclose(out, ref)
