"""The follow-up stage on a small cohort with effects planted in the study's regions."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from microvba._validation import InputError
from microvba.regions.correlation import partial_corr
from microvba.regions.followup import follow_up

from .conftest import STUDY_REGIONS


@pytest.fixture(scope="module")
def stage_inputs(planted, bn_atlas):
    rng = np.random.default_rng(7)
    stat_img, blobs = planted
    brain = bn_atlas.label_data(stat_img) > 0
    stat = np.asarray(stat_img.dataobj).copy()
    stat[brain & (stat == 0)] = rng.normal(0, 0.3, int((brain & (stat == 0)).sum()))
    corrp = np.where(np.asarray(stat_img.dataobj) > 0, 0.99, 0.2).astype(np.float32)
    n = 24
    z = rng.normal(size=n)
    participants = pd.DataFrame(
        {"resilience": z + 0.6 * rng.normal(size=n), "age": rng.normal(40, 10, n),
         "sex": rng.choice(["F", "M"], n)},
        index=pd.Index([f"{i:02d}" for i in range(n)], name="participant"))
    box = (slice(10, 80), slice(10, 100), slice(10, 80))
    data = np.zeros(stat.shape + (n,), np.float32)
    data[box] = 0.7 + 0.05 * rng.standard_normal(data[box].shape).astype(np.float32)
    for _, _, _, blob in blobs:
        data[blob] += 0.05 * z.astype(np.float32)
    affine = stat_img.affine
    return (nib.Nifti1Image(stat.astype(np.float32), affine),
            nib.Nifti1Image(corrp, affine), nib.Nifti1Image(data, affine), participants)


@pytest.fixture(scope="module")
def result(stage_inputs, bn_atlas, tmp_path_factory):
    stat, corrp, metric_imgs, participants = stage_inputs
    out = tmp_path_factory.mktemp("regions")
    res = follow_up(stat, corrp, metric_imgs, participants, "resilience", ["age", "sex"],
                    "ad", "+", out, atlases=[bn_atlas], n_boot=200, loso_n_perm=19)
    return res, out


def test_clusters_labelled(result):
    res, _ = result
    t = res.clusters
    assert len(t) == 5
    assert sorted(t["region"]) == sorted(f"{r}_{h}" for r, h in STUDY_REGIONS)
    assert (t["peak_brainnetome"] == t["region"]).all()
    assert (t["metric"] == "ad").all() and (t["sign"] == "+").all()
    for col in ("cluster_id", "n_voxels", "volume_mm3", "peak_x", "com_z", "subpeaks",
                "brainnetome"):
        assert col in t
    assert set(res.labels["atlas"]) == {"brainnetome"}


def test_means_and_correlations(result, stage_inputs):
    res, _ = result
    participants = stage_inputs[3]
    m = res.means
    assert list(m.index) == list(participants.index)
    assert {"resilience", "age", "sex"} <= set(m.columns)
    c = res.correlations
    assert len(c) == 10 and list(c["method"][:5]) == ["pearson"] * 5
    assert (c["r_interpretation"].str.startswith("descriptive")).all()
    ref = partial_corr(m["cluster_1"], participants["resilience"],
                       participants[["age", "sex"]], n_boot=0)
    first = c.iloc[0]
    assert first["r"] == pytest.approx(ref["r"], abs=1e-12)
    assert first["p"] == pytest.approx(ref["p"], abs=1e-12)
    assert (c["r"] > 0.4).all() and (c["q_fdr"] >= c["p"]).all()
    assert c["loso_r"].notna().all() and (c["loso_r"] > 0.2).all()
    # permutation p of 19 null replicates: a multiple of 1/20; the CI at least Fisher's
    assert np.allclose(c["loso_p"] * 20, np.round(c["loso_p"] * 20)) and (c["loso_p"] > 0).all()
    fisher_half = np.tanh(np.arctanh(c["loso_r"]) + 1.959964 / np.sqrt(c["loso_n"] - c["k"] - 3))
    assert (c["loso_ci_high"] >= fisher_half - 1e-9).all()
    assert res.parameters["loso_n_perm"] == 19
    assert "permutation" in res.parameters["loso_inference"]
    assert (c["loso_ci_low"] < c["loso_r"]).all() and (c["boot_ci_low"] < c["r"]).all()
    assert c["loso_mean_overlap"].mean() > 0.3 and (c["loso_rank"] >= 1).all()


def test_save_writes_documented_files(result):
    res, out = result
    paths = res.save()
    names = {p.name for p in paths.values()}
    for name in ("ad_pos_clusters.tsv", "ad_pos_cluster-labels.tsv",
                 "ad_pos_cluster-means.tsv", "ad_pos_correlations.tsv",
                 "ad_pos_clusters.nii.gz", "ad_pos_cluster-1_scatter.png",
                 "ad_pos_regions.json"):
        assert name in names and (out / name).is_file()
    back = pd.read_csv(out / "ad_pos_correlations.tsv", sep="\t")
    assert np.allclose(back["r"], res.correlations["r"])
    side = json.loads((out / "ad_pos_regions.json").read_text())
    assert side["Parameters"]["metric"] == "ad" and side["n_clusters"] == 5
    assert not list(out.glob(".tmp-*"))


def test_no_significant_cluster(stage_inputs, bn_atlas, tmp_path):
    stat, corrp, metric_imgs, participants = stage_inputs
    empty = nib.Nifti1Image(np.zeros(corrp.shape, np.float32), corrp.affine)
    res = follow_up(stat, empty, metric_imgs, participants, "resilience", [], "fa", "-",
                    tmp_path, atlases=[bn_atlas])
    assert len(res.clusters) == 0 and len(res.correlations) == 0 and not res.figures
    assert (tmp_path / "fa_neg_clusters.tsv").exists() is False
    res.save()
    assert (tmp_path / "fa_neg_clusters.tsv").exists()


def test_missing_atlas_warns_or_raises(stage_inputs, tmp_path, caplog):
    stat, corrp, metric_imgs, participants = stage_inputs
    res = follow_up(stat, corrp, metric_imgs, participants, "resilience", [], "fa", "+",
                    tmp_path, atlases=["brainnetome"], data_dir=tmp_path, loso=False,
                    figures=False, n_boot=0)
    assert "atlas brainnetome skipped" in caplog.text and "region" not in res.clusters
    with pytest.raises(InputError, match="Brainnetome BN-246 atlas is not in"):
        follow_up(stat, corrp, metric_imgs, participants, "resilience", [], "fa", "+",
                  tmp_path, atlases=["brainnetome"], data_dir=tmp_path,
                  missing_atlas="error")


def test_bad_inputs(stage_inputs, bn_atlas, tmp_path):
    stat, corrp, metric_imgs, participants = stage_inputs
    args = (stat, corrp, metric_imgs)
    with pytest.raises(InputError, match="column 'cdrisc' is missing"):
        follow_up(*args, participants, "cdrisc", ["age"], "fa", "+", tmp_path)
    with pytest.raises(InputError, match="23 participants but 24 metric images"):
        follow_up(*args, participants.iloc[:23], "resilience", [], "fa", "+", tmp_path)
    with pytest.raises(InputError, match="'sign' parameter must be one of"):
        follow_up(*args, participants, "resilience", [], "fa", "pos", tmp_path)
    with pytest.raises(InputError, match="score column 'sex' is not numeric"):
        follow_up(*args, participants, "sex", [], "fa", "+", tmp_path)


def test_negative_sign_with_negated_contrast(stage_inputs, bn_atlas, tmp_path):
    """sign '-': the stat map is the negative contrast (positive values), r and LOSO r < 0."""
    stat, corrp, metric_imgs, participants = stage_inputs
    flipped = participants.assign(resilience=-participants["resilience"])
    res = follow_up(stat, corrp, metric_imgs, flipped, "resilience", ["age"], "odi", "-",
                    tmp_path, atlases=[bn_atlas], n_boot=0, figures=False,
                    methods=("spearman",), loso_n_perm=0)
    c = res.correlations
    assert len(c) == 5 and (c["method"] == "spearman").all()
    assert (c["r"] < -0.4).all() and (c["loso_r"] < -0.2).all()
    assert (c["loso_p"] < 0.05).all()  # loso_n_perm=0: the t-test p, continuous
    assert (res.clusters["tail"] == 1).all() and res.tag == "odi_neg"
    paths = res.save()
    assert paths["clusters"].name == "odi_neg_clusters.tsv"


def test_written_names_and_headers_are_those_of_the_contract(result):
    """The follow-up's files and table headers, pinned literally (users' scripts read them)."""
    res, out = result
    res.save(out)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["ad_pos_clusters.tsv", "ad_pos_cluster-labels.tsv", "ad_pos_cluster-means.tsv",
         "ad_pos_correlations.tsv", "ad_pos_clusters.nii.gz", "ad_pos_regions.json"]
        + [f"ad_pos_cluster-{k}_scatter.png" for k in range(1, 6)])

    def header(name):
        return (out / name).read_text().splitlines()[0].split("\t")

    assert header("ad_pos_clusters.tsv") == [
        "cluster_id", "metric", "sign", "region", "tail", "n_voxels", "volume_mm3",
        "peak_stat", "peak_x", "peak_y", "peak_z", "com_x", "com_y", "com_z", "n_subpeaks",
        "subpeaks", "brainnetome", "brainnetome_top", "peak_brainnetome"]
    assert header("ad_pos_cluster-labels.tsv") == [
        "cluster_id", "atlas", "label_id", "label", "n_voxels", "percent", "rank"]
    assert header("ad_pos_cluster-means.tsv") == (
        ["participant"] + [f"cluster_{k}" for k in range(1, 6)] + ["resilience", "age", "sex"])
    assert header("ad_pos_correlations.tsv") == [
        "cluster_id", "method", "n", "k", "r", "ci_low", "ci_high", "p", "q_fdr", "boot_ci_low",
        "boot_ci_high", "loso_r", "loso_ci_low", "loso_ci_high", "loso_p", "loso_n",
        "loso_rank", "loso_mean_overlap", "r_interpretation"]
