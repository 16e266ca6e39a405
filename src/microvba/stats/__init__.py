"""stats stage: the voxel-wise GLM and randomise-class permutation inference.

Public names: :func:`make_design` / :class:`Design` (design matrices), :func:`randomise`
and :func:`randomise_family` (Freedman-Lane permutation inference with exact TFCE, cluster
and voxel FWE, FDR), :class:`RandomiseResult`, :func:`tfce` (exact TFCE of a 3-D map),
:func:`label_clusters` / :func:`find_clusters` and :func:`fdr_bh`.
"""

from .clusters import Clusters, fdr_bh, find_clusters, label_clusters
from .design import Design, make_design
from .glm import FreedmanLane, freedman_lane
from .permutation import randomise, randomise_family
from .result import RandomiseResult
from .tfce import neighbour_table, tfce

__all__ = [
    "Clusters",
    "Design",
    "FreedmanLane",
    "RandomiseResult",
    "fdr_bh",
    "find_clusters",
    "freedman_lane",
    "label_clusters",
    "make_design",
    "neighbour_table",
    "randomise",
    "randomise_family",
    "tfce",
]
