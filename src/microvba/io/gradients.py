"""Reading FSL-format gradient files (``.bval``/``.bvec``).

The scheme analysis (shell clustering, DSI grid detection) lives in
:mod:`microvba.models.gradients`; this module only reads and checks the text files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._validation import InputError


def read_bvals(path: str | Path) -> np.ndarray:
    """Read an FSL ``.bval`` file (one row or one column of non-negative numbers)."""
    path = Path(path)
    try:
        text = path.read_text()
        values = np.array(text.split(), dtype=float)
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read b-values ({exc})", file=path,
                         fix="Provide a readable text file of b-values.") from exc
    except ValueError as exc:
        raise InputError("b-values are not all numbers", file=path,
                         fix="Write one number per volume separated by spaces.") from exc
    if values.size == 0:
        raise InputError("the b-value file is empty", file=path,
                         fix="Write one b-value per DWI volume.")
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise InputError("b-values must be finite and non-negative", file=path,
                         fix="Correct the negative, NaN or infinite entries.")
    return values


def read_bvecs(path: str | Path) -> np.ndarray:
    """Read an FSL ``.bvec`` file; return an (N, 3) array (3 x N files are transposed)."""
    path = Path(path)
    try:
        rows = [r.split() for r in path.read_text().splitlines() if r.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read b-vectors ({exc})", file=path,
                         fix="Provide a readable text file of b-vectors.") from exc
    if not rows:
        raise InputError("the b-vector file is empty", file=path,
                         fix="Write three rows (x, y, z) with one column per volume.")
    if len({len(r) for r in rows}) != 1:
        raise InputError("b-vector rows have different lengths", file=path,
                         fix="Write three rows (x, y, z) of equal length, one column per volume.")
    try:
        arr = np.array(rows, dtype=float)
    except ValueError as exc:
        raise InputError("b-vectors are not all numbers", file=path,
                         fix="Write three rows of numbers (x, y, z).") from exc
    if arr.shape[0] == 3:
        arr = arr.T
    elif arr.shape[1] != 3:
        raise InputError(f"b-vectors must have 3 rows (x, y, z); found {arr.shape[0]} rows "
                         f"of {arr.shape[1]} values", file=path,
                         fix="Write the FSL layout: 3 rows, one column per volume.")
    if not np.all(np.isfinite(arr)):
        raise InputError("b-vectors contain NaN or infinite values", file=path,
                         fix="Replace them by unit vectors (or 0 0 0 for b=0 volumes).")
    return arr
