"""The decoder's spatial null: p values from a null sample, in-support surrogate maps, and
the false-positive rate on simulated null ROIs and maps (real Neurosynth database)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage, stats

from microvba.decode import _kernels
from microvba.decode.null import (
    empirical_p,
    gpd_fit_pwm,
    gpd_sf,
    lag_correlations,
    surrogate_maps,
    tail_p,
)

# ------------------------------------------------------------------ p from a null sample


@pytest.mark.parametrize("c", [-0.25, 0.0, 0.2])
def test_gpd_pwm_recovers_shape_and_scale(c):
    """PWM fit against the planted GPD and against scipy's maximum-likelihood fit."""
    y = stats.genpareto.rvs(c=c, scale=2.0, size=20000, random_state=7)
    k, sigma = gpd_fit_pwm(y)
    c_ml, _, scale_ml = stats.genpareto.fit(y, floc=0)
    assert abs(-k - c) < 0.04 and abs(sigma - 2.0) < 0.08
    assert abs(-k - c_ml) < 0.04 and abs(sigma - scale_ml) < 0.08
    for q in (1.0, 5.0):
        assert gpd_sf(q, k, sigma) == pytest.approx(stats.genpareto.sf(q, c, scale=2.0),
                                                    rel=0.05, abs=1e-4)


def test_empirical_p_is_uniform_under_exchangeability():
    rng = np.random.default_rng(3)
    draws = rng.standard_normal((4000, 200))
    p = empirical_p(draws[:, 0], draws[:, 1:])
    for a in (0.05, 0.2, 0.5):
        assert abs((p <= a).mean() - a) < 0.02
    assert p.min() >= 1 / 200


def test_tail_p_heavy_tail_follows_the_truth_and_is_never_above_p_perm():
    """Student t(3) nulls (heavy tail, k < 0): beyond the resamples the GPD tail tracks the
    true tail within a factor of ~3 where the empirical p is stuck near 1/(N+1)."""
    rng = np.random.default_rng(11)
    null = rng.standard_t(3, size=(40, 2000))
    for s in (12.0, 25.0):
        obs = np.full(40, s)
        p = tail_p(obs, null)
        assert np.all(p <= empirical_p(obs, null) + 1e-15)
        assert 0.3 < np.median(p) / stats.t.sf(s, 3) < 3.0
    assert np.all(p < 1 / 2001)


def test_tail_p_light_tail_is_conservative_not_zero():
    """Normal nulls (light tail): p never 0 and not below the truth by more than noise."""
    rng = np.random.default_rng(5)
    null = rng.standard_normal((200, 1000))
    for z in (3.3, 4.0):
        p = tail_p(np.full(200, z), null)
        assert np.all(p > 0)
        assert np.median(p) >= 0.9 * stats.norm.sf(z)
        assert (p < 0.25 * stats.norm.sf(z)).mean() < 0.05


def test_tail_p_calibration_on_exchangeable_draws():
    """Rejection rates of tail_p at 0.01 and 0.001 over exchangeable skewed draws."""
    rng = np.random.default_rng(8)
    draws = rng.gamma(1.5, size=(6000, 1001))
    p = tail_p(draws[:, 0], draws[:, 1:])
    assert (p <= 0.01).mean() == pytest.approx(0.01, abs=0.005)
    assert (p <= 0.001).mean() < 0.0035


# ------------------------------------------------------------------ surrogate maps


def _smooth_noise(shape, fwhm_vox, rng):
    return ndimage.gaussian_filter(rng.standard_normal(shape),
                                   fwhm_vox / np.sqrt(8 * np.log(2)))


