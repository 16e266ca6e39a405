"""Design tables with named columns (``microvba randomise -d design.tsv``).

One row per image and a header naming the columns; the tested column, covariates and
exchangeability blocks are chosen by name (:func:`microvba.stats.randomise.table_design`).
FSL VEST files (design.mat / design.con / design.grp) are read by :mod:`microvba.io.fsl`.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from .._resources import MAX_TABLE_BYTES, check_regular_file, decode_text
from .._validation import InputError
from .participants import trim_padding

#: columns never used as covariates by default
ID_COLUMNS = ("participant_id", "session_id", "subject", "sub")
#: first words of the lines of an FSL VEST file
VEST_MARKERS = ("/NumWaves", "/NumPoints", "/NumContrasts", "/Matrix", "/PPheights")


def read_design_table(path: str | Path) -> pd.DataFrame:
    """The design table of ``microvba randomise``: TSV (or CSV) with a header row.

    Rows are indexed by ``participant_id`` when that column is present and unique (else by
    ``line N``, the file's line number) so that problems name the subject. An FSL VEST
    design.mat/.con, an empty file, duplicate column names or ragged rows raise
    :class:`~microvba._validation.InputError` naming the file and the fix.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("the design file does not exist", file=path,
                         fix="Pass a TSV with one row per volume.")
    check_regular_file(path, "design file", MAX_TABLE_BYTES)
    try:
        text = decode_text(path.read_bytes())  # UTF-8, or UTF-16 with its BOM (Excel)
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the design as text ({exc})", file=path,
                         fix="Write a UTF-8 tab-separated table with a header row.") from exc
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if any(ln.lstrip().startswith(VEST_MARKERS) for ln in lines[:20]):
        raise InputError("this is an FSL design.mat/.con (VEST) file, not a table with "
                         "named columns", file=path,
                         fix="Pass the design.mat to -d with its design.con to -t, or write "
                             "design.tsv (a header row naming the columns, then one row per "
                             "volume) and name the tested column with --contrast.")
    if not lines:
        raise InputError("the design file is empty", file=path,
                         fix="Write a header row and one row per volume.")
    sep = "\t"
    if "\t" not in lines[0] and ("," in lines[0] or path.suffix.lower() == ".csv"):
        sep = ","  # a CSV design: accepted, the separator is unambiguous
    header = [c.strip() for c in lines[0].split(sep)]
    if not header[-1] or any(ln.endswith(sep) for ln in lines[1:]):  # spreadsheet padding
        header, body = trim_padding(header, [ln.split(sep) for ln in lines[1:]])
        text = "\n".join(sep.join(r) for r in [header, *body]) + "\n"
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise InputError(f"duplicate column names {dup}", file=path,
                         fix="Give every design column a unique name.")
    try:
        # identifiers stay text: participant_id 01 is not the number 1 (sub-01, not sub-1)
        df = pd.read_csv(io.StringIO(text), sep=sep, skip_blank_lines=True,
                         skipinitialspace=True,
                         dtype={c: str for c in header if c in ID_COLUMNS})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot parse the design as a table ({exc})", file=path,
                         fix="Write a tab-separated table with a header row and the same "
                             "number of values on every line.") from exc
    df.columns = [str(c).strip() for c in df.columns]
    if df.empty:
        raise InputError("the design has no rows", file=path, fix="Add one row per volume.")
    ids = df["participant_id"].astype(str).str.strip() if "participant_id" in df else None
    if ids is not None and not ids.is_unique and "session_id" not in df:
        dup = ids[ids.duplicated(keep=False)]
        shown = ", ".join(f"{v} (lines {', '.join(str(i + 2) for i in dup.index[dup == v])})"
                          for v in dict.fromkeys(dup))
        raise InputError(f"participant_id values repeated: {shown}", file=path,
                         fix="Give each subject one row (a copied row or a typo in an ID?); "
                             "for repeated measures of a subject add a session_id column "
                             "(and use --blocks participant_id to permute within subjects).")
    if ids is not None and ids.is_unique:
        df.index = pd.Index(ids.to_list(), name="participant_id")
    else:
        df.index = pd.Index([f"line {i + 2}" for i in range(len(df))], name="line")
    return df


def is_identifier(column: pd.Series) -> bool:
    """A column of text with a different value in every row (``subject_id``, file names):
    never a covariate unless named in ``--covariates`` (dummy-coded, it would take one
    degree of freedom per row)."""
    values = column.dropna()
    if len(values) < 2 or pd.api.types.is_numeric_dtype(column):
        return False
    return bool(values.astype(str).str.strip().is_unique)
