"""Regional follow-up: cluster tables, atlas labels, partial correlations, circularity.

- :mod:`~microvba.regions.atlases`: Brainnetome BN-246, Harvard-Oxford and AAL; region masks,
  cluster and coordinate labelling.
- :mod:`~microvba.regions.clusters`: clusters of a corrected map with peaks and sub-peaks.
- :mod:`~microvba.regions.means`: per-subject cluster means.
- :mod:`~microvba.regions.correlation`: partial correlations (Fisher and bootstrap CIs, FDR)
  and the leave-one-subject-out (non-circular) r.
- :mod:`~microvba.regions.followup`: the stage function :func:`follow_up`.
"""

from .atlases import (
    ATLASES,
    Atlas,
    data_dir,
    label_clusters,
    label_coordinates,
    load_atlas,
    summarise_labels,
)
from .clusters import cluster_table, peak_table
from .correlation import (
    cluster_means,
    fdr_bh,
    fisher_ci,
    loso_cluster_means,
    loso_inference,
    loso_r,
    partial_corr,
    residualise,
)
from .followup import RegionsResult, follow_up

__all__ = [
    "ATLASES",
    "Atlas",
    "RegionsResult",
    "cluster_means",
    "cluster_table",
    "data_dir",
    "fdr_bh",
    "fisher_ci",
    "follow_up",
    "label_clusters",
    "label_coordinates",
    "load_atlas",
    "loso_cluster_means",
    "loso_inference",
    "loso_r",
    "partial_corr",
    "peak_table",
    "residualise",
    "summarise_labels",
]
