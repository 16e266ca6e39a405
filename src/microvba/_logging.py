"""Module loggers and progress bars.

Library code only calls :func:`get_logger` and :func:`progress`; the CLI alone configures
handlers (:func:`configure`), so importing microvba never changes a caller's logging.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_ROOT = "microvba"


def get_logger(name: str) -> logging.Logger:
    """Logger below the package root (``microvba.<name>``)."""
    return logging.getLogger(name if name.startswith(_ROOT) else f"{_ROOT}.{name}")


def configure(verbosity: int = 0, logfile: str | None = None) -> None:
    """Configure the package logger: 0 = INFO, >0 = DEBUG, <0 = WARNING and no progress bars."""
    level = logging.DEBUG if verbosity > 0 else logging.INFO if verbosity == 0 else logging.WARNING
    root = logging.getLogger(_ROOT)
    root.setLevel(level)
    root.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                                           "%H:%M:%S"))
    root.addHandler(handler)
    if logfile:
        fh = logging.FileHandler(logfile)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        root.addHandler(fh)
    os.environ["MICROVBA_PROGRESS"] = "0" if verbosity < 0 else "1"


def progress_enabled() -> bool:
    """Progress bars are shown unless quiet mode or ``MICROVBA_PROGRESS=0``."""
    return os.environ.get("MICROVBA_PROGRESS", "1") != "0"


def progress(iterable: Iterable[T], desc: str, total: int | None = None,
             unit: str = "it") -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm progress bar on stderr (disabled in quiet mode)."""
    from tqdm.auto import tqdm

    yield from tqdm(iterable, desc=desc, total=total, unit=unit, file=sys.stderr,
                    disable=not progress_enabled(), leave=False, dynamic_ncols=True)