def test_surrogates_keep_support_values_and_smoothness():
    rng = np.random.default_rng(0)
    shape = (45, 45, 45)
    brain = np.zeros(shape, bool)
    brain[3:42, 3:42, 3:42] = True
    support = brain & (np.indices(shape)[0] < 30)  # a half-moon: zeros elsewhere in brain
    vol = np.where(support, _smooth_noise(shape, 4.0, rng), 0.0)
    pts = np.argwhere(brain & (np.indices(shape) % 3 == 0).all(axis=0))
    sur, info = surrogate_maps(vol, brain, pts, 60, rng)
    values = vol[tuple(pts.T)]
    inside = support[tuple(pts.T)]
    assert np.all(sur[:, ~inside] == 0)
    np.testing.assert_array_equal(np.sort(sur[:, inside], axis=1)[0],
                                  np.sort(values[inside]).astype(np.float32))
    assert not np.array_equal(sur[0], values)
    # lattice-neighbour correlation of surrogates ~ the map's own (the planted smoothness)
    rho_map = lag_correlations(vol, support, 3)
    truth = np.exp(-9 / (4 * (4.0 / np.sqrt(8 * np.log(2))) ** 2))
    assert np.allclose(rho_map, truth, atol=0.1)
    sur_rho = []
    for s in sur[:20]:
        v = np.zeros(shape)
        v[tuple(pts.T)] = s
        sub = v[::3, ::3, ::3]
        m = support[::3, ::3, ::3]
        both = m[:-1] & m[1:]
        sur_rho.append(np.corrcoef(sub[:-1][both], sub[1:][both])[0, 1])
    assert np.mean(sur_rho) == pytest.approx(rho_map.mean(), abs=0.08)
    assert info["n_support"] == int(inside.sum())


# ------------------------------------------------------------------ ROI hits from peaks


def test_roi_hits_from_peaks_equal_the_incidence_matrix(lda_decoder, rois):
    from microvba.decode.grid import roi_voxels

    dec = lda_decoder
    fm = dec.maps_
    roi = roi_voxels(rois["A23c"], fm.grid)
    null = dec._null_rois(roi, np.random.default_rng(1))[:40]
    sets = [roi, *null]
    hits = dec._hits(sets)
    a = fm.activation
    vox = np.concatenate(sets)
    roi_of = np.repeat(np.arange(len(sets)), [len(r) for r in sets])
    order = np.argsort(vox, kind="stable")
    vox_ptr = np.searchsorted(vox[order], np.arange(fm.grid.n_voxels + 1)).astype(np.int64)
    ref = _kernels.roi_hits(a.indptr.astype(np.int64), a.indices, vox_ptr,
                            roi_of[order].astype(np.int64), len(sets))
    np.testing.assert_array_equal(hits, ref)
    in_roi = np.zeros(fm.grid.n_voxels, bool)
    in_roi[roi] = True
    cover = _kernels.roi_cover_peaks(dec._vox_ijk[roi], dec._offsets, dec._padded, dec._pad,
                                     dec._peak_ptr, dec._peak_studies, fm.n_studies)
    np.testing.assert_array_equal(
        cover, _kernels.roi_cover(a.indptr.astype(np.int64), a.indices, in_roi))
    from microvba.decode._roi_hits import cover_counts

    np.testing.assert_array_equal(
        cover_counts(dec._vox_ijk[roi], dec._offsets, dec._padded, dec._pad, dec._peak_ptr,
                     dec._peak_studies, fm.n_studies), cover)


@pytest.mark.parametrize("name", ["A23c", "amygdala", "A4ul"])
def test_translated_hits_equal_the_compiled_kernel(lda_decoder, rois, name):
    """The numpy path of decode_roi (dilation of the ROI built once, translated; clipped
    null ROIs through the cover matrix) gives the compiled kernel's hits, clipped or not."""
    from microvba.decode.grid import roi_voxels

    dec = lda_decoder
    roi = roi_voxels(rois[name], dec.maps_.grid)
    shifts, kept, idx = dec._null_translations(roi, np.random.default_rng(7))
    assert shifts.shape == (dec.n_null, 3)
    assert (~kept.all(axis=0)).sum() >= 20  # clipped null ROIs are exercised
    assert (kept.all(axis=0)).sum() >= 20  # and whole ones
    assert (kept.mean(axis=0) >= 0.8).all()
    sets = [roi] + [idx[kept[:, j], j] for j in range(idx.shape[1])]
    ref = dec._hits(sets)
    got = dec._hits_translated(roi, shifts, kept)
    np.testing.assert_array_equal(got.toarray().T > 0, ref)
    # the null ROIs are the translations of _null_rois (same draws, same order)
    again = dec._null_rois(roi, np.random.default_rng(7))
    assert len(again) == len(sets) - 1
    assert all(np.array_equal(a, b) for a, b in zip(again, sets[1:], strict=True))


