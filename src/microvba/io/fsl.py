"""FSL VEST files: ``design.mat``, ``design.con`` and ``design.grp`` as FSL's Glm writes them.

A VEST file is a header of ``/Key value`` lines followed by ``/Matrix`` and one row of
numbers per line::

    /NumWaves       3
    /NumPoints      20
    /PPheights      1.0     1.0     1.0

    /Matrix
    1       0.5     -1.2
    ...

``design.con`` has ``/ContrastName<k>`` lines, ``/NumWaves`` (the design's columns) and
``/NumContrasts`` (the rows of its matrix). As FSL, the reader ignores header lines it does not
use (``/PPheights``, ``/RequiredEffect``, text that is not a ``/Key``); it also tolerates
CRLF line ends, tabs or spaces, blank lines and ``#`` comment lines. Every problem raises
:class:`microvba._validation.InputError` naming the file, what is wrong and how to fix it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._resources import MAX_TABLE_BYTES, check_regular_file
from .._validation import InputError, ProblemCollector

#: header keys whose presence marks a file as VEST
VEST_MARKERS = ("/NumWaves", "/NumPoints", "/NumContrasts", "/Matrix", "/PPheights")

_FIX_FORMAT = ("Write the file as FSL's Glm or Text2Vest does: /NumWaves, /NumPoints (or "
               "/NumContrasts), /Matrix, then one row of numbers per line.")


@dataclass(frozen=True)
class VestFile:
    """The parsed content of a VEST file, before any check of its counts.

    Attributes
    ----------
    path : the file.
    header : ``/Key`` (without the slash, as written) -> the rest of its line, stripped.
    rows : the numeric rows after ``/Matrix``.
    row_lines : the 1-based line number of each row (for messages).
    """

    path: Path
    header: dict[str, str]
    rows: list[list[float]]
    row_lines: list[int]


@dataclass(frozen=True)
class FslDesign:
    """An FSL ``design.mat``: the design matrix used as given (no intercept is added).

    Attributes
    ----------
    matrix : (NumPoints, NumWaves) float64.
    path : the file it was read from.
    pp_heights : the ``/PPheights`` values, if present and numeric (unused by inference).
    """

    matrix: np.ndarray
    path: Path
    pp_heights: tuple[float, ...] | None = None

    @property
    def n_waves(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def n_points(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def names(self) -> list[str]:
        """Column names ``EV1``, ``EV2``, ... (as FSL's Glm calls them)."""
        return [f"EV{i + 1}" for i in range(self.n_waves)]

    def check_n_points(self, n_images: int, images: str | Path = "the input") -> None:
        """Raise InputError unless the design has one row per input image."""
        if self.n_points != n_images:
            raise InputError(
                f"the design has {self.n_points} rows (/NumPoints) but {images} has "
                f"{n_images} volumes", file=self.path,
                fix="Give exactly one design row per volume, in the order of the volumes "
                    "(e.g. re-create design.mat with Glm or Text2Vest for these subjects).")

    def has_constant(self, tol: float = 1e-8) -> bool:
        """Whether a constant (intercept) lies in the span of the columns."""
        X = self.matrix
        ones = np.ones(X.shape[0])
        beta, *_ = np.linalg.lstsq(X, ones, rcond=None)
        return bool(np.linalg.norm(X @ beta - ones) <= tol * math.sqrt(X.shape[0]))

    def demeaned(self, tol: float = 1e-6) -> bool:
        """Whether every column has a zero mean (relative to its scale)."""
        X = self.matrix
        scale = np.maximum(np.abs(X).max(axis=0), 1e-300)
        return bool(np.all(np.abs(X.mean(axis=0)) <= tol * scale))


@dataclass(frozen=True)
class FslContrasts:
    """An FSL ``design.con``: t contrasts, one per row.

    Attributes
    ----------
    matrix : (NumContrasts, NumWaves) float64.
    names : ``/ContrastName<k>`` of each contrast (``C<k>`` when absent or blank).
    path : the file it was read from.
    """

    matrix: np.ndarray
    names: list[str]
    path: Path

    @property
    def n_contrasts(self) -> int:
        return int(self.matrix.shape[0])

    def select(self, spec: str | None) -> list[int]:
        """0-based indices of the contrasts chosen by ``spec``.

        Parameters
        ----------
        spec : None (every contrast), a contrast name, or a comma-separated list of 1-based
            contrast numbers and/or names (``"1"``, ``"2,3"``, ``"age pos"``).

        Raises
        ------
        InputError
            A number is out of range or a name is not in the file.
        """
        if spec is None or not spec.strip():
            return list(range(self.n_contrasts))
        if spec.strip() in self.names and not spec.strip().isdigit():
            return [self.names.index(spec.strip())]
        chosen: list[int] = []
        for token in (t.strip() for t in spec.split(",")):
            if not token:
                continue
            if token.isdigit():
                k = int(token)
                if not 1 <= k <= self.n_contrasts:
                    raise InputError(
                        f"contrast number {k} is out of range: the file has "
                        f"{self.n_contrasts} contrast(s)", file=self.path,
                        fix=f"Pass --contrast with numbers from 1 to {self.n_contrasts} "
                            f"(or names among {self.names}).")
                idx = k - 1
            elif token in self.names:
                idx = self.names.index(token)
            else:
                raise InputError(
                    f"no contrast named {token!r} (contrasts: "
                    + ", ".join(f"{i + 1}={n!r}" for i, n in enumerate(self.names)) + ")",
                    file=self.path,
                    fix="Pass --contrast with a 1-based contrast number or a /ContrastName "
                        "of the file (several separated by commas), or leave it out to test "
                        "every contrast.")
            if idx not in chosen:
                chosen.append(idx)
        if not chosen:
            raise InputError(f"--contrast {spec!r} selects no contrast", file=self.path,
                             fix="Pass contrast numbers or names separated by commas.")
        return chosen


def is_vest(path: str | Path, n_lines: int = 20) -> bool:
    """Whether the first non-blank lines of a text file hold a VEST header key."""
    try:
        with open(path, "rb") as fh:  # the head only: a design may be large
            text = fh.read(65536).decode("utf-8-sig", errors="replace")
    except OSError:
        return False
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()][:n_lines]
    return any(ln.startswith(VEST_MARKERS) for ln in lines)


