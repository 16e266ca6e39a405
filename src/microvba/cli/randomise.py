"""``microvba randomise``: permutation inference on any 4-D stack of images, like FSL randomise.

Example::

    microvba randomise -i all_fa.nii.gz -m gm_mask.nii.gz -d design.tsv \\
        --contrast resilience --covariates age,sex -o stats/fa -n 5000

``design.tsv`` has one row per volume of the 4-D image and named columns; the ``--contrast``
column is tested (both directions: ``tstat1`` positive, ``tstat2`` negative), the
``--covariates`` (default: every other column except ``participant_id`` and the
``--blocks`` column) are nuisance regressors, and an intercept is added. Outputs are
``OUT_PREFIX_<map>.nii.gz`` (randomise names, corrp = 1 - p) and ``OUT_PREFIX_randomise.json``.

FSL design files are read as FSL randomise reads them::

    microvba randomise -i all_fa.nii.gz -o stats/fa -d design.mat -t design.con \
        -m gm_mask.nii.gz -n 5000 [-e design.grp] [--contrast 1,3]

The design.mat is used as given (no intercept is added: include a column of 1s, needed when
the regressors are demeaned); each t contrast ``k`` of design.con (every one by default, or
those chosen by number or ``/ContrastName`` with ``--contrast``) is tested in its own
direction, as FSL does, and written as ``OUT_PREFIX_tstat<k>``, ``OUT_PREFIX_tfce_corrp_tstat<k>``
and so on; ``--corrcon`` adds maps FWE-corrected over the tested contrasts
(``*_famcorrp_tstat<k>``).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from .._resources import MAX_TABLE_BYTES, check_regular_file
from .._validation import InputError, Problem, check_option_number, check_output_dir
from ..io import derivatives
from ..io.fsl import FslContrasts, FslDesign
from ..stats.tfce import CONNECTIVITY_RANK
from ._types import seed

HELP = "Voxel-wise permutation inference (Freedman-Lane, exact TFCE, cluster and voxel FWE)."

#: columns never used as covariates by default
_ID_COLUMNS = ("participant_id", "session_id", "subject", "sub")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


@dataclass(frozen=True)
class RandomiseOptions:
    """The inference options of ``microvba randomise`` (defaults declared here only),
    checked when built, before any file is read: ``-n`` an integer >= 2 whose null
    distributions fit in memory, TFCE ``H``/``E`` in (0, 10], a finite cluster-forming
    threshold >= 0, ``--n-jobs`` >= 1 (capped to the usable cores unless
    ``--oversubscribe``)."""

    n_perm: int = 5000
    seed: int = 0
    tfce_H: float = 2.0
    tfce_E: float = 0.5
    tfce_connectivity: int = 6
    cluster_threshold: float = 3.1
    cluster_connectivity: int = 26
    n_jobs: int | None = None
    oversubscribe: bool = False
    two_sided: bool = True

    def __post_init__(self) -> None:
        from .._resources import check_permutations
        from ..workflows.executor import check_n_jobs

        n = check_option_number("-n/--n-perm", self.n_perm, 2, None, integer=True,
                                hint="5000 as FSL randomise; the smallest p is 1/n")
        check_option_number("--tfce-H", self.tfce_H, 0.0, 10.0, low_open=True)
        check_option_number("--tfce-E", self.tfce_E, 0.0, 10.0, low_open=True)
        check_option_number("--cluster-threshold", self.cluster_threshold, 0.0, None,
                            hint="a t value, 0 disables cluster inference")
        object.__setattr__(self, "n_jobs", check_n_jobs(self.n_jobs, self.oversubscribe))
        check_permutations(n, option="-n/--n-perm", n_signs=2 if self.two_sided else 1)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RandomiseOptions:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)
                      if f.name != "two_sided"}, two_sided=not args.one_sided)


_DEFAULTS = {f.name: f.default for f in fields(RandomiseOptions)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    io = parser.add_argument_group("input and output")
    io.add_argument("-i", "--input", required=True, type=Path, nargs="+", metavar="IMG",
                    help="one 4-D NIfTI (one volume per subject), or one 3-D map per subject "
                         "in the order of the design rows (names with sub-<label> are checked "
                         "against its participant_id column)")
    io.add_argument("-m", "--mask", required=True, type=Path, help="3-D analysis mask")
    io.add_argument("-d", "--design", required=True, type=Path, metavar="TSV|MAT",
                    help="design table (TSV, or CSV): a header row naming the columns, then "
                         "one row per volume (an intercept is added); or an FSL design.mat "
                         "(VEST, with -t design.con), used as given like FSL randomise: no "
                         "intercept is added, so include a column of 1s (needed when the "
                         "regressors are demeaned)")
    io.add_argument("-t", "--tcon", type=Path, default=None, metavar="CON",
                    help="FSL t contrasts (design.con) for a design.mat; each contrast k is "
                         "tested in its own direction and written as "
                         f"{derivatives.randomise_map_name('OUT_PREFIX', derivatives.tstat_key('<k>'))}...")
    io.add_argument("-e", "--exchangeability-blocks", type=Path, default=None,
                    metavar="GRP", help="FSL design.grp of a design.mat: permute only within "
                                        "blocks of equal label")
    io.add_argument("-o", "--output", required=True, metavar="OUT_PREFIX",
                    help="output prefix, e.g. stats/fa -> "
                         f"{derivatives.randomise_map_name('stats/fa', derivatives.tstat_key(1))}")
    model = parser.add_argument_group("model")
    model.add_argument("--contrast", default=None, metavar="COLUMN|K",
                       help="TSV design: the tested design column (required); design.mat: "
                            "the contrasts of design.con to test, by 1-based number or "
                            "/ContrastName, comma-separated (default: every contrast)")
    model.add_argument("--covariates", type=_csv, default=None, metavar="A,B",
                       help="nuisance columns (default: all other columns; TSV design only)")
    model.add_argument("--blocks", default=None, metavar="COLUMN",
                       help="exchangeability blocks: permute only within its levels (TSV "
                            "design only; -e design.grp for a design.mat)")
    inf = parser.add_argument_group("inference")
    inf.add_argument("-n", "--n-perm", type=int, default=_DEFAULTS["n_perm"],
                     help="permutations, including the unpermuted data (>= 2)")
    inf.add_argument("--seed", type=seed, default=_DEFAULTS["seed"])
    inf.add_argument("--no-tfce", action="store_true", help="skip TFCE")
    inf.add_argument("--tfce-H", type=float, default=_DEFAULTS["tfce_H"],
                     help="TFCE height exponent")
    inf.add_argument("--tfce-E", type=float, default=_DEFAULTS["tfce_E"],
                     help="TFCE extent exponent")
    inf.add_argument("--tfce-connectivity", type=int, default=_DEFAULTS["tfce_connectivity"],
                     choices=sorted(CONNECTIVITY_RANK))
    inf.add_argument("--cluster-threshold", type=float, default=_DEFAULTS["cluster_threshold"],
                     help="cluster-forming threshold on t; 0 disables cluster inference")
    inf.add_argument("--cluster-connectivity", type=int,
                     default=_DEFAULTS["cluster_connectivity"],
                     choices=sorted(CONNECTIVITY_RANK))
    inf.add_argument("--one-sided", action="store_true",
                     help=f"test the positive direction only (no {derivatives.tstat_key(2)}; "
                          "a design.con's "
                          "contrasts are always tested in their own direction)")
    inf.add_argument("--corrcon", action="store_true",
                     help=f"also write *_{derivatives.FAMCORRP} maps, FWE-corrected over both "
                          "directions "
                          "(design.con: over the tested contrasts) (PALM -corrcon)")
    inf.add_argument("--n-jobs", type=int, default=_DEFAULTS["n_jobs"],
                     help="threads (default: all cores; more than the usable cores are "
                          "reduced to them unless --oversubscribe)")
    inf.add_argument("--oversubscribe", action="store_true",
                     help="use --n-jobs threads even when that is more than the cores")


_VEST_MARKERS = ("/NumWaves", "/NumPoints", "/NumContrasts", "/Matrix", "/PPheights")


def _read_design(path: Path):
    """The design table: TSV (or CSV) with a header row; rows indexed by participant_id
    (or by ``line N``) so that problems name the subject."""
    import pandas as pd

    if not path.exists():
        raise InputError("the design file does not exist", file=path,
                         fix="Pass a TSV with one row per volume.")
    check_regular_file(path, "design file", MAX_TABLE_BYTES)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the design as text ({exc})", file=path,
                         fix="Write a UTF-8 tab-separated table with a header row.") from exc
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if any(ln.lstrip().startswith(_VEST_MARKERS) for ln in lines[:20]):
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


def _is_identifier(column) -> bool:
    """A column of text with a different value in every row (``subject_id``, file names):
    never a covariate unless named in ``--covariates`` (dummy-coded, it would take one
    degree of freedom per row)."""
    import pandas as pd

    values = column.dropna()
    if len(values) < 2 or pd.api.types.is_numeric_dtype(column):
        return False
    return bool(values.astype(str).str.strip().is_unique)


def _nifti_stem(path: Path) -> str:
    name = Path(path).name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _subject_of(path: Path) -> str | None:
    """``sub-<label>`` named in a file name, or None."""

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
        from ..io.bids import check_image_file

        # readable, size vs file and memory (the mask is read as float64), gzip CRC,
        # truncation, voxel sizes
        check_image_file(path, signal=False, itemsize=8 if path == args.mask else 4)
        try:
            return nib.load(str(path))
        except Exception as exc:  # noqa: BLE001 - nibabel raises many types for bad files
            raise InputError(f"cannot read the image ({exc})", file=path,
                             fix="Pass readable NIfTI files.") from exc

    imgs = [load(p) for p in inputs]
    mask_img = load(args.mask)
    # the data of every input as float32 together (the stacked subjects x voxels array)
    total = sum(int(np.prod(im.shape, dtype=np.float64)) for im in imgs) * 4
    from .._resources import check_memory

    check_memory(int(total), "reading the input images", inputs[0] if len(inputs) == 1
                 else "inputs", "Analyse fewer or smaller images (e.g. a coarser grid), or "
                                "run on a machine with more memory.")
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
    from ..io.fsl import is_vest

    log = get_logger(__name__)
    args.n_jobs = RandomiseOptions.from_args(args).n_jobs  # every option checked first
    out = Path(args.output)
    if str(args.output).endswith(("/", "\\")) or out.is_dir():
        raise InputError("the output prefix is a folder; randomise writes "
                         f"{derivatives.randomise_map_name('PREFIX', derivatives.tstat_key(1))} "
                         "and so on", file=args.output,
                         fix=f"Add a file-name prefix, e.g. -o {out / 'fa'}.")
    check_output_dir(out.parent, "output prefix's folder")
    if args.design.is_file() and is_vest(args.design):
        return _run_vest(args, out, log)
    return _run_table(args, out, log)


def _run_table(args: argparse.Namespace, out: Path, log) -> int:
    """A TSV/CSV design with named columns: ``--contrast COLUMN`` tested both ways."""
    from ..stats.design import make_design
    from ..stats.permutation import randomise_family

    for flag, value in (("-t/--tcon", args.tcon),
                        ("-e/--exchangeability-blocks", args.exchangeability_blocks)):
        if value is not None:
            raise InputError(f"{flag} goes with an FSL design.mat, but the design is a table",
                             file=args.design,
                             fix="With a TSV design name the tested column with --contrast "
                                 "(and blocks with --blocks); or pass a design.mat to -d.")
    if args.contrast is None:
        raise InputError("no --contrast: a TSV design needs the tested column",
                         file=args.design,
                         fix="Name the tested design column with --contrast COLUMN.")
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
        ids = [c for c in covariates if _is_identifier(design_df[c])]
        covariates = [c for c in covariates if c not in ids]
        log.info("design: tested column %r; covariates (every other column): %s%s",
                 args.contrast, ", ".join(covariates) or "none",
                 f"; left out as identifiers (text unique to each row): {', '.join(ids)} "
                 "(name covariates with --covariates)" if ids else "")
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
        key = derivatives.corrp_key("vox" if args.no_tfce else "tfce", k)
        if key in result.maps:
            n_sig = int((result.maps[key] > 0.95).sum())
            log.info("%s: %d voxel(s) with FWE p < 0.05", key, n_sig)
    return 0


def _renumber(name: str, k: int) -> str:
    """``tfce_corrp_tstat1`` -> ``tfce_corrp_tstat<k>`` (FSL numbers outputs by contrast)."""
    return derivatives.renumber_key(name, k)


def _warn_intercept(design: FslDesign, log) -> None:
    """FSL uses a design.mat as given; warn when it does not model the mean of the data."""
    if design.has_constant():
        return
    if design.demeaned():
        log.warning("%s: the design has no intercept (no column of 1s, and the columns do not "
                    "add up to one) and its regressors are demeaned: the mean of the data is "
                    "not modelled (FSL randomise -D demeans the data for this case). Add a "
                    "column of 1s unless the images were demeaned", design.path)
    else:
        log.warning("%s: the design has no intercept (no column of 1s, and the columns do not "
                    "add up to one) and its regressors are not demeaned: each regressor also "
                    "models the mean of the data. microvba, like FSL randomise, uses the "
                    "design as given; add a column of 1s (and demean the regressors) unless "
                    "this is intended", design.path)


def _vest_inputs(args: argparse.Namespace) -> tuple[FslDesign, FslContrasts, list[int]]:
    """Read and cross-check design.mat, design.con and ``--contrast`` (before any image)."""
    from ..io.fsl import read_design_con, read_design_mat
    from ..stats.design import check_design_matrix

    if args.tcon is None:
        raise InputError("this is an FSL design.mat (VEST) file; its contrasts must be given "
                         "as a design.con with -t", file=args.design,
                         fix="Add -t design.con (written with this design.mat by Glm or "
                             "Text2Vest; choose contrasts with --contrast 1,2), or write "
                             "design.tsv with named columns and name the tested column with "
                             "--contrast.")
    if args.covariates is not None:
        raise InputError("--covariates chooses columns of a TSV design; a design.mat is used "
                         "as given", file=args.design,
                         fix="Leave out --covariates: every design.mat column is in the model "
                             "and the contrasts of design.con choose what is tested.")
    if args.blocks is not None:
        raise InputError("--blocks names a column of a TSV design", file=args.design,
                         fix="Pass the exchangeability blocks of a design.mat as "
                             "-e design.grp.")
    design = read_design_mat(args.design)
    cons = read_design_con(args.tcon, design)
    chosen = cons.select(args.contrast)
    check_design_matrix(design.matrix, source=str(args.design), names=design.names)
    return design, cons, chosen


def _family_maps(results: list, log) -> None:
    """Add ``*_famcorrp_tstat1`` / ``*_famlogp_tstat1`` maps FWE-corrected over the contrasts
    (same permutations: the same seed, design and blocks), as PALM ``-corrcon``."""
    from ..stats.inference import fwe_p

    def logp(p: np.ndarray) -> np.ndarray:
        return -np.log10(np.clip(p, 1e-300, 1.0))

    for stat in ("vox", "tfce", "clustere", "clusterm"):
        key = derivatives.stat_key(stat, 1)
        if not all(key in r.null_max for r in results):
            continue
        family = np.max(np.stack([r.null_max[key] for r in results]), axis=0)
        for r in results:
            r.null_max[f"{stat}_family"] = family
            if stat in ("vox", "tfce"):
                obs = r.maps[derivatives.tstat_key(1) if stat == "vox"
                             else derivatives.stat_key("tfce", 1)]
                p = fwe_p(obs, family)
                r.maps[derivatives.corrp_key(stat, 1, family=True)] = 1.0 - p
                r.maps[derivatives.logp_key(stat, 1, family=True)] = logp(p)
            else:
                cl = r.clusters[derivatives.tstat_key(1)]
                p = fwe_p(cl.extent if stat == "clustere" else cl.mass, family)
                r.maps[derivatives.corrp_key(stat, 1, family=True)] = cl.voxel_map(1.0 - p)
                r.maps[derivatives.logp_key(stat, 1, family=True)] = cl.voxel_map(logp(p))
    log.info("family-wise maps corrected over %d contrasts", len(results))


def _run_vest(args: argparse.Namespace, out: Path, log) -> int:
    """An FSL design.mat + design.con: every chosen contrast tested in its own direction."""
    from ..io.fsl import read_design_grp
    from ..stats.glm import freedman_lane
    from ..stats.permutation import randomise_family
    from ..stats.result import RandomiseResult

    design, cons, chosen = _vest_inputs(args)
    grp = args.exchangeability_blocks
    blocks = None if grp is None else read_design_grp(grp)
    _warn_intercept(design, log)
    methods = {k: freedman_lane(design.matrix, cons.matrix[k]).sign_flip for k in chosen}
    if args.corrcon and len(set(methods.values())) > 1:
        raise InputError("--corrcon needs the same rearrangements for every contrast, but "
                         "some contrasts are tested by sign flips (one-sample) and others by "
                         "permutations", file=args.tcon,
                         fix="Run the one-sample and the other contrasts separately "
                             "(--contrast), or leave out --corrcon.")
    Y, mask, img = _load_images(args)
    what = "the 4-D image" if len(args.input) == 1 else "the inputs"
    design.check_n_points(Y.shape[0], images=what)
    if blocks is not None and blocks.size != Y.shape[0]:
        read_design_grp(grp, n_images=Y.shape[0])  # raises, naming the file
    Y, mask = _drop_constant_voxels(Y, mask, args.input, log)
    log.info("design columns: %s (as given: no intercept added)", ", ".join(design.names))
    key = str(args.input[0]) if len(args.input) == 1 else "inputs"
    results = []
    for k in chosen:
        log.info("contrast %d (%s): [%s]", k + 1, cons.names[k],
                 " ".join(f"{w:g}" for w in cons.matrix[k]))
        results.append(randomise_family(
            {key: Y}, design.matrix, cons.matrix[k], mask,
            n_perm=args.n_perm, seed=args.seed, tfce=not args.no_tfce, tfce_H=args.tfce_H,
            tfce_E=args.tfce_E, tfce_connectivity=args.tfce_connectivity,
            cluster_threshold=args.cluster_threshold if args.cluster_threshold > 0 else None,
            cluster_connectivity=args.cluster_connectivity, exchangeability_blocks=blocks,
            two_sided=False, n_jobs=args.n_jobs, family_maps=False)[key])
    if args.corrcon and len(results) > 1:
        _family_maps(results, log)
    maps, null_max, clusters, contrasts = {}, {}, {}, []
    for k, r in zip(chosen, results, strict=True):
        number = k + 1
        maps.update({_renumber(n, number): v for n, v in r.maps.items()})
        null_max.update({n if n.endswith("_family") else _renumber(n, number): v
                         for n, v in r.null_max.items()})
        clusters.update({_renumber(n, number): v for n, v in r.clusters.items()})
        contrasts.append({"number": number, "name": cons.names[k],
                          "vector": cons.matrix[k].tolist(), "tstat": derivatives.tstat_key(number),
                          "method": r.params["method"],
                          "n_possible_rearrangements": r.params["n_possible_rearrangements"]})
    params = dict(results[0].params)
    for name in ("contrast", "method", "n_possible_rearrangements"):
        params.pop(name, None)
    params.update(
        design_format="FSL VEST", design_file=str(args.design), contrast_file=str(args.tcon),
        design_columns=design.names, design_matrix=design.matrix.tolist(),
        intercept_added=False, contrasts=contrasts,
        contrast=[c["vector"] for c in contrasts], tested=[c["name"] for c in contrasts],
        method=contrasts[0]["method"] if len(set(methods.values())) == 1 else "mixed",
        blocks_file=None if grp is None else str(grp),
        corrcon=bool(args.corrcon and len(results) > 1))
    merged = RandomiseResult(maps=maps, null_max=null_max, params=params, clusters=clusters)
    inputs = {"mask": args.mask, "design": args.design, "contrasts": args.tcon}
    if grp is not None:
        inputs["blocks"] = grp
    inputs.update({"input": args.input[0]} if len(args.input) == 1 else
                  {f"input{i + 1}": p for i, p in enumerate(args.input)})
    paths = merged.save(out.parent, out.name, mask, img.affine, inputs=inputs)
    log.info("wrote %d files to %s", len(paths), out.parent)
    for c in contrasts:
        name = derivatives.corrp_key("vox" if args.no_tfce else "tfce", c["number"])
        if name in maps:
            log.info("%s (%s): %d voxel(s) with FWE p < 0.05", name, c["name"],
                     int((maps[name] > 0.95).sum()))
    return 0
