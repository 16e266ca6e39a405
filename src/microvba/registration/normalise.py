"""Normalise one subject's native maps to MNI space: register, resample once, QC.

Outputs (``OUT/sub-<label>[/ses-<label>]/dwi`` unless noted)::

    {prefix}_space-{SPACE_MNI}_model-*_param-<p>_dwimap.nii.gz (+ .json)   each map
    {prefix}_space-{SPACE_MNI}_desc-brain_mask.nii.gz                       valid voxels
    {prefix}_from-dwi_to-{SPACE_MNI}_*_xfm.*                                ANTs transforms
    {prefix}_space-{SPACE_MNI}_desc-registration_qc.json                    similarity, params
    OUT/sub-<label>/figures/{prefix}_space-{SPACE_MNI}_desc-qc_dwimap.png   QC mosaic

Continuous maps are resampled with mask-normalised linear interpolation,
:math:`\\hat x = W(m\\,x) / W(m)` where the warped mask :math:`W(m) \\ge 0.5` (0 elsewhere),
so values at the brain edge (the cortex) are not diluted by the zeros outside the native
mask. Each map goes through the subject's one composite transform once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from .._logging import get_logger
from .._provenance import is_up_to_date, make_sidecar, save_figure, save_nifti, write_json
from .._validation import InputError, ProblemCollector
from ..io import derivatives
from ..models import registry as _registry
from .ants import SubjectTransform, register_subject
from .contrast import (
    brain_mask_from_maps,
    synthetic_t1,
    template_tissue_fractions,
    tissue_probabilities,
)
from .qc import qc_mosaic, registration_similarity
from .template import load_template

log = get_logger(__name__)

EXTRA_KEYS = ("mask", "b0")
_PREFIX = re.compile(r"^sub-([A-Za-z0-9]+)(?:_ses-([A-Za-z0-9]+))?$")


@dataclass
class NormaliseResult:
    """Paths written by :func:`normalise_subject`.

    Attributes
    ----------
    maps
        Parameter -> normalised map.
    mask
        Normalised brain mask (voxels with valid data).
    qc
        Similarity measures (``correlation``, ``dice_gm``, ``dice_brain``).
    qc_path, figure
        QC JSON and QC mosaic PNG.
    transforms
        Saved ANTs transform files (index JSON first).
    skipped
        True when the outputs were up to date and nothing was recomputed.
    """

    maps: dict[str, Path]
    mask: Path
    qc: dict[str, float]
    qc_path: Path
    figure: Path
    transforms: list[Path] = field(default_factory=list)
    skipped: bool = False


def parse_prefix(prefix: str) -> tuple[str, str | None]:
    """``"sub-01_ses-1"`` -> ``("01", "1")``."""
    m = _PREFIX.match(prefix)
    if not m:
        raise InputError(f"invalid subject prefix {prefix!r}", file="prefix",
                         fix="Use 'sub-<label>' or 'sub-<label>_ses-<label>'.")
    return m.group(1), m.group(2)


def _output_paths(out_dir: Path, prefix: str, params: list[str], space: str) -> dict[str, Any]:
    subject, session = parse_prefix(prefix)
    folder = derivatives.subject_dir(out_dir, subject, session)
    return {
        "folder": folder,
        "maps": {p: derivatives.map_path(out_dir, subject, p, space=space, session=session,
                                         model=_registry.model_of_map(p))
                 for p in params},
        "mask": folder / derivatives.brain_mask_name(derivatives.space_prefix(prefix, space)),
        "qc": folder / derivatives.registration_qc_name(prefix, space),
        "figure": derivatives.qc_mosaic_path(out_dir, prefix, space),
        "xfm_index": folder / SubjectTransform._names(prefix, space)["json"],
    }


def _load_inputs(native_maps: Mapping[str, str | Path], t1w: str | Path | None
                 ) -> tuple[dict[str, nib.Nifti1Image], nib.Nifti1Image | None]:
    """Load and check the native maps (exist, 3-D, one grid); one error lists all problems."""
    problems = ProblemCollector()
    images: dict[str, nib.Nifti1Image] = {}
    allowed = set(_registry.all_metrics()) | set(EXTRA_KEYS)  # every registry metric
    ignored = sorted(set(native_maps) - allowed)
    if ignored:  # fit extras (colorfa, kappa, nrmse, ...) stay in native space
        log.debug("normalise: not normalising %s", ", ".join(ignored))
    for key, path in native_maps.items():
        if key not in allowed:
            continue
        path = Path(path)
        if not path.exists():
            problems.add(path, f"native {key} map not found", "Run the model fit first.")
            continue
        try:
            img = nib.load(path)
        except (ImageFileError, OSError, EOFError) as err:
            problems.add(path, f"cannot read the native {key} map ({err})",
                         "Pass a NIfTI image (.nii or .nii.gz).")
            continue
        if len(img.shape) != 3:
            problems.add(path, f"native {key} map is {len(img.shape)}-D, expected 3-D",
                         "Pass one 3-D map per parameter.")
            continue
        images[key] = img
    if not problems and images:
        ref_key, ref = next(iter(images.items()))
        for key, img in images.items():
            if img.shape != ref.shape or not np.allclose(img.affine, ref.affine, atol=1e-3):
                problems.add(native_maps[key], f"{key} is not on the grid of {ref_key}",
                             "Pass maps from one fit (same shape and affine).")
    if not images and not problems:
        problems.add("native_maps", "no native maps given",
                     f"Pass some of {list(derivatives.METRICS)}.")
    t1_img = None
    if t1w is not None:
        if not Path(t1w).exists():
            problems.add(t1w, "T1w image not found", "Fix the path or omit the T1w.")
        else:
            t1_img = nib.load(t1w)
    problems.raise_if_any()
    return images, t1_img


def _warp_maps(xfm: SubjectTransform, images: Mapping[str, nib.Nifti1Image],
               mask: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Mask-normalised resampling of every map; returns (maps, valid mask) on the template."""
    ref = next(iter(images.values()))
    m = mask.astype(np.float32)
    w_mask = np.asarray(xfm.apply(nib.Nifti1Image(m, ref.affine)).dataobj)
    valid = w_mask >= 0.5
    out = {}
    for key, img in images.items():
        if key == "mask":
            continue
        data = np.nan_to_num(np.asarray(img.dataobj, dtype=np.float32)) * m
        w = np.asarray(xfm.apply(nib.Nifti1Image(data, ref.affine)).dataobj)
        out[key] = np.where(valid, w / np.where(valid, w_mask, 1.0), 0.0).astype(np.float32)
    return out, valid


