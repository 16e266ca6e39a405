"""Memory and disk a simulated dataset requests, estimated before anything is written.

``microvba simulate --resolution 1`` asked for ~50 GB of memory per subject and
``--n-subjects 10000`` wrote until the disk was full; :func:`check_resources` refuses both at
once (exit 2, naming the option), from costs per simulated DWI value measured on this
simulator (benchmarks/RESULTS.md, *Adversarial pass (session 7)*).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

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
    from .schemes import gradient_scheme

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
