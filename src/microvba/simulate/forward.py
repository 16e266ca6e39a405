r"""Fast NODDI forward model for whole simulated brains, and the tensor that goes with it.

The signal of a voxel is the NODDI model (Zhang et al. 2012) of
:mod:`microvba.models.noddi`, multiplied by a Gaussian term that adds a small, axially
symmetric excess tensor :math:`\Delta = \delta_a \mu\mu^T + \delta_r (I - \mu\mu^T)` to the
voxel's apparent diffusion tensor:

.. math::

    \frac{S}{S_0} = e^{-b\,g^T \Delta g}\Big[(1-\nu_{iso})\big(\nu_{ic} E_{ic}
    + (1-\nu_{ic}) E_{ec}\big) + \nu_{iso} e^{-b d_{iso}}\Big].

With :math:`\Delta = 0` this is exactly NODDI. The excess tensor stands for microstructure
that NODDI does not parametrise (e.g. an intrinsic axial diffusivity differing from the
fitted model's fixed :math:`d_\parallel`); because :math:`\log S` is linear in
:math:`\Delta`, a log-linear tensor fit of these signals returns the NODDI tensor plus
:math:`\Delta`, so AD moves by :math:`\delta_a` and RD by :math:`\delta_r`. This is how the
simulator plants effects in the tensor metrics (AD, FA) without touching the NODDI
parameters.

Speed: the Watson average of the stick signal is computed by quadrature over a fixed,
nearly uniform set of :math:`K` orientations :math:`n_k` (Fibonacci lattice on the
hemisphere; the integrand is antipodally symmetric):

.. math::

    E_{ic}(g) \approx \sum_k w_k\, e^{-b d_\parallel (g\cdot n_k)^2},\qquad
    w_k = \frac{e^{\kappa (\mu\cdot n_k)^2}}{\sum_j e^{\kappa(\mu\cdot n_j)^2}},

which for all voxels is one matrix product ``weights @ kernel`` (BLAS) instead of special
functions per voxel and measurement. With :math:`K = 1000` it agrees with the exact
:func:`microvba.models.watson.watson_stick_signal` to better than 1e-4 for
:math:`\kappa \le 16` (ODI >= 0.04) and :math:`b d_\parallel \le 7` (tested). The
extra-cellular compartment is computed exactly (closed form, :math:`\tau(\kappa)`).

References
----------
Zhang H. et al. (2012) NODDI: practical in vivo neurite orientation dispersion and density
imaging of the human brain. NeuroImage 61, 1000-1016.
Basser P.J., Mattiello J., LeBihan D. (1994) MR diffusion tensor spectroscopy and imaging.
Biophys J 66, 259-267.
"""

from __future__ import annotations

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from .._defaults import D_ISO
from ..models.watson import odi_to_kappa, watson_tau
from .schemes import fibonacci_hemisphere

#: quadrature orientations on the hemisphere
N_QUADRATURE = 1000
#: voxels per block (bounds the (voxels, orientations) weight array to ~32 MB float32)
_BLOCK = 8192


