"""Compiled loops of the decoder: MKDA sphere incidence, per-feature counts, chi-square maps.

All loops run over CSR-style (indptr, indices) arrays; none allocates per voxel.
"""

from __future__ import annotations

import math

import numba
import numpy as np

# numpy helpers, here for the callers that import them from this module
from ._roi_hits import peak_voxel_index, sphere_offsets  # noqa: F401


@numba.njit(cache=True, nogil=True)
def _study_voxels(ijk, lo, hi, offsets, shape, flat_to_masked, stamp, tag, out):
    """Write the distinct in-mask voxels of one study's spheres to ``out``; return count."""
    nx, ny, nz = shape[0], shape[1], shape[2]
    n = 0
    for p in range(lo, hi):
        i0, j0, k0 = ijk[p, 0], ijk[p, 1], ijk[p, 2]
        for o in range(offsets.shape[0]):
            i = i0 + offsets[o, 0]
            j = j0 + offsets[o, 1]
            k = k0 + offsets[o, 2]
            if i < 0 or j < 0 or k < 0 or i >= nx or j >= ny or k >= nz:
                continue
            v = flat_to_masked[(i * ny + j) * nz + k]
            if v < 0 or stamp[v] == tag:
                continue
            stamp[v] = tag
            out[n] = v
            n += 1
    return n


@numba.njit(cache=True, nogil=True, parallel=True)
def sphere_incidence(ijk, peak_ptr, offsets, shape, flat_to_masked, n_voxels, n_chunks):
    """CSR (indptr, indices) of the study x voxel MKDA incidence matrix.

    Study ``s`` covers voxel ``v`` when ``v`` lies within the sphere of any of its peaks
    (``peak_ptr[s]:peak_ptr[s+1]`` rows of ``ijk``). Two passes over the spheres (count,
    then fill), each study deduplicated with a per-thread stamp array; indices within a row
    are in discovery order (not sorted), which scipy and the kernels here accept.
    """
    n_studies = peak_ptr.shape[0] - 1
    counts = np.zeros(n_studies, dtype=np.int64)
    max_peaks = 0
    for s in range(n_studies):
        max_peaks = max(max_peaks, peak_ptr[s + 1] - peak_ptr[s])
    cap = max_peaks * offsets.shape[0]
    bounds = np.linspace(0, n_studies, n_chunks + 1).astype(np.int64)
    for c in numba.prange(n_chunks):
        stamp = np.full(n_voxels, -1, dtype=np.int32)
        buf = np.empty(cap, dtype=np.int32)
        for s in range(bounds[c], bounds[c + 1]):
            counts[s] = _study_voxels(ijk, peak_ptr[s], peak_ptr[s + 1], offsets, shape,
                                      flat_to_masked, stamp, s, buf)
    indptr = np.zeros(n_studies + 1, dtype=np.int64)
    for s in range(n_studies):
        indptr[s + 1] = indptr[s] + counts[s]
    indices = np.empty(indptr[-1], dtype=np.int32)
    for c in numba.prange(n_chunks):
        stamp = np.full(n_voxels, -1, dtype=np.int32)
        for s in range(bounds[c], bounds[c + 1]):
            _study_voxels(ijk, peak_ptr[s], peak_ptr[s + 1], offsets, shape, flat_to_masked,
                          stamp, s, indices[indptr[s]:indptr[s + 1]])
    return indptr, indices


@numba.njit(cache=True, nogil=True, inline="always")
def _window_update(col, lo, hi, step, vox_ptr, studies, feat_ptr, feat_idx, mult, acc):
    """Add (``step`` = 1) or remove (-1) the peaks of padded voxels ``col + lo..hi`` (one
    z column) from the window; a study's features (``feat_idx[feat_ptr[s]:feat_ptr[s+1]]``)
    change only when its multiplicity crosses zero. Returns the change in the number of
    active studies."""
    dn = 0
    for z in range(lo, hi + 1):
        flat = col + z
        for q in range(vox_ptr[flat], vox_ptr[flat + 1]):
            s = studies[q]
            before = mult[s]
            mult[s] = before + step
            if (before == 0 and step > 0) or (before == 1 and step < 0):
                dn += step
                for r in range(feat_ptr[s], feat_ptr[s + 1]):
                    acc[feat_idx[r]] += step
    return dn


