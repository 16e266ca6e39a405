"""Reading FSL-format gradient files (``.bval``/``.bvec``).

The scheme analysis (shell clustering, DSI grid detection) lives in
:mod:`microvba.models.gradients`; this module only reads and checks the text files.

Accepted text: numbers separated by spaces, tabs or commas (some tools write CSV), any line
endings (``\\n``, ``\\r\\n``, ``\\r``), trailing whitespace and blank lines. ``.bval``: one row
or one column. ``.bvec``: the FSL layout (3 rows, one column per volume) or its transpose
(one ``x y z`` row per volume).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .._logging import get_logger
from .._resources import MAX_TABLE_BYTES, check_regular_file, decode_text
from .._validation import InputError

log = get_logger(__name__)

#: b-values at or below this (s/mm^2) count as b=0 volumes (DIPY's default ``b0_threshold``)
B0_THRESHOLD = 50.0
#: largest accepted deviation of a b>0 gradient vector's norm from 1 (DIPY's ``atol``)
BVEC_NORM_TOL = 0.01

_SEP = re.compile(r"[\s,;]+")


def _rows(path: Path, what: str) -> list[list[str]]:
    if path.exists():  # a FIFO or a device is refused before it is opened
        check_regular_file(path, what, MAX_TABLE_BYTES)
    try:
        text = decode_text(path.read_bytes())  # UTF-8, or UTF-16 with its BOM
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {what} ({exc})", file=path,
                         fix=f"Provide a readable text file of {what}.") from exc
    return [[t for t in _SEP.split(line.strip()) if t]
            for line in text.splitlines() if line.strip(" \t,;\x00")]


def read_bvals(path: str | Path) -> np.ndarray:
    """Read an FSL ``.bval`` file (one row or one column of non-negative numbers)."""
    path = Path(path)
    rows = _rows(path, "b-values")
    if len(rows) > 1 and any(len(r) > 1 for r in rows):
        raise InputError(f"the b-value file has {len(rows)} rows of "
                         f"{', '.join(str(len(r)) for r in rows[:4])} values; one row (or one "
                         "column) of b-values is expected", file=path,
                         fix="Write all b-values on one line, one per volume (was a .bvec "
                             "file given as --bval?).")
    try:
        values = np.array([t for r in rows for t in r], dtype=float)
    except ValueError as exc:
        raise InputError("b-values are not all numbers", file=path,
                         fix="Write one number per volume separated by spaces.") from exc
    if values.size == 0:
        raise InputError("the b-value file is empty", file=path,
                         fix="Write one b-value per DWI volume.")
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise InputError("b-values must be finite and non-negative", file=path,
                         fix="Correct the negative, NaN or infinite entries.")
    _check_units(values, path)
    return values


def _check_units(values: np.ndarray, path: Path) -> None:
    """InputError for b-values written in ms/um^2 (max ~3) or s/m^2 (max ~3e9), not s/mm^2."""
    top = float(values.max())
    positive = np.unique(values[values > 0])
    if 0 < top <= 10 and positive.size >= 2:
        raise InputError(f"the b-values look like ms/um^2 (largest {top:g}, values "
                         f"{', '.join(f'{v:g}' for v in positive[:5])}); microvba reads "
                         "s/mm^2", file=path,
                         fix="Multiply the b-values by 1000 (e.g. 1 ms/um^2 = 1000 s/mm^2).")
    if top > 1e5:
        raise InputError(f"the b-values look like s/m^2 (largest {top:g}); microvba reads "
                         "s/mm^2", file=path,
                         fix="Divide the b-values by 1e6 (1e9 s/m^2 = 1000 s/mm^2).")


def read_bvecs(path: str | Path) -> np.ndarray:
    """Read an FSL ``.bvec`` file; return an (N, 3) array (3 x N files are transposed)."""
    path = Path(path)
    rows = _rows(path, "b-vectors")
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
    if arr.shape == (3, 3) and not np.allclose(arr, arr.T):
        # 3 volumes: FSL's rows-of-x,y,z and one-row-per-volume read differently
        log.warning("%s: a 3 x 3 b-vector table is ambiguous; it is read in the FSL layout "
                    "(rows x, y, z; one column per volume)", path)
    if arr.shape[0] == 3:
        arr = arr.T
    elif arr.shape[1] != 3:
        fix = "Write the FSL layout: 3 rows, one column per volume."
        if 4 in arr.shape:
            fix += (" A 4-column table is an MRtrix gradient file (x y z b; convert with "
                    "mrconvert -grad FILE -export_grad_fsl dwi.bvec dwi.bval) or a DSI Studio "
                    "b-table (b x y z): write its b column to the .bval and x y z to the "
                    ".bvec.")
        raise InputError(f"b-vectors must have 3 rows (x, y, z); found {arr.shape[0]} rows "
                         f"of {arr.shape[1]} values", file=path, fix=fix)
    if not np.all(np.isfinite(arr)):
        raise InputError("b-vectors contain NaN or infinite values", file=path,
                         fix="Replace them by unit vectors (or 0 0 0 for b=0 volumes).")
    return arr


def no_b0_problem(bvals: np.ndarray, b0_threshold: float = B0_THRESHOLD
                  ) -> tuple[str, str] | None:
    """``(problem, fix)`` when no volume has ``b <= b0_threshold``, else None."""
    bvals = np.asarray(bvals, float).ravel()
    if (bvals <= b0_threshold).any():
        return None
    return (f"no b=0 volume (smallest b-value {bvals.min():g}; b <= {b0_threshold:g} s/mm^2 "
            "counts as b=0)",
            "Include at least one b=0 volume in the series; microvba needs it to normalise "
            "the signal and to build the brain mask.")


def non_unit_problem(bvals: np.ndarray, bvecs: np.ndarray,
                     b0_threshold: float = B0_THRESHOLD,
                     tol: float = BVEC_NORM_TOL) -> tuple[str, str] | None:
    """``(problem, fix)`` when a volume with ``b > b0_threshold`` has a zero or non-unit
    gradient vector (``| |g| - 1 | > tol``), else None.

    Such vectors are not silently normalised: a norm far from 1 means a wrong file or a
    scheme whose b-values are encoded in the vector norms (``b_eff = b |g|^2``), and
    normalising would fit the wrong b-values.
    """
    bvals = np.asarray(bvals, float).ravel()
    norms = np.linalg.norm(np.asarray(bvecs, float).reshape(-1, 3), axis=1)
    bad = np.flatnonzero((bvals > b0_threshold) & (np.abs(norms - 1.0) > tol))
    if not bad.size:
        return None
    shown = ", ".join(f"{i} (b={bvals[i]:g}, |g|={norms[i]:.3g})" for i in bad[:8])
    more = f" and {bad.size - 8} more" if bad.size > 8 else ""
    problem = (f"{bad.size} volume(s) with b > {b0_threshold:g} have a zero or non-unit "
               f"gradient vector (|g| must be 1 +/- {tol:g}); volumes {shown}{more}")
    fix = ("Write unit vectors for diffusion-weighted volumes (normalise each column); if the "
           "vector norms encode the b-value (b_eff = b * |g|^2), write those effective "
           "b-values in the .bval and unit vectors in the .bvec; correct the b-value if the "
           "volume is a b=0 one; remove a Philips isotropic (trace) volume (b > 0, zero "
           "vector) from the image, .bval and .bvec.")
    return problem, fix
