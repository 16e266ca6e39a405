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

from .._validation import InputError, Problem, check_output_dir
from ..stats.tfce import CONNECTIVITY_RANK
from ._types import seed

HELP = "Voxel-wise permutation inference (Freedman-Lane, exact TFCE, cluster and voxel FWE)."

#: columns never used as covariates by default
_ID_COLUMNS = ("participant_id", "session_id", "subject", "sub")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    io = parser.add_argument_group("input and output")
    io.add_argument("-i", "--input", required=True, type=Path, nargs="+", metavar="IMG",
                    help="one 4-D NIfTI (one volume per subject), or one 3-D map per subject "
                         "in the order of the design rows (names with sub-<label> are checked "
                         "against its participant_id column)")
    io.add_argument("-m", "--mask", required=True, type=Path, help="3-D analysis mask")
    io.add_argument("-d", "--design", required=True, type=Path, metavar="TSV",
                    help="design table (TSV, or CSV): a header row naming the columns, then "
                         "one row per volume; not an FSL design.mat")
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
    inf.add_argument("--seed", type=seed, default=0)
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


_VEST_MARKERS = ("/NumWaves", "/NumPoints", "/NumContrasts", "/Matrix", "/PPheights")


def _read_design(path: Path):
    """The design table: TSV (or CSV) with a header row; rows indexed by participant_id
    (or by ``line N``) so that problems name the subject."""
    import pandas as pd

    if not path.is_file():
        raise InputError("the design file does not exist", file=path,
                         fix="Pass a TSV with one row per volume.")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the design as text ({exc})", file=path,
                         fix="Write a UTF-8 tab-separated table with a header row.") from exc
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if any(ln.lstrip().startswith(_VEST_MARKERS) for ln in lines[:20]):
        raise InputError("this is an FSL design.mat/.con (VEST) file; microvba reads a table "
                         "with named columns", file=path,
                         fix="Write design.tsv: a header row naming the columns (e.g. "
                             "participant_id, score, age), then one tab-separated row per "
                             "volume, and name the tested column with --contrast.")
    if not lines:
        raise InputError("the design file is empty", file=path,
                         fix="Write a header row and one row per volume.")
    sep = "\t"
    if "\t" not in lines[0] and ("," in lines[0] or path.suffix.lower() == ".csv"):
        sep = ","  # a CSV design: accepted, the separator is unambiguous
    header = [c.strip() for c in lines[0].split(sep)]
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise InputError(f"duplicate column names {dup}", file=path,
                         fix="Give every design column a unique name.")
    try:
        df = pd.read_csv(path, sep=sep, skip_blank_lines=True, skipinitialspace=True,
                         encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot parse the design as a table ({exc})", file=path,
                         fix="Write a tab-separated table with a header row and the same "
                             "number of values on every line.") from exc
    df.columns = [str(c).strip() for c in df.columns]
    if df.empty:
        raise InputError("the design has no rows", file=path, fix="Add one row per volume.")
    ids = df["participant_id"].astype(str).str.strip() if "participant_id" in df else None
    if ids is not None and ids.is_unique:
        df.index = pd.Index(ids.to_list(), name="participant_id")
    else:
        df.index = pd.Index([f"line {i + 2}" for i in range(len(df))], name="line")
    return df


def _nifti_stem(path: Path) -> str:
    name = Path(path).name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _subject_of(path: Path) -> str | None:
    """``sub-<label>`` named in a file name, or None."""
    import re

    m = re.search(r"(?:^|_)(sub-[A-Za-z0-9]+)", _nifti_stem(path))
    return m.group(1) if m else None


def _check_order(inputs: list[Path], design, design_path: Path) -> None:
    """With one 3-D map per subject named ``sub-<label>...``, check the design rows follow the
    same subjects in the same order (a silent mismatch would shuffle the scores)."""
    subjects = [_subject_of(p) for p in inputs]
    if design.index.name != "participant_id" or any(s is None for s in subjects):
        return
    rows = [r if r.startswith("sub-") else f"sub-{r}" for r in design.index]
    if subjects == rows:
        return
    if sorted(subjects) == sorted(rows):
        first = next(i for i, (a, b) in enumerate(zip(subjects, rows, strict=True)) if a != b)
        raise InputError(f"the design rows are in another order than the input images (image "
                         f"{first + 1} is {subjects[first]}, design row {first + 1} is "
                         f"{rows[first]})", file=design_path,
                         fix="List the images in the order of the design rows (or sort the "
                             "design rows like the images).")
    missing = [s for s in subjects if s not in rows]
    extra = [r for r in rows if r not in subjects]
    if len(missing) == len(subjects):  # another naming scheme: nothing to compare
        from .._logging import get_logger

        get_logger(__name__).warning("the input file names (%s, ...) and the design's "
                                     "participant_id (%s, ...) share no subject; the order "
                                     "cannot be checked", subjects[0], rows[0])
        return
    raise InputError(f"the input images and the design rows name different subjects (images "
                     f"without a row: {missing[:10]}; rows without an image: {extra[:10]})",
                     file=design_path,
                     fix="Give one design row per image, for the same subjects.")


