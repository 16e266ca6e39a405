"""Fixtures for the BIDS input tests; the dataset factory lives in ``bids_factory.py``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# make the helper module importable whatever pytest's import mode
sys.path.insert(0, str(Path(__file__).parent))

from bids_factory import make_bids  # noqa: E402


@pytest.fixture
def bids(tmp_path: Path) -> Path:
    """A valid 3-subject dataset (see :func:`bids_factory.make_bids`)."""
    return make_bids(tmp_path)
