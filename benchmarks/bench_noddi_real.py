"""NODDI on real scans: microvba vs AMICO on the real crops of ``$MICROVBA_DATA/dwi``.

Both tools fit the same image inside the same mask (msmt: its own mask; batman: the mask
microvba computes, median_otsu on the mean b0), d_par 1.7e-3, d_iso 3e-3. Agreement is the
Pearson r of ICVF, ODI and ISOVF in tissue voxels: AMICO ISOVF < 0.5 and AMICO ODI below its
grid's top node (the analogue of the issue's toolbox criterion: voxels left at the ODI bound
excluded). microvba runs with its defaults and with ``--noddi-compat toolbox``.

Usage::

    .venv/bin/python benchmarks/bench_noddi_real.py [--out DIR]
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
    return {"icvf": maps[..., 0], "odi": maps[..., 1], "isovf": maps[..., 2]}


def fit_microvba_image(dwi: Path, bval: Path, bvec: Path, mask: Path | None, out: Path,
                       **options) -> tuple[dict[str, np.ndarray], np.ndarray, Path]:
    """microvba maps (ICVF, ODI, ISOVF), the mask, and the mask's path."""
    import nibabel as nib

    from microvba.models import fit_image

    paths = fit_image(dwi, bval, bvec, out, "crop", mask_path=mask, models=("noddi",),
                      **options)
    m = nib.load(paths["mask"]).get_fdata() > 0
    return {k: nib.load(paths[k]).get_fdata() for k in METRICS}, m, paths["mask"]


def agreement(ours: dict, theirs: dict, mask: np.ndarray) -> tuple[dict[str, float], int]:
    """Pearson r per metric in tissue voxels (AMICO ISOVF < 0.5, ODI below its top node)."""
    tissue = mask & (theirs["isovf"] < 0.5) & (theirs["odi"] < 0.98)
    tissue &= np.all([np.isfinite(ours[k]) for k in METRICS], axis=0)
    return ({k: float(np.corrcoef(ours[k][tissue], theirs[k][tissue])[0, 1])
             for k in METRICS}, int(tissue.sum()))


def compare(name: str, workdir: Path) -> dict[str, tuple[dict[str, float], int]]:
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
    return {"default": agreement(ours, theirs, m), "toolbox": agreement(compat, theirs, m)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="keep the maps in this folder")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = args.out or Path(tmp)
        for name in CROPS:
            for mode, (r, n) in compare(name, base / name).items():
                print(f"{name:7s} microvba {mode:8s} vs AMICO, {n} tissue voxels: "
                      + "  ".join(f"{k} r={r[k]:.3f}" for k in METRICS), flush=True)


if __name__ == "__main__":
    main()
