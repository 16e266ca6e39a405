"""The output contract (``io/derivatives.py``) writes exactly the names and columns of today.

The expected values below are literal copies of what microvba 0.1 wrote before the contract
module existed (recorded from a run of ``simulate -> participant -> group``, ``fit``,
``randomise``, ``roi`` and ``decode``; see docs/architecture.md), so a change to the
contract that renames a user-visible file, column or key fails here.
"""

from __future__ import annotations

from dataclasses import fields

import pytest

from microvba._validation import InputError
from microvba.io import derivatives as D

MNI = "MNI152NLin2009aSym"


def test_per_subject_names():
    native = D.space_prefix("sub-01")
    assert native == "sub-01_space-orig"
    assert D.model_map_name(native, "noddi", "icvf") == \
        "sub-01_space-orig_model-noddi_param-icvf_dwimap.nii.gz"
    assert D.model_map_name(native, "noddi", "odi", desc="modulated") == \
        "sub-01_space-orig_desc-modulated_model-noddi_param-odi_dwimap.nii.gz"
    assert D.map_name("01", "fa", space=MNI) == \
        "sub-01_space-MNI152NLin2009aSym_model-tensor_param-fa_dwimap.nii.gz"
    assert D.map_name("01", "fa", space=MNI, session="2") == \
        "sub-01_ses-2_space-MNI152NLin2009aSym_model-tensor_param-fa_dwimap.nii.gz"
    assert D.brain_mask_name(native) == "sub-01_space-orig_desc-brain_mask.nii.gz"
    assert D.brain_mask_name(D.space_prefix("sub-01", MNI)) == \
        "sub-01_space-MNI152NLin2009aSym_desc-brain_mask.nii.gz"
    assert D.meanb0_name(native) == "sub-01_space-orig_desc-meanb0_dwiref.nii.gz"
    assert D.registration_qc_name("sub-01", MNI) == \
        "sub-01_space-MNI152NLin2009aSym_desc-registration_qc.json"
    assert D.qc_mosaic_path("OUT", "sub-01_ses-2", MNI).as_posix() == \
        "OUT/sub-01/figures/sub-01_ses-2_space-MNI152NLin2009aSym_desc-qc_dwimap.png"
    assert D.xfm_names("sub-01", MNI) == {
        "json": "sub-01_from-dwi_to-MNI152NLin2009aSym_mode-image_xfm.json",
        "warp": "sub-01_from-dwi_to-MNI152NLin2009aSym_desc-warp_xfm.nii.gz",
        "affine": "sub-01_from-dwi_to-MNI152NLin2009aSym_desc-affine_xfm.mat",
        "rigid": "sub-01_from-dwi_to-T1w_desc-rigid_xfm.mat"}
    assert D.combined_dwi_stem("sub-01") == "sub-01_desc-combined_dwi"
    assert D.dwi_series_log_name("sub-01") == "sub-01_dwi-series.json"
    assert D.model_of_name("sub-01_space-orig_model-mapmri_param-rtop_dwimap.nii.gz") == "mapmri"
    assert D.model_of_name("sub-01_space-orig_desc-brain_mask.nii.gz") is None


def test_group_names():
    assert (D.GROUP_DIR, D.ANALYSIS_JSON, D.GROUP_PARTICIPANTS_TSV, D.QC_TSV, D.CLUSTERS_TSV,
            D.CORRELATIONS_TSV, D.PLANTED_TSV, D.REPORT_HTML, D.DECODING_DIR, D.NPC_DIR,
            D.NPC_CLUSTERS_TSV) == (
        "group", "analysis.json", "participants.tsv", "qc.tsv", "clusters.tsv",
        "correlations.tsv", "planted_vs_found.tsv", "report.html", "decoding", "npc",
        "npc_clusters.tsv")
    assert D.group_mask_name(MNI) == "space-MNI152NLin2009aSym_desc-gm_mask.nii.gz"
    assert D.npc_prefix("fisher") == "npc-fisher"
    assert D.truth_map_name(MNI, "fa") == \
        "space-MNI152NLin2009aSym_param-fa_desc-truth_dwimap.nii.gz"
    assert D.planted_seg_name(MNI) == "space-MNI152NLin2009aSym_desc-planted_dseg.nii.gz"


#: the 44 maps of one metric of a group run (correct_across all), as written before
RANDOMISE_MAPS = sorted(
    [f"fa_{s}_{k}_tstat{c}.nii.gz" for s in ("tfce", "vox", "clustere", "clusterm")
     for k in ("corrp", "logp", "famcorrp", "famlogp") for c in (1, 2)]
    + [f"fa_vox_{k}_tstat{c}.nii.gz" for k in ("p", "unclogp", "fdrp", "fdrlogp")
       for c in (1, 2)]
    + [f"fa_tstat{c}.nii.gz" for c in (1, 2)] + [f"fa_tfce_tstat{c}.nii.gz" for c in (1, 2)])


