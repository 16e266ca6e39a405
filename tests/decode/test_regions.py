"""Regions merged by voxel overlap (decode/regions.py) and decoded once (decode_regions);
one writer for the command line and the group stage; the dropped-feature log once."""

from __future__ import annotations

import ast
import itertools
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from microvba.cli import main
from microvba.decode import Cluster, Decoder, decode_clusters, decode_regions, merge_clusters
from microvba.decode.regions import (
    MIN_OVERLAP,
    clusters_of,
    overlap_coefficient,
    read_regions,
)

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def _box(lo, hi, shape=(20, 20, 20)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
    return m


def _oc_by_sets(a: np.ndarray, b: np.ndarray) -> float:
    """Overlap coefficient from Python sets of voxel tuples (independent of the numpy one)."""
    sa = {tuple(v) for v in np.argwhere(a)}
    sb = {tuple(v) for v in np.argwhere(b)}
    return len(sa & sb) / min(len(sa), len(sb))


def test_overlap_coefficient_matches_set_arithmetic():
    rng = np.random.default_rng(3)
    for _ in range(20):
        a = rng.random((8, 9, 10)) < rng.uniform(0.05, 0.6)
        b = rng.random((8, 9, 10)) < rng.uniform(0.05, 0.6)
        assert overlap_coefficient(a, b) == pytest.approx(_oc_by_sets(a, b), abs=1e-12)
    assert overlap_coefficient(np.zeros((3, 3, 3), bool), np.ones((3, 3, 3), bool)) == 0.0
    assert overlap_coefficient(np.ones((3, 3, 3), bool), np.ones((4, 3, 3), bool)) == 0.0


def test_merge_by_overlap_not_by_name():
    big = _box((2, 2, 2), (12, 12, 12))            # 1000 voxels
    nested = _box((4, 4, 4), (7, 7, 7))             # 27 voxels inside big: OC 1, Dice 0.05
    half = _box((10, 10, 10), (14, 14, 14))         # 64 voxels, 8 inside big: OC 0.125
    apart = _box((15, 15, 15), (19, 19, 19))        # disjoint from all but chain_b
    chain_b = _box((14, 15, 15), (18, 19, 19))      # 48 of its 64 voxels in apart: OC 0.75
    clusters = [Cluster("ad", "+", 1, big, AFFINE), Cluster("md", "+", 1, nested, AFFINE),
                Cluster("fa", "+", 1, half, AFFINE), Cluster("fa", "-", 1, apart, AFFINE),
                Cluster("odi", "-", 2, chain_b, AFFINE)]
    # the numbers behind the expected grouping, from set arithmetic
    assert _oc_by_sets(big, nested) == 1.0
    assert 2 * (big & nested).sum() / (big.sum() + nested.sum()) < 0.1  # Dice would not merge
    assert _oc_by_sets(big, half) < MIN_OVERLAP
    assert _oc_by_sets(apart, chain_b) >= MIN_OVERLAP
    assert _oc_by_sets(half, chain_b) < MIN_OVERLAP
    regions = merge_clusters(clusters)
    groups = [[(c.metric, c.sign) for c in r.members] for r in regions]
    assert groups == [[("ad", "+"), ("md", "+")], [("fa", "+")], [("fa", "-"), ("odi", "-")]]
    assert [r.region_id for r in regions] == [1, 2, 3]
    assert regions[0].stem == "ad_pos_cluster-1"
    assert regions[0].metrics == "ad+,md+"
    assert (regions[0].mask == (big | nested)).all()
    assert regions[2].mask.sum() == (apart | chain_b).sum()
    # a threshold below the partial overlap merges the half-overlapping cluster too
    assert len(merge_clusters(clusters, min_overlap=0.1)[0].members) == 3
    # single linkage: a chain of pairwise overlaps is one region, whatever the order
    a, b, c = _box((0, 0, 0), (4, 4, 4)), _box((2, 0, 0), (6, 4, 4)), _box((4, 0, 0), (8, 4, 4))
    assert _oc_by_sets(a, c) == 0
    for order in itertools.permutations([a, b, c]):
        regs = merge_clusters([Cluster("x", "+", i + 1, m, AFFINE)
                               for i, m in enumerate(order)])
        assert len(regs) == 1 and len(regs[0].members) == 3


def test_clusters_on_other_grids_never_merge():
    m = _box((2, 2, 2), (6, 6, 6))
    regs = merge_clusters([Cluster("ad", "+", 1, m, AFFINE),
                           Cluster("fa", "+", 1, m, np.diag([1.0, 1.0, 1.0, 1.0]))])
    assert len(regs) == 2


def test_clusters_of_reads_every_label():
    labels = np.zeros((6, 6, 6), np.int16)
    labels[0:2, 0:2, 0:2] = 1
    labels[4:6, 4:6, 4:6] = 3
    got = clusters_of(nib.Nifti1Image(labels, AFFINE), "ad", "-")
    assert [(c.cluster_id, c.n_voxels, c.prefix) for c in got] == [(1, 8, "ad_neg"),
                                                                    (3, 8, "ad_neg")]


def test_decode_regions_decodes_each_region_once(shared_data, map_cache, rois, tmp_path,
                                                 decoder_fits):
    fits = decoder_fits
    amyg_img = rois["amygdala"]
    amyg = np.asarray(amyg_img.dataobj) > 0
    motor = np.asarray(rois["A4ul"].dataobj) > 0
    shifted = np.roll(amyg, 2, axis=0)  # the same region in another metric, 2 mm off
    assert _oc_by_sets(amyg, shifted) >= MIN_OVERLAP
    aff = np.asarray(amyg_img.affine)
    ad = nib.Nifti1Image((amyg * 1 + motor * 2).astype(np.int16), aff)
    md = nib.Nifti1Image(shifted.astype(np.int16), aff)
    clusters = clusters_of(ad, "AD", "+") + clusters_of(md, "MD", "+")
    regions, files = decode_regions(clusters, tmp_path, vocabularies=("lda50",),
                                    data_dir=shared_data, cache_dir=map_cache, n_null=50)
    assert len(fits) == 1  # one fitted decoder for every region
    assert [r.metrics for r in regions] == ["AD+,MD+", "AD+"]
    tsvs = sorted(p.name for p in tmp_path.glob("*_decoding.tsv"))
    assert tsvs == ["AD_pos_cluster-1_vocab-lda50_decoding.tsv",
                    "AD_pos_cluster-2_vocab-lda50_decoding.tsv"]  # no MD file: merged
    assert not list(tmp_path.glob("MD_*"))
    table = read_regions(tmp_path)
    assert table["decoded_as"].tolist() == ["AD_pos_cluster-1"] * 2 + ["AD_pos_cluster-2"]
    assert table["region"].tolist() == [1, 1, 2]
    assert table.loc[0, "region_voxels"] == (amyg | shifted).sum()
    # the region's table is the ROI decoding of the union of its clusters
    union = nib.Nifti1Image((amyg | shifted).astype(np.uint8), aff)
    direct = Decoder("lda50", data_dir=shared_data, cache_dir=map_cache, n_null=50,
                     seed=0).fit().decode_roi(union)
    written = pd.read_table(tmp_path / "AD_pos_cluster-1_vocab-lda50_decoding.tsv")
    assert written["feature"].tolist() == direct["feature"].tolist()
    np.testing.assert_allclose(written["log_odds"], direct["log_odds"], rtol=1e-5)
    np.testing.assert_allclose(written["p_null"], direct["p_null"], rtol=1e-5)
    assert written["feature"].iloc[0] == "26_emotional_amygdala_negative"
    assert files["regions"].name == "regions.tsv"


def test_cli_and_group_stage_write_the_same_table(shared_data, map_cache, rois, tmp_path):
    """One writer: the command line and decode_clusters give byte-identical tables for the
    same ROI, seed and null size."""
    roi = tmp_path / "dCa.nii.gz"
    nib.save(rois["dCa_R"], roi)
    assert main(["decode", "--roi", str(roi), "--data-dir", str(shared_data),
                 "--cache-dir", str(map_cache), "--n-null", "60", "-o",
                 str(tmp_path / "cli"), "-q"]) == 0
    out = decode_clusters(rois["dCa_R"], tmp_path / "grp", "x", vocabularies=("lda50",),
                          data_dir=shared_data, cache_dir=map_cache, n_null=60)
    cli_tsv = tmp_path / "cli" / "dCa_vocab-lda50_decoding.tsv"
    assert cli_tsv.read_bytes() == Path(out[1]["lda50_tsv"]).read_bytes()
    assert (tmp_path / "cli" / "dCa_vocab-lda50_bar.png").stat().st_size > 0
    assert Path(out[1]["lda50_bar"]).stat().st_size > 0


def test_database_does_not_import_maps():
    import microvba.decode.database as database

    tree = ast.parse(Path(database.__file__).read_text())
    names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "maps" not in names and not any(str(m).endswith(".maps") for m in names)


def test_dropped_features_logged_once_per_process(caplog, monkeypatch):
    from microvba.decode import maps

    dropped = pd.DataFrame({"feature": ["a", "b"], "label": ["a", "b"], "n_selected": [0, 9],
                            "reason": ["threshold selects no study",
                                       "fewer than min_studies=50 selected studies"]})
    key = "test-entry-" + str(id(dropped))
    monkeypatch.setattr(maps, "_DROPPED_LOGGED", set())
    with caplog.at_level(logging.INFO, logger="microvba"):
        for _ in range(4):
            maps._log_dropped(dropped, "terms", 50, key=key)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "threshold selects all or no studies" in warnings[0].message
    assert sum("fewer than 50" in r.getMessage() for r in caplog.records) == 1


def test_group_decoders_reload_logs_once(shared_data, map_cache, caplog, monkeypatch):
    """Fitting the same vocabulary again (a second metric, another call) does not repeat
    the dropped-feature report."""
    from microvba.decode import maps

    monkeypatch.setattr(maps, "_DROPPED_LOGGED", set())  # independent of the test order
    with caplog.at_level(logging.DEBUG, logger="microvba"):
        for _ in range(3):
            Decoder("lda50", data_dir=shared_data, cache_dir=map_cache, n_null=10,
                    threshold=0.001).fit()
    warned = [r for r in caplog.records if r.levelno == logging.WARNING
              and "get no map" in r.getMessage()]
    assert len(warned) == 1
    assert sum("already reported" in r.getMessage() for r in caplog.records) >= 2


def test_group_stage_decodes_regions_once(shared_data, map_cache, rois, tmp_path,
                                          monkeypatch):
    """The group stage's decoding step (workflows.group._decode) writes one table per
    region and regions.tsv, for clusters collected from several metrics."""
    from types import SimpleNamespace

    from microvba.workflows import group

    monkeypatch.setenv("MICROVBA_CACHE", str(map_cache))
    amyg_img = rois["amygdala"]
    amyg = np.asarray(amyg_img.dataobj) > 0
    aff = np.asarray(amyg_img.affine)
    clusters = (clusters_of(nib.Nifti1Image(amyg.astype(np.int16), aff), "FA", "+")
                + clusters_of(nib.Nifti1Image(amyg.astype(np.int16), aff), "MD", "-"))
    settings = SimpleNamespace(vocabularies=("lda50",), data_dir=str(shared_data),
                               seed=0)
    group._decode(clusters, settings, tmp_path)
    dec = tmp_path / "group" / "decoding"
    assert [p.name for p in sorted(dec.glob("*_decoding.tsv"))] == [
        "FA_pos_cluster-1_vocab-lda50_decoding.tsv"]
    table = read_regions(dec)
    assert table["metrics"].tolist() == ["FA+,MD-"] * 2
    assert table["overlap"].tolist() == [1.0, 1.0]
