"""The ROI-association p (decode ``p``, and its BH ``q``) holds its level on null tables,
down to the Benjamini-Hochberg thresholds of 50 topics and 2,003 terms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from microvba.decode.decoder import _chi2_and_fisher, _fisher_exact

N_STUDIES = 14371  # Neurosynth v0.7


def test_fisher_exact_equals_scipy():
    rng = np.random.default_rng(1)
    rows = [(0, 50, 0, 14321), (50, 0, 10, 14311), (0, 50, 3000, 11321), (1, 0, 0, 0),
            (0, 0, 0, 5), (5, 45, 1400, 12921)]
    for i in range(400):
        n1, hits = int(rng.integers(1, 4000)), int(rng.integers(0, N_STUDIES))
        lo, hi = max(0, n1 - (N_STUDIES - hits)), min(n1, hits)
        a = int(rng.integers(lo, hi + 1)) if i % 2 else int(
            rng.hypergeometric(hits, N_STUDIES - hits, n1))
        rows.append((a, n1 - a, hits - a, N_STUDIES - n1 - hits + a))
    a, b, c, d = np.array(rows).T
    ref = [stats.fisher_exact([[w, x], [y, z]]).pvalue for w, x, y, z in rows]
    np.testing.assert_allclose(_fisher_exact(a, b, c, d), ref, rtol=1e-9, atol=1e-300)


@pytest.mark.parametrize(("hit_rate", "n_selected"),
                         [(0.005, 1000), (0.01, 1000), (0.03, 300), (0.1, 100), (0.3, 3000)])
def test_null_rejection_rate_at_most_alpha(hit_rate, n_selected):
    """Exact null rates: with the ROI's hits fixed, a feature's hits among its selected
    studies are hypergeometric when the feature is unrelated to the ROI, so P(p <= alpha)
    is a finite sum. The chi-square p used before rejected up to 3.9x (1e-4) and 5.9x
    (2.5e-5, the first BH threshold over 2,003 terms) too often in these cells."""
    hits = round(hit_rate * N_STUDIES)
    lo, hi = max(0, n_selected - (N_STUDIES - hits)), min(n_selected, hits)
    a = np.arange(lo, hi + 1)
    pmf = stats.hypergeom.pmf(a, N_STUDIES, hits, n_selected)
    _, p, _ = _chi2_and_fisher(a, n_selected - a, hits - a, N_STUDIES - n_selected - hits + a)
    for alpha in (0.05, 0.01, 1e-3, 1e-4, 2.5e-5):
        assert pmf[p <= alpha].sum() <= alpha * (1 + 1e-9), alpha