def test_randomise_map_names():
    keys = [D.tstat_key(c) for c in (1, 2)] + [D.stat_key("tfce", c) for c in (1, 2)]
    for c in (1, 2):
        keys += [D.voxel_key(k, c) for k in ("p", "unclogp", "fdrp", "fdrlogp")]
        for stat in D.STATS:
            for family in (False, True):
                keys += [D.corrp_key(stat, c, family=family), D.logp_key(stat, c, family=family)]
    assert sorted(D.randomise_map_name("fa", k) for k in keys) == RANDOMISE_MAPS
    assert len(RANDOMISE_MAPS) == 44
    assert D.randomise_sidecar_name("fa") == "fa_randomise.json"
    assert D.renumber_key("tfce_corrp_tstat1", 3) == "tfce_corrp_tstat3"
    assert D.renumber_key("tstat1", 2) == "tstat2"
    assert D.renumber_key("tfce_family", 2) == "tfce_family"


def test_regions_and_decoding_names():
    tag = D.region_tag("fa", "-")
    assert tag == "fa_neg" and D.region_tag("icvf", "+") == "icvf_pos"
    assert [D.region_file(tag, w) for w in D.REGION_FILES] == [
        "fa_neg_clusters.tsv", "fa_neg_cluster-labels.tsv", "fa_neg_cluster-means.tsv",
        "fa_neg_correlations.tsv", "fa_neg_clusters.nii.gz", "fa_neg_regions.json"]
    assert D.scatter_name(tag, D.cluster_figure_key(2.0)) == "fa_neg_cluster-2_scatter.png"
    assert D.cluster_mean_column(3) == "cluster_3"
    stem = D.decoding_stem("fa_pos", "lda50", 1)
    assert stem == "fa_pos_cluster-1_vocab-lda50"
    assert D.decoding_table_name(stem) == "fa_pos_cluster-1_vocab-lda50_decoding.tsv"
    assert D.decoding_table_name(stem, D.MAP_DECODING) == \
        "fa_pos_cluster-1_vocab-lda50_mapdecoding.tsv"
    assert D.decoding_figure_name(stem, "polar") == "fa_pos_cluster-1_vocab-lda50_polar.png"
    assert D.decoding_sidecar_name("fa_pos") == "fa_pos_decoding.json"
    # the decode subcommand: <prefix>_vocab-<v>_{decoding,mapdecoding}.tsv, _map_bar.png, ...
    roi = D.decoding_stem("roi", "terms")
    assert [D.decoding_table_name(roi, k) for k in (D.DECODING, D.MAP_DECODING)] == [
        "roi_vocab-terms_decoding.tsv", "roi_vocab-terms_mapdecoding.tsv"]
    assert D.decoding_figure_name(roi, "bar", D.MAP_DECODING) == "roi_vocab-terms_map_bar.png"
    assert D.decoding_sidecar_name(roi) == "roi_vocab-terms_decoding.json"
    assert D.dropped_features_name(roi) == "roi_vocab-terms_dropped-features.tsv"


def test_table_columns():
    assert "\t".join(D.CLUSTER_COLUMNS) == (
        "cluster_id\ttail\tn_voxels\tvolume_mm3\tpeak_stat\tpeak_x\tpeak_y\tpeak_z\tcom_x\t"
        "com_y\tcom_z\tn_subpeaks\tsubpeaks")
    # <tag>_clusters.tsv / clusters.tsv without atlas labels (no cluster or no atlas)
    assert "\t".join(D.GROUP_CLUSTER_COLUMNS) == (
        "cluster_id\tmetric\tsign\ttail\tn_voxels\tvolume_mm3\tpeak_stat\tpeak_x\tpeak_y\t"
        "peak_z\tcom_x\tcom_y\tcom_z\tn_subpeaks\tsubpeaks")
    assert "\t".join(D.CORRELATION_COLUMNS) == (
        "cluster_id\tmethod\tn\tk\tr\tci_low\tci_high\tp\tq_fdr\tboot_ci_low\tboot_ci_high\t"
        "loso_r\tloso_ci_low\tloso_ci_high\tloso_p\tloso_n\tloso_rank\tloso_mean_overlap\t"
        "r_interpretation")
    assert "\t".join(D.CLUSTER_LABEL_COLUMNS) == \
        "cluster_id\tatlas\tlabel_id\tlabel\tn_voxels\tpercent\trank"
    assert "\t".join(D.NPC_CLUSTER_COLUMNS) == \
        "combining\tcluster\tn_voxels\tpeak_z\tpeak_x\tpeak_y\tpeak_z_mm\tmin_p_fwe"
    assert "\t".join(D.QC_COLUMNS) == "participant_id\tcorrelation\tdice_brain\tdice_gm\toutlier"
    assert "\t".join(D.DECODING_COLUMNS) == (
        "feature\tlabel\tn_selected\tp_roi_given_feature\tp_roi_given_other\tlog_odds\tz\tp\t"
        "p_method\tq\tp_perm\tp_null\tq_null\tr\tsignificant")
    assert "\t".join(D.MAP_DECODING_COLUMNS) == \
        "feature\tlabel\tn_selected\tr\tp_perm\tp_null\tq_null\tsignificant"
    assert "\t".join(D.DROPPED_FEATURE_COLUMNS) == "feature\tn_selected\treason\tlabel"
    assert "\t".join(D.ROI_COLUMNS) == "region\tmap\tvolume\tparticipant\tn_voxels\tmean"
    assert D.atlas_columns("aal") == ("aal", "aal_top", "peak_aal")
    assert D.LOSO_OF_PARTIAL == {"loso_r": "r", "loso_ci_low": "ci_low",
                                 "loso_ci_high": "ci_high", "loso_p": "p", "loso_n": "n"}


