"""The model registry drives fitting, names, sidecars, normalisation and --metrics; a map
that no model declares is an error (never labelled 'noddi')."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from microvba._validation import InputError
from microvba.cli import main
from microvba.io import derivatives
from microvba.models import registry
from microvba.models.pipeline import _model_of, fit_image, planned_outputs


def test_registry_entries_are_consistent():
    assert set(registry.REGISTRY) >= {"tensor", "noddi", "gqi", "mapmri"}
    seen: set[str] = set()
    for name, spec in registry.REGISTRY.items():
        assert spec.name == name and spec.metrics and spec.citations
        assert not seen & set(spec.maps), "a map key belongs to two models"
        seen |= set(spec.maps)
        assert set(spec.metric_names) == set(spec.metrics)
        if spec.fitter:
            assert callable(spec.load_fitter())
    # the derived tables of io.derivatives follow the registry
    assert derivatives.PARAM_MODEL["rtop"] == "mapmri"
    assert derivatives.MODEL_PARAMS["gqi"] == ("qa", "gfa", "iso")
    assert set(derivatives.METRICS) < set(derivatives.all_metrics())
    assert derivatives.map_name("01", "qa", space="MNI152NLin2009aSym") == \
        "sub-01_space-MNI152NLin2009aSym_model-gqi_param-qa_dwimap.nii.gz"


def test_unknown_map_is_an_error_not_noddi(tmp_path):
    with pytest.raises(KeyError, match="no model- entity"):
        _model_of("foo", tmp_path / "x_desc-brain_mask.nii.gz")
    with pytest.raises(KeyError, match="declares it for 'mapmri'"):
        _model_of("rtop", tmp_path / "x_model-noddi_param-rtop_dwimap.nii.gz")
    assert _model_of("qa", tmp_path / "x_model-gqi_param-qa_dwimap.nii.gz") == "gqi"
    with pytest.raises(KeyError, match="declared by no model"):
        registry.model_of_map("foo")
    assert registry.model_of_map("sigma") == registry.model_of_map("status") == "noddi"


def test_options_defaults_and_unknown():
    opts = registry.model_options(["tensor", "gqi", "mapmri"], {"mapmri": {"laplacian": 0.2}})
    assert opts == {"gqi": {"sampling_length": 1.25},
                    "mapmri": {"radial_order": 6, "laplacian": 0.2, "bval_threshold": 2000.0}}
    with pytest.raises(InputError, match="unknown gqi option"):
        registry.model_options(["gqi"], {"gqi": {"lambda": 1}})
    paths = planned_outputs("/o", "sub-1_space-orig", ["gqi", "mapmri"])
    assert paths["rtop"].name == "sub-1_space-orig_model-mapmri_param-rtop_dwimap.nii.gz"
    assert {"qa", "gfa", "iso", "rtop", "rtap", "rtpp", "msd", "ng", "lambda"} <= set(paths)


def test_fit_cli_gqi_mapmri_on_real_crop(shared_data, tmp_path):
    d = shared_data / "dwi"
    out = tmp_path / "out"
    args = ["fit", str(d / "batman_dwi.nii.gz"), "--bval", str(d / "batman_dwi.bval"),
            "--bvec", str(d / "batman_dwi.bvec"), "-o", str(out), "--model", "dti,gqi,mapmri",
            "--mapmri-laplacian", "0.2", "--gqi-sampling-length", "1.2"]
    assert main(args) == 0
    prefix = "batman_space-orig"
    mask = nib.load(out / f"{prefix}_desc-brain_mask.nii.gz").get_fdata() > 0
    maps = {p: nib.load(out / f"{prefix}_model-{m}_param-{p}_dwimap.nii.gz").get_fdata()
            for m, p in (("tensor", "fa"), ("gqi", "qa"), ("gqi", "gfa"), ("mapmri", "rtop"),
                         ("mapmri", "ng"))}
    side = json.loads((out / f"{prefix}_model-mapmri_param-rtop_dwimap.json").read_text())
    assert side["Model"] == "mapmri"
    assert side["MapmriSettings"]["LaplacianWeighting"] == 0.2
    assert side["MapmriSettings"]["RadialOrder"] == 6
    assert side["Parameters"]["model_options"]["gqi"] == {"sampling_length": 1.2}
    gside = json.loads((out / f"{prefix}_model-gqi_param-qa_dwimap.json").read_text())
    assert gside["GqiSettings"]["DiffusionSamplingLength"] == 1.2
    assert gside["QANormalisationValue"] > 0
    # plausible on the corpus-callosum crop: anisotropic voxels (high FA) have high QA/GFA
    # and the highest RTOP
    fa = maps["fa"][mask]
    wm, other = fa > np.percentile(fa, 85), fa < np.percentile(fa, 40)
    for p in ("qa", "gfa", "rtop"):
        assert np.median(maps[p][mask][wm]) > 1.5 * np.median(maps[p][mask][other]), p
    assert np.corrcoef(fa, maps["gfa"][mask])[0, 1] > 0.7
    assert np.all((maps["ng"][mask] >= 0) & (maps["ng"][mask] <= 1))
    # a re-run with other options refits (the options are in the up-to-date check)
    stamp = (out / f"{prefix}_model-gqi_param-qa_dwimap.nii.gz").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / f"{prefix}_model-gqi_param-qa_dwimap.nii.gz").stat().st_mtime_ns == stamp
    assert main(args[:-2] + ["--gqi-sampling-length", "1.3"]) == 0
    assert (out / f"{prefix}_model-gqi_param-qa_dwimap.nii.gz").stat().st_mtime_ns != stamp


@pytest.mark.parametrize("model", ["gqi", "mapmri"])
def test_single_shell_refused_by_the_cli(shared_data, tmp_path, capsys, model):
    d = shared_data / "dwi"
    img = nib.load(d / "batman_dwi.nii.gz")
    bvals = np.loadtxt(d / "batman_dwi.bval")
    bvecs = np.loadtxt(d / "batman_dwi.bvec")
    keep = (bvals < 50) | (np.abs(bvals - 1000) < 100)
    nib.save(nib.Nifti1Image(img.get_fdata()[..., keep].astype(np.float32), img.affine),
             tmp_path / "single_dwi.nii.gz")
    np.savetxt(tmp_path / "single_dwi.bval", bvals[keep][None], fmt="%g")
    np.savetxt(tmp_path / "single_dwi.bvec", bvecs[:, keep], fmt="%.6f")
    out = tmp_path / "out"
    code = main(["fit", str(tmp_path / "single_dwi.nii.gz"), "--bval",
                 str(tmp_path / "single_dwi.bval"), "--bvec", str(tmp_path / "single_dwi.bvec"),
                 "-o", str(out), "--model", f"tensor,{model}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "needs q-space sampled along the radius" in err and "b=1000" in err
    assert "single_dwi.bvec" in err
    assert not any(out.glob("*.nii.gz")) if out.exists() else True  # nothing written


def test_bad_registry_option_exits_2(shared_data, tmp_path, capsys):
    d = shared_data / "dwi"
    with pytest.raises(SystemExit) as exc:  # argparse: exit 2 with the option named
        main(["fit", str(d / "batman_dwi.nii.gz"), "--bval", str(d / "batman_dwi.bval"),
              "--bvec", str(d / "batman_dwi.bvec"), "-o", str(tmp_path), "--model",
              "mapmri", "--mapmri-radial-order", "5"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--mapmri-radial-order" in err and "radial order must be even" in err


def test_fit_image_default_models_unchanged(shared_data, tmp_path):
    d = shared_data / "dwi"
    paths = fit_image(d / "batman_dwi.nii.gz", d / "batman_dwi.bval", d / "batman_dwi.bvec",
                      tmp_path, "x", models=("tensor",))
    side = json.loads((tmp_path / "x_model-tensor_param-fa_dwimap.json").read_text())
    assert "model_options" not in side["Parameters"]  # sidecars of older runs still match
    assert "rtop" not in paths


def test_participant_refuses_single_shell_for_gqi_mapmri(tmp_path, capsys):
    bids, out = tmp_path / "bids", tmp_path / "out"
    assert main(["simulate", str(bids), "--box", "--scheme", "multishell", "-q"]) == 0
    bvals = sorted(bids.rglob("*_dwi.bval"))
    assert bvals
    for path in bvals:  # make every scheme single-shell (b = 0 or 1000)
        b = np.loadtxt(path)
        np.savetxt(path, np.where(b > 50, 1000.0, 0.0)[None], fmt="%g")
    code = main([str(bids), str(out), "participant", "--models", "tensor,mapmri",
                 "--skip-normalise", "--n-jobs", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "MAP-MRI needs q-space sampled along the radius" in err
    assert all(p.name.replace(".bval", ".bvec") in err for p in bvals)
    assert not any(out.rglob("*_dwimap.nii.gz"))


def test_methods_cite_the_models_of_the_analysed_metrics():
    from microvba.report.methods import methods_paragraph

    html = methods_paragraph({"metrics": ["fa", "qa", "rtop"], "model_options": {
        "gqi": {"sampling_length": 1.25}, "mapmri": {"laplacian": "GCV", "radial_order": 6}}})
    for doi in ("10.1109/TMI.2010.2045126", "10.1371/journal.pone.0080713",
                "10.1016/j.neuroimage.2013.04.016", "10.1016/j.neuroimage.2016.03.046"):
        assert doi in html
    assert "QA" in html and "RTOP" in html and "diffusion sampling length 1.25" in html
    assert "Laplacian regularisation (GCV)" in html
    assert "Yeh et al." not in methods_paragraph({"metrics": ["fa"]})
