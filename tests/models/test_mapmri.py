"""MAP-MRI scalars: the batched fit equals DIPY's MapmriModel voxel by voxel (fixed
Laplacian weight: same algebra, <= 1e-8; GCV: another minimiser of the same criterion,
<= 1e-3) on real crops, DIPY's real DSI voxels and simulated DSI-515 voxels; plausible
values; schemes it cannot fit refused with the file and a fix."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest
from dipy.data import dsi_voxels
from dipy.reconst.mapmri import MapmriModel as DipyMapmri
from dipy.sims.voxel import multi_tensor

from microvba._validation import InputError
from microvba.models.gradients import GradientTable
from microvba.models.mapmri import MAPMRI_PARAMS, MapmriModel


def _dipy(gtab: GradientTable, signals: np.ndarray, weighting) -> np.ndarray:
    model = DipyMapmri(gtab.to_dipy(), radial_order=6, laplacian_regularization=True,
                       laplacian_weighting=weighting, bval_threshold=2000)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NG: DIPY warns whatever the threshold
        for s in signals:
            f = model.fit(s)
            out.append([f.rtop(), f.rtap(), f.rtpp(), f.msd(), f.ng(),
                        float(np.ravel(f.lopt)[0])])
    return np.array(out)


def _compare(gtab, signals, weighting, rtol):
    ours = MapmriModel(gtab, laplacian_weighting=weighting, n_threads=1).fit_voxels(signals)
    ref = _dipy(gtab, signals, weighting)
    assert np.all(np.isfinite(ours[:, :5]))
    for k, name in enumerate(MAPMRI_PARAMS):
        np.testing.assert_allclose(ours[:, k], ref[:, k], rtol=rtol,
                                   atol=rtol * np.abs(ref[:, k]).max(), err_msg=name)
    return ours, ref


def _simulated(gtab: GradientTable, rng, n: int, snr=30) -> tuple[np.ndarray, np.ndarray]:
    dg = gtab.to_dipy()
    rows, kind = [], []
    for i in range(n):
        if i % 3 == 2:  # gray-matter-like: slow, nearly isotropic
            evals, ang, fr = np.array([[0.9e-3, 0.7e-3, 0.7e-3]]), [(0, 0)], [100]
        else:
            ang = [(rng.uniform(0, 180), rng.uniform(0, 360)),
                   (rng.uniform(0, 180), rng.uniform(0, 360))]
            f = rng.uniform(60, 100)
            evals = np.array([[1.7e-3, 0.2e-3, 0.2e-3]] * 2)
            fr = [f, 100 - f]
        s, _ = multi_tensor(dg, evals, S0=100, angles=ang, fractions=fr, snr=snr, rng=rng)
        rows.append(s)
        kind.append(i % 3 == 2)
    return np.array(rows), np.array(kind)


@pytest.fixture(scope="module")
def dsi4000(dsi515) -> GradientTable:
    """DSI-515 grid with b_max = 4000 (the scale of DIPY's own DSI examples)."""
    return GradientTable(dsi515.bvals * 4000 / dsi515.bvals.max(), dsi515.bvecs)


def test_fixed_weight_equal_to_dipy_on_simulated_dsi515(dsi4000, rng):
    signals, _ = _simulated(dsi4000, rng, 12)
    _compare(dsi4000, signals, 0.2, rtol=1e-8)


def test_gcv_equal_to_dipy_on_simulated_dsi515(dsi4000, rng):
    signals, _ = _simulated(dsi4000, rng, 6)
    ours, ref = _compare(dsi4000, signals, "GCV", rtol=1e-3)
    assert np.ptp(ref[:, 5]) > 0  # GCV chose voxel-specific weights
    np.testing.assert_allclose(ours[:, 5], ref[:, 5], rtol=0.05)


def test_equal_to_dipy_on_real_dsi_voxels():
    """DIPY's bundled real DSI acquisition (small_101D, b up to 4000)."""
    data, dgtab = dsi_voxels()
    gtab = GradientTable(dgtab.bvals, dgtab.bvecs)
    signals = data.reshape(-1, data.shape[-1])[::97][:6].astype(float)
    _compare(gtab, signals, 0.2, rtol=1e-8)
    _compare(gtab, signals[:3], "GCV", rtol=1e-3)


@pytest.mark.parametrize("name", ["batman", "msmt"])
def test_equal_to_dipy_on_real_crops(shared_data, name):
    d = shared_data / "dwi"
    gtab = GradientTable.from_files(d / f"{name}_dwi.bval", d / f"{name}_dwi.bvec")
    data = nib.load(d / f"{name}_dwi.nii.gz").get_fdata()
    b0 = data[..., gtab.b0s_mask].mean(-1)
    flat = data[b0 > np.percentile(b0, 60)]
    signals = flat[np.random.default_rng(3).choice(len(flat), 6, replace=False)]
    _compare(gtab, signals, 0.2, rtol=1e-8)
    _compare(gtab, signals[:3], "GCV", rtol=1e-3)


def test_plausible_values_and_image_fit(dsi4000, rng):
    signals, gm = _simulated(dsi4000, rng, 9, snr=None)
    fit = MapmriModel(dsi4000, laplacian_weighting=0.2).fit(signals[None], np.ones((1, 9), bool))
    rtop, msd, ng = fit.rtop[0], fit.msd[0], fit.ng[0]
    # restricted (white-matter-like) voxels: higher RTOP, smaller MSD and more non-Gaussian
    assert rtop[~gm].min() > rtop[gm].max()
    assert msd[~gm].max() < msd[gm].min()
    assert ng[~gm].min() > ng[gm].max()
    assert np.all((ng >= 0) & (ng <= 1))
    # the image form keeps the grid and zeroes outside the mask
    mask = np.zeros((1, 9), bool)
    mask[0, :4] = True
    part = MapmriModel(dsi4000, laplacian_weighting=0.2, n_threads=2).fit(signals[None], mask)
    assert np.all(part.rtop[0, 4:] == 0)
    np.testing.assert_allclose(part.rtop[0, :4], rtop[:4], rtol=1e-12)


def test_gaussian_signal_gives_the_tensor_rtop(dsi4000):
    """For a Gaussian propagator RTOP = 1 / sqrt((4 pi tau)^3 det D) (Özarslan 2013 eq. 36
    with u^2 = 2 lambda tau), known without DIPY."""
    evals = np.array([1.5e-3, 0.5e-3, 0.4e-3])
    s, _ = multi_tensor(dsi4000.to_dipy(), evals[None], S0=1, angles=[(30, 40)],
                        fractions=[100], snr=None)
    fit = MapmriModel(dsi4000, laplacian_weighting=0.0, bval_threshold=1e9).fit_voxels(s[None])
    tau = 1 / (4 * np.pi ** 2)
    truth = 1 / np.sqrt((4 * np.pi * tau) ** 3 * np.prod(evals))
    assert fit[0, 0] == pytest.approx(truth, rel=1e-3)
    assert fit[0, 3] == pytest.approx(2 * tau * evals.sum(), rel=1e-3)  # MSD = 2 tau tr(D)
    assert fit[0, 4] < 1e-3                                              # NG of a Gaussian


def test_single_shell_and_bad_options_refused():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(30, 3))
    single = GradientTable(np.r_[0.0, np.full(30, 1000.0)], np.vstack([np.zeros(3), g]))
    with pytest.raises(InputError, match="MAP-MRI needs q-space sampled along the radius"):
        MapmriModel(single)
    two = GradientTable(np.r_[0.0, np.full(30, 1000.0), np.full(30, 2000.0)],
                        np.vstack([np.zeros(3), g, g]))
    with pytest.raises(InputError, match="radial order"):
        MapmriModel(two, radial_order=5)
    with pytest.raises(InputError, match="Laplacian"):
        MapmriModel(two, laplacian_weighting="LOO")
    with pytest.raises(InputError, match="6 or more are needed"):
        MapmriModel(two, bval_threshold=500)


def test_gcv_equal_to_dipy_on_the_full_dsi515_grid(dsi515, rng):
    """The study's q-space reach (b up to 11538 s/mm^2)."""
    signals, _ = _simulated(dsi515, rng, 3)
    _compare(dsi515, signals, "GCV", rtol=1e-3)
