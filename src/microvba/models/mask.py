"""Brain mask from the b0 volumes and optional MP-PCA denoising (both DIPY)."""

from __future__ import annotations

import numpy as np

from .._validation import InputError


def mean_b0(data: np.ndarray, gtab) -> np.ndarray:
    """Mean of the b0 volumes (float32)."""
    if not np.any(gtab.b0s_mask):
        raise InputError("no b0 volume to build a brain mask from", file=gtab.source,
                         fix="Pass a mask with --mask, or include a b=0 volume.")
    return np.mean(np.asarray(data)[..., gtab.b0s_mask], axis=-1, dtype=np.float32)


def brain_mask(data: np.ndarray, gtab, median_radius: int = 4, numpass: int = 4
               ) -> np.ndarray:
    """Brain mask by DIPY's ``median_otsu`` on the mean b0.

    Parameters
    ----------
    data
        (x, y, z, n_volumes) DWI.
    gtab
        :class:`~microvba.models.gradients.GradientTable`.
    median_radius, numpass
        Median filter radius and passes (DIPY defaults).
    """
    from dipy.segment.mask import median_otsu

    b0 = np.nan_to_num(mean_b0(data, gtab), nan=0.0, posinf=0.0, neginf=0.0)
    _, mask = median_otsu(b0, median_radius=median_radius, numpass=numpass)
    return np.asarray(mask, bool)


def denoise(data: np.ndarray, mask: np.ndarray | None = None, patch_radius: int = 2
            ) -> np.ndarray:
    """Marchenko-Pastur PCA denoising (Veraart et al. 2016; DIPY ``mppca``).

    The patch needs more voxels than volumes for the noise estimate; with
    ``patch_radius=2`` (125 voxels) schemes of more volumes use a larger radius.
    """
    from dipy.denoise.localpca import mppca

    data = np.asarray(data, dtype=np.float32)
    radius = patch_radius
    while (2 * radius + 1) ** 3 <= data.shape[-1] and radius < 6:
        radius += 1
    return mppca(data, mask=mask, patch_radius=radius)
