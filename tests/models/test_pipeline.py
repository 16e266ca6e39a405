"""fit_image and the ``microvba fit`` command end to end on a real crop."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from microvba._validation import InputError
from microvba.cli import main
from microvba.cli.fit import prefix_from_dwi
from microvba.models.pipeline import fit_image


def test_prefix_from_dwi(tmp_path):
    assert prefix_from_dwi(tmp_path / "sub-01_dwi.nii.gz") == "sub-01_space-orig"
    assert prefix_from_dwi(tmp_path / "sub-01_ses-1_dwi.nii") == "sub-01_ses-1_space-orig"


def test_fit_cli_end_to_end(shared_data, tmp_path):
    d = shared_data / "dwi"
    out = tmp_path / "out"
    args = ["fit", str(d / "msmt_dwi.nii.gz"), "--bval", str(d / "msmt_dwi.bval"),
            "--bvec", str(d / "msmt_dwi.bvec"), "--mask", str(d / "msmt_mask.nii.gz"),
            "-o", str(out), "--model", "tensor,noddi", "-q"]
    assert main(args) == 0
    prefix = "msmt_space-orig"
    mask = nib.load(d / "msmt_mask.nii.gz").get_fdata() > 0
    for model, params in (("tensor", ("fa", "md", "rd", "ad")),
                          ("noddi", ("icvf", "odi", "isovf", "kappa", "nrmse"))):
        for p in params:
            f = out / f"{prefix}_model-{model}_param-{p}_dwimap.nii.gz"
            img = nib.load(f)
            assert img.shape == mask.shape
            v = img.get_fdata()
            assert np.all(v[~mask] == 0)
            side = json.loads(f.with_name(f.name.replace(".nii.gz", ".json")).read_text())
            assert side["Parameters"]["d_par"] == 1.7e-3
            assert side["Parameters"]["scheme"]["shells"] == [700.0, 1200.0, 2800.0]
            assert "dwi" in side["InputHashes"]
    fa = nib.load(out / f"{prefix}_model-tensor_param-fa_dwimap.nii.gz").get_fdata()[mask]
    md = nib.load(out / f"{prefix}_model-tensor_param-md_dwimap.nii.gz").get_fdata()[mask]
    icvf = nib.load(out / f"{prefix}_model-noddi_param-icvf_dwimap.nii.gz").get_fdata()[mask]
    assert 0.1 < np.median(fa) < 0.6 and 4e-4 < np.median(md) < 1.5e-3
    assert 0.2 < np.median(icvf) < 0.8
    assert (out / f"{prefix}_desc-brain_mask.nii.gz").exists()
    # a re-run skips (files untouched) unless --force
    stamp = (out / f"{prefix}_model-tensor_param-fa_dwimap.nii.gz").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / f"{prefix}_model-tensor_param-fa_dwimap.nii.gz").stat().st_mtime_ns == stamp
    assert main(args + ["--model", "tensor", "--force"]) == 0


def test_fit_image_auto_mask_and_gm(shared_data, tmp_path):
    d = shared_data / "dwi"
    paths = fit_image(d / "batman_dwi.nii.gz", d / "batman_dwi.bval", d / "batman_dwi.bvec",
                      tmp_path, "sub-x_space-orig", models=("tensor",), tissue="gm")
    assert set(paths) >= {"fa", "md", "rd", "ad", "b0", "mask"}
    assert nib.load(paths["b0"]).get_fdata().max() > 0
    assert nib.load(paths["mask"]).get_fdata().sum() > 100


def test_fit_cli_bad_inputs(shared_data, tmp_path, capsys):
    d = shared_data / "dwi"
    base = [str(d / "msmt_dwi.nii.gz"), "--bval", str(d / "msmt_dwi.bval"), "--bvec",
            str(d / "msmt_dwi.bvec"), "-o", str(tmp_path)]
    assert main(["fit", str(tmp_path / "missing_dwi.nii.gz")] + base[1:]) == 2
    assert "DWI file not found" in capsys.readouterr().err
    assert main(["fit"] + base + ["--model", "dki"]) == 2
    err = capsys.readouterr().err  # the public option name, checked before the files
    assert "--models" in err and "unknown value(s) ['dki']" in err
    with pytest.raises(InputError, match="volumes but the gradient table has"):
        fit_image(d / "msmt_dwi.nii.gz", d / "batman_dwi.bval", d / "batman_dwi.bvec",
                  tmp_path, "x", models=("tensor",))
    with pytest.raises(InputError, match="mask shape"):
        fit_image(d / "batman_dwi.nii.gz", d / "batman_dwi.bval", d / "batman_dwi.bvec",
                  tmp_path, "x", mask_path=d / "msmt_mask.nii.gz", models=("tensor",))
    with pytest.raises(InputError, match="no model requested"):
        fit_image(d / "batman_dwi.nii.gz", d / "batman_dwi.bval", d / "batman_dwi.bvec",
                  tmp_path, "x", models=())
    img3d = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)), img3d)
    with pytest.raises(InputError, match="3-D"):
        fit_image(img3d, d / "batman_dwi.bval", d / "batman_dwi.bvec", tmp_path, "x",
                  models=("tensor",))


def test_fit_cli_noddi_options(shared_data, tmp_path, capsys):
    """--noddi-compat / --noddi-s0 / --noddi-noise: checked before any work (exit 2), recorded
    in the sidecar with sigma and fit-status maps and the voxel counts."""
    d = shared_data / "dwi"
    base = ["fit", str(d / "msmt_dwi.nii.gz"), "--bval", str(d / "msmt_dwi.bval"), "--bvec",
            str(d / "msmt_dwi.bvec"), "--mask", str(d / "msmt_mask.nii.gz"), "-q",
            "--model", "noddi"]
    for opt, bad in (("--noddi-compat", "matlab"), ("--noddi-s0", "free"),
                     ("--noddi-noise", "mad")):
        assert main(base + ["-o", str(tmp_path / "bad"), opt, bad]) == 2
        err = capsys.readouterr().err
        assert f"{opt}: unknown value(s) ['{bad}']" in err
    assert not (tmp_path / "bad").exists()
    out = tmp_path / "tb"
    assert main(base + ["-o", str(out), "--noddi-compat", "toolbox"]) == 0
    prefix = "msmt_space-orig"
    mask = nib.load(d / "msmt_mask.nii.gz").get_fdata() > 0
    status = nib.load(out / f"{prefix}_model-noddi_param-status_dwimap.nii.gz").get_fdata()
    assert np.all(status[~mask] == 0) and np.all(np.isin(status[mask], [1, 2, 3]))
    side = json.loads((out / f"{prefix}_model-noddi_param-icvf_dwimap.json").read_text())
    assert side["NoddiSettings"]["compat"] == "toolbox"
    assert side["NoddiSettings"]["s0"] == "fixed" and side["NoiseSigmaMethod"] == "none"
    assert side["VoxelsFitted"] + side["VoxelsAtBound"] + side["VoxelsFailed"] == mask.sum()
    assert side["Parameters"]["noddi_options"] == {"compat": "toolbox"}


def test_participant_settings_check_noddi_options():
    from microvba.workflows.participant import ParticipantSettings

    assert ParticipantSettings(noddi_compat="toolbox").noddi_compat == "toolbox"
    with pytest.raises(InputError, match=r"--noddi-s0: unknown value"):
        ParticipantSettings(noddi_s0="free")
