"""NODDI accuracy grid (issue #13 point 4): microvba vs AMICO on an independent simulator.

The simulator does not use microvba's kernels: the Watson-dispersed sticks are a quadrature
over 6,000 Fibonacci orientations with Watson weights, and the extra-cellular tensor is
built from the same quadrature's :math:`\\langle nn^T\\rangle` (NODDI's definition), not
from the closed-form :math:`\\tau(\\kappa)`. Every voxel has its own S0 (log-uniform 0.3-3 x
1000) and Rician noise at a fixed per-voxel SNR (sigma = S0 / SNR).

Cells: DSI-515 full sphere (1 b0 + 257 antipodal pairs), DSI-515 half sphere (1 b0 + 257
directions), a 3-shell scheme (6 b0 + 30/60/90 directions at b 1000/2000/3000); WM (d_par
1.7e-3) and GM (1.1e-3) presets; SNR 10, 20, 50. Pearson r and MAE of ICVF, ODI, ISOVF
against the planted values, both tools on the same voxels with d_par set for the tissue.

Usage::

    .venv/bin/python benchmarks/bench_noddi_sim.py [--voxels 2000] [--no-amico]
        [--schemes full,half,3shell] [--tissues wm,gm] [--variants] [--save DIR]

After the table it lists every figure where microvba is below AMICO, with the standard
error of the difference from a paired bootstrap over the cell's voxels (500 resamples).

``--variants`` adds two microvba rows per cell for the diagnosis of the cells below AMICO:
``microvba no floor`` (``noise="none"``: least squares, as AMICO) and ``microvba 3 LM``
(three Levenberg-Marquardt iterations on all measurements instead of one).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from bench_models import accuracy, dsi515, fit_amico, three_shell, truth
from microvba.models import GradientTable, NoddiModel
from microvba.models.gradients import antipodal_groups
from microvba.models.noddi import D_ISO, D_PAR_GM, D_PAR_WM, kappa_to_odi, odi_to_kappa

SNRS = (10.0, 20.0, 50.0)


def fibonacci_sphere(n: int) -> np.ndarray:
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = np.pi * (1.0 + 5 ** 0.5) * i
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def independent_signal(gtab: GradientTable, p: dict, d_par: float, n_orient: int = 6000,
                       block: int = 500) -> np.ndarray:
    """NODDI S/S0 by quadrature over orientations (no closed-form Watson kernel)."""
    orient = fibonacci_sphere(n_orient)
    g, b = gtab.bvecs, gtab.bvals
    stick = np.exp(-b[None, :] * d_par * (orient @ g.T) ** 2)          # (K, n_meas)
    kappa = odi_to_kappa(p["odi"])
    out = np.empty((p["odi"].size, b.size))
    for s in range(0, out.shape[0], block):
        e = slice(s, s + block)
        cos2 = (orient @ p["mu"][e].T).T ** 2                           # (v, K)
        logw = kappa[e, None] * cos2
        w = np.exp(logw - logw.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        e_ic = w @ stick
        nn = np.einsum("vk,ki,kj->vij", w, orient, orient)              # <n n^T>
        icvf = p["icvf"][e]
        d_perp = d_par * (1.0 - icvf)
        d_ec = d_perp[:, None, None] * np.eye(3) + (d_par - d_perp)[:, None, None] * nn
        e_ec = np.exp(-b[None, :] * np.einsum("mi,vij,mj->vm", g, d_ec, g))
        iso = p["isovf"][e]
        out[e] = ((1 - iso)[:, None] * (icvf[:, None] * e_ic + (1 - icvf)[:, None] * e_ec)
                  + iso[:, None] * np.exp(-b * D_ISO)[None, :])
    return out


def half_sphere(gtab: GradientTable) -> GradientTable:
    """One volume of every antipodal group (DSI-515: 1 b0 + 257 directions)."""
    labels = antipodal_groups(gtab.bvals, gtab.bvecs)
    keep = np.sort(np.unique(labels, return_index=True)[1])
    return GradientTable(gtab.bvals[keep], gtab.bvecs[keep])


def cell_data(gtab, tissue, n, rng):
    d_par = D_PAR_WM if tissue == "wm" else D_PAR_GM
    parts, truths, labels = [], [], []
    for snr in SNRS:
        p = truth(rng, n, tissue)
        s0 = 1000.0 * np.exp(rng.uniform(np.log(0.3), np.log(3.0), n))
        clean = s0[:, None] * independent_signal(gtab, p, d_par)
        sigma = (s0 / snr)[:, None]
        noisy = np.sqrt((clean + sigma * rng.normal(size=clean.shape)) ** 2
                        + (sigma * rng.normal(size=clean.shape)) ** 2)
        parts.append(noisy.astype(np.float32))
        truths.append(p)
        labels.append(np.full(n, snr))
    return d_par, np.concatenate(parts), truths, np.concatenate(labels)


def paired_bootstrap_se(ours: dict, theirs: dict, p: dict, n_boot: int = 500,
                        seed: int = 0) -> dict[str, tuple[float, float]]:
    """Standard error of the differences microvba - AMICO in Pearson r and in MAE of each
    map, by a paired bootstrap over the cell's voxels (both tools on the same resampled
    voxels): the sampling error of a comparison on this many voxels."""
    rng = np.random.default_rng(seed)
    n = p["icvf"].size
    diffs: dict[str, list] = {k: [] for k in ("icvf", "odi", "isovf")}
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        for k in diffs:
            t, a, b = p[k][i], ours[k][i], theirs[k][i]
            diffs[k].append((np.corrcoef(a, t)[0, 1] - np.corrcoef(b, t)[0, 1],
                             np.mean(np.abs(a - t)) - np.mean(np.abs(b - t))))
    return {k: tuple(np.std(np.asarray(v), axis=0, ddof=1)) for k, v in diffs.items()}


def _maps(raw: np.ndarray) -> dict[str, np.ndarray]:
    return {"icvf": raw[:, 0], "isovf": raw[:, 1], "odi": kappa_to_odi(raw[:, 2])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--voxels", type=int, default=2000, help="voxels per cell")
    ap.add_argument("--no-amico", action="store_true")
    ap.add_argument("--schemes", default="full,half,3shell",
                    help="comma-separated subset of full, half, 3shell")
    ap.add_argument("--tissues", default="wm,gm")
    ap.add_argument("--save", default=None, help="folder for each cell's maps (.npz)")
    ap.add_argument("--variants", action="store_true",
                    help="also microvba without a floor and with 3 full LM iterations")
    args = ap.parse_args()
    rng = np.random.default_rng(13)
    full = dsi515()
    keys = args.schemes.split(",")
    schemes = [s for k, s in (("full", ("DSI-515 full", full)),
                              ("half", ("DSI-515 half", half_sphere(full))),
                              ("3shell", ("3-shell", three_shell()))) if k in keys]
    print("| scheme | tissue | SNR | tool | ICVF r | ICVF MAE | ODI r | ODI MAE | ISOVF r | "
          "ISOVF MAE |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    below: list[str] = []
    for name, gtab in schemes:
        for tissue in ("wm", "gm"):
            d_par, data, truths, labels = cell_data(gtab, tissue, args.voxels, rng)
            if tissue not in args.tissues.split(","):
                continue  # drawn all the same, so that the other cells keep their draws
            model = NoddiModel(gtab, d_par=d_par)
            ours = _maps(model.fit(data).params)
            extra = []
            if args.variants:
                extra.append(("microvba no floor", _maps(
                    NoddiModel(gtab, d_par=d_par, noise="none").fit(data).params)))
                from microvba.models import noddi as noddi_mod

                saved = noddi_mod.N_DIR_ITER
                noddi_mod.N_DIR_ITER = 3
                try:
                    extra.append(("microvba 3 LM", _maps(model.fit(data).params)))
                finally:
                    noddi_mod.N_DIR_ITER = saved
            theirs = None
            if not args.no_amico:
                with tempfile.TemporaryDirectory() as tmp:
                    theirs = fit_amico(gtab, data, d_par, Path(tmp))[0]
            for snr, p in zip(SNRS, truths, strict=True):
                sel = labels == snr
                rows = [("microvba", ours)] + extra + ([("AMICO", theirs)] if theirs else [])
                accs = {}
                for tool, est in rows:
                    acc = accs[tool] = accuracy({k: v[sel] for k, v in est.items()}, p)
                    print(f"| {name} | {tissue} | {snr:g} | {tool} | " + " | ".join(
                        f"{acc[k][0]:.3f} | {acc[k][1]:.3f}" for k in ("icvf", "odi", "isovf"))
                        + " |", flush=True)
                if theirs:
                    se = paired_bootstrap_se({k: v[sel] for k, v in ours.items()},
                                             {k: v[sel] for k, v in theirs.items()}, p)
                    for k in ("icvf", "odi", "isovf"):
                        for j, what in ((0, "r"), (1, "MAE")):
                            a, b = accs["microvba"][k][j], accs["AMICO"][k][j]
                            worse = (a - b) if j == 1 else (b - a)
                            if worse > 0:
                                below.append(f"- {name} {tissue} SNR {snr:g}: {k.upper()} {what} "
                                             f"{a:.4f} vs {b:.4f} (difference {worse:.4f}, "
                                             f"bootstrap SE {se[k][j]:.4f}: "
                                             + ("within 1 SE" if worse <= se[k][j] else
                                                f"{worse / se[k][j]:.1f} SE") + ")")
            if args.save:
                np.savez(Path(args.save) / f"{name.replace(' ', '_')}_{tissue}.npz",
                         labels=labels, **{f"ours_{k}": v for k, v in ours.items()},
                         **({f"amico_{k}": v for k, v in theirs.items()} if theirs else {}),
                         **{f"truth_{k}": np.concatenate([t[k] for t in truths])
                            for k in ("icvf", "odi", "isovf")})
            print(f"<!-- {name} {tissue}: noise {model.noise_method}, S0 {model.s0_mode} -->",
                  flush=True)

    if not args.no_amico:
        print(f"\nmicrovba below AMICO in {len(below)} figures (paired bootstrap over voxels, "
              "500 resamples):")
        print("\n".join(below), flush=True)


if __name__ == "__main__":
    main()
