"""Permutation inference with TFCE: microvba vs nilearn ``permuted_ols(tfce=True)``.

Same data in one process: 64 subjects of smooth Gaussian noise inside the MNI152 2 mm
gray-matter mask (ICBM152 2009 GM probability >= 0.3, ~166k voxels), a score and two
covariates (age, sex). Prints the time per permutation of each tool, their ratio, and the
time of the full 5,000-permutation analysis with microvba on all cores.

``--fwe`` instead runs the FWE-control check: many null experiments (score independent of the
data) on a reduced grid, each with its own permutations, and reports the family-wise
false-positive rate of the TFCE, voxel, cluster-extent and cluster-mass statistics at
alpha = 0.05, then the power with a planted effect.

Usage::

    .venv/bin/python benchmarks/bench_randomise.py [--quick] [--n-perm 5000] [--skip-full]
    .venv/bin/python benchmarks/bench_randomise.py --fwe [--experiments 500] [--fwe-perm 500] [--no-power]
        [--fwe-design score|one-sample|blocks|corrcon]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
from scipy import ndimage

from microvba.stats import randomise

FWHM_MM = 6.0
VOXEL_MM = 2.0
STATS = ("tfce", "vox", "clustere", "clusterm")


def gm_mask() -> tuple[np.ndarray, np.ndarray]:
    from nilearn.datasets import load_mni152_gm_template

    img = load_mni152_gm_template(resolution=2)
    return np.asarray(img.get_fdata()) >= 0.3, img.affine


def smooth_cohort(mask: np.ndarray, n: int, rng: np.random.Generator,
                  fwhm_vox: float = FWHM_MM / VOXEL_MM) -> np.ndarray:
    """(n, V) float32: Gaussian noise smoothed to ``fwhm_vox`` voxels, unit variance."""
    sigma = fwhm_vox / np.sqrt(8 * np.log(2))
    Y = np.empty((n, int(mask.sum())), dtype=np.float32)
    for i in range(n):
        vol = ndimage.gaussian_filter(rng.standard_normal(mask.shape).astype(np.float32), sigma)
        Y[i] = vol[mask]
    return Y / Y.std()


def design(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.column_stack([np.ones(n), rng.normal(size=n), rng.normal(40, 10, n),
                            rng.integers(0, 2, n)])


def time_nilearn(Y, X, mask, affine, n_perms: tuple[int, int]) -> float:
    """Seconds per permutation of nilearn permuted_ols(tfce=True), by difference of 2 runs."""
    import nibabel as nib
    from nilearn.maskers import NiftiMasker
    from nilearn.mass_univariate import permuted_ols

    masker = NiftiMasker(nib.Nifti1Image(mask.astype(np.uint8), affine)).fit()
    times = []
    for k in n_perms:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            permuted_ols(X[:, [1]], Y.astype(np.float64), confounding_vars=X[:, 2:],
                         model_intercept=True, n_perm=k, two_sided_test=True, tfce=True,
                         masker=masker, n_jobs=1, random_state=0, verbose=0,
                         output_type="dict")
        times.append(time.perf_counter() - t0)
        print(f"  nilearn permuted_ols(tfce=True) n_perm={k}: {times[-1]:.1f} s")
    return (times[1] - times[0]) / (n_perms[1] - n_perms[0])


def time_microvba(Y, X, mask, n_perm: int, n_jobs: int) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of the process, result)."""
    t0, c0 = time.perf_counter(), time.process_time()
    res = randomise(Y, X, np.array([0, 1.0, 0, 0]), mask, n_perm=n_perm, seed=0,
                    n_jobs=n_jobs)
    return time.perf_counter() - t0, time.process_time() - c0, res


