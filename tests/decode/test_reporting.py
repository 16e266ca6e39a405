"""Nothing dropped silently: ROI voxels outside the brain mask, features without a map, and
integer-percent probability maps given as ROIs."""

from __future__ import annotations

import json
import logging

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from microvba._validation import InputError
from microvba.cli import main
from microvba.decode.grid import (
    check_roi_values,
    looks_like_percent_map,
    mni_brain_grid,
    roi_voxels,
    select_roi,
)

ATLAS = "atlases/brainnetome/BN_Atlas_246_1mm_spmgrid.nii.gz"


def _percent_blob(shape=(60, 60, 60), sigma_vox=8.0, centre=None) -> np.ndarray:
    centre = np.asarray(shape) // 2 if centre is None else np.asarray(centre)
    d2 = ((np.indices(shape) - centre[:, None, None, None]) ** 2).sum(axis=0)
    return np.rint(100 * np.exp(-d2 / (2 * sigma_vox ** 2))).astype(np.uint8)


def _edge_roi(grid) -> tuple[nib.Nifti1Image, int, int]:
    """A box straddling the top of the brain: (image, voxels inside, voxels outside)."""
    k_top = np.flatnonzero(grid.mask.any(axis=(0, 1))).max()
    c = np.argwhere(grid.mask[:, :, k_top])[0]
    vol = np.zeros(grid.shape, np.uint8)
    vol[c[0] - 3:c[0] + 4, c[1] - 3:c[1] + 4, k_top - 4:k_top + 3] = 1
    inside = int((vol.astype(bool) & grid.mask).sum())
    return nib.Nifti1Image(vol, grid.affine), inside, int(vol.sum()) - inside


# ------------------------------------------------------------------ probability maps


@pytest.mark.parametrize("sigma", [4.0, 8.0, 15.0])
def test_percent_probability_map_is_detected(sigma):
    assert looks_like_percent_map(_percent_blob(sigma_vox=sigma))


def test_label_atlas_is_not_a_probability_map(shared_data):
    atlas = np.asarray(nib.load(shared_data / ATLAS).dataobj)
    assert not looks_like_percent_map(np.where(atlas <= 100, atlas, 0))  # <= 100 labels
    check_roi_values(np.where(atlas <= 100, atlas, 0).astype(float), "atlas",
                     warn_labels=False)


def test_percent_map_refused_unless_labels_asked():
    blob = _percent_blob().astype(float)
    with pytest.raises(InputError, match="integer-percent probability map") as err:
        check_roi_values(blob, "prob.nii.gz")
    assert "--roi-threshold" in str(err.value) and "--labels" in str(err.value)
    check_roi_values(blob, "prob.nii.gz", warn_labels=False, labels_ok=True)


