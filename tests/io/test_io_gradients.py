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


# --- formats written by other tools (a new user's files) ----------------------------------

@pytest.mark.parametrize("text", [
    "0,1000,2000\n",             # comma-separated
    "0\t1000\t2000\t\n\n",      # tabs, trailing tab and blank line
    "0 1000 2000 \r\n",          # Windows line ending, trailing space
    "\ufeff0 1000 2000\n",      # UTF-8 byte-order mark
    "0\r\n1000\r\n2000\r\n",     # one column
])
def test_read_bvals_other_writers(tmp_path, text):
    p = tmp_path / "a.bval"
    p.write_bytes(text.encode("utf-8"))
    np.testing.assert_array_equal(read_bvals(p), [0, 1000, 2000])


@pytest.mark.parametrize("sep, newline", [(",", "\n"), ("\t", "\r\n"), (", ", "\n")])
@pytest.mark.parametrize("transpose", [False, True])
def test_read_bvecs_other_writers(tmp_path, sep, newline, transpose):
    g = np.array([[0, 0, 0], [1, 0, 0], [0, 0.6, 0.8], [0, 1, 0]], float)
    rows = g if transpose else g.T
    text = newline.join(sep.join(f"{v:.6f}" for v in r) for r in rows) + newline + newline
    p = tmp_path / "a.bvec"
    p.write_bytes(text.encode())
    np.testing.assert_allclose(read_bvecs(p), g)


def test_bval_file_with_several_rows_is_refused(tmp_path):
    """A .bvec given as --bval (3 rows) must not pass as 3n b-values."""
    p = tmp_path / "a.bval"
    p.write_text("0 1 0\n0 0 1\n1 0 0\n")
    with pytest.raises(InputError, match="3 rows .* one row"):
        read_bvals(p)


def test_non_unit_problem():
    from microvba.io.gradients import non_unit_problem

    bvals = np.array([0, 5, 1000, 1000])
    ok = np.array([[0, 0, 0], [1, 0, 0], [1, 0, 0], [0, 0.6, 0.8]])
    assert non_unit_problem(bvals, ok) is None
    assert non_unit_problem(bvals, ok * 1.005) is None  # within DIPY's tolerance
    problem, fix = non_unit_problem(bvals, ok * 1.3)
    assert "2 volume(s)" in problem and "|g|=1.3" in problem
    assert "b_eff = b * |g|^2" in fix
    zero = ok.copy()
    zero[3] = 0
    assert "volumes 3 (b=1000, |g|=0)" in non_unit_problem(bvals, zero)[0]


@pytest.mark.parametrize("text, match", [
    ("0 1 1 2 2", "ms/um\\^2"),
    ("0 0.7 1.2 2.8", "ms/um\\^2"),
    ("0 1e9 2e9", "s/m\\^2"),
])
def test_bvals_in_other_units_are_explained(tmp_path, text, match):
    p = tmp_path / "a.bval"
    p.write_text(text)
    with pytest.raises(InputError, match=match):
        read_bvals(p)


@pytest.mark.parametrize("text", ["0 0 0", "0 5 0", "5 5", "0 5 10 1000", "0 30000"])
def test_b0_only_and_high_b_series_are_not_unit_errors(tmp_path, text):
    p = tmp_path / "a.bval"
    p.write_text(text)
    read_bvals(p)


def test_mrtrix_or_dsi_studio_table_given_as_bvec_gets_a_hint(tmp_path):
    p = tmp_path / "grad.b"
    p.write_text("0 0 1 0\n1 0 0 1000\n0 1 0 1000\n0 0 1 1000\n0.6 0.8 0 1000\n")
    with pytest.raises(InputError) as exc:
        read_bvecs(p)
    assert "MRtrix gradient file" in exc.value.problems[0].fix
