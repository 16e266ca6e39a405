"""Calibration on pure-null data of the p-values and CIs not covered by the other benchmarks.

1. ``roi`` (and the correlation tables): :func:`microvba.regions.correlation.partial_corr`
   -- the t-test ``p``, the Fisher ``ci_low``/``ci_high`` and the percentile bootstrap
   ``boot_ci_low``/``boot_ci_high`` -- on simulated subjects (3 covariates: a continuous
   one, a binary one, a skewed one; the region mean and the score depend on them), null
   (partial r = 0: false-positive rate of ``p <= alpha``, coverage of 0) and with a planted
   partial r (coverage), Gaussian and heavy-tailed (t with 4 df) errors, Pearson and
   Spearman (Spearman: false-positive rate only, its population value is not the planted r).
2. ``decode`` ROI association: the 2 x 2 ``p`` (chi-square, Fisher's exact test for small
   expected counts; :func:`microvba.decode.decoder._chi2_or_fisher`) and its
   Benjamini-Hochberg ``q`` on tables whose study labels are independent of the hits, with
   the Neurosynth v0.7 sizes (14,371 studies; features selecting 50-3,000 studies; hit rates
   0.5-30 %).

Usage::

    .venv/bin/python benchmarks/bench_calibration.py [--reps 2000] [--boot-reps 1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from microvba._fdr import fdr_bh
from microvba.decode.decoder import _chi2_or_fisher
from microvba.regions.correlation import partial_corr


def _cohort(rng: np.random.Generator, n: int, rho: float, heavy: bool):
    """Region means x and score y with partial r ``rho`` given the covariates c."""
    c = np.column_stack([rng.normal(40, 10, n), rng.integers(0, 2, n),
                         rng.lognormal(0, 0.5, n)])
    cz = (c - c.mean(0)) / c.std(0)

    def err(size):
        return rng.standard_t(4, size) / np.sqrt(2.0) if heavy else rng.normal(size=size)

    zy, e = err(n), err(n)
    y = cz @ np.array([0.5, 0.3, -0.2]) + zy
    x = cz @ np.array([-0.4, 0.2, 0.3]) + rho * zy + np.sqrt(1 - rho ** 2) * e
    return x, y, c


def partial(reps: int, boot_reps: int, seed: int) -> None:
    print(f"partial_corr: {reps} replicates per cell (bootstrap CI: first {boot_reps}, "
          "2,000 resamples), alpha 0.05 / 95 % CIs; binomial SE of a 5 % rate "
          f"{np.sqrt(0.05 * 0.95 / reps):.4f}, of a 95 % coverage "
          f"{np.sqrt(0.05 * 0.95 / boot_reps):.4f} (bootstrap)")
    print("| n | errors | method | planted r | p <= 0.05 | p <= 0.01 | Fisher CI coverage | "
          "bootstrap CI coverage |")
    print("|---|---|---|---|---|---|---|---|")
    for n in (24, 64):
        for heavy in (False, True):
            for method, rho in (("pearson", 0.0), ("spearman", 0.0), ("pearson", 0.3)):
                rng = np.random.default_rng(seed)
                t0 = time.perf_counter()
                p, cov_f, cov_b = np.empty(reps), np.empty(reps), []
                for i in range(reps):
                    x, y, c = _cohort(rng, n, rho, heavy)
                    res = partial_corr(x, y, c, method=method,
                                       n_boot=2000 if i < boot_reps else 0, seed=i)
                    p[i] = res["p"]
                    cov_f[i] = res["ci_low"] <= rho <= res["ci_high"]
                    if i < boot_reps:
                        cov_b.append(res["boot_ci_low"] <= rho <= res["boot_ci_high"])
                cover = (f"{cov_f.mean():.3f}", f"{np.mean(cov_b):.3f}")
                if method == "spearman":
                    cover = ("-", "-")
                rate = (f"{np.mean(p <= 0.05):.4f}", f"{np.mean(p <= 0.01):.4f}")
                if rho:
                    rate = ("(power) " + rate[0], rate[1])
                print(f"| {n} | {'t4' if heavy else 'normal'} | {method} | {rho} | {rate[0]} | "
                      f"{rate[1]} | {cover[0]} | {cover[1]} |  ({time.perf_counter() - t0:.0f} s)",
                      flush=True)


def association(reps: int, seed: int) -> None:
    """Independent hits and feature labels over 14,371 studies."""
    rng = np.random.default_rng(seed)
    n_studies = 14371
    print(f"\nROI association p (chi-square / Fisher exact) and BH q over 50 features: {reps} "
          f"null ROIs x 50 features per cell, {n_studies} studies")
    print("| hit rate | studies per feature | p <= 0.05 | p <= 0.01 | share Fisher | "
          "any q <= 0.05 (of 50) |")
    print("|---|---|---|---|---|---|")
    for hit in (0.005, 0.03, 0.3):
        for n1 in (50, 300, 3000):
            ps, fisher, anyq = [], [], []
            for _ in range(reps):
                hits = rng.random(n_studies) < hit
                total = hits.sum()
                # 50 features, each selecting n1 studies at random: hits among them are
                # hypergeometric given the ROI's total, exactly as under independence
                a = rng.hypergeometric(total, n_studies - total, n1, size=50).astype(float)
                b = n1 - a
                c = total - a
                d = (n_studies - n1) - c
                _, p, method = _chi2_or_fisher(a, b, c, d)
                ps.append(p)
                fisher.append(np.mean(method == "fisher"))
                anyq.append((fdr_bh(p) <= 0.05).any())
            ps = np.concatenate(ps)
            print(f"| {hit} | {n1} | {np.mean(ps <= 0.05):.4f} | {np.mean(ps <= 0.01):.4f} | "
                  f"{np.mean(fisher):.2f} | {np.mean(anyq):.3f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--boot-reps", type=int, default=1000)
    ap.add_argument("--assoc-reps", type=int, default=400)
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--only", choices=["partial", "association"], default=None)
    args = ap.parse_args()
    print(f"# load average {open('/proc/loadavg').read().split()[0]} at the start")
    if args.only != "association":
        partial(args.reps, args.boot_reps, args.seed)
    if args.only != "partial":
        association(args.assoc_reps, args.seed)
    print(f"# load average {open('/proc/loadavg').read().split()[0]} at the end")


if __name__ == "__main__":
    main()