@numba.njit(cache=True, nogil=True, parallel=True)
def feature_active_counts(rows, disc, pad, padded_shape, flat_to_masked, grid_shape, vox_ptr,
                          studies, feat_ptr, feat_idx, mult_like, counts, n_active, n_chunks):
    """Fill ``counts`` (n_features, n_voxels) int32 and ``n_active`` (n_voxels,) from the
    peaks, without the study x voxel incidence matrix.

    A study is active at voxel ``v`` when it has a peak at ``v + o`` for an offset ``o`` of
    the symmetric sphere (the MKDA incidence of :func:`sphere_incidence`, seen from the
    voxel). The sphere is a set of z columns: ``disc[c] = (di, dj, h)``, offsets
    ``(di, dj, -h..h)``. Along each grid row ``rows[r] = (i, j, k_first, k_last)`` (the
    row's in-mask extent) a window slides in z: moving from ``k`` to ``k + 1`` removes the
    peaks at ``k - h`` and adds those at ``k + 1 + h`` in every column, and a per-study
    multiplicity (peaks of the study inside the sphere) tells when a study enters
    (0 -> 1) or leaves (1 -> 0) the active set; only then are its features
    (``feat_idx[feat_ptr[s]:feat_ptr[s+1]]`` of study ``s = studies[q]`` of peak ``q``,
    over the voxel -> peaks index ``vox_ptr`` of the grid padded by ``pad``: a study x
    feature CSR list of ~100 kB, cache-resident) added to or removed from the running
    per-feature counts. At each in-mask voxel (``flat_to_masked``
    >= 0) the counts are :math:`(L^\\top A)_{\\cdot v}` exactly, with the binary study x
    feature list matrix :math:`L`, and ``n_active[v]`` the number of active studies. Rows
    are independent: threads share only the read-only inputs. ``mult_like`` (zeros, one
    per study) gives the multiplicities' type: int16 when no study has 32,768 peaks (28 kB
    per thread instead of 57 kB for Neurosynth: it stays in the L1 cache).
    """
    n_features = counts.shape[0]
    ny, nz = grid_shape[1], grid_shape[2]
    py, pz = padded_shape[1], padded_shape[2]
    n_rows = rows.shape[0]
    n_disc = disc.shape[0]
    bounds = np.linspace(0, n_rows, n_chunks + 1).astype(np.int64)
    for c in numba.prange(n_chunks):
        mult = np.zeros_like(mult_like)
        acc = np.zeros(n_features, dtype=np.int32)
        cols = np.empty(n_disc, dtype=np.int64)
        for r in range(bounds[c], bounds[c + 1]):
            i, j, k_first, k_last = rows[r, 0], rows[r, 1], rows[r, 2], rows[r, 3]
            for d in range(n_disc):
                cols[d] = ((i + pad + disc[d, 0]) * py + (j + pad + disc[d, 1])) * pz + pad
            n = 0
            for d in range(n_disc):
                h = disc[d, 2]
                n += _window_update(cols[d], k_first - h, k_first + h, 1, vox_ptr, studies,
                                    feat_ptr, feat_idx, mult, acc)
            for k in range(k_first, k_last + 1):
                if k > k_first:
                    for d in range(n_disc):
                        h = disc[d, 2]
                        n += _window_update(cols[d], k - 1 - h, k - 1 - h, -1, vox_ptr,
                                            studies, feat_ptr, feat_idx, mult, acc)
                        n += _window_update(cols[d], k + h, k + h, 1, vox_ptr, studies,
                                            feat_ptr, feat_idx, mult, acc)
                m = flat_to_masked[(i * ny + j) * nz + k]
                if m >= 0:
                    n_active[m] = n
                    for f in range(n_features):
                        counts[f, m] = acc[f]
            for d in range(n_disc):  # empty the window: mult and acc back to zero
                h = disc[d, 2]
                n += _window_update(cols[d], k_last - h, k_last + h, -1, vox_ptr, studies,
                                    feat_ptr, feat_idx, mult, acc)


