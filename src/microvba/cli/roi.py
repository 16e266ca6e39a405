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
import re
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from .._provenance import make_sidecar, write_json, write_text
from .._validation import InputError, ProblemCollector
from ..io import derivatives
from ._types import seed

HELP = "Mean of a named atlas region in each map (a priori ROI), with a partial correlation."

_SUB = re.compile(r"sub-([A-Za-z0-9]+)")
_PARTICIPANT = derivatives.ROI_COLUMNS[3]


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--map", nargs="+", required=True, type=Path, metavar="MAP",
                        help="NIfTI maps in MNI space (3-D, or 4-D with one volume per subject)")
    parser.add_argument("--atlas", default="brainnetome",
                        choices=["brainnetome", "harvard_oxford", "aal"])
    parser.add_argument("--region", required=True,
                        help="region name, e.g. A23c, dCa, IFJ, A9/46d, A7r (Brainnetome), "
                             "with or without _L/_R")
    parser.add_argument("--hemisphere", choices=["L", "R"], default=None,
                        help="restrict to one hemisphere (None: both)")
    parser.add_argument("--participants", type=Path, default=None,
                        help="participants.tsv (needed with --score)")
    parser.add_argument("--score", default=None, help="participants.tsv column to correlate")
    parser.add_argument("--covariates", type=_csv, default=[],
                        help="comma-separated participants.tsv columns to control for")
    parser.add_argument("--method", choices=["pearson", "spearman"], default="pearson")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder holding atlases/brainnetome "
                             "(default $MICROVBA_DATA, else ~/.cache/microvba)")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="TSV to write (default: print to stdout)")


def _region_means(paths: list[Path], atlas, region: str, hemisphere: str | None
                  ) -> pd.DataFrame:
    problems = ProblemCollector()
    for p in paths:
        if not p.is_file():
            problems.add(p, "map not found", "Check the path of --map.")
    problems.raise_if_any()
    atlas.find(region, hemisphere)  # unknown region: InputError with close matches
    rows = []
    masks: dict[tuple, np.ndarray] = {}  # one resampling per grid
    for path in paths:
        try:
            img = nib.load(str(path))
        except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError) as exc:
            raise InputError(f"not a readable NIfTI image ({exc})", file=path,
                             fix="Pass NIfTI maps (.nii or .nii.gz).") from exc
        from ..io.bids import check_image_file

        check_image_file(path, signal=False)  # gzip CRC, truncation, voxel sizes
        if img.ndim not in (3, 4):
            raise InputError(f"expected a 3-D or 4-D image, got {img.ndim}-D", file=path,
                             fix="Pass 3-D maps or one 4-D stack.")
        grid = (img.shape[:3], img.affine.round(6).tobytes())
        if grid not in masks:
            masks[grid] = np.asarray(atlas.region_mask(region, hemisphere, img).dataobj) > 0
        mask = masks[grid]
        if not mask.any():
            raise InputError(f"region {region!r} has no voxel inside this map's field of view",
                             file=path, fix="Pass maps in MNI space covering the region.")
        n_vol = img.shape[3] if img.ndim == 4 else 1
        m = _SUB.search(path.name)
        for v in range(n_vol):
            vol = np.asarray(img.dataobj[..., v] if img.ndim == 4 else img.dataobj, float)
            vals = vol[mask]
            vals = vals[np.isfinite(vals)]
            rows.append((str(path), v, m.group(1) if m and n_vol == 1 else None,
                         int(vals.size), float(vals.mean()) if vals.size else float("nan")))
    # ROI_COLUMNS: region (inserted by the caller), map, volume, participant, n_voxels, mean
    return pd.DataFrame(rows, columns=list(derivatives.ROI_COLUMNS[1:]))


def _align(table: pd.DataFrame, participants: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Participants row of each map row (by sub-<label> in the name, else by order)."""
    labels = table[_PARTICIPANT]
    if labels.notna().all():
        unknown = sorted(set(labels) - set(participants.index))
        if unknown:
            raise InputError(f"maps of participants not in the table: {unknown[:10]}",
                             file=path, fix="Add them to participants.tsv or drop their maps.")
        return participants.loc[list(labels)]
    if len(table) != len(participants):
        raise InputError(f"{len(table)} map volumes but {len(participants)} participants, and "
                         "the map names carry no sub-<label> to match them",
                         file=path, fix="Pass one volume per participant in the table's order, "
                                        "or maps named sub-<label>_*.nii.gz.")
    table[_PARTICIPANT] = list(participants.index)
    return participants


def run(args: argparse.Namespace) -> int:
    from ..io.participants import read_participants
    from ..regions.atlases import load_atlas
    from ..regions.correlation import partial_corr

    if args.score and args.participants is None:
        raise InputError("--score needs --participants", file="--participants",
                         fix="Pass --participants participants.tsv.")
    atlas = load_atlas(args.atlas, args.data_dir)
    table = _region_means(list(args.map), atlas, args.region, args.hemisphere)
    table.insert(0, derivatives.ROI_COLUMNS[0], args.region + (f"_{args.hemisphere}" if args.hemisphere else ""))
    result = None
    if args.score:
        participants = read_participants(args.participants)
        problems = ProblemCollector()
        for col in [args.score, *args.covariates]:
            if col not in participants.columns:
                problems.add(args.participants, f"column {col!r} is missing",
                             f"Use one of: {', '.join(participants.columns)}.")
        problems.raise_if_any()
        rows = _align(table, participants, args.participants)
        table[args.score] = rows[args.score].to_numpy()
        for c in args.covariates:
            table[c] = rows[c].to_numpy()
        cov = rows[args.covariates].reset_index(drop=True) if args.covariates else None
        result = partial_corr(table["mean"].to_numpy(float), rows[args.score].to_numpy(float),
                              cov, method=args.method, n_boot=args.n_boot, seed=args.seed)
        n, _, _, r, lo, hi, p, blo, bhi, _ = (result[k] for k in derivatives.PARTIAL_CORR_KEYS)
        print(f"{args.region}: partial {args.method} r = {r:.3f} [{lo:.3f}, {hi:.3f}], "
              f"p = {p:.3g}, n = {n}, bootstrap CI [{blo:.3f}, {bhi:.3f}]", file=sys.stderr)
    text = table.to_csv(sep="\t", index=False)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    write_text(args.output, text)
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
              if k in ("atlas", "region", "hemisphere", "score", "covariates", "method",
                       "n_boot", "seed")}
    sidecar = make_sidecar(params, correlation=result, maps=[str(p) for p in args.map])
    name = args.output.name
    stem = name[: -len(".tsv")] if name.endswith(".tsv") else args.output.stem
    write_json(args.output.with_name(stem + ".json"), sidecar)
    return 0