def normalise_subject(native_maps: Mapping[str, str | Path], out_dir: str | Path, prefix: str,
                      *, t1w: str | Path | None = None, resolution: float = 2.0,
                      force: bool = False, n_threads: int | None = None) -> NormaliseResult:
    """Register one subject to the MNI template and write its maps in template space.

    Parameters
    ----------
    native_maps
        ``param -> path`` of native-space maps (``fa, md, rd, ad, icvf, odi, isovf``), plus
        optional ``mask`` and ``b0``. Registration without a T1w needs ``fa`` and ``isovf``
        or ``md``.
    out_dir
        Derivatives root.
    prefix
        ``sub-<label>`` or ``sub-<label>_ses-<label>``.
    t1w
        Optional T1w image of the subject (DWI -> T1w -> MNI route).
    resolution
        Analysis grid (mm).
    force
        Recompute even when the outputs are up to date.
    n_threads
        ITK threads for ANTs.

    Returns
    -------
    NormaliseResult
    """
    parse_prefix(prefix)
    images, t1_img = _load_inputs(native_maps, t1w)
    template = load_template(resolution)
    params = [k for k in images if k not in EXTRA_KEYS]
    paths = _output_paths(Path(out_dir), prefix, params, template.space)
    parameters = {"resolution": template.resolution, "space": template.space,
                  "type_of_transform": "SyN", "t1w": t1w is not None,
                  "interpolation": "mask-normalised linear",
                  "contrast": "rank-adaptive synthetic T1 (FA, ISOVF/MD)"}
    inputs = {k: native_maps[k] for k in images}
    if t1w is not None:
        inputs["t1w"] = t1w
    outputs = [*paths["maps"].values(), paths["mask"], paths["figure"], paths["xfm_index"]]
    if not force and is_up_to_date(outputs, paths["qc"], parameters, inputs):
        log.info("%s: normalised maps up to date, skipping", prefix)
        recorded = json.loads(paths["qc"].read_text())
        qc = {k: recorded[k] for k in derivatives.QC_MEASURES if k in recorded}
        return NormaliseResult(paths["maps"], paths["mask"], qc, paths["qc"], paths["figure"],
                               [paths["xfm_index"]], skipped=True)

    log.info("%s: registering to %s (%s)", prefix, template.space,
             "via T1w" if t1_img is not None else "synthetic T1-like contrast")
    arrays = {k: np.asarray(v.dataobj, dtype=np.float32) for k, v in images.items()}
    mask = brain_mask_from_maps(arrays)
    xfm = register_subject(images, t1w=t1_img, template=template, n_threads=n_threads)
    warped, valid = _warp_maps(xfm, images, mask)
    qc = _similarity(xfm, images, arrays, valid, template)
    log.info("%s: registration QC %s", prefix, {k: round(v, 3) for k, v in qc.items()})

    written = xfm.save(paths["folder"], prefix)
    xfm_names = [p.name for p in written]
    for key in params:
        path = paths["maps"][key]
        save_nifti(template.image(warped[key]), path)
        write_json(derivatives.sidecar_path(path), make_sidecar(
            parameters, {key: native_maps[key]}, Space=template.space,
            Transforms=xfm_names, Resolution=template.resolution))
    save_nifti(template.image(valid, np.uint8), paths["mask"])
    shown = {k: template.image(warped[k]) for k in ("fa", "md") if k in warped} or {
        k: template.image(warped[k]) for k in list(warped)[:2]}
    fig = qc_mosaic(shown, template, title=f"{prefix}  " + "  ".join(
        f"{k}={v:.3f}" for k, v in qc.items()))
    save_figure(fig, paths["figure"], dpi=100)
    write_json(paths["qc"], {**qc, **make_sidecar(parameters, inputs, Space=template.space,
                                                  Transforms=xfm_names)})
    return NormaliseResult(paths["maps"], paths["mask"], qc, paths["qc"], paths["figure"],
                           written)


def _similarity(xfm: SubjectTransform, images: Mapping[str, nib.Nifti1Image],
                arrays: Mapping[str, np.ndarray], valid: np.ndarray, template) -> dict[str, float]:
    """QC similarity from the warped synthetic contrast and GM estimate (see :mod:`.qc`)."""
    ref = next(iter(images.values()))
    if "fa" in arrays and ({"isovf", "md"} & set(arrays)):
        contrast = synthetic_t1(arrays, template)
        gm = tissue_probabilities(arrays, template_tissue_fractions(template))["gm"]
        w_contrast = np.asarray(xfm.apply(nib.Nifti1Image(contrast, ref.affine)).dataobj)
        w_gm = np.asarray(xfm.apply(nib.Nifti1Image(gm, ref.affine)).dataobj)
    else:  # T1w route with too few maps for a synthetic contrast: brain overlap only
        w_contrast = valid.astype(np.float32)
        w_gm = np.zeros(template.shape, np.float32)
    return registration_similarity(w_contrast, w_gm, valid, template)
