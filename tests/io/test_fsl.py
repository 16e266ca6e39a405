"""FSL VEST files (design.mat, design.con, design.grp) as FSL's Glm and Text2Vest write them."""

from __future__ import annotations

import numpy as np
import pytest

from microvba._validation import InputError
from microvba.io.fsl import (
    format_vest,
    is_vest,
    read_design_con,
    read_design_grp,
    read_design_mat,
    read_vest,
)

# as FSL's Glm_gui writes them: tab separated, %e numbers, /PPheights with a double tab
DESIGN_MAT = ("/NumWaves\t3\n/NumPoints\t4\n/PPheights\t\t1.000000e+00\t2.000000e+00\t"
              "1.500000e+00\n\n/Matrix\n"
              "1.000000e+00\t-1.000000e+00\t5.000000e-01\t\n"
              "1.000000e+00\t1.000000e+00\t-1.000000e+00\t\n"
              "1.000000e+00\t-1.000000e+00\t1.000000e+00\t\n"
              "1.000000e+00\t1.000000e+00\t-5.000000e-01\t\n")
DESIGN_CON = ("/ContrastName1\tgroup A > B\n/ContrastName2\tage neg\n/NumWaves\t3\n"
              "/NumContrasts\t2\n/PPheights\t\t2.000000e+00\t1.000000e+00\n"
              "/RequiredEffect\t\t1.234\t2.345\n\n/Matrix\n"
              "0.000000e+00\t1.000000e+00\t0.000000e+00\t\n"
              "0.000000e+00\t0.000000e+00\t-1.000000e+00\t\n")


def write(tmp_path, name, text, newline="\n"):
    path = tmp_path / name
    path.write_bytes(text.replace("\n", newline).encode())
    return path


def problems(exc: pytest.ExceptionInfo) -> str:
    return str(exc.value)


def test_design_mat_as_glm_writes_it(tmp_path):
    d = read_design_mat(write(tmp_path, "design.mat", DESIGN_MAT), n_images=4)
    np.testing.assert_array_equal(d.matrix, [[1, -1, 0.5], [1, 1, -1], [1, -1, 1],
                                             [1, 1, -0.5]])
    assert (d.n_waves, d.n_points, d.names) == (3, 4, ["EV1", "EV2", "EV3"])
    assert d.pp_heights == (1.0, 2.0, 1.5)
    assert d.has_constant()


def test_design_con_names_and_matrix(tmp_path):
    d = read_design_mat(write(tmp_path, "design.mat", DESIGN_MAT))
    c = read_design_con(write(tmp_path, "design.con", DESIGN_CON), d)
    assert c.names == ["group A > B", "age neg"]
    np.testing.assert_array_equal(c.matrix, [[0, 1, 0], [0, 0, -1]])
    assert c.select(None) == [0, 1]
    assert c.select("2") == [1]
    assert c.select("2, 1") == [1, 0]
    assert c.select("group A > B") == [0]
    assert c.select("age neg,1") == [1, 0]
    with pytest.raises(InputError, match="contrast number 3 is out of range"):
        c.select("3")
    with pytest.raises(InputError, match="no contrast named 'iq'"):
        c.select("iq")


def test_crlf_spaces_blank_lines_and_comments(tmp_path):
    text = ("# written by hand\r\n/NumWaves 2\r\n\r\n/NumPoints   3\r\nsome note FSL skips\r\n"
            "/Matrix\r\n1 0.5\r\n\r\n# subject 2\r\n1   -0.5\r\n 1\t0 \r\n\r\n")
    path = write(tmp_path, "design.mat", text)
    assert is_vest(path)
    d = read_design_mat(path)
    np.testing.assert_array_equal(d.matrix, [[1, 0.5], [1, -0.5], [1, 0]])
    assert d.pp_heights is None
    # Text2Vest style (no /PPheights), old Mac line ends, BOM
    path.write_bytes(b"\xef\xbb\xbf/NumWaves 1\r/NumPoints 2\r/Matrix\r1\r2\r")
    np.testing.assert_array_equal(read_design_mat(path).matrix, [[1], [2]])


def test_unnamed_contrasts_get_numbered_names(tmp_path):
    path = write(tmp_path, "design.con", "/ContrastName1\t\n/NumWaves\t2\n/NumContrasts\t2\n"
                                         "/Matrix\n1 0\n0 1\n")
    assert read_design_con(path).names == ["C1", "C2"]