def test_every_named_column_is_in_a_column_list():
    lists = {c for name in dir(D) if name.endswith("COLUMNS")
             for c in getattr(D, name) if isinstance(getattr(D, name), tuple)}
    named = [D.N_VOXELS, D.VOLUME_MM3, D.PEAK_STAT, D.METHOD, D.N, D.R, D.P, D.CI_LOW,
             D.CI_HIGH, D.Q_FDR, D.BOOT_CI_LOW, D.BOOT_CI_HIGH, D.LOSO_R, D.LOSO_CI_LOW,
             D.LOSO_CI_HIGH, D.FEATURE, D.LABEL, D.LOG_ODDS, D.Q, D.SIGNIFICANT, D.HEMISPHERE,
             D.PLANTED_R, D.STUDY_R, D.FOUND, D.FOUND_R, D.PEAK_DISTANCE_MM, D.STATUS,
             D.METRIC, D.SIGN, D.CLUSTER_ID, D.REGION, D.PARTICIPANT_ID, D.OUTLIER, *D.PEAK_XYZ]
    assert not [c for c in named if c not in lists]
    assert set(D.PARTIAL_CORR_KEYS) - {"dof"} <= lists


def test_analysis_keys():
    from microvba.workflows.group import GroupSettings

    settings = {f.name: None for f in fields(GroupSettings)}
    record = D.analysis_record(settings, family_method="minp-tail",
                               family_statistics=["tfce", "vox"], subjects=[],
                               excluded_outliers=[], space=MNI, design_columns=[],
                               software_versions={}, summary={})
    assert sorted(record) == [
        "SoftwareVersions", "alpha", "cluster_threshold", "correct_across", "covariates",
        "data_dir", "decode", "design_columns", "exclude_outliers", "excluded_outliers",
        "extra", "family_method", "family_statistics", "fwhm", "gm_threshold", "isovf_max", "loso_n_perm",
        "metrics", "n_perm", "npc", "resolution", "score", "seed", "space", "subjects",
        "summary", "tfce_E", "tfce_H", "tfce_connectivity", "vocabularies"]
    with pytest.raises(ValueError, match="shadow"):
        D.analysis_record({"summary": 1}, family_method="", family_statistics=[], subjects=[], excluded_outliers=[],
                          space=MNI, design_columns=[], software_versions={}, summary={})
    summary = D.analysis_summary(n_subjects=4, n_voxels=10, metrics={}, family="all",
                                 n_clusters=0)
    assert list(summary) == ["n_subjects", "n_voxels", "metrics", "family", "n_clusters"]
    summary = D.analysis_summary(n_subjects=4, n_voxels=10, metrics={}, family="none",
                                 n_clusters=2, npc={}, planted_found=1, false_clusters=0)
    assert list(summary) == ["n_subjects", "n_voxels", "metrics", "family", "npc",
                             "n_clusters", "planted_found", "false_clusters"]


def test_check_columns_names_the_file_and_the_missing_column():
    D.check_columns(["cluster_id", "metric"], ("metric",), "t.tsv")
    with pytest.raises(InputError, match="lacks the column.*q_fdr") as err:
        D.check_columns(["cluster_id", "q"], ("cluster_id", "q_fdr"), "group/x.tsv")
    assert "group/x.tsv" in str(err.value) and "it has: cluster_id, q" in str(err.value)


@pytest.mark.parametrize("bad", ["pos", "neg", "1", "-1", "positive", "−", "", "nan"])
def test_one_sign_spelling(bad):
    assert [D.parse_sign(s) for s in ("+", "-", " + ")] == ["+", "-", "+"]
    with pytest.raises(InputError, match="not one of"):
        D.parse_sign(bad, "clusters.tsv")


def test_atlases_in_a_cluster_table():
    cols = ["cluster_id", "region", "brainnetome", "brainnetome_top", "aal", "aal_top",
            "julich", "julich_top", "peak_brainnetome", "peak_aal", "peak_julich", "peak_x"]
    assert D.atlases_in(cols) == ["brainnetome", "aal", "julich"]
    assert D.atlases_in(cols[:4]) == []  # no peak_ column: not an atlas of the contract
