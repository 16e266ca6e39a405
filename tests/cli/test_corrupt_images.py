"""``randomise`` and ``roi`` refuse corrupted images before writing anything (issue 14, 3)."""

from __future__ import annotations

import gzip
import struct

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from microvba.cli import main

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def _flip_crc(path):
    b = bytearray(path.read_bytes())
    b[-8] ^= 0x01
    path.write_bytes(bytes(b))


def _zero_sform_voxel(path):
    inner = bytearray(gzip.decompress(path.read_bytes()))
    struct.pack_into("<f", inner, 280, 0.0)  # srow_x[0]
    path.write_bytes(gzip.compress(bytes(inner)))


@pytest.fixture
def stack(tmp_path):
    rng = np.random.default_rng(14)
    n, shape = 8, (6, 6, 5)
    nib.save(nib.Nifti1Image(rng.normal(size=shape + (n,)).astype(np.float32), AFFINE),
             tmp_path / "all.nii.gz")
    nib.save(nib.Nifti1Image(np.ones(shape, np.uint8), AFFINE), tmp_path / "mask.nii.gz")
    pd.DataFrame({"participant_id": [f"sub-{i}" for i in range(n)],
                  "score": rng.normal(size=n)}).to_csv(tmp_path / "design.tsv", sep="\t",
                                                       index=False)
    return tmp_path


@pytest.mark.parametrize(("target", "corrupt", "match"), [
    ("all.nii.gz", _flip_crc, "CRC-32 mismatch"),
    ("mask.nii.gz", _flip_crc, "CRC-32 mismatch"),
    ("all.nii.gz", _zero_sform_voxel, "singular"),
])
def test_randomise_refuses_corrupt_image(stack, capsys, target, corrupt, match):
    corrupt(stack / target)
    out = stack / "out"
    code = main(["randomise", "-i", str(stack / "all.nii.gz"), "-m", str(stack / "mask.nii.gz"),
                 "-d", str(stack / "design.tsv"), "--contrast", "score", "-o",
                 str(out / "fa"), "-n", "10"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert target in err and match in err and "Traceback" not in err
    assert not out.exists()


def test_roi_refuses_corrupt_map(stack, shared_data, monkeypatch, capsys):
    monkeypatch.setenv("MICROVBA_DATA", str(shared_data))
    img = nib.Nifti1Image(np.ones((6, 6, 5), np.float32), AFFINE)
    path = stack / "sub-01_fa.nii.gz"
    nib.save(img, path)
    _flip_crc(path)
    before = sorted(stack.iterdir())
    code = main(["roi", "--map", str(path), "--atlas", "brainnetome", "--region", "A23c"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert "sub-01_fa.nii.gz" in err and "CRC-32" in err and "Traceback" not in err
    assert sorted(stack.iterdir()) == before
