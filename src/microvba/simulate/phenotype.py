r"""Simulated participants: a resilience score and realistically correlated covariates.

Five variables are drawn from a Gaussian copula with the correlation matrix
:data:`CORRELATION` and mapped to their scales:

========== ============================================ ==================================
column     distribution                                 source of the values
========== ============================================ ==================================
resilience CD-RISC-25 total, N(52, 15) clipped to 0-100 depressed outpatients score ~50
age        N(37, 11) clipped to 18-65 years             adult depression cohorts
sex        F with probability 0.65                      depression is ~2:1 female
education  N(13, 3) clipped to 6-22 years
severity   HAMD-17 total, N(22, 5) clipped to 8-40      moderate to severe depression
========== ============================================ ==================================

Resilience correlates with severity (r = -0.40; CD-RISC vs HAMD in depressed samples), with
education (+0.20) and weakly with age (+0.10); women score slightly lower (-0.10).

The planted effects need a subject-level effect whose *partial* correlation with the score
(controlling for the covariates) is exactly the target: :func:`exact_partial_effect` solves
for it in closed form.

References
----------
Connor K.M., Davidson J.R.T. (2003) Development of a new resilience scale: the Connor-Davidson
Resilience Scale (CD-RISC). Depress Anxiety 18, 76-82.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

COLUMNS: tuple[str, ...] = ("participant_id", "resilience", "age", "sex", "education",
                            "severity")
SCORE = "resilience"
COVARIATES: tuple[str, ...] = ("age", "sex", "education", "severity")

#: latent correlations of (resilience, age, female, education, severity)
CORRELATION = np.array([
    [1.00, 0.10, -0.10, 0.20, -0.40],
    [0.10, 1.00, 0.00, -0.10, 0.05],
    [-0.10, 0.00, 1.00, 0.00, 0.10],
    [0.20, -0.10, 0.00, 1.00, -0.10],
    [-0.40, 0.05, 0.10, -0.10, 1.00],
])


def subject_labels(n_subjects: int) -> list[str]:
    """``01``, ``02``, ... (zero-padded to the width of ``n_subjects``, at least 2)."""
    width = max(2, len(str(n_subjects)))
    return [f"{i:0{width}d}" for i in range(1, n_subjects + 1)]


def simulate_participants(n_subjects: int, rng: np.random.Generator) -> pd.DataFrame:
    """A participants table (columns :data:`COLUMNS`), one row per subject."""
    from scipy.stats import norm

    z = rng.multivariate_normal(np.zeros(5), CORRELATION, size=n_subjects)
    female = z[:, 2] < norm.ppf(0.65)
    return pd.DataFrame({
        "participant_id": [f"sub-{label}" for label in subject_labels(n_subjects)],
        "resilience": np.clip(np.rint(52 + 15 * z[:, 0]), 0, 100).astype(int),
        "age": np.clip(np.rint(37 + 11 * z[:, 1]), 18, 65).astype(int),
        "sex": np.where(female, "F", "M"),
        "education": np.clip(np.rint(13 + 3 * z[:, 3]), 6, 22).astype(int),
        "severity": np.clip(np.rint(22 + 5 * z[:, 4]), 8, 40).astype(int),
    })


def covariate_matrix(participants: pd.DataFrame,
                     covariates: tuple[str, ...] = COVARIATES) -> np.ndarray:
    """Design of the nuisance part: intercept plus covariates (``sex`` coded F = 1)."""
    cols = [np.ones(len(participants))]
    for name in covariates:
        values = participants[name]
        if not pd.api.types.is_numeric_dtype(values):
            values = (values.astype(str) == "F").astype(float)
        cols.append(np.asarray(values, dtype=float))
    return np.column_stack(cols)


def residualise(y: np.ndarray, design: np.ndarray) -> np.ndarray:
    """Residuals of the least-squares fit of ``y`` (n,) or (n, k) on ``design``."""
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    return y - design @ beta


def partial_r(y: np.ndarray, score: np.ndarray, design: np.ndarray) -> np.ndarray:
    """Partial correlation of ``y`` (n,) or (n, k) with ``score`` given ``design``."""
    ry = residualise(np.asarray(y, dtype=float), design)
    rs = residualise(np.asarray(score, dtype=float), design)
    if ry.ndim == 1:
        return float(ry @ rs / np.sqrt((ry @ ry) * (rs @ rs)))
    return (rs @ ry) / np.sqrt((ry * ry).sum(axis=0) * (rs @ rs))


def exact_partial_effect(baseline: np.ndarray, score: np.ndarray, design: np.ndarray,
                         target_r: float) -> np.ndarray:
    r"""Subject effect :math:`\delta = x\,\sigma\,\hat R` giving an exact partial correlation.

    With :math:`R` the score residualised on ``design`` (standardised to :math:`\hat R`),
    :math:`a` the baseline residualised likewise (s.d. :math:`\sigma`, sample correlation
    :math:`\rho` with :math:`R`), adding :math:`\delta` moves only the part along :math:`R`,
    so :math:`\mathrm{corr}(a + \delta, R) = (\rho + x)/\sqrt{1 + 2\rho x + x^2}`, which equals
    the target :math:`r` for

    .. math:: x = -\rho + r\sqrt{(1-\rho^2)/(1-r^2)}.

    Returns
    -------
    ndarray
        ``(n,)`` effect to add to ``baseline`` (linear in the score: the planted effect is
        proportional to the covariate-adjusted resilience).
    """
    rs = residualise(np.asarray(score, dtype=float), design)
    rhat = rs / rs.std()
    ra = residualise(np.asarray(baseline, dtype=float), design)
    sigma = ra.std()
    rho = float(ra @ rs / np.sqrt((ra @ ra) * (rs @ rs)))
    x = -rho + target_r * np.sqrt((1.0 - rho**2) / (1.0 - target_r**2))
    return x * sigma * rhat
