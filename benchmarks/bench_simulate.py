"""Simulator benchmark: forward-model speed and accuracy, cohort time, planted-effect strength.

    .venv/bin/python benchmarks/bench_simulate.py [--quick] [--out DIR]

1. NODDI forward model on DSI-515: the simulator's quadrature (:class:`NoddiSimulator`)
   against the exact closed form of :func:`microvba.models.noddi.noddi_signal` (the peer),
   voxels/s and the largest difference.
2. ``simulate_cohort`` at the demo defaults (64 subjects, 4 mm, half-sphere DSI-515): wall
   time, MB written.
3. Detectability on the *true* maps: voxelwise partial-r t in each planted region and the
   largest |t| outside, unsmoothed and smoothed (8 mm FWHM, the demo's group setting).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def bench_forward(n_vox: int) -> None:
    from microvba.models.noddi import noddi_signal
    from microvba.simulate import NoddiSimulator, gradient_scheme

    bvals, bvecs = gradient_scheme("dsi515")
    rng = np.random.default_rng(0)
    icvf, odi, iso = rng.uniform(0.1, 0.9, n_vox), rng.uniform(0.1, 0.9, n_vox), \
        rng.uniform(0, 0.5, n_vox)
    mu = rng.normal(size=(n_vox, 3))
    sim = NoddiSimulator(bvals, bvecs)
    sim.signal(icvf[:10], odi[:10], iso[:10], mu[:10])  # compile
    t0 = time.perf_counter()
    fast = sim.signal(icvf, odi, iso, mu)
    t_fast = time.perf_counter() - t0
    n_exact = min(n_vox, 1000)
    t0 = time.perf_counter()
    exact = noddi_signal(bvals, bvecs, icvf[:n_exact], odi[:n_exact], iso[:n_exact],
                         mu[:n_exact])
    t_exact = time.perf_counter() - t0
    err = np.abs(fast[:n_exact] - exact)
    print(f"forward model, DSI-515 ({bvals.size} volumes):")
    print(f"  quadrature {n_vox / t_fast:10.0f} voxels/s   exact {n_exact / t_exact:8.0f} "
          f"voxels/s   ratio {(n_vox / t_fast) / (n_exact / t_exact):.0f}x")
    print(f"  |difference| max {err.max():.2e}  mean {err.mean():.2e} (S/S0)")


def bench_cohort(out: Path, n_subjects: int, data_dir: str | None) -> Path:
    from microvba.simulate import simulate_cohort

    t0 = time.perf_counter()
    root = simulate_cohort(out, n_subjects=n_subjects, seed=0, data_dir=data_dir)
    wall = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6
    print(f"simulate_cohort: {n_subjects} subjects, 4 mm, dsi515-half: {wall:.1f} s "
          f"({wall / n_subjects:.2f} s/subject), {size:.0f} MB written")
    return root


def report_detectability(root: Path) -> None:
    from microvba.simulate.check import expected_statistics

    for fwhm in (0.0, 8.0):
        table = expected_statistics(root, fwhm_mm=fwhm)
        print(f"\ntrue-map voxelwise partial-r t (GM mask, FWHM {fwhm:g} mm):")
        planted = table[table["planted"]]
        print(planted[["metric", "region", "n_voxels", "regional_r", "mean_t", "max_abs_t"]]
              .to_string(index=False, float_format=lambda v: f"{v:.2f}"))
        out = table[table["region"] == "outside"]
        print("largest |t| outside the planted regions: "
              + ", ".join(f"{m} {t:.2f}" for m, t in zip(out["metric"], out["max_abs_t"],
                                                          strict=True)))
        sec = table[(~table["planted"]) & (table["region"] != "outside")]
        top = sec.reindex(sec["regional_r"].abs().sort_values(ascending=False).index).head(6)
        print("strongest secondary effects (metric, region, regional r): "
              + ", ".join(f"{m} {g} {r:+.2f}" for m, g, r in
                          zip(top["metric"], top["region"], top["regional_r"], strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="16 subjects, fewer voxels")
    parser.add_argument("--out", type=Path, default=None, help="keep the cohort here")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    bench_forward(5000 if args.quick else 30000)
    n = 16 if args.quick else 64
    if args.out is not None:
        root = bench_cohort(args.out, n, args.data_dir)
        report_detectability(root)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            root = bench_cohort(Path(tmp) / "bids", n, args.data_dir)
            report_detectability(root)


if __name__ == "__main__":
    main()
