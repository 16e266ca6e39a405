"""Corrupted NIfTI inputs and dataset descriptions are refused at the door (issue 14, point 3).

Each case builds a dataset with :func:`bids_factory.make_bids`, runs ``microvba BIDS OUT
participant`` and asserts exit 2, the offending file named on stderr, no traceback and no new
file in ``OUT``. The CRC check is compared with Python's :mod:`gzip` module (an implementation
we did not write) on random single-bit flips.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from bids_factory import make_bids, tree

from microvba._validation import InputError
from microvba.cli import main
from microvba.io.bids import check_image_file, validate_dataset
from microvba.io.nifti import scan_nifti, voxel_size_problem


def _flip_bit(position: float, bit: int = 4) -> Callable[[bytes], bytes]:
    """Flip one bit at ``position`` (fraction of the file) of the compressed bytes."""
    def mutate(raw: bytes) -> bytes:
        b = bytearray(raw)
        b[int(len(b) * position)] ^= 1 << bit
        return bytes(b)
    return mutate


def _flip_crc(raw: bytes) -> bytes:
    """Flip one bit of the stored CRC-32 (the data decompress intact, the check fails)."""
    b = bytearray(raw)
    b[-8] ^= 0x01
    return bytes(b)


def _patch_header(offset: int, fmt: str, *values: float) -> Callable[[bytes], bytes]:
    """Overwrite NIfTI-1 header fields (``struct`` format, little-endian) of a .nii.gz."""
    def mutate(raw: bytes) -> bytes:
        inner = bytearray(gzip.decompress(raw))
        struct.pack_into("<" + fmt, inner, offset, *values)
        return gzip.compress(bytes(inner))
    return mutate


# NIfTI-1 header byte offsets: pixdim[0..7] at 76, scl_slope 112, scl_inter 116, srow_x 280
SLOPE_MINUS_1 = _patch_header(112, "ff", -1.0, 0.0)
CASES = {
    "dwi_bit_flip": ({"dwi_bytes": _flip_bit(0.5)}, "sub-01_dwi.nii.gz", "corrupt compressed"),
    "dwi_crc_flip": ({"dwi_bytes": _flip_crc}, "sub-01_dwi.nii.gz", "CRC-32 mismatch"),
    "dwi_length_flip": ({"dwi_bytes": lambda raw: raw[:-4] + bytes([raw[-4] ^ 1]) + raw[-3:]},
                        "sub-01_dwi.nii.gz", "length mismatch"),
    "dwi_trailing_garbage": ({"dwi_bytes": lambda raw: raw + b"garbage!"},
                             "sub-01_dwi.nii.gz", "trailing data"),
    "t1w_crc_flip": ({"t1w": True, "t1w_bytes": _flip_crc}, "sub-01_T1w.nii.gz",
                     "corrupt image data.*CRC-32"),
    "dwi_slope_minus_1": ({"dwi_bytes": SLOPE_MINUS_1}, "sub-01_dwi.nii.gz",
                          r"no voxel value is positive.*scl_slope = -1"),
    "dwi_intercept_negative": ({"dwi_bytes": _patch_header(112, "ff", 1.0, -1e6)},
                               "sub-01_dwi.nii.gz", r"scl_inter = -1e\+06"),
    "t1w_slope_minus_1": ({"t1w": True, "t1w_bytes": SLOPE_MINUS_1}, "sub-01_T1w.nii.gz",
                          "no voxel value is positive"),
    "dwi_zero_voxel_size": ({"dwi_bytes": _patch_header(80, "f", 0.0)}, "sub-01_dwi.nii.gz",
                            r"voxel size.*\[0\.0\]"),
    "dwi_zero_voxel_size_sform": ({"dwi_bytes": _patch_header(280, "f", 0.0)},
                                  "sub-01_dwi.nii.gz", r"singular: voxel sizes 0, 2, 2"),
    "dwi_nan_sform": ({"dwi_bytes": _patch_header(300, "f", float("nan"))},
                      "sub-01_dwi.nii.gz", "NaN or infinite"),
    "dwi_negative_voxel_size": ({"dwi_bytes": _patch_header(84, "f", -2.0)},
                                "sub-01_dwi.nii.gz", r"voxel size.*-2"),
    "dwi_nan_voxel_size": ({"dwi_bytes": _patch_header(88, "f", float("nan"))},
                           "sub-01_dwi.nii.gz", r"voxel size.*nan"),
    "dwi_singular_sform": ({"dwi_bytes": _patch_header(280, "fff", 0.0, 0.0, 0.0)},
                           "sub-01_dwi.nii.gz", "affine.*is singular"),
    "description_missing": ({"drop": ["dataset_description.json"]},
                            "dataset_description.json", "DATASET_DESCRIPTION_JSON_MISSING"),
    "description_invalid_json": ({"add": {"dataset_description.json": '{"Name": "x",'}},
                                 "dataset_description.json", "not valid JSON"),
    "description_not_object": ({"add": {"dataset_description.json": '["Name", "x"]'}},
                               "dataset_description.json", "JSON list, not an object"),
    "description_no_bids_version": ({"add": {"dataset_description.json": '{"Name": "x"}'}},
                                    "dataset_description.json",
                                    "BIDSVersion are missing.*JSON_KEY_REQUIRED"),
    "description_binary": ({"add": {"dataset_description.json": "\udcff"}},
                           "dataset_description.json", "not valid JSON"),
}


def _write_case(tmp_path: Path, mutations: dict) -> Path:
    add = mutations.get("add", {})
    if any("\udcff" in v for v in add.values()):  # raw bytes the text writer cannot encode
        root = make_bids(tmp_path, **{k: v for k, v in mutations.items() if k != "add"})
        (root / "dataset_description.json").write_bytes(b"\xff\xfe\x00binary")
        return root
    return make_bids(tmp_path, **mutations)


@pytest.mark.parametrize("name", sorted(CASES))
def test_corrupt_input_exit_2_names_file_writes_nothing(tmp_path, capsys, name):
    mutations, file, match = CASES[name]
    bids = _write_case(tmp_path, mutations)
    out = tmp_path / "out"
    out.mkdir()
    before_in, before_out = tree(bids), tree(out)
    inputs = {p: p.read_bytes() for p in bids.rglob("*") if p.is_file()}
    code = main([str(bids), str(out), "participant", "--n-jobs", "1", "--skip-normalise"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert file in err
    assert "Traceback" not in err
    import re
    assert re.search(match, " ".join(err.split())), err
    assert tree(out) == before_out
    assert tree(bids) == before_in
    assert all(p.read_bytes() == b for p, b in inputs.items())  # inputs never modified


def test_crc_check_agrees_with_the_gzip_module(tmp_path):
    """Random single-bit flips: refused exactly when Python's gzip module fails to read."""
    rng = np.random.default_rng(14)
    path = tmp_path / "x.nii.gz"
    data = rng.uniform(0, 1000, (8, 8, 8, 6)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    raw = path.read_bytes()
    n_refused = 0
    for k in range(40):
        b = bytearray(raw)
        pos = int(rng.integers(10, len(b)))
        b[pos] ^= 1 << int(rng.integers(0, 8))
        bad = tmp_path / f"flip{k}.nii.gz"
        bad.write_bytes(bytes(b))
        try:
            gzip.decompress(bytes(b))
            gzip_ok = True
        except (OSError, EOFError, zlib.error):
            gzip_ok = False
        try:
            img = nib.load(str(bad))
        except Exception:  # noqa: BLE001 - a flip in the header can make it unreadable
            assert not gzip_ok
            continue
        ours = scan_nifti(bad, img).problem is None
        assert ours == gzip_ok, (pos, scan_nifti(bad, img).problem)
        n_refused += not ours
    assert n_refused >= 30  # nearly every flip of compressed data is caught


def test_nibabel_alone_accepts_a_flipped_bit(tmp_path):
    """Why the CRC check exists: nibabel decodes a corrupted .nii.gz without an error."""
    data = np.random.default_rng(3).uniform(0, 1000, (10, 10, 10, 5)).astype(np.float32)
    path = tmp_path / "dwi.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    path.write_bytes(_flip_crc(path.read_bytes()))
    assert np.array_equal(nib.load(str(path)).get_fdata(dtype=np.float32), data)
    with pytest.raises(InputError, match="CRC-32 mismatch") as info:
        check_image_file(path)
    assert str(path) in str(info.value)


def test_intact_variants_are_accepted(tmp_path):
    """Multi-member gzip, zero padding after the stream, uncompressed .nii, int16 + slope."""
    data = np.random.default_rng(5).uniform(1, 1000, (6, 6, 4, 5)).astype(np.float32)
    plain = tmp_path / "plain.nii"
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), plain)
    check_image_file(plain)
    inner = plain.read_bytes()
    multi = tmp_path / "multi.nii.gz"
    multi.write_bytes(gzip.compress(inner[:1000]) + gzip.compress(inner[1000:]) + b"\0" * 64)
    check_image_file(multi)
    img = nib.Nifti1Image(np.rint(data).astype(np.int16), np.eye(4))
    img.header.set_slope_inter(0.5, 10.0)
    scaled = tmp_path / "scaled.nii.gz"
    nib.save(img, scaled)
    check_image_file(scaled)
    scan = scan_nifti(scaled, nib.load(str(scaled)))
    assert scan.problem is None
    assert scan.raw_min == pytest.approx(np.rint(data).min())
    assert scan.raw_max == pytest.approx(np.rint(data).max())


