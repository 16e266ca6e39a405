"""Slow: family-wise error control over many null experiments (the full check, with 500
experiments x 500 permutations, is ``benchmarks/bench_randomise.py --fwe``; see RESULTS.md)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from microvba.stats import randomise


@pytest.mark.slow
def test_fwe_rate_under_the_null():
    rng = np.random.default_rng(7)
    shape, n, n_exp, n_perm = (14, 14, 12), 40, 200, 200
    mask = np.ones(shape, bool)
    hits = {s: 0 for s in ("tfce", "vox", "clustere", "clusterm")}
    for i in range(n_exp):
        Y = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), 1.3)[mask]
                      for _ in range(n)])
        X = np.column_stack([np.ones(n), rng.normal(size=n), rng.normal(size=n)])
        res = randomise(Y, X, np.array([0, 1.0, 0]), mask, n_perm=n_perm, seed=i,
                        cluster_threshold=2.5, batch_size=100)
        for s in hits:
            hits[s] += bool((res.maps[f"{s}_corrp_tstat1"] > 0.95).any())
            hits[s] += bool((res.maps[f"{s}_corrp_tstat2"] > 0.95).any())
    for s, h in hits.items():
        rate = h / (2 * n_exp)
        # 400 direction-experiments: 95% binomial interval around 0.05 is about +-0.021
        assert 0.025 <= rate <= 0.075, (s, rate)
