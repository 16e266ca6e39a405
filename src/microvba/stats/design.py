r"""Design matrices and t contrasts for the voxel-wise GLM.

The model of every voxel is :math:`y = X \beta + \varepsilon` with
:math:`X = [1, s, c_1, \dots]`: an intercept, the tested score :math:`s` and the covariates;
non-numeric covariates are dummy-coded (treatment coding, the first level in sorted order is
the reference). A t contrast :math:`c` tests :math:`c'\beta`; :meth:`Design.contrast` builds
the one-hot contrast of a named column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .._validation import InputError, ProblemCollector

INTERCEPT = "intercept"


@dataclass(frozen=True)
class Design:
    """A full-rank design matrix with named columns.

    Attributes
    ----------
    matrix : (n, p) float64 array, intercept first.
    names : column names (``"intercept"``, the score, covariates; dummy columns are named
        ``"<covariate>[<level>]"``).
    source : file or table the design came from (for error messages).
    """

    matrix: np.ndarray
    names: list[str]
    source: str = "<design>"
    levels: dict[str, list[str]] = field(default_factory=dict)

    @property
    def n_subjects(self) -> int:
        return int(self.matrix.shape[0])

    def contrast(self, name: str) -> np.ndarray:
        """One-hot t contrast testing column ``name`` (a leading ``-`` negates it)."""
        sign = 1.0
        if name.startswith("-"):
            sign, name = -1.0, name[1:]
        if name not in self.names:
            raise InputError(f"No design column named {name!r}; columns are {self.names}.",
                             file=self.source, fix="Use one of the design's column names.")
        c = np.zeros(len(self.names))
        c[self.names.index(name)] = sign
        return c


def dummy_code(column: pd.Series, name: str) -> tuple[np.ndarray, list[str], list[str]]:
    """Treatment (dummy) coding of a categorical column: one 0/1 column per level but the
    first in sorted order (the reference, absorbed by the intercept).

    Returns ``(matrix (n, n_levels - 1), names "<name>[<level>]", levels)``; missing values
    are no level and give NaN rows. The one dummy coding of the package (the design of the
    voxel-wise GLM and the covariates of the cluster partial correlations).
    """
    na = column.isna().to_numpy()
    levels = sorted(column[~na].astype(str).unique())
    values = column.astype(str).to_numpy()
    cols = [np.where(na, np.nan, (values == lev).astype(np.float64)) for lev in levels[1:]]
    mat = np.column_stack(cols) if cols else np.zeros((len(values), 0))
    return mat, [f"{name}[{lev}]" for lev in levels[1:]], levels


def is_categorical(column: pd.Series) -> bool:
    """Text, boolean or category columns: dummy-coded (:func:`dummy_code`)."""
    return not _is_numeric(column)


def _is_numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


#: values spreadsheets and SPSS write for a missing value; refused when far outside the rest
MISSING_CODES = (-9999.0, -999.0, -99.0, 999.0, 9999.0)


def missing_code_rows(values: pd.Series) -> list[str]:
    """Rows whose value is a usual missing-data code (:data:`MISSING_CODES`) lying more than
    5 ranges of the other values from their median: such a value would be fitted as a real
    one and dominate the regression (``-999`` among resilience scores of 50-70)."""
    x = values.to_numpy(dtype=np.float64)
    coded = np.isin(x, MISSING_CODES)
    if not coded.any() or coded.all():
        return []
    others = x[~coded]
    far = np.abs(x - np.median(others)) > 5 * max(float(np.ptp(others)), 1e-12)
    return [str(r) for r in np.asarray(values.index)[coded & far]]


def make_design(participants: pd.DataFrame, score: str, covariates: Sequence[str] = (),
                *, source: str = "participants.tsv") -> Design:
    """Build the design ``[intercept, score, covariates...]`` from a participants table.

    Parameters
    ----------
    participants : one row per subject (in the order of the image stack).
    score : the tested regressor's column (must be numeric and non-constant).
    covariates : nuisance columns; numeric ones enter as they are, others are dummy-coded.
    source : name of the table used in error messages.

    Raises
    ------
    InputError
        A column is missing, a used value is missing (NaN), the score is not numeric or is
        constant, a covariate is constant, or the design is rank deficient / has no residual
        degrees of freedom.
    """
    covariates = [c for c in (covariates or []) if c]
    problems = ProblemCollector()
    for col in [score, *covariates]:
        if col not in participants.columns:
            problems.add(source, f"column {col!r} is missing (columns: "
                         f"{list(participants.columns)})",
                         "Add the column or fix its name in --score/--covariates.")
    if covariates.count(score) or len(set(covariates)) != len(covariates):
        problems.add(source, f"the score {score!r} or a covariate is listed twice",
                     "List each column once, the score not among the covariates.")
    problems.raise_if_any()
    for col in [score, *covariates]:
        missing = participants[col].isna().to_numpy()
        if missing.any():
            rows = [str(r) for r in np.asarray(participants.index)[missing][:10]]
            problems.add(source, f"column {col!r} has {int(missing.sum())} missing value(s) "
                         f"(rows {', '.join(rows)})",
                         "Fill in the values or exclude those subjects.")
    problems.raise_if_any()
    for col in [score, *covariates]:
        if _is_numeric(participants[col]) and (rows := missing_code_rows(participants[col])):
            codes = sorted({f"{v:g}" for v in participants.loc[rows, col]})
            problems.add(source, f"column {col!r} holds {', '.join(codes)} (rows "
                         f"{', '.join(rows[:10])}), far outside its other values: a "
                         "missing-data code? It would enter the fit as a real value",
                         "Write n/a for a missing value (BIDS) and leave those subjects out, "
                         "or correct the value.")
    problems.raise_if_any()
    if not _is_numeric(participants[score]):
        problems.add(source, f"the score {score!r} is not numeric",
                     "The tested score must be a numeric column.")
    elif np.ptp(participants[score].to_numpy(dtype=float)) == 0:
        problems.add(source, f"the score {score!r} is constant across subjects",
                     "Test a score that varies across subjects.")
    problems.raise_if_any()
    n = len(participants)
    columns = [np.ones(n), participants[score].to_numpy(dtype=np.float64)]
    names = [INTERCEPT, score]
    levels: dict[str, list[str]] = {}
    for col in covariates:
        series = participants[col]
        if _is_numeric(series):
            values = series.to_numpy(dtype=np.float64)
            if np.ptp(values) == 0:
                problems.add(source, f"covariate {col!r} is constant",
                             "Drop the covariate: the intercept already models it.")
            columns.append(values)
            names.append(col)
        else:
            mat, dummy_names, lev = dummy_code(series, col)
            alike: dict[str, list[str]] = {}
            for v in lev:
                alike.setdefault(" ".join(str(v).split()).casefold(), []).append(str(v))
            clash = [vs for vs in alike.values() if len(vs) > 1]
            if clash:  # 'F' and 'f ' would be two groups: a typo, not a third sex
                problems.add(source, f"categorical covariate {col!r} has levels that differ "
                             "only in upper/lower case or spaces: "
                             + "; ".join(", ".join(repr(v) for v in vs) for vs in clash),
                             f"Write each level of {col!r} one way (e.g. all 'F'), or give "
                             "distinct groups distinct names.")
            if not dummy_names:
                problems.add(source, f"categorical covariate {col!r} has a single level "
                             f"({lev[0]!r})", "Drop the covariate.")
            columns.extend(mat.T)
            names.extend(dummy_names)
            levels[col] = lev
    problems.raise_if_any()
    matrix = np.column_stack(columns)
    check_design_matrix(matrix, source=source, names=names)
    return Design(matrix=matrix, names=names, source=source, levels=levels)


def check_design_matrix(matrix: np.ndarray, *, source: str = "<design>",
                        names: Sequence[str] | None = None) -> np.ndarray:
    """Validate a design matrix (2-D, finite, full column rank, residual dof > 0)."""
    X = np.asarray(matrix, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise InputError(f"The design matrix must be 2-D. Got shape {X.shape}.", file=source,
                         fix="Pass an (n_subjects, n_regressors) matrix.")
    if not np.isfinite(X).all():
        raise InputError("The design matrix has NaN or infinite values.", file=source,
                         fix="Remove or fill the missing values.")
    n, p = X.shape
    if n <= p:
        raise InputError(f"The design has {p} regressors for {n} subjects: no residual "
                         "degrees of freedom.", file=source,
                         fix="Use fewer covariates or more subjects.")
    rank = np.linalg.matrix_rank(X)
    if rank < p:
        label = f" (columns {list(names)})" if names else ""
        raise InputError(f"The design matrix is rank deficient: rank {rank} < {p} "
                         f"regressors{label}; some columns are collinear.", file=source,
                         fix="Drop redundant covariates (e.g. one dummy per level too many).")
    return X
