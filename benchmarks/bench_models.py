"""Microstructure fitting benchmark: microvba NODDI vs AMICO, microvba DTI vs DIPY.

Runs both tools on the same simulated voxels in one process and prints speed (wall-clock
voxels/s, and process CPU time per voxel, which a shared machine disturbs less), the ratio
and accuracy (Pearson r and mean absolute error against the simulated truth):

1. NODDI on DSI-515 (DIPY's b-table) and a 3-shell scheme, WM- and GM-like parameters,
   SNR 30 Rician, d_par set correctly for each tissue (AMICO 2.x default grids);
2. tensor WLS (b <= 1750) vs DIPY's TensorModel WLS;
3. a simulated whole-brain 2 mm DSI-515 subject (250k voxels): tensor + NODDI, wall time and
   peak memory (child process, ru_maxrss);
4. both real crops in ../shared/data/dwi: tissue values.

Usage::

    .venv/bin/python benchmarks/bench_models.py [--quick] [--no-amico] [--voxels N]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from microvba.models import GradientTable, NoddiModel, TensorModel, noddi_signal
from microvba.models.noddi import D_PAR_GM, D_PAR_WM

SNR = 30.0
DATA = Path(os.environ.get("MICROVBA_DATA", Path(__file__).resolve().parents[2] / "shared"
                           / "data"))


def dsi515() -> GradientTable:
    from dipy.data import get_fnames

    t = np.loadtxt(get_fnames(name="dsi515btable"))
    return GradientTable(t[:, 0], t[:, 1:])


def three_shell() -> GradientTable:
    from dipy.core.sphere import HemiSphere, disperse_charges

    bv, bg = [np.zeros(6)], [np.zeros((6, 3))]
    for b, n, seed in ((1000.0, 30, 1), (2000.0, 60, 2), (3000.0, 90, 3)):
        v = np.random.default_rng(seed).normal(size=(n, 3))
        hemi, _ = disperse_charges(HemiSphere(xyz=v / np.linalg.norm(v, axis=1)[:, None]), 300)
        bv.append(np.full(n, b))
        bg.append(hemi.vertices)
    return GradientTable(np.concatenate(bv), np.concatenate(bg))


def truth(rng: np.random.Generator, n: int, tissue: str) -> dict[str, np.ndarray]:
    if tissue == "wm":
        p = {"icvf": rng.uniform(0.45, 0.85, n), "odi": rng.uniform(0.02, 0.3, n),
             "isovf": rng.uniform(0.0, 0.2, n)}
    else:
        p = {"icvf": rng.uniform(0.2, 0.55, n), "odi": rng.uniform(0.3, 0.8, n),
             "isovf": rng.uniform(0.0, 0.3, n)}
    mu = rng.normal(size=(n, 3))
    p["mu"] = mu / np.linalg.norm(mu, axis=1, keepdims=True)
    return p


def simulate(gtab: GradientTable, p: dict, d_par: float, rng, s0: float = 1000.0):
    clean = noddi_signal(gtab.bvals, gtab.bvecs, p["icvf"], p["odi"], p["isovf"], p["mu"],
                         d_par=d_par)
    sigma = 1.0 / SNR
    noisy = np.sqrt((clean + sigma * rng.normal(size=clean.shape)) ** 2
                    + (sigma * rng.normal(size=clean.shape)) ** 2)
    return (s0 * noisy).astype(np.float32)


def accuracy(est: dict[str, np.ndarray], p: dict) -> dict[str, tuple[float, float]]:
    return {k: (float(np.corrcoef(est[k], p[k])[0, 1]), float(np.mean(np.abs(est[k] - p[k]))))
            for k in ("icvf", "odi", "isovf")}


def fit_microvba(gtab, data, d_par, min_timed: int = 20_000):
    """Maps of ``data`` and the time per voxel. The time is measured on ``data`` repeated
    to at least ``min_timed`` voxels (best of three): 2,000 voxels take only ~30 ms, which
    a shared machine's hiccups distort; returns (maps, seconds, CPU seconds) per
    ``len(data)`` voxels."""
    model = NoddiModel(gtab, d_par=d_par)
    model.fit_voxels(data[:4])  # compile / load the numba cache outside the timing
    raw = model.fit(data, progress_desc="microvba").params
    reps = max(1, -(-min_timed // data.shape[0]))
    timed = np.tile(data, (reps, 1))
    dt, cpu = np.inf, np.inf
    for _ in range(3):
        t0, c0 = time.perf_counter(), time.process_time()
        model.fit(timed, progress_desc="microvba")
        dt, cpu = min(dt, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    from microvba.models.noddi import kappa_to_odi

    est = {"icvf": raw[:, 0], "isovf": raw[:, 1], "odi": kappa_to_odi(raw[:, 2])}
    return est, dt / reps, cpu / reps


def fit_amico(gtab, data, d_par, workdir: Path):
    import amico
    import nibabel as nib

    amico.set_verbose(0)
    subj = workdir / "subj"
    subj.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.reshape(-1, 1, 1, data.shape[-1]), np.eye(4)),
             subj / "dwi.nii.gz")
    np.savetxt(subj / "dwi.bval", gtab.bvals[None], fmt="%.3f")
    np.savetxt(subj / "dwi.bvec", gtab.bvecs.T, fmt="%.6f")
    with contextlib.redirect_stdout(io.StringIO()):
        amico.util.fsl2scheme(str(subj / "dwi.bval"), str(subj / "dwi.bvec"),
                              str(subj / "dwi.scheme"))
        amico.setup()
        ae = amico.Evaluation(str(workdir), "subj")
        ae.set_config("doSaveModulatedMaps", False)
        ae.load_data("dwi.nii.gz", "dwi.scheme", b0_thr=50)
        ae.set_model("NODDI")
        ae.model.set(dPar=d_par, dIso=3e-3, IC_VFs=np.linspace(0.1, 0.99, 12),
                     IC_ODs=np.hstack((np.array([0.03, 0.06]), np.linspace(0.09, 0.99, 10))),
                     isExvivo=False)
        ae.generate_kernels(regenerate=True)
        ae.load_kernels()
        t0, c0 = time.perf_counter(), time.process_time()
        ae.fit()
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    maps = ae.RESULTS["MAPs"].reshape(-1, 3)
    return {"icvf": maps[:, 0], "odi": maps[:, 1], "isovf": maps[:, 2]}, dt, cpu


def bench_noddi(n: int, run_amico: bool) -> list[str]:
    rows = []
    rng = np.random.default_rng(2025)
    for scheme_name, gtab in (("DSI-515", dsi515()), ("3-shell", three_shell())):
        for tissue, d_par in (("wm", D_PAR_WM), ("gm", D_PAR_GM)):
            p = truth(rng, n, tissue)
            data = simulate(gtab, p, d_par, rng)
            est, dt, cpu = fit_microvba(gtab, data, d_par)
            acc = accuracy(est, p)
            line = (f"{scheme_name:8s} {tissue}  microvba {n / dt:9.0f} vox/s "
                    f"({1e6 * cpu / n:6.0f} CPU-us/vox)  " +
                    "  ".join(f"{k} r={r:.3f} MAE={m:.3f}" for k, (r, m) in acc.items()))
            print(line, flush=True)
            rows.append(line)
            if run_amico:
                with tempfile.TemporaryDirectory() as tmp:
                    est_a, dt_a, cpu_a = fit_amico(gtab, data, d_par, Path(tmp))
                acc_a = accuracy(est_a, p)
                line = (f"{scheme_name:8s} {tissue}  AMICO    {n / dt_a:9.0f} vox/s "
                        f"({1e6 * cpu_a / n:6.0f} CPU-us/vox)  " +
                        "  ".join(f"{k} r={r:.3f} MAE={m:.3f}" for k, (r, m) in acc_a.items())
                        + f"   speed ratio {dt_a / dt:.0f}x (CPU time {cpu_a / cpu:.0f}x)")
                print(line, flush=True)
                rows.append(line)
    return rows


def bench_dti(n: int) -> str:
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import TensorModel as DipyTensorModel

    gtab = dsi515()
    rng = np.random.default_rng(7)
    p = truth(rng, 2000, "wm")
    data = simulate(gtab, p, D_PAR_WM, rng)
    data = np.tile(data, (n // 2000 + 1, 1))[:n]
    keep = gtab.bvals <= 1750
    dipy_model = DipyTensorModel(gradient_table(gtab.bvals[keep], bvecs=gtab.bvecs[keep]),
                                 fit_method="WLS")
    model = TensorModel(gtab)
    t_ours, t_dipy = np.inf, np.inf
    for _ in range(2):  # alternate, best of two: no warm-up advantage for either tool
        t0 = time.perf_counter()
        ours = model.fit(data)
        t_ours = min(t_ours, time.perf_counter() - t0)
        t0 = time.perf_counter()  # same work as microvba: select the volumes, then fit
        ref = dipy_model.fit(data[:, keep].astype(float))
        t_dipy = min(t_dipy, time.perf_counter() - t0)
    err = np.max(np.abs(ours.fa - ref.fa))
    line = (f"DTI WLS {n} voxels: microvba {t_ours:.2f} s, DIPY {t_dipy:.2f} s "
            f"(ratio {t_dipy / t_ours:.2f}), max |dFA| {err:.1e}")
    print(line, flush=True)
    return line


def whole_brain_child(n_vox: int) -> None:
    """Simulate and fit a whole-brain DSI-515 volume; print time and peak RSS."""
    gtab = dsi515()
    rng = np.random.default_rng(3)
    n_distinct = 1000
    clean = np.concatenate([
        noddi_signal(gtab.bvals, gtab.bvecs, **{k: v for k, v in truth(rng, n_distinct // 2,
                                                                        t).items()
                                               if k != "mu"}, mu=truth(rng, n_distinct // 2,
                                                                       t)["mu"], d_par=D_PAR_WM)
        for t in ("wm", "gm")]).astype(np.float32)
    shape = (64, 64, int(np.ceil(n_vox / 4096)))
    # Fortran-ordered, as nibabel's get_fdata returns an image: a reshape(-1, n) would copy it
    data = np.empty(shape + (gtab.n_volumes,), np.float32, order="F")
    for z in range(shape[2]):
        idx = rng.integers(0, n_distinct, 4096)
        sig = clean[idx] + rng.normal(0, 1 / SNR, (4096, gtab.n_volumes)).astype(np.float32)
        data[:, :, z, :] = (1000.0 * np.abs(sig)).reshape(64, 64, -1)
    flat = data[:, :, 0, :].reshape(-1, gtab.n_volumes)
    mask = np.zeros(shape, bool)
    mask.reshape(-1)[:n_vox] = True
    assert data.flags.f_contiguous and not data.flags.c_contiguous
    tensor = TensorModel(gtab)
    noddi = NoddiModel(gtab)
    noddi.fit_voxels(flat[:4])
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0, c0 = time.perf_counter(), time.process_time()
    tf = tensor.fit(data, mask)
    t1, c1 = time.perf_counter(), time.process_time()
    nf = noddi.fit(data, mask, progress_desc="whole brain")
    t2, c2 = time.perf_counter(), time.process_time()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"WHOLE {n_vox} {t1 - t0:.1f} {t2 - t1:.1f} {peak:.0f} {rss0:.0f} "
          f"{data.nbytes / 2**20:.0f} {float(np.median(tf.fa[mask])):.3f} "
          f"{float(np.median(nf.icvf[mask])):.3f} {c1 - c0:.1f} {c2 - c1:.1f}", flush=True)


def bench_whole_brain(n_vox: int) -> str:
    out = subprocess.run([sys.executable, __file__, "--whole-brain-child", str(n_vox)],
                         capture_output=True, text=True, check=True).stdout
    f = next(line for line in out.splitlines() if line.startswith("WHOLE")).split()
    line = (f"whole brain DSI-515 {f[1]} voxels: tensor {f[2]} s + NODDI {f[3]} s = "
            f"{float(f[2]) + float(f[3]):.1f} s; peak RSS {f[4]} MiB (input array {f[6]} MiB, "
            f"before fitting {f[5]} MiB); process CPU time tensor {f[9]} s, NODDI {f[10]} s; "
            f"load average {open('/proc/loadavg').read().split()[0]} at the end")
    print(line, flush=True)
    return line


def bench_speed(n_vox: int, runs: int, amico_vox: int, amico_runs: int) -> list[str]:
    """NODDI on DSI-515 (WM): median of ``runs`` fits of ``n_vox`` voxels (microvba) and of
    ``amico_runs`` fits of ``amico_vox`` voxels (AMICO), in one process; the model set-up
    (gradient grouping, stick table) timed cold (first subject) and warm (a second subject
    sharing the gradient table: cached)."""
    from microvba.models import noddi as noddi_mod

    gtab = dsi515()
    rng = np.random.default_rng(5)
    p = truth(rng, 2000, "wm")
    base = simulate(gtab, p, D_PAR_WM, rng)
    noddi_mod._stick_table.cache_clear()
    noddi_mod._kappa_from_tau_table.cache_clear()
    t0 = time.perf_counter()
    model = NoddiModel(gtab, d_par=D_PAR_WM)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    NoddiModel(gtab, d_par=D_PAR_WM)
    warm = time.perf_counter() - t0
    model.fit_voxels(base[:4])
    data = np.tile(base, (-(-n_vox // base.shape[0]), 1))[:n_vox]
    ours, ours_cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        model.fit(data)
        ours.append(time.perf_counter() - t0)
        ours_cpu.append(time.process_time() - c0)
    theirs, theirs_cpu = [], []
    amico_data = np.tile(base, (-(-amico_vox // base.shape[0]), 1))[:amico_vox]
    for _ in range(amico_runs):
        with tempfile.TemporaryDirectory() as tmp:
            _, dt_a, cpu_a = fit_amico(gtab, amico_data, D_PAR_WM, Path(tmp))
            theirs.append(dt_a)
            theirs_cpu.append(cpu_a)
    rate_ours = n_vox / float(np.median(ours))
    rate_theirs = amico_vox / float(np.median(theirs)) if theirs else float("nan")
    line = (f"NODDI DSI-515 WM: microvba median of {runs} x {n_vox} voxels "
            f"{np.median(ours):.2f} s ({rate_ours:,.0f} vox/s; runs "
            + ", ".join(f"{t:.2f}" for t in ours) + f"); AMICO median of {amico_runs} x "
            f"{amico_vox} voxels {np.median(theirs) if theirs else float('nan'):.2f} s "
            f"({rate_theirs:,.0f} vox/s); ratio {rate_ours / rate_theirs:.0f}x; model set-up "
            f"{cold:.2f} s cold, {warm:.3f} s for a second subject (cached table); process CPU "
            f"time per voxel microvba {np.median(ours_cpu) / n_vox * 1e6:.1f} us, AMICO "
            f"{np.median(theirs_cpu) / amico_vox * 1e6 if theirs else float('nan'):.0f} us "
            f"(CPU ratio {np.median(theirs_cpu) / amico_vox / (np.median(ours_cpu) / n_vox) if theirs else float('nan'):.0f}x); "
            f"load average {open('/proc/loadavg').read().split()[0]} at the end")
    print(line, flush=True)
    return [line]


def bench_real() -> list[str]:
    import nibabel as nib

    from microvba.models import fit_image

    rows = []
    for name in ("batman", "msmt"):
        d = DATA / "dwi"
        mask = d / "msmt_mask.nii.gz" if name == "msmt" else None
        with tempfile.TemporaryDirectory() as tmp:
            paths = fit_image(d / f"{name}_dwi.nii.gz", d / f"{name}_dwi.bval",
                              d / f"{name}_dwi.bvec", tmp, name, mask_path=mask)
            m = nib.load(paths["mask"]).get_fdata() > 0
            v = {k: nib.load(paths[k]).get_fdata()[m] for k in
                 ("fa", "md", "icvf", "odi", "isovf")}
        wm = v["fa"] > 0.4
        tissue = v["md"] < 1.5e-3
        line = (f"{name}: {m.sum()} voxels; tissue (MD<1.5e-3, n={tissue.sum()}): "
                + ", ".join(f"{k} {np.median(v[k][tissue]):.3g}" for k in v)
                + f"; WM (FA>0.4, n={wm.sum()}): "
                + ", ".join(f"{k} {np.median(v[k][wm]):.3g}" for k in v))
        print(line, flush=True)
        rows.append(line)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer voxels (smoke run)")
    ap.add_argument("--no-amico", action="store_true")
    ap.add_argument("--voxels", type=int, default=None, help="voxels per NODDI condition")
    ap.add_argument("--whole-brain-voxels", type=int, default=250_000)
    ap.add_argument("--whole-brain-child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--noddi-only", action="store_true", help="skip DTI, whole brain, crops")
    ap.add_argument("--speed", nargs=4, type=int, default=None,
                    metavar=("VOXELS", "RUNS", "AMICO_VOXELS", "AMICO_RUNS"),
                    help="only the median-of-runs NODDI speed comparison")
    ap.add_argument("--whole-brain-only", action="store_true")
    args = ap.parse_args()
    if args.whole_brain_child:
        whole_brain_child(args.whole_brain_child)
        return
    if args.speed:
        bench_speed(*args.speed)
        return
    if args.whole_brain_only:
        bench_whole_brain(args.whole_brain_voxels)
        return
    n = args.voxels or (300 if args.quick else 2000)
    print(f"# NODDI, SNR {SNR:g} Rician, {n} voxels per condition", flush=True)
    bench_noddi(n, not args.no_amico)
    if args.noddi_only:
        return
    print("# DTI", flush=True)
    bench_dti(20_000 if args.quick else 200_000)
    print("# whole brain", flush=True)
    bench_whole_brain(25_000 if args.quick else args.whole_brain_voxels)
    print("# real crops", flush=True)
    bench_real()


if __name__ == "__main__":
    main()
