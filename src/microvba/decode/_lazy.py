"""A module imported on first attribute access.

``sp = lazy_module("scipy.sparse")`` at the top of a module keeps every ``sp.csc_matrix``
as it reads, but imports scipy only when one is reached: the cold map build in a fresh
process starts its child (:mod:`microvba.decode._child`) before scipy's ~0.1-0.2 s import,
which then runs while the child computes.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class _LazyModule:
    __slots__ = ("_name", "_module")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


def lazy_module(name: str) -> Any:
    """``importlib.import_module(name)``, deferred to the first attribute access."""
    return _LazyModule(name)