@pytest.mark.parametrize("high", [1, 300, 2**20, 2**40])
def test_stable_order_is_numpys_stable_argsort(high):
    from microvba.decode._roi_hits import _stable_order

    key = np.random.default_rng(high).integers(0, high, size=20_000)  # many ties
    np.testing.assert_array_equal(_stable_order(key), np.argsort(key, kind="stable"))
    assert _stable_order(np.zeros(0, np.int64)).size == 0


def _translations_loop(dec, roi, rng):
    """Reference of Decoder._null_translations, one target at a time: targets drawn n_null
    at a time, taken in order while >= 80 % of the moved ROI lands in the brain mask."""
    grid = dec.maps_.grid
    ijk = dec._vox_ijk[roi]
    centre = np.rint(ijk.mean(axis=0)).astype(np.int64)
    shifts, idxs = [], []
    while len(shifts) < dec.n_null:
        for t in dec._vox_ijk[rng.integers(0, len(dec._vox_ijk), size=dec.n_null)]:
            moved = ijk + (t - centre)
            inside = np.all((moved >= 0) & (moved < grid.shape), axis=1)
            idx = np.full(roi.size, -1, np.int64)
            idx[inside] = grid.flat_to_masked[np.ravel_multi_index(moved[inside].T,
                                                                   grid.shape)]
            if (idx >= 0).sum() >= 0.8 * roi.size:
                shifts.append(t - centre)
                idxs.append(idx)
                if len(shifts) == dec.n_null:
                    break
    return np.array(shifts), np.array(idxs).T


@pytest.mark.parametrize("name", ["A23c", "A4ul"])
def test_null_translations_equal_a_plain_loop(lda_decoder, rois, name):
    """The vectorised translations (a flat offset for copies inside the grid, voxel by
    voxel for copies crossing its edge) draw and accept exactly as a one-by-one loop."""
    from microvba.decode.grid import roi_voxels

    dec = lda_decoder
    roi = roi_voxels(rois[name], dec.maps_.grid)
    shifts, kept, idx = dec._null_translations(roi, np.random.default_rng(11))
    ref_shifts, ref_idx = _translations_loop(dec, roi, np.random.default_rng(11))
    np.testing.assert_array_equal(shifts, ref_shifts)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(kept, ref_idx >= 0)


def test_translated_hits_of_copies_leaving_the_padded_grid(lda_decoder, atlas):
    """A large ROI (Brainnetome 1-20, frontal) has null copies with voxels off the grid,
    whose spheres reach beyond the grid padded by the sphere radius: their hits still
    equal the compiled kernel's."""
    from microvba.decode.grid import atlas_roi, roi_voxels

    dec = lda_decoder
    grid = dec.maps_.grid
    roi = roi_voxels(atlas_roi(atlas, list(range(1, 21))), grid)
    shifts, kept, idx = dec._null_translations(roi, np.random.default_rng(5))
    moved = dec._vox_ijk[roi][None, :, :] + shifts[:, None, :]
    beyond = ((moved < 0) | (moved >= np.asarray(grid.shape))).any(axis=(1, 2))
    pick = np.concatenate([np.flatnonzero(beyond)[:12], np.flatnonzero(~beyond)[:3]])
    assert beyond.sum() >= 1
    sets = [roi] + [idx[kept[:, j], j] for j in pick]
    got = dec._hits_translated(roi, shifts[pick], kept[:, pick])
    np.testing.assert_array_equal(got.toarray().T > 0, dec._hits(sets))


