"""Per-subject means of metric images over clusters (or any labelled regions).

Images are read one volume at a time (a 4-D proxy is sliced lazily), so memory stays at one
volume plus the (n_subjects, n_voxels) matrix of the voxels that are needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import nibabel as nib
import numpy as np
import pandas as pd

from .._validation import InputError
from ..io import derivatives


def _volumes(subject_imgs) -> tuple[list, np.ndarray | None]:
    """Iterate over subject volumes lazily: (list of getters, affine)."""
    if isinstance(subject_imgs, np.ndarray):
        if subject_imgs.ndim != 4:
            raise InputError(f"a subject array must be 4-D (x, y, z, subject); got "
                             f"{subject_imgs.ndim}-D", file="parameter subject_imgs",
                             fix="Stack the subjects on the last axis.")
        return [lambda i=i: subject_imgs[..., i] for i in range(subject_imgs.shape[3])], None
    if isinstance(subject_imgs, nib.spatialimages.SpatialImage):
        if subject_imgs.ndim == 3:
            return [lambda: np.asarray(subject_imgs.dataobj)], subject_imgs.affine
        if subject_imgs.ndim != 4:
            raise InputError("a subject image must be 3-D or 4-D (subjects last)",
                             file="parameter subject_imgs", fix="Pass a 4-D image.")
        return ([lambda i=i: np.asarray(subject_imgs.dataobj[..., i])
                 for i in range(subject_imgs.shape[3])], subject_imgs.affine)
    imgs = list(subject_imgs)
    for img in imgs:
        if not isinstance(img, nib.spatialimages.SpatialImage) or len(img.shape) != 3:
            raise InputError("subject_imgs must be 3-D images, one per subject",
                             file="parameter subject_imgs",
                             fix="Pass a list of 3-D nibabel images or one 4-D image.")
    return [lambda img=img: np.asarray(img.dataobj) for img in imgs], imgs[0].affine if imgs \
        else None


def subject_matrix(subject_imgs, mask: np.ndarray) -> np.ndarray:
    """(n_subjects, n_voxels) float64 matrix of the voxels in ``mask`` (C order)."""
    getters, _ = _volumes(subject_imgs)
    mask = np.asarray(mask, dtype=bool)
    out = np.empty((len(getters), int(mask.sum())))
    for i, get in enumerate(getters):
        vol = get()
        if vol.shape[:3] != mask.shape:
            raise InputError(f"subject {i}'s image has shape {vol.shape}, the mask/label "
                             f"image {mask.shape}", file="parameter subject_imgs",
                             fix="Resample all images onto one grid (the statistic map's).")
        out[i] = vol[mask]
    return out


def cluster_means(subject_imgs, label_img, subjects: Sequence[str] | None = None
                  ) -> pd.DataFrame:
    """Mean of each subject's image over each cluster (NaN voxels ignored).

    Parameters
    ----------
    subject_imgs
        List of 3-D images, one 4-D image (subjects last) or a 4-D array.
    label_img
        Integer image (or array): cluster ``k`` is where it equals ``k``.
    subjects
        Row labels (default 0..n-1).

    Returns
    -------
    pandas.DataFrame
        subject x ``cluster_<k>``.
    """
    labels = np.asarray(getattr(label_img, "dataobj", label_img)).astype(np.int64)
    ids = np.unique(labels[labels > 0])
    Y = subject_matrix(subject_imgs, labels > 0)
    lab = labels[labels > 0]
    cols = {}
    for cid in ids:
        with np.errstate(invalid="ignore"):
            cols[derivatives.cluster_mean_column(cid)] = (
                np.nanmean(Y[:, lab == cid], axis=1) if len(Y) else [])
    index = pd.Index(list(subjects) if subjects is not None else range(len(Y)), name="subject")
    if len(index) != len(Y):
        raise InputError(f"{len(index)} subject labels for {len(Y)} images",
                         file="parameter subjects", fix="Pass one label per image.")
    return pd.DataFrame(cols, index=index)
