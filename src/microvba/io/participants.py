"""Reading and checking the BIDS ``participants.tsv`` table.

The file is tab-separated, its first row names the columns, the ``participant_id`` column holds
``sub-<label>`` and ``n/a`` marks a missing value (BIDS 1.9, "Participants file"). The parser
is deliberately small and strict (no quoting, no type guessing beyond "every value is a
number"), so that any content either loads or raises :class:`~microvba._validation.InputError`.

Column types
------------
A column is *numeric* when every non-missing value parses as a finite number; it is then stored
as ``float64`` with ``NaN`` for missing values. Any other column keeps its text values
(``object`` dtype, ``None`` for missing values). A column used as a covariate may be
*categorical* (no value is a number, e.g. ``sex`` = ``M``/``F``: the statistics stage
dummy-codes it); a column mixing numbers and text is almost always a typo and is reported by
:func:`check_columns`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .._resources import MAX_TABLE_BYTES, check_regular_file
from .._validation import InputError, ProblemCollector

#: index name of the table returned by :func:`read_participants` (labels without ``sub-``)
INDEX_NAME = "participant"
#: cell contents read as a missing value (compared case-insensitively, after stripping)
MISSING = frozenset({"", "n/a", "na", "nan"})


def is_missing(cell: object) -> bool:
    """True for an empty cell, ``n/a`` (BIDS), ``NA``/``nan`` or a float NaN."""
    if cell is None:
        return True
    if isinstance(cell, float):
        return math.isnan(cell)
    return isinstance(cell, str) and cell.strip().lower() in MISSING


def as_number(cell: object) -> float | None:
    """``cell`` as a finite float, or None when it is not a finite number."""
    if isinstance(cell, bool):
        return None
    if isinstance(cell, int | float):
        value = float(cell)
    elif isinstance(cell, str):
        try:
            value = float(cell.strip())
        except ValueError:
            return None
    else:
        return None
    return value if math.isfinite(value) else None


def _strip_sub(label: str) -> str:
    return label[4:] if label.startswith("sub-") else label


def _unquote(cell: str) -> str:
    """Strip whitespace and one pair of surrounding double quotes (spreadsheet exports)."""
    cell = cell.strip()
    if len(cell) >= 2 and cell[0] == cell[-1] == '"':
        cell = cell[1:-1].strip()
    return cell


def trim_padding(header: list[str], rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """Drop the trailing separators a spreadsheet pads rows with (``score\t\t``).

    Trailing header names that are empty go, when every row is empty there (or shorter);
    cells after the last named column go from each row when they are empty. A value under
    an unnamed column is kept (then the row is reported as ragged, or the empty name as a
    duplicate).
    """
    n = len(header)
    while n > 1 and not header[n - 1].strip() and all(
            len(r) < n or not r[n - 1].strip() for r in rows):
        n -= 1
    trimmed = [r[:n] if len(r) > n and not any(c.strip() for c in r[n:]) else r
               for r in rows]
    return header[:n], trimmed


def _parse_rows(path: Path, text: str) -> tuple[list[str], list[list[str]]]:
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or not lines[0].strip():
        raise InputError("the table is empty (no header row)", file=path,
                         fix="Write a tab-separated header row starting with participant_id.")
    header = [_unquote(c) for c in lines[0].split("\t")]
    numbered = [(i, [_unquote(c) for c in line.split("\t")])
                for i, line in enumerate(lines[1:], start=2) if line.strip()]
    header, cells_of = trim_padding(header, [c for _, c in numbered])
    problems = ProblemCollector()
    rows: list[list[str]] = []
    for (i, _), cells in zip(numbered, cells_of, strict=True):
        if len(cells) != len(header):
            problems.add(path, f"line {i} has {len(cells)} tab-separated values but the header "
                               f"has {len(header)} columns",
                         "Separate values by single tabs (not spaces) and write n/a for a "
                         "missing value, so every line has one value per column.")
            continue
        rows.append(cells)
    problems.raise_if_any()
    return header, rows


def _check_header(path: Path, header: list[str]) -> None:
    if "participant_id" not in header:
        cols = ", ".join(repr(c) for c in header[:10])
        raise InputError(f"no 'participant_id' column (columns: {cols})", file=path,
                         fix="Name the first column participant_id and separate columns by "
                             "tabs, as BIDS requires.")
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise InputError(f"duplicate column names {dup}", file=path,
                         fix="Give every column a unique name.")


def _typed_column(values: list[str]) -> pd.Series:
    present = [v for v in values if not is_missing(v)]
    numbers = [as_number(v) for v in present]
    if present and all(n is not None for n in numbers):
        return pd.Series([math.nan if is_missing(v) else as_number(v) for v in values],
                         dtype="float64")
    return pd.Series([None if is_missing(v) else v for v in values], dtype="object")


def read_participants(path: str | Path) -> pd.DataFrame:
    """Read a BIDS ``participants.tsv``.

    Parameters
    ----------
    path
        The tab-separated file (UTF-8, a BOM is allowed).

    Returns
    -------
    pandas.DataFrame
        One row per participant, indexed by the label without ``sub-`` (index name
        ``"participant"``); the ``participant_id`` column is kept as written. Numeric columns
        are ``float64`` with ``NaN`` for ``n/a``; other columns keep their text, with ``None``
        for missing values (see the module docstring).

    Raises
    ------
    InputError
        The file is missing or unreadable, not a regular file (a FIFO, a device), larger
        than :data:`microvba._resources.MAX_TABLE_BYTES`, is not UTF-8, has no ``participant_id`` column,
        has duplicate columns, rows of the wrong length, empty or duplicate participant ids.
    """
    path = Path(path)
    try:
        if path.exists():  # a FIFO or /dev/zero is refused before it is opened
            check_regular_file(path, "file", MAX_TABLE_BYTES)
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError as exc:
        raise InputError("participants.tsv not found", file=path,
                         fix="Add a tab-separated participants.tsv at the dataset root with a "
                             "participant_id column and one row per subject.") from exc
    except OSError as exc:
        raise InputError(f"cannot read the file ({exc.strerror})", file=path,
                         fix="Make participants.tsv a readable regular file.") from exc
    except UnicodeDecodeError as exc:
        raise InputError("not UTF-8 text", file=path,
                         fix="Save participants.tsv as UTF-8 tab-separated text.") from exc
    header, rows = _parse_rows(path, text)
    _check_header(path, header)
    table = {col: [r[j] for r in rows] for j, col in enumerate(header)}
    ids = table["participant_id"]
    labels = [_strip_sub(i) for i in ids]
    problems = ProblemCollector()
    empty = [n for n, lab in enumerate(labels, start=2) if is_missing(lab)]
    if empty:
        problems.add(path, f"empty participant_id on line(s) {empty}",
                     "Write sub-<label> in the participant_id column of every row.")
    dup = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dup:
        problems.add(path, f"participants listed more than once: {['sub-' + d for d in dup]}",
                     "Keep one row per participant.")
    problems.raise_if_any()
    df = pd.DataFrame({col: (pd.Series(vals, dtype="object") if col == "participant_id"
                             else _typed_column(vals))
                       for col, vals in table.items()})
    df.index = pd.Index(labels, name=INDEX_NAME, dtype="object")
    return df


def column_problems(df: pd.DataFrame, column: str, labels: Sequence[str], path: str | Path,
                    *, numeric: bool) -> ProblemCollector:
    """Problems of one requested column for the participants ``labels``.

    Parameters
    ----------
    df
        Table from :func:`read_participants`.
    column
        Requested column (a score or a covariate).
    labels
        Participants that enter the analysis (labels without ``sub-``, all present in ``df``).
    path
        The participants.tsv, named in each problem.
    numeric
        True for the score (every value must be a number); False for a covariate, which may
        also be categorical (no value is a number) but not a mixture of numbers and text.
    """
    problems = ProblemCollector()
    if column not in df.columns or column == "participant_id":
        role = "score" if numeric else "covariate"
        cols = [c for c in df.columns if c != "participant_id"]
        problems.add(path, f"no column '{column}' (the requested {role}); columns are {cols}",
                     f"Add a '{column}' column or pass one of {cols}.")
        return problems
    values = df.loc[list(labels), column]
    missing = [lab for lab, v in values.items() if is_missing(v)]
    if missing:
        problems.add(path, f"missing value (n/a or empty) in column '{column}' for "
                           f"{_fmt_subjects(missing)}",
                     f"Fill in '{column}' for these participants or exclude them with "
                     "--participant-label.")
    if df[column].dtype.kind == "f":
        return problems
    present = [(lab, v) for lab, v in values.items() if not is_missing(v)]
    text = [(lab, v) for lab, v in present if as_number(v) is None]
    if numeric and text:
        problems.add(path, f"column '{column}' must hold numbers; non-numeric values "
                           f"{_fmt_values(text)}",
                     f"Write a number (e.g. 42 or 3.5) for every participant in '{column}'.")
    elif not numeric and text and len(text) < len(present):
        problems.add(path, f"column '{column}' mixes numbers and text (text values "
                           f"{_fmt_values(text)})",
                     f"Use numbers only (a numeric covariate) or text labels only (a "
                     f"categorical covariate such as M/F) in '{column}'.")
    return problems


def _fmt_subjects(labels: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(f"sub-{lab}" for lab in labels[:limit])
    return shown + (f" and {len(labels) - limit} more" if len(labels) > limit else "")


def _fmt_values(pairs: Sequence[tuple[str, object]], limit: int = 10) -> str:
    shown = ", ".join(f"sub-{lab}={v!r}" for lab, v in pairs[:limit])
    return shown + (f" and {len(pairs) - limit} more" if len(pairs) > limit else "")