class NoddiSimulator:
    """NODDI (+ excess tensor) signals for one gradient scheme, many voxels at once.

    Parameters
    ----------
    bvals, bvecs
        The scheme, ``(n_meas,)`` in s/mm² and ``(n_meas, 3)``.
    d_iso
        Isotropic diffusivity (mm²/s).
    n_quadrature
        Number of quadrature orientations on the hemisphere.
    """

    def __init__(self, bvals: np.ndarray, bvecs: np.ndarray, d_iso: float = D_ISO,
                 n_quadrature: int = N_QUADRATURE) -> None:
        self.bvals = np.asarray(bvals, dtype=np.float64).ravel()
        g = np.asarray(bvecs, dtype=np.float64).reshape(-1, 3)
        norms = np.linalg.norm(g, axis=1, keepdims=True)
        self.bvecs = np.where(norms > 0, g / np.where(norms > 0, norms, 1.0), 0.0)
        self.d_iso = float(d_iso)
        self.orientations = fibonacci_hemisphere(int(n_quadrature))
        self._kernels: dict[float, np.ndarray] = {}

    def _kernel(self, d_par: float) -> np.ndarray:
        """``(K, n_meas)`` stick signals :math:`e^{-b d (g\\cdot n_k)^2}` (float32, cached)."""
        key = round(float(d_par), 12)
        if key not in self._kernels:
            cos = self.orientations @ self.bvecs.T
            self._kernels[key] = np.exp(-self.bvals[None, :] * key * cos**2).astype(np.float32)
        return self._kernels[key]

    def stick_signal(self, kappa: np.ndarray, mu: np.ndarray, d_par: float) -> np.ndarray:
        """Watson-averaged stick signal ``(n_vox, n_meas)`` float32 for one ``d_par``."""
        kernel = self._kernel(d_par)
        kappa = np.asarray(kappa, dtype=np.float32).ravel()
        mu = np.ascontiguousarray(np.asarray(mu, dtype=np.float32).reshape(-1, 3))
        orient = self.orientations.astype(np.float32)
        out = np.empty((kappa.size, self.bvals.size), dtype=np.float32)
        w = np.empty((min(_BLOCK, kappa.size), orient.shape[0]), dtype=np.float32)
        # One BLAS thread: OpenBLAS's sgemm rounds differently with 1 and 2 threads (up to
        # 2.4e-7 here), which would make a seeded cohort depend on the thread count of the
        # process that simulates it (serial vs worker processes, or a caller's threadpool
        # limits). Measured on 2 cores: no slower (0.65-0.74 s vs 0.81-0.93 s, 20k voxels).
        with threadpool_limits(limits=1, user_api="blas"):
            for s in range(0, kappa.size, _BLOCK):
                n = min(_BLOCK, kappa.size - s)
                _watson_weights(kappa[s:s + n], mu[s:s + n], orient, w[:n])
                np.matmul(w[:n], kernel, out=out[s:s + n])
        return out

    def signal(self, icvf: np.ndarray, odi: np.ndarray, isovf: np.ndarray, mu: np.ndarray,
               *, d_par: np.ndarray | float = 1.7e-3, delta_axial: np.ndarray | float = 0.0,
               delta_radial: np.ndarray | float = 0.0,
               delta_planar: np.ndarray | float = 0.0) -> np.ndarray:
        """Normalised signal :math:`S/S_0`, ``(n_vox, n_meas)`` float32.

        Parameters
        ----------
        icvf, odi, isovf
            ``(n_vox,)`` NODDI parameters.
        mu
            ``(n_vox, 3)`` mean fibre directions (normalised here).
        d_par
            Intrinsic parallel diffusivity (mm²/s): a scalar, or ``(n_vox,)`` taking few
            distinct values (one stick kernel per value).
        delta_axial, delta_radial, delta_planar
            Excess tensor :math:`\\delta_a, \\delta_r, \\delta_p` (mm²/s, see
            :func:`excess_tensor`), scalar or ``(n_vox,)``.
        """
        icvf = np.asarray(icvf, dtype=np.float64).ravel()
        n = icvf.size
        odi = np.broadcast_to(np.asarray(odi, dtype=np.float64).ravel(), (n,))
        isovf = np.broadcast_to(np.asarray(isovf, dtype=np.float64).ravel(), (n,))
        mu = np.asarray(mu, dtype=np.float64).reshape(-1, 3)
        mu = mu / np.maximum(np.linalg.norm(mu, axis=1, keepdims=True), 1e-12)
        d_par = np.broadcast_to(np.asarray(d_par, dtype=np.float64).ravel(), (n,))
        d_a = np.broadcast_to(np.asarray(delta_axial, dtype=np.float64).ravel(), (n,))
        d_r = np.broadcast_to(np.asarray(delta_radial, dtype=np.float64).ravel(), (n,))
        d_p = np.broadcast_to(np.asarray(delta_planar, dtype=np.float64).ravel(), (n,))
        e2, e3 = perpendicular_frame(mu)
        kappa = odi_to_kappa(odi)
        tau = watson_tau(kappa)
        e_ic = np.empty((n, self.bvals.size), dtype=np.float32)
        for d in np.unique(d_par):
            sel = d_par == d
            e_ic[sel] = self.stick_signal(kappa[sel], mu[sel], float(d))
        d_perp = d_par * (1.0 - icvf)
        dpar_ec = d_perp + (d_par - d_perp) * tau
        dperp_ec = d_perp + (d_par - d_perp) * 0.5 * (1.0 - tau)
        _combine(e_ic, icvf, isovf, dpar_ec, dperp_ec, np.ascontiguousarray(d_a),
                 np.ascontiguousarray(d_r), np.ascontiguousarray(d_p),
                 np.ascontiguousarray(mu), e2, e3, self.bvals, self.bvecs, self.d_iso)
        return e_ic


