"""Decode a region (mask) or a statistic map against meta-analytic feature maps.

ROI association (Neurosynth's "ROI decoding", Yarkoni et al. 2011)
    A study *hits* the ROI when one of its MKDA spheres (a peak within ``kernel_mm``)
    overlaps it. For feature :math:`F` with :math:`n_1` selected studies (``a`` hits) and
    :math:`n_2` others (``c`` hits), the 2 x 2 table (a, b = n1 - a; c, d = n2 - c) gives

    .. math::

        \\log \\mathrm{OR} = \\ln\\frac{(a + \\tfrac12)(d + \\tfrac12)}
                                       {(b + \\tfrac12)(c + \\tfrac12)}

    (Haldane-Anscombe correction), :math:`P(\\mathrm{hit} \\mid F) = a / n_1` against
    :math:`P(\\mathrm{hit} \\mid \\lnot F) = c / n_2`, the two-sided Fisher exact p (``z`` is the
    signed square root of the Pearson chi-square), and Benjamini-Hochberg q across
    features. ``r`` is NiMARE's ``ROIAssociationDecoder`` statistic: the Pearson correlation
    across studies of the fraction of ROI voxels inside a study's spheres with the feature
    weight.

Map correlation (Neurosynth's decoder, NiMARE's ``CorrelationDecoder``)
    Pearson r, inside the brain mask, of the input map with each feature's association
    z map.

Spatial null (so that a top-ranked feature is not mistaken for a significant one)
    ROI: ``n_null`` copies of the ROI rigidly translated to random places in the brain (at
    least 80% of the copy inside the mask); map: ``n_null`` spatially constrained surrogate
    maps (:mod:`microvba.decode.null`): Gaussian fields with the map's smoothness, drawn
    inside the map's own support (brain, grey matter or cluster) and rank-matched to its
    values. For each feature's statistic (log-odds ratio; r), ``p_perm`` is the one-sided
    permutation p :math:`(1 + \\#\\{s_{null} \\ge s\\}) / (1 + n_{null})`, ``p_null`` the
    same p or, when fewer than 10 null values reach the observed one, a generalised Pareto
    tail fitted to the null's 250 largest values (Knijnenburg et al. 2009), which is not
    bounded below by :math:`1/(1+n_{null})` and so survives FDR over thousands of terms;
    ``q_null`` is the Benjamini-Hochberg adjustment of ``p_null`` across features.
    A feature is flagged ``significant`` when it is positively associated and survives both
    corrections, ``q < alpha`` and ``q_null < alpha`` (ROI), ``q_null < alpha`` (map).
    The false-positive rate on null ROIs and null maps is measured in
    ``benchmarks/bench_decode_null.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import _paths
from .._fdr import fdr_bh
from .._logging import get_logger
from .._validation import InputError, check_choice, check_in_range, check_positive_int
from ..io import derivatives as D
from . import _roi_hits
from ._lazy import lazy_module
from .cache_check import repair_cache
from .database import VOCABULARY_DATABASE, load_vocabulary
from .grid import load_image, roi_voxels, to_grid
from .maps import (
    DEFAULT_THRESHOLD,
    VOCABULARIES,
    FeatureMaps,
    begin_feature_maps,
    cached_feature_maps,
)

sp = lazy_module("scipy.sparse")  # imported on first use

if TYPE_CHECKING:  # imported where used: Decoder.fit (a cold map build) needs neither
    import nibabel as nib
    import pandas as pd

log = get_logger(__name__)

_MIN_INSIDE = 0.8
#: warn when more than this fraction of an ROI lies outside the brain mask
MAX_OUTSIDE_WARN = 0.05


def _fisher_exact(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray,
                  chunk: int = 256) -> np.ndarray:
    """Two-sided Fisher exact p of each 2 x 2 table [[a, b], [c, d]], vectorised.

    With the margins fixed, ``a`` is hypergeometric; the two-sided p is the probability of
    the tables no more likely than the observed one (relative tolerance 1e-7), as
    :func:`scipy.stats.fisher_exact` (equal to it to 1e-9, tested). The pmf is summed over
    the mode +- (distance of ``a`` + 12 SD + 10) -- beyond it the terms are below 1e-30 of
    the p -- from one log-gamma value per table and the ratio recurrence
    :math:`\\frac{P(x+1)}{P(x)} = \\frac{(K-x)(n-x)}{(x+1)(M-K-n+x+1)}`; scipy.special only
    (scipy.stats costs 0.35 s to import on the warm command line; one scipy call per table
    0.8 ms: 1.5 s for 2,003 terms).
    """
    from scipy.special import gammaln

    a, b, c, d = (np.atleast_1d(np.asarray(v, dtype=np.int64)) for v in (a, b, c, d))
    M, K, n = a + b + c + d, a + c, a + b  # studies, hits, selected studies
    lo, hi = np.maximum(0, n - (M - K)), np.minimum(n, K)
    mode = np.clip((n + 1) * (K + 1) // (M + 2), lo, hi)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(M > 0, K / np.maximum(M, 1), 0.0)
        sd = np.sqrt(n * frac * (1 - frac) * (M - n) / np.maximum(M - 1, 1))
    w = np.abs(a - mode) + np.ceil(12 * sd).astype(np.int64) + 10
    first, last = np.maximum(lo, mode - w), np.minimum(hi, mode + w)
    p = np.empty(a.shape)
    for s in range(0, a.size, chunk):
        sl = slice(s, s + chunk)
        x0, M_, K_, n_ = first[sl, None], M[sl, None], K[sl, None], n[sl, None]
        x = x0 + np.arange(int((last[sl] - first[sl]).max()) + 1)
        inside = x <= last[sl, None]
        xs = np.where(inside, x, x0)
        with np.errstate(divide="ignore", invalid="ignore"):  # past the support: masked
            step = (np.log((K_ - xs) * (n_ - xs)) - np.log((xs + 1) * (M_ - K_ - n_ + xs + 1)))
        step = np.where(inside, step, 0.0)
        logpmf = (gammaln(K_ + 1) - gammaln(x0 + 1) - gammaln(K_ - x0 + 1)
                  + gammaln(M_ - K_ + 1) - gammaln(n_ - x0 + 1) - gammaln(M_ - K_ - n_ + x0 + 1)
                  - gammaln(M_ + 1) + gammaln(n_ + 1) + gammaln(M_ - n_ + 1))
        logpmf = logpmf + np.concatenate([np.zeros_like(step[:, :1]),
                                          np.cumsum(step[:, :-1], axis=1)], axis=1)
        observed = np.take_along_axis(logpmf, (a[sl] - first[sl])[:, None], axis=1)
        keep = inside & (logpmf <= observed + np.log1p(1e-7))
        p[sl] = np.where(keep, np.exp(logpmf), 0.0).sum(axis=1)
    return np.minimum(p, 1.0)


def _chi2_and_fisher(a: np.ndarray, b: np.ndarray, c: np.ndarray,
                    d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pearson chi-square of each 2 x 2 table (for ``z``) and its two-sided Fisher exact p:
    (chi2, p, method). The chi-square p (with Fisher's test only below an expected count of
    5) rejected up to 4-6 times too often at the Benjamini-Hochberg thresholds of 50 topics
    or 2,003 terms (1e-4, 2.5e-5) with expected counts of 5-90 (exact null rates,
    benchmarks/bench_calibration.py); Fisher's test holds every level."""
    n = a + b + c + d
    r0, r1, c0, c1 = a + b, c + d, a + c, b + d
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = n * (a * d - b * c) ** 2 / (r0 * r1 * c0 * c1)
    chi2 = np.where(np.isfinite(chi2), chi2, 0.0)
    p = _fisher_exact(a, b, c, d)
    return chi2, p, np.full(np.shape(p), "fisher", dtype=object)


