"""Distinct regions of a group analysis: clusters of all metrics and signs merged by overlap.

A group run finds clusters per metric and sign; the same anatomical region often shows up
in several of them (AD and MD in A23c, say). Decoding each cluster would decode that region
several times over. Here clusters are merged into *regions* by voxel overlap, not by the
name of an atlas label, and each region is decoded once.

Rule
----
Two clusters :math:`A` and :math:`B` (voxel sets on the common group grid) overlap when
their overlap coefficient (Szymkiewicz-Simpson)

.. math:: \\mathrm{OC}(A, B) = \\frac{|A \\cap B|}{\\min(|A|, |B|)}

reaches :data:`MIN_OVERLAP` (0.5: half of the smaller cluster lies in the larger one). The
coefficient is used rather than Dice, :math:`2|A \\cap B| / (|A| + |B|)`, because a small
cluster of one metric nested in a large cluster of another is the same region although
their Dice is small. Regions are the connected components of the "overlaps" graph (single
linkage, so a chain A-B-C is one region). A region's mask is the union of its clusters; it
is decoded under the name of its first cluster in the analysis order (metrics as given,
``+`` before ``-``, cluster id), whose statistic map is used for map decoding.

``regions.tsv`` (:func:`write_regions`, read back with :func:`read_regions`) lists every
cluster with its region: ``region`` (1, 2, ... in analysis order), ``metric``, ``sign``,
``cluster``, ``n_voxels``, ``overlap`` (largest overlap coefficient with another cluster
of its region, 1 for a region of one cluster), ``region_voxels`` (the union),
``decoded_as`` (``<metric>_<pos|neg>_cluster-<id>``, the stem of the region's decoding
files) and ``metrics`` (the region's metrics and signs, e.g. ``AD+,MD+``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from .._provenance import atomic_path
from .._validation import check_in_range
from ..io import derivatives as D

#: smallest overlap coefficient for two clusters to be one region
MIN_OVERLAP = 0.5
#: file name of the region table, in the decoding folder
REGIONS_FILE = D.REGIONS_TSV
REGION_COLUMNS = list(D.REGION_COLUMNS)


@dataclass
class Cluster:
    """One significant cluster of one metric and sign (a boolean mask on the group grid)."""

    metric: str
    sign: str
    cluster_id: int
    mask: np.ndarray
    affine: np.ndarray
    stat_img: nib.Nifti1Image | None = None

    @property
    def prefix(self) -> str:
        """``<metric>_<pos|neg>``: the prefix of its decoding files."""
        return D.region_tag(self.metric, self.sign)

    @property
    def n_voxels(self) -> int:
        return int(self.mask.sum())


@dataclass
class Region:
    """Clusters merged by overlap; decoded once, as its first cluster."""

    region_id: int
    members: list[Cluster]
    overlaps: list[float] = field(default_factory=list)

    @property
    def first(self) -> Cluster:
        return self.members[0]

    @property
    def mask(self) -> np.ndarray:
        out = np.zeros(self.first.mask.shape, dtype=bool)
        for c in self.members:
            out |= c.mask
        return out

    @property
    def stem(self) -> str:
        return D.cluster_stem(self.first.prefix, self.first.cluster_id)

    @property
    def metrics(self) -> str:
        seen: list[str] = []
        for c in self.members:
            if f"{c.metric}{c.sign}" not in seen:
                seen.append(f"{c.metric}{c.sign}")
        return ",".join(seen)


def clusters_of(label_img: nib.Nifti1Image, metric: str, sign: str,
                stat_img: nib.Nifti1Image | None = None) -> list[Cluster]:
    """The clusters (nonzero labels, in increasing order) of a cluster label image."""
    labels = np.rint(np.nan_to_num(np.asarray(label_img.dataobj, dtype=np.float64)))
    return [Cluster(metric, sign, int(i), labels == i, np.asarray(label_img.affine), stat_img)
            for i in np.unique(labels) if i != 0]


def overlap_coefficient(a: np.ndarray, b: np.ndarray) -> float:
    """:math:`|A \\cap B| / \\min(|A|, |B|)` of two boolean masks (0 when either is empty
    or the grids differ)."""
    if a.shape != b.shape:
        return 0.0
    small = min(int(a.sum()), int(b.sum()))
    return float(np.count_nonzero(a & b)) / small if small else 0.0


def merge_clusters(clusters: list[Cluster], min_overlap: float = MIN_OVERLAP) -> list[Region]:
    """Regions: connected components of clusters whose overlap coefficient is at least
    ``min_overlap`` (module docstring), in the order of their first cluster.

    Clusters on different grids (shape or affine) never merge.
    """
    check_in_range("min_overlap", min_overlap, 0.0, 1.0)
    n = len(clusters)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    best = np.zeros(n)
    for i in range(n):
        for j in range(i + 1, n):
            a, b = clusters[i], clusters[j]
            if a.mask.shape != b.mask.shape or not np.allclose(a.affine, b.affine):
                continue
            oc = overlap_coefficient(a.mask, b.mask)
            if oc > 0 and oc >= min_overlap:
                best[i], best[j] = max(best[i], oc), max(best[j], oc)
                ri, rj = root(i), root(j)
                parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    regions = []
    for k, (_, idx) in enumerate(sorted(groups.items(), key=lambda kv: kv[1][0]), start=1):
        regions.append(Region(k, [clusters[i] for i in idx],
                              [float(best[i]) if len(idx) > 1 else 1.0 for i in idx]))
    return regions


def regions_table(regions: list[Region]) -> pd.DataFrame:
    """One row per cluster (columns :data:`REGION_COLUMNS`)."""
    rows = []
    for reg in regions:
        n_union = int(reg.mask.sum())
        for c, oc in zip(reg.members, reg.overlaps, strict=True):
            # REGION_COLUMNS, in order
            rows.append((reg.region_id, c.metric, c.sign, c.cluster_id, c.n_voxels,
                         round(oc, 4), n_union, reg.stem, reg.metrics))
    return pd.DataFrame(rows, columns=REGION_COLUMNS)


def write_regions(regions: list[Region], folder: str | Path) -> Path:
    """Atomically write ``<folder>/regions.tsv``."""
    path = Path(folder) / REGIONS_FILE
    with atomic_path(path) as tmp:
        regions_table(regions).to_csv(tmp, sep="\t", index=False)
    return path


def read_regions(folder: str | Path) -> pd.DataFrame | None:
    """``<folder>/regions.tsv`` (``None`` when absent or unreadable: outputs of a run made
    before regions were merged by overlap)."""
    path = Path(folder) / REGIONS_FILE
    if not path.is_file():
        return None
    try:
        text_columns = [REGION_COLUMNS[i] for i in (1, 2, 3, 7, 8)]
        table = pd.read_table(path, dtype=dict.fromkeys(text_columns, str))
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    if not set(REGION_COLUMNS) <= set(table.columns):
        return None
    return table
