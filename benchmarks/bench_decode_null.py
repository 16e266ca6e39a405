"""Calibration of the decoder's spatial null on pure-null inputs.

ROI route: ``--n`` null ROIs, each a template ROI (a Brainnetome region, cycled over the
regions of ``tests/decode/data/nimare_reference.json``) rigidly translated to a random
place in the brain (>= 80 % inside, the rule of the decoder's own null): its placement is
exchangeable with the null's translations, so every "significant" feature is a false
positive. Map route: ``--n`` smooth Gaussian noise maps (white noise smoothed with a
Gaussian of FWHM drawn in [6, 12] mm), whole brain or masked to grey matter (ICBM152 2009
GM probability > 0.5; zero elsewhere in the brain). Each input is decoded with a
``--n-null`` null; the script prints, per route, the rate of inputs with any
``significant`` feature (target alpha = 0.05, acceptance [0.03, 0.07]) and the per-feature
rejection rates of ``p_perm`` and ``p_null`` at 0.05, 0.01 and 0.001, with binomial 95 %
intervals (Wilson).

Usage::

    MICROVBA_DATA=... .venv/bin/python benchmarks/bench_decode_null.py \
        --routes roi map-whole map-gm --n 200 --vocabulary lda50 --out results.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "decode" / "data" / \
    "nimare_reference.json"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (np.nan, np.nan)
    p = k / n
    den = 1 + z * z / n
    c = (p + z * z / (2 * n)) / den
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return c - h, c + h


def translated_roi(template: np.ndarray, grid, rng: np.random.Generator) -> np.ndarray:
    """Boolean volume: ``template`` (on the grid) moved to a random in-brain voxel, >= 80 %
    inside the mask."""
    ijk = np.argwhere(template)
    centre = np.rint(ijk.mean(axis=0)).astype(int)
    brain = np.argwhere(grid.mask)
    shape = np.asarray(grid.shape)
    while True:
        moved = ijk + (brain[rng.integers(len(brain))] - centre)
        ok = np.all((moved >= 0) & (moved < shape), axis=1)
        moved = moved[ok]
        inside = grid.mask[tuple(moved.T)]
        if inside.sum() >= 0.8 * len(ijk):
            out = np.zeros(grid.shape, dtype=bool)
            out[tuple(moved[inside].T)] = True
            return out


def gm_mask(grid) -> np.ndarray:
    from nilearn.datasets import load_mni152_gm_template
    from nilearn.image import resample_img

    img = resample_img(load_mni152_gm_template(resolution=2), target_affine=grid.affine,
                       target_shape=grid.shape, interpolation="linear",
                       force_resample=True, copy_header=True)
    return (np.asarray(img.dataobj) > 0.5) & grid.mask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--routes", nargs="+", default=["roi", "map-whole", "map-gm"],
                    choices=["roi", "map-whole", "map-gm"])
    ap.add_argument("--n", type=int, default=200, help="null inputs per route")
    ap.add_argument("--n-null", type=int, default=1000)
    ap.add_argument("--vocabulary", default="lda50", choices=["lda50", "terms"])
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--out", type=Path, default=None, help="JSON lines, one per input")
    args = ap.parse_args()

    from microvba.decode import Decoder
    from microvba.decode.grid import atlas_roi, roi_voxels

    t0 = time.time()
    dec = Decoder(args.vocabulary, n_null=args.n_null).fit()
    grid = dec.maps_.grid
    print(f"fit {time.time() - t0:.1f} s; loadavg {os.getloadavg()}", flush=True)
    ref = json.loads(REFERENCE.read_text())
    atlas = Path(os.environ.get("MICROVBA_DATA", "")) / "atlases" / "brainnetome" / \
        "BN_Atlas_246_1mm_spmgrid.nii.gz"
    templates = []
    for labels in ref["rois"].values():
        idx = roi_voxels(atlas_roi(atlas, labels), grid)
        vol = np.zeros(grid.n_voxels, dtype=bool)
        vol[idx] = True
        t = np.zeros(grid.shape, dtype=bool)
        t[grid.mask] = vol
        templates.append(t)
    gm = gm_mask(grid) if "map-gm" in args.routes else None
    out = args.out.open("a") if args.out else None
    rng = np.random.default_rng(args.seed)
    for route in args.routes:
        any_sig = 0
        rej = {k: np.zeros(3) for k in ("p_perm", "p_null")}
        n_tests = 0
        t_route = time.time()
        for i in range(args.n):
            dec.seed = int(rng.integers(2**31))
            if route == "roi":
                roi = translated_roi(templates[i % len(templates)], grid, rng)
                table = dec.decode_roi(nib.Nifti1Image(roi.astype(np.uint8), grid.affine))
            else:
                fwhm_vox = rng.uniform(6.0, 12.0) / 2.0
                noise = ndimage.gaussian_filter(rng.standard_normal(grid.shape),
                                                fwhm_vox / np.sqrt(8 * np.log(2)))
                support = grid.mask if route == "map-whole" else gm
                vol = np.where(support, noise, 0.0).astype(np.float32)
                table = dec.decode_map(nib.Nifti1Image(vol, grid.affine))
            sig = bool(table["significant"].any())
            any_sig += sig
            for k in rej:
                p = table[k].to_numpy(float)
                rej[k] += [(p <= a).sum() for a in (0.05, 0.01, 0.001)]
            n_tests += len(table)
            if out:
                out.write(json.dumps({"route": route, "vocabulary": args.vocabulary, "i": i,
                                      "significant": int(table["significant"].sum()),
                                      "min_p_null": float(table["p_null"].min()),
                                      "min_p_perm": float(table["p_perm"].min())}) + "\n")
                out.flush()
            if (i + 1) % 25 == 0:
                print(f"  {route} {i + 1}/{args.n}: any-significant {any_sig}", flush=True)
        lo, hi = wilson(any_sig, args.n)
        dt = (time.time() - t_route) / args.n
        print(f"{args.vocabulary} {route}: any significant in {any_sig}/{args.n} = "
              f"{any_sig / args.n:.3f} (95% CI {lo:.3f}-{hi:.3f}); {dt:.2f} s per input; "
              f"loadavg {os.getloadavg()}")
        for k, r in rej.items():
            print(f"  {k} rejection rate over {n_tests} feature tests at 0.05/0.01/0.001: "
                  + " / ".join(f"{x / n_tests:.4f}" for x in r))
        print(flush=True)


if __name__ == "__main__":
    main()