def speed(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    mask, affine = gm_mask()
    n = 64
    print(f"data: {n} subjects x {int(mask.sum())} gray-matter voxels (MNI152 2 mm, GM >= 0.3),"
          f" FWHM {FWHM_MM} mm noise; cores: {os.cpu_count()}; load avg {os.getloadavg()[0]:.1f}")
    Y = smooth_cohort(mask, n, rng)
    X = design(n, rng)
    # warm-up: compile the numba kernels (cached on disk afterwards)
    randomise(Y[:, :5000], X, np.array([0, 1.0, 0, 0]), mask & (np.cumsum(mask).reshape(
        mask.shape) <= 5000), n_perm=10, n_jobs=1)
    small = (20, 100) if args.quick else (50, 300)
    per = {}
    for n_jobs in (1, 2):
        times = [time_microvba(Y, X, mask, k, n_jobs)[:2] for k in small]
        cpu = (times[1][1] - times[0][1]) / (small[1] - small[0])
        times = [w for w, _ in times]
        per[n_jobs] = (times[1] - times[0]) / (small[1] - small[0])
        print(f"microvba randomise, {n_jobs} thread(s): n_perm={small[0]}: {times[0]:.1f} s, "
              f"n_perm={small[1]}: {times[1]:.1f} s -> {per[n_jobs] * 1e3:.1f} ms/perm "
              f"(GLM + exact TFCE + cluster extent/mass, both signs); CPU {cpu * 1e3:.1f} ms/perm")
    per1, per2 = per[1], per[2]
    nl = time_nilearn(Y, X, mask, affine, (1, 3) if args.quick else (2, 6))
    print(f"nilearn permuted_ols(tfce=True), 1 job: {nl:.2f} s/perm")
    print(f"ratio (1 core each): {nl / per1:.0f}x; nilearn 1 core vs microvba 2 cores: "
          f"{nl / per2:.0f}x")
    if not (args.quick or args.skip_full):
        tf, cf, res = time_microvba(Y, X, mask, args.n_perm, n_jobs=2)
        print(f"full analysis, {args.n_perm} permutations, 2 threads: {tf:.0f} s "
              f"({tf / 60:.1f} min), CPU {cf:.0f} s (= {cf / 2:.0f} s on 2 idle cores); "
              f"nilearn estimate {nl * args.n_perm / 3600:.1f} h; load avg "
              f"{os.getloadavg()[0]:.1f}")
        print(f"  95th percentile of the TFCE null max: "
              f"{np.quantile(res.null_max['tfce_tstat1'], 0.95):.0f}")


def null_design(kind: str, n: int, rng: np.random.Generator):
    """(X, contrast, exchangeability blocks) of a null experiment: ``score`` (score + age +
    sex, Freedman-Lane), ``one-sample`` (intercept only: sign flipping) or ``blocks`` (the
    score design plus 3 site dummies, 4 sites of n/4 subjects as exchangeability blocks)."""
    if kind == "one-sample":
        return np.ones((n, 1)), np.array([1.0]), None
    X = design(n, rng)
    if kind == "score":
        return X, np.array([0, 1.0, 0, 0]), None
    site = np.repeat(np.arange(4), n // 4)
    dummies = (site[:, None] == np.arange(1, 4)).astype(float)
    return np.column_stack([X, dummies]), np.array([0, 1.0, 0, 0, 0, 0, 0]), site


def _reduced_mask() -> np.ndarray:
    mask = np.zeros((22, 22, 18), bool)
    mask[1:-1, 1:-1, 1:-1] = True
    return mask


def fwe(args: argparse.Namespace) -> None:
    mask = _reduced_mask()
    n = 64
    rng = np.random.default_rng(args.fwe_seed)
    coords = np.argwhere(mask)
    blob = np.linalg.norm(coords - np.array(mask.shape) / 2, axis=1) <= 3.0
    print(f"FWE check: {args.experiments} null experiments, {n} subjects, {int(mask.sum())} "
          f"voxels (FWHM 3 voxels), {args.fwe_perm} permutations each, cluster threshold 3.1")
    hits = {f"{s}_{k}": 0 for s in STATS for k in (1, 2)}
    # uncorrected voxel p (one pre-chosen voxel, and the mean share of voxels) and FDR q
    # (any voxel): the complete null, so FDR control = P(any q <= 0.05) <= 0.05
    centre = int(np.argmin(np.linalg.norm(coords - np.array(mask.shape) / 2, axis=1)))
    unc_voxel, unc_share, fdr_any = [], [], []
    t0 = time.perf_counter()
    print(f"design: {args.fwe_design}")
    for i in range(args.experiments):
        Y = smooth_cohort(mask, n, rng, fwhm_vox=3.0)
        X, c, blocks = null_design(args.fwe_design, n, rng)
        if blocks is not None:  # sites differ in mean and in noise level
            Y = Y * np.array([1.0, 1.5, 2.0, 3.0], np.float32)[blocks, None] + blocks[:, None]
        res = randomise(Y, X, c, mask, n_perm=args.fwe_perm, seed=i,
                        batch_size=args.fwe_perm // 2, n_jobs=2, exchangeability_blocks=blocks)
        for s in STATS:
            for k in (1, 2):
                hits[f"{s}_{k}"] += bool((res.maps[f"{s}_corrp_tstat{k}"] > 0.95).any())
        for k in (1, 2):  # the maps hold 1 - p and 1 - q
            p_unc = 1.0 - res.maps[f"vox_p_tstat{k}"]  # p <= 0.05, up to rounding of 1 - p
            unc_voxel.append(p_unc[centre] <= 0.05 + 1e-9)
            unc_share.append(np.mean(p_unc <= 0.05 + 1e-9))
            fdr_any.append(bool((1.0 - res.maps[f"vox_fdrp_tstat{k}"] <= 0.05 + 1e-9).any()))
        if (i + 1) % 50 == 0:
            print(f"  {i + 1} experiments, {time.perf_counter() - t0:.0f} s: "
                  + ", ".join(f"{k} {v / (i + 1):.3f}" for k, v in hits.items()))
    m = args.experiments
    print("family-wise false-positive rate at alpha 0.05 (95% binomial interval half-width "
          f"{1.96 * np.sqrt(0.05 * 0.95 / m):.3f}):")
    for s in STATS:
        r1, r2 = hits[f"{s}_1"] / m, hits[f"{s}_2"] / m
        print(f"  {s:9s} tstat1 {r1:.3f}  tstat2 {r2:.3f}  both {(r1 + r2) / 2:.3f}")
    print(f"uncorrected voxel p <= 0.05 (both directions pooled, {2 * m} tests): centre voxel "
          f"{np.mean(unc_voxel):.3f}, mean share of voxels {np.mean(unc_share):.4f}; "
          f"voxel FDR: any q <= 0.05 {np.mean(fdr_any):.3f}")
    if args.no_power or args.fwe_design != "score":
        return
    n_power = max(args.experiments // 5, 20)
    power = dict.fromkeys(STATS, 0)
    for i in range(n_power):
        Y = smooth_cohort(mask, n, rng, fwhm_vox=3.0)
        X = design(n, rng)
        score = (X[:, 1] - X[:, 1].mean()) / X[:, 1].std()
        Y = Y + 0.35 * np.outer(score, blob).astype(np.float32)  # r ~ 0.33 inside the blob
        res = randomise(Y, X, np.array([0, 1.0, 0, 0]), mask, n_perm=args.fwe_perm,
                        seed=10_000 + i, batch_size=args.fwe_perm // 2, n_jobs=2)
        for s in STATS:
            power[s] += bool((res.maps[f"{s}_corrp_tstat1"][blob] > 0.95).any())
    print(f"power, planted effect (sphere r=3 voxels, {int(blob.sum())} voxels, effect 0.35 SD "
          f"per SD of score), {n_power} experiments:")
    for s in STATS:
        print(f"  {s:9s} {power[s] / n_power:.2f}")


def fwe_corrcon(args: argparse.Namespace) -> None:
    """Family-wise rate of ``--corrcon`` (``*_famcorrp`` maps, FWE over the contrasts) on
    null data: three contrasts of the score design (score +, score -, age +), each tested
    in its own direction as FSL randomise does with a design.con."""
    from microvba.stats.family import Correction, Family
    from microvba.stats.randomise import Contrast, randomise_contrasts

    mask = _reduced_mask()
    n = 64
    rng = np.random.default_rng(args.fwe_seed)
    cons = [Contrast(1, "score+", np.array([0, 1.0, 0, 0])),
            Contrast(2, "score-", np.array([0, -1.0, 0, 0])),
            Contrast(3, "age+", np.array([0, 0, 1.0, 0]))]
    hits = dict.fromkeys(STATS, 0)
    for i in range(args.experiments):
        Y = smooth_cohort(mask, n, rng, fwhm_vox=3.0)
        X = design(n, rng)
        X[:, 2] = (X[:, 2] - X[:, 2].mean()) / X[:, 2].std()  # age: demeaned, as in a .mat
        res = randomise_contrasts(Y, X, cons, mask, correction=Correction(across=Family.ALL),
                                  n_perm=args.fwe_perm, seed=i, n_jobs=2)
        for s in STATS:
            hits[s] += any(bool((res.maps[f"{s}_famcorrp_tstat{k}"] > 0.95).any())
                           for k in (1, 2, 3))
    m = args.experiments
    print(f"--corrcon: {m} null experiments, 3 contrasts, {args.fwe_perm} permutations; "
          f"rate of any famcorrp p < 0.05 over the 3 contrasts (half-width "
          f"{1.96 * np.sqrt(0.05 * 0.95 / m):.3f}): "
          + ", ".join(f"{s} {hits[s] / m:.3f}" for s in STATS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer permutations, no full run")
    parser.add_argument("--n-perm", type=int, default=5000)
    parser.add_argument("--skip-full", action="store_true")
    parser.add_argument("--fwe", action="store_true", help="run the FWE-control check")
    parser.add_argument("--experiments", type=int, default=500)
    parser.add_argument("--fwe-perm", type=int, default=500)
    parser.add_argument("--fwe-seed", type=int, default=12345, help="seed of the null data")
    parser.add_argument("--no-power", action="store_true", help="--fwe: skip the power part")
    parser.add_argument("--fwe-design", choices=["score", "one-sample", "blocks", "corrcon"],
                        default="score", help="--fwe: the null design (see null_design)")
    args = parser.parse_args()
    os.environ.setdefault("MICROVBA_PROGRESS", "0")
    if args.fwe and args.fwe_design == "corrcon":
        fwe_corrcon(args)
    else:
        fwe(args) if args.fwe else speed(args)


if __name__ == "__main__":
    main()
