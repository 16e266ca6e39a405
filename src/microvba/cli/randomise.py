"""``microvba randomise``: permutation inference on any 4-D stack of images, like FSL randomise.

Example::

    microvba randomise -i all_fa.nii.gz -m gm_mask.nii.gz -d design.tsv \\
        --contrast resilience --covariates age,sex -o stats/fa -n 5000

``design.tsv`` has one row per volume of the 4-D image and named columns; the ``--contrast``
column is tested (both directions: ``tstat1`` positive, ``tstat2`` negative), the
``--covariates`` (default: every other column except ``participant_id`` and the
``--blocks`` column) are nuisance regressors, and an intercept is added. Outputs are
``OUT_PREFIX_<map>.nii.gz`` (randomise names, corrp = 1 - p) and ``OUT_PREFIX_randomise.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .._validation import InputError
from ..stats.tfce import CONNECTIVITY_RANK

HELP = "Voxel-wise permutation inference (Freedman-Lane, exact TFCE, cluster and voxel FWE)."

#: columns never used as covariates by default
_ID_COLUMNS = ("participant_id", "session_id", "subject", "sub")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    io = parser.add_argument_group("input and output")
    io.add_argument("-i", "--input", required=True, type=Path, metavar="4D",
                    help="4-D NIfTI, one volume per subject")
    io.add_argument("-m", "--mask", required=True, type=Path, help="3-D analysis mask")
    io.add_argument("-d", "--design", required=True, type=Path, metavar="TSV",
                    help="design table: one row per volume, named columns")
    io.add_argument("-o", "--output", required=True, metavar="OUT_PREFIX",
                    help="output prefix, e.g. stats/fa -> stats/fa_tstat1.nii.gz")
    model = parser.add_argument_group("model")
    model.add_argument("--contrast", required=True, metavar="COLUMN",
                       help="the tested design column")
    model.add_argument("--covariates", type=_csv, default=None, metavar="A,B",
                       help="nuisance columns (default: all other columns)")
    model.add_argument("--blocks", default=None, metavar="COLUMN",
                       help="exchangeability blocks: permute only within its levels")
    inf = parser.add_argument_group("inference")
    inf.add_argument("-n", "--n-perm", type=int, default=5000,
                     help="permutations, including the unpermuted data")
    inf.add_argument("--seed", type=int, default=0)
    inf.add_argument("--no-tfce", action="store_true", help="skip TFCE")
    inf.add_argument("--tfce-H", type=float, default=2.0, help="TFCE height exponent")
    inf.add_argument("--tfce-E", type=float, default=0.5, help="TFCE extent exponent")
    inf.add_argument("--tfce-connectivity", type=int, default=6,
                     choices=sorted(CONNECTIVITY_RANK))
    inf.add_argument("--cluster-threshold", type=float, default=3.1,
                     help="cluster-forming threshold on t; 0 disables cluster inference")
    inf.add_argument("--cluster-connectivity", type=int, default=26,
                     choices=sorted(CONNECTIVITY_RANK))
    inf.add_argument("--one-sided", action="store_true",
                     help="test the positive direction only (no tstat2)")
    inf.add_argument("--corrcon", action="store_true",
                     help="also write *_famcorrp maps, FWE-corrected over both directions "
                          "(PALM -corrcon)")
    inf.add_argument("--n-jobs", type=int, default=None, help="threads (default: all cores)")


def _read_design(path: Path):
    import pandas as pd

    if not path.is_file():
        raise InputError("the design file does not exist", file=path,
                         fix="Pass a TSV with one row per volume.")
    try:
        df = pd.read_csv(path, sep="\t")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot parse the design as TSV ({exc})", file=path,
                         fix="Write a tab-separated table with a header row.") from exc
    if df.empty:
        raise InputError("the design has no rows", file=path, fix="Add one row per volume.")
    return df


def _load_images(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, object]:
    import nibabel as nib

    for path in (args.input, args.mask):
        if not Path(path).is_file():
            raise InputError("file not found", file=path, fix="Check the path.")
    try:
        img = nib.load(str(args.input))
        mask_img = nib.load(str(args.mask))
    except (nib.filebasedimages.ImageFileError, OSError, EOFError) as exc:
        raise InputError(f"cannot read the image ({exc})", file=args.input,
                         fix="Pass readable NIfTI files.") from exc
    if len(img.shape) != 4:
        raise InputError(f"the input must be 4-D (one volume per subject); shape {img.shape}",
                         file=args.input, fix="Merge the subjects' maps into a 4-D image.")
    mask_shape = mask_img.shape[:3] if len(mask_img.shape) == 4 and mask_img.shape[3] == 1 \
        else mask_img.shape
    if tuple(mask_shape) != tuple(img.shape[:3]):
        raise InputError(f"mask shape {mask_img.shape} differs from the image grid "
                         f"{img.shape[:3]}", file=args.mask,
                         fix="Resample the mask to the images' grid.")
    if not np.allclose(mask_img.affine, img.affine, atol=1e-3):
        raise InputError("the mask's affine differs from the images' affine", file=args.mask,
                         fix="Use a mask in the same space and grid as the images.")
    mask = np.asarray(mask_img.dataobj).reshape(mask_shape) > 0
    if not mask.any():
        raise InputError("the mask is empty", file=args.mask, fix="Use a non-empty mask.")
    data = np.asarray(img.dataobj, dtype=np.float32)
    Y = data[mask].T.copy()
    return Y, mask, img


def run(args: argparse.Namespace) -> int:
    from .._logging import get_logger
    from ..stats.design import make_design
    from ..stats.permutation import randomise_family

    log = get_logger(__name__)
    design_df = _read_design(args.design)
    Y, mask, img = _load_images(args)
    if Y.shape[0] != len(design_df):
        raise InputError(f"the 4-D image has {Y.shape[0]} volumes but the design "
                         f"{args.design} has {len(design_df)} rows", file=args.input,
                         fix="Give exactly one design row per volume, in the same order.")
    if args.blocks is not None and args.blocks not in design_df.columns:
        raise InputError(f"blocks column {args.blocks!r} is not in the design (columns: "
                         f"{list(design_df.columns)})", file=args.design,
                         fix="Name an existing column in --blocks.")
    covariates = args.covariates
    if covariates is None:
        covariates = [c for c in design_df.columns
                      if c not in (args.contrast, args.blocks, *_ID_COLUMNS)]
    design = make_design(design_df, args.contrast, covariates, source=str(args.design))
    blocks = None if args.blocks is None else design_df[args.blocks].to_numpy()
    log.info("design columns: %s", ", ".join(design.names))
    results = randomise_family(
        {str(args.input): Y}, design.matrix, design.contrast(args.contrast), mask,
        n_perm=args.n_perm, seed=args.seed, tfce=not args.no_tfce, tfce_H=args.tfce_H,
        tfce_E=args.tfce_E, tfce_connectivity=args.tfce_connectivity,
        cluster_threshold=args.cluster_threshold if args.cluster_threshold > 0 else None,
        cluster_connectivity=args.cluster_connectivity, exchangeability_blocks=blocks,
        two_sided=not args.one_sided, n_jobs=args.n_jobs, family_maps=args.corrcon)
    result = results[str(args.input)]
    result.params.update(design_columns=design.names, tested=args.contrast,
                         covariates=list(covariates), blocks_column=args.blocks)
    out = Path(args.output)
    paths = result.save(out.parent, out.name, mask, img.affine,
                        inputs={"input": args.input, "mask": args.mask, "design": args.design})
    log.info("wrote %d files to %s", len(paths), out.parent)
    for k in (1, 2):
        key = f"tfce_corrp_tstat{k}" if not args.no_tfce else f"vox_corrp_tstat{k}"
        if key in result.maps:
            n_sig = int((result.maps[key] > 0.95).sum())
            log.info("%s: %d voxel(s) with FWE p < 0.05", key, n_sig)
    return 0
