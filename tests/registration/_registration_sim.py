"""Simulated subjects for the registration tests and benchmark: the template's tissue maps, warped by a known
smooth deformation plus rigid motion, turned into DWI-derived maps."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from microvba.registration.template import Template
from microvba.simulate.deformation import Warp, random_warp


def maps_from_tissue(gm: np.ndarray, wm: np.ndarray, csf: np.ndarray,
                     rng: np.random.Generator, noise: float = 0.01) -> dict[str, np.ndarray]:
    """Plausible DTI/NODDI maps from tissue probabilities (MD in mm^2/s)."""
    mask = (gm + wm + csf) > 0.1
    tot = np.where(mask, gm + wm + csf, 1.0)
    gm, wm, csf = gm / tot, wm / tot, csf / tot

    def noisy(x: np.ndarray, scale: float) -> np.ndarray:
        return np.where(mask, x + rng.normal(0, noise * scale, x.shape), 0).astype(np.float32)

    fa = noisy(0.12 * gm + 0.55 * wm + 0.04 * csf, 1.0).clip(0, 1)
    md = noisy((0.80 * gm + 0.70 * wm + 3.0 * csf) * 1e-3, 1e-3).clip(1e-5, None)
    maps = {
        "fa": fa,
        "md": np.where(mask, md, 0).astype(np.float32),
        "ad": np.where(mask, md * (1 + fa), 0).astype(np.float32),
        "rd": np.where(mask, md * (1 - fa / 2), 0).astype(np.float32),
        "icvf": noisy(0.35 * gm + 0.6 * wm, 1.0).clip(0, 1),
        "isovf": noisy(csf, 1.0).clip(0, 1),
        "mask": mask.astype(np.uint8),
    }
    return maps


def gaussian_blob(affine: np.ndarray, shape: tuple[int, ...], centre_mm: np.ndarray,
                  sigma_mm: float = 4.0) -> np.ndarray:
    ijk = np.indices(shape).reshape(3, -1).T
    xyz = nib.affines.apply_affine(affine, ijk)
    d2 = ((xyz - centre_mm) ** 2).sum(1)
    return np.exp(-d2 / (2 * sigma_mm**2)).reshape(shape).astype(np.float32)


def simulate_subject(template: Template, rng: np.random.Generator,
                     focus_mni: np.ndarray | None = None, **warp_kwargs: float
                     ) -> tuple[dict[str, nib.Nifti1Image], Warp]:
    """Native maps (template grid) of a subject made by warping the template's tissue maps.

    With ``focus_mni``, the ODI map carries a Gaussian blob (sigma 4 mm) centred at the
    subject-space image of that MNI point, so its normalised position can be checked.
    """
    warp = random_warp(template.t1, rng, **warp_kwargs)
    gm, wm, csf = (np.asarray(warp.apply(getattr(template, t)).dataobj)
                   for t in ("gm", "wm", "csf"))
    arrays = maps_from_tissue(gm, wm, csf, rng)
    if focus_mni is not None:
        centre = warp.to_subject(np.asarray(focus_mni, dtype=float))
        arrays["odi"] = gaussian_blob(template.affine, template.shape, centre)
    imgs = {k: nib.Nifti1Image(v, template.affine) for k, v in arrays.items()}
    return imgs, warp


def write_maps(imgs: dict[str, nib.Nifti1Image], folder: Path, prefix: str) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, img in imgs.items():
        p = folder / f"{prefix}_space-orig_param-{key}_dwimap.nii.gz"
        nib.save(img, p)
        paths[key] = p
    return paths