def test_chunked_scan_equals_numpy(tmp_path):
    """Tiny chunks (item boundaries inside chunks) give numpy's counts and extrema."""
    data = np.random.default_rng(9).normal(0, 100, (7, 5, 3, 4)).astype(np.float32)
    data[1, 2, 0, 3] = np.nan
    data[0, 0, 2, 1] = -np.inf
    path = tmp_path / "d.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    scan = scan_nifti(path, nib.load(str(path)), chunk_bytes=7)
    finite = data[np.isfinite(data)]
    assert scan.problem is None
    assert scan.n_nonfinite == 2
    assert scan.raw_min == finite.min() and scan.raw_max == finite.max()


def test_zero_voxel_size_is_read_as_stored(tmp_path):
    """nibabel replaces a stored pixdim of 0 by 1 on load; the check reads the file's bytes."""
    path = tmp_path / "z.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 3, 5), np.float32), np.eye(4)), path)
    path.write_bytes(_patch_header(84, "f", 0.0)(path.read_bytes()))
    img = nib.load(str(path))
    assert img.header.get_zooms()[1] == 1.0  # what nibabel reports
    assert voxel_size_problem(img) is None
    assert "[0.0]" in voxel_size_problem(img, path)


def test_description_warning_does_not_stop(tmp_path, caplog):
    """A missing recommended key is a validator warning: logged, the dataset validates."""
    bids = make_bids(tmp_path, n_subjects=2)
    ds = validate_dataset(bids)
    assert len(ds.subjects) == 2
    assert "recommended key(s) Authors" in caplog.text


