"""The MNI template on the analysis grid."""

from __future__ import annotations

import numpy as np
import pytest

from microvba._validation import InputError
from microvba.io.derivatives import SPACE_MNI
from microvba.registration.template import load_template


def test_template_grid_and_tissues(template4):
    t = template4
    assert t.shape == (50, 59, 48)
    np.testing.assert_allclose(t.voxel_size, (4.0, 4.0, 4.0))
    for img in (t.t1, t.gm, t.wm, t.csf, t.brain_mask):
        assert img.shape == t.shape
        np.testing.assert_allclose(img.affine, t.affine)
    gm, wm, csf = (np.asarray(getattr(t, k).dataobj) for k in ("gm", "wm", "csf"))
    brain = np.asarray(t.brain_mask.dataobj) > 0
    assert gm.min() >= 0 and gm.max() <= 1 and csf.min() >= 0
    assert np.all(gm + wm + csf <= 1 + 1e-5)
    np.testing.assert_allclose((gm + wm + csf)[brain], 1.0, atol=1e-5)
    assert np.all(csf[~brain] == 0)
    # the brain mask holds nearly all gray matter; the ventricles are CSF inside it
    assert brain[gm >= 0.5].mean() > 0.99
    assert csf[brain].mean() > 0.05


def test_template_matches_nilearn(template4):
    from nilearn import datasets

    ref = datasets.load_mni152_template(resolution=4)
    np.testing.assert_allclose(template4.affine, ref.affine)
    np.testing.assert_allclose(np.asarray(template4.t1.dataobj), ref.get_fdata(), atol=1e-6)
    gm = datasets.load_mni152_gm_template(resolution=4).get_fdata()
    np.testing.assert_allclose(np.asarray(template4.gm.dataobj), gm, atol=1e-6)


def test_template_cached_and_named(template4):
    assert load_template(4) is template4
    assert template4.space == SPACE_MNI == "MNI152NLin2009aSym"
    # MNI origin lies inside the grid, near the anterior commissure
    ijk = np.linalg.solve(template4.affine, [0, 0, 0, 1])[:3]
    assert np.all(ijk > 0) and np.all(ijk < template4.shape)


def test_template_non_integer_resolution():
    t = load_template(6.5)
    np.testing.assert_allclose(t.voxel_size, (6.5,) * 3)
    assert np.asarray(t.gm.dataobj).max() > 0.8


def test_template_bad_resolution():
    with pytest.raises(InputError, match="'resolution' parameter must be in"):
        load_template(0)


def test_brain_mask_matches_nilearn(template4):
    from nilearn import datasets

    ref = datasets.load_mni152_brain_mask(resolution=4).get_fdata() > 0
    np.testing.assert_array_equal(np.asarray(template4.brain_mask.dataobj) > 0, ref)
