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
from typing import TYPE_CHECKING

import numpy as np

from .. import _paths
from .._logging import get_logger
from .._validation import InputError

if TYPE_CHECKING:
    import nibabel as nib


log = get_logger(__name__)


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
        import nibabel as nib

        return nib.Nifti1Image(self.mask.astype(np.uint8), self.affine)

    def unmask(self, values: np.ndarray) -> nib.Nifti1Image:
        """Image of in-mask ``values`` (zero outside the brain)."""
        import nibabel as nib

        vol = np.zeros(self.shape, dtype=np.float32)
        vol[self.mask] = np.asarray(values, dtype=np.float32)
        return nib.Nifti1Image(vol, self.affine)

    def mm_to_ijk(self, xyz: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Nearest voxel of MNI coordinates (round half to even, as NiMARE's ``mm2vox``).

        ``out``: an (n, 3) float64 scratch array for the voxel coordinates (no temporaries
        on axis-aligned grids)."""
        inv = np.linalg.inv(self.affine)
        xyz = np.asarray(xyz, float).reshape(-1, 3)
        if np.count_nonzero(inv[:3, :3] - np.diag(np.diag(inv[:3, :3]))) == 0:
            # axis-aligned grid (the MNI grids): one scale and shift per axis, the same
            # values as the matrix product (its other terms are exact zeros) without a
            # BLAS call on (n, 3) arrays, which costs ~0.3 s for the 500,000 peaks
            ijk = np.multiply(xyz, np.diag(inv)[:3], out=out)
            ijk += inv[:3, 3]
        else:
            ijk = xyz @ inv[:3, :3].T + inv[:3, 3]
        return np.round(ijk, out=ijk).astype(np.int64)


def mni_brain_grid(resolution: float = 2.0, cache_dir: str | Path | None = None) -> BrainGrid:
    """The ICBM152 2009 brain-mask grid at ``resolution`` mm (from nilearn).

    nilearn resamples its 1 mm template on every call (about a second, plus the import of
    ``nilearn.datasets``), so the grid is memoised per resolution in the process and stored
    in the map cache (``cache_dir``, default ``$MICROVBA_CACHE`` or
    ``~/.cache/microvba/maps``) as ``mni152-brain-mask_res-<r>mm_nilearn-<version>.npz``;
    treat it as read-only.
    """
    return _mni_brain_grid(float(resolution), str(_paths.cache_dir(cache_dir)))


def _nilearn_version() -> str:
    from importlib.metadata import version

    return version("nilearn")


@functools.lru_cache(maxsize=4)
def _mni_brain_grid(resolution: float, cache_root: str) -> BrainGrid:
    if float(resolution) != int(resolution):
        raise InputError(f"The 'resolution' parameter must be a whole number of mm. Got "
                         f"{resolution!r} instead.", file="parameter resolution",
                         fix="Pass 1, 2, 3 or 4 (mm).")
    path = Path(cache_root) / (f"mni152-brain-mask_res-{int(resolution)}mm_nilearn-"
                               f"{_nilearn_version()}.npz")
    mask = affine = None
    if path.is_file():
        try:
            with np.load(path) as f:
                mask, affine = f["mask"].astype(bool), f["affine"].astype(float)
        except (OSError, ValueError, KeyError):
            mask = None
    if mask is None:
        from nilearn.datasets import load_mni152_brain_mask

        img = load_mni152_brain_mask(resolution=int(resolution))
        mask = np.asarray(img.get_fdata()) > 0
        affine = np.asarray(img.affine, float)
        try:
            from .._provenance import atomic_path

            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, mask=mask, affine=affine)
        except OSError as exc:  # a read-only cache is not an error
            log.debug("brain-mask grid not cached (%s)", exc)
    flat = np.full(mask.size, -1, dtype=np.int32)
    flat[mask.ravel()] = np.arange(int(mask.sum()), dtype=np.int32)
    mask.setflags(write=False)
    flat.setflags(write=False)
    return BrainGrid(tuple(int(s) for s in mask.shape), affine, mask, flat)


def load_image(img: str | Path | nib.Nifti1Image, what: str) -> nib.spatialimages.SpatialImage:
    """Load ``img`` as a 3-D image or raise InputError naming the file."""
    import nibabel as nib

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


def fov_coverage(img: nib.spatialimages.SpatialImage, grid: BrainGrid) -> float:
    """Fraction of the grid's brain voxels that fall inside ``img``'s field of view."""
    import nibabel as nib

    ijk = np.argwhere(grid.mask)[::7]  # a sample is enough
    src = nib.affines.apply_affine(np.linalg.inv(img.affine) @ grid.affine, ijk)
    shape = np.asarray(img.shape[:3])
    inside = np.all((src > -0.5) & (src < shape - 0.5), axis=1)
    return float(inside.mean())


def to_grid(img: nib.spatialimages.SpatialImage, grid: BrainGrid,
            interpolation: str) -> np.ndarray:
    """Resample ``img`` onto ``grid`` and return its in-mask values (NaN -> 0)."""
    return np.asarray(to_grid_volume(img, grid, interpolation)[grid.mask], dtype=np.float32)


def to_grid_volume(img: nib.spatialimages.SpatialImage, grid: BrainGrid,
                   interpolation: str) -> np.ndarray:
    """Resample ``img`` onto ``grid``: the whole volume, inside and outside the brain."""
    import nibabel as nib

    raw = np.asarray(img.dataobj)
    data = np.asarray(raw, dtype=np.float32)
    if np.issubdtype(raw.dtype, np.floating):  # integers (masks, labels) have no NaN
        data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    if img.shape == grid.shape and np.allclose(img.affine, grid.affine):
        return data
    # on the grid the coverage is complete by construction
    coverage = fov_coverage(img, grid)
    if coverage < 0.5:
        log.warning("the image (shape %s, voxel %s mm) covers only %.0f%% of the MNI "
                    "brain: is it in MNI space? Values outside its field of view count "
                    "as 0", tuple(img.shape),
                    "x".join(f"{z:g}" for z in img.header.get_zooms()[:3]), 100 * coverage)
    if interpolation == "nearest":
        return resample_nearest(data, img.affine, grid)
    from nilearn.image import resample_img

    src = nib.Nifti1Image(data, img.affine)
    return np.asarray(resample_img(src, target_affine=grid.affine, target_shape=grid.shape,
                                   interpolation=interpolation, force_resample=True,
                                   copy_header=True).dataobj)


def resample_nearest(data: np.ndarray, affine: np.ndarray, grid: BrainGrid) -> np.ndarray:
    """Nearest-neighbour resampling of ``data`` (voxel -> mm ``affine``) onto ``grid``: the
    value of the source voxel nearest to each grid voxel centre, 0 outside the source.

    The same :func:`scipy.ndimage.affine_transform` (order 0, constant 0) that nilearn's
    ``resample_img(interpolation="nearest")`` runs, without importing nilearn.image (about
    a second, with scikit-learn) on the command line's ROI path.
    """
    from scipy import ndimage

    a = np.linalg.inv(np.asarray(affine, float)) @ np.asarray(grid.affine, float)
    return ndimage.affine_transform(np.asarray(data, np.float32), a[:3, :3], offset=a[:3, 3],
                                    output_shape=grid.shape, order=0, mode="constant",
                                    cval=0.0)


#: an ROI covering more than this fraction of the brain mask is refused (not a region)
MAX_ROI_FRACTION = 0.5


def _image_name(img: object, what: str) -> str:
    import nibabel as nib

    return str(img) if not isinstance(img, nib.spatialimages.SpatialImage) else f"<{what} image>"


#: an integer ROI with at least this many levels, all <= 100, graded between neighbouring
#: voxels (:func:`looks_like_percent_map`) is taken for an integer-percent probability map
PROB_MIN_LEVELS = 10


def neighbour_steps(data: np.ndarray) -> tuple[float, float]:
    """Over face-adjacent voxel pairs, both nonzero: the fraction holding the same value and
    the median absolute step between those that differ (a label atlas: homogeneous regions,
    ~0.9-0.95 equal, arbitrary steps between labels, median 8 in Brainnetome; a percent
    probability map: ~0.3-0.6 equal, steps of 1-2)."""
    data = np.asarray(data, dtype=np.float64)
    nz = data != 0
    same = total = 0
    steps = []
    for axis in range(data.ndim):
        lo = [slice(None)] * data.ndim
        hi = [slice(None)] * data.ndim
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        both = nz[tuple(lo)] & nz[tuple(hi)]
        diff = np.abs(data[tuple(lo)] - data[tuple(hi)])[both]
        total += diff.size
        same += int((diff == 0).sum())
        steps.append(diff[diff != 0])
    steps = np.concatenate(steps) if steps else np.zeros(0)
    return (same / total if total else 1.0,
            float(np.median(steps)) if steps.size else np.inf)


def looks_like_percent_map(data: np.ndarray) -> bool:
    """True for an integer image that looks like a probability map in percent (0-100):
    at least :data:`PROB_MIN_LEVELS` levels, none above 100, and graded between neighbours
    (:func:`neighbour_steps`: fewer than half the pairs equal, or fewer than 85 % equal
    with a median step of at most 2), unlike the homogeneous regions of a label atlas."""
    data = np.nan_to_num(np.asarray(data, dtype=np.float64))
    values = data[data != 0]
    if data.ndim != 3 or values.size == 0 or values.max() > 100 or values.min() < 0:
        return False
    if np.unique(values).size < PROB_MIN_LEVELS:
        return False
    equal, step = neighbour_steps(data)
    return equal < 0.5 or (equal < 0.85 and step <= 2)


def check_roi_values(data: np.ndarray, name: str, warn_labels: bool = True,
                     labels_ok: bool = False) -> None:
    """InputError unless the ROI holds a mask or labels: integers >= 0 (0 = outside).

    A statistic map (negative or fractional values) or a probability map given as an ROI
    would otherwise be decoded as "every nonzero voxel", i.e. most of the brain. An
    integer-percent probability map (0-100, :func:`looks_like_percent_map`) is refused as
    well (it would be decoded as the union of ~99 "labels"), unless ``labels_ok`` (the
    labels were asked for explicitly).
    """
    values = np.asarray(data[np.isfinite(data) & (data != 0)], dtype=np.float64)
    if values.size == 0:
        return
    fractional = np.abs(values - np.rint(values)) > 1e-3
    if values.min() < 0 or fractional.any():
        raise InputError(
            f"The ROI holds continuous values ({values.min():.3g} to {values.max():.3g}, "
            f"{int(fractional.sum())} non-integer voxel(s)"
            f"{', some negative' if values.min() < 0 else ''}): it looks like a statistic or "
            "probability map, not a mask.", file=name,
            fix="Pass an unthresholded map with --map, or binarise it first (e.g. "
                "fslmaths stat -thr 3.1 -bin roi, or -thr 0.5 -bin for a probability map).")
    labels = np.unique(values)
    if not labels_ok and labels.size > 1 and looks_like_percent_map(data):
        raise InputError(
            f"The ROI looks like an integer-percent probability map ({labels.size} levels "
            f"from {labels.min():g} to {labels.max():g}, graded between neighbouring "
            "voxels), not a mask: its nonzero voxels would be decoded as the union of "
            f"{labels.size} labels.", file=name,
            fix="Pass --roi-threshold P to decode the voxels with probability >= P percent "
                "(e.g. --roi-threshold 50), or --labels L [L ...] if the values really are "
                "labels.")
    if labels.size > 1 and warn_labels:
        log.warning("%s: the ROI holds %d different labels (%s); their union is decoded "
                    "(extract one label for a single region)", name, labels.size,
                    ", ".join(f"{v:g}" for v in labels[:8]) + (" ..." if labels.size > 8
                                                                else ""))


def select_roi(mask_img: str | Path | nib.Nifti1Image, labels: list[int] | None = None,
               threshold: float | None = None) -> nib.Nifti1Image:
    """Binary ROI from ``mask_img``: the union of ``labels`` (a label atlas), or the voxels
    ``>= threshold`` (a probability map), or the image unchanged when neither is given.

    Raises InputError (naming the file) when the selection is empty.
    """
    import nibabel as nib

    img = load_image(mask_img, "ROI")
    if labels is None and threshold is None:
        return img
    name = _image_name(mask_img, "ROI")
    raw = np.asarray(img.dataobj)  # the stored type: no float64 copy of a 1 mm atlas
    exact = raw.dtype == bool or np.issubdtype(raw.dtype, np.integer)
    if labels is not None:
        # a voxel belongs to label L when its value rounds to L (NaN and inf never do)
        roi = np.isin(raw if exact else np.rint(raw), np.asarray(labels, dtype=np.int64))
        what = f"label(s) {', '.join(str(v) for v in labels)}"
    else:
        roi = (raw if exact else np.nan_to_num(raw)) >= threshold
        what = f"voxels >= {threshold:g}"
    if not roi.any():
        data = np.nan_to_num(np.asarray(raw, dtype=np.float64))
        present = np.unique(data[data != 0])
        raise InputError(f"The ROI image has no {what} (its values run from "
                         f"{present.min() if present.size else 0:g} to "
                         f"{present.max() if present.size else 0:g}).", file=name,
                         fix="Pick labels present in the image, or a lower --roi-threshold.")
    return nib.Nifti1Image(roi.astype(np.uint8), img.affine)


def check_roi_extent(mask_img: str | Path | nib.Nifti1Image, grid: BrainGrid
                     ) -> tuple[np.ndarray, int]:
    """InputError when the ROI covers more than :data:`MAX_ROI_FRACTION` of the brain: a
    brain mask or a map whose background is not 0, given where a region was meant.

    Returns :func:`roi_voxels`'s ``(in-mask voxel indices, voxels outside the mask)``, which
    :meth:`~microvba.decode.decoder.Decoder.decode_roi` takes as ``voxels=`` (the ROI is
    then read and resampled once)."""
    idx, n_outside = roi_voxels(mask_img, grid, return_outside=True)
    if idx.size > MAX_ROI_FRACTION * grid.n_voxels:
        raise InputError(f"The ROI covers {100 * idx.size / grid.n_voxels:.0f}% of the brain "
                         "mask; decoding nearly the whole brain says nothing about a region "
                         "(is this a brain mask, or a map whose background is not 0?).",
                         file=_image_name(mask_img, "ROI"),
                         fix="Pass a region mask (a cluster or an atlas region), or an "
                             "unthresholded map with --map.")
    return idx, n_outside


def roi_voxels(mask_img: str | Path | nib.Nifti1Image, grid: BrainGrid,
               return_outside: bool = False) -> np.ndarray | tuple[np.ndarray, int]:
    """In-mask voxel indices of a binary ROI (nonzero voxels, nearest-neighbour resampled).

    With ``return_outside``, also the number of ROI voxels on the grid that fall outside
    the brain mask (they are not decoded).

    Raises InputError for an ROI with continuous values (see :func:`check_roi_values`) or
    one without a voxel in the brain.
    """
    img = load_image(mask_img, "ROI")
    name = _image_name(mask_img, "ROI")
    source = np.asarray(img.dataobj)
    if source.dtype == bool:
        source = source.view(np.uint8)
    check_roi_values(source, name)
    vol = to_grid_volume(img, grid, "nearest") != 0
    idx = np.flatnonzero(vol[grid.mask])
    n_outside = int(vol.sum()) - idx.size
    if idx.size == 0:
        raise InputError("The ROI has no voxel inside the MNI brain mask.", file=name,
                         fix="Pass a non-empty ROI mask in MNI space (nonzero = inside).")
    zooms = np.abs(np.linalg.det(img.affine[:3, :3]))
    n_source = np.count_nonzero(source)  # NaN counts as 0 (not in the ROI)
    if np.issubdtype(source.dtype, np.floating):
        n_source -= int(np.count_nonzero(np.isnan(source)))
    src_mm3 = n_source * zooms
    in_mm3 = idx.size * abs(np.linalg.det(grid.affine[:3, :3]))
    if src_mm3 > 0 and in_mm3 < 0.5 * src_mm3:
        log.warning("%s: only %.0f%% of the ROI lies inside the MNI brain mask; is it in MNI "
                    "space?", name, 100 * in_mm3 / src_mm3)
    idx = idx.astype(np.int64)
    return (idx, n_outside) if return_outside else idx


def atlas_roi(atlas_img: str | Path, labels: list[int] | tuple[int, ...]) -> nib.Nifti1Image:
    """Binary ROI image of the union of ``labels`` in a label atlas (NaN background ok)."""
    import nibabel as nib

    img = load_image(atlas_img, "atlas")
    data = np.nan_to_num(np.asarray(img.dataobj, dtype=np.float32), nan=0.0)
    roi = np.isin(np.rint(data).astype(np.int64), np.asarray(labels, dtype=np.int64))
    return nib.Nifti1Image(roi.astype(np.uint8), img.affine)
