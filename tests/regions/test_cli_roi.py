"""``microvba roi``: a priori region means and their partial correlation."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from microvba._validation import InputError
from microvba.cli import main
from microvba.regions.correlation import partial_corr

#: a 2 mm box around the left caudal cingulate (A23c_L)
AFFINE = np.array([[-2.0, 0, 0, 10], [0, 2.0, 0, -50], [0, 0, 2.0, 20], [0, 0, 0, 1]])
SHAPE = (20, 30, 18)


@pytest.fixture(scope="module")
def maps(tmp_path_factory, bn_atlas):
    """Twelve subjects' 3-D maps (named sub-XX) and the same as one 4-D map, plus participants."""
    rng = np.random.default_rng(11)
    folder = tmp_path_factory.mktemp("roi")
    ref = nib.Nifti1Image(np.zeros(SHAPE, np.float32), AFFINE)
    region = np.asarray(bn_atlas.region_mask("A23c", "L", ref).dataobj) > 0
    n = 12
    level = rng.normal(1.0, 0.1, n)
    vols = []
    paths = []
    for i in range(n):
        vol = rng.normal(0, 0.01, SHAPE).astype(np.float32)
        vol[region] += level[i]
        vols.append(vol)
        p = folder / f"sub-{i:02d}_space-MNI_param-ad_dwimap.nii.gz"
        nib.save(nib.Nifti1Image(vol, AFFINE), str(p))
        paths.append(p)
    four = folder / "all_ad.nii.gz"
    nib.save(nib.Nifti1Image(np.stack(vols, -1), AFFINE), str(four))
    part = pd.DataFrame({"participant_id": [f"sub-{i:02d}" for i in range(n)],
                         "resilience": level * 10 + rng.normal(0, 0.5, n),
                         "age": rng.normal(40, 10, n)})
    tsv = folder / "participants.tsv"
    part.iloc[::-1].to_csv(tsv, sep="\t", index=False)  # another order: matched by label
    return folder, paths, four, tsv, level, region, vols


def test_roi_means_one_row_per_map(maps, shared_data, capsys):
    folder, paths, four, _, level, region, vols = maps
    out = folder / "roi.tsv"
    rc = main(["roi", "--map", *map(str, paths[:3]), str(four), "--atlas", "brainnetome",
               "--region", "A23c", "--hemisphere", "L", "--data-dir", str(shared_data),
               "-o", str(out), "-q"])
    assert rc == 0
    t = pd.read_csv(out, sep="\t", dtype={"participant": str})
    assert len(t) == 3 + 12 and (t["region"] == "A23c_L").all()
    assert list(t["participant"][:3]) == ["00", "01", "02"]
    assert list(t["volume"][3:]) == list(range(12))
    expected = [float(v[region].mean()) for v in vols]
    assert np.allclose(t["mean"][3:], expected, atol=1e-6)
    assert np.allclose(t["mean"][:3], expected[:3], atol=1e-6)
    assert (t["n_voxels"] == region.sum()).all()


def test_roi_partial_correlation(maps, shared_data, capsys):
    folder, paths, _, tsv, level, region, vols = maps
    out = folder / "corr.tsv"
    rc = main(["roi", "--map", *map(str, paths), "--region", "A23c_L",
               "--data-dir", str(shared_data), "--participants", str(tsv),
               "--score", "resilience", "--covariates", "age", "--n-boot", "100", "-o",
               str(out), "-q"])
    assert rc == 0
    assert "partial pearson r =" in capsys.readouterr().err
    side = json.loads((folder / "corr.json").read_text())
    t = pd.read_csv(out, sep="\t")
    ref = partial_corr(t["mean"], t["resilience"], t[["age"]], n_boot=0)
    assert side["correlation"]["r"] == pytest.approx(ref["r"], abs=1e-12)
    assert side["correlation"]["r"] > 0.8
    part = pd.read_csv(tsv, sep="\t").set_index("participant_id")
    assert np.allclose(t["resilience"], part.loc[[f"sub-{i:02d}" for i in range(12)],
                                                 "resilience"])


def test_roi_stdout_and_errors(maps, shared_data, capsys):
    folder, paths, four, tsv, *_ = maps
    assert main(["roi", "--map", str(paths[0]), "--region", "A23d", "--data-dir",
                 str(shared_data), "-q"]) == 0
    assert "A23d" in capsys.readouterr().out
    assert main(["roi", "--map", str(paths[0]), "--region", "A10m", "--data-dir",
                 str(shared_data), "-q"]) == 2
    assert "has no voxel inside this map's field of view" in capsys.readouterr().err
    assert main(["roi", "--map", str(paths[0]), "--region", "A23", "--data-dir",
                 str(shared_data), "-q"]) == 2
    assert "Close matches: " in capsys.readouterr().err
    assert main(["roi", "--map", str(folder / "nope.nii.gz"), "--region", "A23c",
                 "--data-dir", str(shared_data), "-q"]) == 2
    assert "map not found" in capsys.readouterr().err
    assert main(["roi", "--map", str(paths[0]), "--region", "A23c", "--score", "x",
                 "--data-dir", str(shared_data), "-q"]) == 2
    assert "--score needs --participants" in capsys.readouterr().err
    assert main(["roi", "--map", str(four), str(paths[0]), "--region", "A23c",
                 "--participants", str(tsv), "--score", "resilience",
                 "--data-dir", str(shared_data), "-q"]) == 2
    assert "13 map volumes but 12 participants" in capsys.readouterr().err
    assert main(["roi", "--map", str(paths[0]), "--region", "A23c", "--participants",
                 str(tsv), "--score", "cdrisc", "--data-dir", str(shared_data), "-q"]) == 2
    assert "column 'cdrisc' is missing" in capsys.readouterr().err
    bad = folder / "bad.nii.gz"
    bad.write_bytes(b"not a nifti")
    assert main(["roi", "--map", str(bad), "--region", "A23c", "--data-dir",
                 str(shared_data), "-q"]) == 2
    assert "not a readable NIfTI image" in capsys.readouterr().err


def test_roi_analysis_library_matches_pingouin(maps, bn_atlas, tmp_path):
    """The library function behind ``microvba roi``: region means computed here by hand, the
    partial r against pingouin's, and ``save`` writing the table and its sidecar."""
    pingouin = pytest.importorskip("pingouin")
    from microvba.regions.roi import roi_analysis

    folder, paths, _, tsv, level, region, vols = maps
    res = roi_analysis(paths, bn_atlas, "A23c", hemisphere="L", participants=tsv,
                       score="resilience", covariates=["age"], n_boot=50, seed=1)
    np.testing.assert_allclose(res.table["mean"], [v[region].mean() for v in vols], atol=1e-6)
    ref = pingouin.partial_corr(res.table, x="mean", y="resilience", covar=["age"])
    assert res.correlation["r"] == pytest.approx(float(ref["r"].iloc[0]), abs=1e-10)
    assert res.params["atlas"] == "brainnetome" and res.params["n_boot"] == 50
    written = res.save(tmp_path / "roi.tsv")
    assert [p.name for p in written] == ["roi.tsv", "roi.json"]
    side = json.loads((tmp_path / "roi.json").read_text())
    assert side["correlation"]["r"] == pytest.approx(res.correlation["r"])
    with pytest.raises(InputError, match="--score needs --participants"):
        roi_analysis(paths, bn_atlas, "A23c", score="resilience")
