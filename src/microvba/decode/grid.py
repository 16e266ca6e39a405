"""The MNI grid on which meta-analytic maps live, and images brought onto it.

Maps are computed on the ICBM152 2009 brain mask that nilearn ships
(:func:`nilearn.datasets.load_mni152_brain_mask`), at ``resolution`` mm. At 2 mm its voxel
centres lie on even millimetres (origin -98, -134, -72), the same lattice as NiMARE's and
FSL's ``MNI152_T1_2mm`` grid (origin -90, -126, -72), so a peak lands in the same voxel in
both tools.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from .._validation import InputError


@dataclass(frozen=True)
class BrainGrid:
    """A 3-D grid and its in-brain voxels.

    Attributes
    ----------
    shape, affine
        The volume grid (voxel -> MNI mm).
    mask
        Boolean volume, True inside the brain.
    flat_to_masked
        int32 array over the flattened (C-order) volume: index of the voxel among the
        in-mask voxels, -1 outside.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    mask: np.ndarray
    flat_to_masked: np.ndarray

    @property
    def n_voxels(self) -> int:
        return int(self.mask.sum())

    @property
    def resolution(self) -> float:
        return float(abs(self.affine[0, 0]))

    def mask_img(self) -> nib.Nifti1Image:
        return nib.Nifti1Image(self.mask.astype(np.uint8), self.affine)

    def unmask(self, values: np.ndarray) -> nib.Nifti1Image:
        """Image of in-mask ``values`` (zero outside the brain)."""
        vol = np.zeros(self.shape, dtype=np.float32)
        vol[self.mask] = np.asarray(values, dtype=np.float32)
        return nib.Nifti1Image(vol, self.affine)

    def mm_to_ijk(self, xyz: np.ndarray) -> np.ndarray:
        """Nearest voxel of MNI coordinates (round half to even, as NiMARE's ``mm2vox``)."""
        inv = np.linalg.inv(self.affine)
        ijk = np.asarray(xyz, float) @ inv[:3, :3].T + inv[:3, 3]
        return np.round(ijk).astype(np.int64)


def mni_brain_grid(resolution: float = 2.0) -> BrainGrid:
    """The ICBM152 2009 brain-mask grid at ``resolution`` mm (from nilearn).

    nilearn resamples its 1 mm template on every call (about a second), so the grid is
    memoised per resolution (:func:`_mni_brain_grid`); treat it as read-only.
    """
    return _mni_brain_grid(float(resolution))


@functools.lru_cache(maxsize=4)
def _mni_brain_grid(resolution: float) -> BrainGrid:
    from nilearn.datasets import load_mni152_brain_mask

    if float(resolution) != int(resolution):
        raise InputError(f"The 'resolution' parameter must be a whole number of mm. Got "
                         f"{resolution!r} instead.", file="parameter resolution",
                         fix="Pass 1, 2, 3 or 4 (mm).")
    img = load_mni152_brain_mask(resolution=int(resolution))
    mask = np.asarray(img.get_fdata()) > 0
    flat = np.full(mask.size, -1, dtype=np.int32)
    flat[mask.ravel()] = np.arange(int(mask.sum()), dtype=np.int32)
    mask.setflags(write=False)
    flat.setflags(write=False)
    return BrainGrid(tuple(int(s) for s in mask.shape), np.asarray(img.affine, float), mask, flat)


def load_image(img: str | Path | nib.Nifti1Image, what: str) -> nib.spatialimages.SpatialImage:
    """Load ``img`` as a 3-D image or raise InputError naming the file."""
    if isinstance(img, nib.spatialimages.SpatialImage):
        out = img
        name = f"<{what} image>"
    else:
        name = str(img)
        if not Path(img).exists():
            raise InputError(f"The {what} image does not exist.", file=name,
                             fix=f"Pass the path of an existing NIfTI {what} image.")
        try:
            out = nib.load(str(img))
        except Exception as exc:  # noqa: BLE001 - nibabel raises many types for bad files
            raise InputError(f"The {what} image cannot be read ({exc}).", file=name,
                             fix="Pass a valid NIfTI file (.nii or .nii.gz).") from exc
    if len(out.shape) == 4 and out.shape[3] == 1:
        out = nib.Nifti1Image(np.asarray(out.dataobj)[..., 0], out.affine)
    if len(out.shape) != 3:
        raise InputError(f"The {what} image must be 3-D; it has shape {out.shape}.", file=name,
                         fix=f"Pass a single 3-D {what} volume in MNI space.")
    return out


def to_grid(img: nib.spatialimages.SpatialImage, grid: BrainGrid,
            interpolation: str) -> np.ndarray:
    """Resample ``img`` onto ``grid`` and return its in-mask values (NaN -> 0)."""
    from nilearn.image import resample_img

    data = np.asarray(img.dataobj, dtype=np.float32)
    data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    src = nib.Nifti1Image(data, img.affine)
    if img.shape == grid.shape and np.allclose(img.affine, grid.affine):
        vol = data
    else:
        vol = np.asarray(resample_img(src, target_affine=grid.affine, target_shape=grid.shape,
                                      interpolation=interpolation, force_resample=True,
                                      copy_header=True).dataobj)
    return np.asarray(vol[grid.mask], dtype=np.float32)


def roi_voxels(mask_img: str | Path | nib.Nifti1Image, grid: BrainGrid) -> np.ndarray:
    """In-mask voxel indices of a binary ROI (nonzero voxels, nearest-neighbour resampled)."""
    img = load_image(mask_img, "ROI")
    values = to_grid(img, grid, "nearest")
    idx = np.flatnonzero(values != 0)
    if idx.size == 0:
        name = str(mask_img) if not isinstance(mask_img, nib.spatialimages.SpatialImage) \
            else "<ROI image>"
        raise InputError("The ROI has no voxel inside the MNI brain mask.", file=name,
                         fix="Pass a non-empty ROI mask in MNI space (nonzero = inside).")
    return idx.astype(np.int64)


def atlas_roi(atlas_img: str | Path, labels: list[int] | tuple[int, ...]) -> nib.Nifti1Image:
    """Binary ROI image of the union of ``labels`` in a label atlas (NaN background ok)."""
    img = load_image(atlas_img, "atlas")
    data = np.nan_to_num(np.asarray(img.dataobj, dtype=np.float32), nan=0.0)
    roi = np.isin(np.rint(data).astype(np.int64), np.asarray(labels, dtype=np.int64))
    return nib.Nifti1Image(roi.astype(np.uint8), img.affine)
