r"""Gradient tables: b0 detection, shell clustering, DSI-grid detection, bvec normalisation.

Shell clustering
    Non-b0 b-values are sorted and split wherever two consecutive values differ by more than
    ``shell_tolerance`` (default :data:`SHELL_TOLERANCE` = 100 s/mm²; scanners jitter b by a
    few percent around the nominal value). Each shell is reported by the mean of its members,
    rounded to 10 s/mm².
b0 volumes
    ``b <= b0_threshold`` (default 50 s/mm²).
DSI grid
    A Cartesian q-space grid (Wedeen et al. 2005) has many "shells" with few directions each;
    treating them as shells is a classic pitfall. The scheme is flagged ``is_dsi`` when it has
    at least :data:`DSI_MIN_SHELLS` shells and at least 90 % of its q-vectors
    :math:`\sqrt{b/b_1}\,g` (:math:`b_1` the smallest shell) lie within 0.15 of an integer
    lattice point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._validation import InputError
from ..io.gradients import B0_THRESHOLD, read_bvals, read_bvecs

SHELL_TOLERANCE = 100.0
DSI_MIN_SHELLS = 6


def cluster_shells(bvals: np.ndarray, b0_threshold: float = B0_THRESHOLD,
                   tolerance: float = SHELL_TOLERANCE) -> tuple[np.ndarray, np.ndarray]:
    """Cluster b-values into shells.

    Returns
    -------
    shells
        (n_shells,) representative b-value of each shell (mean, rounded to 10 s/mm²).
    index
        (n_volumes,) shell index of each volume, -1 for b0 volumes.
    """
    bvals = np.asarray(bvals, float)
    index = np.full(bvals.size, -1, dtype=int)
    dw = np.flatnonzero(bvals > b0_threshold)
    if dw.size == 0:
        return np.zeros(0), index
    order = dw[np.argsort(bvals[dw], kind="stable")]
    sorted_b = bvals[order]
    breaks = np.flatnonzero(np.diff(sorted_b) > tolerance) + 1
    labels = np.zeros(sorted_b.size, dtype=int)
    for br in breaks:
        labels[br:] += 1
    index[order] = labels
    shells = np.array([np.round(sorted_b[labels == k].mean() / 10.0) * 10.0
                       for k in range(labels.max() + 1)])
    return shells, index


def _looks_like_dsi(bvals: np.ndarray, bvecs: np.ndarray, shells: np.ndarray,
                    dw_mask: np.ndarray) -> bool:
    if shells.size < DSI_MIN_SHELLS:
        return False
    q = np.sqrt(bvals[dw_mask] / shells[0])[:, None] * bvecs[dw_mask]
    on_grid = np.all(np.abs(q - np.round(q)) < 0.15, axis=1)
    return bool(on_grid.mean() >= 0.9)


@dataclass
class GradientTable:
    """A diffusion scheme with its shells.

    Parameters
    ----------
    bvals
        (n,) b-values in s/mm².
    bvecs
        (n, 3) gradient directions; normalised here (b0 rows may be zero).
    b0_threshold
        b-values at or below this are b0 volumes.
    shell_tolerance
        Largest gap between consecutive b-values of one shell (s/mm²).

    Attributes
    ----------
    bvals, bvecs, b0s_mask, shells, shell_index, is_dsi
    """

    bvals: np.ndarray
    bvecs: np.ndarray
    b0_threshold: float = B0_THRESHOLD
    shell_tolerance: float = SHELL_TOLERANCE
    source: str = "<arrays>"
    b0s_mask: np.ndarray = field(init=False)
    shells: np.ndarray = field(init=False)
    shell_index: np.ndarray = field(init=False)
    is_dsi: bool = field(init=False)

    def __post_init__(self) -> None:
        bvals = np.asarray(self.bvals, dtype=float).ravel()
        bvecs = np.asarray(self.bvecs, dtype=float)
        if bvecs.ndim == 2 and bvecs.shape[0] == 3 and bvecs.shape[1] != 3:
            bvecs = bvecs.T
        if bvecs.ndim != 2 or bvecs.shape[1] != 3:
            raise InputError(f"b-vectors must be an (n, 3) array; got shape {bvecs.shape}",
                             file=self.source, fix="Give one (x, y, z) row per volume.")
        if bvecs.shape[0] != bvals.size:
            raise InputError(f"{bvals.size} b-values but {bvecs.shape[0]} b-vectors",
                             file=self.source,
                             fix="Use the .bval and .bvec files written with this DWI series.")
        if not np.all(np.isfinite(bvals)) or np.any(bvals < 0):
            raise InputError("b-values must be finite and non-negative", file=self.source,
                             fix="Correct the negative, NaN or infinite b-values.")
        b0 = bvals <= self.b0_threshold
        norms = np.linalg.norm(bvecs, axis=1)
        bad = ~b0 & (norms < 1e-6)
        if np.any(bad):
            raise InputError(f"{int(bad.sum())} diffusion-weighted volume(s) have a zero "
                             f"b-vector (first: volume {int(np.flatnonzero(bad)[0])})",
                             file=self.source,
                             fix="Give a unit direction for every volume with b > "
                                 f"{self.b0_threshold:g}, or set its b-value to 0; a "
                                 "Philips isotropic (trace) volume, b > 0 with a zero "
                                 "vector, must be removed from the image, .bval and .bvec.")
        safe = np.where(norms > 1e-6, norms, 1.0)
        self.bvals = bvals
        self.bvecs = np.where((norms > 1e-6)[:, None], bvecs / safe[:, None], 0.0)
        self.b0s_mask = b0
        self.shells, self.shell_index = cluster_shells(bvals, self.b0_threshold,
                                                       self.shell_tolerance)
        self.is_dsi = _looks_like_dsi(bvals, self.bvecs, self.shells, ~b0)

    @classmethod
    def from_files(cls, bval_path: str | Path, bvec_path: str | Path,
                   **kwargs: float) -> GradientTable:
        """Read FSL ``.bval``/``.bvec`` files."""
        return cls(read_bvals(bval_path), read_bvecs(bvec_path), source=str(bvec_path),
                   **kwargs)

    @property
    def n_volumes(self) -> int:
        return int(self.bvals.size)

    def directions_per_shell(self) -> list[int]:
        return [int(np.sum(self.shell_index == k)) for k in range(self.shells.size)]

    def summary(self) -> dict:
        """Scheme description for logs and sidecars."""
        return {
            "n_volumes": self.n_volumes,
            "n_b0": int(self.b0s_mask.sum()),
            "shells": [float(s) for s in self.shells],
            "directions_per_shell": self.directions_per_shell(),
            "dsi_grid": bool(self.is_dsi),
            "b_max": float(self.bvals.max()),
            "b0_threshold": float(self.b0_threshold),
            "shell_tolerance": float(self.shell_tolerance),
        }

    def describe(self) -> str:
        """One-line human summary."""
        s = self.summary()
        kind = "DSI grid" if s["dsi_grid"] else f"{len(s['shells'])}-shell"
        shells = ", ".join(f"b={b:g} x{n}" for b, n in zip(s["shells"],
                                                          s["directions_per_shell"],
                                                          strict=True))
        if s["dsi_grid"]:
            shells = f"{len(s['shells'])} distinct b-values up to {s['b_max']:g}"
        return f"{kind} scheme: {s['n_volumes']} volumes, {s['n_b0']} b0, {shells}"

    def subset(self, keep: np.ndarray) -> GradientTable:
        """The table restricted to the volumes where ``keep`` is true."""
        keep = np.asarray(keep, bool)
        return GradientTable(self.bvals[keep], self.bvecs[keep], self.b0_threshold,
                             self.shell_tolerance, self.source)

    def to_dipy(self):
        """The equivalent :class:`dipy.core.gradients.GradientTable`."""
        from dipy.core.gradients import gradient_table

        return gradient_table(self.bvals, bvecs=self.bvecs, b0_threshold=self.b0_threshold)


def check_data(gtab: GradientTable, data: np.ndarray, mask: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Check a (..., n_volumes) DWI array and its mask against ``gtab``; return both.

    The mask defaults to every voxel; InputError when the volume count or the mask shape
    does not match.
    """
    data = np.asarray(data)
    if data.shape[-1] != gtab.n_volumes:
        raise InputError(f"the data have {data.shape[-1]} volumes but the gradient table "
                         f"has {gtab.n_volumes}", file=gtab.source,
                         fix="Use the .bval/.bvec files that belong to this DWI series.")
    spatial = data.shape[:-1]
    mask = np.ones(spatial, bool) if mask is None else np.asarray(mask, bool)
    if mask.shape != spatial:
        raise InputError(f"mask shape {mask.shape} differs from the image {spatial}",
                         file="mask", fix="Use a mask in the same space as the DWI.")
    return data, mask