def test_cli_refuses_percent_map_before_loading_the_database(tmp_path, capsys):
    grid = mni_brain_grid(2.0)
    blob = _percent_blob(grid.shape, 4.0, np.array(grid.shape) // 2)
    nib.save(nib.Nifti1Image(blob, grid.affine), tmp_path / "prob.nii.gz")
    code = main(["decode", "--roi", str(tmp_path / "prob.nii.gz"),
                 "--data-dir", str(tmp_path / "no-database"), "-o", str(tmp_path / "out"),
                 "-q"])
    assert code == 2
    err = capsys.readouterr().err
    assert "prob.nii.gz" in err and "--roi-threshold" in err and "database" not in err
    assert not (tmp_path / "out").exists()


def test_select_roi_threshold_and_labels(tmp_path):
    grid = mni_brain_grid(2.0)
    blob = _percent_blob(grid.shape, 4.0, np.array(grid.shape) // 2)
    path = tmp_path / "prob.nii.gz"
    nib.save(nib.Nifti1Image(blob, grid.affine), path)
    roi = np.asarray(select_roi(path, threshold=50).dataobj)
    np.testing.assert_array_equal(roi, (blob >= 50).astype(np.uint8))
    lab = np.asarray(select_roi(path, labels=[100, 99]).dataobj)
    np.testing.assert_array_equal(lab, np.isin(blob, [99, 100]).astype(np.uint8))
    with pytest.raises(InputError, match="has no label"):
        select_roi(path, labels=[101])


# ------------------------------------------------------------------ out-of-mask voxels


def test_roi_voxels_outside_the_brain_are_counted():
    grid = mni_brain_grid(2.0)
    img, inside, outside = _edge_roi(grid)
    idx, n_out = roi_voxels(img, grid, return_outside=True)
    assert idx.size == inside and n_out == outside and outside > 0.05 * (inside + outside)


def test_decode_roi_reports_and_warns_out_of_mask(lda_decoder, caplog):
    img, inside, outside = _edge_roi(lda_decoder.maps_.grid)
    with caplog.at_level(logging.WARNING, logger="microvba"):
        table = lda_decoder.decode_roi(img)
    assert table.attrs["roi_voxels"] == inside
    assert table.attrs["roi_voxels_outside_mask"] == outside
    assert table.attrs["roi_fraction_outside_mask"] == pytest.approx(
        outside / (inside + outside))
    assert any("outside the MNI brain mask" in r.getMessage() for r in caplog.records)


def test_decode_roi_inside_the_brain_does_not_warn(lda_decoder, rois, caplog):
    with caplog.at_level(logging.WARNING, logger="microvba"):
        table = lda_decoder.decode_roi(rois["dCa_R"])
    assert table.attrs["roi_fraction_outside_mask"] < 0.05
    assert not any("not decoded" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ CLI sidecars


def test_cli_sidecar_lists_dropped_features_and_outside_voxels(shared_data, map_cache,
                                                               tmp_path, capsys):
    """Threshold 0.001 makes three LDA topics select every study: they are listed in the
    TSV sidecar with their count and reason, and the JSON records the out-of-mask voxels."""
    grid = mni_brain_grid(2.0)
    img, inside, outside = _edge_roi(grid)
    nib.save(img, tmp_path / "edge.nii.gz")
    out = tmp_path / "out"
    code = main(["decode", "--roi", str(tmp_path / "edge.nii.gz"), "--threshold", "0.001",
                 "--data-dir", str(shared_data), "--cache-dir", str(map_cache),
                 "--n-null", "50", "-o", str(out), "-q"])
    assert code == 0
    dropped = pd.read_table(out / "edge_vocab-lda50_dropped-features.tsv")
    assert list(dropped.columns[:3]) == ["feature", "n_selected", "reason"]
    assert len(dropped) == 3
    assert (dropped["reason"] == "threshold selects every study").all()
    assert (dropped["n_selected"] > 14000).all()
    side = json.loads((out / "edge_vocab-lda50_decoding.json").read_text())
    assert side["DroppedFeatures"]["n"] == 3
    assert side["ROI"]["voxels_decoded"] == inside
    assert side["ROI"]["voxels_outside_brain_mask"] == outside
    table = pd.read_table(out / "edge_vocab-lda50_decoding.tsv")
    assert len(table) == 47 and not set(dropped["feature"]) & set(table["feature"])
    assert "have no map" in capsys.readouterr().out


def test_cli_atlas_labels(shared_data, map_cache, tmp_path):
    out = tmp_path / "out"
    code = main(["decode", "--roi", str(shared_data / ATLAS), "--labels", "211", "212",
                 "--data-dir", str(shared_data), "--cache-dir", str(map_cache),
                 "--n-null", "50", "--prefix", "amygdala_L", "-o", str(out), "-q"])
    assert code == 0
    table = pd.read_table(out / "amygdala_L_vocab-lda50_decoding.tsv")
    assert table["feature"].iloc[0] == "26_emotional_amygdala_negative"
    side = json.loads((out / "amygdala_L_vocab-lda50_decoding.json").read_text())
    assert side["ROI"]["labels"] == [211, 212]


def test_nearest_resampling_equals_nilearn(shared_data):
    """The ROI path's own nearest-neighbour resampling against nilearn's resample_img."""
    from nilearn.image import resample_img

    from microvba.decode.grid import resample_nearest

    grid = mni_brain_grid(2.0)
    img = nib.load(shared_data / ATLAS)
    data = np.nan_to_num(np.asarray(img.dataobj, np.float32))  # as to_grid_volume does
    ref = resample_img(nib.Nifti1Image(data, img.affine), target_affine=grid.affine,
                       target_shape=grid.shape, interpolation="nearest", force_resample=True,
                       copy_header=True)
    np.testing.assert_array_equal(resample_nearest(data, img.affine, grid),
                                  np.asarray(ref.dataobj))
    # an oblique, anisotropic source too
    rot = np.array([[0.0, -1.5, 0, 60], [1.2, 0, 0, -100], [0, 0, 2.5, -70], [0, 0, 0, 1]])
    blob = _percent_blob((80, 90, 60), 10.0).astype(np.float32)
    ref = resample_img(nib.Nifti1Image(blob, rot), target_affine=grid.affine,
                       target_shape=grid.shape, interpolation="nearest", force_resample=True,
                       copy_header=True)
    np.testing.assert_array_equal(resample_nearest(blob, rot, grid), np.asarray(ref.dataobj))
