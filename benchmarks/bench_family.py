"""Family-wise error over 7 metrics x 2 directions: per-map, max-statistic, min-p and NPC.

Each cohort: 64 subjects, 7 "metrics" of smooth Gaussian noise in an ellipsoid of ~4,000
voxels, with different smoothness per metric (so that their TFCE scales differ, as FA vs
ISOVF do) and correlated metrics (MD, RD, AD share a component; FA is anti-correlated with
RD), a score and two covariates; ``--n-perm`` Freedman-Lane permutations shared by all maps
(:func:`microvba.stats.randomise_family`, min-p over all 14 maps, NPC Fisher and Tippett).

Per cohort and mode, "a false finding" = any voxel with TFCE FWE p < 0.05 (also the voxel
max-t statistic). Modes:

* ``per-map``   : each map at its own FWE (``--correct-across none``, the study's analysis),
* ``max``       : max of the raw statistic over the 14 maps (the old ``--correct-across``),
* ``minp``      : Westfall-Young min-p over the 14 maps (the new default),
* ``npc-fisher`` / ``npc-tippett`` : the combined map's FWE.

``--effect E`` plants a score effect (peak correlation-scale amplitude ``E``) in a blob:
``--effect-metrics icvf`` (one metric) or ``fa,md,rd,icvf`` (a weak, shared one); then the
rates are the power (detection anywhere inside the blob; and false findings outside it).

Usage (run cohorts in parts, then summarise)::

    .venv/bin/python benchmarks/bench_family.py run --cohorts 0:400 --out /tmp/fam/null
    .venv/bin/python benchmarks/bench_family.py run --cohorts 0:100 --effect 0.4 \
        --effect-metrics icvf --out /tmp/fam/icvf
    .venv/bin/python benchmarks/bench_family.py summary /tmp/fam/null
    .venv/bin/python benchmarks/bench_family.py speed --nilearn   # 7 metrics, 166k voxels
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage, stats

from microvba.stats import randomise_family
from microvba.stats.inference import fwe_p

METRICS = ("fa", "md", "rd", "ad", "icvf", "odi", "isovf")
#: smoothing sigma (voxels) per metric: different TFCE scales
SIGMA = {"fa": 1.0, "md": 1.6, "rd": 1.6, "ad": 1.3, "icvf": 2.0, "odi": 2.4, "isovf": 2.8}
SHAPE = (20, 20, 16)
N_SUBJECTS = 64
ALPHA = 0.05
MODES = ("per-map", "max", "minp", "npc-fisher", "npc-tippett")


def ellipsoid() -> np.ndarray:
    g = np.indices(SHAPE, dtype=float)
    c = [(s - 1) / 2 for s in SHAPE]
    r = [s / 2 - 1.5 for s in SHAPE]
    return sum(((g[i] - c[i]) / r[i]) ** 2 for i in range(3)) <= 1.0


def blob(mask: np.ndarray) -> np.ndarray:
    """A smooth effect profile (max 1) around an off-centre point, 0 far away."""
    g = np.indices(SHAPE, dtype=float)
    centre = (8, 15, 9)
    d2 = sum((g[i] - centre[i]) ** 2 for i in range(3))
    prof = np.exp(-d2 / (2 * 2.5 ** 2))
    prof[prof < 0.05] = 0.0
    return prof[mask]


def cohort(seed: int, mask: np.ndarray, effect: float, effect_metrics: tuple[str, ...]):
    rng = np.random.default_rng(seed)
    n = N_SUBJECTS
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.normal(40, 10, n),
                         rng.integers(0, 2, n)])
    score = (X[:, 1] - X[:, 1].mean()) / X[:, 1].std()

    def noise(sigma):
        v = np.stack([ndimage.gaussian_filter(rng.standard_normal(SHAPE), sigma)[mask]
                      for _ in range(n)])
        return v / v.std()

    shared = noise(1.6)
    Ys = {}
    for m in METRICS:
        own = noise(SIGMA[m])
        if m in ("md", "rd", "ad"):
            own = 0.6 * shared + 0.8 * own
        Ys[m] = own
    Ys["fa"] = 0.8 * Ys["fa"] - 0.6 * Ys["rd"]
    prof = blob(mask)
    for m in effect_metrics:
        Ys[m] = Ys[m] + effect * np.outer(score, prof) * (1 if m != "md" else -1)
    return Ys, X, prof > 0


def run(args) -> None:
    """Run cohorts; save per cohort the permutation maxima of every map (and NPC map) and
    the observed maxima inside/outside the planted blob, so that every correction mode is
    computed afterwards from the same permutations (``summary``)."""
    mask = ellipsoid()
    start, stop = (int(x) for x in args.cohorts.split(":"))
    effect_metrics = tuple(m for m in args.effect_metrics.split(",") if m) if args.effect else ()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for c in range(start, stop):
        if (out / f"cohort-{c:04d}.npz").exists():
            continue
        t0 = time.perf_counter()
        Ys, X, inside = cohort(10_000 + c, mask, args.effect, effect_metrics)
        res = randomise_family(Ys, X, np.array([0, 1.0, 0, 0]), mask, n_perm=args.n_perm,
                               seed=c, cluster_threshold=None, family_maps=False,
                               npc=("fisher", "tippett"), n_jobs=args.n_jobs)
        names = [*METRICS, "npc_fisher", "npc_tippett"]
        null = np.zeros((len(names), 2, 2, args.n_perm))  # map, sign, (tfce, vox), perm
        obs = np.zeros((len(names), 2, 2, 2))  # map, sign, stat, (inside, outside)
        for i, name in enumerate(names):
            r = res[name]
            for k in ((1, 2) if i < len(METRICS) else (1,)):
                for j, (stat, key) in enumerate((("tfce", "tfce_tstat"), ("vox", "tstat"))):
                    null[i, k - 1, j] = r.null_max[f"{stat}_tstat{k}"]
                    values = np.maximum(r.maps[f"{key}{k}"], 0.0)
                    obs[i, k - 1, j] = values[inside].max(), values[~inside].max()
        tmp = out / f".cohort-{c:04d}.npz"
        np.savez_compressed(tmp, null=null, obs=obs, effect=args.effect,
                            effect_metrics=np.array(effect_metrics, dtype=str),
                            n_voxels=int(mask.sum()), seconds=time.perf_counter() - t0)
        tmp.rename(out / f"cohort-{c:04d}.npz")
        print(f"cohort {c}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)


def ci(k: int, n: int) -> str:
    lo, hi = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
    return f"{k / n:.3f} [{lo:.3f}, {hi:.3f}]"


def _mode_p(null: np.ndarray, obs: np.ndarray, mode: str, tail: bool) -> np.ndarray:
    """(n_metrics, 2, 2, 2) p of the observed maxima (inside, outside) under a mode."""
    from microvba.stats.family import Family, minp_null, minp_p

    K = len(METRICS)
    p = np.ones(obs[:K].shape)
    if mode == "per-map":
        for m in range(K):
            for s in range(2):
                for j in range(2):
                    p[m, s, j] = fwe_p(obs[m, s, j], null[m, s, j])
    elif mode == "max":
        fam = null[:K].max(axis=(0, 1))
        for m in range(K):
            for s in range(2):
                for j in range(2):
                    p[m, s, j] = fwe_p(obs[m, s, j], fam[j])
    else:  # "minp" (each statistic its own family) or "minp-joint" (TFCE and vox together)
        counts = minp_null(null[:K], Family.ALL.groups(K, 2), tail=tail,
                           joint=(0, 1) if mode == "minp-joint" else ())
        for m in range(K):
            for s in range(2):
                for j in range(2):
                    p[m, s, j] = minp_p(obs[m, s, j], null[m, s, j], counts[m, s, j],
                                        tail=tail)  # (inside, outside)
        if mode == "minp-joint":  # a finding: TFCE or vox significant (both columns)
            p[:, :, :] = p.min(axis=2, keepdims=True)
    return p


def replicate_balance(data, tail: bool = True, joint: bool = True) -> np.ndarray:
    """Per metric, the share of null replicates with a family-wise finding in that metric.

    Every permutation ``j >= 1`` of a null cohort is itself a null data set, exchangeable
    with the observed one, so it can be tested like it against the same min-p family
    (its maximum's p-value against the map's own null, compared with the family's 5%
    critical min-p): ``len(data) x (n_perm - 1)`` replicates per metric and direction
    instead of ``len(data)``. Returns (n_cohorts, K) counts of replicates (either
    direction) with a finding in the metric, and the number of replicates per cohort.
    """
    from microvba.stats.family import Family, minp_null

    K = len(METRICS)
    js = (0, 1) if joint else (0,)  # (tfce, vox) or TFCE only
    out = []
    for d in data:
        null = d["null"][:K]
        low = minp_null(null, Family.ALL.groups(K, 2), tail=tail, joint=js if joint else ())
        crit = np.sort(low[0, 0, 0])[int(np.floor(ALPHA * low.shape[-1])) - 1]
        hits = np.zeros(K)
        for m in range(K):
            pv = np.stack([_own_p(null[m, s, j], tail) for s in range(2) for j in js])
            # as minp_p: rejected when fewer than alpha N family minima are <= p
            hits[m] = (pv[:, 1:] * (1 + 1e-9) < crit).any(axis=0).sum()
        out.append(hits)
    return np.array(out), data[0]["null"].shape[-1] - 1


def _own_p(null: np.ndarray, tail: bool) -> np.ndarray:
    from microvba.stats.family import perm_p

    return perm_p(null, null, tail)


def _obs(d, effect: float) -> np.ndarray:
    """Observed maxima; without an effect, "outside" means anywhere (max of both parts)."""
    obs = np.array(d["obs"])
    if not effect:
        obs[..., 1] = obs.max(axis=-1)
    return obs


def summary(args) -> None:
    files = sorted(f for d in args.dirs for f in Path(d).glob("cohort-*.npz"))
    data = [np.load(f) for f in files]
    n = len(data)
    effect = float(data[0]["effect"])
    where = 0 if effect else 1  # inside the blob (power) or anywhere (false positives)
    what = (f"power (any FWE-significant voxel in the planted blob), "
            f"{list(data[0]['effect_metrics'])} effect {effect}" if effect
            else "family-wise false-positive rate (any map, anywhere)")
    n_perm = data[0]["null"].shape[-1]
    print(f"{n} cohorts, {int(data[0]['n_voxels'])} voxels, {n_perm} permutations, "
          f"median {np.median([float(d['seconds']) for d in data]):.1f} s/cohort; {what}\n")
    modes = {"per-map": ("per-map", False), "max": ("max", False),
             "minp (ranks)": ("minp", False), "minp (tail)": ("minp", True),
             "minp TFCE+vox (default: tail)": ("minp-joint", True)}
    pvals = {label: np.array([_mode_p(d["null"], _obs(d, effect), mode, tail) for d in data])
             for label, (mode, tail) in modes.items()}  # (n, K, 2, 2 stats, 2 where)
    for j, stat in enumerate(("tfce", "vox")):
        print(f"### {stat}\n")
        print("| mode | any map (family) | " + " | ".join(METRICS) + " |")
        print("|---|---|" + "---|" * len(METRICS))
        for label in modes:
            sig = pvals[label][:, :, :, j, where] < ALPHA  # (n, K, 2)
            anyk = int(sig.any(axis=(1, 2)).sum())
            per = sig.sum(axis=(0, 2)) / (2 * n)
            print(f"| {label} | {ci(anyk, n)} | " + " | ".join(f"{x:.4f}" for x in per) + " |")
        for i, f in enumerate(("fisher", "tippett")):
            k = sum(fwe_p(_obs(d, effect)[len(METRICS) + i, 0, j, where],
                          d["null"][len(METRICS) + i, 0, j]) < ALPHA for d in data)
            print(f"| NPC {f} | {ci(int(k), n)} |" + " |" * len(METRICS))
        print()
    print("per-metric columns: share of cohort x direction pairs with a finding "
          "(mean over + and -); the TFCE+vox rows count a finding by either statistic "
          "(same figures in both tables)")
    if not effect:
        balance(data, n, pvals["minp TFCE+vox (default: tail)"][:, :, :, 0, 1] < ALPHA)


def balance(data, n: int, sig: np.ndarray) -> None:
    """Per-metric share of the default mode's false positives (``sig`` (n, K, 2)), with
    95% intervals."""
    per = sig.any(axis=2).sum(axis=0)  # cohorts with a finding in the metric
    print("\n### per-metric balance of the default (min-p, TFCE+vox, tail)\n")
    print(f"(a) null cohorts: cohorts with a false finding in the metric (of {n}), "
          "95% Clopper-Pearson\n")
    print("| metric | cohorts | rate [95% CI] |\n|---|---|---|")
    for m, name in enumerate(METRICS):
        print(f"| {name} | {per[m]} | {ci(int(per[m]), n)} |")
    chi = stats.chisquare(per) if per.sum() else None
    print(f"\nhomogeneity (chi-square, equal shares): p = "
          f"{chi.pvalue:.3f}" if chi else "no finding")
    hits, n_rep = replicate_balance(data)
    tot = hits.sum(axis=0)
    rate = tot / (len(data) * n_rep)
    # 95% interval by resampling cohorts (replicates within a cohort are dependent)
    rng = np.random.default_rng(0)
    boot = np.array([hits[rng.integers(0, len(data), len(data))].sum(axis=0)
                     for _ in range(2000)]) / (len(data) * n_rep)
    lo, hi = np.quantile(boot, [0.025, 0.975], axis=0)
    ratio = boot.max(axis=1) / np.maximum(boot.min(axis=1), 1e-12)
    print(f"\n(b) permutation replicates: {len(data)} cohorts x {n_rep} permutations, each "
          "tested as a null data set against its cohort's min-p family (either direction; "
          "95% interval by resampling cohorts)\n")
    print("| metric | rate [95% CI] |\n|---|---|")
    for m, name in enumerate(METRICS):
        print(f"| {name} | {rate[m]:.4f} [{lo[m]:.4f}, {hi[m]:.4f}] |")
    print(f"\nlargest / smallest metric rate: {rate.max() / rate.min():.2f} "
          f"[{np.quantile(ratio, 0.025):.2f}, {np.quantile(ratio, 0.975):.2f}]")


def speed(args) -> None:
    """The whole study's inference: 7 metrics x 2 signs at 2 mm, shared permutations."""
    import os

    from bench_randomise import design, gm_mask, smooth_cohort, time_nilearn

    rng = np.random.default_rng(0)
    mask, affine = gm_mask()
    n = N_SUBJECTS
    V = int(mask.sum())
    print(f"data: {n} subjects x {V} gray-matter voxels (MNI152 2 mm), 7 metrics of FWHM 6 mm "
          f"noise; load avg {os.getloadavg()}")
    Ys = {m: smooth_cohort(mask, n, rng) for m in METRICS}
    X = design(n, rng)
    c = np.array([0, 1.0, 0, 0])
    small = mask & (np.cumsum(mask).reshape(mask.shape) <= 3000)
    randomise_family({m: Y[:, :3000] for m, Y in Ys.items()}, X, c, small, n_perm=10,
                     family_method="minp", npc=("fisher",), n_jobs=1)  # compile
    profile(Ys["fa"], X, c, mask, args.profile_reps)
    runs = {}
    for k in args.perms:
        t0, c0 = time.perf_counter(), time.process_time()
        randomise_family(Ys, X, c, mask, n_perm=k, seed=0, family_method="minp",
                         correct_across="all", npc=tuple(args.npc), n_jobs=args.n_jobs)
        runs[k] = (time.perf_counter() - t0, time.process_time() - c0)
        print(f"microvba randomise_family, 7 metrics, {args.n_jobs} threads, n_perm={k}: "
              f"wall {runs[k][0]:.1f} s, CPU {runs[k][1]:.1f} s; load {os.getloadavg()[0]:.1f}",
              flush=True)
    (k0, (w0, c0)), (k1, (w1, c1)) = sorted(runs.items())
    slope_w, slope_c = (w1 - w0) / (k1 - k0), (c1 - c0) / (k1 - k0)
    setup_w, setup_c = w0 - slope_w * k0, c0 - slope_c * k0
    print(f"per permutation (all 14 maps{' + NPC ' + ','.join(args.npc) if args.npc else ''}):"
          f" wall {slope_w * 1e3:.0f} ms, CPU {slope_c * 1e3:.0f} ms; setup wall "
          f"{setup_w:.0f} s, CPU {setup_c:.0f} s")
    full_w = setup_w + 5000 * slope_w
    full_c = setup_c + 5000 * slope_c
    print(f"extrapolated 5,000 permutations: wall {full_w / 60:.1f} min at this load; CPU "
          f"{full_c / 60:.1f} min = {full_c / 120:.1f} min on 2 idle cores (CPU / 2)")
    if args.nilearn:
        nl = time_nilearn(Ys["fa"], X, mask, affine, (1, 3))
        print(f"nilearn permuted_ols(tfce=True), 1 metric, 1 job: {nl:.2f} s/perm -> 7 metrics "
              f"x 5,000: {7 * 5000 * nl / 3600:.1f} h; ratio per metric-permutation (wall, "
              f"microvba {args.n_jobs} threads): {nl / (slope_w / 7):.0f}x")


