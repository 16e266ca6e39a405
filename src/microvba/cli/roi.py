"""``microvba roi``: a priori region-of-interest means from an atlas, with a partial correlation.

Example::

    microvba roi --map sub-*_space-MNI152NLin2009aSym_model-tensor_param-ad_dwimap.nii.gz \\
        --atlas brainnetome --region A23c --hemisphere L \\
        --participants participants.tsv --score resilience --covariates age,sex -o roi.tsv

One row per map (one per volume of a 4-D map): ``map``, ``volume``, ``participant`` (when
known), ``n_voxels`` and ``mean`` over the region's voxels (NaN voxels ignored). The region
mask is resampled (nearest neighbour) onto each map's grid. With ``--score``, the partial
correlation of the means with the score controlling ``--covariates`` is printed and written to
``<OUT stem>.json``. Maps are matched to participants by the ``sub-<label>`` in their file name,
else by order (the rows of participants.tsv in file order, e.g. for one 4-D map).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..io import derivatives
from ._types import path_arg, seed

HELP = "Mean of a named atlas region in each map (a priori ROI), with a partial correlation."

def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--map", nargs="+", required=True, type=path_arg, metavar="MAP",
                        help="NIfTI maps in MNI space (3-D, or 4-D with one volume per subject)")
    parser.add_argument("--atlas", default="brainnetome",
                        choices=["brainnetome", "harvard_oxford", "aal"])
    parser.add_argument("--region", required=True,
                        help="region name, e.g. A23c, dCa, IFJ, A9/46d, A7r (Brainnetome), "
                             "with or without _L/_R")
    parser.add_argument("--hemisphere", choices=["L", "R"], default=None,
                        help="restrict to one hemisphere (None: both)")
    parser.add_argument("--participants", type=path_arg, default=None,
                        help="participants.tsv (needed with --score)")
    parser.add_argument("--score", default=None, help="participants.tsv column to correlate")
    parser.add_argument("--covariates", type=_csv, default=[],
                        help="comma-separated participants.tsv columns to control for")
    parser.add_argument("--method", choices=["pearson", "spearman"], default="pearson")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument("--data-dir", type=path_arg, default=None,
                        help="folder holding atlases/brainnetome "
                             "(default $MICROVBA_DATA, else ~/.cache/microvba)")
    parser.add_argument("-o", "--output", type=path_arg, default=None,
                        help="TSV to write (default: print to stdout)")


def _check_columns(path: Path, score: str, covariates: list[str]) -> None:
    """Before any map is read: the score must be numeric (a text score such as
    patient/control ended with "ValueError: could not convert string to float", exit 1),
    and the participants whose score or covariates are n/a, left out of the correlation,
    are named in a warning (the printed n was the only sign)."""
    from .._logging import get_logger
    from .._validation import InputError
    from ..io.participants import read_participants

    rows = read_participants(path)
    if score not in rows.columns:
        return  # roi_analysis names the missing columns with the alternatives
    values = rows[score]
    if values.dtype == object:
        levels = sorted({str(v) for v in values.dropna()})
        shown = ", ".join(repr(v) for v in levels[:5]) + (" ..." if len(levels) > 5 else "")
        fix = (f"Code the groups as numbers (e.g. 0 = {levels[0]}, 1 = {levels[1]}) in a "
               "new column and pass it to --score" if len(levels) == 2 else
               "Pass a numeric column to --score")
        raise InputError(f"the score {score!r} is not numeric (values {shown})", file=path,
                         fix=fix + ".")
    used = [c for c in [score, *covariates] if c in rows.columns]
    from ..stats.design import missing_code_rows

    for col in used:  # -999 from a spreadsheet would enter the correlation as a value
        coded = missing_code_rows(rows[col].dropna()) if rows[col].dtype.kind == "f" else []
        if coded:
            raise InputError(f"column {col!r} holds {rows.loc[coded[0], col]:g} for "
                             f"{', '.join('sub-' + c for c in coded[:10])}, far outside its "
                             "other values: a missing-data code?", file=path,
                             fix="Write n/a for a missing value (BIDS; those participants are "
                                 "left out), or correct the value.")
    missing = rows[used].isna().any(axis=1)
    if missing.any():
        ids = rows.loc[missing, "participant_id"].astype(str).tolist() \
            if "participant_id" in rows else [str(i) for i in rows.index[missing]]
        get_logger(__name__).warning(
            "%s: %d participant(s) with n/a in %s are left out of the correlation: %s",
            path, len(ids), ", ".join(used), ", ".join(ids[:10]) + (" ..." if len(ids) > 10
                                                                    else ""))


def run(args: argparse.Namespace) -> int:
    from .._validation import InputError, check_output_dir
    from ..regions.roi import roi_analysis

    if args.output is not None:  # before any map is read
        if args.output.is_dir():
            raise InputError("-o/--output is an existing folder; it names the table to write",
                             file=args.output,
                             fix=f"Pass a file name, e.g. -o {args.output / 'roi.tsv'}.")
        check_output_dir(args.output.parent)
    if args.score and args.participants is not None:
        _check_columns(Path(args.participants), args.score, list(args.covariates))
    result = roi_analysis(args.map, args.atlas, args.region, hemisphere=args.hemisphere,
                          participants=args.participants, score=args.score,
                          covariates=args.covariates, method=args.method,
                          n_boot=args.n_boot, seed=args.seed, data_dir=args.data_dir)
    r = result.correlation
    if r is not None:
        n, _, _, rr, lo, hi, p, blo, bhi, _ = (r[k] for k in derivatives.PARTIAL_CORR_KEYS)
        print(f"{args.region}: partial {args.method} r = {rr:.3f} [{lo:.3f}, {hi:.3f}], "
              f"p = {p:.3g}, n = {n}, bootstrap CI [{blo:.3f}, {bhi:.3f}]", file=sys.stderr)
    if args.output is None:
        sys.stdout.write(result.to_tsv())
        return 0
    result.save(args.output)
    return 0
