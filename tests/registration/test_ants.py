"""ANTs registration of simulated subjects (4 mm grid here; 2 mm in the slow tests and in
benchmarks/bench_registration.py)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from _registration_sim import simulate_subject

from microvba._validation import InputError
from microvba.registration.ants import SubjectTransform, register_subject
from microvba.registration.contrast import brain_mask_from_maps
from microvba.registration.normalise import _similarity, _warp_maps
from microvba.registration.qc import dice, flag_outliers

FOCUS_MNI = np.array([-30.0, -60.0, 50.0])  # left superior parietal lobule


def _centre_of_mass_mm(img: nib.Nifti1Image) -> np.ndarray:
    data = np.asarray(img.dataobj)
    sel = data >= 0.5 * data.max()
    ijk = np.argwhere(sel)
    w = data[sel]
    return nib.affines.apply_affine(img.affine, (ijk * w[:, None]).sum(0) / w.sum())


@pytest.fixture(scope="module")
def subject(template4):
    imgs, warp = simulate_subject(template4, np.random.default_rng(11), focus_mni=FOCUS_MNI)
    return imgs, warp


@pytest.fixture(scope="module")
def registered(subject, template4):
    imgs, _ = subject
    return register_subject(imgs, template=template4, n_threads=2)


def _qc(xfm, imgs, template):
    arrays = {k: np.asarray(v.dataobj, dtype=np.float32) for k, v in imgs.items()}
    _, valid = _warp_maps(xfm, {k: v for k, v in imgs.items() if k != "odi"},
                          brain_mask_from_maps(arrays))
    return _similarity(xfm, imgs, arrays, valid, template)


def test_registration_recovers_gm_and_focus(subject, registered, template4):
    imgs, warp = subject
    gm_t = np.asarray(template4.gm.dataobj) >= 0.5
    gm_subject = warp.apply(template4.gm)
    before = dice(np.asarray(gm_subject.dataobj) >= 0.5, gm_t)
    after = dice(np.asarray(registered.apply(gm_subject).dataobj) >= 0.5, gm_t)
    assert before < 0.75
    assert after > 0.8 and after > before + 0.1  # >= 0.85 on the 2 mm grid (slow test)
    focus = _centre_of_mass_mm(registered.apply(imgs["odi"]))
    assert np.linalg.norm(focus - FOCUS_MNI) < 4.0
    # before registration the focus sits where the subject's anatomy put it
    assert np.linalg.norm(_centre_of_mass_mm(imgs["odi"]) - FOCUS_MNI) > 1.0


def test_nearest_keeps_labels_and_4d(subject, registered, template4):
    imgs, _ = subject
    labels = nib.Nifti1Image(np.asarray(imgs["mask"].dataobj, np.float32) * 3, imgs["fa"].affine)
    out = np.asarray(registered.apply(labels, interpolation="nearest").dataobj)
    assert set(np.unique(out)) <= {0.0, 3.0}
    both = nib.Nifti1Image(np.stack([np.asarray(imgs["fa"].dataobj)] * 2, -1),
                           imgs["fa"].affine)
    out4 = np.asarray(registered.apply(both).dataobj)
    assert out4.shape == template4.shape + (2,)
    np.testing.assert_allclose(out4[..., 0], np.asarray(registered.apply(imgs["fa"]).dataobj))


def test_bad_interpolation(subject, registered):
    imgs, _ = subject
    with pytest.raises(InputError, match="'interpolation'"):
        registered.apply(imgs["fa"], interpolation="cubic")


def test_save_load_round_trip(subject, registered, tmp_path):
    imgs, _ = subject
    written = registered.save(tmp_path, "sub-01")
    assert all(p.exists() for p in written)
    assert not list(tmp_path.glob(".tmp-*"))
    loaded = SubjectTransform.load(tmp_path, "sub-01", resolution=4.0)
    assert loaded.info["route"] == registered.info["route"]
    np.testing.assert_allclose(np.asarray(loaded.apply(imgs["fa"]).dataobj),
                               np.asarray(registered.apply(imgs["fa"]).dataobj), atol=1e-6)
    with pytest.raises(InputError, match="no saved registration"):
        SubjectTransform.load(tmp_path, "sub-02", resolution=4.0)
    written[1].unlink()
    with pytest.raises(InputError, match="transform files missing"):
        SubjectTransform.load(tmp_path, "sub-01", resolution=4.0)


def test_t1w_route(template4):
    """DWI -> T1w (rigid, MI) -> MNI (SyN): the T1w is on its own grid, with a skull."""
    rng = np.random.default_rng(12)
    imgs, warp = simulate_subject(template4, rng)
    t1 = np.asarray(warp.apply(template4.t1).dataobj)
    scalp = (np.asarray(warp.apply(template4.brain_mask).dataobj) == 0) * 0.5
    from scipy import ndimage

    head = ndimage.binary_dilation(t1 > 0.1, iterations=3) & (t1 < 0.1)
    t1w_data = np.where(head, scalp, t1) * 800
    shifted = template4.affine.copy()
    shifted[:3, 3] += [3.0, -2.0, 4.0]  # scanner moved the T1w field of view
    t1w = nib.Nifti1Image(t1w_data.astype(np.float32), shifted)
    xfm = register_subject(imgs, t1w=t1w, template=template4, n_threads=2)
    assert len(xfm.transforms) == 3 and "T1w" in xfm.info["route"]
    gm_t = np.asarray(template4.gm.dataobj) >= 0.5
    after = dice(np.asarray(xfm.apply(warp.apply(template4.gm)).dataobj) >= 0.5, gm_t)
    assert after > 0.8


def test_flipped_subject_is_flagged(subject, registered, template4):
    """An anterior-posterior flip (wrong affine) cannot be undone by a local optimiser;
    QC must flag it within a group. (A left-right flip is invisible against a symmetric
    template.)"""
    imgs, _ = subject
    flipped = {k: nib.Nifti1Image(np.ascontiguousarray(np.asarray(v.dataobj)[:, ::-1]),
                                  v.affine) for k, v in imgs.items()}
    bad = register_subject(flipped, template=template4, n_threads=2)
    rows = {"sub-good": _qc(registered, imgs, template4),
            "sub-flipped": _qc(bad, flipped, template4)}
    for s in range(2):  # two more correctly registered subjects make a group
        other, _ = simulate_subject(template4, np.random.default_rng(40 + s))
        rows[f"sub-other{s}"] = _qc(register_subject(other, template=template4, n_threads=2),
                                    other, template4)
    table = pd.DataFrame.from_dict(rows, orient="index")
    assert table.loc["sub-good", "dice_gm"] > 0.8
    assert table.loc["sub-flipped", "correlation"] < table.loc["sub-good", "correlation"] - 0.2
    flags = flag_outliers(table)
    assert flags[flags].index.tolist() == ["sub-flipped"]


def test_errors(subject, template4):
    imgs, _ = subject
    with pytest.raises(InputError, match="no native maps"):
        register_subject({}, template=template4)
    with pytest.raises(InputError, match="unknown map keys"):
        register_subject({"t2": imgs["fa"]}, template=template4)
    other = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    with pytest.raises(InputError, match="not on the same grid"):
        register_subject({"fa": imgs["fa"], "md": other}, template=template4)
    with pytest.raises(InputError, match="needs the FA map"):
        register_subject({"md": imgs["md"]}, template=template4)
    with pytest.raises(InputError, match="synthetic contrast needs"):
        register_subject({"fa": imgs["fa"], "icvf": imgs["icvf"]}, template=template4)
    with pytest.raises(InputError, match="'type_of_transform'"):
        register_subject(imgs, template=template4, type_of_transform="BSpline")
    with pytest.raises(InputError, match="'dwi_to_t1w'"):
        register_subject(imgs, t1w=imgs["fa"], template=template4, dwi_to_t1w="SyN")
    with pytest.raises(InputError, match="the DWI -> T1w step needs"):
        register_subject({"md": imgs["md"]}, t1w=imgs["fa"], template=template4)
