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

import numpy as np

from .._logging import get_logger
from ._types import seed

HELP = ("Write a simulated BIDS diffusion dataset: a small whole-brain one for trying the "
        "pipeline, or (--cohort) the demo cohort with the study's five findings planted.")

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
    parser.add_argument("--data-dir", type=Path, default=None,
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


#: extent (mm) of the simulated whole-brain grid: 42 x 52 x 46 voxels at 4 mm
BRAIN_EXTENT_MM = (168.0, 208.0, 184.0)
#: peak memory per simulated DWI value of one subject (float64 signals and temporaries):
#: 1.0 GB for 42 x 52 x 46 x 515 values at 4 mm, 1.7 GB for 54 x 67 x 58 x 515 at 3 mm
MEMORY_PER_VALUE = 16
#: bytes on disk per value (int16, gzip): 29 MB at 4 mm, 66 MB at 3 mm (DSI-515)
DISK_PER_VALUE = 0.65


def simulation_size(args: argparse.Namespace) -> tuple[int, int, int]:
    """(DWI values per subject, peak memory bytes, disk bytes of the whole dataset) that
    the options request (measured constants :data:`MEMORY_PER_VALUE`,
    :data:`DISK_PER_VALUE`; ``--cohort`` runs ``--n-jobs`` subjects at once)."""
    from ..simulate.schemes import gradient_scheme

    if args.box and not args.cohort:
        voxels, scheme, res = 12 * 12 * 8, args.scheme or "dsi515", 2.0
    else:
        full = bool(args.cohort and args.full)
        res = args.resolution or (2.0 if full else 4.0)
        scheme = args.scheme or ("dsi515-half" if args.cohort and not full else "dsi515")
        voxels = int(np.prod([np.ceil(e / res) for e in BRAIN_EXTENT_MM]))
    values = voxels * int(gradient_scheme(scheme)[0].size)
    n_subjects = args.n_subjects or (64 if args.cohort else 4)
    workers = max(1, args.n_jobs if args.cohort and args.n_jobs not in (None, -1) else 1)
    if args.cohort and args.n_jobs == -1:
        from .._resources import usable_cores

        workers = usable_cores()
    return values, MEMORY_PER_VALUE * values * workers, int(DISK_PER_VALUE * values
                                                            * n_subjects)


def check_resources(args: argparse.Namespace) -> None:
    """Refuse, before anything is written, a dataset whose simulation would not fit in
    memory (80% of what is available) or whose files would not fit on the output's disk
    (``simulate --resolution 1`` needed ~53 GB per subject and was simply started;
    ``--n-subjects 10000`` wrote until the disk was full)."""
    import shutil

    from .._resources import check_memory, fmt_bytes
    from .._validation import InputError

    values, memory, disk = simulation_size(args)
    check_memory(memory, f"simulating one subject ({values:,} DWI values"
                 + (f", {memory // (MEMORY_PER_VALUE * values)} at once with --n-jobs"
                    if args.cohort and memory > MEMORY_PER_VALUE * values else "") + ")",
                 "--resolution", "Use a coarser --resolution (e.g. 4 mm), --scheme "
                 "dsi515-half or multishell (fewer volumes), or fewer --n-jobs.")
    where = Path(args.out).absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    if disk > 0.9 * free:
        raise InputError(f"the dataset would take about {fmt_bytes(disk)} on disk but "
                         f"{where} has {fmt_bytes(free)} free", file="--n-subjects",
                         fix="Simulate fewer --n-subjects or a coarser --resolution, or write "
                             "to a disk with more space.")


def run(args: argparse.Namespace) -> int:
    from ..simulate import simulate_cohort, simulate_dataset

    check_options(args)
    if args.n_jobs != -1:  # -1 = every core; otherwise >= 1, capped to the cores
        from ..workflows.executor import check_n_jobs

        args.n_jobs = check_n_jobs(args.n_jobs, args.oversubscribe)
    check_resources(args)  # with the workers that will run
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
