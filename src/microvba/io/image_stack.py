"""Stacks of images for voxel-wise statistics (``microvba randomise -i``).

:func:`read_image_stack` reads one 4-D image or several 3-D maps inside a mask as a
(n_images, n_voxels) array; :func:`check_subject_order` checks that maps named
``sub-<label>`` follow the rows of the design table.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from .._logging import get_logger
from .._resources import check_memory
from .._validation import InputError
from .nifti_checks import check_image_file

log = get_logger(__name__)


@dataclass(frozen=True)
class ImageStack:
    """In-mask data of a stack of images.

    Attributes
    ----------
    data : (n_images, n_voxels) float32; voxel ``i`` is ``np.flatnonzero(mask)[i]``.
    mask : (X, Y, Z) bool analysis mask (voxels > 0 of the mask image).
    img : the first input image (its affine and header place the output maps).
    """

    data: np.ndarray
    mask: np.ndarray
    img: nib.Nifti1Image


def read_image_stack(inputs: Sequence[str | Path], mask: str | Path) -> ImageStack:
    """Read the in-mask voxels of a stack of images as a (n_images, n_voxels) float32 array.

    ``inputs`` is one 4-D NIfTI (one volume per image) or several 3-D maps on one grid; every
    file is checked first (:func:`microvba.io.nifti_checks.check_image_file`: readable, size
    against the file and memory, gzip CRC, truncation, voxel sizes), then the grids and the
    mask (same shape and affine within 1e-3 mm, not empty; a non-binary mask is analysed at
    > 0 with a warning). Problems raise :class:`~microvba._validation.InputError` naming the
    file.
    """
    inputs = [Path(p) for p in inputs]
    mask_path = Path(mask)
    for path in (*inputs, mask_path):
        if not Path(path).is_file():
            raise InputError("file not found", file=path, fix="Check the path.")

    def load(path: Path):
        # readable, size vs file and memory (the mask is read as float64), gzip CRC,
        # truncation, voxel sizes
        check_image_file(path, signal=False, itemsize=8 if path == mask_path else 4)
        try:
            return nib.load(str(path))
        except Exception as exc:  # noqa: BLE001 - nibabel raises many types for bad files
            raise InputError(f"cannot read the image ({exc})", file=path,
                             fix="Pass readable NIfTI files.") from exc

    imgs = [load(p) for p in inputs]
    mask_img = load(mask_path)
    # the data of every input as float32 together (the stacked subjects x voxels array)
    total = sum(int(np.prod(im.shape, dtype=np.float64)) for im in imgs) * 4
    check_memory(int(total), "reading the input images", inputs[0] if len(inputs) == 1
                 else "inputs", "Analyse fewer or smaller images (e.g. a coarser grid), or "
                                "run on a machine with more memory.")
    if len(imgs) == 1:
        img = imgs[0]
        if len(img.shape) != 4:
            raise InputError(f"the input must be 4-D (one volume per subject), or several 3-D "
                             f"maps; shape {img.shape}", file=inputs[0],
                             fix="Merge the subjects' maps into a 4-D image, or pass one 3-D "
                                 "map per subject after -i.")
    else:
        for p, im in zip(inputs, imgs, strict=True):
            if not (len(im.shape) == 3 or (len(im.shape) == 4 and im.shape[3] == 1)):
                raise InputError(f"with several inputs each must be a 3-D map; shape "
                                 f"{im.shape}", file=p,
                                 fix="Pass one 3-D map per subject, or a single 4-D image.")
            if tuple(im.shape[:3]) != tuple(imgs[0].shape[:3]) or not np.allclose(
                    im.affine, imgs[0].affine, atol=1e-3):
                raise InputError(f"grid {im.shape[:3]} / affine differs from the first input "
                                 f"{inputs[0]} {imgs[0].shape[:3]}", file=p,
                                 fix="Pass maps on one grid (e.g. all normalised to the same "
                                     "template at the same resolution).")
        img = imgs[0]
    mask_shape = mask_img.shape[:3] if len(mask_img.shape) == 4 and mask_img.shape[3] == 1 \
        else mask_img.shape
    if tuple(mask_shape) != tuple(img.shape[:3]):
        raise InputError(f"mask shape {mask_img.shape} differs from the image grid "
                         f"{img.shape[:3]}", file=mask_path,
                         fix="Resample the mask to the images' grid.")
    if not np.allclose(mask_img.affine, img.affine, atol=1e-3):
        raise InputError("the mask's affine differs from the images' affine", file=mask_path,
                         fix="Use a mask in the same space and grid as the images.")
    try:
        mask_array = np.nan_to_num(np.asarray(mask_img.dataobj, dtype=np.float64)
                             ).reshape(mask_shape) > 0
        if len(imgs) == 1:
            Y = np.asarray(img.dataobj, dtype=np.float32)[mask_array].T.copy()
        else:
            Y = np.stack([np.asarray(im.dataobj, dtype=np.float32).reshape(mask_shape)[mask_array]
                          for im in imgs])
    except (OSError, EOFError, ValueError) as exc:
        raise InputError(f"truncated or corrupt image data ({type(exc).__name__}: {exc})",
                         file=inputs[0] if len(inputs) == 1 else "inputs",
                         fix="Copy or re-export the image files.") from exc
    if not mask_array.any():
        raise InputError("the mask is empty", file=mask_path, fix="Use a non-empty mask.")
    raw = np.asarray(mask_img.dataobj, dtype=np.float64)
    values = np.unique(raw[np.isfinite(raw)])
    if not np.isin(values, (0.0, 1.0)).all():
        log.warning(
            "%s: the mask is not binary (values %g to %g); every voxel > 0 is analysed "
            "(threshold a probability map first, e.g. fslmaths gm -thr 0.3 -bin mask)",
            mask_path, values.min(), values.max())
    return ImageStack(data=Y, mask=mask_array, img=img)



def _nifti_stem(path: Path) -> str:
    name = Path(path).name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def subject_of(path: Path) -> str | None:
    """``sub-<label>`` named in a file name, or None."""
    m = re.search(r"(?:^|_)(sub-[A-Za-z0-9]+)", _nifti_stem(path))
    return m.group(1) if m else None


def check_subject_order(inputs: Sequence[Path], design: pd.DataFrame, design_path: Path
                        ) -> None:
    """With one 3-D map per subject named ``sub-<label>...``, check the design rows follow the
    same subjects in the same order (a silent mismatch would shuffle the scores)."""
    subjects = [subject_of(p) for p in inputs]
    if design.index.name != "participant_id" or any(s is None for s in subjects):
        return
    rows = [r if r.startswith("sub-") else f"sub-{r}" for r in design.index]
    if subjects == rows:
        return
    if sorted(subjects) == sorted(rows):
        first = next(i for i, (a, b) in enumerate(zip(subjects, rows, strict=True)) if a != b)
        raise InputError(f"the design rows are in another order than the input images (image "
                         f"{first + 1} is {subjects[first]}, design row {first + 1} is "
                         f"{rows[first]})", file=design_path,
                         fix="List the images in the order of the design rows (or sort the "
                             "design rows like the images).")
    missing = [s for s in subjects if s not in rows]
    extra = [r for r in rows if r not in subjects]
    if len(missing) == len(subjects):  # another naming scheme: nothing to compare
        log.warning("the input file names (%s, ...) and the design's participant_id (%s, ...) "
                    "share no subject; the order cannot be checked", subjects[0], rows[0])
        return
    raise InputError(f"the input images and the design rows name different subjects (images "
                     f"without a row: {missing[:10]}; rows without an image: {extra[:10]})",
                     file=design_path,
                     fix="Give one design row per image, for the same subjects.")