def _watson_weights_py(kappa, mu, orient, out):  # pragma: no cover - compiled
    """Normalised Watson weights of the quadrature orientations, ``(n_vox, K)``."""
    for v in numba.prange(kappa.size):
        total = 0.0
        for k in range(orient.shape[0]):
            c = mu[v, 0] * orient[k, 0] + mu[v, 1] * orient[k, 1] + mu[v, 2] * orient[k, 2]
            w = np.exp(kappa[v] * (c * c - np.float32(1.0)))
            out[v, k] = w
            total += w
        inv = 1.0 / total
        for k in range(orient.shape[0]):
            out[v, k] *= inv


def _combine_py(e_ic, icvf, isovf, dpar_ec, dperp_ec, d_a, d_r, d_p, mu, e2, e3, bvals, bvecs,
             d_iso):  # pragma: no cover - compiled
    """Overwrite ``e_ic`` by the full NODDI + excess-tensor signal (in place)."""
    for v in numba.prange(e_ic.shape[0]):
        for i in range(bvals.size):
            c = mu[v, 0] * bvecs[i, 0] + mu[v, 1] * bvecs[i, 1] + mu[v, 2] * bvecs[i, 2]
            c2 = c * c
            b = bvals[i]
            c_2 = e2[v, 0] * bvecs[i, 0] + e2[v, 1] * bvecs[i, 1] + e2[v, 2] * bvecs[i, 2]
            c_3 = e3[v, 0] * bvecs[i, 0] + e3[v, 1] * bvecs[i, 1] + e3[v, 2] * bvecs[i, 2]
            mod = -b * (d_r[v] + (d_a[v] - d_r[v]) * c2 + d_p[v] * (c_2 * c_2 - c_3 * c_3))
            e_ec = np.exp(-b * (dperp_ec[v] + (dpar_ec[v] - dperp_ec[v]) * c2) + mod)
            m = np.exp(mod)
            tissue = icvf[v] * e_ic[v, i] * m + (1.0 - icvf[v]) * e_ec
            e_ic[v, i] = (1.0 - isovf[v]) * tissue + isovf[v] * m * np.exp(-b * d_iso)


_jit = {"fastmath": True, "cache": True, "nogil": True}
_watson_weights_par = numba.njit(parallel=True, **_jit)(_watson_weights_py)
_watson_weights_ser = numba.njit(**_jit)(_watson_weights_py)
_combine_par = numba.njit(parallel=True, **_jit)(_combine_py)
_combine_ser = numba.njit(**_jit)(_combine_py)
#: below this many voxels the serial kernels are faster (no thread start-up)
_PARALLEL_MIN = 4096


def _watson_weights(kappa, mu, orient, out):
    kernel = _watson_weights_par if kappa.size >= _PARALLEL_MIN else _watson_weights_ser
    kernel(kappa, mu, orient, out)


def _combine(e_ic, *args):
    kernel = _combine_par if e_ic.shape[0] >= _PARALLEL_MIN else _combine_ser
    kernel(e_ic, *args)


def fit_tensor(signal: np.ndarray, bvals: np.ndarray, bvecs: np.ndarray,
               bmax: float = 1750.0) -> np.ndarray:
    r"""Ordinary least-squares log-linear tensor fit, ``(n_vox, 3, 3)``.

    Uses the measurements with :math:`b \le` ``bmax`` (the fitter's default, as DSI Studio):
    :math:`\log S = \log S_0 - b\, g^T D g`, one pseudo-inverse for all voxels. Applied to
    noiseless signals this is the tensor a fitter converges to at infinite SNR, i.e. the
    simulator's *true* tensor. The fit is linear in :math:`\log S`, so a Gaussian factor
    :math:`e^{-b g^T \Delta g}` on the signal adds exactly :math:`\Delta` to the result.
    """
    bvals = np.asarray(bvals, dtype=np.float64).ravel()
    bvecs = np.asarray(bvecs, dtype=np.float64).reshape(-1, 3)
    keep = bvals <= bmax
    b, g = bvals[keep], bvecs[keep]
    design = np.column_stack([
        np.ones_like(b), -b * g[:, 0] ** 2, -b * g[:, 1] ** 2, -b * g[:, 2] ** 2,
        -2 * b * g[:, 0] * g[:, 1], -2 * b * g[:, 0] * g[:, 2], -2 * b * g[:, 1] * g[:, 2]])
    sig = np.asarray(signal)
    if sig.shape[-1] == bvals.size:
        sig = sig[..., keep]
    logs = np.log(np.maximum(np.asarray(sig, dtype=np.float64), 1e-8))
    coef = logs @ np.linalg.pinv(design).T
    dxx, dyy, dzz, dxy, dxz, dyz = (coef[:, k] for k in range(1, 7))
    return np.stack([np.stack([dxx, dxy, dxz], -1), np.stack([dxy, dyy, dyz], -1),
                     np.stack([dxz, dyz, dzz], -1)], -2)