def antipodal_groups(bvals: np.ndarray, bvecs: np.ndarray, rtol: float = 1e-6
                     ) -> np.ndarray:
    r"""Group index per volume: volumes whose b-values and directions agree up to the sign
    of the direction (:math:`g \equiv -g`), within ``rtol``.

    For a model symmetric under :math:`g \to -g` (every q-space model of a diffusion
    propagator: tensor, NODDI, ...) such volumes have the same predicted signal, so a
    least-squares fit may replace each group by its mean with weight = group size: the
    residual sum of squares then differs by the within-group sum only, which does not
    depend on the parameters. A full DSI q-space grid (DSI-515) has every direction twice
    (515 volumes, 258 groups); repeated b0s fall into one group.

    Returns
    -------
    ndarray
        (n,) int64 group labels 0..n_groups-1, numbered in order of first appearance.
    """
    bvals = np.asarray(bvals, float).ravel()
    g = np.asarray(bvecs, float).reshape(-1, 3)
    # canonical sign: the first component with |g_i| > 0.1 (some component >= 0.577) is
    # positive; a noisy vector near that threshold merely stays unmerged
    first = np.argmax(np.abs(g) > 0.1, axis=1)
    flip = g[np.arange(g.shape[0]), first] < 0
    g = np.where(flip[:, None], -g, g)
    g = np.where((bvals > 0)[:, None], g, 0.0)  # b = 0: direction irrelevant
    scale = np.maximum(bvals.max(initial=0.0), 1.0)
    key = np.c_[np.round(bvals / (scale * rtol)), np.round(g / rtol)]
    _, first_idx, labels = np.unique(key, axis=0, return_index=True, return_inverse=True)
    # renumber in order of first appearance
    order = np.argsort(first_idx, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[labels.ravel()].astype(np.int64)
