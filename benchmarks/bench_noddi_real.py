"""NODDI on real scans: microvba vs AMICO on the real crops of ``$MICROVBA_DATA/dwi``.

Both tools fit the same image inside the same mask (msmt: its own mask; batman: the mask
microvba computes, median_otsu on the mean b0), d_par 1.7e-3, d_iso 3e-3. Agreement is the
Pearson r of ICVF, ODI and ISOVF in tissue voxels: AMICO ISOVF < 0.5 and AMICO ODI below its
grid's top node (the analogue of the issue's toolbox criterion: voxels left at the ODI bound
excluded). microvba runs with its defaults and with ``--noddi-compat toolbox``.

Least-squares reference (``--lsq N``, default 300 tissue voxels per crop, 0 to skip): AMICO is
a regularised (lambda1 0.5, lambda2 1e-3) non-negative mixture of 12 x 12 grid atoms on a
500-direction look-up table, so its maps are not the least-squares optimum of the NODDI model
that the toolbox fits. Each sampled voxel's AMICO solution (ICVF, ODI, ISOVF, its DTI
direction) is refined by ``scipy.optimize.least_squares`` under the exact Watson NODDI model
with S0 fixed at the mean b0 (the toolbox's objective; the forward model is checked against
brute-force numerical integration in ``tests/models/test_forward.py``), and both tools are compared with
that optimum: r and the median residual sum of squares (SSE) of each tool's own parameters.

Independent reference (``--dmipy N``): the same sampled tissue voxels fitted by dmipy 1.0.5
(Fick et al. 2019), an implementation microvba did not write: Watson-dispersed stick +
tortuous zeppelin + ball (``SD1WatsonDistributed``, d_par 1.7e-3 equal in both, d_perp by
tortuosity, ball 3e-3), volume fractions summing to one on S/mean(b0) (the toolbox's model
and S0 choice), ``solver="brute2fine"`` (a brute-force grid, then a bounded gradient
optimiser). dmipy 1.0.5 pins ``scipy==1.4.1`` and uses removed NumPy aliases, so it does not
install on Python 3.11 with its dependencies: install it with ``pip install --no-deps
--target DIR dmipy==1.0.5`` and pass ``--dmipy-path DIR`` (the aliases are restored here,
in the benchmark only).

Reference: Fick RHJ, Wassermann D, Deriche R (2019) The Dmipy toolbox: diffusion MRI
multi-compartment modeling and microstructure recovery made easy. Front Neuroinform 13:64.

Usage::

    .venv/bin/python benchmarks/bench_noddi_real.py [--out DIR] [--lsq N]
        [--dmipy N --dmipy-path DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("MICROVBA_DATA", Path(__file__).resolve().parents[2] / "shared"
                           / "data"))
CROPS = ("msmt", "batman")
METRICS = ("icvf", "odi", "isovf")


def fit_amico_image(dwi: Path, bval: Path, bvec: Path, mask: Path, workdir: Path,
                    d_par: float = 1.7e-3) -> dict[str, np.ndarray]:
    """AMICO NODDI maps (ICVF, ODI, ISOVF) of a real image inside ``mask``."""
    import shutil

    import amico
    import nibabel as nib

    amico.set_verbose(0)
    subj = workdir / "subj"
    subj.mkdir(parents=True, exist_ok=True)
    for src, name in ((dwi, "dwi.nii.gz"), (bval, "dwi.bval"), (bvec, "dwi.bvec"),
                      (mask, "mask.nii.gz")):
        shutil.copy(src, subj / name)
    with contextlib.redirect_stdout(io.StringIO()):
        amico.util.fsl2scheme(str(subj / "dwi.bval"), str(subj / "dwi.bvec"),
                              str(subj / "dwi.scheme"))
        amico.setup()
        ae = amico.Evaluation(str(workdir), "subj")
        ae.set_config("doSaveModulatedMaps", False)
        ae.load_data("dwi.nii.gz", "dwi.scheme", mask_filename="mask.nii.gz", b0_thr=50)
        ae.set_model("NODDI")
        ae.model.set(dPar=d_par, dIso=3e-3, IC_VFs=np.linspace(0.1, 0.99, 12),
                     IC_ODs=np.hstack((np.array([0.03, 0.06]), np.linspace(0.09, 0.99, 10))),
                     isExvivo=False)
        ae.generate_kernels(regenerate=True)
        ae.load_kernels()
        ae.fit()
    maps = ae.RESULTS["MAPs"]
    m = np.asarray(nib.load(mask).get_fdata() > 0)
    dirs = np.zeros(m.shape + (3,))
    dirs[m] = ae.DIRs
    return {"icvf": maps[..., 0], "odi": maps[..., 1], "isovf": maps[..., 2], "direction": dirs}


def fit_microvba_image(dwi: Path, bval: Path, bvec: Path, mask: Path | None, out: Path,
                       **options) -> tuple[dict[str, np.ndarray], np.ndarray, Path]:
    """microvba maps (ICVF, ODI, ISOVF), the mask, and the mask's path."""
    import nibabel as nib

    from microvba.models import fit_image

    paths = fit_image(dwi, bval, bvec, out, "crop", mask_path=mask, models=("noddi",),
                      **options)
    m = nib.load(paths["mask"]).get_fdata() > 0
    maps = {k: nib.load(paths[k]).get_fdata() for k in METRICS + ("direction",)}
    return maps, m, paths["mask"]


