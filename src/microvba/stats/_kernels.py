"""Compiled hot loops of the permutation engine (numba, ``nogil`` so threads run in parallel).

All kernels work on in-mask voxel vectors (length ``V``) and a neighbour table
``neigh`` of shape ``(V, K)`` (in-mask neighbour indices, ``-1`` padded at the end of each
row), built once per analysis by :func:`microvba.stats.tfce.neighbour_table`.

Union-find with potentials
--------------------------
Exact TFCE (:func:`tfce_sweep`) sweeps voxels by decreasing height and keeps the connected
components of the super-level set ``{t >= h}`` in a union-find forest. Each component's
contribution ``e^E * (F(h_last) - F(h))`` with ``F(h) = h^(H+1) / (H+1)`` is added lazily to
its root when the component changes; ``acc`` stores each node's value *relative to its
parent*, so a voxel's TFCE is the sum of ``acc`` along its path to the root (the classic
"weighted union-find"). Merging root ``b`` under root ``a`` subtracts ``acc[a]`` from
``acc[b]`` so that nothing already accumulated below ``b`` changes.
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = {"cache": True, "nogil": True}


@numba.njit(**_JIT)
def _find(parent, acc, x):
    """Root of ``x`` with path halving; keeps ``acc`` relative to the (new) parent."""
    while parent[x] != x:
        p = parent[x]
        gp = parent[p]
        if gp != p:
            acc[x] += acc[p]
            parent[x] = gp
            x = gp
        else:
            x = p
    return x


@numba.njit(**_JIT)
def _height_integral(h, H):
    """``F(h) = h^(H+1) / (H+1)``, the exact integral of ``h'^H`` from 0 to ``h``."""
    if H == 2.0:
        return h * h * h / 3.0
    return h ** (H + 1.0) / (H + 1.0)


@numba.njit(**_JIT)
def tfce_sweep(t, order, sign, neigh, H, ext_pow, out, parent, size, acc, flast, visited,
               peaks, write_out):
    """Exact TFCE of ``sign * t`` (positive part) written into ``out``; returns its maximum.

    Parameters
    ----------
    t : (V,) float array
    order : (V,) int array, ``argsort(t)`` ascending (shared by both signs)
    sign : +1 (positive tail, swept from the end of ``order``) or -1 (from the start)
    neigh : (V, K) int32 neighbour table
    H : height exponent
    ext_pow : (V + 1,) float64, ``ext_pow[n] = n ** E``
    out : (V,) float64 output; voxels with ``sign * t <= 0`` get 0
    parent, size, acc, flast, visited, peaks : (V,) workspaces (int32, int32, float64,
        float64, int32, int32); ``parent`` must be -1 on entry and is restored to -1 on exit.
    write_out : if False only the maximum is computed and ``out`` is left untouched. The
        maximum TFCE lies at a local maximum of ``t`` (a voxel that starts a component: its
        components contain those of every voxel below it), so only those are evaluated.

    Returns
    -------
    float
        The maximum TFCE value.
    """
    V = t.shape[0]
    K = neigh.shape[1]
    n = 0
    n_peaks = 0
    for k in range(V):
        v = order[V - 1 - k] if sign > 0 else order[k]
        h = np.float64(sign * t[v])
        if not h > 0.0:
            break
        F = _height_integral(h, H)
        parent[v] = v
        size[v] = 1
        acc[v] = 0.0
        flast[v] = F
        visited[n] = v
        n += 1
        r = v
        born = True
        for j in range(K):
            u = neigh[v, j]
            if u < 0:
                break
            if parent[u] < 0:
                continue
            born = False
            ru = _find(parent, acc, u)
            if ru == r:
                continue
            # close the height interval (h, h_last] of both components with their old extents
            acc[ru] += ext_pow[size[ru]] * (flast[ru] - F)
            flast[ru] = F
            acc[r] += ext_pow[size[r]] * (flast[r] - F)
            flast[r] = F
            if size[ru] < size[r]:
                ru, r = r, ru
            parent[r] = ru
            acc[r] -= acc[ru]
            size[ru] += size[r]
            r = ru
        if born:
            peaks[n_peaks] = v
            n_peaks += 1
    # close (0, h_last] for every remaining component
    for i in range(n):
        v = visited[i]
        if parent[v] == v:
            acc[v] += ext_pow[size[v]] * flast[v]
            flast[v] = 0.0
    best = 0.0
    if write_out:
        out[:] = 0.0
    m = n if write_out else n_peaks
    for i in range(m):
        v = visited[i] if write_out else peaks[i]
        _find(parent, acc, v)  # shortens the path (halving), then sum along it
        val = acc[v]
        x = v
        while parent[x] != x:
            x = parent[x]
            val += acc[x]
        if write_out:
            out[v] = val
        if val > best:
            best = val
    for i in range(n):
        parent[visited[i]] = -1
    return best


