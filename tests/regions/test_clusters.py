"""Cluster tables against nilearn's get_clusters_table, and the corrected-map route."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from microvba._validation import InputError
from microvba.regions.clusters import cluster_table, peak_table

from .conftest import AFFINE_2MM


def _smooth_map(seed: int, shape=(36, 42, 34), sigma=2.0) -> nib.Nifti1Image:
    rng = np.random.default_rng(seed)
    d = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return nib.Nifti1Image((d / d.std()).astype(np.float32), AFFINE_2MM)


def _nilearn_table(img, threshold, two_sided):
    from nilearn.reporting import get_clusters_table

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_clusters_table(img, threshold, two_sided=two_sided, min_distance=8.0)


@pytest.mark.parametrize("seed,threshold,two_sided", [(0, 2.0, True), (1, 2.5, False),
                                                      (2, 1.5, True)])
def test_peaks_and_sizes_equal_nilearn(seed, threshold, two_sided):
    img = _smooth_map(seed)
    table, label_img = cluster_table(img, threshold=threshold, connectivity=6,
                                     two_sided=two_sided, min_distance_mm=8.0)
    ref = _nilearn_table(img, threshold, two_sided)
    mine = peak_table(table)
    assert len(mine) == len(ref) > 10
    assert np.array_equal(mine[["X", "Y", "Z"]].to_numpy(float),
                          ref[["X", "Y", "Z"]].to_numpy(float))
    assert np.allclose(mine["Peak Stat"].to_numpy(float), ref["Peak Stat"].to_numpy(float),
                       rtol=1e-5, atol=1e-5)
    ref_size = pd.to_numeric(ref["Cluster Size (mm3)"], errors="coerce").to_numpy(float)
    assert np.array_equal(np.isnan(ref_size), np.isnan(mine["Cluster Size (mm3)"]))
    ok = ~np.isnan(ref_size)
    assert np.allclose(mine["Cluster Size (mm3)"][ok], ref_size[ok])
    # main peaks are exact
    assert np.array_equal(table["peak_stat"].to_numpy(np.float32),
                          ref.loc[ok, "Peak Stat"].to_numpy(np.float32))
    labels = np.asarray(label_img.dataobj)
    assert np.array_equal(np.bincount(labels.ravel())[1:], table["n_voxels"].to_numpy())
    assert np.allclose(table["volume_mm3"], table["n_voxels"] * 8.0)


def test_columns_order_tail_and_centre_of_mass():
    img = _smooth_map(3)
    table, label_img = cluster_table(img, threshold=2.0, two_sided=True)
    assert list(table.columns[:5]) == ["cluster_id", "tail", "n_voxels", "volume_mm3",
                                       "peak_stat"]
    assert list(table["cluster_id"]) == list(range(1, len(table) + 1))
    pos = table[table["tail"] == 1]
    assert (pos["peak_stat"] > 2).all() and (table[table["tail"] == -1]["peak_stat"] < -2).all()
    assert (np.diff(pos["peak_stat"]) <= 0).all()  # numbered by decreasing peak
    labels = np.asarray(label_img.dataobj)
    vox = np.argwhere(labels == 1).mean(axis=0)
    assert np.allclose(table.loc[0, ["com_x", "com_y", "com_z"]].to_numpy(float),
                       nib.affines.apply_affine(AFFINE_2MM, vox))
    # sub-peaks are at least 8 mm from each other and from the peak
    for _, row in table.iterrows():
        pts = [[row.peak_x, row.peak_y, row.peak_z]]
        for s in filter(None, row["subpeaks"].split("; ")):
            pts.append([float(v) for v in s.split(":")[0].split(",")])
        pts = np.array(pts)
        dist = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
        assert (dist[np.triu_indices(len(pts), 1)] > 8.0).all()


def test_connectivity_26_merges_diagonal_neighbours():
    data = np.zeros((10, 10, 10), np.float32)
    data[2, 2, 2] = 5.0
    data[3, 3, 3] = 4.0  # corner neighbour only
    img = nib.Nifti1Image(data, AFFINE_2MM)
    assert len(cluster_table(img, threshold=1.0, connectivity=26)[0]) == 1
    assert len(cluster_table(img, threshold=1.0, connectivity=18)[0]) == 2
    assert len(cluster_table(img, threshold=1.0, connectivity=6)[0]) == 2


def test_corrp_route_and_sign_of_negative_contrast():
    img = _smooth_map(4)
    stat = np.asarray(img.dataobj)
    corrp = np.where(np.abs(stat) > 2.2, 0.99, 0.5).astype(np.float32)
    corrp_img = nib.Nifti1Image(corrp, AFFINE_2MM)
    by_t, _ = cluster_table(img, threshold=2.2, two_sided=True)
    by_p, _ = cluster_table(img, corrp_img=corrp_img, alpha=0.05, two_sided=True)
    assert np.array_equal(by_t[["n_voxels", "peak_x", "peak_y", "peak_z"]].to_numpy(),
                          by_p[["n_voxels", "peak_x", "peak_y", "peak_z"]].to_numpy())
    # one-sided corrp of a negative contrast given as the raw t: negative peaks, tail -1
    neg = nib.Nifti1Image(np.where(stat < -2.2, 0.99, 0.0).astype(np.float32), AFFINE_2MM)
    table, _ = cluster_table(img, corrp_img=neg)
    assert (table["tail"] == -1).all() and (table["peak_stat"] < -2.2).all()
    assert np.isclose(table["peak_stat"].min(), stat.min())
    # nothing significant: an empty table and an empty label image
    none, lab = cluster_table(img, corrp_img=nib.Nifti1Image(np.zeros_like(corrp), AFFINE_2MM))
    assert len(none) == 0 and not np.asarray(lab.dataobj).any()


def test_mask_and_min_voxels():
    img = _smooth_map(5)
    mask = np.zeros(img.shape, np.uint8)
    mask[:18] = 1
    table, lab = cluster_table(img, nib.Nifti1Image(mask, AFFINE_2MM), threshold=1.5,
                               min_voxels=20)
    labels = np.asarray(lab.dataobj)
    assert not labels[18:].any() and (table["n_voxels"] >= 20).all()


def test_bad_inputs():
    img = _smooth_map(6)
    with pytest.raises(InputError, match="neither a corrected map nor a threshold"):
        cluster_table(img)
    with pytest.raises(InputError, match="'connectivity' parameter must be one of"):
        cluster_table(img, threshold=2.0, connectivity=8)
    with pytest.raises(InputError, match="min_distance_mm must be positive"):
        cluster_table(img, threshold=2.0, min_distance_mm=0)
    with pytest.raises(InputError, match="must be a 3-D image"):
        cluster_table(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), AFFINE_2MM),
                      threshold=1.0)
    with pytest.raises(InputError, match="mask's shape"):
        cluster_table(img, nib.Nifti1Image(np.ones((3, 3, 3), np.uint8), AFFINE_2MM),
                      threshold=1.0)
    with pytest.raises(InputError, match="corrected map's shape"):
        cluster_table(img, corrp_img=nib.Nifti1Image(np.ones((3, 3, 3), np.float32),
                                                     AFFINE_2MM))
    with pytest.raises(InputError, match="'alpha' parameter must be in"):
        cluster_table(img, threshold=1.0, alpha=2.0)
