"""Circularity of cluster-based correlations: in-sample r vs leave-one-subject-out r.

Simulated cohorts (``microvba.regions._cohort``): an 18^3 grid of 2 mm voxels, smooth noise,
one 5x5x5 region whose mean correlates with the score at a planted partial r (age as the
covariate). In each cohort the cluster is selected from the same data (the heaviest component
of the voxel-wise partial-r map at one-sided p < 0.01, 26-connected) and its r is estimated

- in sample (cluster mean; and the peak voxel's r, the number papers often quote),
- by microvba's leave-one-subject-out rule (``microvba.regions.loso_r``), and
- by a location-matched LOSO rule (each fold's component overlapping the in-sample cluster),
  the tempting variant that turns out to be circular;

next to the oracle (the fixed, true region's mean: its spread is the sampling error). The peer
check recomputes every in-sample r with ``pingouin.partial_corr``.

Run: ``.venv/bin/python benchmarks/bench_circularity.py [--quick] [--cohorts N]``
"""

from __future__ import annotations

import argparse
import time

import nibabel as nib
import numpy as np
from scipy import ndimage, stats

from microvba.regions.correlation import loso_r, partial_corr
from microvba.simulate.region_cohort import simulate_region_cohort


def _partial_r_map(Y: np.ndarray, score: np.ndarray, cov: np.ndarray) -> np.ndarray:
    z = np.column_stack([np.ones(len(score)), cov])
    res = np.column_stack([score, Y])
    res = res - z @ np.linalg.lstsq(z, res, rcond=None)[0]
    rs, ry = res[:, 0], res[:, 1:]
    return (rs @ ry) / np.sqrt((rs @ rs) * np.einsum("ij,ij->j", ry, ry))


def _components(r: np.ndarray, shape, dof: int, p: float = 0.01) -> np.ndarray:
    t = r * np.sqrt(dof / (1 - r * r))
    lab = ndimage.label((t > stats.t.isf(p, dof)).reshape(shape),
                        structure=np.ones((3, 3, 3)))[0].ravel()
    return lab


def _location_matched(c, cluster: np.ndarray) -> float:
    """LOSO with each fold's component chosen by overlap with the in-sample cluster."""
    n = len(c.score)
    held = np.full(n, np.nan)
    for i in range(n):
        keep = np.delete(np.arange(n), i)
        r = _partial_r_map(c.Y[keep], c.score[keep], c.age[keep, None])
        lab = _components(r, c.mask.shape, n - 1 - 3)
        hit = lab[cluster]
        hit = hit[hit > 0]
        fc = lab == np.bincount(hit).argmax() if hit.size else cluster
        held[i] = c.Y[i, fc].mean()
    return partial_corr(held, c.score, c.age[:, None], n_boot=0)["r"]


def run_condition(n: int, planted_r: float, cohorts: int, ablation: bool) -> dict:
    rows = []
    peer_diff = 0.0
    t_ours = t_peer = 0.0
    pg = _pingouin()
    for seed in range(cohorts):
        c = simulate_region_cohort(n=n, planted_r=planted_r, amplitude=2.0, seed=seed)
        mimg = nib.Nifti1Image(c.mask.astype(np.uint8), c.affine)
        res = loso_r(c.Y, c.score, c.age[:, None], mask_img=mimg, sign=1)
        r_map = _partial_r_map(c.Y, c.score, c.age[:, None])
        lab = _components(r_map, c.mask.shape, n - 3)
        t_map = r_map * np.sqrt((n - 3) / (1 - r_map ** 2))
        mass = np.bincount(lab, weights=np.where(lab > 0, t_map, 0))
        mass[0] = -np.inf
        cluster = lab == int(np.argmax(mass)) if lab.max() else np.zeros(lab.size, bool)
        means = c.Y[:, cluster].mean(axis=1)
        oracle = partial_corr(c.Y[:, c.region.ravel()].mean(1), c.score, c.age[:, None],
                              n_boot=0)["r"]
        if pg is not None:
            import pandas as pd

            df = pd.DataFrame({"m": means, "s": c.score, "age": c.age})
            t0 = time.perf_counter()
            ref = float(pg.partial_corr(df, x="m", y="s", covar=["age"])["r"].iloc[0])
            t_peer += time.perf_counter() - t0
            t0 = time.perf_counter()
            ours = partial_corr(means, c.score, c.age[:, None], n_boot=0)["r"]
            t_ours += time.perf_counter() - t0
            peer_diff = max(peer_diff, abs(ref - ours), abs(res["in_sample_r"] - ref))
        rows.append({
            "in_sample": res["in_sample_r"], "peak_voxel": float(r_map.max()),
            "loso": res["r"], "loso_lo": res["ci_low"], "loso_hi": res["ci_high"],
            "oracle": oracle, "overlap": res["mean_fold_overlap"],
            "detected": bool((cluster & c.region.ravel()).any()),
            "location": _location_matched(c, cluster) if ablation else np.nan})
    return {"n": n, "planted_r": planted_r, "rows": rows, "peer_max_abs_diff": peer_diff,
            "t_ours_ms": 1e3 * t_ours / cohorts, "t_peer_ms": 1e3 * t_peer / cohorts}


