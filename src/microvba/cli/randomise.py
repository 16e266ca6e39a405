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
from dataclasses import dataclass, fields
from pathlib import Path

from .. import _defaults as defaults
from .._logging import get_logger
from .._resources import check_permutations
from .._validation import InputError, check_option_number, check_output_dir
from ..io import derivatives
from ..io.design_table import read_design_table
from ..io.fsl import (
    FslContrasts,
    FslDesign,
    is_vest,
    read_design_con,
    read_design_grp,
    read_design_mat,
)
from ..io.image_stack import check_subject_order, read_image_stack
from ..stats.design import check_design_matrix
from ..stats.family import Correction, Family
from ..stats.randomise import (
    Contrast,
    check_rearrangements,
    drop_constant_voxels,
    randomise_contrasts,
    table_design,
    warn_intercept,
)
from ..stats.tfce import CONNECTIVITY_RANK
from ..workflows.executor import check_n_jobs
from ._types import path_arg, seed

HELP = "Voxel-wise permutation inference (Freedman-Lane, exact TFCE, cluster and voxel FWE)."

log = get_logger(__name__)


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


@dataclass(frozen=True)
class RandomiseOptions:
    """The inference options of ``microvba randomise`` (defaults declared here only),
    checked when built, before any file is read: ``-n`` an integer >= 2 whose null
    distributions fit in memory, TFCE ``H``/``E`` in (0, 10], a finite cluster-forming
    threshold >= 0, ``--n-jobs`` >= 1 (capped to the usable cores unless
    ``--oversubscribe``)."""

    n_perm: int = defaults.N_PERM
    seed: int = defaults.SEED
    tfce_H: float = defaults.TFCE_H
    tfce_E: float = defaults.TFCE_E
    tfce_connectivity: int = defaults.TFCE_CONNECTIVITY
    cluster_threshold: float = defaults.CLUSTER_THRESHOLD
    cluster_connectivity: int = defaults.CLUSTER_CONNECTIVITY
    n_jobs: int | None = None
    oversubscribe: bool = False
    two_sided: bool = True

    def __post_init__(self) -> None:
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

    def engine(self, args: argparse.Namespace) -> dict:
        """The keyword arguments of :func:`microvba.stats.randomise.randomise_contrasts`."""
        return dict(
            correction=Correction(across=Family.ALL if args.corrcon else Family.NONE),
            n_perm=self.n_perm, seed=self.seed, tfce=not args.no_tfce, tfce_H=self.tfce_H,
            tfce_E=self.tfce_E, tfce_connectivity=self.tfce_connectivity,
            cluster_threshold=self.cluster_threshold,
            cluster_connectivity=self.cluster_connectivity, n_jobs=self.n_jobs,
            image=str(args.input[0]) if len(args.input) == 1 else "inputs")