def tissue_voxels(ours: dict, theirs: dict, mask: np.ndarray) -> np.ndarray:
    """Tissue voxels: AMICO ISOVF < 0.5 and ODI below its top node, microvba finite."""
    tissue = mask & (theirs["isovf"] < 0.5) & (theirs["odi"] < 0.98)
    return tissue & np.all([np.isfinite(ours[k]) for k in METRICS], axis=0)


def _sample(dwi: Path, bval: Path, bvec: Path, tissue: np.ndarray, n_voxels: int,
            seed: int) -> tuple:
    """The reference comparisons' voxel sample: b-values, b-vectors, the b0 mask, up to
    ``n_voxels`` tissue voxel indices (seeded, sorted), their signals and S / mean(b0)."""
    import nibabel as nib

    from microvba.models.gradients import GradientTable

    bvals, bvecs = np.loadtxt(bval), np.loadtxt(bvec).T
    b0 = GradientTable(bvals, bvecs).b0s_mask
    idx = np.flatnonzero(tissue.ravel())
    rng = np.random.default_rng(seed)
    if idx.size > n_voxels:
        idx = np.sort(rng.choice(idx, n_voxels, replace=False))
    sig = nib.load(dwi).get_fdata().reshape(-1, bvals.size)[idx]
    return bvals, bvecs, b0, idx, sig, sig / sig[:, b0].mean(axis=1, keepdims=True)


