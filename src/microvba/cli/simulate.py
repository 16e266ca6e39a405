"""``microvba simulate OUT``: write a simulated BIDS dataset.

Without ``--cohort``: a tiny dataset (random tissue mixtures, a few subjects) in seconds, for
trying the pipeline. With ``--cohort``: the demo cohort, real anatomy with the study's five
findings planted (ground truth in ``OUT/code/ground_truth.json``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .._logging import get_logger
from ._types import seed

HELP = ("Write a simulated BIDS diffusion dataset: a tiny one for trials, or (--cohort) the "
        "demo cohort with the study's five findings planted.")

log = get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="folder of the BIDS dataset to write")
    parser.add_argument("--cohort", action="store_true",
                        help="the demo cohort (ICBM152 anatomy, random warps, planted effects)")
    parser.add_argument("--n-subjects", type=int, default=None,
                        help="number of subjects (default 4, or 64 with --cohort)")
    parser.add_argument("--scheme", choices=["dsi515", "dsi515-half", "multishell"],
                        default=None,
                        help="gradient scheme (default dsi515; with --cohort dsi515-half, or "
                             "dsi515 with --full)")
    parser.add_argument("--resolution", type=float, default=None,
                        help="--cohort: voxel size in mm (default 4, or 2 with --full)")
    parser.add_argument("--full", action="store_true",
                        help="--cohort: 2 mm whole brain with all 515 DSI volumes (slow)")
    parser.add_argument("--seed", type=seed, default=0, help="random seed")
    parser.add_argument("--snr", type=float, default=None,
                        help="b=0 grey-matter SNR (default 30; with --cohort 30 at 2 mm, "
                             "scaled with the voxel volume on coarser grids)")
    parser.add_argument("--effect-scale", type=float, default=1.0,
                        help="--cohort: strength of the planted effects in units of the study's "
                             "effect sizes (Fisher z; default 1 = the study's r; the demo uses 3)")
    parser.add_argument("--n-jobs", type=int, default=1,
                        help="--cohort: worker processes (-1 = all cores)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="--cohort: folder with atlases/brainnetome "
                             "(default $MICROVBA_DATA, else ~/.cache/microvba)")


def run(args: argparse.Namespace) -> int:
    from ..simulate import simulate_cohort, simulate_dataset

    out = Path(args.out)
    if args.cohort:
        root = simulate_cohort(out, n_subjects=64 if args.n_subjects is None else args.n_subjects,
                               resolution=args.resolution, full=args.full, seed=args.seed,
                               snr=args.snr, scheme=args.scheme, data_dir=args.data_dir,
                               n_jobs=args.n_jobs, effect_scale=args.effect_scale)
        log.info("cohort written to %s (ground truth: %s)", root,
                 root / "code" / "ground_truth.json")
    else:
        if args.full or args.resolution is not None:
            log.warning("--full and --resolution apply to --cohort only; ignored")
        root = simulate_dataset(out, n_subjects=4 if args.n_subjects is None else args.n_subjects,
                                scheme=args.scheme or "dsi515", seed=args.seed,
                                noise_snr=args.snr if args.snr is not None else 30.0)
        log.info("dataset written to %s", root)
    print(root)
    return 0
