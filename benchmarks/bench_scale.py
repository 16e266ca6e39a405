"""Participant stage on simulated subjects: serial vs a local Dask cluster.

Runs the same cohort through :func:`run_participant` with the serial executor and with a
``distributed.LocalCluster`` of N worker processes, checks that the outputs are identical and
prints the speed-up.

    MICROVBA_DATA=../shared/data .venv/bin/python benchmarks/bench_scale.py [--subjects 8]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from microvba.simulate import simulate_cohort
from microvba.workflows.executor import SerialExecutor, make_executor
from microvba.workflows.participant import ParticipantSettings, run_participant


def _run(bids: Path, out: Path, executor, settings) -> float:
    t0 = time.perf_counter()
    with executor as ex:
        results = run_participant(bids, out, settings, executor=ex)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--subjects", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--resolution", type=float, default=4.0)
    args = ap.parse_args()
    os.environ.setdefault("MICROVBA_PROGRESS", "0")
    settings = ParticipantSettings(tissue="gm", resolution=args.resolution)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bids = simulate_cohort(tmp / "bids", n_subjects=args.subjects,
                               resolution=args.resolution, seed=1)
        # warm the numba caches so both runs pay the same start-up cost
        run_participant(bids, tmp / "warm", settings, participant_label=["01"])
        serial = _run(bids, tmp / "serial", SerialExecutor(), settings)
        dask = _run(bids, tmp / "dask", make_executor(n_jobs=args.workers), settings)
        same = all(
            np.array_equal(np.asarray(nib.load(p).dataobj),
                           np.asarray(nib.load(tmp / "dask" / p.relative_to(tmp / "serial"))
                                      .dataobj))
            for p in (tmp / "serial").rglob("*.nii.gz"))
    print(f"participant stage, {args.subjects} subjects at {args.resolution:g} mm, "
          f"{os.cpu_count()} cores")
    print(f"  serial (1 process):          {serial:7.1f} s  ({serial / args.subjects:.1f} s/subject)")
    print(f"  Dask LocalCluster ({args.workers} workers): {dask:7.1f} s  "
          f"({dask / args.subjects:.1f} s/subject)")
    print(f"  speed-up: {serial / dask:.2f}x; outputs identical: {same}")


if __name__ == "__main__":
    main()