def _read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise InputError(f"the {what} file does not exist", file=path,
                         fix=f"Check the path of the {what} file.")
    check_regular_file(path, f"{what} file", MAX_TABLE_BYTES)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the {what} file ({exc.strerror})", file=path,
                         fix="Check the file's permissions.") from exc
    if b"\x00" in data[:4096]:
        raise InputError(f"the {what} file is binary, not a VEST text file", file=path,
                         fix=_FIX_FORMAT)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # contrast names written by older tools


def read_vest(path: str | Path, what: str = "VEST") -> VestFile:
    """Parse a VEST file into its header and numeric rows (counts are not checked here).

    Parameters
    ----------
    path : the file.
    what : how messages name the file (``"design.mat"``, ``"design.con"``).

    Raises
    ------
    InputError
        The file is missing or unreadable, has no ``/Matrix`` line, a matrix value is not a
        finite number, or a header key appears twice.
    """
    path = Path(path)
    text = _read_text(path, what)
    problems = ProblemCollector()
    header: dict[str, str] = {}
    rows: list[list[float]] = []
    row_lines: list[int] = []
    in_matrix = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_matrix:
            if not line.startswith("/"):
                continue  # FSL skips text before /Matrix that is not a /Key
            parts = line.split(None, 1)
            key = parts[0][1:]
            if key.lower() == "matrix":
                in_matrix = True
                if len(parts) > 1 and parts[1].strip():
                    problems.add(path, f"line {number}: values after /Matrix on the same line",
                                 "Put /Matrix on a line of its own, the rows below it.")
                continue
            if key in header:
                problems.add(path, f"line {number}: /{key} is given twice",
                             f"Keep one /{key} line.")
                continue
            header[key] = parts[1].strip() if len(parts) > 1 else ""
            continue
        if line.startswith("/"):
            problems.add(path, f"line {number}: header line {line.split()[0]!r} after /Matrix",
                         "Put every /Key line before /Matrix.")
            continue
        values = []
        for token in line.replace(",", " ").split():
            try:
                value = float(token)
            except ValueError:
                value = None
            if value is None or not math.isfinite(value):
                problems.add(path, f"line {number}: {token!r} is not a finite number",
                             "Write only numbers (e.g. 1, -0.5, 2.3e-01) in the matrix rows; "
                             "remove the subject's row or fill in the missing value.")
                break
            values.append(value)
        else:
            rows.append(values)
            row_lines.append(number)
    if not in_matrix:
        problems.add(path, "no /Matrix line: not a complete VEST file", _FIX_FORMAT)
    elif not rows and not problems:
        problems.add(path, "the /Matrix section is empty", "Add one row of numbers per line "
                     "after /Matrix.")
    problems.raise_if_any()
    return VestFile(path=path, header=header, rows=rows, row_lines=row_lines)


