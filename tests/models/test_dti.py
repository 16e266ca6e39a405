"""Tensor fit: identical to DIPY on real data, synthetic truth, scheme checks."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from dipy.core.gradients import gradient_table
from dipy.reconst.dti import TensorModel as DipyTensorModel

from microvba._validation import InputError
from microvba.models.dti import TensorModel, tensor_signal
from microvba.models.gradients import GradientTable


@pytest.mark.parametrize("name", ["batman", "msmt"])
@pytest.mark.parametrize("method", ["wls", "ols"])
def test_matches_dipy_on_real_crops(shared_data, name, method):
    d = shared_data / "dwi"
    gtab = GradientTable.from_files(d / f"{name}_dwi.bval", d / f"{name}_dwi.bvec")
    data = nib.load(d / f"{name}_dwi.nii.gz").get_fdata()
    fit = TensorModel(gtab, fit_method=method).fit(data)
    keep = gtab.bvals <= 1750
    dipy = DipyTensorModel(gradient_table(gtab.bvals[keep], bvecs=gtab.bvecs[keep]),
                           fit_method=method.upper())
    s0 = data[..., keep][..., gtab.b0s_mask[keep]].mean(-1, keepdims=True)
    per_s0 = data[..., keep] / np.where(s0 > 0, s0, 1.0)
    # everywhere: DIPY on each voxel's S/S0 (the fit is scale-free); wherever DIPY's absolute
    # floor for non-positive signal (1e-4) clips nothing: DIPY on the raw signal as well
    clean = ((data[..., keep] > 1e-4) & (per_s0 > 1e-4)).all(-1)
    assert clean.mean() > 0.95
    for ref, where in ((dipy.fit(per_s0), np.ones_like(clean)),
                       (dipy.fit(data[..., keep]), clean)):
        for ours, theirs in ((fit.fa, ref.fa), (fit.md, ref.md), (fit.rd, ref.rd),
                             (fit.ad, ref.ad)):
            theirs = np.nan_to_num(theirs)
            assert np.allclose(ours[where], theirs[where], rtol=1e-6,
                               atol=1e-6 * np.abs(theirs).max())
    assert fit.color_fa.shape == data.shape[:3] + (3,)
    # DSI-Studio-style restriction matters: all shells give a lower MD
    all_b = TensorModel(gtab, bmax=1e5).fit(data)
    brain = data[..., 0] > np.percentile(data[..., 0], 50)
    assert all_b.md[brain].mean() < fit.md[brain].mean()


def test_recovers_synthetic_tensor(three_shell, rng):
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    evals = np.array([1.6e-3, 0.5e-3, 0.3e-3])
    sig = 1000 * tensor_signal(three_shell.bvals, three_shell.bvecs, evals, q)
    fit = TensorModel(three_shell, bmax=1100).fit(sig[None, None, None, :])
    assert np.allclose(fit.evals[0, 0, 0], evals, rtol=1e-6)
    assert fit.md[0, 0, 0] == pytest.approx(evals.mean(), rel=1e-6)
    assert abs(fit.direction[0, 0, 0] @ q[:, 0]) == pytest.approx(1.0, abs=1e-8)


def test_refuses_too_few_directions():
    g = GradientTable(np.r_[0, np.full(5, 1000.0)],
                      np.r_[[[0, 0, 0]], np.eye(3), [[0.6, 0.8, 0]], [[0, 0.6, 0.8]]])
    with pytest.raises(InputError, match="at least 6 non-collinear"):
        TensorModel(g)


def test_bad_method_and_volume_count(three_shell):
    with pytest.raises(InputError, match="'fit_method' parameter must be one of"):
        TensorModel(three_shell, fit_method="nlls")
    with pytest.raises(InputError, match="the data have 5 volumes"):
        TensorModel(three_shell).fit(np.ones((2, 5)))


def test_refuses_scheme_without_b0():
    g = np.random.default_rng(1).normal(size=(12, 3))
    gtab = GradientTable(np.full(12, 1000.0), g)
    with pytest.raises(InputError, match="needs at least one b0 volume"):
        TensorModel(gtab)
