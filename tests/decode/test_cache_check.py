"""Broken decoding-cache files (cut short, corrupt) are found before they are read, removed
and rebuilt: the decoding is the same as from the intact cache (it ended with BadZipFile,
"mmap length is greater than file size", EOFError or KeyError, exit 1, before)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from microvba._validation import InputError
from microvba.cli import main
from microvba.decode import cache_check
from microvba.decode.cache_check import (
    CHECKSUMS_KEY,
    content_problem,
    file_checksums,
    npy_problem,
    npz_problem,
    repair_cache,
)


def _cut(path: Path, frac: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * frac)])


def _flip(path: Path, at: float = 0.6) -> None:
    data = bytearray(path.read_bytes())
    i = int(len(data) * at)
    data[i:i + 64] = bytes([0x7F]) * 64
    path.write_bytes(bytes(data))


def test_npy_and_npz_checks(tmp_path):
    npy = tmp_path / "a.npy"
    np.save(npy, np.arange(1000, dtype=np.float32).reshape(10, 100))
    assert npy_problem(npy) is None
    _cut(npy, 0.9)
    assert "needs" in npy_problem(npy)
    npy.write_bytes(b"")
    assert "not a readable .npy" in npy_problem(npy)
    npz = tmp_path / "b.npz"
    np.savez(npz, x=np.arange(10000.0))
    assert npz_problem(npz) is None
    _flip(npz, 0.5)
    assert "CRC-32" in npz_problem(npz)
    _cut(npz)
    assert "not a readable zip" in npz_problem(npz)


@pytest.fixture(scope="module")
def roi(tmp_path_factory):
    affine = np.array([[2.0, 0, 0, -98], [0, 2, 0, -134], [0, 0, 2, -72], [0, 0, 0, 1]])
    ijk = np.indices((99, 117, 95)).reshape(3, -1).T
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    inside = np.linalg.norm(xyz - [-40, 20, 30], axis=1) <= 8
    path = tmp_path_factory.mktemp("roi") / "roi.nii.gz"
    nib.save(nib.Nifti1Image(inside.reshape(99, 117, 95).astype(np.uint8), affine), str(path))
    return path


def _decode(roi, cache, out, shared_data) -> pd.DataFrame:
    assert main(["decode", "--roi", str(roi), "-o", str(out), "--n-null", "20",
                 "--cache-dir", str(cache), "--data-dir", str(shared_data)]) == 0
    return pd.read_table(out / "roi_vocab-lda50_decoding.tsv")


@pytest.fixture(scope="module")
def intact(roi, lda_decoder, map_cache, shared_data, tmp_path_factory):
    """The decoding from the intact session cache (built by ``lda_decoder``)."""
    out = tmp_path_factory.mktemp("intact")
    return _decode(roi, map_cache, out, shared_data)


def _entry(cache: Path) -> Path:
    return next(p for p in cache.glob("neurosynth-v*_vocab-lda50_kernel-6mm*")
                if (p / "maps.json").exists())


BREAK = {
    "maps cut short": lambda c: _cut(_entry(c) / "z_association.npy"),
    "maps empty": lambda c: (_entry(c) / "z_uniformity.npy").write_bytes(b""),
    "weights cut short": lambda c: _cut(_entry(c) / "weights.npz"),
    "weights corrupt": lambda c: _flip(_entry(c) / "weights.npz"),
    # same length: only the content checksums of maps.json see these
    "maps bytes flipped": lambda c: _flip(_entry(c) / "z_association.npy"),
    "peaks bytes flipped": lambda c: _flip(_entry(c) / "peaks.npy", 0.3),
    "feature table": lambda c: (_entry(c) / "features.tsv").write_text("x\n"),
    "brain mask cut short": lambda c: _cut(next(c.glob("mni152-*.npz"))),
    "roi voxels corrupt": lambda c: [_flip(p, 0.5) for p in c.glob("roi/*.npz")],
}


@pytest.mark.parametrize("what", list(BREAK))
def test_broken_cache_file_rebuilt(what, roi, intact, map_cache, shared_data, tmp_path,
                                   caplog):
    cache = tmp_path / "cache"
    shutil.copytree(map_cache, cache)
    BREAK[what](cache)
    got = _decode(roi, cache, tmp_path / "out", shared_data)
    assert "broken decoding cache file" in caplog.text
    cols = [c for c in intact.columns if "null" not in c]
    pd.testing.assert_frame_equal(got[cols], intact[cols])
    assert repair_cache(cache, "neurosynth") == []  # rebuilt intact


def test_parsed_database_copy_in_cache_dir_and_rebuilt(roi, intact, shared_data, tmp_path,
                                                       caplog):
    """The parsed database copy goes to --cache-dir (it went to $MICROVBA_CACHE or
    ~/.cache whatever --cache-dir said); a corrupt copy is removed and parsed again."""
    cache = tmp_path / "cache"
    _decode(roi, cache, tmp_path / "cold", shared_data)
    parsed = list(cache.glob("databases/neurosynth-*.npz"))
    assert len(parsed) == 1
    shutil.rmtree(_entry(cache))
    _flip(parsed[0])
    got = _decode(roi, cache, tmp_path / "out", shared_data)
    assert "broken decoding cache file" in caplog.text and "CRC-32" in caplog.text
    cols = [c for c in intact.columns if "null" not in c]
    pd.testing.assert_frame_equal(got[cols], intact[cols])


def _fake_entry(root: Path) -> Path:
    """A map entry of two arrays whose maps.json records their checksums."""
    entry = root / "neurosynth-v7_vocab-lda50_kernel-6mm_x"
    entry.mkdir(parents=True)
    np.save(entry / "z_association.npy", np.linspace(0, 1, 5000, dtype=np.float32))
    np.save(entry / "peaks.npy", np.arange(300))
    (entry / "maps.json").write_text(json.dumps(
        {CHECKSUMS_KEY: file_checksums(entry, ["z_association.npy", "peaks.npy"])}))
    return entry


def _flip_one(path: Path, keep_mtime: bool) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-7] ^= 0x01  # one bit of one value: same size, a valid .npy
    path.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    else:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def test_flipped_bit_found_and_entry_invalidated(tmp_path, caplog):
    entry = _fake_entry(tmp_path)
    assert content_problem(entry) is None
    _flip_one(entry / "peaks.npy", keep_mtime=True)
    assert npy_problem(entry / "peaks.npy") is None  # the size check alone cannot see it
    path, why = content_problem(entry)
    assert path.name == "peaks.npy" and "corrupt bytes" in why
    assert repair_cache(tmp_path, "neurosynth") == [entry / "peaks.npy"]
    assert not (entry / "maps.json").exists()  # the entry is rebuilt on the next call
    assert "peaks.npy: broken decoding cache file (content checksum" in caplog.text


def test_large_entry_verified_on_first_use_and_when_changed(tmp_path, monkeypatch):
    """Above VERIFY_EVERY_CALL an entry is summed on first use, then again only when a
    file's size or mtime changed, and always with verify="all" (microvba data check)."""
    monkeypatch.setattr(cache_check, "VERIFY_EVERY_CALL", 0)
    entry = _fake_entry(tmp_path)
    _flip_one(entry / "z_association.npy", keep_mtime=False)  # before the first use
    assert content_problem(entry)[0].name == "z_association.npy"

    entry = _fake_entry(tmp_path / "b")
    assert content_problem(entry) is None  # first use: read, then remembered
    assert (entry / cache_check.VERIFIED_NAME).exists()
    _flip_one(entry / "z_association.npy", keep_mtime=True)
    assert content_problem(entry) is None  # unchanged stamps: not read again (bit rot)
    assert content_problem(entry, verify="all")[0].name == "z_association.npy"
    _flip_one(entry / "peaks.npy", keep_mtime=False)  # an edited or copied file
    assert content_problem(entry)[0].name == "z_association.npy"  # all files read again
    with pytest.raises(InputError, match="verify"):
        repair_cache(tmp_path, "neurosynth", verify="sometimes")


def test_data_check_verifies_everything(tmp_path, monkeypatch, capsys):
    """``microvba data check`` sums every entry, however large, and says what it removed."""
    monkeypatch.setattr(cache_check, "VERIFY_EVERY_CALL", 0)
    entry = _fake_entry(tmp_path)
    assert content_problem(entry) is None  # verified once: a warm call would not read it
    _flip_one(entry / "z_association.npy", keep_mtime=True)
    assert main(["data", "check", "--cache-dir", str(tmp_path)]) == 1
    assert "1 broken file(s) removed" in capsys.readouterr().out
    assert not (entry / "maps.json").exists()
    assert main(["data", "check", "--cache-dir", str(tmp_path)]) == 0
    assert "every file intact" in capsys.readouterr().out
