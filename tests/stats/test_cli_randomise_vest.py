"""``microvba randomise -d design.mat -t design.con``: FSL VEST designs, as FSL randomise."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from microvba.cli import main

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
N, SHAPE = 14, (8, 9, 7)


def vest(header: list[str], rows) -> str:
    """VEST text as Glm writes it, with every value at full precision (so the design equals
    the TSV one bit for bit)."""
    return "\n".join([*header, "", "/Matrix", *("\t".join(repr(float(v)) for v in r)
                                               for r in rows)]) + "\n"


@pytest.fixture
def d(tmp_path, rng):
    score, age = rng.normal(size=N), rng.normal(40, 5, N)
    data = np.stack([ndimage.gaussian_filter(rng.standard_normal(SHAPE), 1.0)
                     for _ in range(N)], axis=-1)
    data[2:5, 2:5, 2:5, :] += 0.4 * score  # the planted effect
    mask = np.zeros(SHAPE, np.uint8)
    mask[1:-1, 1:-1, 1:-1] = 1
    nib.save(nib.Nifti1Image(data.astype(np.float32), AFFINE), tmp_path / "all.nii.gz")
    nib.save(nib.Nifti1Image(mask, AFFINE), tmp_path / "mask.nii.gz")
    pd.DataFrame({"participant_id": [f"sub-{i:02d}" for i in range(N)], "score": score,
                  "age": age, "site": ["a"] * 7 + ["b"] * 7}).to_csv(
        tmp_path / "design.tsv", sep="\t", index=False)
    X = np.column_stack([np.ones(N), score, age])
    (tmp_path / "design.mat").write_text(vest(
        ["/NumWaves\t3", f"/NumPoints\t{N}", "/PPheights\t\t1.0\t1.0\t1.0"], X))
    (tmp_path / "design.con").write_text(vest(
        ["/ContrastName1\tscore pos", "/ContrastName2\tscore neg", "/NumWaves\t3",
         "/NumContrasts\t2", "/PPheights\t\t1.0\t1.0"], [[0, 1, 0], [0, -1, 0]]))
    (tmp_path / "design.grp").write_text(vest(["/NumWaves\t1", f"/NumPoints\t{N}"],
                                              [[1]] * 7 + [[2]] * 7))
    return tmp_path


def run(d, *extra, design="design.mat", con="design.con", out="vest"):
    argv = ["randomise", "-i", str(d / "all.nii.gz"), "-m", str(d / "mask.nii.gz"),
            "-d", str(d / design), "-o", str(d / "out" / out), "-n", "30", "--seed", "7",
            "--cluster-threshold", "2.0", "-q", *extra]
    if con is not None:
        argv[argv.index("-o"):argv.index("-o")] = ["-t", str(d / con)]
    return main(argv)


def load(d, prefix, name):
    return nib.load(d / "out" / f"{prefix}_{name}.nii.gz").get_fdata()


def run_tsv(d, *extra):
    """The same model as design.mat with a TSV design: intercept, score, age."""
    return main(["randomise", "-i", str(d / "all.nii.gz"), "-m", str(d / "mask.nii.gz"),
                 "-d", str(d / "design.tsv"), "--contrast", "score", "--covariates", "age",
                 "-o", str(d / "out" / "tsv"), "-n", "30", "--seed", "7",
                 "--cluster-threshold", "2.0", "-q", *extra])


def test_vest_design_equals_the_tsv_design(d):
    assert run_tsv(d) == 0
    assert run(d) == 0
    # FSL naming: one set of maps per contrast of design.con
    for k in (1, 2):
        for name in (f"tstat{k}", f"tfce_corrp_tstat{k}", f"vox_corrp_tstat{k}",
                     f"clustere_corrp_tstat{k}", f"vox_p_tstat{k}"):
            assert (d / "out" / f"vest_{name}.nii.gz").is_file(), name
            np.testing.assert_array_equal(load(d, "vest", name), load(d, "tsv", name))
    assert not (d / "out" / "vest_tstat3.nii.gz").exists()
    assert not list((d / "out").glob("vest_*famcorrp*"))
    t = load(d, "vest", "tstat1")
    assert t[3, 3, 3] > 3 and load(d, "vest", "tstat2")[3, 3, 3] < -3
    side = json.loads((d / "out" / "vest_randomise.json").read_text())
    p = side["Parameters"]
    assert p["design_format"] == "FSL VEST" and p["intercept_added"] is False
    assert p["design_file"] == str(d / "design.mat")
    assert p["contrast_file"] == str(d / "design.con")
    assert p["design_columns"] == ["EV1", "EV2", "EV3"]
    assert p["contrast"] == [[0, 1, 0], [0, -1, 0]]
    assert p["tested"] == ["score pos", "score neg"]
    assert [c["tstat"] for c in p["contrasts"]] == ["tstat1", "tstat2"]
    assert p["two_sided"] is False and p["n_perm"] == 30
    assert set(side["InputHashes"]) == {"input", "mask", "design", "contrasts"}
    assert "vest_tfce_corrp_tstat2.nii.gz" in side["Maps"].values()


def test_contrast_selection_by_number_and_name(d):
    assert run(d, "--contrast", "2", out="two") == 0
    assert (d / "out" / "two_tstat2.nii.gz").is_file()
    assert not (d / "out" / "two_tstat1.nii.gz").exists()
    assert run(d, "--contrast", "score pos", out="pos") == 0
    assert (d / "out" / "pos_tfce_corrp_tstat1.nii.gz").is_file()
    assert not (d / "out" / "pos_tstat2.nii.gz").exists()
    side = json.loads((d / "out" / "pos_randomise.json").read_text())
    assert side["Parameters"]["tested"] == ["score pos"]
    np.testing.assert_array_equal(load(d, "two", "tstat2"), -load(d, "pos", "tstat1"))


def test_corrcon_over_the_contrasts(d):
    assert run(d, "--corrcon") == 0
    for k in (1, 2):
        for stat in ("vox", "tfce", "clustere"):
            fam = load(d, "vest", f"{stat}_famcorrp_tstat{k}")
            own = load(d, "vest", f"{stat}_corrp_tstat{k}")
            assert np.all(fam <= own + 1e-12), (stat, k)
    assert load(d, "vest", "tfce_famcorrp_tstat1")[3, 3, 3] > 0.9


def test_grp_blocks_equal_tsv_blocks(d):
    assert run_tsv(d, "--blocks", "site") == 0
    assert run(d, "-e", str(d / "design.grp"), "--contrast", "1") == 0
    np.testing.assert_array_equal(load(d, "vest", "tfce_corrp_tstat1"),
                                  load(d, "tsv", "tfce_corrp_tstat1"))
    side = json.loads((d / "out" / "vest_randomise.json").read_text())
    assert side["Parameters"]["exchangeability_blocks"] == 2


def test_design_without_intercept_warns_but_is_used_as_given(d, caplog):
    X = np.loadtxt(d / "design.mat", skiprows=5)[:, 1:]  # score, age: no column of 1s
    (d / "nomean.mat").write_text(vest(["/NumWaves\t2", f"/NumPoints\t{N}"], X))
    (d / "nomean.con").write_text(vest(["/NumWaves\t2", "/NumContrasts\t1"], [[1, 0]]))
    assert run(d, design="nomean.mat", con="nomean.con") == 0
    assert "no intercept" in caplog.text and "not demeaned" in caplog.text
    side = json.loads((d / "out" / "vest_randomise.json").read_text())
    assert side["Parameters"]["design_columns"] == ["EV1", "EV2"]
    assert side["Parameters"]["df"] == N - 2


@pytest.mark.parametrize(("extra", "con", "match"), [
    ([], None, "its contrasts must be given as a design.con with -t"),
    (["--contrast", "3"], "design.con", "contrast number 3 is out of range"),
    (["--contrast", "iq"], "design.con", "no contrast named 'iq'"),
    (["--covariates", "age"], "design.con", "--covariates chooses columns of a TSV design"),
    (["--blocks", "site"], "design.con", "-e design.grp"),
])
def test_vest_argument_errors(d, capsys, extra, con, match):
    assert run(d, *extra, con=con) == 2
    err = capsys.readouterr().err
    assert match in err and "design." in err
    assert not (d / "out").exists()


def test_vest_file_errors(d, capsys):
    (d / "bad.con").write_text("/NumWaves\t2\n/NumContrasts\t1\n/Matrix\n0\t1\n")
    assert run(d, con="bad.con") == 2
    err = capsys.readouterr().err
    assert "bad.con: /NumWaves is 2 but the design" in err and "has 3 columns" in err
    rows = (d / "design.mat").read_text().splitlines()
    (d / "short.mat").write_text("\n".join(rows[:-1]).replace(f"/NumPoints\t{N}",
                                                              f"/NumPoints\t{N - 1}") + "\n")
    assert run(d, design="short.mat") == 2
    err = capsys.readouterr().err
    assert "short.mat: the design has 13 rows (/NumPoints) but the 4-D image has 14" in err
    (d / "mixed.mat").write_text("\n".join(rows[:-1]) + "\n")
    assert run(d, design="mixed.mat") == 2
    assert "/NumPoints is 14 but the matrix has 13 row(s)" in capsys.readouterr().err
    collinear = np.loadtxt(d / "design.mat", skiprows=5)
    collinear[:, 2] = 2 * collinear[:, 1]
    (d / "rank.mat").write_text(vest(["/NumWaves\t3", f"/NumPoints\t{N}"], collinear))
    assert run(d, design="rank.mat") == 2
    assert "rank deficient" in capsys.readouterr().err


def test_table_design_with_fsl_options_is_refused(d, capsys):
    assert run(d, "--contrast", "score", design="design.tsv") == 2
    assert "-t/--tcon goes with an FSL design.mat" in capsys.readouterr().err
    assert run(d, design="design.tsv", con=None) == 2
    assert "no --contrast: a TSV design needs the tested column" in capsys.readouterr().err
