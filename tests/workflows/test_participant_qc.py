"""A subject whose header is rotated by 90 degrees is caught by the absolute QC floors alone,
already by the participant stage, and in a group of 2 (issue 14, point 8)."""

from __future__ import annotations

import json
import logging

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from microvba.cli import main
from microvba.registration.qc import ABSOLUTE_FLOORS, below_floors, flag_outliers

simulate = pytest.importorskip("microvba.simulate")


def _rotate_header(path, axis: int = 0) -> None:
    """Rotate the voxel-to-world affine by 90 degrees about ``axis`` (data unchanged)."""
    img = nib.load(str(path))
    i, j = [(1, 2), (0, 2), (0, 1)][axis]
    rot = np.eye(4)
    rot[i, i] = rot[j, j] = 0.0
    rot[i, j], rot[j, i] = -1.0, 1.0
    affine = rot @ img.affine
    out = nib.Nifti1Image(np.asarray(img.dataobj), affine, img.header)
    out.set_qform(affine, 1)
    out.set_sform(affine, 1)
    tmp = path.with_name("rotated_" + path.name)
    nib.save(out, str(tmp))
    tmp.replace(path)


def test_rotated_header_fails_participant_qc_with_two_subjects(tmp_path, shared_data,
                                                               monkeypatch, caplog):
    monkeypatch.setenv("MICROVBA_DATA", str(shared_data))
    bids = simulate.simulate_dataset(tmp_path / "bids", n_subjects=2, scheme="multishell",
                                     seed=1, resolution=6.0)
    _rotate_header(bids / "sub-02" / "dwi" / "sub-02_dwi.nii.gz")
    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR):
        code = main([str(bids), str(out), "participant", "--models", "tensor,noddi",
                     "--tissue", "gm", "--resolution", "6", "--n-jobs", "1"])
    assert code == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    failed = [m for m in errors if m.startswith("failed: subject")]
    assert len(failed) == 1 and "sub-02" in failed[0], errors
    assert "registration to the template failed its QC" in failed[0]
    assert "correlation" in failed[0] and "--force" in failed[0]
    rows = {}
    for label in ("01", "02"):
        qc = next(out.glob(f"sub-{label}/dwi/*_desc-registration_qc.json"))
        rows[f"sub-{label}"] = {k: json.loads(qc.read_text())[k]
                                for k in ("correlation", "dice_gm", "dice_brain")}
    table = pd.DataFrame.from_dict(rows, orient="index")
    # the floors alone decide with 2 subjects (the robust z needs 3)
    assert flag_outliers(table).tolist() == [False, True], table
    assert below_floors(rows["sub-01"]) == []
    assert table.loc["sub-02", "correlation"] < ABSOLUTE_FLOORS["correlation"]


def test_floors_alone_flag_one_bad_subject_of_two_or_one():
    # issue 14's figures: rotated 0.35 vs good 0.90
    two = pd.DataFrame({"correlation": [0.90, 0.35], "dice_gm": [0.88, 0.57],
                        "dice_brain": [0.98, 0.95]}, index=["sub-01", "sub-02"])
    assert flag_outliers(two).tolist() == [False, True]
    assert flag_outliers(two.iloc[[1]]).tolist() == [True]
    assert below_floors(two.loc["sub-02"].to_dict()) == ["correlation 0.350 < 0.42"]
    assert below_floors({"correlation": float("nan")}) == ["correlation nan < 0.42"]
