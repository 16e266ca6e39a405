"""Calibration on pure-null data of the p-values and CIs not covered by the other benchmarks.

1. ``roi`` (and the correlation tables): :func:`microvba.regions.correlation.partial_corr`
   -- the t-test ``p``, the Fisher ``ci_low``/``ci_high`` and the percentile bootstrap
   ``boot_ci_low``/``boot_ci_high`` -- on simulated subjects (3 covariates: a continuous
   one, a binary one, a skewed one; the region mean and the score depend on them), null
   (partial r = 0: false-positive rate of ``p <= alpha``, coverage of 0) and with a planted
   partial r (coverage), Gaussian and heavy-tailed (t with 4 df) errors, Pearson and
   Spearman (Spearman: false-positive rate only, its population value is not the planted r).
2. ``decode`` ROI association: the 2 x 2 ``p`` (:func:`microvba.decode.decoder.
   _chi2_or_fisher`: Fisher's exact test; the chi-square rule of earlier releases beside it)
   on tables whose feature is unrelated to the ROI, with the Neurosynth v0.7 sizes (14,371
   studies; features selecting 50-3,000 studies; hit rates 0.5-30 %): exact null rates by
   enumerating the hypergeometric distribution, then the Benjamini-Hochberg ``q`` over 50
   simulated features.

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


def _chi2_rule(a, b, c, d):
    """The p of the previous releases: Pearson chi-square, Fisher's exact test where an
    expected count is below 5 (kept here as the reference of the audit)."""
    from scipy import special, stats

    n = a + b + c + d
    r0, r1, c0, c1 = a + b, c + d, a + c, b + d
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = np.nan_to_num(n * (a * d - b * c) ** 2 / (r0 * r1 * c0 * c1))
        small = np.minimum.reduce([r0 * c0, r0 * c1, r1 * c0, r1 * c1]) / n < 5
    p = special.erfc(np.sqrt(chi2 / 2.0))
    for i in np.flatnonzero(small):
        p[i] = stats.fisher_exact([[a[i], b[i]], [c[i], d[i]]]).pvalue
    return p


ALPHAS = (0.05, 0.01, 1e-3, 1e-4, 2.5e-5)


def association(reps: int, seed: int) -> None:
    """Exact null rates (hypergeometric enumeration), then BH q over 50 simulated features."""
    from scipy import stats

    n_studies = 14371
    print(f"\nROI association p, exact null rejection rate / alpha (a feature unrelated to the "
          f"ROI: its hits among its selected studies are hypergeometric; {n_studies} studies; "
          f"alpha = {', '.join(f'{a:g}' for a in ALPHAS)}; 2.5e-5 = 0.05 / 2,003 terms)")
    print("| hit rate | studies per feature | expected hits | chi-square rule (before) | "
          "Fisher exact (now) |")
    print("|---|---|---|---|---|")
    for hit in (0.005, 0.01, 0.03, 0.1, 0.3):
        total = round(hit * n_studies)
        for n1 in (50, 100, 300, 1000, 3000):
            a = np.arange(max(0, n1 - (n_studies - total)), min(n1, total) + 1)
            pmf = stats.hypergeom.pmf(a, n_studies, total, n1)
            tables = (a, n1 - a, total - a, n_studies - n1 - total + a)
            cells = []
            for p in (_chi2_rule(*(t.astype(float) for t in tables)),
                      _chi2_or_fisher(*tables)[1]):
                cells.append(" ".join(f"{pmf[p <= al].sum() / al:.2f}" for al in ALPHAS))
            print(f"| {hit} | {n1} | {n1 * total / n_studies:.1f} | {cells[0]} | {cells[1]} |",
                  flush=True)
    rng = np.random.default_rng(seed)
    print(f"\nBH q over 50 features (each selecting 50-3,000 studies at random), {reps} null "
          "ROIs per hit rate: rate of ROIs with any q <= 0.05")
    print("| hit rate | any q <= 0.05 |")
    print("|---|---|")
    for hit in (0.005, 0.03, 0.3):
        anyq = []
        for _ in range(reps):
            hits = rng.random(n_studies) < hit
            total = int(hits.sum())
            n1 = rng.integers(50, 3001, size=50)
            a = rng.hypergeometric(total, n_studies - total, n1)
            _, p, _ = _chi2_or_fisher(a, n1 - a, total - a, n_studies - n1 - total + a)
            anyq.append((fdr_bh(p) <= 0.05).any())
        print(f"| {hit} | {np.mean(anyq):.3f} |", flush=True)


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