def perpendicular_frame(mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors completing ``mu`` ``(n, 3)`` to an orthonormal frame."""
    mu = np.asarray(mu, dtype=np.float64).reshape(-1, 3)
    mu = mu / np.maximum(np.linalg.norm(mu, axis=1, keepdims=True), 1e-12)
    ref = np.where(np.abs(mu[:, 2:3]) < 0.9, [[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]])
    e2 = np.cross(mu, ref)
    e2 /= np.linalg.norm(e2, axis=1, keepdims=True)
    return np.ascontiguousarray(e2), np.ascontiguousarray(np.cross(mu, e2))


def excess_tensor(mu: np.ndarray, delta_axial: np.ndarray | float,
                  delta_radial: np.ndarray | float,
                  delta_planar: np.ndarray | float = 0.0) -> np.ndarray:
    r"""Excess tensor, ``(n, 3, 3)``:

    .. math:: \Delta = \delta_a \mu\mu^T + \delta_r (I - \mu\mu^T)
              + \delta_p (e_2 e_2^T - e_3 e_3^T),

    with :math:`(\mu, e_2, e_3)` the frame of :func:`perpendicular_frame`. :math:`\delta_p`
    splits the two radial eigenvalues without changing AD, RD or MD (it raises FA only).
    """
    mu = np.asarray(mu, dtype=np.float64).reshape(-1, 3)
    mu = mu / np.maximum(np.linalg.norm(mu, axis=-1, keepdims=True), 1e-12)
    e2, e3 = perpendicular_frame(mu)
    d_a, d_r, d_p = (np.broadcast_to(np.asarray(x, dtype=np.float64).ravel(),
                                     (mu.shape[0],))[:, None, None]
                     for x in (delta_axial, delta_radial, delta_planar))

    def outer(v: np.ndarray) -> np.ndarray:
        return v[:, :, None] * v[:, None, :]

    return (d_r * np.eye(3) + (d_a - d_r) * outer(mu)
            + d_p * (outer(e2) - outer(e3)))


def tensor_scalars(tensor: np.ndarray) -> dict[str, np.ndarray]:
    """FA, MD, RD, AD of tensors ``(..., 3, 3)`` (Basser & Pierpaoli 1996)."""
    evals = np.linalg.eigvalsh(tensor)[..., ::-1]
    md = evals.mean(axis=-1)
    num = np.sqrt(((evals - md[..., None]) ** 2).sum(axis=-1))
    den = np.sqrt((evals**2).sum(axis=-1))
    fa = np.sqrt(1.5) * num / np.maximum(den, 1e-30)
    return {"fa": fa, "md": md, "rd": evals[..., 1:].mean(axis=-1), "ad": evals[..., 0]}


def tensor_metrics(signal: np.ndarray, bvals: np.ndarray, bvecs: np.ndarray,
                   bmax: float = 1750.0) -> dict[str, np.ndarray]:
    """FA, MD, RD, AD of :func:`fit_tensor` (``(n_vox,)`` each)."""
    return tensor_scalars(fit_tensor(signal, bvals, bvecs, bmax))


def add_rician_noise(signal: np.ndarray, sigma: float | np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    r"""Rician magnitude :math:`|S + \sigma(\epsilon_1 + i\epsilon_2)|`, float32.

    ``sigma`` is the standard deviation of each of the two Gaussian channels.
    """
    s = np.asarray(signal, dtype=np.float32)
    sig = np.float32(sigma) if np.ndim(sigma) == 0 else np.asarray(sigma, np.float32)
    re = s + sig * rng.standard_normal(s.shape, dtype=np.float32)
    im = sig * rng.standard_normal(s.shape, dtype=np.float32)
    return np.sqrt(re * re + im * im)
