"""Fixtures of the decoding tests: the real databases (shared data) and a session map cache."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

REFERENCE = Path(__file__).parent / "data" / "nimare_reference.json"


@pytest.fixture(scope="session")
def reference() -> dict:
    return json.loads(REFERENCE.read_text())


@pytest.fixture(scope="session")
def map_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("decode_cache")


@pytest.fixture(scope="session")
def atlas(shared_data) -> Path:
    return shared_data / "atlases" / "brainnetome" / "BN_Atlas_246_1mm_spmgrid.nii.gz"


@pytest.fixture(scope="session")
def lda_decoder(shared_data, map_cache):
    from microvba.decode import Decoder

    return Decoder("lda50", data_dir=shared_data, cache_dir=map_cache, n_null=500,
                   seed=0).fit()


@pytest.fixture(scope="session")
def rois(atlas, reference) -> dict[str, nib.Nifti1Image]:
    from microvba.decode.grid import atlas_roi

    return {k: atlas_roi(atlas, v) for k, v in reference["rois"].items()}


@pytest.fixture(scope="session")
def roi_maps(rois, reference) -> dict[str, nib.Nifti1Image]:
    """Smoothed ROIs as unthresholded 'statistic maps' (as in the benchmark)."""
    from nilearn.image import smooth_img

    return {k: smooth_img(nib.Nifti1Image(np.asarray(v.dataobj, np.float32), v.affine),
                          reference["map_fwhm_mm"]) for k, v in rois.items()}


@pytest.fixture(scope="session")
def white_matter_roi():
    """Factory: seed -> ROI."""
    return _white_matter_roi


def _white_matter_roi(seed: int) -> nib.Nifti1Image:
    """A 6 mm cube at a random point of deep white matter (ICBM152 WM > 0.9, eroded 6 mm)."""
    from nilearn.datasets import load_mni152_wm_template

    wm = load_mni152_wm_template(resolution=2)
    deep = ndimage.binary_erosion(np.asarray(wm.dataobj) > 0.9, iterations=3)
    cand = np.argwhere(deep)
    c = cand[np.random.default_rng(seed).integers(len(cand))]
    vol = np.zeros(deep.shape, np.uint8)
    vol[c[0] - 1:c[0] + 2, c[1] - 1:c[1] + 2, c[2] - 1:c[2] + 2] = 1
    return nib.Nifti1Image(vol, wm.affine)


@pytest.fixture
def decoder_fits(monkeypatch) -> list:
    """The decoders fitted by the decode stage during the test (``Decoder.fit`` counted)."""
    from microvba.decode import stage

    fits = []
    real_fit = stage.Decoder.fit

    def counting_fit(self, *args, **kwargs):
        fits.append(self)
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(stage.Decoder, "fit", counting_fit)
    return fits
