"""``microvba fit`` on inputs from other scanners and tools, and on malformed ones.

Every bad input exits 2 with the file and a fix, before any output is written; the formats
that other tools write (scaled integers, CSV gradient files, 5-D singleton axes...) are read.
"""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from microvba.cli import main

RNG = np.random.default_rng(7)
DIRS = RNG.normal(size=(12, 3))
DIRS /= np.linalg.norm(DIRS, axis=1, keepdims=True)
BVALS = np.array([0, 5] + [1000] * 6 + [2000] * 6, float)
BVECS = np.vstack([np.zeros((2, 3)), DIRS])
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
SHAPE = (6, 6, 5)  # not (..., 3|4): DIPY's otsu would take it for RGB


def _signal(shape=SHAPE) -> np.ndarray:
    rng = np.random.default_rng(1)
    s0 = rng.uniform(800, 1200, size=shape)
    adc = rng.uniform(0.5e-3, 1.5e-3, size=shape)
    sig = s0[..., None] * np.exp(-BVALS * adc[..., None])
    return (sig + rng.normal(0, 5, size=sig.shape)).clip(1).astype(np.float32)


def _write(d, data=None, bvals=BVALS, bvecs=BVECS, mask=None, affine=AFFINE):
    d.mkdir(parents=True, exist_ok=True)
    img = data if isinstance(data, nib.Nifti1Image) else nib.Nifti1Image(
        _signal() if data is None else data, affine)
    nib.save(img, d / "dwi.nii.gz")
    (d / "dwi.bval").write_text(" ".join(f"{b:g}" for b in bvals) + "\n")
    (d / "dwi.bvec").write_text("\n".join(" ".join(f"{v:.6f}" for v in row)
                                          for row in np.asarray(bvecs).T) + "\n")
    if mask is None:
        mask = np.ones(SHAPE, np.uint8)  # median_otsu finds no brain in random tissue
    nib.save(mask if isinstance(mask, nib.Nifti1Image) else nib.Nifti1Image(mask, affine),
             d / "mask.nii.gz")
    return d


def _fit(d, *extra, mask=True, out=None):
    args = ["fit", str(d / "dwi.nii.gz"), "--bval", str(d / "dwi.bval"), "--bvec",
            str(d / "dwi.bvec"), "-o", str(out or d / "out"), "--model", "tensor", "-q",
            *extra]
    if mask:
        args += ["--mask", str(d / "mask.nii.gz")]
    return main(args)


def _fails(d, capsys, match, file, **kwargs):
    assert _fit(d, **kwargs) == 2
    err = capsys.readouterr().err
    assert match in err, err
    assert str(file) in err
    assert "fix:" in err
    assert not (d / "out").exists()  # nothing written


def _fa(d):
    return nib.load(d / "out" / "dwi_space-orig_model-tensor_param-fa_dwimap.nii.gz").get_fdata()


def test_reference_case_runs(tmp_path):
    d = _write(tmp_path / "ok")
    assert _fit(d) == 0
    assert np.isfinite(_fa(d)).all()


def test_empty_automatic_mask_is_input_error(tmp_path, capsys):
    d = _write(tmp_path / "d", data=np.zeros(SHAPE + (BVALS.size,), np.float32))
    _fails(d, capsys, "automatic brain mask", d / "dwi.nii.gz", mask=False)


def test_csv_gradient_files_with_crlf_give_the_same_maps(tmp_path):
    ref = _write(tmp_path / "ref")
    d = _write(tmp_path / "csv")
    (d / "dwi.bval").write_bytes((",".join(f"{b:g}" for b in BVALS) + "\r\n").encode())
    (d / "dwi.bvec").write_bytes(("\r\n".join(",".join(f"{v:.6f}" for v in row)
                                              for row in BVECS) + "\r\n").encode())  # N x 3
    assert _fit(ref) == 0 and _fit(d) == 0
    np.testing.assert_array_equal(_fa(d), _fa(ref))


def test_scaled_int16_image_equals_its_float_values(tmp_path):
    """scl_slope must be applied: FA of the int16 + slope file equals FA of its float values."""
    data = _signal()
    img = nib.Nifti1Image(data, AFFINE)
    img.set_data_dtype(np.int16)
    img.header.set_slope_inter(0.5, 0.0)
    d = _write(tmp_path / "scaled", data=img)
    stored = nib.load(d / "dwi.nii.gz")
    assert stored.dataobj.slope == 0.5  # the file really holds scaled integers
    ref = _write(tmp_path / "float", data=stored.get_fdata().astype(np.float32))
    assert _fit(d) == 0 and _fit(ref) == 0
    np.testing.assert_allclose(_fa(d), _fa(ref), atol=1e-6)


