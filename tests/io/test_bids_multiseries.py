"""Several DWI series per subject/session: combined into one scheme, or selected by entity."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from bids_factory import fmt_bvals, fmt_bvecs, make_bids, scheme, tree

from microvba._validation import InputError
from microvba.io.bids import (
    discover,
    matches_dwi_filter,
    parse_dwi_filter,
    series_sort_key,
    validate_dataset,
)

# the factory's scheme: volumes 0-1 b=0, 2-7 b=1000, 8-13 b=2000
SHELL = {"b1000": [0, 1, *range(2, 8)], "b2000": [0, *range(8, 14)]}


def split_runs(root, label="01", entity="run", names=("1", "2"), folder=None,
               affine2=None, shape2=None):
    """Replace sub-<label>'s DWI by two series, one shell each (b=1000, then b=2000)."""
    d = folder or root / f"sub-{label}" / "dwi"
    stem = d / f"sub-{label}_dwi"
    img = nib.load(str(stem) + ".nii.gz")
    data = np.asarray(img.dataobj)
    bvals, bvecs = scheme()
    out = []
    for name, vols in zip(names, SHELL.values(), strict=True):
        new = d / f"sub-{label}_{entity}-{name}_dwi"
        part = data[..., vols]
        aff = img.affine
        if name == names[1] and shape2 is not None:
            part = np.resize(part, (*shape2, len(vols)))
        if name == names[1] and affine2 is not None:
            aff = affine2
        nib.save(nib.Nifti1Image(part, aff), str(new) + ".nii.gz")
        (d / (new.name + ".bval")).write_text(fmt_bvals(bvals[vols]))
        (d / (new.name + ".bvec")).write_text(fmt_bvecs(bvecs[vols]))
        out.append(new)
    for ext in (".nii.gz", ".bval", ".bvec", ".json"):
        (d / (stem.name + ext)).unlink()
    return out


def test_two_runs_are_combined_in_entity_order(tmp_path):
    root = make_bids(tmp_path, n_subjects=2)
    split_runs(root)
    before = tree(root)
    ds = validate_dataset(root)
    s1, s2 = ds.subjects
    assert s1.combined and not s2.combined
    assert [x.dwi.name for x in s1.series] == ["sub-01_run-1_dwi.nii.gz",
                                               "sub-01_run-2_dwi.nii.gz"]
    assert [x.bval.name for x in s1.series] == ["sub-01_run-1_dwi.bval",
                                                "sub-01_run-2_dwi.bval"]
    assert s1.dwi == s1.series[0].dwi
    assert len(s2.series) == 1 and s2.series[0].dwi == s2.dwi  # single series: as before
    assert tree(root) == before


def test_second_run_without_b0_is_accepted_when_combined(tmp_path):
    """Split acquisitions often put the b=0 volumes in the first run only."""
    root = make_bids(tmp_path, n_subjects=1)
    split_runs(root)
    d = root / "sub-01" / "dwi"
    img = nib.load(d / "sub-01_run-2_dwi.nii.gz")
    nib.save(img.slicer[..., 1:], d / "sub-01_run-2_dwi.nii.gz")
    bvals, bvecs = scheme()
    (d / "sub-01_run-2_dwi.bval").write_text(fmt_bvals(bvals[8:14]))
    (d / "sub-01_run-2_dwi.bvec").write_text(fmt_bvecs(bvecs[8:14]))
    assert validate_dataset(root).subjects[0].combined
    (d / "sub-01_run-1_dwi.bval").write_text(fmt_bvals(np.r_[[1000, 1000], bvals[2:8]]))
    (d / "sub-01_run-1_dwi.bvec").write_text(fmt_bvecs(np.r_[bvecs[2:4], bvecs[2:8]]))
    with pytest.raises(InputError, match="no b=0 volume.*any of the 2 combined series"):
        validate_dataset(root)


def test_natural_entity_order():
    names = ["sub-01_run-10_dwi.nii.gz", "sub-01_run-2_dwi.nii.gz", "sub-01_dwi.nii.gz",
             "sub-01_acq-b2000_dwi.nii.gz", "sub-01_acq-b1000_run-1_dwi.nii.gz",
             "sub-01_acq-b1000_dir-PA_dwi.nii.gz"]
    assert sorted(names, key=series_sort_key) == [
        "sub-01_dwi.nii.gz", "sub-01_acq-b1000_dir-PA_dwi.nii.gz",
        "sub-01_acq-b1000_run-1_dwi.nii.gz", "sub-01_acq-b2000_dwi.nii.gz",
        "sub-01_run-2_dwi.nii.gz", "sub-01_run-10_dwi.nii.gz"]


def test_acq_series_with_sessions(tmp_path):
    root = make_bids(tmp_path, n_subjects=1, sessions=["1"])
    d = root / "sub-01" / "ses-1" / "dwi"
    for p in list(d.iterdir()):
        p.rename(p.with_name(p.name.replace("sub-01_ses-1_", "sub-01_")))
    split_runs(root, entity="acq", names=("b1000", "b2000"), folder=d)
    for p in list(d.iterdir()):
        p.rename(p.with_name(p.name.replace("sub-01_", "sub-01_ses-1_")))
    (s,) = validate_dataset(root).subjects
    assert [x.dwi.name for x in s.series] == ["sub-01_ses-1_acq-b1000_dwi.nii.gz",
                                              "sub-01_ses-1_acq-b2000_dwi.nii.gz"]


