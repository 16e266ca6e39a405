"""normalise_subject: outputs, names, provenance, skip when up to date."""

from __future__ import annotations

import json
import time

import nibabel as nib
import numpy as np
import pytest
from _registration_sim import simulate_subject, write_maps

from microvba._validation import InputError
from microvba.io import derivatives
from microvba.registration.normalise import normalise_subject, parse_prefix
from microvba.registration.qc import dice
from microvba.registration.template import load_template


@pytest.fixture(scope="module")
def native(tmp_path_factory, template4):
    folder = tmp_path_factory.mktemp("native")
    imgs, warp = simulate_subject(template4, np.random.default_rng(21))
    imgs["odi"] = nib.Nifti1Image(np.asarray(imgs["icvf"].dataobj) * 0.5 + 0.1,
                                  template4.affine)
    return write_maps(imgs, folder, "sub-01_ses-1"), warp


@pytest.fixture(scope="module")
def normalised(native, tmp_path_factory):
    out = tmp_path_factory.mktemp("deriv")
    paths, _ = native
    return normalise_subject(paths, out, "sub-01_ses-1", resolution=4.0, n_threads=2), out


def test_outputs_and_names(normalised, native, template4):
    res, out = normalised
    paths, warp = native
    assert set(res.maps) == {"fa", "md", "rd", "ad", "icvf", "odi", "isovf"}
    for param, p in res.maps.items():
        # exactly where the group stage looks for it
        assert p == derivatives.map_path(out, "01", param, space=derivatives.SPACE_MNI,
                                         session="1")
        img = nib.load(p)
        assert img.shape == template4.shape
        np.testing.assert_allclose(img.affine, template4.affine)
        side = json.loads(derivatives.sidecar_path(p).read_text())
        assert side["Space"] == "MNI152NLin2009aSym" and param in side["InputHashes"]
    assert res.figure == out / "sub-01" / "figures" / (
        "sub-01_ses-1_space-MNI152NLin2009aSym_desc-qc_dwimap.png")
    assert res.figure.stat().st_size > 10_000
    assert all(p.exists() for p in res.transforms)
    # QC JSON: flat numeric similarity measures (the group stage reads them)
    recorded = json.loads(res.qc_path.read_text())
    assert {"correlation", "dice_gm", "dice_brain"} <= set(recorded)
    assert res.qc["dice_gm"] > 0.8 and res.qc["correlation"] > 0.75
    assert len(list(out.rglob("*qc*.json"))) == 1
    assert not list(out.rglob(".tmp-*"))
    # mask-normalised interpolation: no dilution at the brain edge, 0 outside the mask
    mask = np.asarray(nib.load(res.mask).dataobj) > 0
    md = np.asarray(nib.load(res.maps["md"]).dataobj)
    assert np.all(md[~mask] == 0) and md[mask].min() > 0.5e-3
    gm_t = np.asarray(template4.gm.dataobj) >= 0.5
    assert dice(mask, np.asarray(template4.brain_mask.dataobj) > 0) > 0.95
    assert mask[gm_t].mean() > 0.97


def test_skip_when_up_to_date_and_force(normalised, native):
    res, out = normalised
    paths, _ = native
    mtime = res.maps["fa"].stat().st_mtime_ns
    t0 = time.perf_counter()
    again = normalise_subject(paths, out, "sub-01_ses-1", resolution=4.0)
    assert again.skipped and time.perf_counter() - t0 < 5
    assert again.qc == pytest.approx(res.qc)
    assert res.maps["fa"].stat().st_mtime_ns == mtime
    # a changed input invalidates the outputs
    img = nib.load(paths["odi"])
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj) * 0.9, img.affine), paths["odi"])
    redone = normalise_subject(paths, out, "sub-01_ses-1", resolution=4.0, n_threads=2)
    assert not redone.skipped


def test_parse_prefix():
    assert parse_prefix("sub-01") == ("01", None)
    assert parse_prefix("sub-ab12_ses-pre") == ("ab12", "pre")
    with pytest.raises(InputError, match="invalid subject prefix"):
        parse_prefix("01_ses-1")


def test_input_errors(native, tmp_path):
    paths, _ = native
    with pytest.raises(InputError, match="native md map not found"):
        normalise_subject({**paths, "md": tmp_path / "missing.nii.gz"}, tmp_path, "sub-01",
                          resolution=4.0)
    other = tmp_path / "other.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((5, 5, 5), np.float32), np.eye(4)), other)
    with pytest.raises(InputError, match="is not on the grid of"):
        normalise_subject({"fa": paths["fa"], "md": other}, tmp_path, "sub-01", resolution=4.0)
    four = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((5, 5, 5, 2), np.float32), np.eye(4)), four)
    with pytest.raises(InputError, match="is 4-D, expected 3-D"):
        normalise_subject({"fa": four}, tmp_path, "sub-01", resolution=4.0)
    text = tmp_path / "fa.nii.gz"
    text.write_text("not an image")
    with pytest.raises(InputError, match="cannot read the native fa map"):
        normalise_subject({"fa": text}, tmp_path, "sub-01", resolution=4.0)
    with pytest.raises(InputError, match="no native maps given"):
        normalise_subject({}, tmp_path, "sub-01", resolution=4.0)
    with pytest.raises(InputError, match="T1w image not found"):
        normalise_subject(paths, tmp_path, "sub-01", t1w=tmp_path / "t1.nii.gz",
                          resolution=4.0)
    with pytest.raises(InputError, match="invalid subject prefix"):
        normalise_subject(paths, tmp_path, "subject01")


@pytest.mark.slow
def test_acceptance_2mm(tmp_path):
    """Issue acceptance on the 2 mm grid: Dice >= 0.85 on average, a planted focus within
    4 mm, < 60 s per subject (benchmarks/bench_registration.py reports the figures)."""
    from _registration_sim import gaussian_blob  # noqa: F401  (documents the planting)

    from microvba.registration.ants import register_subject

    template = load_template(2.0)
    focus = np.array([-30.0, -60.0, 50.0])
    gm_t = np.asarray(template.gm.dataobj) >= 0.5
    dices, errors = [], []
    for s in range(3):
        imgs, warp = simulate_subject(template, np.random.default_rng(300 + s), focus_mni=focus)
        t0 = time.perf_counter()
        xfm = register_subject(imgs, template=template, n_threads=2)
        assert time.perf_counter() - t0 < 60
        dices.append(dice(np.asarray(xfm.apply(warp.apply(template.gm)).dataobj) >= 0.5, gm_t))
        odi = xfm.apply(imgs["odi"])
        data = np.asarray(odi.dataobj)
        sel = data >= 0.5 * data.max()
        com = nib.affines.apply_affine(odi.affine, (np.argwhere(sel) * data[sel][:, None]).sum(0)
                                       / data[sel].sum())
        errors.append(np.linalg.norm(com - focus))
    assert np.mean(dices) >= 0.85
    assert max(errors) < 4.0
