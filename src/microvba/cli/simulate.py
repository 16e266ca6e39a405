"""``microvba simulate OUT``: write a simulated BIDS dataset.

Without ``--cohort``: a small dataset (a few subjects, the template brain on a coarse grid under
random warps) in seconds, for trying the whole pipeline (participant, then group stage);
``--box`` writes a tiny random tissue box instead (fitting tests only: it is not a brain, so
its normalisation to MNI fails the registration QC). With ``--cohort``: the demo cohort, real anatomy with the study's five
findings planted (ground truth in ``OUT/code/ground_truth.json``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .._logging import get_logger
from ._types import path_arg, seed

HELP = ("Write a simulated BIDS diffusion dataset: a small whole-brain one for trying the "
        "pipeline, or (--cohort) the demo cohort with the study's five findings planted.")

log = get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=path_arg, help="folder of the BIDS dataset to write")
    parser.add_argument("--cohort", action="store_true",
                        help="the demo cohort (ICBM152 anatomy, random warps, planted effects)")
    parser.add_argument("--n-subjects", type=int, default=None,
                        help="number of subjects (default 4, or 64 with --cohort)")
    parser.add_argument("--scheme", choices=["dsi515", "dsi515-half", "multishell"],
                        default=None,
                        help="gradient scheme (default dsi515; with --cohort dsi515-half, or "
                             "dsi515 with --full)")
    parser.add_argument("--resolution", type=float, default=None,
                        help="voxel size in mm (default 4; with --cohort --full 2)")
    parser.add_argument("--box", action="store_true",
                        help="instead of a brain, a tiny 12 x 12 x 8 box of random tissue "
                             "(2 mm): fast fitting trials only, it cannot be normalised to MNI "
                             "(the group stage then excludes every subject)")
    parser.add_argument("--full", action="store_true",
                        help="--cohort: 2 mm whole brain with all 515 DSI volumes (slow)")
    parser.add_argument("--seed", type=seed, default=0, help="random seed")
    parser.add_argument("--snr", type=float, default=None,
                        help="b=0 grey-matter SNR (default 30 at 2 mm, scaled with the voxel "
                             "volume on coarser grids; 30 with --box)")
    parser.add_argument("--effect-scale", type=float, default=1.0,
                        help="--cohort: strength of the planted effects in units of the study's "
                             "effect sizes (Fisher z; default 1 = the study's r; the demo uses 3)")
    parser.add_argument("--n-jobs", type=int, default=1,
                        help="--cohort: worker processes (-1 = all cores; more than the "
                             "cores are reduced to them unless --oversubscribe)")
    parser.add_argument("--oversubscribe", action="store_true",
                        help="start --n-jobs workers even when that is more than the cores")
    parser.add_argument("--data-dir", type=path_arg, default=None,
                        help="--cohort: folder with atlases/brainnetome "
                             "(default $MICROVBA_DATA, else ~/.cache/microvba)")


#: most subjects ``--n-subjects`` may request (as ``microvba demo``)
MAX_SUBJECTS = 10000


def check_options(args: argparse.Namespace) -> None:
    """Every numeric option and the output folder, before anything is simulated
    (InputError naming the option: exit 2). ``--resolution`` in [0.5, 8] mm like the
    participant stage's, ``--snr`` in (0, 10000], ``--n-subjects`` in [1, 10000] (at least
    8 with ``--cohort``, which plants correlations with four covariates), ``--effect-scale``
    as ``microvba demo`` checks it."""
    from .._validation import check_option_number, check_output_dir

    low = 8 if args.cohort else 1
    if args.n_subjects is not None:
        check_option_number("--n-subjects", args.n_subjects, low, MAX_SUBJECTS, integer=True,
                            hint="the default is 4, or 64 with --cohort")
    if args.resolution is not None:  # the simulator's range (0.5 was refused by it later)
        check_option_number("--resolution", args.resolution, 1.0, 8.0, unit="mm",
                            hint="the voxel size, e.g. 4")
    if args.snr is not None:
        check_option_number("--snr", args.snr, 0.0, 10000.0, low_open=True,
                            hint="the b=0 grey-matter signal-to-noise ratio, e.g. 30")
    if args.cohort:
        from .demo import _effect_scale

        _effect_scale(args)
    else:
        check_option_number("--effect-scale", args.effect_scale, 0.0, None,
                            hint="used with --cohort only")
    check_output_dir(args.out, "output folder of the simulated dataset")


def run(args: argparse.Namespace) -> int:
    from ..simulate import simulate_cohort, simulate_dataset
    from ..simulate.budget import check_resources

    check_options(args)
    if args.n_jobs != -1:  # -1 = every core; otherwise >= 1, capped to the cores
        from ..workflows.executor import check_n_jobs

        args.n_jobs = check_n_jobs(args.n_jobs, args.oversubscribe)
    check_resources(args)  # with the workers that will run (simulate/budget.py)
    out = Path(args.out)
    if args.cohort:
        if args.box:
            log.warning("--box does not apply to --cohort; ignored")
        root = simulate_cohort(out, n_subjects=64 if args.n_subjects is None else args.n_subjects,
                               resolution=args.resolution, full=args.full, seed=args.seed,
                               snr=args.snr, scheme=args.scheme, data_dir=args.data_dir,
                               n_jobs=args.n_jobs, effect_scale=args.effect_scale)
        log.info("cohort written to %s (ground truth: %s)", root,
                 root / "code" / "ground_truth.json")
    else:
        if args.full:
            log.warning("--full applies to --cohort only; ignored")
        if args.box and args.resolution is not None:
            log.warning("--resolution does not apply to --box (2 mm voxels); ignored")
        extra = ({"anatomy": "box"} if args.box else
                 {"resolution": args.resolution} if args.resolution is not None else {})
        root = simulate_dataset(out, n_subjects=4 if args.n_subjects is None else args.n_subjects,
                                scheme=args.scheme or "dsi515", seed=args.seed,
                                noise_snr=args.snr, **extra)
        log.info("dataset written to %s", root)
    print(root)
    return 0