def test_different_shapes_are_refused_clearly(tmp_path):
    root = make_bids(tmp_path, n_subjects=1)
    split_runs(root, shape2=(5, 4, 3))
    before = tree(root)
    with pytest.raises(InputError) as exc:
        validate_dataset(root)
    message = str(exc.value)
    assert "sub-01_run-2_dwi.nii.gz: not on the voxel grid of sub-01_run-1_dwi.nii.gz" in message
    assert "shape (5, 4, 3) vs (4, 4, 3)" in message
    assert "Resample" in message and "--dwi-filter run-2" in message
    assert tree(root) == before


def test_different_affines_are_refused_clearly(tmp_path):
    root = make_bids(tmp_path, n_subjects=1)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = [0.0, 1.5, 0.0]  # the second run shifted by 1.5 mm
    split_runs(root, affine2=aff)
    with pytest.raises(InputError, match=r"affines differ by up to 1\.5 mm"):
        validate_dataset(root)
    aff[:3, 3] = [0.0, 1e-5, 0.0]  # float round-off: same grid
    split_runs(make_bids(tmp_path, n_subjects=1, name="b2"), affine2=aff)
    assert validate_dataset(tmp_path / "b2").subjects[0].combined


def test_filter_parsing_and_matching():
    assert parse_dwi_filter(None) is None
    assert parse_dwi_filter("acq-b1000, run-2 run-3") == {"acq": ("b1000",),
                                                          "run": ("2", "3")}
    assert parse_dwi_filter(["run-1", "run-1"]) == {"run": ("1",)}
    wanted = parse_dwi_filter("acq-b1000,run-2")
    assert matches_dwi_filter("sub-01_acq-b1000_run-02_dwi.nii.gz", wanted)
    assert not matches_dwi_filter("sub-01_acq-b1000_dwi.nii.gz", wanted)
    assert not matches_dwi_filter("sub-01_acq-b2000_run-2_dwi.nii.gz", wanted)
    with pytest.raises(InputError, match="not a BIDS entity-value pair"):
        parse_dwi_filter("b1000")
    with pytest.raises(InputError, match="--participant-label"):
        parse_dwi_filter("sub-01")


def test_filter_selects_series(tmp_path):
    root = make_bids(tmp_path, n_subjects=2)
    split_runs(root)
    (s1,) = validate_dataset(root, subjects=["01"], dwi_filter="run-2").subjects
    (s2,) = discover(root, ["01"], dwi_filter=["run-1", "run-2"])
    assert [x.dwi.name for x in s1.series] == ["sub-01_run-2_dwi.nii.gz"]
    assert not s1.combined and s1.dwi.name == "sub-01_run-2_dwi.nii.gz"
    assert s1.excluded == (root / "sub-01" / "dwi" / "sub-01_run-1_dwi.nii.gz",)
    assert s2.combined
    # sub-02 has no run entity: the filter leaves it nothing, which is reported
    with pytest.raises(InputError) as exc:
        validate_dataset(root, dwi_filter="run-2")
    (p,) = exc.value.problems
    assert p.file.endswith("sub-02/dwi")
    assert "no DWI series matches --dwi-filter run-2" in p.problem
    assert "sub-02_dwi.nii.gz" in p.problem


def test_b0_only_series_left_out_of_the_combination(tmp_path):
    root = make_bids(tmp_path, n_subjects=1)
    split_runs(root)
    d = root / "sub-01" / "dwi"
    img = nib.load(d / "sub-01_run-1_dwi.nii.gz")
    nib.save(img.slicer[..., :2], d / "sub-01_dir-PA_dwi.nii.gz")
    (d / "sub-01_dir-PA_dwi.bval").write_text("0 0\n")
    (d / "sub-01_dir-PA_dwi.bvec").write_text("0 0\n0 0\n0 0\n")
    (s,) = validate_dataset(root).subjects
    assert [x.dwi.name for x in s.series] == ["sub-01_run-1_dwi.nii.gz",
                                              "sub-01_run-2_dwi.nii.gz"]
    assert s.excluded == (d / "sub-01_dir-PA_dwi.nii.gz",)


def test_problem_in_one_series_names_it_and_the_filter(tmp_path):
    root = make_bids(tmp_path, n_subjects=1)
    split_runs(root)
    d = root / "sub-01" / "dwi"
    (d / "sub-01_run-2_dwi.bval").write_text("0 1000\n")
    with pytest.raises(InputError) as exc:
        validate_dataset(root)
    files = [p.file for p in exc.value.problems]
    assert files == [str(d / "sub-01_run-2_dwi.bval"), str(d)]
    assert "--dwi-filter" in exc.value.problems[1].fix