@numba.njit(cache=True, nogil=True, parallel=True)
def chi2_z_maps(n_sel_active, n_active, n_selected, n_studies, z_assoc, z_unif, mean, norm,
                stats):
    """Association and uniformity z maps from counts (closed-form chi-square, MKDA),
    written to ``z_assoc`` and ``z_unif`` (float32, the shape of ``n_sel_active``; buffers
    reused from chunk to chunk, as fresh large arrays cost page faults); with ``stats``,
    also ``mean``/``norm`` of each stored association row as
    :func:`mean_and_centred_norm` computes them (the same float64 sums in the same order,
    so the same bits), without a second compiled kernel to load.

    For feature :math:`F` with :math:`n_1` selected and :math:`n_2 = n - n_1` other studies,
    and at each voxel :math:`a` selected and :math:`b` other studies active:

    * association (reverse inference, Neurosynth / NiMARE ``MKDAChi2``): the 2 x 2 test of
      independence of selection and activation,

      .. math:: \\chi^2 = \\frac{n (a n_2 - b n_1)^2}{(a + b)(n - a - b) n_1 n_2},
                \\quad z = \\operatorname{sign}(a/n_1 - b/n_2) \\sqrt{\\chi^2},

      set to 0 where no or every study is active;
    * uniformity (forward inference): one-way test of :math:`a` against its mean over
      voxels :math:`\\bar a`,
      :math:`\\chi^2 = (a - \\bar a)^2 n_1 / (\\bar a (n_1 - \\bar a))`, signed by
      :math:`a - \\bar a`.
    """
    n_features, n_voxels = n_sel_active.shape
    n = float(n_studies)
    for f in numba.prange(n_features):
        n1 = float(n_selected[f])
        n2 = n - n1
        a_bar = 0.0
        for v in range(n_voxels):
            a_bar += n_sel_active[f, v]
        a_bar /= n_voxels
        den_u = a_bar * (n1 - a_bar)
        for v in range(n_voxels):
            a = float(n_sel_active[f, v])
            b = float(n_active[v]) - a
            row0 = a + b
            den = row0 * (n - row0) * n1 * n2
            if den > 0.0:
                d = a * n2 - b * n1
                chi2 = n * d * d / den
                z = math.sqrt(chi2)
                z_assoc[f, v] = z if d > 0 else (-z if d < 0 else 0.0)
            else:
                z_assoc[f, v] = 0.0
            if den_u > 0.0:
                d = a - a_bar
                z = math.sqrt(d * d * n1 / den_u)
                z_unif[f, v] = z if d > 0 else (-z if d < 0 else 0.0)
            else:
                z_unif[f, v] = 0.0
        if stats:
            s = 0.0
            for v in range(n_voxels):
                s += float(z_assoc[f, v])
            m = s / n_voxels
            ss = 0.0
            for v in range(n_voxels):
                d = float(z_assoc[f, v]) - m
                ss += d * d
            mean[f] = m
            norm[f] = math.sqrt(ss)


@numba.njit(cache=True, nogil=True, parallel=True)
def fdr_z_thresholds(z, q):
    """Per row of ``z``: the smallest |z| surviving Benjamini-Hochberg FDR ``q`` (two-sided
    normal p), or ``inf`` when no voxel survives.

    Only voxels with :math:`p \\le q` can survive (the BH bound :math:`kq/m \\le q`), and
    they are the top of the ranking, so only they are sorted.
    """
    n_features, m = z.shape
    out = np.full(n_features, np.inf)
    z_q = _norm_isf_two_sided(q)
    for f in numba.prange(n_features):
        cand = np.empty(m, dtype=np.float64)
        n = 0
        for v in range(m):
            a = abs(float(z[f, v]))
            if a >= z_q:
                cand[n] = a
                n += 1
        top = np.sort(cand[:n])[::-1]
        for k in range(n - 1, -1, -1):
            p = math.erfc(top[k] / math.sqrt(2.0))
            if p <= (k + 1) * q / m:
                out[f] = top[k]
                break
    return out


@numba.njit(cache=True)
def _norm_isf_two_sided(q):
    """|z| with two-sided normal p equal to ``q`` (bisection on erfc; a few ulps)."""
    lo, hi = 0.0, 40.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if math.erfc(mid / math.sqrt(2.0)) > q:
            lo = mid
        else:
            hi = mid
    return lo


@numba.njit(cache=True, nogil=True, parallel=True)
def roi_hits(a_ptr, a_idx, vox_ptr, vox_roi, n_rois):
    """(n_studies, n_rois) bool: study has an active voxel inside ROI ``j``.

    ``vox_roi[vox_ptr[v]:vox_ptr[v+1]]`` lists the ROIs containing voxel ``v`` (an inverted
    index), so the cost is one pass over the incidence matrix.
    """
    n_studies = a_ptr.shape[0] - 1
    out = np.zeros((n_studies, n_rois), dtype=np.bool_)
    for s in numba.prange(n_studies):
        for r in range(a_ptr[s], a_ptr[s + 1]):
            v = a_idx[r]
            for q in range(vox_ptr[v], vox_ptr[v + 1]):
                out[s, vox_roi[q]] = True
    return out


