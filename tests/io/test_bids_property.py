"""Property-based: any bval/bvec/participants.tsv content is accepted or refused cleanly.

The loader either returns or raises :class:`InputError`, never another exception.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from bids_factory import fmt_bvals, fmt_bvecs, make_bids, scheme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microvba._validation import InputError
from microvba.io.bids import validate_dataset
from microvba.io.gradients import read_bvals, read_bvecs
from microvba.io.participants import read_participants

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

_cells = st.one_of(
    st.sampled_from(["0", "1000", "2000", "-1", "n/a", "", "nan", "inf", "1e400", "0.57735",
                     "M", "F", "sub-01", "sub-02", "sub-03", "sub-99", "participant_id",
                     "score", "age", "sex", "1,5", "0x10", "١٢", "\ufeff", " "]),
    st.text(max_size=6),
)
_seps = st.sampled_from([" ", "\t", "\n", "\r\n", "  ", ",", "\x00", "\u2028"])


@st.composite
def tokens_text(draw, max_tokens: int = 30) -> str:
    """Text built from number-like tokens and separators (plus raw garbage)."""
    parts = draw(st.lists(st.tuples(_cells, _seps), max_size=max_tokens))
    return "".join(c + s for c, s in parts)


@st.composite
def near_valid_bvals(draw) -> str:
    b = list(scheme()[0])
    n = draw(st.integers(0, 16))
    b = (b * 2)[:n]
    for _ in range(draw(st.integers(0, 3))):
        if b:
            b[draw(st.integers(0, len(b) - 1))] = draw(
                st.sampled_from([0.0, 40.0, 60.0, -1.0, 3000.0, float("nan")]))
    return fmt_bvals(b) if b else ""


@st.composite
def near_valid_bvecs(draw) -> str:
    g = scheme()[1]
    n = draw(st.integers(1, 16))
    rows = [list(r) for r in ([*g, *g][:n])]
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, n - 1))
        rows[i] = draw(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32),
                                min_size=3, max_size=3))
    text = fmt_bvecs(rows)
    if draw(st.booleans()):
        lines = text.splitlines()
        text = "\n".join(lines[: draw(st.integers(0, 4))])
    return text


@st.composite
def participants_tsv(draw) -> str:
    header = draw(st.lists(st.sampled_from(["participant_id", "score", "age", "sex", "x", ""]),
                           min_size=0, max_size=5))
    n_rows = draw(st.integers(0, 5))
    lines = ["\t".join(header)]
    for _ in range(n_rows):
        width = draw(st.sampled_from([len(header), len(header), max(len(header) - 1, 0),
                                      len(header) + 1]))
        lines.append("\t".join(draw(st.lists(_cells, min_size=width, max_size=width))))
    return draw(st.sampled_from(["\n", "\r\n"])).join(lines)


@pytest.fixture(scope="module")
def base_dataset():
    tmp = Path(tempfile.mkdtemp(prefix="microvba-hyp-"))
    yield make_bids(tmp, n_subjects=3)
    shutil.rmtree(tmp)


def _either_ok_or_input_error(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except InputError as exc:
        assert exc.problems and all(p.file and p.problem and p.fix for p in exc.problems)


@SETTINGS
@given(text=st.one_of(tokens_text(), near_valid_bvals()), raw=st.binary(max_size=40))
def test_read_bvals_any_text(base_dataset, text, raw):
    p = base_dataset / "prop.bval"
    for content in (text.encode("utf-8", "surrogatepass"), raw):
        p.write_bytes(content)
        _either_ok_or_input_error(read_bvals, p)


@SETTINGS
@given(text=st.one_of(tokens_text(), near_valid_bvecs()), raw=st.binary(max_size=40))
def test_read_bvecs_any_text(base_dataset, text, raw):
    p = base_dataset / "prop.bvec"
    for content in (text.encode("utf-8", "surrogatepass"), raw):
        p.write_bytes(content)
        _either_ok_or_input_error(read_bvecs, p)


@SETTINGS
@given(text=st.one_of(participants_tsv(), tokens_text()), raw=st.binary(max_size=30))
def test_read_participants_any_text(base_dataset, text, raw):
    p = base_dataset / "prop.tsv"
    p.write_bytes(text.encode("utf-8", "surrogatepass"))
    _either_ok_or_input_error(read_participants, p)
    p.write_bytes(raw)
    _either_ok_or_input_error(read_participants, p)


@SETTINGS
@given(bval=st.one_of(near_valid_bvals(), tokens_text()),
       bvec=st.one_of(near_valid_bvecs(), tokens_text()),
       tsv=st.one_of(participants_tsv(), st.none()),
       score=st.sampled_from([None, "score", "sex", "participant_id", ""]),
       covariates=st.lists(st.sampled_from(["age", "sex", "score", "x"]), max_size=3))
def test_validate_dataset_any_gradients_and_participants(base_dataset, bval, bvec, tsv, score,
                                                         covariates):
    d = base_dataset / "sub-01" / "dwi"
    (d / "sub-01_dwi.bval").write_bytes(bval.encode("utf-8", "surrogatepass"))
    (d / "sub-01_dwi.bvec").write_bytes(bvec.encode("utf-8", "surrogatepass"))
    tsv_path = base_dataset / "participants.tsv"
    if tsv is None:
        tsv_path.unlink(missing_ok=True)
    else:
        tsv_path.write_bytes(tsv.encode("utf-8", "surrogatepass"))
    _either_ok_or_input_error(validate_dataset, base_dataset, score=score,
                              covariates=covariates)


def test_valid_contents_are_accepted(base_dataset):
    """The generators' unmutated values load (the property is not vacuous)."""
    d = base_dataset / "sub-01" / "dwi"
    b, g = scheme()
    (d / "sub-01_dwi.bval").write_text(fmt_bvals(b))
    (d / "sub-01_dwi.bvec").write_text(fmt_bvecs(g))
    (base_dataset / "participants.tsv").write_text(
        "participant_id\tscore\tsex\nsub-01\t1\tM\nsub-02\t2\tF\nsub-03\t3\tM\n")
    ds = validate_dataset(base_dataset, score="score", covariates=["sex"])
    assert len(ds.subjects) == 3
