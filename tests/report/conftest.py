"""Fixtures of the report tests: a synthetic derivatives folder and its report, built once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from synthetic_output import make_output_folder

from microvba.report import build_report


@pytest.fixture(scope="session")
def report_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Derivatives folder with every piece of the layout (7 metrics, 12 subjects)."""
    return make_output_folder(tmp_path_factory.mktemp("derivatives"), n_subjects=12, seed=3)


@pytest.fixture(scope="session")
def built_report(report_out: Path) -> tuple[Path, float]:
    """The report of :func:`report_out` and the seconds it took to build."""
    t0 = time.perf_counter()
    path = build_report(report_out, title="Synthetic <cohort> & report")
    return path, time.perf_counter() - t0
