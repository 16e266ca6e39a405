"""Accuracy against AMICO on the same simulated voxels (slow; figures in RESULTS.md)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_models as bench  # noqa: E402
from microvba.models.noddi import D_PAR_WM  # noqa: E402


@pytest.mark.slow
@pytest.mark.peer
@pytest.mark.parametrize("scheme", ["three_shell", "dsi515"])
def test_wm_accuracy_not_worse_than_amico(scheme):
    # imported here, not at collection: dicelib (AMICO's UI) replaces the process-wide
    # logging.Logger class, which would break other tests' loggers
    pytest.importorskip("amico")
    rng = np.random.default_rng(11)
    gtab = getattr(bench, scheme)()
    p = bench.truth(rng, 400, "wm")
    data = bench.simulate(gtab, p, D_PAR_WM, rng)
    ours = bench.accuracy(bench.fit_microvba(gtab, data, D_PAR_WM)[0], p)
    with tempfile.TemporaryDirectory() as tmp:
        theirs = bench.accuracy(bench.fit_amico(gtab, data, D_PAR_WM, Path(tmp))[0], p)
    for k in ("icvf", "odi", "isovf"):
        assert ours[k][0] >= theirs[k][0] - 0.01, (k, ours[k], theirs[k])
    for k in ("icvf", "isovf"):
        assert ours[k][1] <= theirs[k][1] + 0.01, (k, ours[k], theirs[k])
