"""``microvba randomise`` with inputs as users bring them: 3-D maps, CSV, FSL design files."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from microvba.cli import main

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
N, SHAPE = 10, (6, 6, 5)


@pytest.fixture
def d(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.normal(size=SHAPE + (N,)).astype(np.float32)
    mask = np.zeros(SHAPE, np.uint8)
    mask[1:-1, 1:-1, 1:-1] = 1
    nib.save(nib.Nifti1Image(data, AFFINE), tmp_path / "all.nii.gz")
    nib.save(nib.Nifti1Image(mask, AFFINE), tmp_path / "mask.nii.gz")
    for i in range(N):
        nib.save(nib.Nifti1Image(data[..., i], AFFINE), tmp_path / f"sub-{i:02d}_fa.nii.gz")
    score, age = rng.normal(size=N), rng.normal(40, 5, size=N)
    lines = ["participant_id\tscore\tage"] + [f"sub-{i:02d}\t{score[i]:.4f}\t{age[i]:.2f}"
                                              for i in range(N)]
    (tmp_path / "design.tsv").write_text("\n".join(lines) + "\n")
    return tmp_path


def run(d, *extra, inputs=None, design="design.tsv"):
    inputs = inputs or [str(d / "all.nii.gz")]
    return main(["randomise", "-i", *inputs, "-m", str(d / "mask.nii.gz"), "-d",
                 str(d / design), "--contrast", "score", "-o", str(d / "out" / "fa"),
                 "-n", "20", "-q", *extra])


def maps(d):
    return {k: nib.load(d / "out" / f"fa_{k}.nii.gz").get_fdata() for k in ("tstat1",)}


def test_list_of_3d_maps_equals_the_4d_stack(d):
    assert run(d) == 0
    ref = maps(d)
    side = json.loads((d / "out" / "fa_randomise.json").read_text())
    assert "input" in side["InputHashes"]
    assert run(d, inputs=[str(d / f"sub-{i:02d}_fa.nii.gz") for i in range(N)]) == 0
    np.testing.assert_array_equal(maps(d)["tstat1"], ref["tstat1"])


def test_3d_maps_in_another_order_than_the_design_are_refused(d, capsys):
    order = [1, 0] + list(range(2, N))
    assert run(d, inputs=[str(d / f"sub-{i:02d}_fa.nii.gz") for i in order]) == 2
    err = capsys.readouterr().err
    assert "another order" in err and "sub-01" in err and "design.tsv" in err
    assert not (d / "out").exists()


def test_3d_maps_on_different_grids_are_refused(d, capsys):
    nib.save(nib.Nifti1Image(np.zeros((5, 6, 5), np.float32), AFFINE), d / "sub-03_fa.nii.gz")
    assert run(d, inputs=[str(d / f"sub-{i:02d}_fa.nii.gz") for i in range(N)]) == 2
    assert "sub-03_fa.nii.gz: grid" in capsys.readouterr().err


def test_csv_design_is_read(d):
    assert run(d) == 0
    ref = maps(d)["tstat1"]
    text = (d / "design.tsv").read_text().replace("\t", ",")
    (d / "design.csv").write_text(text)
    assert run(d, design="design.csv") == 0
    np.testing.assert_array_equal(maps(d)["tstat1"], ref)


def test_fsl_design_mat_is_explained(d, capsys):
    (d / "design.mat").write_text("/NumWaves 2\n/NumPoints 10\n/PPheights 1 1\n\n/Matrix\n"
                                  + "1 0.5\n" * N)
    assert run(d, design="design.mat") == 2
    err = capsys.readouterr().err
    assert "FSL design.mat" in err and "--contrast" in err


def test_duplicate_design_columns_are_refused(d, capsys):
    text = (d / "design.tsv").read_text().replace("participant_id\tscore\tage",
                                                  "participant_id\tscore\tscore")
    (d / "design.tsv").write_text(text)
    assert run(d) == 2
    assert "duplicate column names ['score']" in capsys.readouterr().err


def test_missing_value_names_the_subject(d, capsys):
    lines = (d / "design.tsv").read_text().splitlines()
    lines[4] = "sub-03\tn/a\t40"
    (d / "design.tsv").write_text("\n".join(lines) + "\n")
    assert run(d) == 2
    assert "sub-03" in capsys.readouterr().err


def test_unknown_contrast_lists_the_columns(d, capsys):
    assert main(["randomise", "-i", str(d / "all.nii.gz"), "-m", str(d / "mask.nii.gz"),
                 "-d", str(d / "design.tsv"), "--contrast", "resilience",
                 "-o", str(d / "out" / "fa"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "--contrast column 'resilience'" in err and "['score', 'age']" in err


def test_output_prefix_below_a_file_exits_2(d, capsys):
    (d / "out").write_text("x")
    assert run(d) == 2
    assert "not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("prefix", ["out/", "existing"])
def test_output_prefix_that_is_a_folder_is_refused(d, capsys, prefix):
    (d / "existing").mkdir()
    assert main(["randomise", "-i", str(d / "all.nii.gz"), "-m", str(d / "mask.nii.gz"),
                 "-d", str(d / "design.tsv"), "--contrast", "score",
                 "-o", str(d) + "/" + prefix, "-q"]) == 2
    assert "the output prefix is a folder" in capsys.readouterr().err


def test_probability_mask_warns(d, caplog):
    m = nib.load(d / "mask.nii.gz").get_fdata() * 0.6
    nib.save(nib.Nifti1Image(m.astype(np.float32), AFFINE), d / "mask.nii.gz")
    assert run(d) == 0
    assert "not binary" in caplog.text


def test_3d_maps_and_design_naming_different_subjects(d, capsys, caplog):
    inputs = [str(d / f"sub-{i:02d}_fa.nii.gz") for i in range(N)]
    text = (d / "design.tsv").read_text()
    (d / "design.tsv").write_text(text.replace("sub-09", "sub-99"))
    assert run(d, inputs=inputs) == 2
    assert "images without a row: ['sub-09']" in capsys.readouterr().err
    (d / "design.tsv").write_text(text.replace("sub-", "P"))  # another ID scheme
    assert run(d, inputs=inputs) == 0
    assert "order cannot be checked" in caplog.text


def test_default_covariates_are_named_in_a_design_error(d, capsys):
    text = (d / "design.tsv").read_text().splitlines()
    text = [text[0] + "\tsite"] + [line + "\tA" for line in text[1:]]
    (d / "design.tsv").write_text("\n".join(text) + "\n")
    assert run(d) == 2
    err = capsys.readouterr().err
    assert "'site'" in err and "choose them with --covariates" in err
    assert run(d, "--covariates", "age") == 0


def test_constant_voxels_are_left_out_not_given_a_rounding_t(d, caplog):
    img = nib.load(d / "all.nii.gz")
    data = img.get_fdata().astype(np.float32)
    data[2, 2, 2, :] = 0.7  # the same value in every subject
    nib.save(nib.Nifti1Image(data, AFFINE), d / "all.nii.gz")
    assert run(d) == 0
    assert "1 of 48 mask voxel(s) have the same value" in caplog.text
    t = maps(d)["tstat1"]
    assert t[2, 2, 2] == 0 and np.count_nonzero(t) == 47
    data[1:-1, 1:-1, 1:-1, :] = 0.7
    nib.save(nib.Nifti1Image(data, AFFINE), d / "all.nii.gz")
    assert run(d) == 2
