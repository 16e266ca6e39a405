"""The group gray-matter analysis mask."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from microvba._validation import InputError
from microvba.registration.masks import group_gm_mask


def _gm(template, thr=0.3):
    return np.asarray(template.gm.dataobj) >= thr


def test_intersection_of_gm_and_subjects(template4, rng):
    gm = _gm(template4)
    subjects = [rng.random(template4.shape) > 0.1 for _ in range(3)]
    mask = np.asarray(group_gm_mask(template4, subjects).dataobj) > 0
    np.testing.assert_array_equal(mask, gm & subjects[0] & subjects[1] & subjects[2])
    stricter = np.asarray(group_gm_mask(template4, subjects, gm_threshold=0.6).dataobj) > 0
    assert stricter.sum() < mask.sum() and not (stricter & ~mask).any()


def test_numeric_arrays_valid_where_finite_nonzero(template4):
    a = np.ones(template4.shape)
    a[20, 30, 30] = np.nan
    a[21, 30, 30] = 0.0
    mask = np.asarray(group_gm_mask(template4, [a]).dataobj) > 0
    expected = _gm(template4)
    expected[20, 30, 30] = expected[21, 30, 30] = False
    np.testing.assert_array_equal(mask, expected)


def test_paths_and_isovf_exclusion(template4, tmp_path):
    gm = _gm(template4)
    md = np.where(gm, 0.8e-3, 0).astype(np.float32)
    isovf = np.zeros(template4.shape, np.float32)  # 0 is valid for a NODDI fraction
    isovf[:25] = 0.7  # "CSF" in one half
    bad = np.argwhere(gm)[0]
    md[tuple(bad)] = 0  # a failed fit in subject 0
    subjects = []
    for s in range(2):
        paths = {}
        for name, arr in (("md", md if s == 0 else np.where(gm, 0.9e-3, 0)), ("isovf", isovf)):
            p = tmp_path / f"s{s}_{name}.nii.gz"
            nib.save(nib.Nifti1Image(np.asarray(arr, np.float32), template4.affine), p)
            paths[name] = p
        subjects.append(paths)
    mask = np.asarray(group_gm_mask(template4, subjects).dataobj) > 0
    assert not mask[tuple(bad)]
    assert mask.sum() == gm.sum() - 1
    trimmed = np.asarray(group_gm_mask(template4, subjects, isovf_max=0.5).dataobj) > 0
    assert not trimmed[:25].any() and trimmed[25:].sum() == mask[25:].sum()


def test_mask_key_is_used(template4):
    valid = np.zeros(template4.shape, np.uint8)
    valid[:, :30] = 1
    mask = np.asarray(group_gm_mask(template4, [{"mask": valid,
                                                  "md": np.ones(template4.shape)}]).dataobj)
    np.testing.assert_array_equal(mask > 0, _gm(template4) & (valid > 0))


def test_errors(template4, tmp_path):
    with pytest.raises(InputError, match="no subjects"):
        group_gm_mask(template4, [])
    with pytest.raises(InputError, match="the template grid is"):
        group_gm_mask(template4, [np.ones((3, 3, 3))])
    with pytest.raises(InputError, match="map file not found"):
        group_gm_mask(template4, [{"md": tmp_path / "nope.nii.gz"}])
    with pytest.raises(InputError, match="isovf_max needs"):
        group_gm_mask(template4, [np.ones(template4.shape)], isovf_max=0.5)
    with pytest.raises(InputError, match="is empty"):
        group_gm_mask(template4, [np.zeros(template4.shape, bool)])
    with pytest.raises(InputError, match="'gm_threshold'"):
        group_gm_mask(template4, [np.ones(template4.shape)], gm_threshold=1.5)
    p = tmp_path / "other.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((5, 5, 5), np.float32), np.eye(4)), p)
    with pytest.raises(InputError, match="not on the template grid"):
        group_gm_mask(template4, [{"md": p}])