@numba.njit(**_JIT)
def cluster_sweep(t, order, sign, threshold, neigh, labels, parent, size, mass, visited):
    """Clusters of ``sign * t > threshold``: extent and mass (sum of ``sign * t``).

    ``labels`` (V,) int64 receives, for each supra-threshold voxel, the index of its
    cluster's root voxel and -1 elsewhere. Workspaces as in :func:`tfce_sweep`
    (``parent`` -1 on entry and exit). Returns ``(max_extent, max_mass)``.
    """
    V = t.shape[0]
    K = neigh.shape[1]
    n = 0
    for k in range(V):
        v = order[V - 1 - k] if sign > 0 else order[k]
        h = sign * t[v]
        if not h > threshold:
            break
        parent[v] = v
        size[v] = 1
        mass[v] = h
        visited[n] = v
        n += 1
        r = v
        for j in range(K):
            u = neigh[v, j]
            if u < 0:
                break
            if parent[u] < 0:
                continue
            ru = u
            while parent[ru] != ru:
                parent[ru] = parent[parent[ru]]
                ru = parent[ru]
            if ru == r:
                continue
            if size[ru] < size[r]:
                ru, r = r, ru
            parent[r] = ru
            size[ru] += size[r]
            mass[ru] += mass[r]
            r = ru
    labels[:] = -1
    max_ext = 0.0
    max_mass = 0.0
    for i in range(n):
        v = visited[i]
        root = v
        while parent[root] != root:
            root = parent[root]
        labels[v] = root
        if parent[v] == v:
            if size[v] > max_ext:
                max_ext = size[v]
            if mass[v] > max_mass:
                max_mass = mass[v]
    for i in range(n):
        parent[visited[i]] = -1
    return max_ext, max_mass


@numba.njit(**_JIT)
def count_exceed(values, observed, sign, counts):
    """``counts[v] += sign * values[v] >= sign * observed[v]`` (per-voxel exceedances)."""
    for v in range(values.shape[0]):
        if sign * values[v] >= sign * observed[v]:
            counts[v] += 1