def _count(vest: VestFile, key: str, problems: ProblemCollector) -> int | None:
    raw = vest.header.get(key)
    if raw is None:
        problems.add(vest.path, f"the /{key} header line is missing",
                     f"Add a '/{key} <count>' line before /Matrix.")
        return None
    try:
        value = int(raw.split()[0]) if raw.split() else None
    except ValueError:
        value = None
    if value is None or value <= 0:
        problems.add(vest.path, f"/{key} is {raw!r}, not a positive integer",
                     f"Write '/{key} <count>' with the count of the matrix.")
        return None
    return value


def _check_shape(vest: VestFile, n_rows: int | None, n_cols: int | None, rows_key: str,
                 problems: ProblemCollector) -> None:
    if n_cols is not None:
        bad = [(ln, len(r)) for r, ln in zip(vest.rows, vest.row_lines, strict=True)
               if len(r) != n_cols]
        if bad:
            where = ", ".join(f"line {ln} has {k}" for ln, k in bad[:5])
            more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
            problems.add(vest.path, f"/NumWaves is {n_cols} but {len(bad)} matrix row(s) have "
                         f"another number of values: {where}{more}",
                         "Give every row one value per column and set /NumWaves to the "
                         "number of columns.")
    elif vest.rows and len({len(r) for r in vest.rows}) > 1:
        problems.add(vest.path, "the matrix rows have different numbers of values",
                     "Give every row the same number of values.")
    if n_rows is not None and len(vest.rows) != n_rows:
        problems.add(vest.path, f"/{rows_key} is {n_rows} but the matrix has {len(vest.rows)} "
                     "row(s)",
                     f"Set /{rows_key} to the number of rows after /Matrix (or add the "
                     "missing rows).")


def _floats(text: str) -> tuple[float, ...] | None:
    try:
        values = tuple(float(t) for t in text.split())
    except ValueError:
        return None
    return values or None


def read_design_mat(path: str | Path, n_images: int | None = None) -> FslDesign:
    """Read an FSL ``design.mat`` (``/NumWaves``, ``/NumPoints``, ``/Matrix``).

    Parameters
    ----------
    path : the file.
    n_images : when given, the number of input volumes the design must have rows for.

    Returns
    -------
    FslDesign
        The matrix as given: FSL adds no intercept, nor does this reader.

    Raises
    ------
    InputError
        Not a VEST design (e.g. a design.con), a missing or wrong count, rows of another
        length than ``/NumWaves``, a non-numeric value, or a row count other than
        ``n_images``.
    """
    vest = read_vest(path, "design.mat")
    problems = ProblemCollector()
    if "NumContrasts" in vest.header and "NumPoints" not in vest.header:
        raise InputError("this is a contrast file (/NumContrasts), not a design matrix",
                         file=vest.path,
                         fix="Pass the design matrix (design.mat) to -d and the contrasts "
                             "(design.con) to -t.")
    n_waves = _count(vest, "NumWaves", problems)
    n_points = _count(vest, "NumPoints", problems)
    _check_shape(vest, n_points, n_waves, "NumPoints", problems)
    problems.raise_if_any()
    pp = vest.header.get("PPheights")
    design = FslDesign(matrix=np.asarray(vest.rows, dtype=np.float64), path=vest.path,
                       pp_heights=_floats(pp) if pp else None)
    if n_images is not None:
        design.check_n_points(n_images)
    return design


_CONTRAST_NAME = re.compile(r"^ContrastName(\d+)$", re.IGNORECASE)


