"""ROI decoding's hit counting, compiled kernel vs the numpy path, in one process.

    MICROVBA_DATA=... .venv/bin/python benchmarks/bench_decode_roi_hits.py [--repeats 5]

For Brainnetome ROIs of several sizes and their 1,000 null translations (the default
spatial null), times ``Decoder._hits`` (numba ``roi_hits_peaks`` over the null ROIs' voxel
lists, after one warm-up call that loads its compiled code) against
``Decoder._hits_translated`` (``microvba.decode._roi_hits``: the dilation built once and
translated, one sparse product), alternating them ``--repeats`` times, and checks that the
hits are equal. CPU is process time (all threads: the kernel runs on every core), so the
ratio is the one a loaded machine distorts least; wall and ``os.getloadavg()`` are printed
too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MICROVBA_DATA", ROOT.parent / "shared" / "data"))
ATLAS = DATA / "atlases" / "brainnetome" / "BN_Atlas_246_1mm_spmgrid.nii.gz"
ROIS = {"IFJ R (18)": [18], "dCa R (228)": [228], "A23c (185, 186)": [185, 186],
        "amygdala (211-214)": [211, 212, 213, 214], "frontal (1-20)": list(range(1, 21))}


def _time(fn):
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c0, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n-null", type=int, default=1000)
    args = ap.parse_args()
    from microvba.decode import Decoder
    from microvba.decode.grid import atlas_roi, roi_voxels

    dec = Decoder("lda50", n_null=args.n_null).fit()
    grid = dec.maps_.grid
    print(f"{'ROI':24s} {'voxels':>6s} {'clipped':>7s} {'kernel CPU':>10s} "
          f"{'numpy CPU':>9s} {'CPU ratio':>9s} {'kernel wall':>11s} {'numpy wall':>10s} equal")
    for name, labels in ROIS.items():
        roi = roi_voxels(atlas_roi(ATLAS, labels), grid)
        shifts, kept, idx = dec._null_translations(roi, np.random.default_rng(0))
        sets = [roi] + [idx[kept[:, j], j] for j in range(idx.shape[1])]
        dec._hits(sets[:2])  # load the compiled kernel before timing
        k_cpu, k_wall, n_cpu, n_wall = [], [], [], []
        equal = True
        for _ in range(args.repeats):
            ref, c, w = _time(lambda sets=sets: dec._hits(sets))
            k_cpu.append(c)
            k_wall.append(w)
            got, c, w = _time(lambda roi=roi, s=shifts, k=kept: dec._hits_translated(roi, s, k))
            n_cpu.append(c)
            n_wall.append(w)
            equal &= bool(np.array_equal(got.toarray().T > 0, ref))
        kc, nc = statistics.median(k_cpu), statistics.median(n_cpu)
        print(f"{name:24s} {roi.size:6d} {int((~kept.all(axis=0)).sum()):7d} {kc:10.3f} "
              f"{nc:9.3f} {kc / nc:9.1f} {statistics.median(k_wall):11.3f} "
              f"{statistics.median(n_wall):10.3f} {equal}")
    print("loadavg " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
