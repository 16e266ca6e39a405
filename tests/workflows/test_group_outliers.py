"""Group stage: a clear error, and nothing written, when every subject is a QC outlier."""

import json

import nibabel as nib
import numpy as np
import pytest

from microvba._validation import InputError
from microvba.cli import main
from microvba.io import derivatives
from microvba.registration.qc import ABSOLUTE_FLOORS
from microvba.workflows.group import GroupSettings, run_group

simulate = pytest.importorskip("microvba.simulate")


def _failed_participant_outputs(tmp_path, qc_values):
    """A BIDS set and participant outputs whose registrations all failed (or not)."""
    bids = simulate.simulate_dataset(tmp_path / "bids", n_subjects=4, scheme="multishell",
                                     shape=(4, 4, 3), seed=2)
    out = tmp_path / "out"
    affine = np.diag([8.0, 8.0, 8.0, 1.0])
    rng = np.random.default_rng(0)
    for k in range(1, 5):
        label = f"{k:02d}"
        path = derivatives.map_path(out, label, "fa", space=derivatives.SPACE_MNI)
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(rng.uniform(0.1, 0.6, (4, 4, 4)).astype(np.float32), affine),
                 path)
        qc = path.parent / f"sub-{label}_space-{derivatives.SPACE_MNI}_desc-registration_qc.json"
        qc.write_text(json.dumps(qc_values))
    return bids, out


# what the old 24 mm 'microvba simulate' box scored after normalisation to MNI
FAILED = {"correlation": -0.05, "dice_brain": 0.005, "dice_gm": 0.002}


def _group_outputs(out):
    group = out / "group"
    return sorted(p for p in group.rglob("*")) if group.exists() else []


def test_all_outliers_raise_input_error_and_write_nothing(tmp_path):
    bids, out = _failed_participant_outputs(tmp_path, FAILED)
    settings = GroupSettings(score="resilience", metrics=("fa",), n_perm=10, decode=False)
    with pytest.raises(InputError) as exc:
        run_group(bids, out, settings)
    msg = str(exc.value)
    assert "every subject (4) was flagged as a registration outlier" in msg
    assert "no subject is left for the group analysis" in msg
    # the fix: look at the mosaics, fix the inputs, re-run the participant stage
    assert "registration mosaics" in msg and "--force" in msg
    assert "whole brain" in msg
    for name, floor in ABSOLUTE_FLOORS.items():
        assert f"{name} {floor:g}" in msg
    assert _group_outputs(out) == []
    assert not (out / "group").exists()


def test_all_outliers_cli_exits_2_with_problem_and_fix(tmp_path, capsys):
    bids, out = _failed_participant_outputs(tmp_path, FAILED)
    rc = main([str(bids), str(out), "group", "--score", "resilience", "--metrics", "fa",
               "--n-perm", "10", "--no-decode", "--n-jobs", "1", "-q"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "flagged as a registration outlier" in err
    assert "fix:" in err and "re-run the participant stage with --force" in err
    assert not (out / "group").exists()


def test_good_registrations_are_not_excluded():
    import pandas as pd

    from microvba.registration.qc import flag_outliers

    # what the default 'microvba simulate' brain (4 mm) scores: none flagged
    good = pd.DataFrame({"correlation": [0.657, 0.655, 0.659, 0.658],
                         "dice_brain": [0.959, 0.955, 0.957, 0.956],
                         "dice_gm": [0.722, 0.721, 0.720, 0.718]})
    assert not flag_outliers(good).any()
    assert flag_outliers(pd.DataFrame([FAILED] * 4)).all()
