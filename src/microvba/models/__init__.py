"""Microstructure models: gradient tables, DTI (DIPY) and fast NODDI.

Public API::

    GradientTable(bvals, bvecs, b0_threshold=50.0, shell_tolerance=100.0)
    TensorModel(gtab, fit_method="wls", bmax=1750.0).fit(data, mask) -> TensorFit
    NoddiModel(gtab, d_par=D_PAR_WM, d_iso=D_ISO).fit(data, mask) -> NoddiFit
    GqiModel(gtab, sampling_length=1.25).fit(data, mask) -> GqiFit        (QA, GFA, ISO)
    MapmriModel(gtab, radial_order=6, laplacian_weighting="GCV").fit(data, mask)
        -> MapmriFit                                     (RTOP, RTAP, RTPP, MSD, NG)
    registry.REGISTRY: the maps, options and citations of every model
    noddi_signal(bvals, bvecs, icvf, odi, isovf, mu, d_par, d_iso)
    tensor_signal(bvals, bvecs, evals, evecs)
    brain_mask(data, gtab), denoise(data, mask)
    fit_image(dwi, bval, bvec, out_dir, prefix, ...) -> dict[str, Path]
"""

from .dti import DTI_BMAX, TensorFit, TensorModel, tensor_signal
from .gqi import GqiFit, GqiModel
from .gradients import B0_THRESHOLD, SHELL_TOLERANCE, GradientTable, cluster_shells
from .mapmri import MapmriFit, MapmriModel
from .mask import brain_mask, denoise
from .noddi import (
    D_ISO,
    D_PAR_GM,
    D_PAR_WM,
    NoddiFit,
    NoddiModel,
    kappa_to_odi,
    noddi_signal,
    odi_to_kappa,
)
from .pipeline import fit_image
from .registry import REGISTRY

#: every model name ``--models`` accepts (one list: the model registry)
KNOWN_MODELS: tuple[str, ...] = tuple(REGISTRY)

__all__ = [
    "B0_THRESHOLD", "D_ISO", "D_PAR_GM", "D_PAR_WM", "DTI_BMAX", "SHELL_TOLERANCE",
    "GqiFit", "GqiModel", "GradientTable", "KNOWN_MODELS", "MapmriFit", "MapmriModel",
    "NoddiFit", "NoddiModel", "TensorFit", "TensorModel", "brain_mask",
    "cluster_shells", "denoise", "fit_image", "kappa_to_odi", "noddi_signal", "odi_to_kappa",
    "tensor_signal",
]