_DEFAULTS = {f.name: f.default for f in fields(RandomiseOptions)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    io = parser.add_argument_group("input and output")
    io.add_argument("-i", "--input", required=True, type=path_arg, nargs="+", metavar="IMG",
                    help="one 4-D NIfTI (one volume per subject), or one 3-D map per subject "
                         "in the order of the design rows (names with sub-<label> are checked "
                         "against its participant_id column)")
    io.add_argument("-m", "--mask", required=True, type=path_arg, help="3-D analysis mask")
    io.add_argument("-d", "--design", required=True, type=path_arg, metavar="TSV|MAT",
                    help="design table (TSV, or CSV): a header row naming the columns, then "
                         "one row per volume (an intercept is added); or an FSL design.mat "
                         "(VEST, with -t design.con), used as given like FSL randomise: no "
                         "intercept is added, so include a column of 1s (needed when the "
                         "regressors are demeaned)")
    io.add_argument("-t", "--tcon", type=path_arg, default=None, metavar="CON",
                    help="FSL t contrasts (design.con) for a design.mat; each contrast k is "
                         "tested in its own direction and written as "
                         f"{derivatives.randomise_map_name('OUT_PREFIX', derivatives.tstat_key('<k>'))}...")
    io.add_argument("-e", "--exchangeability-blocks", type=path_arg, default=None,
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


def _inputs(args: argparse.Namespace) -> dict[str, Path]:
    """The input files recorded in the sidecar."""
    inputs = {"mask": args.mask, "design": args.design}
    if args.tcon is not None:
        inputs["contrasts"] = args.tcon
    if args.exchangeability_blocks is not None:
        inputs["blocks"] = args.exchangeability_blocks
    inputs.update({"input": args.input[0]} if len(args.input) == 1 else
                  {f"input{i + 1}": p for i, p in enumerate(args.input)})
    return inputs


def _source(args: argparse.Namespace) -> Path | str:
    return args.input[0] if len(args.input) == 1 else "inputs"


def run(args: argparse.Namespace) -> int:
    options = RandomiseOptions.from_args(args)  # every option checked first
    args.n_jobs = options.n_jobs
    out = Path(args.output)
    if str(args.output).endswith(("/", "\\")) or out.is_dir():
        raise InputError("the output prefix is a folder; randomise writes "
                         f"{derivatives.randomise_map_name('PREFIX', derivatives.tstat_key(1))} "
                         "and so on", file=args.output,
                         fix=f"Add a file-name prefix, e.g. -o {out / 'fa'}.")
    check_output_dir(out.parent, "output prefix's folder")
    if args.design.is_file() and is_vest(args.design):
        return _run_vest(args, options, out)
    return _run_table(args, options, out)


def _run_table(args: argparse.Namespace, options: RandomiseOptions, out: Path) -> int:
    """A TSV/CSV design with named columns: ``--contrast COLUMN`` tested both ways."""
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
    design_df = read_design_table(args.design)
    if args.contrast not in design_df.columns:
        table_design(design_df, args.contrast, source=args.design)  # raises, naming columns
    stack = read_image_stack(args.input, args.mask)
    if stack.data.shape[0] != len(design_df):
        what = "4-D image has" if len(args.input) == 1 else "inputs are"
        raise InputError(f"the {what} {stack.data.shape[0]} volumes but the design "
                         f"{args.design} has {len(design_df)} rows",
                         file=args.input[0] if len(args.input) == 1 else args.design,
                         fix="Give exactly one design row per volume, in the same order.")
    Y, mask = drop_constant_voxels(stack.data, stack.mask, _source(args))
    if len(args.input) > 1:
        check_subject_order(args.input, design_df, args.design)
    tab = table_design(design_df, args.contrast, args.covariates, args.blocks,
                       source=args.design)
    log.info("design columns: %s", ", ".join(tab.design.names))
    result = randomise_contrasts(Y, tab.design.matrix, tab.design.contrast(args.contrast), mask,
                                 two_sided=options.two_sided,
                                 exchangeability_blocks=tab.blocks, **options.engine(args))
    result.params.update(design_columns=tab.design.names, tested=args.contrast,
                         covariates=list(tab.covariates), blocks_column=args.blocks)
    paths = result.save(out.parent, out.name, mask, stack.img.affine, inputs=_inputs(args))
    log.info("wrote %d files to %s", len(paths), out.parent)
    for k in (1, 2):
        key = derivatives.corrp_key("vox" if args.no_tfce else "tfce", k)
        if key in result.maps:
            n_sig = int((result.maps[key] > 0.95).sum())
            log.info("%s: %d voxel(s) with FWE p < 0.05", key, n_sig)
    return 0


def _vest_inputs(args: argparse.Namespace) -> tuple[FslDesign, FslContrasts, list[int]]:
    """Read and cross-check design.mat, design.con and ``--contrast`` (before any image)."""
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


def _run_vest(args: argparse.Namespace, options: RandomiseOptions, out: Path) -> int:
    """An FSL design.mat + design.con: every chosen contrast tested in its own direction."""
    design, cons, chosen = _vest_inputs(args)
    grp = args.exchangeability_blocks
    blocks = None if grp is None else read_design_grp(grp)
    warn_intercept(design)
    contrasts = [Contrast(number=k + 1, name=cons.names[k], vector=cons.matrix[k])
                 for k in chosen]
    engine = options.engine(args)
    check_rearrangements(design.matrix, contrasts, engine["correction"], source=args.tcon,
                         blocks=blocks)
    stack = read_image_stack(args.input, args.mask)
    what = "the 4-D image" if len(args.input) == 1 else "the inputs"
    design.check_n_points(stack.data.shape[0], images=what)
    if blocks is not None and blocks.size != stack.data.shape[0]:
        read_design_grp(grp, n_images=stack.data.shape[0])  # raises, naming the file
    Y, mask = drop_constant_voxels(stack.data, stack.mask, _source(args))
    log.info("design columns: %s (as given: no intercept added)", ", ".join(design.names))
    result = randomise_contrasts(Y, design.matrix, contrasts, mask,
                                 exchangeability_blocks=blocks, **engine)
    result.params.update(
        design_format="FSL VEST", design_file=str(args.design), contrast_file=str(args.tcon),
        design_columns=design.names, design_matrix=design.matrix.tolist(),
        intercept_added=False, blocks_file=None if grp is None else str(grp))
    paths = result.save(out.parent, out.name, mask, stack.img.affine, inputs=_inputs(args))
    log.info("wrote %d files to %s", len(paths), out.parent)
    for c in result.params["contrasts"]:
        name = derivatives.corrp_key("vox" if args.no_tfce else "tfce", c["number"])
        if name in result.maps:
            log.info("%s (%s): %d voxel(s) with FWE p < 0.05", name, c["name"],
                     int((result.maps[name] > 0.95).sum()))
    return 0