def profile(Y: np.ndarray, X: np.ndarray, c: np.ndarray, mask: np.ndarray, reps: int) -> None:
    """Process CPU time of each step of one metric-permutation (both signs), in one process:
    the old ``np.argsort`` against the radix sort now used, exact TFCE and cluster sweeps."""
    import os

    from microvba.stats.clusters import ClusterWorkspace
    from microvba.stats.glm import freedman_lane
    from microvba.stats.tfce import HeightOrder, TfceWorkspace, neighbour_table

    rng = np.random.default_rng(1)
    fl = freedman_lane(X, c)
    e = fl.residualise(np.asarray(Y, dtype=np.float64))
    maps = [fl.t_stat(e[rng.permutation(X.shape[0])]).astype(np.float32) for _ in range(reps)]
    V = maps[0].size
    n6, n26 = neighbour_table(mask, 6), neighbour_table(mask, 26)
    sort, tws, cws = HeightOrder(V), TfceWorkspace(V, 0.5), ClusterWorkspace(V)

    def cpu(fn) -> float:
        fn(0)  # compile / warm
        t0 = time.process_time()
        for i in range(len(maps)):
            fn(i)
        return (time.process_time() - t0) / len(maps) * 1e3

    orders = [sort(t).copy() for t in maps]
    same = all(np.array_equal(o, np.argsort(t, kind="stable"))
               for o, t in zip(orders, maps, strict=True))
    ms = {
        "np.argsort (before)": cpu(lambda i: np.argsort(maps[i])),
        "radix sort (now)": cpu(lambda i: sort(maps[i])),
        "TFCE sweep, both signs": cpu(lambda i: [tws.sweep(maps[i], orders[i], s, n6, 2.0)
                                                 for s in (1, -1)]),
        "cluster sweep, both signs": cpu(lambda i: [cws.sweep(maps[i], orders[i], s, 3.1, n26)
                                                    for s in (1, -1)]),
    }
    print(f"\nprofile of one metric-permutation ({V} voxels, {len(maps)} permuted t maps, "
          f"process CPU, load {os.getloadavg()[0]:.1f}); radix order == stable argsort: "
          f"{same}")
    for k, v in ms.items():
        print(f"  {k:28s} {v:7.2f} ms")
    print(f"  sort speed-up (same process, same maps): "
          f"{ms['np.argsort (before)'] / ms['radix sort (now)']:.1f}x\n", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--cohorts", default="0:400")
    r.add_argument("--n-perm", type=int, default=500)
    r.add_argument("--effect", type=float, default=0.0)
    r.add_argument("--effect-metrics", default="icvf")
    r.add_argument("--n-jobs", type=int, default=1)
    r.add_argument("--out", required=True, help="folder of the per-cohort .npz files")
    s = sub.add_parser("summary")
    s.add_argument("dirs", nargs="+")
    sp = sub.add_parser("speed", help="the whole study's inference at 2 mm, beside nilearn")
    sp.add_argument("--perms", type=int, nargs=2, default=[20, 60])
    sp.add_argument("--n-jobs", type=int, default=2)
    sp.add_argument("--npc", nargs="*", default=[])
    sp.add_argument("--nilearn", action="store_true")
    sp.add_argument("--profile-reps", type=int, default=20,
                    help="permuted maps timed per step in the profile")
    args = ap.parse_args()
    {"run": run, "summary": summary, "speed": speed}[args.cmd](args)


if __name__ == "__main__":
    main()
