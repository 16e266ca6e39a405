r"""Anatomy of simulated brains: template tissues, Brainnetome regions, fibre orientations.

The tissue probabilities are those of the ICBM152 2009 template shipped with nilearn
(:func:`microvba.registration.template.load_template`), cropped to the brain's bounding box
plus a margin that keeps a moved and deformed brain inside the field of view. Regions come from
the Brainnetome BN-246 atlas (Fan et al. 2016), read from ``atlases/brainnetome`` below the
data folder (``data_dir``, else ``$MICROVBA_DATA``, else ``~/.cache/microvba``).

Fibre orientations :math:`\mu` are derived from the tissue maps of each (native) brain: with
:math:`J = G_\sigma * (\nabla c\, \nabla c^T)` the structure tensor of the tissue contrast
:math:`c = p_{WM} - p_{CSF}`, cortical neurites run along the principal eigenvector (radial
to the cortical sheet, as in histology) and white-matter axons along the minor eigenvector
(parallel to the white-matter sheet); voxels mix the two by their GM/WM fractions.

References
----------
Fan L. et al. (2016) The Human Brainnetome Atlas: a new brain atlas based on connectional
architecture. Cereb Cortex 26, 3508-3526.
Fonov V. et al. (2011) Unbiased average age-appropriate atlases for pediatric studies.
NeuroImage 54, 313-327.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from .._paths import data_dir as resolve_data_dir
from .._validation import InputError
from ..regions.atlases import (
    BRAINNETOME_DIR,
    BRAINNETOME_IMAGE,
    brainnetome_missing_error,
)
from ..regions.atlases import load_atlas as load_brainnetome

ATLAS_RELPATH = BRAINNETOME_DIR / BRAINNETOME_IMAGE


def atlas_path(data_dir: str | Path | None = None) -> Path:
    """Path of the Brainnetome 1 mm label image; InputError naming the fix if absent."""
    path = resolve_data_dir(data_dir) / ATLAS_RELPATH
    if not path.exists():
        raise brainnetome_missing_error(
            path, "the Brainnetome atlas (needed to plant the study's regional effects)")
    return path


def load_atlas(data_dir: str | Path | None = None) -> nib.Nifti1Image:
    """Brainnetome BN-246 labels (1 mm, int16, background 0; the file stores NaN), read by
    the one Brainnetome loader (:func:`microvba.regions.atlases.load_atlas`)."""
    atlas_path(data_dir)  # the simulator's own message when the atlas is missing
    return load_brainnetome("brainnetome", data_dir).img


def region_fraction(atlas: nib.Nifti1Image, label_ids: tuple[int, ...],
                    affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Fraction of each voxel of a grid covered by the labels (box average of the 1 mm mask).

    Returns
    -------
    ndarray
        ``shape`` float32 in [0, 1].
    """
    data = np.asarray(atlas.dataobj)
    indicator = np.isin(data, np.asarray(label_ids)).astype(np.float32)
    vox_out = nib.affines.voxel_sizes(affine)
    vox_in = nib.affines.voxel_sizes(atlas.affine)
    size = np.maximum(np.rint(vox_out / vox_in).astype(int), 1)
    box = ndimage.uniform_filter(indicator, size=size, mode="constant")
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1).T
    src = nib.affines.apply_affine(np.linalg.solve(atlas.affine, affine), ijk).T
    frac = ndimage.map_coordinates(box, src, order=1, mode="constant", cval=0.0)
    return np.clip(frac.reshape(shape), 0.0, 1.0).astype(np.float32)


def label_centre_mm(atlas: nib.Nifti1Image, label_ids: tuple[int, ...]) -> np.ndarray:
    """Centre of mass (MNI mm) of the labels on the atlas's own 1 mm grid."""
    ijk = np.argwhere(np.isin(np.asarray(atlas.dataobj), np.asarray(label_ids)))
    if ijk.size == 0:
        raise InputError(f"labels {list(label_ids)} are absent from the atlas",
                         file="Brainnetome atlas", fix="Use the BN-246 atlas (labels 1-246).")
    return nib.affines.apply_affine(atlas.affine, ijk.mean(axis=0))


