"""Fixtures of the regions tests: the Brainnetome atlas and maps planted in its subregions."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

#: the study's five regions (Brainnetome short name, hemisphere)
STUDY_REGIONS = [("A23c", "L"), ("dCa", "R"), ("IFJ", "R"), ("A9/46d", "R"), ("A7r", "L")]

#: 2 mm MNI grid (FSL's MNI152 2 mm: 91 x 109 x 91)
AFFINE_2MM = np.array([[-2.0, 0, 0, 90], [0, 2.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]])
SHAPE_2MM = (91, 109, 91)


@pytest.fixture(scope="session")
def bn_atlas(shared_data):
    from microvba.regions.atlases import load_atlas

    return load_atlas("brainnetome", data_dir=shared_data)


@pytest.fixture(scope="session")
def reference_2mm() -> nib.Nifti1Image:
    return nib.Nifti1Image(np.zeros(SHAPE_2MM, dtype=np.float32), AFFINE_2MM)


@pytest.fixture(scope="session")
def planted(bn_atlas, reference_2mm):
    """Statistic map with one blob inside each study region (2 mm grid).

    Each blob is the part of the region within 4 mm of the region's most interior voxel,
    valued 6 at that voxel and decreasing with distance. Returns (stat image, list of
    (region, hemisphere, centre ijk, blob mask)).
    """
    stat = np.zeros(SHAPE_2MM, dtype=np.float32)
    blobs = []
    ijk = np.indices(SHAPE_2MM).reshape(3, -1).T.reshape(*SHAPE_2MM, 3)
    for region, hemi in STUDY_REGIONS:
        mask = np.asarray(bn_atlas.region_mask(region, hemi, reference_2mm).dataobj) > 0
        depth = ndimage.distance_transform_edt(mask)
        centre = np.array(np.unravel_index(np.argmax(depth), mask.shape))
        dist = np.linalg.norm(ijk - centre, axis=-1) * 2.0
        blob = mask & (dist <= 4.0)
        stat[blob] = 6.0 - 0.5 * dist[blob]
        blobs.append((region, hemi, centre, blob))
    return nib.Nifti1Image(stat, AFFINE_2MM), blobs