def test_5d_singleton_time_axis_is_read(tmp_path):
    d = _write(tmp_path / "5d", data=_signal()[:, :, :, None, :])
    assert _fit(d) == 0


def test_non_unit_bvecs_are_refused_not_normalised(tmp_path, capsys):
    d = _write(tmp_path / "d", bvecs=BVECS * 1.3)
    _fails(d, capsys, "non-unit gradient vector", d / "dwi.bvec")


def test_slightly_non_unit_bvecs_are_accepted(tmp_path):
    assert _fit(_write(tmp_path / "d", bvecs=BVECS * 1.005)) == 0


def test_no_b0_names_the_bval_file(tmp_path, capsys):
    b, g = BVALS.copy(), BVECS.copy()
    b[:2], g[:2] = 100, DIRS[:2]
    d = _write(tmp_path / "d", bvals=b, bvecs=g)
    _fails(d, capsys, "no b=0 volume", d / "dwi.bval")


def test_truncated_gzip_is_input_error(tmp_path, capsys):
    d = _write(tmp_path / "d")
    raw = gzip.decompress((d / "dwi.nii.gz").read_bytes())
    (d / "dwi.nii.gz").write_bytes(gzip.compress(raw[:-500]))
    _fails(d, capsys, "truncated or corrupt image data", d / "dwi.nii.gz")


def test_nan_inside_the_mask_is_input_error(tmp_path, capsys):
    data = _signal()
    data[2, 2, 2, 3] = np.nan
    mask = np.ones(SHAPE, np.uint8)
    d = _write(tmp_path / "d", data=data, mask=mask)
    _fails(d, capsys, "hold NaN or infinite values (first at voxel (2, 2, 2))",
           d / "dwi.nii.gz")


def test_nan_outside_the_mask_is_ignored(tmp_path):
    data = _signal()
    data[0, 0, 0, :] = np.inf
    mask = np.ones(SHAPE, np.uint8)
    mask[0, 0, 0] = 0
    d = _write(tmp_path / "d", data=data, mask=mask)
    assert _fit(d) == 0
    fa = _fa(d)
    assert fa[0, 0, 0] == 0 and np.isfinite(fa).all() and (fa[1:] > 0).all()
    # MP-PCA patches around the bad voxel must not carry the infinity into the mask
    assert _fit(d, "--denoise", "--force") == 0
    fa = _fa(d)
    assert np.isfinite(fa).all() and (fa[mask > 0] > 0).all()


def test_mask_in_another_space_is_refused(tmp_path, capsys):
    shifted = AFFINE.copy()
    shifted[:3, 3] = 20.0
    d = _write(tmp_path / "d", mask=nib.Nifti1Image(np.ones(SHAPE, np.uint8), shifted))
    _fails(d, capsys, "another affine", d / "mask.nii.gz")


def test_empty_mask_is_refused(tmp_path, capsys):
    d = _write(tmp_path / "d", mask=np.zeros(SHAPE, np.uint8))
    _fails(d, capsys, "the mask is empty", d / "mask.nii.gz")


def test_4d_singleton_and_probability_masks(tmp_path, caplog):
    m = np.zeros(SHAPE, np.float32)
    m[1:-1, 1:-1, 1:-1] = 0.7
    d = _write(tmp_path / "d", mask=m[..., None])
    assert _fit(d) == 0
    assert "not binary" in caplog.text
    fa = _fa(d)
    assert (fa[m > 0] > 0).all() and (fa[m == 0] == 0).all()


@pytest.mark.parametrize("where", ["file", "below_file"])
def test_output_that_is_a_file_exits_2_before_work(tmp_path, capsys, where):
    d = _write(tmp_path / "d")
    f = tmp_path / "taken"
    f.write_text("x")
    out = f if where == "file" else f / "sub"
    assert _fit(d, out=out) == 2
    assert "not a folder" in capsys.readouterr().err
    assert f.read_text() == "x"