@dataclass(frozen=True)
class Anatomy:
    """Template tissues on the simulation grid (a crop of the template's analysis grid).

    Attributes
    ----------
    gm, wm, csf
        Tissue probabilities (float32, ``shape``), zero outside the brain.
    mask
        Brain mask (bool).
    affine
        Voxel-to-MNI affine of the simulation grid.
    origin_index
        Template-grid index of this grid's first voxel (negative where the crop extends
        beyond the template and is zero-padded).
    template_shape, template_affine
        The template grid (for writing truth maps on the analysis grid).
    space
        BIDS ``space-`` identifier of the template.
    """

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    origin_index: tuple[int, int, int]
    template_shape: tuple[int, int, int]
    template_affine: np.ndarray
    space: str

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.mask.shape)

    @property
    def voxel_size(self) -> np.ndarray:
        return nib.affines.voxel_sizes(self.affine)

    def image(self, data: np.ndarray, dtype: type = np.float32) -> nib.Nifti1Image:
        """Wrap an array of the simulation grid in a NIfTI image."""
        img = nib.Nifti1Image(np.asarray(data, dtype=dtype), self.affine)
        img.header.set_xyzt_units("mm")
        return img

    def to_template(self, data: np.ndarray) -> np.ndarray:
        """Place simulation-grid arrays (3-D or 4-D) on the template's analysis grid."""
        out = np.zeros(self.template_shape + data.shape[3:], dtype=data.dtype)
        src, dst = [], []
        for ax in range(3):
            start = self.origin_index[ax]
            lo, hi = max(start, 0), min(start + data.shape[ax], self.template_shape[ax])
            dst.append(slice(lo, hi))
            src.append(slice(lo - start, hi - start))
        out[tuple(dst)] = data[tuple(src)]
        return out


def build_anatomy(resolution: float = 4.0, margin_mm: float = 20.0) -> Anatomy:
    """Template tissues cropped to the brain's bounding box plus ``margin_mm`` (zero-padded)."""
    from ..registration.template import load_template

    tpl = load_template(resolution)
    mask = np.asarray(tpl.brain_mask.dataobj) > 0
    idx = np.argwhere(mask)
    margin = int(np.ceil(margin_mm / resolution))
    lo = idx.min(axis=0) - margin
    hi = idx.max(axis=0) + margin + 1

    def crop(img: nib.Nifti1Image) -> np.ndarray:
        data = np.asarray(img.dataobj, dtype=np.float32)
        out = np.zeros(tuple(int(h - lo_) for h, lo_ in zip(hi, lo, strict=True)), np.float32)
        src, dst = [], []
        for ax in range(3):
            a, b = max(lo[ax], 0), min(hi[ax], data.shape[ax])
            src.append(slice(a, b))
            dst.append(slice(a - lo[ax], b - lo[ax]))
        out[tuple(dst)] = data[tuple(src)]
        return out

    affine = tpl.affine.copy()
    affine[:3, 3] = nib.affines.apply_affine(tpl.affine, lo)
    m = crop(tpl.brain_mask) > 0
    gm, wm, csf = (np.where(m, crop(im), 0.0).astype(np.float32)
                   for im in (tpl.gm, tpl.wm, tpl.csf))
    return Anatomy(gm=gm, wm=wm, csf=csf, mask=m, affine=affine,
                   origin_index=tuple(int(x) for x in lo),
                   template_shape=tpl.shape, template_affine=tpl.affine, space=tpl.space)


def tissue_fractions(gm: np.ndarray, wm: np.ndarray, csf: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalise tissue probabilities so that they sum to one where any is present."""
    total = gm + wm + csf
    safe = np.where(total > 1e-6, total, 1.0)
    return gm / safe, wm / safe, csf / safe


def fibre_directions(gm: np.ndarray, wm: np.ndarray, csf: np.ndarray,
                     voxel_size: np.ndarray, *, sigma_mm: float = 4.0) -> np.ndarray:
    """Unit fibre directions ``shape + (3,)`` in voxel axes (see the module docstring)."""
    vox = np.asarray(voxel_size, dtype=float)
    contrast = ndimage.gaussian_filter((wm - csf).astype(np.float32), 0.5 * sigma_mm / vox)
    grads = np.gradient(contrast, *vox)
    jt = np.empty(contrast.shape + (3, 3), dtype=np.float32)
    for i in range(3):
        for j in range(i, 3):
            jt[..., i, j] = ndimage.gaussian_filter(grads[i] * grads[j], sigma_mm / vox)
            jt[..., j, i] = jt[..., i, j]
    jt += np.eye(3, dtype=np.float32) * 1e-9  # isotropic regulariser for flat regions
    _, vecs = np.linalg.eigh(jt)
    radial, along = vecs[..., :, 2], vecs[..., :, 0]
    # align the sign of the two candidates before mixing them
    along = along * np.where((along * radial).sum(-1, keepdims=True) < 0, -1.0, 1.0)
    fgm, fwm, _ = tissue_fractions(gm, wm, csf)
    w = fgm / np.maximum(fgm + fwm, 1e-6)
    mu = w[..., None] * radial + (1.0 - w[..., None]) * along
    norm = np.linalg.norm(mu, axis=-1, keepdims=True)
    mu = np.where(norm > 1e-6, mu / np.maximum(norm, 1e-6), radial)
    return mu.astype(np.float32)