@numba.njit(cache=True, nogil=True, parallel=True)
def roi_cover(a_ptr, a_idx, in_roi):
    """(n_studies,) number of ROI voxels (``in_roi`` bool over voxels) in each study's
    spheres."""
    n_studies = a_ptr.shape[0] - 1
    out = np.zeros(n_studies, dtype=np.int64)
    for s in numba.prange(n_studies):
        n = 0
        for r in range(a_ptr[s], a_ptr[s + 1]):
            if in_roi[a_idx[r]]:
                n += 1
        out[s] = n
    return out


@numba.njit(cache=True, nogil=True, parallel=True)
def cyclic_shift_samples(vol, ijk, shifts):
    """(n_shifts, n_points): ``vol`` cyclically shifted by each row of ``shifts``, read at
    voxels ``ijk`` (value at ``p`` is ``vol[(p - shift) mod shape]``)."""
    nx, ny, nz = vol.shape
    out = np.empty((shifts.shape[0], ijk.shape[0]), dtype=np.float32)
    for t in numba.prange(shifts.shape[0]):
        sx, sy, sz = shifts[t, 0], shifts[t, 1], shifts[t, 2]
        for p in range(ijk.shape[0]):
            out[t, p] = vol[(ijk[p, 0] - sx) % nx, (ijk[p, 1] - sy) % ny, (ijk[p, 2] - sz) % nz]
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _half_bits(f):
    """IEEE binary16 bits of the float32 with bits ``f`` (uint32), rounded to nearest,
    ties to even, with subnormals, overflow to inf and NaN kept NaN: numpy's
    ``npy_floatbits_to_halfbits``, so the result equals ``astype(np.float16)``."""
    h_sgn = (f & 0x80000000) >> 16
    f_exp = f & 0x7F800000
    if f_exp >= 0x47800000:
        if f_exp == 0x7F800000:
            f_sig = f & 0x007FFFFF
            if f_sig != 0:
                ret = 0x7C00 + (f_sig >> 13)
                if ret == 0x7C00:
                    ret += 1
                return h_sgn + ret
            return h_sgn + 0x7C00
        return h_sgn + 0x7C00
    if f_exp <= 0x38000000:
        if f_exp < 0x33000000:
            return h_sgn
        e = f_exp >> 23
        f_sig = 0x00800000 + (f & 0x007FFFFF)
        f_sig >>= 113 - e
        if (f_sig & 0x00003FFF) != 0x00001000 or (f & 0x000007FF) != 0:
            f_sig += 0x00001000
        return h_sgn + (f_sig >> 13)
    h_exp = (f_exp - 0x38000000) >> 13
    f_sig = f & 0x007FFFFF
    if (f_sig & 0x00003FFF) != 0x00001000:
        f_sig += 0x00001000
    return h_sgn + (f_sig >> 13) + h_exp


@numba.njit(cache=True, nogil=True, inline="always")
def _half_value(h, scale):
    """The exact value of finite binary16 bits ``h`` as a float64: significand times
    ``scale[exponent]`` (powers of two, see :func:`to_half`)."""
    e = (h >> 10) & 0x1F
    m = h & 0x3FF
    v = float(m + 1024 if e else m) * scale[e]
    return -v if h & 0x8000 else v


@numba.njit(cache=True, nogil=True, parallel=True)
def to_half(z, out, mean, norm, stats):
    """``out`` (uint16, the bits of a float16 array) = ``z`` (float32) rounded as
    ``z.astype(np.float16)``; with ``stats``, ``mean``/``norm`` per row of the rounded
    values as :func:`mean_and_centred_norm` computes them (the same float64 sums in the
    same order), in one pass instead of numpy's cast, a float32 copy and two passes."""
    n_rows, n = z.shape
    bits = z.view(np.uint32)
    # value of exponent field e: 2^(e - 25) per unit of the 11-bit significand (2^-24
    # for subnormals, e = 0)
    scale = np.empty(32)
    scale[0] = 2.0 ** -24
    for e in range(1, 32):
        scale[e] = 2.0 ** (e - 25)
    for i in numba.prange(n_rows):
        if not stats:
            for j in range(n):
                out[i, j] = _half_bits(bits[i, j])
            continue
        s = 0.0
        for j in range(n):
            h = _half_bits(bits[i, j])
            out[i, j] = h
            s += _half_value(h, scale)
        m = s / n
        ss = 0.0
        for j in range(n):
            d = _half_value(out[i, j], scale) - m
            ss += d * d
        mean[i] = m
        norm[i] = math.sqrt(ss)