def test_uncompressed_file_named_nii_gz_says_rename(tmp_path, capsys):
    d = _write(tmp_path / "d")
    nib.save(nib.load(d / "dwi.nii.gz"), d / "plain.nii")
    (d / "plain.nii").replace(d / "dwi.nii.gz")
    _fails(d, capsys, "rename it to dwi.nii", d / "dwi.nii.gz")


def test_dti_alias(tmp_path):
    d = _write(tmp_path / "d")
    assert _fit(d, "--model", "DTI") == 0
    assert _fa(d).max() > 0


def test_scaled_real_crop_equals_dipy_on_the_scaled_values(shared_data, tmp_path):
    """A real crop stored as int16 with scl_slope, as many scanners write it: FA/MD equal
    DIPY's WLS fit of the same file read by nibabel (scaling applied)."""
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import TensorModel

    src = shared_data / "dwi"
    data = nib.load(src / "msmt_dwi.nii.gz").get_fdata(dtype=np.float32)
    img = nib.Nifti1Image(np.clip(data, 0, None), nib.load(src / "msmt_dwi.nii.gz").affine)
    img.set_data_dtype(np.int16)
    img.header.set_slope_inter(0.25, 0.0)
    d = tmp_path / "scaled"
    d.mkdir()
    nib.save(img, d / "dwi.nii.gz")
    for ext in (".bval", ".bvec"):
        (d / f"dwi{ext}").write_text((src / f"msmt_dwi{ext}").read_text())
    mask = nib.load(src / "msmt_mask.nii.gz")
    nib.save(mask, d / "mask.nii.gz")
    assert _fit(d) == 0
    stored = nib.load(d / "dwi.nii.gz")
    assert stored.dataobj.slope == 0.25
    bvals = np.loadtxt(d / "dwi.bval")
    keep = bvals <= 1750
    gtab = gradient_table(bvals[keep], bvecs=np.loadtxt(d / "dwi.bvec")[:, keep].T,
                          b0_threshold=50)
    m = np.asarray(mask.dataobj) > 0
    signal = stored.get_fdata()[m][:, keep]
    # DIPY floors non-positive signal at 1e-4 in the file's units, microvba at 1e-4 of each
    # voxel's b=0 (scale-free): compared where neither floor clips anything
    clean = (signal > 1e-4).all(axis=1)
    assert clean.mean() > 0.99
    ref = TensorModel(gtab, fit_method="WLS").fit(signal[clean])
    out = d / "out" / "dwi_space-orig_model-tensor_param-"
    fa = nib.load(f"{out}fa_dwimap.nii.gz").get_fdata()[m][clean]
    md = nib.load(f"{out}md_dwimap.nii.gz").get_fdata()[m][clean]
    np.testing.assert_allclose(fa, np.nan_to_num(ref.fa), atol=1e-5)
    np.testing.assert_allclose(md, ref.md, rtol=1e-4, atol=1e-9)


def test_mrtrix_image_gets_a_conversion_hint(tmp_path, capsys):
    d = _write(tmp_path / "d")
    (d / "dwi.mif").write_text("mrtrix image\ndim: 2,2,2\nEND\n")
    assert main(["fit", str(d / "dwi.mif"), "--bval", str(d / "dwi.bval"), "--bvec",
                 str(d / "dwi.bvec"), "-o", str(d / "out"), "-q"]) == 2
    assert "mrconvert dwi.mif dwi.nii.gz -export_grad_fsl" in capsys.readouterr().err
    assert not (d / "out").exists()


def test_uncompressed_input_with_nan_is_not_modified(tmp_path):
    """Zeroing non-finite voxels works on a copy-on-write map of a .nii: the file stays."""
    import hashlib

    data = _signal()
    data[0, 0, 0, :] = np.nan
    d = _write(tmp_path / "d")
    mask = np.ones(SHAPE, np.uint8)
    mask[0, 0, 0] = 0
    nib.save(nib.Nifti1Image(mask, AFFINE), d / "mask.nii.gz")
    nib.save(nib.Nifti1Image(data, AFFINE), d / "raw.nii")
    before = hashlib.sha256((d / "raw.nii").read_bytes()).hexdigest()
    assert main(["fit", str(d / "raw.nii"), "--bval", str(d / "dwi.bval"), "--bvec",
                 str(d / "dwi.bvec"), "--mask", str(d / "mask.nii.gz"), "-o", str(d / "out"),
                 "--model", "tensor", "-q"]) == 0
    assert hashlib.sha256((d / "raw.nii").read_bytes()).hexdigest() == before
