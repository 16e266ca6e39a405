"""ROI and map inputs of the decoder that are not what they should be (no database needed)."""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pytest

from microvba._validation import InputError
from microvba.cli import main
from microvba.decode.grid import check_roi_extent, check_roi_values, mni_brain_grid


def test_masks_and_label_images_pass(caplog):
    check_roi_values(np.array([0, 1, 1, 0], float), "roi")
    check_roi_values(np.array([0, 255, np.nan], float), "roi")
    with caplog.at_level(logging.WARNING):
        check_roi_values(np.array([0, 1, 2, 2], float), "labels.nii.gz")
    assert "2 different labels" in caplog.text


@pytest.mark.parametrize("values", [
    np.array([0.0, -2.5, 3.1, 0.2]),      # a t map
    np.array([0.0, 0.01, 0.4, 0.9]),      # a probability map
])
def test_continuous_roi_is_refused(values):
    with pytest.raises(InputError, match="looks like a statistic or probability map"):
        check_roi_values(values, "roi")


def test_whole_brain_roi_is_refused():
    grid = mni_brain_grid(2.0)
    with pytest.raises(InputError, match="covers 100% of the brain"):
        check_roi_extent(grid.mask_img(), grid)


def _cli(tmp_path, *args):
    return main(["decode", *args, "--data-dir", str(tmp_path / "no-database"),
                 "-o", str(tmp_path / "out"), "-q"])


def test_cli_stat_map_as_roi_fails_before_loading_the_database(tmp_path, capsys):
    grid = mni_brain_grid(2.0)
    t = np.random.default_rng(0).normal(size=grid.shape).astype(np.float32)
    nib.save(nib.Nifti1Image(t, grid.affine), tmp_path / "tstat.nii.gz")
    assert _cli(tmp_path, "--roi", str(tmp_path / "tstat.nii.gz")) == 2
    err = capsys.readouterr().err
    assert "tstat.nii.gz" in err and "--map" in err and "database" not in err
    assert not (tmp_path / "out").exists()


def test_cli_brain_mask_as_roi_fails_before_loading_the_database(tmp_path, capsys):
    nib.save(mni_brain_grid(2.0).mask_img(), tmp_path / "brain.nii.gz")
    assert _cli(tmp_path, "--roi", str(tmp_path / "brain.nii.gz")) == 2
    err = capsys.readouterr().err
    assert "covers 100% of the brain" in err and "database" not in err


def test_cli_constant_map_fails_before_any_output(tmp_path, capsys):
    grid = mni_brain_grid(2.0)
    nib.save(grid.mask_img(), tmp_path / "roi.nii.gz")  # would be refused later anyway
    nib.save(nib.Nifti1Image(np.ones(grid.shape, np.float32), grid.affine),
             tmp_path / "map.nii.gz")
    assert _cli(tmp_path, "--map", str(tmp_path / "map.nii.gz")) == 2
    assert "constant" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_output_that_is_a_file(tmp_path, capsys):
    grid = mni_brain_grid(2.0)
    nib.save(grid.mask_img(), tmp_path / "roi.nii.gz")
    (tmp_path / "out").write_text("x")
    assert _cli(tmp_path, "--roi", str(tmp_path / "roi.nii.gz")) == 2
    assert "not a folder" in capsys.readouterr().err


def _small_roi(tmp_path):
    grid = mni_brain_grid(2.0)
    roi = np.zeros(grid.shape, np.uint8)
    roi[40:44, 50:54, 30:34] = 1
    nib.save(nib.Nifti1Image(roi, grid.affine), tmp_path / "roi.nii.gz")


def test_cli_cache_dir_that_is_a_file(tmp_path, capsys):
    _small_roi(tmp_path)
    (tmp_path / "cache").write_text("x")
    assert _cli(tmp_path, "--roi", str(tmp_path / "roi.nii.gz"),
                "--cache-dir", str(tmp_path / "cache")) == 2
    assert "map cache folder is an existing file" in capsys.readouterr().err


def test_cli_bad_top_fails_before_any_output(tmp_path, capsys):
    _small_roi(tmp_path)
    assert _cli(tmp_path, "--roi", str(tmp_path / "roi.nii.gz"), "--top", "0") == 2
    assert "'top' parameter must be a positive int" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_image_outside_mni_field_of_view_warns(caplog):
    from microvba.decode.grid import fov_coverage, to_grid

    grid = mni_brain_grid(2.0)
    values = np.random.default_rng(0).normal(size=(8, 8, 6)).astype(np.float32)
    small = nib.Nifti1Image(values, np.diag([2.0, 2.0, 2.0, 1.0]))
    assert fov_coverage(small, grid) < 0.01
    assert fov_coverage(grid.mask_img(), grid) == 1.0
    with caplog.at_level(logging.WARNING):
        to_grid(small, grid, "continuous")
    assert "is it in MNI space?" in caplog.text