@pytest.mark.parametrize(("text", "match"), [
    ("/NumWaves\t3\n/NumPoints\t5\n/Matrix\n" + "1\t2\t3\n" * 4,
     "/NumPoints is 5 but the matrix has 4 row"),
    ("/NumWaves\t2\n/NumPoints\t3\n/Matrix\n1 2\n1 2 3\n1 2\n",
     r"/NumWaves is 2 but 1 matrix row\(s\) have another number of values: line 5 has 3"),
    ("/NumWaves\t2\n/NumPoints\t2\n/Matrix\n1 2\n1 n/a\n", "line 5: 'n/a' is not a finite"),
    ("/NumWaves\t2\n/NumPoints\t2\n/Matrix\n1 2\n1 nan\n", "'nan' is not a finite number"),
    ("/NumWaves\t2\n/NumPoints\t2\n1 2\n1 3\n", "no /Matrix line"),
    ("/NumWaves\t2\n/Matrix\n1 2\n", "the /NumPoints header line is missing"),
    ("/NumWaves\ttwo\n/NumPoints\t1\n/Matrix\n1 2\n", "/NumWaves is 'two', not a positive"),
    ("/NumWaves\t2\n/NumPoints\t1\n/Matrix\n", "the /Matrix section is empty"),
    ("/NumWaves\t2\n/NumWaves\t2\n/NumPoints\t1\n/Matrix\n1 2\n", "/NumWaves is given twice"),
    ("/NumWaves\t1\n/Matrix\n1\n/NumPoints\t1\n", "header line '/NumPoints' after /Matrix"),
    ("/NumWaves\t2\n/NumContrasts\t1\n/Matrix\n1 0\n", "this is a contrast file"),
])
def test_malformed_design_mat(tmp_path, text, match):
    path = write(tmp_path, "design.mat", text)
    with pytest.raises(InputError, match=match) as exc:
        read_design_mat(path)
    assert all(p.file == str(path) and p.fix for p in exc.value.problems)


def test_every_count_problem_is_reported_at_once(tmp_path):
    path = write(tmp_path, "design.mat", "/NumWaves 3\n/NumPoints 3\n/Matrix\n1 2\n1 2\n")
    with pytest.raises(InputError) as exc:
        read_design_mat(path)
    assert len(exc.value.problems) == 2


def test_rows_must_match_the_images(tmp_path):
    path = write(tmp_path, "design.mat", DESIGN_MAT)
    with pytest.raises(InputError, match="4 rows .* but the input has 5 volumes") as exc:
        read_design_mat(path, n_images=5)
    assert exc.value.problems[0].file == str(path)


@pytest.mark.parametrize(("text", "match"), [
    ("/NumWaves\t2\n/NumContrasts\t1\n/Matrix\n1 0\n",
     "/NumWaves is 2 but the design .*design.mat has 3 columns"),
    ("/NumWaves\t3\n/NumContrasts\t2\n/Matrix\n0 1 0\n", "/NumContrasts is 2 but the matrix"),
    ("/NumWaves\t3\n/NumContrasts\t1\n/Matrix\n0 0 0\n", "contrast 1 .* is all zeros"),
    ("/ContrastName3\tx\n/NumWaves\t3\n/NumContrasts\t1\n/Matrix\n0 1 0\n",
     "/ContrastName3 but /NumContrasts is 1"),
    ("/NumWaves\t3\n/NumPoints\t1\n/Matrix\n0 1 0\n", "this is a design matrix"),
    ("/NumWaves\t3\n/NumContrasts\t1\n/Matrix\n0 x 0\n", "'x' is not a finite number"),
])
def test_malformed_design_con(tmp_path, text, match):
    design = read_design_mat(write(tmp_path, "design.mat", DESIGN_MAT))
    path = write(tmp_path, "design.con", text)
    with pytest.raises(InputError, match=match) as exc:
        read_design_con(path, design)
    assert exc.value.problems[0].file == str(path)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(InputError, match="the design.mat file does not exist"):
        read_design_mat(tmp_path / "nope.mat")
    (tmp_path / "bin.mat").write_bytes(b"\x00\x01\x02/NumWaves")
    with pytest.raises(InputError, match="binary"):
        read_vest(tmp_path / "bin.mat")
    assert not is_vest(tmp_path / "nope.mat")
    assert not is_vest(write(tmp_path, "d.tsv", "participant_id\tscore\nsub-1\t1\n"))


def test_design_grp(tmp_path):
    path = write(tmp_path, "design.grp", "/NumWaves\t1\n/NumPoints\t4\n\n/Matrix\n1\n1\n2\n2\n")
    np.testing.assert_array_equal(read_design_grp(path, n_images=4), [1, 1, 2, 2])
    with pytest.raises(InputError, match="has 4 rows but the input has 3"):
        read_design_grp(path, n_images=3)
    write(tmp_path, "design.grp", "/NumWaves\t1\n/NumPoints\t2\n/Matrix\n1.5\n1\n")
    with pytest.raises(InputError, match="not integers"):
        read_design_grp(path)


def test_intercept_and_demeaning_checks(tmp_path):
    cell_means = format_vest([[1, 0], [1, 0], [0, 1], [0, 1]])
    assert read_design_mat(write(tmp_path, "a.mat", cell_means)).has_constant()
    slope = read_design_mat(write(tmp_path, "b.mat", format_vest([[1.0], [2.0], [4.0]])))
    assert not slope.has_constant() and not slope.demeaned()
    demeaned = read_design_mat(write(tmp_path, "c.mat", format_vest([[-1.0], [0.0], [1.0]])))
    assert not demeaned.has_constant() and demeaned.demeaned()


def test_format_vest_round_trips(tmp_path):
    X = np.array([[1, 0.25, -3], [1, -0.25, 2e-5]])
    np.testing.assert_allclose(read_design_mat(write(tmp_path, "d.mat", format_vest(X))).matrix,
                               X)
    con = format_vest([[0, 1, 0]], contrast_names=["slope"])
    c = read_design_con(write(tmp_path, "d.con", con))
    assert c.names == ["slope"] and c.matrix.tolist() == [[0, 1, 0]]
