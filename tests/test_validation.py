"""InputError, ProblemCollector and the parameter checks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from microvba._validation import (
    InputError,
    Problem,
    ProblemCollector,
    check_choice,
    check_in_range,
    check_positive_int,
)


def test_input_error_from_message():
    err = InputError("b-values are not all numbers", file=Path("a/sub-01_dwi.bval"),
                     fix="Write numbers.")
    assert isinstance(err, ValueError)
    (p,) = err.problems
    assert p == Problem("a/sub-01_dwi.bval", "b-values are not all numbers", "Write numbers.")
    assert str(err) == ("1 problem found in the input:\n"
                        "  - a/sub-01_dwi.bval: b-values are not all numbers\n"
                        "    fix: Write numbers.")


def test_input_error_without_file():
    assert InputError("bad").problems[0].file == "<input>"


def test_collector_gathers_every_problem():
    c = ProblemCollector()
    assert not c
    c.raise_if_any()  # nothing to raise
    c.add(Path("x.tsv"), "one", "fix one")
    c.extend(InputError([Problem("y", "two", "f2"), Problem("z", "three", "f3")]))
    assert c and len(c.problems) == 3
    with pytest.raises(InputError, match=r"^3 problems found") as info:
        c.raise_if_any()
    text = str(info.value)
    for s in ("x.tsv: one", "y: two", "z: three", "fix: f3"):
        assert s in text


@pytest.mark.parametrize("value, expected", [
    (1, 1), (5000, 5000), (5000.0, 5000), (np.int64(7), 7), (np.int32(2), 2),
    (np.float32(4.0), 4), (10**30, 10**30),
])
def test_check_positive_int_accepts(value, expected):
    out = check_positive_int("n_perm", value)
    assert out == expected and type(out) is int


@pytest.mark.parametrize("value", [0, -3, 2.5, True, False, "10", None, math.nan, math.inf,
                                   -math.inf, np.nan, np.bool_(True), [1], 1e-300])
def test_check_positive_int_refuses(value):
    with pytest.raises(InputError, match=r"The 'n_perm' parameter must be a positive int\. "
                                         r"Got .* instead\.") as info:
        check_positive_int("n_perm", value)
    assert info.value.problems[0].file == "parameter n_perm"


@pytest.mark.parametrize("value", [0, 0.05, 1, "0.5", np.float32(0.2)])
def test_check_in_range_accepts(value):
    assert check_in_range("alpha", value, 0, 1) == pytest.approx(float(value))


@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan, math.inf, None, "x", [0.5]])
def test_check_in_range_refuses(value):
    with pytest.raises(InputError, match=r"The 'alpha' parameter must be in \[0, 1\]\."):
        check_in_range("alpha", value, 0, 1)


def test_check_choice():
    assert check_choice("tissue", "wm", ("wm", "gm")) == "wm"
    with pytest.raises(InputError, match=r"must be one of \['wm', 'gm'\]\. Got 'csf'") as info:
        check_choice("tissue", "csf", iter(["wm", "gm"]))
    assert info.value.problems[0].fix == "Pass one of wm, gm for tissue."


def test_check_output_dir(tmp_path):
    from microvba._validation import check_output_dir

    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # nothing is created
    assert check_output_dir(tmp_path) == tmp_path
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InputError, match="is an existing file, not a folder"):
        check_output_dir(f)
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_output_dir(f / "sub")


def test_check_output_dir_not_writable(tmp_path, monkeypatch):
    """(Simulated: the tests may run as root, for whom every folder is writable.)"""
    from microvba import _validation
    from microvba._validation import check_output_dir

    monkeypatch.setattr(_validation.os, "access", lambda p, mode: Path(p) != tmp_path)
    with pytest.raises(InputError, match="no write permission"):
        check_output_dir(tmp_path / "out")
