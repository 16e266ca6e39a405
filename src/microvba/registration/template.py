"""The MNI152 template and the analysis grid.

microvba normalises to the ICBM152 2009a nonlinear *symmetric* template shipped with nilearn
(``mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a``; TemplateFlow identifier
``MNI152NLin2009aSym``), so everything works offline. The T1 is skull-stripped and rescaled to
[0, 1]; GM and WM are tissue probabilities. nilearn ships no CSF map, so CSF is derived as

.. math:: p_{CSF} = \\mathbb{1}_{brain} \\, \\max(0, 1 - p_{GM} - p_{WM})

inside the brain mask (T1 > 0.2, nilearn's ``load_mni152_brain_mask``), which contains the
ventricles and sulcal CSF.

References
----------
Fonov V. et al. (2011) Unbiased average age-appropriate atlases for pediatric studies.
NeuroImage 54(1), 313-327.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from .._validation import check_in_range
from ..io.derivatives import SPACE_MNI

#: template T1 intensity above which a voxel is brain (nilearn's default)
BRAIN_THRESHOLD = 0.2


@dataclass(frozen=True)
class Template:
    """The template images on one analysis grid (all share ``affine`` and ``shape``).

    Attributes
    ----------
    t1, gm, wm, csf : nibabel.Nifti1Image
        T1-weighted intensity in [0, 1] and tissue probabilities in [0, 1] (float32).
    brain_mask : nibabel.Nifti1Image
        Brain mask (uint8, 0/1).
    space : str
        BIDS ``space-`` identifier (``MNI152NLin2009aSym``).
    resolution : float
        Voxel size in mm (isotropic).
    """

    t1: nib.Nifti1Image
    gm: nib.Nifti1Image
    wm: nib.Nifti1Image
    csf: nib.Nifti1Image
    brain_mask: nib.Nifti1Image
    space: str
    resolution: float

    @property
    def affine(self) -> np.ndarray:
        """Voxel-to-MNI (mm) affine of the analysis grid."""
        return self.t1.affine.copy()

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of the analysis grid."""
        return tuple(int(n) for n in self.t1.shape[:3])

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        """Voxel size in mm."""
        return tuple(float(v) for v in nib.affines.voxel_sizes(self.t1.affine))

    def image(self, data: np.ndarray, dtype: type = np.float32) -> nib.Nifti1Image:
        """Wrap an array of the grid's shape in a NIfTI image on the template grid."""
        img = nib.Nifti1Image(np.asarray(data, dtype=dtype), self.affine)
        img.header.set_xyzt_units("mm")
        return img


def load_template(resolution: float = 2.0) -> Template:
    """Load the MNI152 2009a template resampled to an isotropic ``resolution`` (mm).

    Parameters
    ----------
    resolution
        Voxel size of the analysis grid in mm (default 2; 1 is the native template grid).

    Returns
    -------
    Template
        Cached per process and resolution: repeated calls return the same object.
    """
    resolution = check_in_range("resolution", resolution, 0.5, 8.0)
    return _load_template(round(resolution, 3))


@functools.lru_cache(maxsize=4)
def _load_template(resolution: float) -> Template:
    from nilearn import datasets

    # nilearn resamples to integer resolutions only; other sizes are resampled here, the
    # same way (``resample_img`` to a diagonal affine, which keeps the field of view)
    res = int(resolution) if float(resolution).is_integer() else 1
    t1 = datasets.load_mni152_template(resolution=res)
    gm = datasets.load_mni152_gm_template(resolution=res)
    wm = datasets.load_mni152_wm_template(resolution=res)
    if res != resolution:
        from nilearn.image import resample_img

        t1 = resample_img(t1, target_affine=np.eye(3) * resolution, interpolation="linear",
                          copy_header=True, force_resample=True)
    affine = t1.affine
    arrays = {}
    for name, img in (("t1", t1), ("gm", gm), ("wm", wm)):
        if img.shape[:3] != t1.shape[:3] or not np.allclose(img.affine, affine):
            from nilearn.image import resample_to_img

            img = resample_to_img(img, t1, interpolation="linear", copy_header=True,
                                  force_resample=True)
        arrays[name] = np.asarray(img.get_fdata(), dtype=np.float32)
    mask = arrays["t1"] > BRAIN_THRESHOLD  # as nilearn's load_mni152_brain_mask
    gm_p = np.clip(arrays["gm"], 0.0, 1.0)
    wm_p = np.clip(arrays["wm"], 0.0, 1.0)
    csf_p = np.where(mask, np.clip(1.0 - gm_p - wm_p, 0.0, 1.0), 0.0)

    def wrap(data: np.ndarray, dtype: type = np.float32) -> nib.Nifti1Image:
        img = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
        img.header.set_xyzt_units("mm")
        return img

    return Template(
        t1=wrap(np.clip(arrays["t1"], 0.0, 1.0)),
        gm=wrap(gm_p),
        wm=wrap(wm_p),
        csf=wrap(csf_p),
        brain_mask=wrap(mask, np.uint8),
        space=SPACE_MNI,
        resolution=float(resolution),
    )
