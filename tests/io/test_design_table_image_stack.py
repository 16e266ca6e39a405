"""``io.design_table`` and ``io.image_stack``: the readers behind ``microvba randomise``."""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from microvba._validation import InputError
from microvba.io.design_table import is_identifier, read_design_table
from microvba.io.image_stack import check_subject_order, read_image_stack

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def test_design_table_tsv_and_csv(tmp_path):
    frame = pd.DataFrame({"participant_id": ["sub-01", "sub-02", "sub-03"],
                          "score": [1.5, 2.0, -0.5], "sex": ["F", "M", "F"]})
    frame.to_csv(tmp_path / "d.tsv", sep="\t", index=False)
    frame.to_csv(tmp_path / "d.csv", index=False)
    for name in ("d.tsv", "d.csv"):
        got = read_design_table(tmp_path / name)
        assert list(got.index) == ["sub-01", "sub-02", "sub-03"]
        assert got.index.name == "participant_id"
        np.testing.assert_array_equal(got["score"], frame["score"])


def test_design_table_rows_named_by_line_without_unique_ids(tmp_path):
    (tmp_path / "d.tsv").write_text("score\tage\n1\t30\n2\t40\n")
    got = read_design_table(tmp_path / "d.tsv")
    assert list(got.index) == ["line 2", "line 3"]


@pytest.mark.parametrize("text, match", [
    ("/NumWaves 2\n/NumPoints 2\n/Matrix\n1 0\n1 1\n", "FSL design.mat/.con"),
    ("", "the design file is empty"),
    ("a\ta\n1\t2\n", "duplicate column names"),
    ("a\tb\n", "the design has no rows"),
])
def test_design_table_errors_name_the_file(tmp_path, text, match):
    path = tmp_path / "design.tsv"
    path.write_text(text)
    with pytest.raises(InputError, match=match) as exc:
        read_design_table(path)
    assert str(path) in str(exc.value)


def test_missing_design_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_design_table(tmp_path / "nope.tsv")


def test_identifier_columns():
    assert is_identifier(pd.Series(["a.nii", "b.nii", "c.nii"]))
    assert not is_identifier(pd.Series(["F", "M", "F"]))
    assert not is_identifier(pd.Series([1.0, 2.0, 3.0]))


@pytest.fixture
def images(tmp_path, rng):
    data = rng.normal(size=(5, 4, 3, 6)).astype(np.float32)
    mask = np.zeros((5, 4, 3), np.uint8)
    mask[1:4, 1:3, :] = 1
    nib.save(nib.Nifti1Image(data, AFFINE), tmp_path / "all.nii.gz")
    nib.save(nib.Nifti1Image(mask, AFFINE), tmp_path / "mask.nii.gz")
    maps = []
    for i in range(6):
        p = tmp_path / f"sub-{i:02d}_fa.nii.gz"
        nib.save(nib.Nifti1Image(data[..., i], AFFINE), p)
        maps.append(p)
    return tmp_path, data, mask.astype(bool), maps


def test_4d_and_3d_stacks_read_the_same_voxels(images):
    folder, data, mask, maps = images
    four = read_image_stack([folder / "all.nii.gz"], folder / "mask.nii.gz")
    three = read_image_stack(maps, folder / "mask.nii.gz")
    expected = np.stack([data[..., i][mask] for i in range(6)])
    np.testing.assert_array_equal(four.data, expected)
    np.testing.assert_array_equal(three.data, expected)
    np.testing.assert_array_equal(four.mask, mask)
    np.testing.assert_array_equal(four.img.affine, AFFINE)


def test_stack_errors_name_the_file(images, tmp_path):
    folder, data, mask, maps = images
    other = folder / "mask_other.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((5, 4, 4), np.uint8), AFFINE), other)
    with pytest.raises(InputError, match="mask shape") as exc:
        read_image_stack([folder / "all.nii.gz"], other)
    assert str(other) in str(exc.value)
    with pytest.raises(InputError, match="file not found"):
        read_image_stack([folder / "missing.nii.gz"], folder / "mask.nii.gz")
    with pytest.raises(InputError, match="must be 4-D"):
        read_image_stack([maps[0]], folder / "mask.nii.gz")
    empty = folder / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 4, 3), np.uint8), AFFINE), empty)
    with pytest.raises(InputError, match="the mask is empty"):
        read_image_stack(maps, empty)


def test_non_binary_mask_warns(images, caplog):
    folder, data, mask, maps = images
    prob = folder / "prob.nii.gz"
    nib.save(nib.Nifti1Image(mask * 0.7, AFFINE), prob)
    with caplog.at_level(logging.WARNING):
        stack = read_image_stack(maps, prob)
    assert "not binary" in caplog.text
    np.testing.assert_array_equal(stack.mask, mask)


def test_subject_order(images):
    folder, data, mask, maps = images
    rows = pd.DataFrame(index=pd.Index([f"sub-{i:02d}" for i in range(6)],
                                       name="participant_id"))
    check_subject_order(maps, rows, folder / "d.tsv")  # same order: no error
    with pytest.raises(InputError, match="another order than the input images"):
        check_subject_order(maps[::-1], rows, folder / "d.tsv")
    fewer = rows.iloc[:5].rename(index={"sub-04": "sub-99"})
    with pytest.raises(InputError, match="name different subjects"):
        check_subject_order(maps[:5], fewer, folder / "d.tsv")
