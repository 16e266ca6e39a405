"""Every malformed dataset of the corpus is refused with a message naming the offending file."""

from __future__ import annotations

import pytest
from bids_factory import MALFORMED, Case, build_case, make_bids, tree

from microvba._validation import InputError
from microvba.io.bids import validate_dataset


def test_corpus_is_large_enough():
    assert len(MALFORMED) >= 15


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_dataset_is_refused(tmp_path, name):
    case: Case = MALFORMED[name]
    root = build_case(tmp_path, case)
    before = tree(root)
    with pytest.raises(InputError, match=case.match) as info:
        validate_dataset(root, subjects=case.participant_label, score=case.score,
                         covariates=case.covariates)
    message = str(info.value)
    assert case.file in message
    assert "fix:" in message
    assert tree(root) == before  # inputs are never modified


def test_every_problem_is_reported_at_once(tmp_path):
    """Problems in several subjects and in participants.tsv come in one error."""
    root = make_bids(tmp_path, n_subjects=4, bval="0 1000\n",
                     columns={"score": [1, "n/a", 3, "x"]})
    (root / "sub-03" / "dwi" / "sub-03_dwi.bvec").write_text("1 0\n0 1\n")
    with pytest.raises(InputError) as info:
        validate_dataset(root, score="score")
    problems = info.value.problems
    files = [p.file for p in problems]
    assert any(f.endswith("sub-01_dwi.bval") for f in files)
    assert any(f.endswith("sub-03_dwi.bvec") for f in files)
    assert sum(f.endswith("participants.tsv") for f in files) == 2  # missing + non-numeric
    assert str(info.value).startswith(f"{len(problems)} problems found")


def test_truncation_found_with_small_chunks(tmp_path):
    """Chunked reading (one z-plane at a time, or everything) detects a short gzip stream."""
    from bids_factory import _truncated_gzip_data

    from microvba._validation import ProblemCollector
    from microvba.io.bids import _load_header, check_image_data

    root = make_bids(tmp_path, n_subjects=1, dwi_bytes=_truncated_gzip_data)
    path = root / "sub-01" / "dwi" / "sub-01_dwi.nii.gz"
    for chunk in (64, 10**9):
        problems = ProblemCollector()
        img = _load_header(path, problems)
        check_image_data(path, img, problems, chunk_bytes=chunk)
        assert len(problems.problems) == 1
        assert "truncated or corrupt image data" in problems.problems[0].problem


def test_truncated_nii_found_without_reading(tmp_path):
    from microvba._validation import ProblemCollector
    from microvba.io.bids import _load_header, check_image_data

    root = make_bids(tmp_path, n_subjects=1, gz=False, dwi_bytes=lambda raw: raw[:-1])
    path = root / "sub-01" / "dwi" / "sub-01_dwi.nii"
    problems = ProblemCollector()
    check_image_data(path, _load_header(path, problems), problems)
    (p,) = problems.problems
    assert p.problem == "truncated image: the header describes 3040 bytes but the file has 3039"


def test_nan_found_with_small_chunks(tmp_path):
    import numpy as np
    from bids_factory import dwi_data, scheme

    from microvba._validation import ProblemCollector
    from microvba.io.bids import _load_header, check_image_data

    data = dwi_data(0, scheme()[0])
    data[3, 2, 2, 13] = np.nan
    data[0, 0, 0, 0] = -np.inf
    root = make_bids(tmp_path, n_subjects=1, dwi=data)
    path = root / "sub-01" / "dwi" / "sub-01_dwi.nii.gz"
    for chunk in (64, 4 * 4 * 3 * 8, 10**9):  # z-slabs, one volume, everything
        problems = ProblemCollector()
        check_image_data(path, _load_header(path, problems), problems, chunk_bytes=chunk)
        assert [p.problem for p in problems.problems] == ["2 voxel value(s) are NaN or infinite"]
