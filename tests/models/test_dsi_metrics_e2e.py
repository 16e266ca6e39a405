"""GQI and MAP-MRI metrics flow like FA: participant stage (--models), normalisation to MNI,
group stage (--metrics and the default), regional tables and the report with its methods
citations."""

import json

from microvba.cli import main


def test_participant_group_with_gqi_and_mapmri(tmp_path, shared_data, monkeypatch, capsys):
    monkeypatch.setenv("MICROVBA_DATA", str(shared_data))
    monkeypatch.setenv("MICROVBA_PROGRESS", "0")
    bids, out = tmp_path / "bids", tmp_path / "out"
    assert main(["simulate", str(bids), "--resolution", "6", "--scheme", "multishell",
                 "--n-subjects", "4", "-q"]) == 0
    assert main([str(bids), str(out), "participant", "--models", "tensor,gqi,mapmri",
                 "--mapmri-laplacian", "0.2", "--resolution", "6", "--n-jobs", "1",
                 "-q"]) == 0
    mni = sorted(out.glob("sub-*/dwi/*_space-MNI152NLin2009aSym_model-*_dwimap.nii.gz"))
    names = {p.name.split("_model-")[1] for p in mni}
    assert {"gqi_param-qa_dwimap.nii.gz", "mapmri_param-rtop_dwimap.nii.gz",
            "tensor_param-fa_dwimap.nii.gz"} <= names
    settings = json.loads((out / "logs" / "participant_settings.json").read_text())
    assert settings["model_options"]["mapmri"]["laplacian"] == 0.2
    capsys.readouterr()
    rc = main([str(bids), str(out), "group", "--score", "resilience", "--resolution", "6",
               "--metrics", "qa,rtop", "--n-perm", "20", "--no-decode", "--n-jobs", "1",
               "-q"])
    assert rc == 0, capsys.readouterr().err
    group = out / "group"
    analysis = json.loads((group / "analysis.json").read_text())
    assert list(analysis["metrics"]) == ["qa", "rtop"] or \
        set(analysis["summary"]["metrics"]) == {"qa", "rtop"}
    for metric in ("qa", "rtop"):
        assert (group / metric / f"{metric}_tstat1.nii.gz").exists()
    html = (group / "report.html").read_text(encoding="utf-8")
    assert "QA" in html and "RTOP" in html
    assert "Yeh et al., 2010" in html and "Fick et al., 2016" in html
    assert "Laplacian regularisation (0.2)" in html
    # the group stage's default analyses every map the participant stage normalised
    from microvba.cli.bids_app import _default_metrics

    assert _default_metrics(out) == ["fa", "md", "rd", "ad", "qa", "gfa", "iso", "rtop",
                                      "rtap", "rtpp", "msd", "ng"]