def least_squares_reference(dwi: Path, bval: Path, bvec: Path, ours: dict, theirs: dict,
                            tissue: np.ndarray, n_voxels: int = 300, seed: int = 0) -> dict:
    r"""Refine AMICO's solution to the least-squares optimum of the NODDI model.

    Objective (the NODDI toolbox's with S0 fixed at the mean b0, no noise floor):
    :math:`\sum_i (S_i/\bar S_{b0} - E_i(\nu_{ic}, \mathrm{ODI}, \nu_{iso}, \mu))^2`, with
    :math:`E` the exact Watson NODDI signal (Zhang et al. 2012), solved by
    ``scipy.optimize.least_squares`` (trust-region reflective, bounds) from AMICO's ICVF,
    ODI, ISOVF and direction. Returns r of microvba and of AMICO against the optimum, and the
    median SSE of each tool's own parameters and of the optimum."""
    from scipy.optimize import least_squares

    from microvba.models.noddi import noddi_signal

    bvals, bvecs, b0, idx, sig, y = _sample(dwi, bval, bvec, tissue, n_voxels, seed)

    def pick(maps: dict) -> tuple[np.ndarray, np.ndarray]:
        p = np.stack([maps[k].ravel()[idx] for k in METRICS], axis=1)
        return p, maps["direction"].reshape(-1, 3)[idx]

    def model(p: np.ndarray, mu: np.ndarray) -> np.ndarray:
        return noddi_signal(bvals, bvecs, p[..., 0], p[..., 1], p[..., 2], mu)

    def unit(theta: float, phi: float) -> np.ndarray:
        return np.array([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi),
                         np.cos(theta)])

    p_am, mu_am = pick(theirs)
    p_us, mu_us = pick(ours)
    best = np.empty_like(p_am)
    sse_best = np.empty(idx.size)
    for i in range(idx.size):
        d = mu_am[i] / np.linalg.norm(mu_am[i])
        x0 = np.r_[np.clip(p_am[i], 0.005, 0.995), np.arccos(np.clip(d[2], -1, 1)),
                   np.arctan2(d[1], d[0])]
        fit = least_squares(lambda x, yy=y[i]: model(x[:3], unit(x[3], x[4])) - yy, x0,
                            bounds=([0, 0.004, 0, -np.inf, -np.inf],
                                    [1, 0.999, 1, np.inf, np.inf]))
        best[i], sse_best[i] = fit.x[:3], np.sum(fit.fun ** 2)
    sse = {"microvba": np.sum((model(p_us, mu_us) - y) ** 2, axis=1),
           "AMICO": np.sum((model(p_am, mu_am) - y) ** 2, axis=1)}
    return {"n": int(idx.size),
            "r": {tool: {k: float(np.corrcoef(p[:, j], best[:, j])[0, 1])
                         for j, k in enumerate(METRICS)}
                  for tool, p in (("microvba", p_us), ("AMICO", p_am))},
            "sse": {**{k: float(np.median(v)) for k, v in sse.items()},
                    "optimum": float(np.median(sse_best))},
            "microvba_lower": float(np.mean(sse["microvba"] < sse["AMICO"]))}


def _import_dmipy(path: str | None):
    """dmipy 1.0.5's modules, with the NumPy aliases it still uses (removed in NumPy 1.24)
    restored for this process only."""
    import sys
    import warnings

    if path:
        sys.path.insert(0, str(path))
    for name, val in (("float", float), ("int", int), ("bool", bool), ("complex", complex),
                      ("object", object)):
        if name not in np.__dict__:
            setattr(np, name, val)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        from dmipy.core.acquisition_scheme import acquisition_scheme_from_bvalues
        from dmipy.core.modeling_framework import MultiCompartmentModel
        from dmipy.distributions.distribute_models import SD1WatsonDistributed
        from dmipy.signal_models import cylinder_models, gaussian_models
    return (acquisition_scheme_from_bvalues, MultiCompartmentModel, SD1WatsonDistributed,
            cylinder_models, gaussian_models)


