"""Discovering subjects and validating a valid BIDS dataset."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from bids_factory import make_bids, tree

from microvba._validation import InputError
from microvba.io.bids import B0_THRESHOLD, BVEC_NORM_TOL, Subject, discover, validate_dataset


def test_discover_finds_subjects_sorted(bids):
    subjects = discover(bids)
    assert [s.label for s in subjects] == ["01", "02", "03"]
    s = subjects[0]
    assert s.session is None and s.prefix == "sub-01"
    assert s.dwi == bids / "sub-01" / "dwi" / "sub-01_dwi.nii.gz"
    assert s.bval.name == "sub-01_dwi.bval" and s.bvec.name == "sub-01_dwi.bvec"
    assert s.json is not None and s.json.name == "sub-01_dwi.json"
    assert s.t1w is None


def test_discover_sessions_t1w_and_plain_nii(tmp_path):
    root = make_bids(tmp_path, n_subjects=2, sessions=["2", "1"], t1w=True, gz=False)
    subjects = discover(root)
    assert [(s.label, s.session) for s in subjects] == [("01", "1"), ("01", "2"),
                                                        ("02", "1"), ("02", "2")]
    s = subjects[1]
    assert s.prefix == "sub-01_ses-2"
    assert s.dwi.name == "sub-01_ses-2_dwi.nii"
    assert s.t1w == root / "sub-01" / "ses-2" / "anat" / "sub-01_ses-2_T1w.nii"
    assert [s.session for s in discover(root, session_label=["ses-1"])] == ["1", "1"]


def test_t1w_at_subject_level_is_shared_by_sessions(tmp_path):
    root = make_bids(tmp_path, n_subjects=1, sessions=["a", "b"])
    import nibabel as nib

    t1 = root / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    t1.parent.mkdir()
    nib.save(nib.Nifti1Image(np.ones((4, 4, 3), np.float32), np.eye(4)), str(t1))
    assert {s.t1w for s in discover(root)} == {t1}


@pytest.mark.parametrize("labels", [["02"], ["sub-02"], "02"])
def test_participant_label_filter(bids, labels):
    assert [s.label for s in discover(bids, participant_label=labels)] == ["02"]


def test_absent_labels_are_reported(bids):
    with pytest.raises(InputError, match=r"participant label\(s\) \['7', '8'\] not found"):
        discover(bids, participant_label=["7", "02", "8"])
    with pytest.raises(InputError, match=r"session label\(s\) \['3'\] not found"):
        discover(bids, session_label=["3"])


def test_discover_refuses_missing_file_and_empty_folders(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        discover(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder"):
        discover(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no subjects found: the folder is empty"):
        discover(tmp_path / "empty")


def test_non_alphanumeric_label_is_refused(bids):
    (bids / "sub-01").rename(bids / "sub-0_1")
    with pytest.raises(InputError, match="not alphanumeric"):
        discover(bids)


def test_validate_valid_dataset(bids):
    before = tree(bids)
    ds = validate_dataset(bids, score="score", covariates=["age", "sex"])
    assert ds.root == bids
    assert [s.label for s in ds.subjects] == ["01", "02", "03"]
    p = ds.participants
    assert list(p.index) == ["01", "02", "03"]
    assert p["score"].dtype == np.float64 and p["age"].dtype == np.float64
    assert list(p["sex"]) == ["M", "F", "M"]
    assert tree(bids) == before


def test_validate_selection_keeps_subject_order(bids):
    ds = validate_dataset(bids, subjects=["03", "01"], score="score")
    assert [s.label for s in ds.subjects] == ["01", "03"]
    assert list(ds.participants.index) == ["01", "03"]
    full = pd.read_csv(bids / "participants.tsv", sep="\t").set_index("participant_id")
    np.testing.assert_allclose(ds.participants["score"],
                               full.loc[["sub-01", "sub-03"], "score"])


def test_validate_accepts_subject_objects(bids):
    subjects = discover(bids, participant_label=["02"])
    ds = validate_dataset(bids, subjects=subjects)
    assert ds.subjects == subjects


def test_sessions_repeat_the_participant_row(tmp_path):
    root = make_bids(tmp_path, n_subjects=2, sessions=["1", "2"])
    ds = validate_dataset(root, score="score")
    assert list(ds.participants.index) == ["01", "01", "02", "02"]
    assert len(ds.subjects) == 4


def test_participants_optional_without_score(bids):
    (bids / "participants.tsv").unlink()
    ds = validate_dataset(bids)
    assert ds.participants.shape == (3, 0)
    with pytest.raises(InputError, match="participants.tsv not found"):
        validate_dataset(bids, covariates=["age"])


def test_categorical_covariate_and_missing_value_of_unselected_subject(tmp_path):
    root = make_bids(tmp_path, columns={"site": ["A", "B", "n/a"],
                                        "score": [1.0, 2.0, "n/a"]})
    ds = validate_dataset(root, subjects=["01", "02"], score="score", covariates=["site"])
    assert list(ds.participants["site"]) == ["A", "B"]
    with pytest.raises(InputError, match=r"missing value .*'site'.*sub-03"):
        validate_dataset(root, covariates=["site"])


def test_score_also_covariate_is_refused(bids):
    with pytest.raises(InputError, match=r"\['score'\] requested more than once"):
        validate_dataset(bids, score="score", covariates=["score", "age"])


def test_covariates_as_single_string(bids):
    ds = validate_dataset(bids, score="score", covariates="age")
    assert "age" in ds.participants


def test_infinite_score_is_not_a_number(tmp_path):
    root = make_bids(tmp_path, columns={"score": [1, "inf", 2]})
    with pytest.raises(InputError, match="must hold numbers.*sub-02='inf'"):
        validate_dataset(root, score="score")


def test_check_images_false_skips_image_reading(tmp_path):
    root = make_bids(tmp_path, dwi_bytes=lambda raw: raw[:100])
    validate_dataset(root, check_images=False)
    with pytest.raises(InputError, match="sub-01_dwi.nii.gz"):
        validate_dataset(root)


def test_b0_threshold_and_unit_tolerance(tmp_path):
    """b <= 50 is a b=0 volume whatever its vector; b > 50 needs |g| within 1 +/- 0.01."""
    assert B0_THRESHOLD == 50 and BVEC_NORM_TOL == 0.01
    from bids_factory import fmt_bvals, fmt_bvecs, scheme

    b, g = scheme()
    b[0], g[0] = 50, (0.3, 0.0, 0.0)  # a b=0 volume with a junk vector: fine
    g[5] *= 1.009  # within tolerance
    root = make_bids(tmp_path, n_subjects=1, bval=fmt_bvals(b), bvec=fmt_bvecs(g))
    validate_dataset(root)
    g[5] *= 1.01
    (root / "sub-01" / "dwi" / "sub-01_dwi.bvec").write_text(fmt_bvecs(g))
    with pytest.raises(InputError, match=r"volumes 5 \(b=1000"):
        validate_dataset(root)


def test_nx3_bvec_layout_is_accepted(tmp_path):
    from bids_factory import scheme

    g = scheme()[1]
    text = "\n".join(" ".join(f"{v:.6f}" for v in row) for row in g) + "\n"
    validate_dataset(make_bids(tmp_path, n_subjects=1, bvec=text))


def test_int16_images_with_t1w(tmp_path):
    from bids_factory import dwi_data, scheme

    data = dwi_data(0, scheme()[0]).astype(np.int16)
    root = make_bids(tmp_path, n_subjects=1, dwi=data, t1w=True)
    validate_dataset(root)


def test_real_dwi_validates(shared_data, tmp_path):
    """The shared real multi-shell crops pass validation as a BIDS subject."""
    d = tmp_path / "real" / "sub-01" / "dwi"
    d.mkdir(parents=True)
    for ext in (".nii.gz", ".bval", ".bvec"):
        (d / f"sub-01_dwi{ext}").symlink_to(shared_data / "dwi" / f"msmt_dwi{ext}")
    (tmp_path / "real" / "dataset_description.json").write_text(
        '{"Name": "real crops", "BIDSVersion": "1.9.0"}')
    ds = validate_dataset(tmp_path / "real")
    assert ds.subjects[0].dwi.name == "sub-01_dwi.nii.gz"


def test_subject_dataclass_is_frozen_and_ordered_prefix():
    s = Subject("01", "pre", *(__import__("pathlib").Path(x) for x in ("a", "b", "c")))
    assert s.prefix == "sub-01_ses-pre" and s.json is None and s.t1w is None
    with pytest.raises(AttributeError):
        s.label = "02"  # type: ignore[misc]


def test_hidden_files_are_ignored(bids):
    (bids / "sub-01" / "dwi" / "._sub-01_dwi.nii.gz").write_bytes(b"\x00\x05")
    assert discover(bids)[0].dwi.name == "sub-01_dwi.nii.gz"


def test_dimension_problems(tmp_path):
    from bids_factory import dwi_data, save, scheme

    data5 = dwi_data(0, scheme()[0])[..., None, :]  # (x, y, z, 1, volumes)
    root = make_bids(tmp_path, n_subjects=2, dwi=data5, t1w=True)
    save(np.ones((4, 4, 3, 2), np.float32), root / "sub-02" / "anat" / "sub-02_T1w.nii.gz")
    with pytest.raises(InputError) as info:
        validate_dataset(root)
    text = str(info.value)
    assert "sub-01_dwi.nii.gz: the DWI must be 4-D; it has shape (4, 4, 3, 1, 14)" in text
    assert "sub-02_T1w.nii.gz: the T1w image must be 3-D; shape (4, 4, 3, 2)" in text


def test_empty_dimension_is_refused(tmp_path):
    import nibabel as nib

    root = make_bids(tmp_path, n_subjects=1)
    path = root / "sub-01" / "dwi" / "sub-01_dwi.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 0, 14), np.float32), np.eye(4)), str(path))
    with pytest.raises(InputError, match=r"sub-01_dwi.nii.gz: image has an empty dimension"):
        validate_dataset(root)


def test_no_subject_left(bids):
    with pytest.raises(InputError, match="no subject left to process"):
        validate_dataset(bids, subjects=[])


def test_threads_report_the_same_problems_in_order(tmp_path):
    from bids_factory import fmt_bvals, scheme

    root = make_bids(tmp_path, n_subjects=5, bval="0 1000\n")
    (root / "sub-04" / "dwi" / "sub-04_dwi.bval").write_text(fmt_bvals(scheme()[0] + 100))
    messages = []
    for n_jobs in (1, 3):
        with pytest.raises(InputError) as info:
            validate_dataset(root, n_jobs=n_jobs)
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert messages[0].index("sub-01_dwi.bval") < messages[0].index("sub-04_dwi.bval")
    with pytest.raises(InputError, match="'n_jobs' parameter must be a positive int"):
        validate_dataset(root, n_jobs=0)
