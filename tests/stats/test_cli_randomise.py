"""``microvba randomise``: end to end on a small 4-D stack, and its input errors."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from microvba.cli import main

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


@pytest.fixture
def inputs(tmp_path, rng):
    n, shape = 14, (8, 9, 7)
    score = rng.normal(size=n)
    data = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), 1.0)
                     for _ in range(n)], axis=-1)
    data[2:5, 2:5, 2:5, :] += 0.3 * score
    mask = np.zeros(shape, np.uint8)
    mask[1:-1, 1:-1, 1:-1] = 1
    nib.save(nib.Nifti1Image(data.astype(np.float32), AFFINE), tmp_path / "all.nii.gz")
    nib.save(nib.Nifti1Image(mask, AFFINE), tmp_path / "mask.nii.gz")
    pd.DataFrame({"participant_id": [f"sub-{i}" for i in range(n)], "score": score,
                  "age": rng.normal(40, 5, n), "sex": ["F", "M"] * (n // 2),
                  "site": ["a"] * 7 + ["b"] * 7}).to_csv(tmp_path / "design.tsv", sep="\t",
                                                         index=False)
    return tmp_path


def args(d, *extra):
    return ["randomise", "-i", str(d / "all.nii.gz"), "-m", str(d / "mask.nii.gz"),
            "-d", str(d / "design.tsv"), "--contrast", "score", "-o", str(d / "out" / "fa"),
            "-n", "40", "-q", *extra]


def test_cli_writes_randomise_outputs(inputs):
    assert main(args(inputs, "--blocks", "site", "--cluster-threshold", "2.0")) == 0
    out = inputs / "out"
    assert not (out / "fa_tfce_famcorrp_tstat1.nii.gz").exists()
    for name in ("tstat1", "tstat2", "tfce_corrp_tstat1", "vox_corrp_tstat2",
                 "clustere_corrp_tstat1", "tfce_logp_tstat1", "vox_fdrp_tstat1"):
        assert (out / f"fa_{name}.nii.gz").is_file(), name
    side = json.loads((out / "fa_randomise.json").read_text())
    params = side["Parameters"]
    assert params["design_columns"] == ["intercept", "score", "age", "sex[M]"]
    assert params["blocks_column"] == "site" and params["n_perm"] == 40
    assert set(side["InputHashes"]) == {"input", "mask", "design"}
    t = nib.load(out / "fa_tstat1.nii.gz").get_fdata()
    assert t[3, 3, 3] > 2


def test_cli_no_tfce_and_covariate_subset(inputs):
    assert main(args(inputs, "--no-tfce", "--covariates", "age", "--cluster-threshold", "0",
                     "--corrcon")) == 0
    assert not (inputs / "out" / "fa_tfce_tstat1.nii.gz").exists()
    assert (inputs / "out" / "fa_vox_famcorrp_tstat2.nii.gz").exists()
    side = json.loads((inputs / "out" / "fa_randomise.json").read_text())
    assert side["Parameters"]["design_columns"] == ["intercept", "score", "age"]


def test_cli_volume_count_mismatch(inputs, capsys):
    df = pd.read_csv(inputs / "design.tsv", sep="\t").iloc[:-1]
    df.to_csv(inputs / "design.tsv", sep="\t", index=False)
    assert main(args(inputs)) == 2
    assert "has 14 volumes but the design" in capsys.readouterr().err


def test_cli_mask_shape_mismatch(inputs, capsys):
    nib.save(nib.Nifti1Image(np.ones((5, 5, 5), np.uint8), AFFINE), inputs / "mask.nii.gz")
    assert main(args(inputs)) == 2
    assert "differs from the image grid" in capsys.readouterr().err


@pytest.mark.parametrize(("extra", "match"), [
    (["--contrast", "iq"], "column 'iq' is missing"),
    (["--blocks", "scanner"], "blocks column 'scanner'"),
])
def test_cli_design_errors(inputs, capsys, extra, match):
    assert main(args(inputs, *extra)) == 2
    assert match in capsys.readouterr().err


def test_cli_file_errors(inputs, capsys):
    (inputs / "design.tsv").unlink()
    assert main(args(inputs)) == 2
    assert "design file does not exist" in capsys.readouterr().err
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), AFFINE), inputs / "all.nii.gz")
    pd.DataFrame({"score": [1.0, 2.0]}).to_csv(inputs / "design.tsv", sep="\t", index=False)
    assert main(args(inputs)) == 2
    assert "must be 4-D" in capsys.readouterr().err
    nib.save(nib.Nifti1Image(np.zeros((8, 9, 7, 14), np.float32), AFFINE * 2),
             inputs / "all.nii.gz")
    assert main(args(inputs)) == 2
    assert "affine differs" in capsys.readouterr().err