def _pingouin():
    try:
        import pingouin
    except ImportError:
        return None
    return pingouin


def summarise(cond: dict) -> dict:
    rows = cond["rows"]
    k = len(rows)
    get = {key: np.array([r[key] for r in rows], float) for key in rows[0]}
    r0 = cond["planted_r"]
    out = {"n": cond["n"], "planted_r": r0, "cohorts": k,
           "detected": get["detected"].mean()}
    for key in ("in_sample", "peak_voxel", "loso", "oracle", "location"):
        v = get[key][np.isfinite(get[key])]
        out[key] = v.mean() if v.size else np.nan
        out[key + "_sd"] = v.std(ddof=1) if v.size > 1 else np.nan
        out[key + "_z"] = ((v.mean() - r0) / (v.std(ddof=1) / np.sqrt(v.size))
                           if v.size > 1 else np.nan)
    out["loso_coverage"] = np.mean((get["loso_lo"] <= r0) & (r0 <= get["loso_hi"]))
    out["overlap"] = np.nanmean(get["overlap"])
    out.update({k2: cond[k2] for k2 in ("peer_max_abs_diff", "t_ours_ms", "t_peer_ms")})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="20 cohorts, two conditions")
    ap.add_argument("--cohorts", type=int, default=60)
    ap.add_argument("--ablation-cohorts", type=int, default=15,
                    help="cohorts for the (slow) location-matched rule")
    args = ap.parse_args()
    cohorts = 20 if args.quick else args.cohorts
    conditions = ([(64, 0.0), (64, 0.45)] if args.quick else
                  [(64, 0.0), (64, 0.27), (64, 0.45), (64, 0.6), (128, 0.33)])
    print(f"cohorts per condition: {cohorts}; grid 18^3, region 5^3, smooth sigma 1 voxel")
    print("(mean r; in parentheses (mean - planted) / SE for in-sample and LOSO, the SD of "
          "the oracle;\n cover = LOSO 95% CI coverage of the planted r; detect = in-sample "
          "cluster overlaps the region;\n ovlp = mean fraction of the in-sample cluster inside "
          "the fold clusters)")
    head = (f"{'n':>4} {'r':>5} {'detect':>6} | {'in-sample':>14} {'peak vox':>9} | "
            f"{'LOSO':>14} {'cover':>5} {'ovlp':>5} | {'oracle':>14}")
    print(head)
    print("-" * len(head))
    summaries = []
    t0 = time.perf_counter()
    for n, r0 in conditions:
        s = summarise(run_condition(n, r0, cohorts, ablation=False))
        summaries.append(s)
        print(f"{n:>4} {r0:>5.2f} {s['detected']:>6.2f} | "
              f"{s['in_sample']:>6.3f} ({s['in_sample_z']:+5.1f}) {s['peak_voxel']:>9.3f} | "
              f"{s['loso']:>6.3f} ({s['loso_z']:+5.1f}) {s['loso_coverage']:>5.2f} "
              f"{s['overlap']:>5.2f} | {s['oracle']:>6.3f} ({s['oracle_sd']:.3f})", flush=True)
    n_abl = 10 if args.quick else args.ablation_cohorts
    if n_abl > 0:
        print(f"\nlocation-matched LOSO ({n_abl} cohorts):")
        for n, r0 in ((64, 0.0), (64, 0.45)):
            s = summarise(run_condition(n, r0, n_abl, ablation=True))
            print(f"  n={n} r={r0:.2f}: location-matched {s['location']:.3f} "
                  f"(z {s['location_z']:+.1f}) vs rank LOSO {s['loso']:.3f} "
                  f"(z {s['loso_z']:+.1f}), in-sample {s['in_sample']:.3f}", flush=True)
    peer = max(s["peer_max_abs_diff"] for s in summaries)
    t_ours = np.mean([s["t_ours_ms"] for s in summaries])
    t_peer = np.mean([s["t_peer_ms"] for s in summaries])
    print(f"peer: pingouin.partial_corr on the in-sample cluster means, max |r diff| = "
          f"{peer:.2e}; time per call microvba {t_ours:.2f} ms vs pingouin {t_peer:.2f} ms "
          f"(ratio {t_peer / max(t_ours, 1e-9):.1f}x)")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