@numba.njit(**_JIT)
def freedman_lane_t(Ws, e, ee, df, out):
    """Permuted Freedman-Lane t of every voxel for a batch of rearrangements.

    ``Ws`` (P, 1 + q, n) float32: per rearrangement the rows ``W`` with
    ``W @ e = [u, U_Z]' P e``; ``e`` (n, V) float32 nuisance residuals; ``ee`` (V,) float64
    ``e'e``; ``out`` (P, V) float64. The projections of a block of voxels (cache resident) are
    computed for all ``P`` rearrangements before moving on, so ``e`` is read from memory once
    per batch; the summation order is fixed, so results do not depend on threads or BLAS.
    With ``s = u' P e``: ``t = s * sqrt(df) / sqrt(e'e - ||U_Z' P e||^2 - s^2)``
    (see :mod:`microvba.stats.glm`).
    """
    P = Ws.shape[0]
    q1 = Ws.shape[1]
    n = Ws.shape[2]
    V = e.shape[1]
    BS = 512
    acc = np.empty((q1, BS), dtype=np.float32)
    sdf = np.sqrt(df)
    for b0 in range(0, V, BS):
        m = min(BS, V - b0)
        for p in range(P):
            acc[:, :] = 0.0
            for i in range(n):
                row = e[i, b0:b0 + m]
                for k in range(q1):
                    w = Ws[p, k, i]
                    a = acc[k]
                    for j in range(m):
                        a[j] += w * row[j]
            for j in range(m):
                v = b0 + j
                if not ee[v] > 0.0:
                    out[p, v] = 0.0
                    continue
                s = np.float64(acc[0, j])
                sse = ee[v] - s * s
                for k in range(1, q1):
                    r = np.float64(acc[k, j])
                    sse -= r * r
                floor = ee[v] * 1e-12
                if sse < floor:  # (numerically) perfect fit
                    sse = floor
                out[p, v] = s * sdf / np.sqrt(sse)
    return out


#: bits per digit of the radix sort (3 passes cover a 32-bit key)
_RADIX_BITS = 11
_RADIX = 1 << _RADIX_BITS


@numba.njit(**_JIT)
def _float_key(b):
    """Order-preserving unsigned key of float32 bits ``b`` (-0.0 mapped to +0.0)."""
    if b == np.uint32(0x80000000):
        b = np.uint32(0)
    if b & np.uint32(0x80000000):
        return ~b
    return b | np.uint32(0x80000000)


@numba.njit(**_JIT)
def radix_argsort_f32(t, order, keys1, keys2, order2, counts):
    """Stable ascending argsort of a float32 vector by least-significant-digit radix sort.

    The float bits are mapped to unsigned integers of the same order (negative values:
    all bits flipped; positive: the sign bit set; -0.0 taken as +0.0) and sorted in three
    stable counting passes of 11 bits: :math:`O(V)` instead of the :math:`O(V \\log V)`
    comparisons of ``np.argsort``, and the same permutation as
    ``np.argsort(t, kind="stable")`` for any finite (or infinite) values; NaN is not allowed.

    Parameters
    ----------
    t : (V,) float32, C-contiguous.
    order : (V,) int32 output.
    keys1, keys2 : (V,) uint32 workspaces; ``order2`` (V,) int32 workspace.
    counts : (3, 2048) int64 workspace.
    """
    V = t.shape[0]
    bits = t.view(np.uint32)
    mask = np.uint32(_RADIX - 1)
    counts[:, :] = 0
    for i in range(V):
        k = _float_key(bits[i])
        counts[0, k & mask] += 1
        counts[1, (k >> np.uint32(_RADIX_BITS)) & mask] += 1
        counts[2, k >> np.uint32(2 * _RADIX_BITS)] += 1
    for p in range(3):
        s = 0
        for j in range(_RADIX):
            c = counts[p, j]
            counts[p, j] = s
            s += c
    # pass 0: keys from the values, into (keys1, order)
    for i in range(V):
        k = _float_key(bits[i])
        d = k & mask
        pos = counts[0, d]
        counts[0, d] = pos + 1
        keys1[pos] = k
        order[pos] = i
    # pass 1: (keys1, order) -> (keys2, order2)
    for i in range(V):
        k = keys1[i]
        d = (k >> np.uint32(_RADIX_BITS)) & mask
        pos = counts[1, d]
        counts[1, d] = pos + 1
        keys2[pos] = k
        order2[pos] = order[i]
    # pass 2: (keys2, order2) -> order
    for i in range(V):
        d = keys2[i] >> np.uint32(2 * _RADIX_BITS)
        pos = counts[2, d]
        counts[2, d] = pos + 1
        order[pos] = order2[i]
    return order
