"""Meta-analytic decoding of clusters and maps (Neurosynth topics, NeuroQuery terms).

Public API
----------
- :func:`load_database` / :func:`feature_maps` (:mod:`.database`, :mod:`.maps`): the
  coordinate databases and their cached MKDA chi-square feature maps;
- :class:`Decoder` (:mod:`.decoder`): ``.fit()``, ``.decode_roi(mask)``, ``.decode_map(img)``;
- :func:`bar_chart`, :func:`polar_plot` (:mod:`.figures`);
- :func:`decode_clusters` (:mod:`.stage`): the group-stage step writing tables and figures.
"""

from .database import Database, load_database, load_vocabulary, resolve_data_dir
from .decoder import Decoder
from .figures import bar_chart, polar_plot
from .maps import DEFAULT_THRESHOLD, FeatureMaps, feature_maps, resolve_cache_dir
from .stage import decode_clusters

__all__ = [
    "DEFAULT_THRESHOLD",
    "Database",
    "Decoder",
    "FeatureMaps",
    "bar_chart",
    "decode_clusters",
    "feature_maps",
    "load_database",
    "load_vocabulary",
    "polar_plot",
    "resolve_cache_dir",
    "resolve_data_dir",
]
