"""``microvba fit``: fit DTI and/or NODDI to one DWI image."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from .._defaults import TISSUE_D_PAR
from .._validation import InputError, check_output_dir
from ..io import derivatives
from ..models import registry
from ..workflows.participant import ParticipantSettings
from ._types import diffusivity, parse_models, path_arg

#: defaults declared once, in the settings dataclass the participant stage uses too
_PDEF = {f.name: f.default for f in fields(ParticipantSettings)}


HELP = ("Fit the diffusion tensor and/or NODDI to one DWI series and write BIDS-derivative "
        "maps (FA, MD, RD, AD, ICVF, ODI, ISOVF, ...) with JSON sidecars.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dwi", type=path_arg, help="4-D DWI series (.nii or .nii.gz)")
    parser.add_argument("--bval", type=path_arg, required=True, help="FSL .bval file")
    parser.add_argument("--bvec", type=path_arg, required=True, help="FSL .bvec file")
    parser.add_argument("--mask", type=path_arg, default=None,
                        help="brain mask (default: median_otsu on the mean b0)")
    parser.add_argument("-o", "--output", type=path_arg, required=True, help="output folder")
    parser.add_argument("--model", "--models", dest="model", type=parse_models,
                        default=list(_PDEF["models"]),
                        help="comma-separated models: " + ", ".join(registry.REGISTRY)
                             + " (gqi: QA, GFA, ISO; mapmri: RTOP, RTAP, RTPP, MSD, NG; "
                               "both need a DSI grid or several shells)")
    parser.add_argument("--tissue", choices=list(TISSUE_D_PAR), default=_PDEF["tissue"],
                        help="NODDI intrinsic-diffusivity preset: wm = 1.7e-3, gm = 1.1e-3 "
                             "mm^2/s")
    parser.add_argument("--d-par", type=diffusivity, default=None,
                        help="NODDI intrinsic parallel diffusivity in mm^2/s (overrides "
                             "--tissue)")
    parser.add_argument("--d-iso", type=diffusivity, default=_PDEF["d_iso"],
                        help="NODDI isotropic diffusivity in mm^2/s")
    parser.add_argument("--dti-bmax", type=float, default=_PDEF["dti_bmax"],
                        help="fit the tensor on volumes with b <= this (s/mm^2)")
    parser.add_argument("--dti-method", choices=["wls", "ols"], default=_PDEF["dti_method"],
                        help="tensor fit method")
    parser.add_argument("--denoise", action="store_true",
                        help="MP-PCA denoising (DIPY) before fitting")
    add_noddi_options(parser)
    parser.add_argument("--force", action="store_true",
                        help="refit even if the outputs are up to date")
    registry.add_cli_options(parser.add_argument_group("per-model options"))


def add_noddi_options(parser) -> None:
    """``--noddi-s0``, ``--noddi-noise``, ``--noddi-compat`` (checked by
    :func:`microvba.models.noddi.check_noddi_options`: InputError, exit 2)."""
    parser.add_argument("--noddi-s0", default="auto",
                        help="NODDI S0: 'fixed' at the mean b0 (the NODDI toolbox), 'fit' "
                             "(free amplitudes), or 'auto' (fixed: as accurate or better in "
                             "simulations, single-b0 DSI included)")
    parser.add_argument("--noddi-noise", default="auto",
                        help="NODDI Rician noise floor, sigma per voxel from: 'b0' repeats, "
                             "repeated-direction 'pairs', fit 'residual's; 'none' (least "
                             "squares); 'auto': pairs where the scheme has them, else b0 or "
                             "residual on schemes reaching b 4000, else none")
    parser.add_argument("--noddi-compat", default=None,
                        help="'toolbox': reproduce the NODDI MATLAB toolbox's choices (S0 "
                             "fixed at the mean b0, least squares without a noise floor), to "
                             "match published toolbox numbers")


def prefix_from_dwi(path: Path) -> str:
    """``sub-01_dwi.nii.gz`` -> ``sub-01_space-orig``."""
    name = path.name
    for ext in (".nii.gz", ".nii", ".img", ".hdr"):  # .img/.hdr: a NIfTI/Analyze pair
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    if name.endswith("_dwi"):
        name = name[: -len("_dwi")]
    return derivatives.space_prefix(name)


def run(args: argparse.Namespace) -> int:
    from .._logging import get_logger
    from ..models.pipeline import fit_image

    # every option checked first (exit 2), before any file is read
    ParticipantSettings(models=tuple(args.model), tissue=args.tissue, d_par=args.d_par,
                        d_iso=args.d_iso, dti_bmax=args.dti_bmax, dti_method=args.dti_method,
                        noddi_s0=args.noddi_s0, noddi_noise=args.noddi_noise,
                        noddi_compat=args.noddi_compat)
    for label, p in (("DWI", args.dwi), ("b-value", args.bval), ("b-vector", args.bvec),
                     ("mask", args.mask)):
        if p is not None and not Path(p).is_file():
            raise InputError(f"a folder, not the {label} file" if Path(p).is_dir() else
                             f"{label} file not found", file=p,
                             fix="Check the path (relative paths start in the current folder).")
    from ..io.bids import check_image_file

    # header size vs file and memory, gzip CRC, voxel sizes, a scaling that leaves no
    # positive signal: before anything is written (NaN/inf values are judged within the
    # mask by the fit itself)
    check_image_file(args.dwi, signal=False, scaling=True)
    if args.mask is not None:
        check_image_file(args.mask, signal=False)
    check_output_dir(args.output)
    paths = fit_image(args.dwi, args.bval, args.bvec, args.output, prefix_from_dwi(args.dwi),
                      mask_path=args.mask, models=args.model, d_par=args.d_par,
                      tissue=args.tissue, d_iso=args.d_iso, dti_bmax=args.dti_bmax,
                      dti_method=args.dti_method, denoise=args.denoise, force=args.force,
                      noddi_s0=args.noddi_s0, noddi_noise=args.noddi_noise,
                      noddi_compat=args.noddi_compat,
                      options=registry.options_from_args(args))
    log = get_logger(__name__)
    for key, path in paths.items():
        log.info("%-16s %s", key, path)
    return 0
