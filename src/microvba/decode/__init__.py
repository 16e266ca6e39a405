"""Meta-analytic decoding of clusters and maps (Neurosynth topics, NeuroQuery terms).

Public API
----------
- :func:`load_database` / :func:`feature_maps` (:mod:`.database`, :mod:`.maps`): the
  coordinate databases and their cached MKDA chi-square feature maps;
- :class:`Decoder` (:mod:`.decoder`): ``.fit()``, ``.decode_roi(mask)``, ``.decode_map(img)``;
- :func:`bar_chart`, :func:`polar_plot` (:mod:`.figures`);
- :func:`decode_clusters`, :func:`decode_regions` (:mod:`.stage`): the group-stage step
  (regions merged by overlap, :mod:`.regions`), writing through :mod:`.writer`, the one
  writer of tables and figures (also used by ``microvba decode``).
"""

from .database import Database, load_database, load_vocabulary, resolve_data_dir
from .decoder import Decoder
from .figures import bar_chart, polar_plot
from .maps import DEFAULT_THRESHOLD, FeatureMaps, feature_maps, resolve_cache_dir
from .regions import Cluster, Region, merge_clusters
from .stage import decode_clusters, decode_regions

__all__ = [
    "DEFAULT_THRESHOLD",
    "Cluster",
    "Database",
    "Decoder",
    "FeatureMaps",
    "Region",
    "bar_chart",
    "decode_clusters",
    "decode_regions",
    "feature_maps",
    "load_database",
    "load_vocabulary",
    "merge_clusters",
    "polar_plot",
    "resolve_cache_dir",
    "resolve_data_dir",
]
