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

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> submodule that defines it; imported on first use (PEP 562), so that
#: ``from microvba.decode import Decoder`` does not import pandas, matplotlib's helpers and
#: the group stage along with the decoder (a cold map build in a fresh process pays for
#: every import)
_EXPORTS = {
    "Database": "database", "load_database": "database", "load_vocabulary": "database",
    "resolve_data_dir": "database",
    "Decoder": "decoder",
    "bar_chart": "figures", "polar_plot": "figures",
    "DEFAULT_THRESHOLD": "maps", "FeatureMaps": "maps", "feature_maps": "maps",
    "resolve_cache_dir": "maps",
    "Cluster": "regions", "Region": "regions", "merge_clusters": "regions",
    "decode_clusters": "stage", "decode_regions": "stage",
}

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from .database import Database, load_database, load_vocabulary, resolve_data_dir
    from .decoder import Decoder
    from .figures import bar_chart, polar_plot
    from .maps import DEFAULT_THRESHOLD, FeatureMaps, feature_maps, resolve_cache_dir
    from .regions import Cluster, Region, merge_clusters
    from .stage import decode_clusters, decode_regions
