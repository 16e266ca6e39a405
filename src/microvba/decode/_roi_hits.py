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
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


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


def peak_voxel_index(ijk: np.ndarray, peak_study: np.ndarray, shape, pad: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """CSR (ptr, studies) over the voxels of the grid padded by ``pad`` on every side: the
    studies with a peak in each voxel (one entry per peak). Peaks further than ``pad``
    voxels outside the grid cannot reach it and are left out."""
    shape = np.asarray(shape, dtype=np.int64)
    padded = shape + 2 * pad
    ijk = np.asarray(ijk, dtype=np.int64) + pad
    keep = np.all((ijk >= 0) & (ijk < padded), axis=1)
    key = np.ravel_multi_index(ijk[keep].T, tuple(padded))
    order = np.argsort(key, kind="stable")
    studies = np.asarray(peak_study, dtype=np.int32)[keep][order]
    ptr = np.searchsorted(key[order], np.arange(int(np.prod(padded)) + 1)).astype(np.int64)
    return ptr, studies


def peak_matrix(vox_ptr: np.ndarray, studies: np.ndarray, n_studies: int) -> sp.csr_matrix:
    """The voxel -> studies index of :func:`peak_voxel_index` as a (padded voxels x
    studies) CSR matrix (entry: number of the study's peaks in the voxel)."""
    return sp.csr_matrix((np.ones(studies.size, np.float32), studies, vox_ptr),
                         shape=(vox_ptr.size - 1, n_studies))


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


def translated_hits(roi_ijk: np.ndarray, shifts: np.ndarray, kept: np.ndarray,
                    offsets: np.ndarray, padded: np.ndarray, pad: int, vox_ptr: np.ndarray,
                    studies: np.ndarray, n_studies: int, max_pairs: int = 1 << 23,
                    peaks: sp.csr_matrix | None = None) -> sp.csr_matrix:
    """(n_rois, n_studies) sparse 0/1 float32: ROI ``j`` = voxels
    ``roi_ijk[kept[:, j]] + shifts[j]`` (grid voxels; the kept ones are inside the brain
    mask) overlaps a sphere of the study.

    ``vox_ptr``/``studies``: :func:`peak_voxel_index` on the grid padded by ``pad`` >= the
    largest offset; ``padded`` its shape; ``peaks`` the same index as a sparse matrix
    (:func:`peak_matrix`), when the caller keeps one.

    The hits are the nonzeros of the product of the sparse dilated-ROI x voxel matrix
    with the voxel x study peak matrix.
    """
    roi_ijk = np.asarray(roi_ijk, np.int64)
    padded = np.asarray(padded, np.int64)
    n_vox, n_off, n_rois = roi_ijk.shape[0], offsets.shape[0], shifts.shape[0]
    pts = _flat(roi_ijk[:, None, :] + offsets[None, :, :] + pad, padded).ravel()
    d_flat, inv = np.unique(pts, return_inverse=True)
    cover = sp.csr_matrix((np.ones(pts.size, np.float32),
                           (inv.ravel(), np.repeat(np.arange(n_vox), n_off))),
                          shape=(d_flat.size, n_vox))
    shift_flat = _flat(np.asarray(shifts, np.int64), padded)
    kept = np.asarray(kept, bool)
    clipped = ~kept.all(axis=0)
    n_padded = int(np.prod(padded))
    if peaks is None:
        peaks = peak_matrix(vox_ptr, studies, n_studies)
    blocks = []
    step = max(1, max_pairs // max(d_flat.size, 1))
    for lo in range(0, n_rois, step):
        hi = min(n_rois, lo + step)
        covered = np.ones((hi - lo, d_flat.size), dtype=bool)
        cols = np.flatnonzero(clipped[lo:hi])
        if cols.size:
            covered[cols] = ((cover @ kept[:, lo + cols].astype(np.float32)) > 0).T
        # row j of the dilated sets: d_flat (sorted) + shift, so each row stays sorted
        j_idx, d_idx = np.nonzero(covered)
        indptr = np.zeros(hi - lo + 1, dtype=np.int64)
        np.cumsum(covered.sum(axis=1), out=indptr[1:])
        dilated = sp.csr_matrix((np.ones(d_idx.size, np.float32),
                                 d_flat[d_idx] + shift_flat[lo + j_idx], indptr),
                                shape=(hi - lo, n_padded))
        blocks.append(dilated @ peaks)
    hits = sp.vstack(blocks, format="csr") if len(blocks) > 1 else blocks[0].tocsr()
    hits.data[:] = 1.0  # a study hits or not, however many of its peaks fall inside
    return hits


def cover_counts(roi_ijk: np.ndarray, offsets: np.ndarray, padded: np.ndarray, pad: int,
                 vox_ptr: np.ndarray, studies: np.ndarray, n_studies: int) -> np.ndarray:
    """(n_studies,) number of ROI voxels inside a study's spheres, each (study, voxel) pair
    counted once (:func:`microvba.decode._kernels.roi_cover_peaks` in numpy)."""
    roi_ijk = np.asarray(roi_ijk, np.int64)
    n_off = offsets.shape[0]
    pts = _flat(roi_ijk[:, None, :] + offsets[None, :, :] + pad,
                np.asarray(padded, np.int64)).ravel()
    rows, hit = _expand(pts, vox_ptr, studies)
    pair = np.unique((rows // n_off).astype(np.int64) * n_studies + hit)
    return np.bincount(pair % n_studies, minlength=n_studies).astype(np.int64)