def test_translated_counts_equal_hits_times_selection(lda_decoder, rois):
    """decode_roi's per-block counts (studies hit, and selected studies hit per feature)
    equal the sparse hit matrix's row sums and its product with the selection."""
    from microvba.decode import _roi_hits
    from microvba.decode.grid import roi_voxels

    dec = lda_decoder
    roi = roi_voxels(rois["amygdala"], dec.maps_.grid)
    shifts, kept, _ = dec._null_translations(roi, np.random.default_rng(3))
    args = dec._translation_args(roi, shifts, kept)
    hits = _roi_hits.translated_hits(*args).toarray()
    n_hit, a = _roi_hits.translated_counts(*args, selection_t=dec._sel_t)
    np.testing.assert_array_equal(n_hit, hits.sum(axis=1))
    np.testing.assert_array_equal(a, (dec.maps_.selection.T @ hits.T))
    assert n_hit.min() > 0 and a.max() > 0


# ------------------------------------------------------------------ false positives


def _translated(template: np.ndarray, grid, rng) -> np.ndarray:
    ijk = np.argwhere(template)
    centre = np.rint(ijk.mean(axis=0)).astype(int)
    brain = np.argwhere(grid.mask)
    while True:
        moved = ijk + (brain[rng.integers(len(brain))] - centre)
        moved = moved[np.all((moved >= 0) & (moved < grid.shape), axis=1)]
        inside = grid.mask[tuple(moved.T)]
        if inside.sum() >= 0.8 * len(ijk):
            out = np.zeros(grid.shape, np.uint8)
            out[tuple(moved[inside].T)] = 1
            return out


def test_roi_null_false_positive_rate(lda_decoder, rois):
    """30 null ROIs (a region translated to random places): per-feature p_null rejects at
    about its level and few ROIs get any significant topic (the Gaussian tail flagged 10.7 %
    of null ROIs). The >= 200-ROI figure is in benchmarks/bench_decode_null.py."""
    from microvba.decode.grid import to_grid_volume

    grid = lda_decoder.maps_.grid
    template = to_grid_volume(rois["IFJ_R"], grid, "nearest") != 0
    rng = np.random.default_rng(2024)
    any_sig, p = 0, []
    for i in range(30):
        lda_decoder.seed = 100 + i
        table = lda_decoder.decode_roi(nib.Nifti1Image(_translated(template, grid, rng),
                                                       grid.affine))
        any_sig += bool(table["significant"].any())
        p.append(table["p_null"].to_numpy())
    lda_decoder.seed = 0
    p = np.concatenate(p)
    assert 0.02 < (p <= 0.05).mean() < 0.09
    assert (p <= 0.01).mean() < 0.025
    assert any_sig <= 4


@pytest.mark.parametrize("support", ["brain", "gm"])
def test_map_null_false_positive_rate(lda_decoder, support):
    """20 smooth-noise maps, whole brain or grey-matter masked: cyclic shifts flagged a topic
    in 13 % / 28 % of them; the in-support surrogates hold the level."""
    from nilearn.datasets import load_mni152_gm_template
    from nilearn.image import resample_img

    grid = lda_decoder.maps_.grid
    mask = grid.mask
    if support == "gm":
        gm = resample_img(load_mni152_gm_template(resolution=2), target_affine=grid.affine,
                          target_shape=grid.shape, force_resample=True, copy_header=True)
        mask = mask & (np.asarray(gm.dataobj) > 0.5)
    rng = np.random.default_rng(7 if support == "brain" else 8)
    any_sig, p = 0, []
    for i in range(20):
        lda_decoder.seed = 200 + i
        vol = np.where(mask, _smooth_noise(grid.shape, rng.uniform(3, 6), rng), 0.0)
        table = lda_decoder.decode_map(nib.Nifti1Image(vol.astype(np.float32), grid.affine))
        any_sig += bool(table["significant"].any())
        p.append(table["p_null"].to_numpy())
    lda_decoder.seed = 0
    p = np.concatenate(p)
    assert 0.02 < (p <= 0.05).mean() < 0.09
    assert any_sig <= 3