def _load_images(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, object]:
    import nibabel as nib

    inputs = [Path(p) for p in args.input]
    for path in (*inputs, args.mask):
        if not Path(path).is_file():
            raise InputError("file not found", file=path, fix="Check the path.")

    def load(path: Path):
        try:
            return nib.load(str(path))
        except Exception as exc:  # noqa: BLE001 - nibabel raises many types for bad files
            raise InputError(f"cannot read the image ({exc})", file=path,
                             fix="Pass readable NIfTI files.") from exc

    imgs = [load(p) for p in inputs]
    mask_img = load(args.mask)
    if len(imgs) == 1:
        img = imgs[0]
        if len(img.shape) != 4:
            raise InputError(f"the input must be 4-D (one volume per subject), or several 3-D "
                             f"maps; shape {img.shape}", file=inputs[0],
                             fix="Merge the subjects' maps into a 4-D image, or pass one 3-D "
                                 "map per subject after -i.")
    else:
        for p, im in zip(inputs, imgs, strict=True):
            if not (len(im.shape) == 3 or (len(im.shape) == 4 and im.shape[3] == 1)):
                raise InputError(f"with several inputs each must be a 3-D map; shape "
                                 f"{im.shape}", file=p,
                                 fix="Pass one 3-D map per subject, or a single 4-D image.")
            if tuple(im.shape[:3]) != tuple(imgs[0].shape[:3]) or not np.allclose(
                    im.affine, imgs[0].affine, atol=1e-3):
                raise InputError(f"grid {im.shape[:3]} / affine differs from the first input "
                                 f"{inputs[0]} {imgs[0].shape[:3]}", file=p,
                                 fix="Pass maps on one grid (e.g. all normalised to the same "
                                     "template at the same resolution).")
        img = imgs[0]
    mask_shape = mask_img.shape[:3] if len(mask_img.shape) == 4 and mask_img.shape[3] == 1 \
        else mask_img.shape
    if tuple(mask_shape) != tuple(img.shape[:3]):
        raise InputError(f"mask shape {mask_img.shape} differs from the image grid "
                         f"{img.shape[:3]}", file=args.mask,
                         fix="Resample the mask to the images' grid.")
    if not np.allclose(mask_img.affine, img.affine, atol=1e-3):
        raise InputError("the mask's affine differs from the images' affine", file=args.mask,
                         fix="Use a mask in the same space and grid as the images.")
    try:
        mask = np.nan_to_num(np.asarray(mask_img.dataobj, dtype=np.float64)
                             ).reshape(mask_shape) > 0
        if len(imgs) == 1:
            Y = np.asarray(img.dataobj, dtype=np.float32)[mask].T.copy()
        else:
            Y = np.stack([np.asarray(im.dataobj, dtype=np.float32).reshape(mask_shape)[mask]
                          for im in imgs])
    except (OSError, EOFError, ValueError) as exc:
        raise InputError(f"truncated or corrupt image data ({type(exc).__name__}: {exc})",
                         file=args.input[0] if len(inputs) == 1 else "inputs",
                         fix="Copy or re-export the image files.") from exc
    if not mask.any():
        raise InputError("the mask is empty", file=args.mask, fix="Use a non-empty mask.")
    raw = np.asarray(mask_img.dataobj, dtype=np.float64)
    values = np.unique(raw[np.isfinite(raw)])
    if not np.isin(values, (0.0, 1.0)).all():
        from .._logging import get_logger

        get_logger(__name__).warning(
            "%s: the mask is not binary (values %g to %g); every voxel > 0 is analysed "
            "(threshold a probability map first, e.g. fslmaths gm -thr 0.3 -bin mask)",
            args.mask, values.min(), values.max())
    return Y, mask, img


