"""Reading participants.tsv and checking its requested columns."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from microvba._validation import InputError
from microvba.io.participants import as_number, column_problems, is_missing, read_participants


def _write(tmp_path, text: str | bytes):
    p = tmp_path / "participants.tsv"
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


def test_read_types_and_missing(tmp_path):
    p = _write(tmp_path, "participant_id\tscore\tsex\tage\tnote\n"
                         "sub-01\t55.5\tM\t30\tok\n"
                         "sub-02\tn/a\tF\t41\t\n"
                         "sub-03\t1e2\tn/a\t22\t3\n")
    df = read_participants(p)
    assert list(df.index) == ["01", "02", "03"] and df.index.name == "participant"
    assert list(df["participant_id"]) == ["sub-01", "sub-02", "sub-03"]
    assert df["score"].dtype == np.float64
    np.testing.assert_array_equal(df["score"], [55.5, np.nan, 100.0])
    assert df["age"].dtype == np.float64
    assert list(df["sex"]) == ["M", "F", None]
    assert list(df["note"]) == ["ok", None, "3"]  # mixed column keeps its text


def test_read_agrees_with_pandas(tmp_path):
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"participant_id": [f"sub-{i:02d}" for i in range(1, 21)],
                          "score": rng.normal(50, 10, 20).round(3),
                          "age": rng.integers(18, 80, 20)})
    p = tmp_path / "participants.tsv"
    table.to_csv(p, sep="\t", index=False)
    df = read_participants(p)
    np.testing.assert_allclose(df["score"], table["score"])
    np.testing.assert_allclose(df["age"], table["age"])


def test_bom_crlf_and_trailing_blank_lines(tmp_path):
    p = _write(tmp_path, b"\xef\xbb\xbfparticipant_id\tscore\r\nsub-01\t1\r\n01x\t2\r\n\r\n\r\n")
    df = read_participants(p)
    assert list(df.index) == ["01", "01x"]  # a missing 'sub-' prefix is tolerated
    assert list(df["score"]) == [1.0, 2.0]


@pytest.mark.parametrize("text, match", [
    ("", "empty"),
    ("\n\n", "empty"),
    ("id\tscore\nsub-01\t1\n", "no 'participant_id' column"),
    ("participant_id score\nsub-01 1\n", "no 'participant_id' column"),
    ("participant_id\tscore\tscore\nsub-01\t1\t2\n", r"duplicate column names \['score'\]"),
    ("participant_id\tscore\nsub-01\t1\t2\nsub-02\n", r"line 2 has 3 .*\n.*\n.*line 3 has 1"),
    ("participant_id\tscore\nsub-01\t1\nsub-01\t2\n", r"more than once: \['sub-01'\]"),
    ("participant_id\tscore\nn/a\t1\n", r"empty participant_id on line\(s\) \[2\]"),
])
def test_malformed_tables(tmp_path, text, match):
    with pytest.raises(InputError, match=match) as info:
        read_participants(_write(tmp_path, text))
    assert "participants.tsv" in str(info.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(InputError, match="participants.tsv not found"):
        read_participants(tmp_path / "participants.tsv")
    with pytest.raises(InputError, match="not UTF-8"):
        read_participants(_write(tmp_path, b"participant_id\n\xff\xfe\x00"))
    (tmp_path / "dir.tsv").mkdir()
    with pytest.raises(InputError, match="cannot read the file"):
        read_participants(tmp_path / "dir.tsv")


def test_is_missing_and_as_number():
    assert all(is_missing(v) for v in ["", " ", "n/a", "N/A", "NA", "nan", None, math.nan])
    assert not any(is_missing(v) for v in ["0", "M", 0, 1.5])
    assert as_number(" 3.5 ") == 3.5 and as_number(2) == 2.0
    assert as_number("inf") is None and as_number("x") is None and as_number(True) is None


def _table(tmp_path):
    return read_participants(_write(tmp_path, "participant_id\tscore\tsex\tage\n"
                                              "sub-01\t1\tM\t30\n"
                                              "sub-02\tx\tF\tthirty\n"
                                              "sub-03\t3\tn/a\t50\n"))


def test_column_problems(tmp_path):
    df = _table(tmp_path)
    assert not column_problems(df, "sex", ["01", "02"], "p.tsv", numeric=False)
    assert not column_problems(df, "score", ["01", "03"], "p.tsv", numeric=True)
    (p,) = column_problems(df, "score", ["01", "02"], "p.tsv", numeric=True).problems
    assert p.file == "p.tsv" and "sub-02='x'" in p.problem
    (p,) = column_problems(df, "age", ["01", "02", "03"], "p.tsv", numeric=False).problems
    assert "mixes numbers and text" in p.problem
    (p,) = column_problems(df, "sex", ["03"], "p.tsv", numeric=False).problems
    assert "missing value" in p.problem and "sub-03" in p.problem
    (p,) = column_problems(df, "sex", ["03"], "p.tsv", numeric=True).problems
    assert "missing value" in p.problem  # all missing: no separate type complaint
    (p,) = column_problems(df, "participant_id", ["01"], "p.tsv", numeric=True).problems
    assert "no column 'participant_id'" in p.problem


def test_long_lists_are_abbreviated(tmp_path):
    rows = "".join(f"sub-{i:03d}\tn/a\n" for i in range(30))
    df = read_participants(_write(tmp_path, "participant_id\tscore\n" + rows))
    (p,) = column_problems(df, "score", list(df.index), "p.tsv", numeric=True).problems
    assert "and 10 more" in p.problem


def test_spreadsheet_export_quotes_crlf_and_bom(tmp_path):
    """Excel's 'tab-delimited text' quotes cells and writes CRLF (and sometimes a BOM)."""
    p = tmp_path / "participants.tsv"
    p.write_bytes('\ufeff"participant_id"\t"score"\r\n"sub-01"\t"1.5"\r\nsub-02\t2\r\n'
                  .encode("utf-8"))
    df = read_participants(p)
    assert list(df.index) == ["01", "02"]
    assert list(df.columns) == ["participant_id", "score"]
    assert df["score"].tolist() == [1.5, 2.0]