def _null_p(observed: np.ndarray, null: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-sided p of ``observed`` (n_features,) against ``null`` (n_features, n_null).

    Returns ``(p_perm, p_null)``: the permutation p :math:`(1 + \\#\\{s_0 \\ge s\\}) /
    (1 + n_0)` and the same p with a generalised Pareto tail where fewer than 10 null
    values reach the observed one (:func:`microvba.decode.null.tail_p`).
    """
    from . import null as _null

    null = np.where(np.isfinite(null), null, np.nan)
    if null.shape[1] == 0:
        nan = np.full(observed.shape, np.nan)
        return nan, nan
    return _null.empirical_p(observed, null), _null.tail_p(observed, null)


def _log_odds(a, b, c, d):
    return np.log((a + 0.5) * (d + 0.5) / ((b + 0.5) * (c + 0.5)))


class Decoder:
    """Neurosynth-style decoder of ROIs and maps over one vocabulary.

    Parameters
    ----------
    vocabulary
        ``"lda50"`` (Neurosynth v0.7 LDA-50 topics) or ``"terms"`` (NeuroQuery v1 terms).
    data_dir
        Folder with ``neurosynth/`` and ``neuroquery/`` (default ``$MICROVBA_DATA`` or
        ``~/.cache/microvba``).
    kernel_mm
        MKDA sphere radius (6 mm as Neurosynth; 10 mm as NiMARE's default).
    threshold
        Feature weight selecting a study; default 0.05 (``lda50``), 0.001 (``terms``).
    n_null
        Number of spatial-null resamples for ``p_null``.
    seed
        Seed of the spatial null.
    cache_dir
        Map cache root (default ``$MICROVBA_CACHE`` or ``~/.cache/microvba/maps``).
    alpha
        Level of the ``significant`` flag.

    Attributes
    ----------
    maps_
        The fitted :class:`~microvba.decode.maps.FeatureMaps`.
    """

    def __init__(self, vocabulary: str = "lda50", data_dir: str | Path | None = None,
                 kernel_mm: float = 6.0, threshold: float | None = None, n_null: int = 1000,
                 seed: int = 0, cache_dir: str | Path | None = None,
                 alpha: float = 0.05) -> None:
        self.vocabulary = vocabulary
        self.data_dir = data_dir
        self.kernel_mm = kernel_mm
        self.threshold = threshold
        self.n_null = n_null
        self.seed = seed
        self.cache_dir = cache_dir
        self.alpha = alpha

    # ------------------------------------------------------------------ fit
    def fit(self) -> Decoder:
        """Load the database and build (or load cached) feature maps."""
        check_choice("vocabulary", self.vocabulary, VOCABULARIES)
        if self.n_null != 0:
            check_positive_int("n_null", self.n_null)
        check_in_range("alpha", self.alpha, 0.0, 1.0)
        repair_cache(_paths.cache_dir(self.cache_dir), VOCABULARY_DATABASE[self.vocabulary])
        fm = cached_feature_maps(self.vocabulary, self.data_dir, kernel_mm=self.kernel_mm,
                                 threshold=self.threshold, cache_dir=self.cache_dir)
        if fm is None:  # first call with these parameters: read the database, build (the
            # maps may be computed in a child process while the ROI index is made here)
            db = load_vocabulary(self.vocabulary, self.data_dir, cache_dir=self.cache_dir)
            fm = begin_feature_maps(db, self.vocabulary, kernel_mm=self.kernel_mm,
                                    threshold=self.threshold, cache_dir=self.cache_dir)
        try:
            self._prepare(fm)
        finally:
            fm.complete()
        return self

    def _prepare(self, fm: FeatureMaps) -> None:
        """The decoder's index of the maps' peaks and weights (no z map needed)."""
        self.maps_: FeatureMaps = fm
        self.database_ = f"{fm.parameters['database']} v{fm.parameters['version']}"
        self.threshold_ = DEFAULT_THRESHOLD[self.vocabulary] if self.threshold is None \
            else float(self.threshold)
        fm = self.maps_
        self._offsets = _roi_hits.sphere_offsets(float(self.kernel_mm), fm.grid.resolution)
        self._pad = int(np.abs(self._offsets).max()) if self._offsets.size else 0
        self._padded = np.asarray(fm.grid.shape, np.int64) + 2 * self._pad
        self._peak_ptr, self._peak_studies = _roi_hits.peak_voxel_index(
            fm.peaks[:, :3], fm.peaks[:, 3], fm.grid.shape, self._pad)
        self._sel_t = fm.selection.T.tocsr().astype(np.float32)  # (features, studies)
        self._n_sel = np.diff(fm.selection.indptr).astype(float)
        w = sp.csc_matrix(fm.weights, dtype=np.float64)
        self._w = w
        mean = np.asarray(w.mean(axis=0)).ravel()
        sq = np.asarray(w.multiply(w).sum(axis=0)).ravel()
        self._w_norm = np.sqrt(np.maximum(sq - w.shape[0] * mean ** 2, 0.0))
        self._vox_ijk = np.argwhere(fm.grid.mask)

    def _check_fitted(self) -> FeatureMaps:
        if not hasattr(self, "maps_"):
            raise InputError("This Decoder is not fitted yet.", file="Decoder",
                             fix="Call .fit() before decoding.")
        return self.maps_

    # ------------------------------------------------------------------ ROI
    def _null_translations(self, roi: np.ndarray, rng: np.random.Generator
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n_null`` rigid translations of the ROI that stay >= 80% inside the brain.

        Targets are drawn uniformly among brain voxels, ``n_null`` at a time, and taken in
        the order drawn until ``n_null`` are accepted (at most ``50 n_null`` tries).

        Returns
        -------
        shifts
            (n, 3) voxel translations of the accepted null ROIs.
        kept
            (n_roi_voxels, n) bool: the ROI voxel lands inside the brain mask.
        idx
            (n_roi_voxels, n) in-mask voxel index where kept (-1 elsewhere).
        """
        fm = self.maps_
        ijk = self._vox_ijk[roi]
        centre = np.rint(ijk.mean(axis=0)).astype(np.int64)
        shape = np.asarray(fm.grid.shape)
        need = self.n_null
        shifts, idxs = [], []
        tries = 0
        chunk = max(1, 2_000_000 // max(roi.size, 1))
        ijk32, shape32 = ijk.astype(np.int32), shape.astype(np.int32)  # flat index < 2**31
        flat_roi = np.ravel_multi_index(ijk.T, tuple(shape)).astype(np.int32)
        strides = np.array([shape[1] * shape[2], shape[2], 1], np.int64)
        low, high = ijk.min(axis=0), ijk.max(axis=0)
        to_masked = fm.grid.flat_to_masked
        while need > 0 and tries < 50 * self.n_null:
            targets = self._vox_ijk[rng.integers(0, len(self._vox_ijk), size=self.n_null)]
            for lo in range(0, len(targets), chunk):
                shift = targets[lo:lo + chunk] - centre
                # copies that stay inside the grid: one flat offset each
                whole = np.all((low + shift >= 0) & (high + shift < shape), axis=1)
                idx = np.empty((len(shift), roi.size), dtype=to_masked.dtype)
                idx[whole] = to_masked[flat_roi[None, :]
                                       + (shift[whole] @ strides).astype(np.int32)[:, None]]
                if not whole.all():  # copies crossing the grid's edge: voxel by voxel
                    moved = ijk32[None, :, :] + shift[~whole, None, :].astype(np.int32)
                    inside = np.all((moved >= 0) & (moved < shape32), axis=2)
                    flat = (moved[..., 0] * shape32[1] + moved[..., 1]) * shape32[2] \
                        + moved[..., 2]
                    idx[~whole] = np.where(inside, to_masked[np.where(inside, flat, 0)], -1)
                ok = np.flatnonzero((idx >= 0).sum(axis=1) >= _MIN_INSIDE * roi.size)
                take = ok[:need]
                shifts.append(shift[take])
                idxs.append(idx[take])
                need -= take.size
                if need == 0:
                    tries += lo + int(take[-1]) + 1 if take.size else lo + len(shift)
                    break
            else:
                tries += len(targets)
        if need > 0:
            log.warning("only %d of %d null ROIs fit inside the brain", self.n_null - need,
                        self.n_null)
        idx = np.concatenate(idxs).T if idxs else np.zeros((roi.size, 0), np.int64)
        shift = np.concatenate(shifts) if shifts else np.zeros((0, 3), np.int64)
        return shift, idx >= 0, idx

    def _null_rois(self, roi: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        """The null ROIs of :meth:`_null_translations` as in-mask voxel index arrays."""
        _, kept, idx = self._null_translations(roi, rng)
        return [idx[kept[:, j], j] for j in range(idx.shape[1])]

    def _translation_args(self, roi: np.ndarray, shifts: np.ndarray, kept: np.ndarray
                          ) -> tuple:
        """Arguments of :mod:`microvba.decode._roi_hits` for the ROI (row 0, no shift, all
        voxels kept) and its translations."""
        shifts = np.vstack([np.zeros((1, 3), np.int64), shifts])
        kept = np.hstack([np.ones((roi.size, 1), bool), kept])
        return (self._vox_ijk[roi], shifts, kept, self._offsets, self._padded, self._pad,
                self._peak_ptr, self._peak_studies, self.maps_.n_studies)

    def _hits_translated(self, roi: np.ndarray, shifts: np.ndarray,
                         kept: np.ndarray) -> sp.csr_matrix:
        """(1 + n_null, n_studies) sparse 0/1 hits of the ROI and its translations, in
        numpy (:func:`microvba.decode._roi_hits.translated_hits`)."""
        return _roi_hits.translated_hits(*self._translation_args(roi, shifts, kept))

    def _hits(self, rois: list[np.ndarray]) -> np.ndarray:
        """(n_studies, n_rois) bool: study's spheres overlap each ROI (from the peaks,
        :func:`microvba.decode._kernels.roi_hits_peaks`)."""
        from . import _kernels  # numba; the decoding path uses _hits_translated

        fm = self.maps_
        ptr = np.zeros(len(rois) + 1, dtype=np.int64)
        ptr[1:] = np.cumsum([len(r) for r in rois])
        ijk = self._vox_ijk[np.concatenate(rois)]
        n_chunks = max(4 * (os.cpu_count() or 1), 1)
        out = _kernels.roi_hits_peaks(ijk, ptr, self._offsets, self._padded, self._pad,
                                      self._peak_ptr, self._peak_studies, fm.n_studies,
                                      min(n_chunks, len(rois)))
        return np.ascontiguousarray(out.T)

    def decode_roi(self, mask_img: str | Path | nib.Nifti1Image,
                   sort_by: str = D.LOG_ODDS,
                   voxels: tuple[np.ndarray, int] | None = None) -> pd.DataFrame:
        """Association of each feature with reporting activation in the ROI.

        ``sort_by`` picks the ranking statistic: ``"log_odds"`` (Neurosynth), ``"z"`` or
        ``"r"`` (NiMARE's ROIAssociationDecoder). ``voxels``: the ``(in-mask voxel
        indices, voxels outside the mask)`` of ``mask_img`` on this decoder's grid, when
        the caller already has them (:func:`microvba.decode.grid.check_roi_extent`).

        Returns
        -------
        DataFrame
            feature, label, n_selected, p_roi_given_feature, p_roi_given_other, log_odds,
            z (signed sqrt chi2), p, p_method, q, p_null, q_null, r (NiMARE-style),
            significant;
            sorted by ``sort_by`` (recorded in ``table.attrs["statistic"]``).
            ``table.attrs`` also holds ``roi_voxels`` (decoded, inside the brain mask),
            ``roi_voxels_outside_mask`` and ``roi_fraction_outside_mask`` (the ROI's voxels
            on the 2 mm grid that fall outside the brain mask and are dropped; a warning is
            logged above 5 %).
        """
        import pandas as pd

        check_choice("sort_by", sort_by, (D.LOG_ODDS, D.Z, D.R))
        fm = self._check_fitted()
        if voxels is None:
            roi, n_outside = roi_voxels(mask_img, fm.grid, return_outside=True)
        else:
            roi, n_outside = np.asarray(voxels[0], np.int64), int(voxels[1])
            if roi.size == 0 or roi.min() < 0 or roi.max() >= fm.grid.n_voxels:
                raise InputError("voxels= holds indices outside the decoder's brain grid.",
                                 file="parameter voxels",
                                 fix="Pass check_roi_extent(mask, decoder.maps_.grid), or "
                                     "leave voxels unset.")
        frac_outside = n_outside / (n_outside + roi.size)
        if frac_outside > MAX_OUTSIDE_WARN:
            log.warning("%d of the ROI's %d voxels (%.1f%%) lie outside the MNI brain mask "
                        "and are not decoded", n_outside, n_outside + roi.size,
                        100 * frac_outside)
        rng = np.random.default_rng(self.seed)
        if self.n_null:
            shifts, kept, _ = self._null_translations(roi, rng)
        else:
            shifts, kept = np.zeros((0, 3), np.int64), np.zeros((roi.size, 0), bool)
        # studies hit by the ROI and each translation, all and per feature's selection
        n_hit, a_all = _roi_hits.translated_counts(*self._translation_args(roi, shifts, kept),
                                                   selection_t=self._sel_t)
        n1 = self._n_sel[:, None]
        n2 = fm.n_studies - n1
        c_all = n_hit[None, :] - a_all
        lor_all = _log_odds(a_all, n1 - a_all, c_all, n2 - c_all)
        a, c = a_all[:, 0], c_all[:, 0]
        b, d = self._n_sel - a, (fm.n_studies - self._n_sel) - c
        chi2, p, method = _chi2_and_fisher(a, b, c, d)
        lor = lor_all[:, 0]
        null = lor_all[:, 1:]
        p_perm, p_null = _null_p(lor, null)
        q = fdr_bh(p)
        # the columns of derivatives.DECODING_COLUMNS, in order (significant added below)
        table = pd.DataFrame(dict(zip(D.DECODING_COLUMNS[:-1], (
            fm.features, fm.labels, self._n_sel.astype(int), a / self._n_sel,
            c / (fm.n_studies - self._n_sel), lor, np.sign(lor) * np.sqrt(chi2), p, method, q,
            p_perm, p_null, fdr_bh(p_null), self._roi_r(roi)), strict=True)))
        null_ok = (table[D.Q_NULL] < self.alpha) if null.shape[1] else True
        table[D.SIGNIFICANT] = (table[D.Q] < self.alpha) & null_ok & (table[D.LOG_ODDS] > 0)
        return self._finish(table, sort_by, roi_voxels=int(roi.size),
                            roi_voxels_outside_mask=int(n_outside),
                            roi_fraction_outside_mask=float(frac_outside),
                            studies_in_roi=int(n_hit[0]), n_null=null.shape[1])

    def _roi_r(self, roi: np.ndarray) -> np.ndarray:
        """NiMARE ROIAssociationDecoder r: corr(fraction of ROI covered, feature weight)."""
        fm = self.maps_
        cover = _roi_hits.cover_counts(self._vox_ijk[roi], self._offsets, self._padded,
                                       self._pad, self._peak_ptr, self._peak_studies,
                                       fm.n_studies) / roi.size
        cover -= cover.mean()  # centred cover: sum(cover) = 0, so cover @ (w - mean) = cover @ w
        den = np.sqrt((cover ** 2).sum()) * self._w_norm
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray(self._w.T @ cover).ravel() / den

    # ------------------------------------------------------------------ map
    def _map_dots(self, x: np.ndarray, voxels: np.ndarray | None = None) -> np.ndarray:
        """(n_maps, n_features) dot products of centred rows of ``x`` with association maps
        (restricted to ``voxels`` when given), reading the maps chunk by chunk."""
        fm = self.maps_
        n_feat = len(fm.features)
        dots = np.empty((x.shape[0], n_feat))
        step = max(1, int(2**27 // (4 * fm.grid.n_voxels)))
        for lo in range(0, n_feat, step):
            z = fm.z_association[lo:lo + step]
            z = np.asarray(z if voxels is None else z[:, voxels], dtype=np.float32)
            dots[:, lo:lo + step] = x @ z.T
        return dots

    def _null_sample(self) -> np.ndarray:
        """In-mask voxels with (i, j, k) multiples of 3: the 1-in-27 lattice (6 mm at 2 mm)
        on which the spatial null is evaluated."""
        ijk = self._vox_ijk
        return np.flatnonzero((ijk % 3 == 0).all(axis=1))

    def decode_map(self, stat_img: str | Path | nib.Nifti1Image) -> pd.DataFrame:
        """Pearson r of an unthresholded map with each feature's association z map.

        The null correlations are computed on a 1-in-27 lattice of in-mask voxels (smooth
        maps lose little) and compared with the observed r on the same voxels.

        Returns
        -------
        DataFrame
            feature, label, n_selected, r, p_null, q_null (BH over features), significant;
            sorted by r.
        """
        import nibabel as nib
        import pandas as pd

        fm = self._check_fitted()
        img = load_image(stat_img, "statistic map")
        x = to_grid(img, fm.grid, "continuous").astype(np.float64)
        if not np.any(x != x[0]):
            raise InputError("The statistic map is constant inside the brain mask.",
                             file=str(stat_img) if not isinstance(stat_img, nib.Nifti1Image)
                             else "<statistic map>",
                             fix="Pass an unthresholded statistic map in MNI space.")
        xc = x - x.mean()
        with np.errstate(divide="ignore", invalid="ignore"):
            r = self._map_dots(xc[None, :].astype(np.float32))[0] / (
                np.sqrt((xc ** 2).sum()) * fm.z_norm)
        p_perm = p_null = np.full(len(fm.features), np.nan)
        if self.n_null:
            p_perm, p_null = self._map_null_p(x)
        # the columns of derivatives.MAP_DECODING_COLUMNS, in order
        table = pd.DataFrame(dict(zip(D.MAP_DECODING_COLUMNS[:-1], (
            fm.features, fm.labels, self._n_sel.astype(int), r, p_perm, p_null,
            fdr_bh(p_null)), strict=True)))
        table[D.SIGNIFICANT] = (table[D.Q_NULL] < self.alpha) & (table[D.R] > 0)
        return self._finish(table, D.R, n_null=self.n_null)

    def _map_null_p(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(p_perm, p_null) of each feature's r against spatially constrained surrogates of
        the map (:func:`microvba.decode.null.surrogate_maps`), on the 1-in-27 lattice."""
        from . import null as _null

        fm = self.maps_
        sub = self._null_sample()
        vol = np.zeros(fm.grid.shape, dtype=np.float32)
        vol[fm.grid.mask] = x
        ijk = self._vox_ijk[sub]
        rng = np.random.default_rng(self.seed)
        surrogates, info = _null.surrogate_maps(vol, fm.grid.mask, ijk, self.n_null, rng)
        self.null_info_ = info
        xs = np.vstack([vol[tuple(ijk.T)][None, :], surrogates]).astype(np.float32)
        xs -= xs.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
        xnorm = np.sqrt(np.einsum("ij,ij->i", xs, xs, dtype=np.float64))
        dots = self._map_dots(xs, sub)
        with np.errstate(divide="ignore", invalid="ignore"):
            rs = dots / (xnorm[:, None] * self._lattice_znorm(sub)[None, :])
        return _null_p(rs[0], rs[1:].T)

    def _lattice_znorm(self, sub: np.ndarray) -> np.ndarray:
        """Centred norm of each association map on the null lattice ``sub`` (memoised)."""
        cached = getattr(self, "_znorm_lattice", None)
        if cached is not None:
            return cached
        fm = self.maps_
        self._znorm_lattice = np.concatenate([
            np.sqrt(((c - c.mean(axis=1, keepdims=True)) ** 2).sum(axis=1))
            for c in (np.asarray(fm.z_association[lo:lo + 256][:, sub], dtype=np.float64)
                      for lo in range(0, len(fm.features), 256))])
        return self._znorm_lattice

    def _finish(self, table: pd.DataFrame, statistic: str, **attrs) -> pd.DataFrame:
        table = table.sort_values(statistic, ascending=False, kind="stable",
                                  na_position="last").reset_index(drop=True)
        table.attrs.update({"statistic": statistic, "vocabulary": self.vocabulary,
                            "database": self.database_, "kernel_mm": float(self.kernel_mm),
                            "threshold": self.threshold_, "seed": self.seed, **attrs})
        return table