def dmipy_reference(dwi: Path, bval: Path, bvec: Path, ours: dict, theirs: dict,
                    tissue: np.ndarray, n_voxels: int = 300, seed: int = 0,
                    dmipy_path: str | None = None, d_par: float = 1.7e-3) -> dict:
    r"""Fit the sampled tissue voxels with dmipy's Watson NODDI (``brute2fine``) and compare.

    Same voxel sample as :func:`least_squares_reference` (same seed). Returns r of microvba
    vs dmipy, AMICO vs dmipy and microvba vs AMICO on these voxels, the median SSE of
    :math:`S/\bar S_{b0}` under the exact model (microvba's forward model, checked against
    dmipy's own prediction: ``model_check`` is the largest difference) for each tool's own
    parameters and direction, and the fraction of voxels where microvba's SSE is below
    dmipy's."""
    import warnings

    from microvba.models.noddi import noddi_signal

    (scheme_from_bvalues, MultiCompartmentModel, SD1WatsonDistributed, cylinder_models,
     gaussian_models) = _import_dmipy(dmipy_path)
    bvals, bvecs, b0, idx, sig, y = _sample(dwi, bval, bvec, tissue, n_voxels, seed)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        # b-values in s/m^2; b <= 50 s/mm^2 counted as b0 (as microvba and AMICO here)
        acq = scheme_from_bvalues(np.where(b0, 0.0, bvals) * 1e6, bvecs)
        stick, zeppelin = cylinder_models.C1Stick(), gaussian_models.G2Zeppelin()
        bundle = SD1WatsonDistributed(models=[stick, zeppelin])
        bundle.set_tortuous_parameter("G2Zeppelin_1_lambda_perp", "C1Stick_1_lambda_par",
                                      "partial_volume_0")
        bundle.set_equal_parameter("G2Zeppelin_1_lambda_par", "C1Stick_1_lambda_par")
        bundle.set_fixed_parameter("G2Zeppelin_1_lambda_par", d_par * 1e-6)
        noddi = MultiCompartmentModel(models=[gaussian_models.G1Ball(), bundle])
        noddi.set_fixed_parameter("G1Ball_1_lambda_iso", 3e-9)
        fit = noddi.fit(acq, sig, solver="brute2fine", use_parallel_processing=False)
        predicted = fit.predict()
    fp = fit.fitted_parameters
    theta, phi = fp["SD1WatsonDistributed_1_SD1Watson_1_mu"].T
    mu_dm = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi),
                      np.cos(theta)], axis=1)
    p_dm = np.stack([fp["SD1WatsonDistributed_1_partial_volume_0"],
                     fp["SD1WatsonDistributed_1_SD1Watson_1_odi"], fp["partial_volume_0"]],
                    axis=1)

    def pick(maps: dict) -> tuple[np.ndarray, np.ndarray]:
        return (np.stack([maps[k].ravel()[idx] for k in METRICS], axis=1),
                maps["direction"].reshape(-1, 3)[idx])

    def model(p: np.ndarray, mu: np.ndarray) -> np.ndarray:
        return noddi_signal(bvals, bvecs, p[..., 0], p[..., 1], p[..., 2], mu)

    p_us, mu_us = pick(ours)
    p_am, mu_am = pick(theirs)
    e_dm = model(p_dm, mu_dm)
    # dmipy's prediction is S0 x E with its own S0 (the mean b0)
    s0_dm = sig[:, b0].mean(axis=1, keepdims=True)
    check = float(np.max(np.abs(predicted / s0_dm - e_dm)))
    sse = {"microvba": np.sum((model(p_us, mu_us) - y) ** 2, axis=1),
           "AMICO": np.sum((model(p_am, mu_am) - y) ** 2, axis=1),
           "dmipy": np.sum((e_dm - y) ** 2, axis=1)}

    def r(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
        return {k: float(np.corrcoef(a[:, j], b[:, j])[0, 1]) for j, k in enumerate(METRICS)}

    return {"n": int(idx.size), "model_check": check,
            "r": {"microvba vs dmipy": r(p_us, p_dm), "AMICO vs dmipy": r(p_am, p_dm),
                  "microvba vs AMICO": r(p_us, p_am)},
            "mae": {"microvba vs dmipy": {k: float(np.mean(np.abs(p_us[:, j] - p_dm[:, j])))
                                          for j, k in enumerate(METRICS)}},
            "sse": {k: float(np.median(v)) for k, v in sse.items()},
            "microvba_lower": float(np.mean(sse["microvba"] <= sse["dmipy"])),
            "dmipy_odi_bound": int(np.sum(p_dm[:, 1] >= 0.99)),
            "dmipy_icvf_bound": int(np.sum((p_dm[:, 0] >= 0.99) | (p_dm[:, 0] <= 0.01)))}


def agreement(ours: dict, theirs: dict, mask: np.ndarray) -> tuple[dict[str, float], int]:
    """Pearson r per metric in tissue voxels (AMICO ISOVF < 0.5, ODI below its top node)."""
    tissue = tissue_voxels(ours, theirs, mask)
    return ({k: float(np.corrcoef(ours[k][tissue], theirs[k][tissue])[0, 1])
             for k in METRICS}, int(tissue.sum()))


def compare(name: str, workdir: Path, n_lsq: int = 300, n_dmipy: int = 0,
            dmipy_path: str | None = None) -> dict:
    """r of microvba (default and toolbox-compatible) against AMICO on one crop."""
    d = DATA / "dwi"
    dwi, bval, bvec = (d / f"{name}_dwi.nii.gz", d / f"{name}_dwi.bval",
                       d / f"{name}_dwi.bvec")
    mask = d / f"{name}_mask.nii.gz"
    ours, m, mask_path = fit_microvba_image(dwi, bval, bvec, mask if mask.is_file() else None,
                                            workdir / "default")
    compat, _, _ = fit_microvba_image(dwi, bval, bvec, mask_path, workdir / "toolbox",
                                      noddi_compat="toolbox")
    theirs = fit_amico_image(dwi, bval, bvec, mask_path, workdir / "amico")
    out = {"default": agreement(ours, theirs, m), "toolbox": agreement(compat, theirs, m)}
    if n_lsq > 0:
        out["lsq"] = least_squares_reference(dwi, bval, bvec, ours, theirs,
                                             tissue_voxels(ours, theirs, m), n_lsq)
    if n_dmipy > 0:
        out["dmipy"] = dmipy_reference(dwi, bval, bvec, ours, theirs,
                                       tissue_voxels(ours, theirs, m), n_dmipy,
                                       dmipy_path=dmipy_path)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="keep the maps in this folder")
    ap.add_argument("--lsq", type=int, default=300,
                    help="tissue voxels per crop for the least-squares reference (0: skip)")
    ap.add_argument("--dmipy", type=int, default=0,
                    help="tissue voxels per crop fitted by dmipy 1.0.5 brute2fine (0: skip)")
    ap.add_argument("--dmipy-path", default=None,
                    help="folder holding dmipy 1.0.5 (pip install --no-deps --target DIR)")
    ap.add_argument("--crops", default=",".join(CROPS))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = args.out or Path(tmp)
        for name in args.crops.split(","):
            res = compare(name, base / name, args.lsq, args.dmipy, args.dmipy_path)
            lsq = res.pop("lsq", None)
            dm = res.pop("dmipy", None)
            for mode, (r, n) in res.items():
                print(f"{name:7s} microvba {mode:8s} vs AMICO, {n} tissue voxels: "
                      + "  ".join(f"{k} r={r[k]:.3f}" for k in METRICS), flush=True)
            if lsq is not None:
                for tool, r in lsq["r"].items():
                    print(f"{name:7s} {tool:8s} vs least-squares optimum (from AMICO's start), "
                          f"{lsq['n']} voxels: "
                          + "  ".join(f"{k} r={r[k]:.3f}" for k in METRICS), flush=True)
                s = lsq["sse"]
                print(f"{name:7s} median SSE (S/S0, S0 = mean b0): microvba {s['microvba']:.4f}"
                      f"  AMICO {s['AMICO']:.4f}  optimum {s['optimum']:.4f}; microvba lower "
                      f"than AMICO in {lsq['microvba_lower']:.0%} of voxels", flush=True)
            if dm is not None:
                for pair, r in dm["r"].items():
                    print(f"{name:7s} {pair}, {dm['n']} voxels: "
                          + "  ".join(f"{k} r={r[k]:.3f}" for k in METRICS), flush=True)
                s = dm["sse"]
                print(f"{name:7s} median SSE: microvba {s['microvba']:.4f}  AMICO "
                      f"{s['AMICO']:.4f}  dmipy {s['dmipy']:.4f}; microvba <= dmipy in "
                      f"{dm['microvba_lower']:.0%} of voxels; MAE microvba-dmipy "
                      + "  ".join(f"{k} {v:.4f}" for k, v in dm["mae"]["microvba vs dmipy"].items())
                      + f"; dmipy at ODI bound {dm['dmipy_odi_bound']}, ICVF bound "
                      f"{dm['dmipy_icvf_bound']}; forward models differ by at most "
                      f"{dm['model_check']:.1e}", flush=True)


if __name__ == "__main__":
    main()
