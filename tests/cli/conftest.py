"""Fixtures shared by the command-line tests."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest


@pytest.fixture(scope="module")
def msmt(shared_data):
    """The MRtrix3 multi-shell crop (image, float32 data, b-values, file paths)."""
    d = shared_data / "dwi"
    img = nib.load(str(d / "msmt_dwi.nii.gz"))
    return {"img": img, "data": img.get_fdata(dtype=np.float32),
            "bvals": np.loadtxt(d / "msmt_dwi.bval"),
            "bval": d / "msmt_dwi.bval", "bvec": d / "msmt_dwi.bvec",
            "mask": d / "msmt_mask.nii.gz"}
