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

Calibration of the LOSO p and CI (session 7), on the same cohorts, four estimators:

- ``fisher``: the held-out means as before, t-test p and Fisher CI (the old output, and
  ``n_perm=0`` today);
- ``centred``: each held-out value relative to its fold's training subjects, per voxel,
  :math:`\\bar{(Y_{iv} - \\bar Y_{-i,v})}` over the fold cluster, Fisher;
- ``z-scored``: also divided by the training subjects' SD per voxel, Fisher;
- ``perm``: ``loso_r(..., n_perm=B)``, the whole leave-one-out redone on B Freedman-Lane
  null scores (permutation p, CI with the null replicates' spread).

Reported per condition: mean r, coverage of the planted r by the 95% CI, rate of
p <= 0.05 (with B + 1 a multiple of 20 permutations, e.g. 39 or 99, p <= 0.05 is an
exact 5% test) and mean CI width.

Run: ``.venv/bin/python benchmarks/bench_circularity.py [--quick] [--cohorts N]
[--null-cohorts N] [--perm B]``
"""

from __future__ import annotations

import argparse
import time

import nibabel as nib
import numpy as np
from scipy import ndimage, stats

from microvba.regions.correlation import _Components, _FoldMaps, loso_r, partial_corr
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


def _transformed(c) -> dict:
    """Held-out r of the centred and z-scored fold means (training subjects' voxel mean and
    SD, no leakage), the same rank-1 fold clusters as ``loso_r``; Fisher CI, t-test p."""
    n = len(c.score)
    Y, cov = c.Y, c.age[:, None]
    maps = _FoldMaps(Y, c.score, cov)
    folds = _Components(c.mask, 1, 0.01, n - 4, 26)
    S, SS = Y.sum(0), (Y ** 2).sum(0)
    held = {"centred": np.full(n, np.nan), "z-scored": np.full(n, np.nan)}
    for i in range(n):
        fc = np.flatnonzero(folds.ranked(maps.r_map(held_out=i)) == 1)
        if not fc.size:
            continue
        m = (S[fc] - Y[i, fc]) / (n - 1)
        sd = np.sqrt(np.maximum((SS[fc] - Y[i, fc] ** 2) - (n - 1) * m ** 2, 0) / (n - 2))
        held["centred"][i] = (Y[i, fc] - m).mean()
        held["z-scored"][i] = ((Y[i, fc] - m) / sd).mean()
    out = {}
    for key, v in held.items():
        pc = partial_corr(v, c.score, cov, n_boot=0) if np.isfinite(v).sum() > 4 else {}
        out.update({f"{key}": pc.get("r", np.nan), f"{key}_lo": pc.get("ci_low", np.nan),
                    f"{key}_hi": pc.get("ci_high", np.nan), f"{key}_p": pc.get("p", np.nan)})
    return out


def run_condition(n: int, planted_r: float, cohorts: int, ablation: bool,
                  n_perm: int = 0) -> dict:
    rows = []
    peer_diff = 0.0
    t_ours = t_peer = 0.0
    pg = _pingouin()
    for seed in range(cohorts):
        c = simulate_region_cohort(n=n, planted_r=planted_r, amplitude=2.0, seed=seed)
        mimg = nib.Nifti1Image(c.mask.astype(np.uint8), c.affine)
        res = loso_r(c.Y, c.score, c.age[:, None], mask_img=mimg, sign=1)
        perm = (loso_r(c.Y, c.score, c.age[:, None], mask_img=mimg, sign=1, n_perm=n_perm,
                       seed=seed) if n_perm else None)
        extra = _transformed(c) if n_perm else {}
        if perm is not None:
            extra.update({"perm": perm["r"], "perm_lo": perm["ci_low"],
                          "perm_hi": perm["ci_high"], "perm_p": perm["p"]})
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
            "loso_p": res["p"], **extra,
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
    out["calibration"] = {}
    for name, key in (("fisher", "loso"), ("centred", "centred"), ("z-scored", "z-scored"),
                      ("perm", "perm")):
        if key not in get:
            continue
        ok = np.isfinite(get[key])
        lo, hi, p = get[key + "_lo"][ok], get[key + "_hi"][ok], get[key + "_p"][ok]
        out["calibration"][name] = {
            "k": int(ok.sum()), "r": get[key][ok].mean(),
            "cover": np.mean((lo <= r0) & (r0 <= hi)), "p05": np.mean(p <= 0.05),
            "width": np.mean(hi - lo)}
    out["overlap"] = np.nanmean(get["overlap"])
    out.update({k2: cond[k2] for k2 in ("peer_max_abs_diff", "t_ours_ms", "t_peer_ms")})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="20 cohorts, two conditions")
    ap.add_argument("--cohorts", type=int, default=60)
    ap.add_argument("--null-cohorts", type=int, default=200,
                    help="cohorts of the n = 64 null condition")
    ap.add_argument("--conditions", default=None,
                    help="subset, e.g. '64:0,128:0.33' (n:planted r; default all five)")
    ap.add_argument("--perm", type=int, default=99,
                    help="permutations of the LOSO p/CI (0: skip the calibration table)")
    ap.add_argument("--ablation-cohorts", type=int, default=15,
                    help="cohorts for the (slow) location-matched rule")
    args = ap.parse_args()
    cohorts = 20 if args.quick else args.cohorts
    conditions = ([(64, 0.0), (64, 0.45)] if args.quick else
                  [(64, 0.0), (64, 0.27), (64, 0.45), (64, 0.6), (128, 0.33)])
    if args.conditions:
        conditions = [(int(a), float(b)) for a, b in
                      (c.split(":") for c in args.conditions.split(","))]
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
    n_null = 20 if args.quick else args.null_cohorts
    for n, r0 in conditions:
        s = summarise(run_condition(n, r0, n_null if r0 == 0 else cohorts, ablation=False,
                                    n_perm=args.perm))
        summaries.append(s)
        print(f"{n:>4} {r0:>5.2f} {s['detected']:>6.2f} | "
              f"{s['in_sample']:>6.3f} ({s['in_sample_z']:+5.1f}) {s['peak_voxel']:>9.3f} | "
              f"{s['loso']:>6.3f} ({s['loso_z']:+5.1f}) {s['loso_coverage']:>5.2f} "
              f"{s['overlap']:>5.2f} | {s['oracle']:>6.3f} ({s['oracle_sd']:.3f})", flush=True)
    if args.perm:
        print(f"\nLOSO calibration (same cohorts; perm = {args.perm} Freedman-Lane "
              "permutations of the whole LOSO;\n cover = 95% CI coverage of the planted r, "
              "p<=.05 = rate of loso_p <= 0.05, width = mean CI width)")
        head2 = (f"{'n':>4} {'r':>5} {'cohorts':>7} | " + " | ".join(
            f"{name:>8}: {'r':>6} {'cover':>5} {'p<=.05':>6} {'width':>5}"
            for name in ("fisher", "centred", "z-scored", "perm")))
        print(head2)
        print("-" * len(head2))
        for s in summaries:
            cal = s["calibration"]
            print(f"{s['n']:>4} {s['planted_r']:>5.2f} {s['cohorts']:>7} | " + " | ".join(
                f"{name:>8}: {cal[name]['r']:>+6.3f} {cal[name]['cover']:>5.2f} "
                f"{cal[name]['p05']:>6.3f} {cal[name]['width']:>5.2f}"
                for name in ("fisher", "centred", "z-scored", "perm") if name in cal))
        k0 = next((s["cohorts"] for s in summaries if s["planted_r"] == 0), 0)
        if k0:
            print(f"(binomial SE of a 5% rate over {k0} null cohorts: "
                  f"{np.sqrt(0.05 * 0.95 / k0):.3f})")
    n_abl = min(10, args.ablation_cohorts) if args.quick else args.ablation_cohorts
    if n_abl > 0:
        print(f"\nlocation-matched LOSO ({n_abl} cohorts):")
        for n, r0 in ((64, 0.0), (64, 0.45)):
            s = summarise(run_condition(n, r0, n_abl, ablation=True))
            print(f"  n={n} r={r0:.2f}: location-matched {s['location']:.3f} "
                  f"(z {s['location_z']:+.1f}) vs rank LOSO {s['loso']:.3f} "
                  f"(z {s['loso_z']:+.1f}), in-sample {s['in_sample']:.3f}", flush=True)
    if not summaries:
        return
    peer = max(s["peer_max_abs_diff"] for s in summaries)
    t_ours = np.mean([s["t_ours_ms"] for s in summaries])
    t_peer = np.mean([s["t_peer_ms"] for s in summaries])
    print(f"peer: pingouin.partial_corr on the in-sample cluster means, max |r diff| = "
          f"{peer:.2e}; time per call microvba {t_ours:.2f} ms vs pingouin {t_peer:.2f} ms "
          f"(ratio {t_peer / max(t_ours, 1e-9):.1f}x)")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
