"""Reading FSL .bval/.bvec files."""

from __future__ import annotations

import numpy as np
import pytest

from microvba._validation import InputError
from microvba.io.gradients import read_bvals, read_bvecs


def test_read_bvals_row_and_column(tmp_path):
    p = tmp_path / "a.bval"
    p.write_text("0 1000 2000.5\n")
    np.testing.assert_array_equal(read_bvals(p), [0, 1000, 2000.5])
    p.write_text("0\n1000\n")
    np.testing.assert_array_equal(read_bvals(p), [0, 1000])


def test_read_bvecs_both_layouts_agree_with_numpy(tmp_path):
    rng = np.random.default_rng(3)
    g = rng.normal(size=(7, 3))
    p = tmp_path / "a.bvec"
    np.savetxt(p, g.T)
    np.testing.assert_allclose(read_bvecs(p), np.loadtxt(p).T)
    np.savetxt(p, g)
    np.testing.assert_allclose(read_bvecs(p), g)


@pytest.mark.parametrize("text, match", [
    ("", "empty"),
    ("0 x 1000", "not all numbers"),
    ("0 -5", "finite and non-negative"),
    ("0 nan", "finite and non-negative"),
    ("0 inf", "finite and non-negative"),
])
def test_bad_bvals(tmp_path, text, match):
    p = tmp_path / "a.bval"
    p.write_text(text)
    with pytest.raises(InputError, match=match):
        read_bvals(p)


@pytest.mark.parametrize("text, match", [
    ("\n \n", "empty"),
    ("1 0\n0 1 0\n0 0 1\n", "different lengths"),
    ("1 0 a\n0 1 0\n0 0 1\n", "not all numbers"),
    ("1 0 0 1\n0 1 0 0\n", r"3 rows .*found 2 rows of 4"),
    ("1 0 nan\n0 1 0\n0 0 1\n", "NaN or infinite"),
])
def test_bad_bvecs(tmp_path, text, match):
    p = tmp_path / "a.bvec"
    p.write_text(text)
    with pytest.raises(InputError, match=match):
        read_bvecs(p)


def test_unreadable_gradient_files(tmp_path):
    with pytest.raises(InputError, match="cannot read b-values"):
        read_bvals(tmp_path / "missing.bval")
    with pytest.raises(InputError, match="cannot read b-vectors"):
        read_bvecs(tmp_path / "missing.bvec")
    p = tmp_path / "bin.bval"
    p.write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(InputError, match="cannot read b-values"):
        read_bvals(p)
