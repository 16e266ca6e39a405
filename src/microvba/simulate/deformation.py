"""Known smooth random deformations plus rigid motion, to make simulated subjects.

A :class:`Warp` maps a point :math:`y` of a subject's native space (mm) to the template
(MNI, mm):

.. math:: \\phi(y) = z + u(z), \\qquad z = R\\,y,

where :math:`R` is a rigid transform (rotation about the centre of the reference grid, then a
translation) and :math:`u` a smooth displacement field defined on the reference (template)
grid: Gaussian-smoothed white noise, scaled so that :math:`\\max \\lVert u \\rVert` equals
``max_displacement_mm``. A subject's image is the template image pulled back through
:math:`\\phi`, :math:`I_{subj}(y) = I_{MNI}(\\phi(y))` (:meth:`Warp.apply`). The inverse,
needed to locate a planted MNI coordinate in the subject and to bring a subject image back to
MNI space (:meth:`Warp.inverse_apply`), solves :math:`z + u(z) = x` by the fixed-point
iteration :math:`z_{k+1} = x - u(z_k)`, which converges when :math:`\\lVert \\nabla u \\rVert
< 1` (true for the smooth, few-mm fields used here; :attr:`Warp.max_jacobian_norm` reports it).

References
----------
Ashburner J. (2007) A fast diffeomorphic image registration algorithm. NeuroImage 38, 95-113
(the smooth-deformation model of inter-subject variability).
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage

from .._validation import InputError, check_in_range

_FWHM_TO_SIGMA = 1.0 / np.sqrt(8.0 * np.log(2.0))


def _rotation_matrix(angles_rad: np.ndarray) -> np.ndarray:
    ax, ay, az = angles_rad
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _grid_points(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """World coordinates (mm) of every voxel of a grid, shape ``(n, 3)``, C order."""
    ijk = np.indices(shape[:3], dtype=np.float32).reshape(3, -1).T
    return nib.affines.apply_affine(affine, ijk).astype(np.float64)


@dataclass(frozen=True)
class Warp:
    """A subject -> template mapping :math:`\\phi(y) = R y + u(R y)` (see module docstring).

    Attributes
    ----------
    reference_affine, reference_shape
        Grid on which the displacement field is sampled (the template grid).
    displacement
        ``reference_shape + (3,)`` float32 field :math:`u` in mm (world axes, RAS).
    rigid
        4x4 rigid transform :math:`R` (subject mm -> pre-warp template mm).
    subject_affine, subject_shape
        Grid of the images :meth:`apply` produces (default: the reference grid).
    """

    reference_affine: np.ndarray
    reference_shape: tuple[int, int, int]
    displacement: np.ndarray
    rigid: np.ndarray
    subject_affine: np.ndarray
    subject_shape: tuple[int, int, int]

    # -- point mappings -------------------------------------------------------------------
    def _u(self, points: np.ndarray) -> np.ndarray:
        """Displacement (mm) at world points ``(n, 3)``, trilinear, 0 outside the grid."""
        vox = nib.affines.apply_affine(np.linalg.inv(self.reference_affine), points).T
        return np.stack([ndimage.map_coordinates(self.displacement[..., k], vox, order=1,
                                                 mode="nearest") for k in range(3)], axis=1)

    def to_template(self, points_mm: np.ndarray) -> np.ndarray:
        """Map subject-space points (mm, ``(n, 3)`` or ``(3,)``) to template (MNI) mm."""
        pts = np.atleast_2d(np.asarray(points_mm, dtype=np.float64))
        z = nib.affines.apply_affine(self.rigid, pts)
        out = z + self._u(z)
        return out.reshape(np.shape(points_mm))

    def to_subject(self, points_mm: np.ndarray, n_iter: int = 50, tol_mm: float = 1e-3
                   ) -> np.ndarray:
        """Map template (MNI) points (mm) into subject space: :math:`\\phi^{-1}(x)`.

        Fixed-point iterations stop when no point moves more than ``tol_mm``.
        """
        x = np.atleast_2d(np.asarray(points_mm, dtype=np.float64))
        z = x - self._u(x)
        for _ in range(n_iter):
            z_new = x - self._u(z)
            step = float(np.abs(z_new - z).max())
            z = z_new
            if step < tol_mm:
                break
        y = nib.affines.apply_affine(np.linalg.inv(self.rigid), z)
        return y.reshape(np.shape(points_mm))

    @property
    def max_jacobian_norm(self) -> float:
        """Largest Frobenius norm of :math:`\\nabla u` (< 1 guarantees an invertible warp)."""
        vox = nib.affines.voxel_sizes(self.reference_affine)
        norms = np.zeros(self.reference_shape, dtype=np.float64)
        for k in range(3):
            for g in np.gradient(self.displacement[..., k], *vox):
                norms += g.astype(np.float64) ** 2
        return float(np.sqrt(norms.max()))

    # -- image resampling -----------------------------------------------------------------
    def apply(self, img: nib.spatialimages.SpatialImage, order: int = 1) -> nib.Nifti1Image:
        """Pull a template-space image back into subject space: :math:`I(\\phi(y))`.

        Parameters
        ----------
        img
            Image in template (MNI) space, any grid; 3-D or 4-D (volumes last).
        order
            Spline order (0 nearest neighbour for labels, 1 trilinear).
        """
        targets = self.to_template(_grid_points(self.subject_affine, self.subject_shape))
        return _resample_at(img, targets, self.subject_affine, self.subject_shape, order)

    def inverse_apply(self, img: nib.spatialimages.SpatialImage, order: int = 1
                      ) -> nib.Nifti1Image:
        """Push a subject-space image to the reference grid: :math:`I(\\phi^{-1}(x))`."""
        targets = self.to_subject(_grid_points(self.reference_affine, self.reference_shape))
        return _resample_at(img, targets, self.reference_affine, self.reference_shape, order)

    def with_subject_affine(self, affine: np.ndarray) -> Warp:
        """Same warp, images produced with another subject-grid affine (same shape)."""
        return Warp(self.reference_affine, self.reference_shape, self.displacement,
                    self.rigid, np.asarray(affine, dtype=np.float64), self.subject_shape)


def _resample_at(img: nib.spatialimages.SpatialImage, points_mm: np.ndarray,
                 out_affine: np.ndarray, out_shape: tuple[int, int, int],
                 order: int) -> nib.Nifti1Image:
    """Sample ``img`` at world points (one per output voxel, C order); 0 outside."""
    data = np.asanyarray(img.dataobj)
    vox = nib.affines.apply_affine(np.linalg.inv(img.affine), points_mm).T
    vols = data[..., None] if data.ndim == 3 else data
    out = np.empty(tuple(out_shape) + (vols.shape[-1],), dtype=np.float32)
    for v in range(vols.shape[-1]):
        out[..., v] = ndimage.map_coordinates(
            np.asarray(vols[..., v], dtype=np.float32), vox, order=order, mode="constant",
            cval=0.0, prefilter=order > 1).reshape(out_shape)
    if data.ndim == 3:
        out = out[..., 0]
    result = nib.Nifti1Image(out, out_affine)
    result.header.set_xyzt_units("mm")
    return result


def random_warp(
    reference_img: nib.spatialimages.SpatialImage,
    rng: np.random.Generator,
    *, max_displacement_mm: float = 4.0,
    smoothness_mm: float = 20.0,
    rotation_deg: float = 5.0,
    translation_mm: float = 5.0,
) -> Warp:
    """Draw a smooth random deformation plus a random rigid motion.

    Parameters
    ----------
    reference_img
        Image whose grid carries the displacement field and, by default, the subject images
        (normally the template at the analysis resolution).
    rng
        Seeded generator (the warp is a pure function of its state).
    max_displacement_mm
        Largest displacement :math:`\\max_x \\lVert u(x) \\rVert` of the nonlinear part.
    smoothness_mm
        FWHM (mm) of the Gaussian kernel that smooths the white-noise field.
    rotation_deg, translation_mm
        Each rotation angle (about x, y, z, through the grid centre) is uniform in
        ``[-rotation_deg, rotation_deg]``; each translation uniform in
        ``[-translation_mm, translation_mm]``.

    Returns
    -------
    Warp
    """
    max_displacement_mm = check_in_range("max_displacement_mm", max_displacement_mm, 0, 50)
    smoothness_mm = check_in_range("smoothness_mm", smoothness_mm, 1e-3, 500)
    rotation_deg = check_in_range("rotation_deg", rotation_deg, 0, 180)
    translation_mm = check_in_range("translation_mm", translation_mm, 0, 200)
    shape = tuple(int(n) for n in reference_img.shape[:3])
    if len(shape) != 3 or min(shape) < 2:
        raise InputError(f"reference image must be 3-D, got shape {reference_img.shape}",
                         file="reference_img", fix="Pass a 3-D template image.")
    affine = np.asarray(reference_img.affine, dtype=np.float64)
    vox = nib.affines.voxel_sizes(affine)
    sigma_vox = smoothness_mm * _FWHM_TO_SIGMA / vox
    field = np.empty(shape + (3,), dtype=np.float32)
    for k in range(3):
        noise = rng.standard_normal(shape).astype(np.float32)
        field[..., k] = ndimage.gaussian_filter(noise, sigma_vox, mode="reflect")
    peak = float(np.sqrt((field.astype(np.float64) ** 2).sum(-1)).max())
    field *= np.float32(max_displacement_mm / peak) if peak > 0 else 0.0

    angles = np.deg2rad(rng.uniform(-rotation_deg, rotation_deg, 3))
    shift = rng.uniform(-translation_mm, translation_mm, 3)
    centre = nib.affines.apply_affine(affine, (np.asarray(shape) - 1) / 2.0)
    rigid = np.eye(4)
    rot = _rotation_matrix(angles)
    rigid[:3, :3] = rot
    rigid[:3, 3] = centre - rot @ centre + shift
    return Warp(affine, shape, field, rigid, affine.copy(), shape)
