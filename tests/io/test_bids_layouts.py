"""BIDS layouts met in real datasets: DataLad links, reverse-PE b=0 series, several runs."""

from __future__ import annotations

import nibabel as nib
import pytest

from microvba._validation import InputError
from microvba.io.bids import discover, validate_dataset


def test_broken_symlink_dwi_names_the_link_and_datalad_get(tmp_path, bids):
    """A DataLad dataset whose content was not fetched: every file is a dangling link."""
    dwi = bids / "sub-01" / "dwi" / "sub-01_dwi.nii.gz"
    dwi.unlink()
    dwi.symlink_to(tmp_path / "annex" / "objects" / "XX" / "SHA256E-s1--abc.nii.gz")
    with pytest.raises(InputError) as exc:
        validate_dataset(bids)
    (p,) = exc.value.problems
    assert p.file == str(dwi)
    assert "symbolic link" in p.problem and "datalad get" in p.fix


def test_broken_symlink_bval(tmp_path, bids):
    bval = bids / "sub-02" / "dwi" / "sub-02_dwi.bval"
    bval.unlink()
    bval.symlink_to(tmp_path / "missing-target")
    with pytest.raises(InputError, match="symbolic link whose target does not exist"):
        discover(bids)


def test_b0_only_reverse_pe_series_is_ignored(bids):
    """dwi/ often holds a b=0-only reverse phase-encoding series beside the real one."""
    d = bids / "sub-01" / "dwi"
    img = nib.load(d / "sub-01_dwi.nii.gz")
    nib.save(img.slicer[..., :2], d / "sub-01_dir-PA_dwi.nii.gz")
    (d / "sub-01_dir-PA_dwi.bval").write_text("0 0\n")
    (d / "sub-01_dir-PA_dwi.bvec").write_text("0 0\n0 0\n0 0\n")
    ds = validate_dataset(bids)
    assert ds.subjects[0].dwi == d / "sub-01_dwi.nii.gz"


def test_two_weighted_runs_are_combined(bids):
    """Several diffusion-weighted runs are concatenated (see test_bids_multiseries.py)."""
    d = bids / "sub-01" / "dwi"
    for ext in (".nii.gz", ".bval", ".bvec"):
        (d / f"sub-01_run-2_dwi{ext}").write_bytes((d / f"sub-01_dwi{ext}").read_bytes())
    (s,) = discover(bids, ["01"])
    assert [x.dwi.name for x in s.series] == ["sub-01_dwi.nii.gz", "sub-01_run-2_dwi.nii.gz"]
    assert s.combined and s.dwi == d / "sub-01_dwi.nii.gz"


def test_participant_label_with_and_without_prefix(bids):
    assert [s.label for s in discover(bids, ["sub-01", "03"])] == ["01", "03"]


def test_sessions_and_acq_entities(tmp_path):
    from bids_factory import make_bids

    root = make_bids(tmp_path, n_subjects=2, sessions=["pre", "post"])
    d = root / "sub-02" / "ses-post" / "dwi"
    for p in list(d.iterdir()):
        p.rename(p.with_name(p.name.replace("_dwi", "_acq-mb3_dir-AP_dwi")))
    subjects = validate_dataset(root).subjects
    assert [(s.label, s.session) for s in subjects] == [
        ("01", "post"), ("01", "pre"), ("02", "post"), ("02", "pre")]
    assert subjects[2].dwi.name == "sub-02_ses-post_acq-mb3_dir-AP_dwi.nii.gz"
    assert subjects[2].json is not None


def test_misnamed_compression_is_explained(bids):
    d = bids / "sub-01" / "dwi"
    img = nib.load(d / "sub-01_dwi.nii.gz")
    nib.save(img, d / "tmp.nii")
    (d / "tmp.nii").replace(d / "sub-01_dwi.nii.gz")
    with pytest.raises(InputError, match="rename it to sub-01_dwi.nii"):
        validate_dataset(bids)


def test_participant_labels_in_one_comma_separated_argument(bids):
    assert [s.label for s in discover(bids, ["sub-01,03"])] == ["01", "03"]
    with pytest.raises(InputError, match=r"\['1'\] not found"):
        discover(bids, [1])  # a TOML number: reported, not a crash


def test_gradient_files_inherited_from_the_dataset_root(tmp_path):
    """BIDS inheritance: one dwi.bval/dwi.bvec at the root serves every subject."""
    from bids_factory import make_bids

    root = make_bids(tmp_path, n_subjects=2, sessions=["1"])
    for ext in (".bval", ".bvec"):
        (root / f"dwi{ext}").write_text((root / "sub-01" / "ses-1" / "dwi" /
                                         f"sub-01_ses-1_dwi{ext}").read_text())
        for lab in ("01", "02"):
            (root / f"sub-{lab}" / "ses-1" / "dwi" / f"sub-{lab}_ses-1_dwi{ext}").unlink()
    (root / "sub-02" / "sub-02_dwi.bval").write_text(
        (root / "dwi.bval").read_text())  # subject level beats the root
    subjects = validate_dataset(root).subjects
    assert subjects[0].bval == root / "dwi.bval" and subjects[0].bvec == root / "dwi.bvec"
    assert subjects[1].bval == root / "sub-02" / "sub-02_dwi.bval"


def test_inherited_file_must_match_the_entities(bids):
    (bids / "acq-other_dwi.bval").write_text("0 1000\n")
    (bids / "sub-01" / "dwi" / "sub-01_dwi.bval").unlink()
    with pytest.raises(InputError, match="missing: the b-values"):
        discover(bids)


def test_session_without_dwi_suggests_session_label(tmp_path):
    from bids_factory import make_bids

    root = make_bids(tmp_path, n_subjects=2, sessions=["1", "2"])
    import shutil

    shutil.rmtree(root / "sub-02" / "ses-2" / "dwi")
    (root / "sub-02" / "ses-2" / "anat").mkdir()
    with pytest.raises(InputError) as exc:
        discover(root)
    assert "--session-label" in exc.value.problems[0].fix
    assert [s.session for s in discover(root, session_label=["1"])] == ["1", "1"]
