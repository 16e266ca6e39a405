"""ROI hits of an ROI and its translated copies (the spatial null), in numpy.

A study *hits* an ROI when one of its MKDA spheres overlaps it, i.e. when it has a peak in
the ROI dilated by the sphere :math:`S` (offsets ``o`` with ``|o| <= kernel_mm``):
:math:`D(R) = \\bigcup_{v \\in R} (v + S)`. The null ROIs are rigid translations of the
observed ROI :math:`R`, clipped to the brain mask: :math:`R_t = \\{v + t : v \\in R,
v + t \\in \\mathrm{mask}\\}`. Their dilations are translations of :math:`D(R)` restricted to
the points that a kept voxel covers,

.. math:: D(R_t) = \\{d + t : d \\in D(R),\\ \\exists v \\in R \\text{ kept},\\ d - v \\in S\\},

so :math:`D(R)` and the sparse cover matrix :math:`M_{dv} = [d - v \\in S]` are built once,
and each null ROI costs one sparse product for its kept voxels (none when nothing is
clipped) and a lookup of :math:`|D(R)|` voxels in the voxel -> peaks index. The relation is
the one of :func:`microvba.decode._kernels.roi_hits_peaks` (asserted equal in the tests);
this form needs no compiled code, so a warm ``microvba decode --roi`` does not import numba.

The hits are formed block by block (:func:`hit_blocks`, a few dozen null ROIs at a time, so
the temporaries stay in cache and need no fresh pages): the translated points of
:math:`D(R)` are looked up in the voxel -> peaks index, the studies of their peaks set in a
dense (studies x ROIs) 0/1 block, and a decoder needs only each block's column sums (studies
hit) and its product with the feature selection (selected studies hit,
:func:`translated_counts`): about 4.5 million lookups and 9 million peak entries for a
1,000-voxel ROI and 1,000 translations, without building the sparse hit matrix.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ._lazy import lazy_module

sp = lazy_module("scipy.sparse")  # imported on first use: the map build needs none


def sphere_offsets(radius_mm: float, voxel_mm: float) -> np.ndarray:
    """(k, 3) integer voxel offsets within ``radius_mm`` of a voxel centre (inclusive).

    The same rule as NiMARE's ``sphere_kernel_offsets``: offset ``d`` is kept when
    ``||d * voxel_mm|| <= radius_mm``.
    """
    n = int(radius_mm // voxel_mm)
    rng = np.arange(-n, n + 1)
    cube = np.stack(np.meshgrid(rng, rng, rng, indexing="ij"), axis=-1).reshape(-1, 3)
    keep = np.sqrt(((cube * voxel_mm) ** 2).sum(axis=1)) <= radius_mm + 1e-9
    return np.ascontiguousarray(cube[keep], dtype=np.int64)


def peak_voxel_index(ijk: np.ndarray, peak_study: np.ndarray, shape, pad: int,
                     unique: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """CSR (ptr, studies) over the voxels of the grid padded by ``pad`` on every side: the
    studies with a peak in each voxel (one entry per peak, in peak order; with ``unique``
    each study once per voxel, in ascending order). Peaks further than ``pad`` voxels
    outside the grid cannot reach it and are left out.

    ``unique`` serves the map build: several peaks of a study in one voxel (12 % of
    Neurosynth's after rounding to 2 mm) enter and leave a sphere together, so one stands
    for all in :func:`microvba.decode._kernels.feature_active_counts`.
    """
    shape = np.asarray(shape, dtype=np.int64)
    padded = shape + 2 * pad
    ijk = np.asarray(ijk, dtype=np.int64) + pad
    keep = np.ones(ijk.shape[0], dtype=bool)
    for axis in range(3):
        keep &= (ijk[:, axis] >= 0) & (ijk[:, axis] < padded[axis])
    key = np.ravel_multi_index(ijk[keep].T, tuple(padded))
    peak_study = np.asarray(peak_study)
    if unique and np.all(peak_study[1:] >= peak_study[:-1]):
        # peaks in study order (a Database's): a stable sort by voxel leaves each voxel's
        # studies ascending, so the (voxel, study) pairs are sorted without sorting them
        order = _stable_order(key)
        key, studies = key[order], peak_study[keep].astype(np.int32)[order]
        if key.size:
            first = np.r_[True, (key[1:] != key[:-1]) | (studies[1:] != studies[:-1])]
            key, studies = key[first], studies[first]
    elif unique:  # (voxel, study) pairs, sorted and each once: np.unique by a radix sort
        n = max(int(peak_study.max(initial=-1)) + 1, 1)
        pair = key * n + peak_study[keep].astype(np.int64)
        pair = pair[_stable_order(pair)]
        pair = pair[np.r_[True, pair[1:] != pair[:-1]]] if pair.size else pair
        key, studies = np.divmod(pair, n)
        studies = studies.astype(np.int32)
    else:
        studies = peak_study.astype(np.int32)[keep][_stable_order(key)]
    ptr = np.zeros(int(np.prod(padded)) + 1, dtype=np.int64)
    np.cumsum(np.bincount(key, minlength=ptr.size - 1), out=ptr[1:])
    return ptr, studies


def _stable_order(key: np.ndarray) -> np.ndarray:
    """``np.argsort(key, kind="stable")`` of non-negative integer keys, as a least
    significant digit radix sort on 16-bit digits (numpy's stable sort of 16-bit integers
    is a radix sort: linear, about 4x faster than its merge sort of 64-bit keys)."""
    key = np.asarray(key, dtype=np.int64)
    order = np.arange(key.size)
    rest = key
    while True:
        order = order[np.argsort((rest[order] & 0xFFFF).astype(np.uint16), kind="stable")]
        rest = rest >> 16
        if not rest.any():
            return order


def _flat(ijk: np.ndarray, padded: np.ndarray) -> np.ndarray:
    return (ijk[..., 0] * padded[1] + ijk[..., 1]) * padded[2] + ijk[..., 2]


def _expand(flat: np.ndarray, vox_ptr: np.ndarray, studies: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """(row of ``flat``, study) of every peak in the voxels ``flat`` of the padded grid."""
    lo = vox_ptr[flat]
    cnt = vox_ptr[flat + 1] - lo
    rows = np.flatnonzero(cnt)
    lo, cnt = lo[rows], cnt[rows]
    total = int(cnt.sum())
    start = np.repeat(lo - (np.cumsum(cnt) - cnt), cnt) + np.arange(total)
    return np.repeat(rows, cnt), studies[start]


def _dilation(roi_ijk: np.ndarray, offsets: np.ndarray, padded: np.ndarray, pad: int
              ) -> tuple[np.ndarray, sp.csr_matrix]:
    """:math:`D(R)` as sorted flat indices of the padded grid, and the (|D(R)|, |R|) cover
    matrix :math:`M_{dv} = [d - v \\in S]`."""
    n_vox, n_off = roi_ijk.shape[0], offsets.shape[0]
    pts = _flat(roi_ijk[:, None, :] + offsets[None, :, :] + pad, padded).ravel()
    d_flat, inv = np.unique(pts, return_inverse=True)
    cover = sp.csr_matrix((np.ones(pts.size, np.float32),
                           (inv.ravel(), np.repeat(np.arange(n_vox), n_off))),
                          shape=(d_flat.size, n_vox))
    return d_flat, cover


def hit_blocks(roi_ijk: np.ndarray, shifts: np.ndarray, kept: np.ndarray,
               offsets: np.ndarray, padded: np.ndarray, pad: int, vox_ptr: np.ndarray,
               studies: np.ndarray, n_studies: int, block_points: int = 1 << 18
               ) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(lo, hi, block)``: ``block`` (n_studies, hi - lo) float32 0/1, study ``s``
    hits ROI ``j`` (``lo <= j < hi``) = voxels ``roi_ijk[kept[:, j]] + shifts[j]``.

    ``vox_ptr``/``studies``: :func:`peak_voxel_index` on the grid padded by ``pad`` >= the
    largest offset; ``padded`` its shape. A block holds about ``block_points`` translated
    points of :math:`D(R)` (module docstring); the array yielded is reused by the next
    block, so use it before asking for the next one.
    """
    roi_ijk = np.asarray(roi_ijk, np.int64)
    padded = np.asarray(padded, np.int64)
    n_rois = shifts.shape[0]
    d_flat, cover = _dilation(roi_ijk, offsets, padded, pad)
    n_d = d_flat.size
    shift_flat = _flat(np.asarray(shifts, np.int64), padded)
    vox_ptr = np.asarray(vox_ptr, np.intp)  # index arrays in numpy's own index type
    vox_count = np.diff(vox_ptr)
    studies = np.asarray(studies, np.intp)
    kept = np.asarray(kept, bool)
    clipped = ~kept.all(axis=0)
    step = max(1, min(n_rois, block_points // max(n_d, 1)))
    block = np.zeros((n_studies, step), dtype=np.float32)
    for lo in range(0, n_rois, step):
        hi = min(n_rois, lo + step)
        nb = hi - lo
        flat = d_flat[None, :] + shift_flat[lo:hi, None]  # (nb, |D(R)|)
        rows = np.flatnonzero(clipped[lo:hi])
        if rows.size:  # points of clipped copies may leave the padded grid: not counted
            np.clip(flat, 0, vox_count.size - 1, out=flat)
        start = vox_ptr[flat]
        count = vox_count[flat]  # peak entries of each (ROI, point) pair
        if rows.size:  # clipped copies: only the points that a kept voxel covers
            count[rows] *= ((cover @ kept[:, lo + rows].astype(np.float32)) > 0).T
        row_total = count.sum(axis=1)  # peak entries of each ROI of the block
        count = count.ravel()
        pair = np.flatnonzero(count)
        count, start = count[pair], start.ravel()[pair]
        # the entries start[k] .. start[k] + count[k] - 1 of every pair k, in pair order, as
        # a running sum: +1 within a range, a jump to start[k] where range k begins
        step_by = np.ones(int(row_total.sum()), dtype=np.intp)
        if step_by.size:
            begin = np.cumsum(count[:-1])
            step_by[0] = start[0]
            step_by[begin] = start[1:] - start[:-1] - count[:-1] + 1
        target = studies[np.cumsum(step_by)]
        target *= nb
        # pairs are in ROI order, so each ROI's entries are one run
        target += np.repeat(np.arange(nb), row_total)
        if nb == step:
            out = block
            out.fill(0.0)
        else:  # the last, narrower block
            out = np.zeros((n_studies, nb), dtype=np.float32)
        out.ravel()[target] = 1.0
        yield lo, hi, out


def translated_counts(roi_ijk: np.ndarray, shifts: np.ndarray, kept: np.ndarray,
                      offsets: np.ndarray, padded: np.ndarray, pad: int,
                      vox_ptr: np.ndarray, studies: np.ndarray, n_studies: int,
                      selection_t: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Studies hit by each ROI of :func:`hit_blocks`, all and per feature.

    ``selection_t``: (n_features, n_studies) 0/1 float32 (the feature selection,
    transposed). Returns ``n_hit`` (n_rois,) and ``a`` (n_features, n_rois): the number of
    studies, and of each feature's selected studies, that hit the ROI (exact integers as
    float64).
    """
    n_rois = shifts.shape[0]
    n_hit = np.empty(n_rois)
    a = np.empty((selection_t.shape[0], n_rois))
    for lo, hi, block in hit_blocks(roi_ijk, shifts, kept, offsets, padded, pad, vox_ptr,
                                    studies, n_studies):
        n_hit[lo:hi] = block.sum(axis=0)
        a[:, lo:hi] = selection_t @ block
    return n_hit, a


def translated_hits(roi_ijk: np.ndarray, shifts: np.ndarray, kept: np.ndarray,
                    offsets: np.ndarray, padded: np.ndarray, pad: int, vox_ptr: np.ndarray,
                    studies: np.ndarray, n_studies: int) -> sp.csr_matrix:
    """(n_rois, n_studies) sparse 0/1 float32 hits of :func:`hit_blocks` (for tests and
    benchmarks; decoding needs only :func:`translated_counts`)."""
    blocks = [sp.csr_matrix(block.T) for _, _, block in
              hit_blocks(roi_ijk, shifts, kept, offsets, padded, pad, vox_ptr, studies,
                         n_studies)]
    return sp.vstack(blocks, format="csr") if len(blocks) > 1 else blocks[0]


def cover_counts(roi_ijk: np.ndarray, offsets: np.ndarray, padded: np.ndarray, pad: int,
                 vox_ptr: np.ndarray, studies: np.ndarray, n_studies: int) -> np.ndarray:
    """(n_studies,) number of ROI voxels inside a study's spheres, each (study, voxel) pair
    counted once (:func:`microvba.decode._kernels.roi_cover_peaks` in numpy)."""
    d_flat, cover = _dilation(np.asarray(roi_ijk, np.int64), offsets,
                              np.asarray(padded, np.int64), pad)
    point, hit = _expand(d_flat, vox_ptr, studies)  # the peaks in D(R)
    peaks = sp.csr_matrix((np.ones(hit.size, np.float32), (hit, point)),
                          shape=(n_studies, d_flat.size))
    # (studies, ROI voxels): positive where a peak of the study lies in the voxel's sphere
    covered = peaks @ cover
    return np.diff(covered.indptr).astype(np.int64)
