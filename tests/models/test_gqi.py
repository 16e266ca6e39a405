"""GQI (GFA, normalised QA, ISO): equal to DIPY's GeneralizedQSamplingModel +
peaks_from_model on real DSI and multi-shell crops and on simulated DSI-515 voxels;
plausible values (crossing/single fibre, free water); single-shell schemes refused."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from dipy.data import dsi_voxels, get_sphere
from dipy.direction import peaks_from_model
from dipy.reconst.gqi import GeneralizedQSamplingModel
from dipy.sims.voxel import multi_tensor

from microvba._validation import InputError
from microvba.models.gqi import GqiModel
from microvba.models.gradients import GradientTable


def _dipy_gqi(gtab: GradientTable, data: np.ndarray, mask=None):
    model = GeneralizedQSamplingModel(gtab.to_dipy(), method="standard", sampling_length=1.25)
    return peaks_from_model(model, data, get_sphere(name="repulsion724"),
                            relative_peak_threshold=0.5, min_separation_angle=25, mask=mask)


def _assert_equal_to_dipy(gtab: GradientTable, data: np.ndarray, mask=None) -> None:
    ours = GqiModel(gtab).fit(data, mask)
    pam = _dipy_gqi(gtab, data, mask)
    m = ours.mask
    for mine, theirs in ((ours.gfa[m], pam.gfa[m]), (ours.qa[m], pam.qa[..., 0][m])):
        assert np.all(np.isfinite(mine))
        np.testing.assert_allclose(mine, theirs, rtol=1e-6, atol=1e-9 * np.abs(theirs).max())
    assert ours.qa[m].max() > 0


def test_equal_to_dipy_on_real_dsi_voxels():
    """DIPY's bundled real DSI acquisition (small_101D: 102 q-space samples up to b=4000)."""
    data, dgtab = dsi_voxels()
    gtab = GradientTable(dgtab.bvals, dgtab.bvecs)
    assert gtab.shells.size > 10  # a q-space grid, not shells
    _assert_equal_to_dipy(gtab, data.astype(float))


@pytest.mark.parametrize("name", ["batman", "msmt"])
def test_equal_to_dipy_on_real_crops(shared_data, name):
    d = shared_data / "dwi"
    gtab = GradientTable.from_files(d / f"{name}_dwi.bval", d / f"{name}_dwi.bvec")
    data = nib.load(d / f"{name}_dwi.nii.gz").get_fdata()
    mask = data[..., gtab.b0s_mask].mean(-1) > np.percentile(data[..., 0], 40)
    _assert_equal_to_dipy(gtab, data, mask)


def _voxels(gtab: GradientTable, rng, n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Simulated voxels: single fibres, crossings, and free water (last row)."""
    dg = gtab.to_dipy()
    rows, kind = [], []
    for i in range(n):
        ang = [(rng.uniform(0, 180), rng.uniform(0, 360))]
        if i % 2:
            ang.append((rng.uniform(0, 180), rng.uniform(0, 360)))
        fr = [100.0] if len(ang) == 1 else [50.0, 50.0]
        evals = np.array([[1.7e-3, 0.2e-3, 0.2e-3]] * len(ang))
        s, _ = multi_tensor(dg, evals, S0=100, angles=ang, fractions=fr, snr=None)
        rows.append(s)
        kind.append(len(ang))
    s, _ = multi_tensor(dg, np.array([[3e-3] * 3]), S0=100, angles=[(0, 0)],
                        fractions=[100], snr=None)
    rows.append(s)
    kind.append(0)
    return np.array(rows), np.array(kind)


def test_equal_to_dipy_and_plausible_on_simulated_dsi515(dsi515, rng):
    data, kind = _voxels(dsi515, rng)
    _assert_equal_to_dipy(dsi515, data)
    fit = GqiModel(dsi515).fit(data)
    # anisotropy: single fibres > crossings > free water (~0); free water is all ISO
    assert fit.gfa[kind == 1].min() > fit.gfa[kind == 2].max() > fit.gfa[kind == 0].max()
    assert fit.qa[kind == 0].max() < 0.05 * fit.qa[kind == 1].min()
    assert fit.iso[kind == 0].min() > 10 * fit.qa[kind == 0].max()
    # the normalisation: the largest SDF peak in the mask maps to QA + ISO = 1
    assert np.isclose((fit.qa + fit.iso).max(), 1.0)


def test_sampling_length_changes_the_maps(dsi515, rng):
    data, _ = _voxels(dsi515, rng, n=4)
    a = GqiModel(dsi515, sampling_length=1.25).fit(data).gfa
    b = GqiModel(dsi515, sampling_length=0.8).fit(data).gfa
    assert not np.allclose(a, b, rtol=1e-3)


def test_single_shell_refused():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(30, 3))
    gtab = GradientTable(np.r_[0.0, np.full(30, 1000.0)], np.vstack([np.zeros(3), g]))
    with pytest.raises(InputError, match="GQI needs q-space sampled along the radius"):
        GqiModel(gtab)
    with pytest.raises(InputError, match="sampling length"):
        GqiModel(GradientTable(np.r_[0.0, np.full(30, 1000.0), np.full(30, 2000.0)],
                               np.vstack([np.zeros(3), g, g])), sampling_length=12)
