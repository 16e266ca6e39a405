"""stats stage: the voxel-wise GLM and randomise-class permutation inference.

Public names: :func:`make_design` / :class:`Design` (design matrices), :func:`randomise`
and :func:`randomise_family` (Freedman-Lane permutation inference with exact TFCE, cluster
and voxel FWE, FDR), :class:`RandomiseResult`, :func:`tfce` (exact TFCE of a 3-D map),
:func:`label_clusters` / :func:`find_clusters` and :func:`fdr_bh`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

#: public name -> submodule; imported on first use (PEP 562), so that ``import
#: microvba.stats.clusters`` for :func:`fdr_bh` (the decoder's tables) loads no numba kernels
_LAZY = {"Clusters": "clusters", "fdr_bh": "clusters", "find_clusters": "clusters",
         "label_clusters": "clusters", "Design": "design", "make_design": "design",
         "FreedmanLane": "glm", "freedman_lane": "glm", "randomise": "permutation",
         "randomise_family": "permutation", "RandomiseResult": "result",
         "neighbour_table": "tfce", "tfce": "tfce"}

if TYPE_CHECKING:
    from .clusters import Clusters, fdr_bh, find_clusters, label_clusters
    from .design import Design, make_design
    from .glm import FreedmanLane, freedman_lane
    from .permutation import randomise, randomise_family
    from .result import RandomiseResult
    from .tfce import neighbour_table, tfce


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
