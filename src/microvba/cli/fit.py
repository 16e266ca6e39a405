"""``microvba fit``: fit DTI and/or NODDI to one DWI image."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._validation import InputError, check_output_dir
from ..models import registry
from ._types import diffusivity, parse_models

HELP = ("Fit the diffusion tensor and/or NODDI to one DWI series and write BIDS-derivative "
        "maps (FA, MD, RD, AD, ICVF, ODI, ISOVF, ...) with JSON sidecars.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dwi", type=Path, help="4-D DWI series (.nii or .nii.gz)")
    parser.add_argument("--bval", type=Path, required=True, help="FSL .bval file")
    parser.add_argument("--bvec", type=Path, required=True, help="FSL .bvec file")
    parser.add_argument("--mask", type=Path, default=None,
                        help="brain mask (default: median_otsu on the mean b0)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    parser.add_argument("--model", type=parse_models, default=["tensor", "noddi"],
                        help="comma-separated models: " + ", ".join(registry.REGISTRY)
                             + " (gqi: QA, GFA, ISO; mapmri: RTOP, RTAP, RTPP, MSD, NG; "
                               "both need a DSI grid or several shells)")
    parser.add_argument("--tissue", choices=["wm", "gm"], default="wm",
                        help="NODDI intrinsic-diffusivity preset: wm = 1.7e-3, gm = 1.1e-3 "
                             "mm^2/s")
    parser.add_argument("--d-par", type=diffusivity, default=None,
                        help="NODDI intrinsic parallel diffusivity in mm^2/s (overrides "
                             "--tissue)")
    parser.add_argument("--d-iso", type=diffusivity, default=3.0e-3,
                        help="NODDI isotropic diffusivity in mm^2/s")
    parser.add_argument("--dti-bmax", type=float, default=1750.0,
                        help="fit the tensor on volumes with b <= this (s/mm^2)")
    parser.add_argument("--dti-method", choices=["wls", "ols"], default="wls",
                        help="tensor fit method")
    parser.add_argument("--denoise", action="store_true",
                        help="MP-PCA denoising (DIPY) before fitting")
    parser.add_argument("--force", action="store_true",
                        help="refit even if the outputs are up to date")
    registry.add_cli_options(parser.add_argument_group("per-model options"))


def prefix_from_dwi(path: Path) -> str:
    """``sub-01_dwi.nii.gz`` -> ``sub-01_space-orig``."""
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    if name.endswith("_dwi"):
        name = name[: -len("_dwi")]
    return f"{name}_space-orig"


def run(args: argparse.Namespace) -> int:
    from .._logging import get_logger
    from ..models.pipeline import fit_image

    for label, p in (("DWI", args.dwi), ("b-value", args.bval), ("b-vector", args.bvec),
                     ("mask", args.mask)):
        if p is not None and not Path(p).is_file():
            raise InputError(f"{label} file not found", file=p,
                             fix="Check the path (relative paths start in the current folder).")
    check_output_dir(args.output)
    paths = fit_image(args.dwi, args.bval, args.bvec, args.output, prefix_from_dwi(args.dwi),
                      mask_path=args.mask, models=args.model, d_par=args.d_par,
                      tissue=args.tissue, d_iso=args.d_iso, dti_bmax=args.dti_bmax,
                      dti_method=args.dti_method, denoise=args.denoise, force=args.force,
                      options=registry.options_from_args(args))
    log = get_logger(__name__)
    for key, path in paths.items():
        log.info("%-16s %s", key, path)
    return 0
