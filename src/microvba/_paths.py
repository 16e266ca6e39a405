"""Where microvba finds its public databases and keeps its caches.

Data (Neurosynth, NeuroQuery, Brainnetome): the explicit folder, else ``$MICROVBA_DATA``,
else ``~/.cache/microvba``. Caches (decoding maps): the explicit folder, else
``$MICROVBA_CACHE``, else ``~/.cache/microvba/maps``.
"""

from __future__ import annotations

import os
from pathlib import Path


def _resolve(explicit: str | Path | None, env: str, default: str) -> Path:
    if explicit is not None:
        return Path(explicit).expanduser()
    value = os.environ.get(env)
    return Path(value or default).expanduser()


def data_dir(explicit: str | Path | None = None) -> Path:
    """``explicit``, else ``$MICROVBA_DATA``, else ``~/.cache/microvba``."""
    return _resolve(explicit, "MICROVBA_DATA", "~/.cache/microvba")


def cache_dir(explicit: str | Path | None = None) -> Path:
    """``explicit``, else ``$MICROVBA_CACHE``, else ``~/.cache/microvba/maps``."""
    return _resolve(explicit, "MICROVBA_CACHE", "~/.cache/microvba/maps")
