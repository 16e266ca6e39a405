"""DSI-native metrics benchmark: microvba GQI and MAP-MRI vs DIPY, same voxels, one process.

1. GQI (QA, GFA) on simulated DSI-515 voxels (DIPY's b-table, b up to 11538 s/mm^2):
   microvba's batched SDF vs DIPY's ``peaks_from_model`` (a Python loop over voxels);
   speed and the maximum relative difference.
2. MAP-MRI (radial order 6, Laplacian weight by GCV and fixed 0.2) on the same kind of
   voxels: DIPY's ``MapmriModel`` voxel by voxel on a sample, microvba's batched fit on the
   same sample and on more voxels; per-voxel time, ratio, maximum relative difference of
   RTOP, RTAP, RTPP, MSD, NG, and DIPY's time extrapolated to a 250k-voxel brain.
3. A simulated whole-brain 2 mm DSI-515 subject (``--voxels``, default 250,000): GQI +
   MAP-MRI (GCV) in a child process: wall and CPU time, peak RSS (ru_maxrss).
4. Plausibility on the real crops in ``$MICROVBA_DATA/dwi``: QA, GFA, RTOP, NG in the most
   and least anisotropic (FA) voxels.

Usage::

    .venv/bin/python benchmarks/bench_dsi_metrics.py [--quick] [--voxels N] [--threads T]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from microvba.models.gqi import GqiModel
from microvba.models.gradients import GradientTable
from microvba.models.mapmri import MAPMRI_PARAMS, MapmriModel

DATA = Path(os.environ.get("MICROVBA_DATA", Path(__file__).resolve().parents[2] / "shared"
                           / "data"))


def dsi515() -> GradientTable:
    from dipy.data import get_fnames

    t = np.loadtxt(get_fnames(name="dsi515btable"))
    return GradientTable(t[:, 0], t[:, 1:])


def simulate(gtab: GradientTable, n: int, seed: int = 0, snr: float = 30.0) -> np.ndarray:
    """White-matter-like (one or two fibres) and gray-matter-like voxels, Rician SNR 30."""
    from dipy.sims.voxel import multi_tensor

    rng = np.random.default_rng(seed)
    dg = gtab.to_dipy()
    n_distinct = min(n, 400)
    rows = []
    for i in range(n_distinct):
        if i % 3 == 2:
            evals, ang, fr = np.array([[0.9e-3, 0.7e-3, 0.7e-3]]), [(0, 0)], [100]
        else:
            ang = [(rng.uniform(0, 180), rng.uniform(0, 360)),
                   (rng.uniform(0, 180), rng.uniform(0, 360))]
            f = rng.uniform(60, 100)
            evals, fr = np.array([[1.7e-3, 0.2e-3, 0.2e-3]] * 2), [f, 100 - f]
        s, _ = multi_tensor(dg, evals, S0=1000, angles=ang, fractions=fr, snr=None)
        rows.append(s)
    clean = np.array(rows)[rng.integers(0, n_distinct, n)]
    sigma = 1000 / snr
    return np.sqrt((clean + sigma * rng.normal(size=clean.shape)) ** 2
                   + (sigma * rng.normal(size=clean.shape)) ** 2).astype(np.float32)


def _timed(fn, *args):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - t0, time.process_time() - c0


def bench_gqi(gtab: GradientTable, n: int) -> None:
    from dipy.data import get_sphere
    from dipy.direction import peaks_from_model
    from dipy.reconst.gqi import GeneralizedQSamplingModel

    data = simulate(gtab, n, seed=1).astype(np.float64)
    model = GqiModel(gtab)
    ours, w1, c1 = _timed(model.fit, data)
    dm = GeneralizedQSamplingModel(gtab.to_dipy(), method="standard", sampling_length=1.25)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pam, w2, c2 = _timed(peaks_from_model, dm, data, get_sphere(name="repulsion724"),
                             0.5, 25)
    d_qa = np.max(np.abs(ours.qa - pam.qa[:, 0]) / np.abs(pam.qa[:, 0]).max())
    d_gfa = np.max(np.abs(ours.gfa - pam.gfa) / np.abs(pam.gfa))
    print(f"GQI {n} voxels DSI-515: microvba {w1:.2f} s wall ({c1:.2f} s CPU), DIPY "
          f"peaks_from_model {w2:.2f} s ({c2:.2f} s CPU): {w2 / w1:.0f}x wall, "
          f"{c2 / max(c1, 1e-9):.0f}x CPU; max rel diff QA {d_qa:.1e}, GFA {d_gfa:.1e}",
          flush=True)


def _dipy_mapmri(dm, signals: np.ndarray) -> np.ndarray:
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for s in signals:
            f = dm.fit(s)
            rows.append([f.rtop(), f.rtap(), f.rtpp(), f.msd(), f.ng()])
    return np.array(rows)


def bench_mapmri(gtab: GradientTable, n_dipy: int, n_ours: int, threads: int) -> None:
    from dipy.reconst.mapmri import MapmriModel as DipyMapmri

    data = simulate(gtab, max(n_ours, n_dipy), seed=2).astype(np.float64)
    for weighting in ("GCV", 0.2):
        k = n_dipy if weighting == "GCV" else 2 * n_dipy
        dm = DipyMapmri(gtab.to_dipy(), radial_order=6, laplacian_regularization=True,
                        laplacian_weighting=weighting, bval_threshold=2000)

        ref, w_d, c_d = _timed(_dipy_mapmri, dm, data[:k])
        model = MapmriModel(gtab, laplacian_weighting=weighting, n_threads=1)
        mine = model.fit_voxels(data[:k])
        diff = np.max(np.abs(mine[:, :5] - ref) / np.abs(ref), axis=0)
        model_t = MapmriModel(gtab, laplacian_weighting=weighting, n_threads=threads)
        _, w_o, c_o = _timed(model_t.fit, data[:n_ours])
        per_d, per_o = w_d / k, w_o / n_ours
        print(f"MAP-MRI ({weighting}) DSI-515: DIPY {per_d * 1e3:.1f} ms/voxel wall "
              f"({c_d / k * 1e3:.1f} ms CPU) on {k} voxels -> {per_d * 250e3 / 3600:.1f} h "
              f"for 250k voxels; microvba {per_o * 1e3:.3f} ms/voxel wall "
              f"({c_o / n_ours * 1e3:.3f} ms CPU, {threads} threads) on {n_ours} voxels -> "
              f"{per_o * 250e3:.0f} s for 250k: {per_d / per_o:.0f}x wall, "
              f"{(c_d / k) / (c_o / n_ours):.0f}x CPU; max rel diff "
              + ", ".join(f"{p.upper()} {d:.1e}" for p, d in zip(MAPMRI_PARAMS, diff,
                                                                strict=True)), flush=True)


def whole_brain_child(n_vox: int, threads: int) -> None:
    gtab = dsi515()
    distinct = simulate(gtab, 4096, seed=3)
    shape = (64, 64, int(np.ceil(n_vox / 4096)))
    data = np.empty(shape + (gtab.n_volumes,), np.float32)
    flat = data.reshape(-1, gtab.n_volumes)
    rng = np.random.default_rng(4)
    for s in range(0, flat.shape[0], 20000):
        e = min(s + 20000, flat.shape[0])
        flat[s:e] = distinct[rng.integers(0, len(distinct), e - s)]
    del distinct
    mask = np.zeros(shape, bool)
    mask.reshape(-1)[:n_vox] = True
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0, c0 = time.perf_counter(), time.process_time()
    g = GqiModel(gtab).fit(data, mask)
    t1, c1 = time.perf_counter(), time.process_time()
    m = MapmriModel(gtab, n_threads=threads).fit(data, mask)
    t2, c2 = time.perf_counter(), time.process_time()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"WHOLE {n_vox} {t1 - t0:.1f} {c1 - c0:.1f} {t2 - t1:.1f} {c2 - c1:.1f} {peak:.0f} "
          f"{rss0:.0f} {data.nbytes / 2**20:.0f} {float(np.median(g.qa[mask])):.3f} "
          f"{float(np.median(m.rtop[mask])):.4g} {m.n_failed}", flush=True)


def bench_whole_brain(n_vox: int, threads: int) -> None:
    out = subprocess.run([sys.executable, __file__, "--whole-brain-child", str(n_vox),
                          "--threads", str(threads)],
                         capture_output=True, text=True, check=True).stdout
    f = next(line for line in out.splitlines() if line.startswith("WHOLE")).split()
    total = float(f[2]) + float(f[4])
    print(f"whole brain DSI-515 {f[1]} voxels ({threads} threads): GQI {f[2]} s ({f[3]} s "
          f"CPU) + MAP-MRI GCV {f[4]} s ({f[5]} s CPU) = {total:.0f} s wall; peak RSS {f[6]} "
          f"MiB (input array {f[8]} MiB, before fitting {f[7]} MiB); failed voxels {f[11]}",
          flush=True)


def bench_real() -> None:
    import nibabel as nib

    from microvba.models import TensorModel
    from microvba.models.mask import brain_mask

    for name in ("batman", "msmt"):
        d = DATA / "dwi"
        gtab = GradientTable.from_files(d / f"{name}_dwi.bval", d / f"{name}_dwi.bvec")
        data = nib.load(d / f"{name}_dwi.nii.gz").get_fdata(dtype=np.float32)
        mask = brain_mask(data, gtab)
        fa = TensorModel(gtab).fit(data, mask).fa[mask]
        g = GqiModel(gtab).fit(data, mask)
        m = MapmriModel(gtab).fit(data, mask)
        hi, lo = fa >= np.percentile(fa, 85), fa <= np.percentile(fa, 30)

        def med(x, sel, mask=mask):
            return float(np.nanmedian(x[mask][sel]))

        print(f"{name} ({int(mask.sum())} voxels; median in FA top 15% vs bottom 30%): "
              f"FA {np.median(fa[hi]):.2f} vs {np.median(fa[lo]):.2f}; "
              f"QA {med(g.qa, hi):.3f} vs {med(g.qa, lo):.3f}; "
              f"GFA {med(g.gfa, hi):.3f} vs {med(g.gfa, lo):.3f}; "
              f"RTOP {med(m.rtop, hi):.3g} vs {med(m.rtop, lo):.3g} mm^-3; "
              f"MSD {med(m.msd, hi):.3g} vs {med(m.msd, lo):.3g} mm^2; "
              f"NG {med(m.ng, hi):.3f} vs {med(m.ng, lo):.3f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small samples, 20k-voxel brain")
    ap.add_argument("--voxels", type=int, default=None, help="whole-brain voxels")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--whole-brain-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.whole_brain_child:
        whole_brain_child(args.whole_brain_child, args.threads)
        return
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    gtab = dsi515()
    bench_gqi(gtab, 500 if args.quick else 3000)
    bench_mapmri(gtab, 5 if args.quick else 20, 1024 if args.quick else 8192, args.threads)
    bench_real()
    bench_whole_brain(args.voxels or (20_000 if args.quick else 250_000), args.threads)
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
