r"""MAP-MRI propagator scalars (Özarslan et al. 2013; Fick et al. 2016), batched over voxels.

The signal is expanded in the anisotropic MAP-MRI basis of radial order :math:`N` (DIPY's
:class:`dipy.reconst.mapmri.MapmriModel` with ``anisotropic_scaling=True``)

.. math::

    E(\mathbf q) = \sum_{n_x+n_y+n_z \le N} c_{n}\,
        \Phi_{n_x}(q_x'; u_x)\,\Phi_{n_y}(q_y'; u_y)\,\Phi_{n_z}(q_z'; u_z),\qquad
    \Phi_n(q; u) = \frac{i^{-n}}{\sqrt{2^n n!}} e^{-(2\pi u q)^2/2} H_n(2\pi u q),

where :math:`\mathbf q' = R^T\mathbf q` is the q-vector in the voxel's tensor frame and
:math:`u_k = \sqrt{2\lambda_k\tau}` its scales (tensor fitted on :math:`b <` ``bval_threshold``,
eigenvalues clipped below at ``eigenvalue_threshold``). The coefficients minimise the
Laplacian-regularised least squares of Fick et al. (2016), eq. 11,

.. math::

    \hat c = (M^T M + \lambda L_u)^{-1} M^T y, \qquad
    \hat c \leftarrow \hat c / (B^T \hat c),

with :math:`\lambda` fixed or chosen per voxel by generalised cross-validation (GCV; Craven &
Wahba 1979), the criterion DIPY minimises:
:math:`\mathrm{GCV}(\lambda) = \lVert y - S_\lambda y\rVert / (K - \mathrm{tr} S_\lambda)`,
:math:`S_\lambda = M (M^TM + \lambda L_u)^{-1} M^T`, :math:`K` the number of volumes.

DIPY fits voxel by voxel in Python (a tensor fit, a basis matrix and, for GCV, an L-BFGS-B
search with a pseudo-inverse of the 50x50 system and a :math:`K\times K` hat matrix per
evaluation: about 0.1 s per voxel with GCV). This module builds the same basis for a block
of voxels at once and solves with stacked LAPACK calls:

* antipodal volumes (:math:`\pm\mathbf q`, same b) have identical rows of :math:`M` (every
  basis function has even total order), so :math:`M^TM` and :math:`M^Ty` are formed on the
  unique rows with multiplicities (a full DSI grid: 515 -> 258 rows);
* with :math:`M^TM = CC^T` (Cholesky) and :math:`C^{-1}L_uC^{-T} = V\Gamma V^T`,
  :math:`W = C^{-T}V` diagonalises both, so for every :math:`\lambda`:
  :math:`\mathrm{tr}\,S_\lambda = \sum_i 1/(1+\lambda\gamma_i)`,
  :math:`\lVert y-S_\lambda y\rVert^2 = y^Ty - \sum_i (2d_i - d_i^2) z_i^2`
  with :math:`d_i = 1/(1+\lambda\gamma_i)`, :math:`z = W^T M^T y`, and
  :math:`\hat c = W (d\odot z)`: a GCV evaluation costs :math:`O(n_{coef})` per voxel;
* the GCV minimum over DIPY's bounds :math:`[10^{-5}, 10]` is found for all voxels at once:
  a log-spaced grid, then golden-section search in :math:`\log\lambda` around the best
  grid point. DIPY instead runs L-BFGS-B from :math:`\lambda = 0.05`; the two optima agree
  within the flat bottom of the GCV curve (maps equal to <= 1e-3, ``tests/models``).

The scalars are DIPY's closed forms (Özarslan et al. 2013 eqs. 36-44; Fick et al. 2016,
appendix): RTOP, RTAP, RTPP, MSD and NG.

References
----------
Özarslan E. et al. (2013). Mean apparent propagator (MAP) MRI: a novel diffusion imaging
method for mapping tissue microstructure. NeuroImage 78:16-32.
Fick R.H.J. et al. (2016). MAPL: Tissue microstructure estimation using Laplacian-regularized
MAP-MRI and its application to HCP data. NeuroImage 134:365-385.
Craven P., Wahba G. (1979). Smoothing noisy data with spline functions. Numer Math 31:377-403.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validation import InputError
from .gradients import GradientTable, antipodal_groups, check_data

#: DIPY's defaults, and the b-value limit of the scale (tensor) estimate recommended for NG
#: (Avram et al. 2015: the tensor must see Gaussian diffusion, b < ~2000 s/mm^2)
RADIAL_ORDER = 6
BVAL_THRESHOLD = 2000.0
EIGENVALUE_THRESHOLD = 1e-4
GCV_BOUNDS = (1e-5, 10.0)
#: scalars written, in this order
MAPMRI_PARAMS = ("rtop", "rtap", "rtpp", "msd", "ng")
_TAU = 1.0 / (4.0 * np.pi ** 2)  # no diffusion times in a .bval: DIPY's default
_CHUNK = 1024
_GRID = 41          # log-spaced GCV grid points over GCV_BOUNDS
_GOLDEN_ITERS = 40  # golden-section steps: bracket shrinks by 0.618**40 ~ 4e-9


def check_multishell(gtab: GradientTable, model: str, fix: str) -> None:
    """InputError when ``gtab`` has no b0 or fewer than two non-zero b-values (shells).

    Propagator and q-space models (MAP-MRI, GQI) need the radial dimension of q-space; one
    shell only samples a sphere of it.
    """
    if not np.any(gtab.b0s_mask):
        raise InputError(f"{model} needs at least one b0 volume", file=gtab.source,
                         fix="Include a b=0 volume in the scheme.")
    if gtab.shells.size < 2:
        raise InputError(
            f"{model} needs q-space sampled along the radius (a DSI grid or at least two "
            f"non-zero shells); this scheme has {gtab.shells.size} "
            f"({', '.join(f'b={b:g}' for b in gtab.shells) or 'none'})",
            file=gtab.source, fix=fix)


def _default_threads() -> int:
    import os

    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def _hermite_functions(x: np.ndarray, order: int) -> np.ndarray:
    r"""(order + 1, ...) real parts :math:`e^{-x^2/2} H_n(x) / \sqrt{2^n n!}` (physicists')."""
    from math import factorial

    h = np.empty((order + 1,) + x.shape)
    h[0] = 1.0
    if order >= 1:
        h[1] = 2.0 * x
    for n in range(1, order):
        h[n + 1] = 2.0 * x * h[n] - 2.0 * n * h[n - 1]
    g = np.exp(-0.5 * x * x)
    for n in range(order + 1):
        h[n] *= g / np.sqrt(2.0 ** n * factorial(n))
    return h


@dataclass(frozen=True)
class MapmriFit:
    """MAP-MRI scalars on the image grid (zero outside the mask; NaN where a fit failed)."""

    rtop: np.ndarray
    rtap: np.ndarray
    rtpp: np.ndarray
    msd: np.ndarray
    ng: np.ndarray
    lopt: np.ndarray
    mask: np.ndarray

    @property
    def n_failed(self) -> int:
        """Voxels of the mask whose fit gave a non-finite RTOP."""
        return int(np.sum(self.mask & ~np.isfinite(self.rtop)))


class MapmriModel:
    r"""Laplacian-regularised anisotropic MAP-MRI, fitted over blocks of voxels.

    Parameters
    ----------
    gtab
        :class:`~microvba.models.gradients.GradientTable`; needs b0 volumes and at least two
        non-zero b-values (DSI grid or multi-shell).
    radial_order
        Even order :math:`N` of the basis (6: 50 coefficients).
    laplacian_weighting
        ``"GCV"`` (per-voxel generalised cross-validation) or a fixed weight :math:`\lambda`.
    bval_threshold
        Volumes with :math:`b <` this fit the tensor that sets the scales and frame.
    eigenvalue_threshold
        Lower clip of the tensor eigenvalues (mm²/s), as DIPY.
    n_threads
        Threads fitting blocks of voxels in parallel (default: the CPUs this process may
        use, at most 8); results do not depend on it.

    Notes
    -----
    No positivity constraint: DIPY's needs a CVXPY quadratic programme per voxel (seconds
    each), unaffordable for a cohort; the Laplacian penalty already suppresses most
    negative propagator lobes (Fick et al. 2016).
    """

    def __init__(self, gtab: GradientTable, radial_order: int = RADIAL_ORDER,
                 laplacian_weighting: str | float = "GCV",
                 bval_threshold: float = BVAL_THRESHOLD,
                 eigenvalue_threshold: float = EIGENVALUE_THRESHOLD,
                 n_threads: int | None = None) -> None:
        from dipy.reconst import mapmri as dm
        from dipy.reconst.dti import TensorModel as DipyTensorModel

        check_multishell(gtab, "MAP-MRI", "Fit the tensor or NODDI instead, or acquire a "
                         "DSI grid or several shells (e.g. b=1000, 2000, 3000 s/mm^2).")
        from .registry import MAX_RADIAL_ORDER

        if radial_order < 2 or radial_order % 2 or radial_order > MAX_RADIAL_ORDER:
            raise InputError(f"radial order must be an even integer in [2, {MAX_RADIAL_ORDER}]; "
                             f"got {radial_order}", file="parameter mapmri_radial_order",
                             fix="Use e.g. 6.")
        if isinstance(laplacian_weighting, str):
            if laplacian_weighting.upper() != "GCV":
                raise InputError(f"Laplacian weighting {laplacian_weighting!r} is neither "
                                 "'GCV' nor a number", file="parameter mapmri_laplacian",
                                 fix="Pass GCV or a weight such as 0.2.")
            laplacian_weighting = "GCV"
        else:
            laplacian_weighting = float(laplacian_weighting)
            if not np.isfinite(laplacian_weighting) or laplacian_weighting < 0:
                raise InputError(f"Laplacian weight must be >= 0; got {laplacian_weighting}",
                                 file="parameter mapmri_laplacian",
                                 fix="Pass GCV or a weight such as 0.2.")
        self.gtab = gtab
        self.n_threads = int(n_threads) if n_threads else _default_threads()
        self.radial_order = int(radial_order)
        self.laplacian_weighting = laplacian_weighting
        self.bval_threshold = float(bval_threshold)
        self.eigenvalue_threshold = float(eigenvalue_threshold)
        self.cutoff = gtab.bvals < self.bval_threshold
        sub = gtab.subset(self.cutoff)
        if not np.any(sub.b0s_mask) or np.sum(~sub.b0s_mask) < 6:
            raise InputError(f"MAP-MRI's scale estimate (a tensor on b < {bval_threshold:g}) "
                             f"has {int(np.sum(~sub.b0s_mask))} diffusion-weighted volumes; "
                             "6 or more are needed", file=gtab.source,
                             fix="Raise the MAP-MRI b-value threshold.")
        self._tensor = DipyTensorModel(sub.to_dipy())  # WLS, as MapmriModel's own
        self.ind_mat = dm.mapmri_index_matrix(self.radial_order)
        self.Bm = dm.b_mat(self.ind_mat)
        S, T, U = dm.mapmri_STU_reg_matrices(self.radial_order)
        x, y, z = self.ind_mat.T
        same = (((x[:, None] - x[None]) % 2 == 0) & ((y[:, None] - y[None]) % 2 == 0)
                & ((z[:, None] - z[None]) % 2 == 0))
        ix = np.ix_
        # L_u = sum_k w_k(u) P_k (Fick et al. 2016 eq. 10; dipy mapmri_laplacian_reg_matrix)
        self._lap = np.stack([
            S[ix(x, x)] * U[ix(y, y)] * U[ix(z, z)],
            S[ix(y, y)] * U[ix(z, z)] * U[ix(x, x)],
            S[ix(z, z)] * U[ix(x, x)] * U[ix(y, y)],
            2 * T[ix(x, x)] * T[ix(y, y)] * U[ix(z, z)],
            2 * T[ix(x, x)] * T[ix(z, z)] * U[ix(y, y)],
            2 * T[ix(z, z)] * T[ix(y, y)] * U[ix(x, x)],
        ]) * same
        # unique rows of M: antipodal volumes (same b, q -> -q) give equal rows
        labels = antipodal_groups(gtab.bvals, gtab.bvecs)
        self._counts = np.bincount(labels).astype(float)
        self._onehot = (labels[:, None] == np.arange(self._counts.size)[None, :]).astype(float)
        rep = np.unique(labels, return_index=True)[1]
        self._qvals = np.sqrt(gtab.bvals[rep] / _TAU) / (2 * np.pi)
        self._bvecs = gtab.bvecs[rep]
        n = self.ind_mat.sum(axis=1)
        self._sign = (-1.0) ** (n // 2)  # i^{-(nx+ny+nz)}, total order even
        # scalar weights (DIPY's MapmriFit.rtop/rtap/rtpp/msd, anisotropic)
        sel = self.Bm > 0
        from scipy.special import factorial, gamma

        self._w_rtop = self._sign * self.Bm
        with np.errstate(all="ignore"):
            self._w_rtap = np.where(sel, self.Bm * (-1.0) ** ((y + z) / 2.0), 0.0)
            self._w_rtpp = np.where(sel, self.Bm * (-1.0) ** (x / 2.0), 0.0)
            den = (np.sqrt(2.0 ** (-n) * factorial(x) * factorial(y) * factorial(z))
                   * gamma(0.5 - 0.5 * x) * gamma(0.5 - 0.5 * y) * gamma(0.5 - 0.5 * z))
            base = np.where(sel, (-1.0) ** (-0.5 * n) * np.pi ** 1.5 / den, 0.0)
        self._w_msd = np.stack([base * (1 + 2 * x), base * (1 + 2 * y), base * (1 + 2 * z)])

    def parameters(self) -> dict:
        """Every setting, for the sidecar."""
        return {"Implementation": "microvba batched MAP-MRI (equal to "
                                  "dipy.reconst.mapmri.MapmriModel, anisotropic scaling)",
                "RadialOrder": self.radial_order, "AnisotropicScaling": True,
                "NumberOfCoefficients": int(self.ind_mat.shape[0]),
                "LaplacianRegularization": True,
                "LaplacianWeighting": self.laplacian_weighting,
                "GCVBounds": list(GCV_BOUNDS) if self.laplacian_weighting == "GCV" else None,
                "GCVSearch": (f"{_GRID}-point log grid + golden section in log(lambda)"
                              if self.laplacian_weighting == "GCV" else None),
                "PositivityConstraint": False,
                "ScaleTensorBvalThreshold": self.bval_threshold,
                "EigenvalueThreshold": self.eigenvalue_threshold,
                "Tau": _TAU, "Normalisation": "coefficients / (B^T c) (signal at q=0 is 1)"}

    # -- per block -----------------------------------------------------------------------
    def _basis(self, evals: np.ndarray, evecs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, coef, rows) transposed unique-row design and (n, 3) scales for a block of voxels."""
        emax = evals.max(axis=1, keepdims=True)
        evals = np.clip(evals, self.eigenvalue_threshold, emax)
        mu = np.sqrt(evals * 2 * _TAU)
        q = np.einsum("gi,nij->ngj", self._bvecs, evecs) * self._qvals[None, :, None]
        phi = _hermite_functions(2 * np.pi * mu[:, None, :] * q, self.radial_order)
        x, y, z = self.ind_mat.T
        m = phi[x, :, :, 0] * phi[y, :, :, 1] * phi[z, :, :, 2]  # (coef, n, rows)
        m *= self._sign[:, None, None]
        return np.ascontiguousarray(np.swapaxes(m, 0, 1)), mu  # (n, coef, rows): BLAS-ready

    def _gram(self, m: np.ndarray) -> np.ndarray:
        """Lower triangles of :math:`M^T \\mathrm{diag}(counts) M` (BLAS ``dsyrk`` per voxel:
        half the flops of a general product; Cholesky reads the lower triangle only)."""
        from scipy.linalg.blas import dsyrk

        mw = m * np.sqrt(self._counts)
        a = np.empty((m.shape[0], m.shape[1], m.shape[1]))
        for i in range(m.shape[0]):
            a[i] = dsyrk(1.0, mw[i], lower=1)
        return np.tril(a)

    def _laplacian(self, mu: np.ndarray) -> np.ndarray:
        ux, uy, uz = mu.T
        w = np.stack([ux ** 3 / (uy * uz), uy ** 3 / (ux * uz), uz ** 3 / (ux * uy),
                      ux * uy / uz, ux * uz / uy, uz * uy / ux], axis=1)
        return np.einsum("nk,kij->nij", w, self._lap)

    def _gcv(self, gamma: np.ndarray, z2: np.ndarray, yy: np.ndarray,
             lam: np.ndarray) -> np.ndarray:
        d = 1.0 / (1.0 + lam[..., None] * gamma)
        tr = d.sum(-1)
        res = yy - np.sum((2 * d - d * d) * z2, axis=-1)
        return np.sqrt(np.maximum(res, 0.0)) / (self.gtab.n_volumes - tr)

    def _lambda_gcv(self, gamma: np.ndarray, z2: np.ndarray, yy: np.ndarray) -> np.ndarray:
        lo, hi = np.log(GCV_BOUNDS[0]), np.log(GCV_BOUNDS[1])
        grid = np.linspace(lo, hi, _GRID)
        cost = self._gcv(gamma[:, None], z2[:, None], yy[:, None], np.exp(grid)[None, :])
        best = np.argmin(np.where(np.isfinite(cost), cost, np.inf), axis=1)
        step = grid[1] - grid[0]
        a = np.maximum(grid[best] - step, lo)
        b = np.minimum(grid[best] + step, hi)
        r = (np.sqrt(5.0) - 1) / 2

        def f(t):
            return self._gcv(gamma, z2, yy, np.exp(t))

        c, d = b - r * (b - a), a + r * (b - a)
        fc, fd = f(c), f(d)
        for _ in range(_GOLDEN_ITERS):
            left = fc < fd  # the minimum lies in [a, d]
            b = np.where(left, d, b)
            a = np.where(left, a, c)
            new_c = np.where(left, b - r * (b - a), d)
            new_d = np.where(left, c, a + r * (b - a))
            new_fc = np.where(left, f(new_c), fd)
            new_fd = np.where(left, fc, f(new_d))
            c, d, fc, fd = new_c, new_d, new_fc, new_fd
        return np.exp(0.5 * (a + b))

    def fit_voxels(self, signals: np.ndarray) -> np.ndarray:
        """(n, 6) ``rtop, rtap, rtpp, msd, ng, lambda`` of (n, n_volumes) signals (NaN
        where the design is singular)."""
        signals = np.asarray(signals)
        out = np.full((signals.shape[0], 6), np.nan)
        for s in range(0, signals.shape[0], _CHUNK):
            block = np.asarray(signals[s:s + _CHUNK], dtype=np.float64)
            try:
                out[s:s + _CHUNK] = self._fit_block(block)
            except np.linalg.LinAlgError:  # a singular design in the block: voxel by voxel
                for i in range(block.shape[0]):
                    try:
                        out[s + i] = self._fit_block(block[i:i + 1])[0]
                    except np.linalg.LinAlgError:
                        pass
        return out

    def _fit_block(self, y: np.ndarray) -> np.ndarray:
        n = y.shape[0]
        ten = self._tensor.fit(y[:, self.cutoff])
        evals, evecs = np.asarray(ten.evals), np.asarray(ten.evecs)
        m, mu = self._basis(evals, evecs)
        ysum = y @ self._onehot                             # y summed over antipodal groups
        a = self._gram(m)                                       # M^T M (lower triangle)
        mty = np.matmul(m, ysum[:, :, None])[:, :, 0]           # M^T y
        lap = self._laplacian(mu)
        out = np.full((n, 6), np.nan)
        ok = np.all(np.isfinite(a), axis=(1, 2)) & np.all(np.isfinite(lap), axis=(1, 2))
        ok &= np.all(np.isfinite(mty), axis=1)
        chol = np.linalg.cholesky(np.where(ok[:, None, None], a, np.eye(a.shape[1])))
        cinv = np.linalg.inv(chol)
        b = cinv @ np.where(ok[:, None, None], lap, 0.0) @ np.swapaxes(cinv, 1, 2)
        gamma, v = np.linalg.eigh(b)
        gamma = np.maximum(gamma, 0.0)
        w = np.swapaxes(cinv, 1, 2) @ v                    # W^T A W = I, W^T L W = Gamma
        zz = np.einsum("nci,nc->ni", w, mty)
        if self.laplacian_weighting == "GCV":
            lam = self._lambda_gcv(gamma, zz * zz, np.sum(y * y, axis=1))
        else:
            lam = np.full(n, float(self.laplacian_weighting))
        coef = np.einsum("nci,ni->nc", w, zz / (1.0 + lam[:, None] * gamma))
        with np.errstate(all="ignore"):
            coef /= (coef @ self.Bm)[:, None]
            prod = np.prod(mu, axis=1)
            out[:, 0] = (coef @ self._w_rtop) / (np.sqrt(8 * np.pi ** 3) * prod)
            out[:, 1] = (coef @ self._w_rtap) / (2 * np.pi * mu[:, 1] * mu[:, 2])
            out[:, 2] = (coef @ self._w_rtpp) / (np.sqrt(2 * np.pi) * mu[:, 0])
            out[:, 3] = np.einsum("nk,nk->n", mu ** 2, coef @ self._w_msd.T)
            out[:, 4] = np.sqrt(1 - coef[:, 0] ** 2 / np.sum(coef ** 2, axis=1))
        out[:, 5] = lam
        out[~ok, :5] = np.nan
        return out

    def fit(self, data: np.ndarray, mask: np.ndarray | None = None) -> MapmriFit:
        """Fit every voxel of ``data`` (..., n_volumes) inside ``mask``."""
        data, mask = check_data(self.gtab, data, mask)
        spatial = data.shape[:-1]
        idx = np.flatnonzero(mask.ravel())
        flat = data.reshape(-1, data.shape[-1])
        res = np.full((idx.size, 6), np.nan)
        starts = range(0, idx.size, _CHUNK)

        def work(s: int) -> None:  # NumPy/LAPACK release the GIL: blocks run in parallel
            res[s:s + _CHUNK] = self.fit_voxels(flat[idx[s:s + _CHUNK]])

        if self.n_threads > 1 and len(starts) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(self.n_threads) as pool:
                list(pool.map(work, starts))
        else:
            for s in starts:
                work(s)
        maps = []
        for k in range(6):
            full = np.zeros(spatial)
            full.reshape(-1)[idx] = res[:, k]
            maps.append(full)
        return MapmriFit(*maps, mask=mask)


class MapmriFitter:
    """Registry adapter (:class:`microvba.models.registry.Fitter`): RTOP, RTAP, RTPP, MSD,
    NG and the Laplacian weight used per voxel (``lambda``)."""

    def __init__(self, gtab: GradientTable, radial_order: int = RADIAL_ORDER,
                 laplacian: str | float = "GCV",
                 bval_threshold: float = BVAL_THRESHOLD) -> None:
        self.model = MapmriModel(gtab, radial_order=radial_order,
                                 laplacian_weighting=laplacian, bval_threshold=bval_threshold)

    def fit_maps(self, data: np.ndarray, mask: np.ndarray
                 ) -> tuple[dict[str, np.ndarray], dict]:
        f = self.model.fit(data, mask)
        lam = f.lopt[mask & np.isfinite(f.lopt)]
        return ({"rtop": f.rtop, "rtap": f.rtap, "rtpp": f.rtpp, "msd": f.msd, "ng": f.ng,
                 "lambda": f.lopt},
                {"MapmriSettings": self.model.parameters(), "VoxelsFailed": f.n_failed,
                 "LaplacianWeightMedian": float(np.median(lam)) if lam.size else None})
