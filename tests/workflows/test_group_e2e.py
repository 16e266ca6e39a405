"""The first steps of a new user, end to end: simulate -> participant -> group.

Regression test: the default ``microvba simulate`` dataset used to be a 24 mm box of random
tissue, whose normalisation to MNI failed the registration QC for every subject, so the group
stage stopped with "every subject was flagged as a registration outlier". The dataset is now
a (coarse) whole brain; here it is made smaller and coarser only to keep the test fast.
"""

import json

import pandas as pd
import pytest

from microvba.cli import main


def test_simulate_participant_group(tmp_path, shared_data, monkeypatch, capsys):
    monkeypatch.setenv("MICROVBA_DATA", str(shared_data))
    monkeypatch.setenv("MICROVBA_PROGRESS", "0")
    bids, out = tmp_path / "bids", tmp_path / "out"
    assert main(["simulate", str(bids), "--resolution", "6", "--scheme", "multishell",
                 "-q"]) == 0
    header = (bids / "participants.tsv").read_text().splitlines()[0].split("\t")
    assert "resilience" in header
    assert main([str(bids), str(out), "participant", "--models", "tensor", "--resolution", "6",
                 "--n-jobs", "1", "-q"]) == 0
    for qc_file in sorted(out.glob("sub-*/dwi/*_desc-registration_qc.json")):
        qc = json.loads(qc_file.read_text())
        assert qc["dice_brain"] > 0.85 and qc["dice_gm"] > 0.45, (qc_file.name, qc)
    capsys.readouterr()
    rc = main([str(bids), str(out), "group", "--score", "resilience", "--resolution", "6",
               "--n-perm", "20", "--no-decode", "--n-jobs", "1", "-q"])
    assert rc == 0, capsys.readouterr().err
    group = out / "group"
    analysis = json.loads((group / "analysis.json").read_text())
    assert analysis["excluded_outliers"] == []
    assert analysis["summary"]["n_subjects"] == 4
    assert analysis["summary"]["n_voxels"] > 1000
    qc = pd.read_csv(group / "qc.tsv", sep="\t")
    assert len(qc) == 4 and not qc["outlier"].any()
    for metric in ("fa", "md", "rd", "ad"):
        assert (group / metric).is_dir()
    assert (group / "report.html").exists()
    # the unchanged command controls the family of 4 metrics x 2 signs (min-p)
    assert analysis["correct_across"] == "all" and analysis["family_method"] == "minp-tail"
    assert (group / "fa" / "fa_tfce_famcorrp_tstat2.nii.gz").exists()
    # the output names of today (written through io/derivatives.py; pinned for users' scripts)
    assert {p.name for p in group.iterdir()} >= {
        "fa", "md", "rd", "ad", "analysis.json", "clusters.tsv", "correlations.tsv",
        "participants.tsv", "qc.tsv", "report.html",
        "space-MNI152NLin2009aSym_desc-gm_mask.nii.gz"}
    fa = {p.name for p in (group / "fa").iterdir()}
    assert {f"fa_{s}_{k}_tstat{c}.nii.gz" for s in ("tfce", "vox", "clustere", "clusterm")
            for k in ("corrp", "logp", "famcorrp", "famlogp") for c in (1, 2)} <= fa
    assert {f"fa_{t}_{f}" for t in ("pos", "neg") for f in (
        "clusters.tsv", "cluster-labels.tsv", "cluster-means.tsv", "correlations.tsv",
        "regions.json", "clusters.nii.gz")} | {"fa_randomise.json", "fa_tstat1.nii.gz"} <= fa
    assert (group / "qc.tsv").read_text().splitlines()[0].split("\t") == [
        "participant_id", "correlation", "dice_brain", "dice_gm", "outlier"]
    assert sorted(analysis) == sorted(
        ["SoftwareVersions", "alpha", "cluster_threshold", "correct_across", "covariates",
         "data_dir", "decode", "design_columns", "exclude_outliers", "excluded_outliers",
         "extra", "family_method", "family_statistics", "fwhm", "gm_threshold", "isovf_max", "loso_n_perm", "metrics", "n_perm",
         "npc", "resolution", "score", "seed", "space", "subjects", "summary", "tfce_E",
         "tfce_H", "tfce_connectivity", "vocabularies"])
    # TFCE and voxel t of every map in one family; clusters from their union map
    assert analysis["family_statistics"] == ["tfce", "vox"]
    assert (group / "fa" / "fa_tfcevox_famcorrp_tstat2.nii.gz").exists()
    html = (group / "report.html").read_text()
    assert "Family corrected" in html and "Westfall-Young min-p" in html
    assert "TFCE and the voxel t statistics of every map" in html
    # per-map FWE, as the study reported, plus the NPC maps across the 4 metrics
    rc = main([str(bids), str(out), "group", "--score", "resilience", "--resolution", "6",
               "--n-perm", "20", "--no-decode", "--n-jobs", "1", "-q",
               "--correct-across", "none", "--npc", "fisher"])
    assert rc == 0, capsys.readouterr().err
    analysis = json.loads((group / "analysis.json").read_text())
    assert analysis["correct_across"] == "none" and analysis["npc"] == ["fisher"]
    assert analysis["summary"]["npc"]["fisher"]["n_significant_voxels"] >= 0
    assert (group / "npc" / "npc-fisher_tfce_corrp_tstat1.nii.gz").exists()
    assert (group / "npc" / "npc_clusters.tsv").read_text().splitlines()[0].split("\t") == [
        "combining", "cluster", "n_voxels", "peak_z", "peak_x", "peak_y", "peak_z_mm",
        "min_p_fwe"]
    html = (group / "report.html").read_text()
    assert "within each map only" in html and "Fisher combining" in html


@pytest.mark.slow
def test_simulate_defaults_pass_registration_qc(tmp_path):
    """The documented first step, with the defaults: every subject passes the QC (minutes)."""
    bids, out = tmp_path / "bids", tmp_path / "out"
    assert main(["simulate", str(bids), "-q"]) == 0
    assert main([str(bids), str(out), "participant", "-q"]) == 0
    from microvba.registration.qc import flag_outliers

    rows = [json.loads(p.read_text()) for p in sorted(out.glob("sub-*/dwi/*registration_qc.json"))]
    table = pd.DataFrame(rows)[["correlation", "dice_gm", "dice_brain"]]
    assert len(table) == 4 and not flag_outliers(table).any(), table