def test_fit_cli_refuses_a_corrupted_dwi(tmp_path, capsys):
    bids = make_bids(tmp_path, n_subjects=1, dwi_bytes=_flip_crc)
    d = bids / "sub-01" / "dwi"
    out = tmp_path / "fit_out"
    code = main(["fit", str(d / "sub-01_dwi.nii.gz"), "--bval", str(d / "sub-01_dwi.bval"),
                 "--bvec", str(d / "sub-01_dwi.bvec"), "-o", str(out), "--model", "tensor"])
    err = capsys.readouterr().err
    assert code == 2
    assert "sub-01_dwi.nii.gz" in err and "CRC-32" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_fit_cli_refuses_a_negative_slope_but_judges_nan_itself(tmp_path, capsys):
    """fit: a slope of -1 is refused at the door; NaN handling stays the fit's (in-mask)."""
    bids = make_bids(tmp_path, n_subjects=1, dwi_bytes=SLOPE_MINUS_1)
    d = bids / "sub-01" / "dwi"
    out = tmp_path / "fit_out"
    code = main(["fit", str(d / "sub-01_dwi.nii.gz"), "--bval", str(d / "sub-01_dwi.bval"),
                 "--bvec", str(d / "sub-01_dwi.bvec"), "-o", str(out), "--model", "tensor"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "scl_slope = -1" in err and "sub-01_dwi.nii.gz" in err
    assert not out.exists()


@pytest.mark.parametrize("limit", [7, 1000])
def test_bounded_decompression_equals_the_gzip_module(tmp_path, limit):
    """Multi-member streams, output limited per call: the same bytes as Python's gzip."""
    from microvba.io.nifti import _gzip_chunks

    rng = np.random.default_rng(limit)
    for k in range(8):
        n = int(rng.integers(1, 5000))
        raw = rng.integers(0, 3, n).astype(np.uint8).tobytes() if k % 2 else bytes(n)
        path = tmp_path / f"m{k}.gz"
        path.write_bytes(gzip.compress(raw[: n // 3]) + gzip.compress(raw[n // 3:]))
        assert b"".join(_gzip_chunks(path, limit)) == gzip.decompress(path.read_bytes())
