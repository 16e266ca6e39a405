r"""Exact threshold-free cluster enhancement (TFCE).

For a statistic map :math:`t`, the TFCE of voxel :math:`v` is (Smith & Nichols 2009)

.. math::

    \mathrm{TFCE}(v) = \int_0^{t(v)} e_v(h)^E \, h^H \, dh,

where :math:`e_v(h)` is the number of voxels of the connected component of
:math:`\{u : t(u) \ge h\}` that contains :math:`v`. Tools such as ``fslmaths -tfce`` and
nilearn approximate the integral by a sum over ``dh`` steps. Here it is evaluated **exactly**:
between two consecutive distinct heights :math:`d_{k+1} < h \le d_k` the super-level set, and
so every extent, is constant, and :math:`\int_{d_{k+1}}^{d_k} h^H dh =
(d_k^{H+1} - d_{k+1}^{H+1}) / (H+1)`. A single union-find sweep over voxels sorted by
decreasing height accumulates these pieces lazily (see :mod:`microvba.stats._kernels`), in
:math:`O(V \log V)` time for the sort and near-linear time for the sweep.

Only the positive part is enhanced; call ``tfce(-t)`` for the negative tail.

References
----------
Smith S.M., Nichols T.E. (2009). Threshold-free cluster enhancement: addressing problems of
smoothing, threshold dependence and localisation in cluster inference. NeuroImage 44, 83-98.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .._validation import InputError, check_choice
from ._kernels import radix_argsort_f32, tfce_sweep

#: connectivity -> rank for :func:`scipy.ndimage.generate_binary_structure`
CONNECTIVITY_RANK = {6: 1, 18: 2, 26: 3}


def check_connectivity(name: str, connectivity: int) -> int:
    """Return ``connectivity`` if it is 6, 18 or 26, else raise InputError."""
    check_choice(name, connectivity, list(CONNECTIVITY_RANK))
    return int(connectivity)


def neighbour_offsets(connectivity: int) -> np.ndarray:
    """Offsets ``(K, 3)`` of the 6-, 18- or 26-neighbourhood (centre excluded)."""
    struct = ndimage.generate_binary_structure(3, CONNECTIVITY_RANK[connectivity])
    struct[1, 1, 1] = False
    return np.argwhere(struct) - 1


def neighbour_table(mask: np.ndarray, connectivity: int = 6) -> np.ndarray:
    """In-mask neighbour indices of every in-mask voxel.

    Parameters
    ----------
    mask : (X, Y, Z) bool array; voxel ``i`` is the ``i``-th of ``np.flatnonzero(mask)``.
    connectivity : 6 (faces), 18 (+ edges) or 26 (+ corners).

    Returns
    -------
    (V, K) int32 array, each row's in-mask neighbours first, padded with -1.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise InputError(f"The mask must be 3-D. Got shape {mask.shape} instead.",
                         file="mask", fix="Pass a 3-D boolean mask.")
    check_connectivity("connectivity", connectivity)
    index = np.full(np.array(mask.shape) + 2, -1, dtype=np.int32)
    inner = index[1:-1, 1:-1, 1:-1]
    inner[mask] = np.arange(int(mask.sum()), dtype=np.int32)
    coords = np.argwhere(mask) + 1
    offsets = neighbour_offsets(connectivity)
    table = np.empty((coords.shape[0], offsets.shape[0]), dtype=np.int32)
    for j, off in enumerate(offsets):
        c = coords + off
        table[:, j] = index[c[:, 0], c[:, 1], c[:, 2]]
    # pack valid neighbours first so the kernels stop at the first -1
    table = -np.sort(-table, axis=1)
    return np.ascontiguousarray(table)


