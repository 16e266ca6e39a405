r"""Cluster extent and cluster mass at a cluster-forming threshold, and voxel-wise FDR.

A cluster is a connected component (6-, 18- or 26-connectivity; 26 by default, as FSL
randomise) of the voxels whose statistic exceeds the cluster-forming threshold :math:`u`.
Its extent is its number of voxels and its mass the sum of the statistic over its voxels
(Bullmore et al. 1999; as FSL randomise ``-C``/``-c`` with ``-C`` mass). The FWE p of a
cluster is the fraction of permutations whose largest cluster is at least as large.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._fdr import fdr_bh  # noqa: F401  (re-exported: the stats API names it)
from ._kernels import cluster_sweep
from .tfce import neighbour_table


class ClusterWorkspace:
    """Reusable buffers for repeated cluster sweeps over one mask (one per thread)."""

    def __init__(self, n_voxels: int) -> None:
        self.labels = np.full(n_voxels, -1, dtype=np.int32)
        self.parent = np.full(n_voxels, -1, dtype=np.int32)
        self.size = np.zeros(n_voxels, dtype=np.int32)
        self.mass = np.zeros(n_voxels, dtype=np.float64)
        self.visited = np.zeros(n_voxels, dtype=np.int32)

    def sweep(self, t: np.ndarray, order: np.ndarray, sign: int, threshold: float,
              neigh: np.ndarray) -> tuple[float, float]:
        """Largest extent and mass of the ``sign`` tail's clusters; fills ``self.labels``."""
        return cluster_sweep(t, order, sign, float(threshold), neigh, self.labels,
                             self.parent, self.size, self.mass, self.visited)


@dataclass(frozen=True)
class Clusters:
    """Clusters of one map (in-mask voxel vectors).

    Attributes
    ----------
    labels : (V,) int, 0 outside clusters, 1..n by decreasing extent.
    extent, mass : (n,) per cluster (index ``k - 1`` for label ``k``).
    """

    labels: np.ndarray
    extent: np.ndarray
    mass: np.ndarray

    @property
    def n_clusters(self) -> int:
        return int(self.extent.shape[0])

    def voxel_map(self, per_cluster: np.ndarray) -> np.ndarray:
        """Spread per-cluster values onto voxels (0 outside clusters)."""
        values = np.concatenate([[0.0], np.asarray(per_cluster, dtype=np.float64)])
        return values[self.labels]


def find_clusters(values: np.ndarray, neigh: np.ndarray, threshold: float,
                  sign: int = 1, order: np.ndarray | None = None) -> Clusters:
    """Clusters of ``sign * values > threshold`` over a mask's :func:`neighbour_table`."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    if order is None:
        order = np.argsort(values, kind="stable")
    ws = ClusterWorkspace(values.shape[0])
    ws.sweep(values, order, sign, threshold, neigh)
    roots = ws.labels
    inside = roots >= 0
    uniq, inv = np.unique(roots[inside], return_inverse=True)
    extent = np.bincount(inv, minlength=uniq.size).astype(np.int64)
    mass = np.bincount(inv, weights=sign * values[inside], minlength=uniq.size)
    rank = np.argsort(-extent, kind="stable")
    relabel = np.empty(uniq.size, dtype=np.int32)
    relabel[rank] = np.arange(1, uniq.size + 1)
    labels = np.zeros(values.shape[0], dtype=np.int32)
    labels[inside] = relabel[inv]
    return Clusters(labels=labels, extent=extent[rank], mass=mass[rank])


def label_clusters(stat_3d: np.ndarray, threshold: float, connectivity: int = 26
                   ) -> tuple[np.ndarray, Clusters]:
    """Clusters of ``stat_3d > threshold`` in a 3-D map: ``(labels_3d, clusters)``."""
    stat = np.nan_to_num(np.asarray(stat_3d, dtype=np.float64), nan=-np.inf)
    mask = stat > threshold
    labels_3d = np.zeros(stat.shape, dtype=np.int32)
    if not mask.any():
        return labels_3d, Clusters(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    neigh = neighbour_table(mask, connectivity)
    cl = find_clusters(stat[mask], neigh, threshold)
    labels_3d[mask] = cl.labels
    return labels_3d, cl