def read_design_con(path: str | Path, design: FslDesign | None = None) -> FslContrasts:
    """Read an FSL ``design.con`` (``/ContrastName<k>``, ``/NumWaves``, ``/NumContrasts``,
    ``/Matrix``).

    Parameters
    ----------
    path : the file.
    design : when given, the contrasts must have one weight per design column
        (``/NumWaves`` of both files equal).

    Raises
    ------
    InputError
        A missing or wrong count, rows of another length than ``/NumWaves``, a non-numeric
        value, an all-zero contrast, a ``/ContrastName<k>`` beyond ``/NumContrasts``, or a
        ``/NumWaves`` other than the design's.
    """
    vest = read_vest(path, "design.con")
    problems = ProblemCollector()
    if "NumPoints" in vest.header and "NumContrasts" not in vest.header:
        raise InputError("this is a design matrix (/NumPoints), not a contrast file",
                         file=vest.path,
                         fix="Pass the contrasts (design.con) to -t and the design matrix "
                             "(design.mat) to -d.")
    n_waves = _count(vest, "NumWaves", problems)
    n_con = _count(vest, "NumContrasts", problems)
    _check_shape(vest, n_con, n_waves, "NumContrasts", problems)
    problems.raise_if_any()
    names: dict[int, str] = {}
    for key, value in vest.header.items():
        m = _CONTRAST_NAME.match(key)
        if m:
            names[int(m.group(1))] = value
    beyond = sorted(k for k in names if not 1 <= k <= n_con)
    if beyond:
        problems.add(vest.path, f"/ContrastName{beyond[0]} but /NumContrasts is {n_con}",
                     "Number the contrast names from 1 to /NumContrasts.")
    matrix = np.asarray(vest.rows, dtype=np.float64)
    for k in np.flatnonzero(~matrix.any(axis=1)):
        problems.add(vest.path, f"contrast {k + 1} (line {vest.row_lines[k]}) is all zeros",
                     "Give the contrast a non-zero weight, or remove its row and lower "
                     "/NumContrasts.")
    if design is not None and n_waves != design.n_waves:
        problems.add(vest.path, f"/NumWaves is {n_waves} but the design {design.path} has "
                     f"{design.n_waves} columns (/NumWaves {design.n_waves})",
                     "Use the design.con written with this design.mat (one weight per "
                     "design column).")
    problems.raise_if_any()
    labels = [names.get(k + 1, "").strip() or f"C{k + 1}" for k in range(n_con)]
    return FslContrasts(matrix=matrix, names=labels, path=vest.path)


def read_design_grp(path: str | Path, n_images: int | None = None) -> np.ndarray:
    """Read an FSL ``design.grp`` (exchangeability blocks: one integer label per row).

    Raises
    ------
    InputError
        Not one column, a count mismatch, a non-integer label, or a row count other than
        ``n_images``.
    """
    vest = read_vest(path, "design.grp")
    problems = ProblemCollector()
    n_waves = _count(vest, "NumWaves", problems)
    n_points = _count(vest, "NumPoints", problems)
    _check_shape(vest, n_points, n_waves, "NumPoints", problems)
    problems.raise_if_any()
    labels = np.asarray(vest.rows, dtype=np.float64)
    if labels.shape[1] != 1:
        raise InputError(f"a group file has one column; /NumWaves is {labels.shape[1]}",
                         file=vest.path, fix="Write one block label per line (/NumWaves 1).")
    labels = labels[:, 0]
    if not np.all(labels == np.round(labels)):
        raise InputError("the block labels are not integers", file=vest.path,
                         fix="Label each subject's block with an integer (1, 2, ...).")
    if n_images is not None and labels.size != n_images:
        raise InputError(f"the group file has {labels.size} rows but the input has "
                         f"{n_images} volumes", file=vest.path,
                         fix="Give one block label per volume, in the order of the volumes.")
    return labels.astype(np.int64)


def format_vest(matrix: Iterable[Iterable[float]], *, contrast_names: list[str] | None = None
                ) -> str:
    """VEST text for a design (``contrast_names=None``) or contrast matrix, as FSL's Glm
    writes it (tab-separated, ``%e`` numbers)."""
    mat = np.atleast_2d(np.asarray([list(r) for r in matrix], dtype=np.float64))
    lines = []
    if contrast_names is not None:
        lines += [f"/ContrastName{i + 1}\t{n}" for i, n in enumerate(contrast_names)]
        lines += [f"/NumWaves\t{mat.shape[1]}", f"/NumContrasts\t{mat.shape[0]}"]
    else:
        lines += [f"/NumWaves\t{mat.shape[1]}", f"/NumPoints\t{mat.shape[0]}"]
    heights = np.ptp(mat, axis=0 if contrast_names is None else 1)
    lines += ["/PPheights\t\t" + "\t".join(f"{h:e}" for h in heights), "", "/Matrix"]
    lines += ["\t".join(f"{v:e}" for v in row) for row in mat]
    return "\n".join(lines) + "\n"