class TfceWorkspace:
    """Reusable buffers for repeated TFCE sweeps over one mask (one per thread)."""

    def __init__(self, n_voxels: int, E: float) -> None:
        self.parent = np.full(n_voxels, -1, dtype=np.int32)
        self.size = np.zeros(n_voxels, dtype=np.int32)
        self.acc = np.zeros(n_voxels, dtype=np.float64)
        self.flast = np.zeros(n_voxels, dtype=np.float64)
        self.visited = np.zeros(n_voxels, dtype=np.int32)
        self.peaks = np.zeros(n_voxels, dtype=np.int32)
        self.ext_pow = np.arange(n_voxels + 1, dtype=np.float64) ** float(E)

    def sweep(self, t: np.ndarray, order: np.ndarray, sign: int, neigh: np.ndarray, H: float,
              out: np.ndarray | None = None) -> float:
        """TFCE of the ``sign`` tail of ``t`` into ``out``; returns its maximum.

        With ``out=None`` only the maximum is computed (faster: the permutation null).
        """
        write = out is not None
        if out is None:
            out = self.acc[:0]
        return tfce_sweep(t, order, sign, neigh, float(H), self.ext_pow, out, self.parent,
                          self.size, self.acc, self.flast, self.visited, self.peaks, write)


def tfce_masked(values: np.ndarray, neigh: np.ndarray, H: float = 2.0, E: float = 0.5,
                order: np.ndarray | None = None, sign: int = 1) -> np.ndarray:
    """Exact TFCE of in-mask values (1-D) given a :func:`neighbour_table`."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    if order is None:
        order = np.argsort(values, kind="stable")
    ws = TfceWorkspace(values.shape[0], E)
    out = np.zeros(values.shape[0], dtype=np.float64)
    ws.sweep(values, order, sign, neigh, H, out)
    return out


def tfce(stat_3d: np.ndarray, H: float = 2.0, E: float = 0.5,
         connectivity: int = 6) -> np.ndarray:
    """Exact TFCE of the positive part of a 3-D statistic map.

    Parameters
    ----------
    stat_3d : (X, Y, Z) array; NaNs are treated as background.
    H, E : height and extent exponents (Smith & Nichols: 2 and 0.5).
    connectivity : 6, 18 or 26.

    Returns
    -------
    (X, Y, Z) float64 array, 0 where ``stat_3d <= 0``.

    Examples
    --------
    A single voxel of height 3 has TFCE :math:`\\int_0^3 h^2 dh = 9`:

    >>> import numpy as np
    >>> t = np.zeros((3, 3, 3)); t[1, 1, 1] = 3.0
    >>> float(tfce(t)[1, 1, 1])
    9.0
    """
    stat = np.asarray(stat_3d, dtype=np.float64)
    if stat.ndim != 3:
        raise InputError(f"tfce expects a 3-D map. Got shape {stat.shape} instead.",
                         file="stat_3d", fix="Pass one 3-D statistic map (call per volume).")
    if not (np.isfinite(H) and H >= 0 and np.isfinite(E) and E >= 0):
        raise InputError(f"TFCE exponents must be finite and >= 0. Got H={H!r}, E={E!r}.",
                         file="parameters tfce_H/tfce_E", fix="Use H=2, E=0.5 (the defaults).")
    check_connectivity("connectivity", connectivity)
    mask = np.nan_to_num(stat, nan=0.0) > 0
    out = np.zeros(stat.shape, dtype=np.float64)
    if not mask.any():
        return out
    neigh = neighbour_table(mask, connectivity)
    out[mask] = tfce_masked(stat[mask], neigh, H=H, E=E)
    return out


class HeightOrder:
    """Ascending order of the voxels of a map, with reusable buffers (one per thread).

    float32 maps (the permuted t maps) are sorted by an :math:`O(V)` radix sort
    (:func:`microvba.stats._kernels.radix_argsort_f32`), which gives exactly the permutation of
    ``np.argsort(values, kind="stable")``; other dtypes use that call. The sweeps need only a
    descending order of the positive (or ascending of the negative) values, and both signs
    share one order. The returned array is a buffer overwritten by the next call.
    """

    def __init__(self, n_voxels: int) -> None:
        self.order = np.empty(n_voxels, dtype=np.int32)
        self._keys1 = np.empty(n_voxels, dtype=np.uint32)
        self._keys2 = np.empty(n_voxels, dtype=np.uint32)
        self._order2 = np.empty(n_voxels, dtype=np.int32)
        self._counts = np.zeros((3, 2048), dtype=np.int64)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        if (values.dtype == np.float32 and values.flags.c_contiguous
                and values.shape == self.order.shape):
            return radix_argsort_f32(values, self.order, self._keys1, self._keys2,
                                     self._order2, self._counts)
        return np.argsort(values, kind="stable")
