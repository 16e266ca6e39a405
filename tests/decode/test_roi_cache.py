"""The command line's ROI voxels, cached by the ROI file's content (decode/roi_cache.py)."""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pytest

from microvba._validation import InputError
from microvba.decode import grid as grid_mod
from microvba.decode import roi_cache
from microvba.decode.grid import check_roi_extent, mni_brain_grid, select_roi


@pytest.fixture(scope="module")
def brain(map_cache):
    return mni_brain_grid(2.0, map_cache)


def _refuse(*args, **kwargs):
    raise AssertionError("the ROI image was read although it is cached")


def test_cached_voxels_equal_a_fresh_read_and_skip_the_image(atlas, brain, tmp_path,
                                                             monkeypatch):
    cache = tmp_path / "cache"
    ref = check_roi_extent(select_roi(atlas, labels=[185, 186]), brain)
    first = roi_cache.roi_grid_voxels(atlas, brain, labels=[186, 185], cache_dir=cache)
    assert len(list((cache / "roi").glob("*.npz"))) == 1
    monkeypatch.setattr(roi_cache, "select_roi", _refuse)
    monkeypatch.setattr(roi_cache, "check_roi_extent", _refuse)
    again = roi_cache.roi_grid_voxels(atlas, brain, labels=[185, 186, 185], cache_dir=cache)
    for got in (first, again):
        np.testing.assert_array_equal(got[0], ref[0])
        assert got[0].dtype == np.int64 and got[1] == ref[1]


def test_a_new_selection_or_content_is_a_new_entry(atlas, brain, tmp_path):
    cache = tmp_path / "cache"
    a = roi_cache.roi_grid_voxels(atlas, brain, labels=[18], cache_dir=cache)
    b = roi_cache.roi_grid_voxels(atlas, brain, labels=[19], cache_dir=cache)
    assert not np.array_equal(a[0], b[0])
    # same name, new content: the labels 18 of an edited copy are read again
    img = nib.load(atlas)
    data = np.asarray(img.dataobj).copy()
    copy = tmp_path / "atlas.nii.gz"
    nib.save(nib.Nifti1Image(data, img.affine), copy)
    c = roi_cache.roi_grid_voxels(copy, brain, labels=[18], cache_dir=cache)
    data[data == 18] = 0
    data[data == 19] = 18
    nib.save(nib.Nifti1Image(data, img.affine), copy)
    d = roi_cache.roi_grid_voxels(copy, brain, labels=[18], cache_dir=cache)
    np.testing.assert_array_equal(c[0], a[0])
    np.testing.assert_array_equal(d[0], b[0])
    assert len(list((cache / "roi").glob("*.npz"))) == 4  # atlas 18, 19; copy; edited copy


def test_warnings_are_logged_again_on_a_hit(brain, tmp_path, monkeypatch, caplog):
    """An ROI mostly outside the brain warns on the first read and on every cached use."""
    vol = np.zeros(brain.shape, np.uint8)
    vol[:12, :12, :12] = 1  # a corner of the grid: outside the brain mask
    ijk = np.argwhere(brain.mask)[0]
    vol[tuple(ijk)] = 1  # one voxel inside
    roi = tmp_path / "corner.nii.gz"
    nib.save(nib.Nifti1Image(vol, brain.affine), roi)
    cache = tmp_path / "cache"
    with caplog.at_level(logging.WARNING, logger="microvba"):
        first = roi_cache.roi_grid_voxels(roi, brain, cache_dir=cache)
    warned = [r.getMessage() for r in caplog.records]
    assert any("inside the MNI brain mask" in m for m in warned)
    caplog.clear()
    monkeypatch.setattr(roi_cache, "check_roi_extent", _refuse)
    with caplog.at_level(logging.WARNING, logger="microvba"):
        again = roi_cache.roi_grid_voxels(roi, brain, cache_dir=cache)
    assert [r.getMessage() for r in caplog.records] == warned
    np.testing.assert_array_equal(first[0], again[0])
    assert first[1] == again[1] > 0


def test_invalid_rois_raise_and_store_nothing(atlas, brain, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match="has no label"):
        roi_cache.roi_grid_voxels(atlas, brain, labels=[9999], cache_dir=cache)
    with pytest.raises(InputError, match="does not exist"):
        roi_cache.roi_grid_voxels(tmp_path / "missing.nii.gz", brain, cache_dir=cache)
    assert not list(cache.rglob("*.npz"))


def test_unwritable_cache_still_decodes(atlas, brain, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    got = roi_cache.roi_grid_voxels(atlas, brain, labels=[18], cache_dir=blocker)
    ref = grid_mod.check_roi_extent(grid_mod.select_roi(atlas, labels=[18]), brain)
    np.testing.assert_array_equal(got[0], ref[0])