@numba.njit(cache=True, nogil=True, parallel=True)
def mean_and_centred_norm(x):
    """Per row: mean and :math:`\\lVert x - \\bar x \\rVert_2` (float64 accumulation)."""
    n_rows, n = x.shape
    mean = np.empty(n_rows)
    norm = np.empty(n_rows)
    for i in numba.prange(n_rows):
        s = 0.0
        for j in range(n):
            s += float(x[i, j])
        m = s / n
        ss = 0.0
        for j in range(n):
            d = float(x[i, j]) - m
            ss += d * d
        mean[i] = m
        norm[i] = math.sqrt(ss)
    return mean, norm


@numba.njit(cache=True, nogil=True, parallel=True)
def roi_hits_peaks(roi_ijk, roi_ptr, offsets, padded_shape, pad, vox_ptr, studies,
                   n_studies, n_chunks):
    """(n_rois, n_studies) bool: a study has a peak within the kernel of a voxel of ROI ``j``
    (rows ``roi_ptr[j]:roi_ptr[j+1]`` of ``roi_ijk``, in-mask voxels), i.e. one of its MKDA
    spheres overlaps the ROI.

    The same relation as :func:`roi_hits` on the incidence matrix (a study's sphere covers
    in-mask voxel ``v`` iff it has a peak at ``v + o`` for an offset ``o`` of the symmetric
    sphere), computed from the ROI side: the ROI is dilated by the sphere (each dilated
    voxel visited once per ROI, a per-thread stamp) and the peaks found there are read from
    the voxel -> studies index of :func:`peak_voxel_index`. The cost is the ROI size times
    the sphere size per ROI, not a pass over the whole incidence matrix.
    """
    n_rois = roi_ptr.shape[0] - 1
    px, py, pz = padded_shape[0], padded_shape[1], padded_shape[2]
    out = np.zeros((n_rois, n_studies), dtype=np.bool_)
    bounds = np.linspace(0, n_rois, n_chunks + 1).astype(np.int64)
    for c in numba.prange(n_chunks):
        stamp = np.full(px * py * pz, -1, dtype=np.int32)
        for j in range(bounds[c], bounds[c + 1]):
            row = out[j]
            for r in range(roi_ptr[j], roi_ptr[j + 1]):
                i0 = roi_ijk[r, 0] + pad
                j0 = roi_ijk[r, 1] + pad
                k0 = roi_ijk[r, 2] + pad
                for o in range(offsets.shape[0]):
                    flat = ((i0 + offsets[o, 0]) * py + (j0 + offsets[o, 1])) * pz \
                        + (k0 + offsets[o, 2])
                    if stamp[flat] == j:
                        continue
                    stamp[flat] = j
                    for q in range(vox_ptr[flat], vox_ptr[flat + 1]):
                        row[studies[q]] = True
    return out


@numba.njit(cache=True, nogil=True)
def roi_cover_peaks(roi_ijk, offsets, padded_shape, pad, vox_ptr, studies, n_studies):
    """(n_studies,) number of ROI voxels inside a study's spheres (:func:`roi_cover` from
    the peaks; each (study, voxel) pair counted once)."""
    py, pz = padded_shape[1], padded_shape[2]
    cover = np.zeros(n_studies, dtype=np.int64)
    last = np.full(n_studies, -1, dtype=np.int64)
    for r in range(roi_ijk.shape[0]):
        i0 = roi_ijk[r, 0] + pad
        j0 = roi_ijk[r, 1] + pad
        k0 = roi_ijk[r, 2] + pad
        for o in range(offsets.shape[0]):
            flat = ((i0 + offsets[o, 0]) * py + (j0 + offsets[o, 1])) * pz + (k0 + offsets[o, 2])
            for q in range(vox_ptr[flat], vox_ptr[flat + 1]):
                s = studies[q]
                if last[s] != r:
                    last[s] = r
                    cover[s] += 1
    return cover