def _drop_constant_voxels(Y: np.ndarray, mask: np.ndarray, inputs: list[Path], log
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Leave out voxels whose value is the same in every image (t is 0/0 there; rounding
    would otherwise give them a small spurious t). Their outputs are 0, as outside the mask."""
    finite = np.isfinite(Y).all(axis=0)
    const = finite & (np.ptp(np.where(finite, Y, 0), axis=0) == 0)
    if not const.any():
        return Y, mask
    if const.all():
        raise InputError("every voxel of the mask has the same value in all images",
                         file=inputs[0] if len(inputs) == 1 else "inputs",
                         fix="Check that the images differ between subjects (e.g. not all "
                             "copies of one map) and that the mask covers the data.")
    log.warning("%d of %d mask voxel(s) have the same value in every image (e.g. 0 outside "
                "the data); they are left out of the analysis", int(const.sum()), const.size)
    mask = mask.copy()
    mask[mask] = ~const
    return Y[:, ~const], mask


def run(args: argparse.Namespace) -> int:
    from .._logging import get_logger
    from ..stats.design import make_design
    from ..stats.permutation import randomise_family

    log = get_logger(__name__)
    out = Path(args.output)
    if str(args.output).endswith(("/", "\\")) or out.is_dir():
        raise InputError("the output prefix is a folder; randomise writes PREFIX_tstat1.nii.gz "
                         "and so on", file=args.output,
                         fix=f"Add a file-name prefix, e.g. -o {out / 'fa'}.")
    check_output_dir(out.parent, "output prefix's folder")
    design_df = _read_design(args.design)
    if args.contrast not in design_df.columns:
        cols = [c for c in design_df.columns if c not in _ID_COLUMNS]
        raise InputError(f"the --contrast column {args.contrast!r} is missing from the "
                         f"design (columns: {cols})", file=args.design,
                         fix=f"Pass one of {cols} as --contrast, or add the column.")
    Y, mask, img = _load_images(args)
    if Y.shape[0] != len(design_df):
        what = "4-D image has" if len(args.input) == 1 else "inputs are"
        raise InputError(f"the {what} {Y.shape[0]} volumes but the design "
                         f"{args.design} has {len(design_df)} rows",
                         file=args.input[0] if len(args.input) == 1 else args.design,
                         fix="Give exactly one design row per volume, in the same order.")
    Y, mask = _drop_constant_voxels(Y, mask, args.input, log)
    if len(args.input) > 1:
        _check_order(args.input, design_df, args.design)
    if args.blocks is not None and args.blocks not in design_df.columns:
        raise InputError(f"blocks column {args.blocks!r} is not in the design (columns: "
                         f"{list(design_df.columns)})", file=args.design,
                         fix="Name an existing column in --blocks.")
    covariates = args.covariates
    if covariates is None:
        covariates = [c for c in design_df.columns
                      if c not in (args.contrast, args.blocks, *_ID_COLUMNS)]
    try:
        design = make_design(design_df, args.contrast, covariates, source=str(args.design))
    except InputError as exc:
        if args.covariates is not None:
            raise
        hint = (f" (without --covariates every other design column is a covariate: "
                f"{', '.join(covariates)}; choose them with --covariates a,b)")
        raise InputError([Problem(p.file, p.problem, p.fix + hint)
                          for p in exc.problems]) from None
    blocks = None if args.blocks is None else design_df[args.blocks].to_numpy()
    log.info("design columns: %s", ", ".join(design.names))
    key = str(args.input[0]) if len(args.input) == 1 else "inputs"
    results = randomise_family(
        {key: Y}, design.matrix, design.contrast(args.contrast), mask,
        n_perm=args.n_perm, seed=args.seed, tfce=not args.no_tfce, tfce_H=args.tfce_H,
        tfce_E=args.tfce_E, tfce_connectivity=args.tfce_connectivity,
        cluster_threshold=args.cluster_threshold if args.cluster_threshold > 0 else None,
        cluster_connectivity=args.cluster_connectivity, exchangeability_blocks=blocks,
        two_sided=not args.one_sided, n_jobs=args.n_jobs, family_maps=args.corrcon)
    result = results[key]
    result.params.update(design_columns=design.names, tested=args.contrast,
                         covariates=list(covariates), blocks_column=args.blocks)
    inputs = {"mask": args.mask, "design": args.design}
    inputs.update({"input": args.input[0]} if len(args.input) == 1 else
                  {f"input{i + 1}": p for i, p in enumerate(args.input)})
    paths = result.save(out.parent, out.name, mask, img.affine, inputs=inputs)
    log.info("wrote %d files to %s", len(paths), out.parent)
    for k in (1, 2):
        key = f"tfce_corrp_tstat{k}" if not args.no_tfce else f"vox_corrp_tstat{k}"
        if key in result.maps:
            n_sig = int((result.maps[key] > 0.95).sum())
            log.info("%s: %d voxel(s) with FWE p < 0.05", key, n_sig)
    return 0
