r"""Diffusion tensor imaging (Basser et al. 1994).

:math:`S = S_0 \exp(-b\, g^T D g)` with the symmetric positive tensor :math:`D`.
"""

from __future__ import annotations

import numpy as np

from .gradients import check_data


def tensor_signal(bvals: np.ndarray, bvecs: np.ndarray, evals: np.ndarray,
                  evecs: np.ndarray) -> np.ndarray:
    r"""Normalised tensor signal :math:`\exp(-b\, g^T V \Lambda V^T g)`.

    Parameters
    ----------
    bvals
        (n_meas,) b-values in s/mm².
    bvecs
        (n_meas, 3) unit gradient directions.
    evals
        (..., 3) eigenvalues in mm²/s.
    evecs
        (..., 3, 3) eigenvectors as columns (DIPY convention: ``evecs[..., :, j]``).

    Returns
    -------
    ndarray
        (..., n_meas)
    """
    bvals = np.asarray(bvals, float).ravel()
    bvecs = np.asarray(bvecs, float).reshape(-1, 3)
    evals = np.asarray(evals, float)
    evecs = np.asarray(evecs, float)
    proj = np.einsum("...ij,ni->...nj", evecs, bvecs)  # (..., n, 3): g . e_j
    adc = np.einsum("...ni,...i->...n", proj**2, evals)
    return np.exp(-bvals * adc)


#: DSI Studio's default upper b-value for the tensor (s/mm^2): above it the signal is no
#: longer mono-exponential and MD is underestimated
DTI_BMAX = 1750.0
_FIT_METHODS = {"wls": "WLS", "ols": "OLS"}
_CHUNK = 50_000


def _design_rank(bvecs: np.ndarray) -> int:
    """Rank of the 6-column tensor design built from unit directions."""
    x, y, z = bvecs.T
    design = np.stack([x * x, y * y, z * z, 2 * x * y, 2 * x * z, 2 * y * z], axis=1)
    return int(np.linalg.matrix_rank(design, tol=1e-6)) if len(bvecs) else 0


def _per_s0(signal: np.ndarray, b0_cols: np.ndarray) -> np.ndarray:
    r"""Each voxel's signal divided by its mean b=0 signal (voxels whose mean is not positive
    are left as they are).

    The log-linear tensor fit does not depend on a voxel's scale, :math:`\log cS = \log c +
    \log S`, except through DIPY's absolute floor for non-positive signal (``min_signal``
    1e-4): on data in small units (Philips floating-point values, signal normalised by
    b=0, a scaling of 1e-6) that floor clipped real signal and changed FA by up to 0.37.
    Dividing by :math:`\bar S_0` makes the floor 1e-4 of each voxel's b=0 signal.
    """
    s0 = signal[:, b0_cols].mean(axis=1, keepdims=True)
    return signal / np.where(s0 > 0, s0, 1.0)


class TensorModel:
    r"""Diffusion tensor model fitted on the volumes with :math:`b \le b_{max}`.

    The fit itself is DIPY's (:class:`dipy.reconst.dti.TensorModel`, weighted or ordinary
    least squares on the log signal), run over chunks of voxels to bound memory.

    Parameters
    ----------
    gtab
        :class:`~microvba.models.gradients.GradientTable` of the full scheme.
    fit_method
        ``"wls"`` (default) or ``"ols"``.
    bmax
        Upper b-value (s/mm²) of the volumes used (default :data:`DTI_BMAX`; DSI Studio's
        choice). On a DSI grid the high b-values would bias MD by ~40 %.

    Raises
    ------
    InputError
        Fewer than 6 non-collinear directions with ``b0 < b <= bmax``, or no b0 volume.
    """

    def __init__(self, gtab, fit_method: str = "wls", bmax: float = DTI_BMAX) -> None:
        from .._validation import InputError, check_choice

        self.gtab = gtab
        self.fit_method = check_choice("fit_method", fit_method, list(_FIT_METHODS))
        self.bmax = float(bmax)
        self.volumes = np.flatnonzero(gtab.bvals <= self.bmax)
        dw = self.volumes[~gtab.b0s_mask[self.volumes]]
        rank = _design_rank(gtab.bvecs[dw])
        if rank < 6:
            raise InputError(
                f"the tensor needs at least 6 non-collinear gradient directions with "
                f"b <= {self.bmax:g} s/mm^2; this scheme has {len(dw)} such volumes spanning "
                f"only {rank} independent tensor components",
                file=gtab.source,
                fix="Raise the b-value limit (--dti-bmax) to include a shell with >= 6 "
                    "directions, or acquire more directions.")
        if not np.any(gtab.b0s_mask[self.volumes]):
            raise InputError("the tensor fit needs at least one b0 volume", file=gtab.source,
                             fix="Include a b=0 volume (b <= "
                                 f"{gtab.b0_threshold:g} s/mm^2) in the series and in its "
                                 ".bval file.")
        self.sub_gtab = gtab.subset(np.isin(np.arange(gtab.n_volumes), self.volumes))
        self._b0_cols = np.flatnonzero(gtab.b0s_mask[self.volumes])
        from dipy.reconst.dti import TensorModel as DipyTensorModel

        self._dipy = DipyTensorModel(self.sub_gtab.to_dipy(),
                                     fit_method=_FIT_METHODS[self.fit_method])

    def fit(self, data: np.ndarray, mask: np.ndarray | None = None) -> TensorFit:
        """Fit every voxel of ``data`` (..., n_volumes) inside ``mask``."""
        data, mask = check_data(self.gtab, data, mask)
        spatial = data.shape[:-1]
        idx = np.flatnonzero(mask.ravel())
        evals = np.zeros((idx.size, 3))
        evecs = np.zeros((idx.size, 3, 3))
        for s in range(0, idx.size, _CHUNK):
            rows = idx[s:s + _CHUNK]
            # gathered per chunk in any memory layout: reshape(-1, n) of the Fortran-ordered
            # array nibabel returns would copy the whole image
            chunk = data[np.unravel_index(rows, spatial)][:, self.volumes].astype(float)
            f = self._dipy.fit(_per_s0(chunk, self._b0_cols))
            evals[s:s + _CHUNK] = f.evals
            evecs[s:s + _CHUNK] = f.evecs
        full_evals = np.zeros(spatial + (3,))
        full_evecs = np.zeros(spatial + (3, 3))
        full_evals.reshape(-1, 3)[idx] = evals
        full_evecs.reshape(-1, 3, 3)[idx] = evecs
        return TensorFit(full_evals, full_evecs, mask)


class TensorFit:
    """Fitted tensors: eigenvalues/vectors and the scalar maps (DIPY definitions)."""

    def __init__(self, evals: np.ndarray, evecs: np.ndarray, mask: np.ndarray) -> None:
        self.evals = evals
        self.evecs = evecs
        self.mask = mask

    @property
    def fa(self) -> np.ndarray:
        from dipy.reconst.dti import fractional_anisotropy

        return np.nan_to_num(fractional_anisotropy(self.evals))

    @property
    def md(self) -> np.ndarray:
        return self.evals.mean(axis=-1)

    @property
    def ad(self) -> np.ndarray:
        return self.evals[..., 0]

    @property
    def rd(self) -> np.ndarray:
        return self.evals[..., 1:].mean(axis=-1)

    @property
    def direction(self) -> np.ndarray:
        """Principal eigenvector (..., 3)."""
        return self.evecs[..., :, 0]

    @property
    def color_fa(self) -> np.ndarray:
        """FA-weighted absolute principal direction (RGB in [0, 1])."""
        return np.clip(np.abs(self.direction) * self.fa[..., None], 0.0, 1.0)
