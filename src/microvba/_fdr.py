"""Benjamini-Hochberg false discovery rate, in a leaf module.

It lives outside :mod:`microvba.stats` so that callers needing only q-values (the decoding
tables on the warm ``decode --roi`` path) do not import the stats package and, with it,
numba (~0.18 s of a fresh process); :mod:`microvba.stats` re-exports it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["fdr_bh"]


def fdr_bh(p: Sequence[float] | np.ndarray) -> np.ndarray:
    r"""Benjamini-Hochberg adjusted p-values (q-values) of a vector of p-values.

    :math:`q_{(i)} = \min_{j \ge i} \min(1, m\,p_{(j)} / j)` for the sorted p-values
    (Benjamini & Hochberg 1995); a voxel is significant at FDR :math:`\alpha` when
    :math:`q \le \alpha`. Equals ``statsmodels.stats.multitest.fdrcorrection``. NaN
    entries stay NaN and are not counted in :math:`m`. The one implementation in the package
    (voxel maps, cluster follow-up correlations and decoding tables call it).
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return q
    finite = p[ok]
    order = np.argsort(finite, kind="stable")
    ranked = finite[order] * m / np.arange(1, m + 1)
    q_sorted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(q_sorted, 1.0)
    q[ok] = out
    return q
