r"""NODDI: neurite orientation dispersion and density imaging (Zhang et al. 2012).

Three compartments, normalised signal

.. math::

    S/S_0 = (1-\nu_{iso})\big[\nu_{ic} E_{ic}(\kappa,\mu) + (1-\nu_{ic}) E_{ec}(\kappa,\mu,\nu_{ic})\big]
            + \nu_{iso} e^{-b d_{iso}}

with Watson-dispersed sticks (:math:`E_{ic}`), the Watson-averaged tortuous zeppelin
(:math:`E_{ec}`, :math:`d_\perp = d_\parallel(1-\nu_{ic})`) and a free-water ball. The kernels
are exact (:mod:`microvba.models.watson`). ``ICVF`` = :math:`\nu_{ic}`, ``ISOVF`` =
:math:`\nu_{iso}`, ``ODI`` = :math:`\tfrac{2}{\pi}\arctan(1/\kappa)`.

The intrinsic diffusivity defaults to the white-matter value :math:`1.7\times10^{-3}` mm²/s;
in gray matter :data:`D_PAR_GM` (:math:`1.1\times10^{-3}`) avoids biased maps
(Guerrero et al. 2019; Fukutomi et al. 2018).

References
----------
Zhang H et al. (2012) NeuroImage 61:1000-1016.
Guerrero JM et al. (2019) Optimizing the intrinsic parallel diffusivity in NODDI: an extensive
empirical evaluation. PLoS ONE 14:e0217118.
Liu Q, Pierce DA (1994) A note on Gauss-Hermite quadrature. Biometrika 81:624-629.
MacKay DJC (2003) Information Theory, Inference, and Learning Algorithms, ch. 27.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .._defaults import D_ISO, D_PAR_GM, D_PAR_WM  # presets, declared once (mm^2/s)
from .gradients import antipodal_groups, check_data
from .noise import (
    METHODS,
    b0_variance,
    choose_method,
    pair_variance,
    pool_variance,
    repeated_pairs,
)
from .watson import (
    kappa_to_odi,
    odi_to_kappa,
    watson_stick_signal,
    watson_tau,
    watson_zeppelin_signal,
)

__all__ = ["D_ISO", "D_PAR_GM", "D_PAR_WM", "kappa_to_odi", "noddi_signal", "odi_to_kappa"]


def noddi_signal(bvals: np.ndarray, bvecs: np.ndarray, icvf: np.ndarray, odi: np.ndarray,
                 isovf: np.ndarray, mu: np.ndarray, d_par: float = D_PAR_WM,
                 d_iso: float = D_ISO) -> np.ndarray:
    r"""Normalised NODDI signal :math:`S/S_0` for every measurement.

    Parameters
    ----------
    bvals
        (n_meas,) b-values in s/mm².
    bvecs
        (n_meas, 3) gradient directions (unit for b > 0; ignored where b = 0).
    icvf, odi, isovf
        Broadcastable arrays of shape (...,): intra-cellular volume fraction (of the
        non-isotropic part), orientation dispersion index in [0, 1], isotropic fraction.
    mu
        (..., 3) mean fibre direction (normalised here).
    d_par, d_iso
        Intrinsic parallel and isotropic diffusivities in mm²/s.

    Returns
    -------
    ndarray
        (..., n_meas) signal attenuation.
    """
    bvals = np.asarray(bvals, float).ravel()
    bvecs = np.asarray(bvecs, float).reshape(-1, 3)
    if bvecs.shape[0] != bvals.size:
        raise ValueError(f"{bvals.size} b-values but {bvecs.shape[0]} b-vectors")
    mu = np.asarray(mu, float)
    mu = mu / np.maximum(np.linalg.norm(mu, axis=-1, keepdims=True), 1e-300)
    icvf, odi, isovf = (np.asarray(x, float) for x in (icvf, odi, isovf))
    shape = np.broadcast_shapes(icvf.shape, odi.shape, isovf.shape, mu.shape[:-1])
    icvf, odi, isovf = (np.broadcast_to(x, shape)[..., None] for x in (icvf, odi, isovf))
    mu = np.broadcast_to(mu, shape + (3,))
    norms = np.linalg.norm(bvecs, axis=1, keepdims=True)
    g = np.where(norms > 0, bvecs / np.where(norms > 0, norms, 1.0), 0.0)
    cos_angle = mu @ g.T  # (..., n_meas)
    kappa = odi_to_kappa(odi)
    e_ic = watson_stick_signal(bvals * d_par, kappa, cos_angle)
    e_ec = watson_zeppelin_signal(bvals, kappa, cos_angle, icvf, d_par)
    e_iso = np.exp(-bvals * d_iso)
    return (1.0 - isovf) * (icvf * e_ic + (1.0 - icvf) * e_ec) + isovf * e_iso


# --------------------------------------------------------------------------- fitting
#: grid sizes of the variable-projection search (see :mod:`._noddi_kernels`)
N_TAU = 48
#: tau quantum of the grid: tau_k = 1/3 + 2/3 k / K_FINE (needed by the power recursion)
K_FINE = 1024
ODI_MIN = 0.01
N_ICVF = 20
N_COS = 256
#: coarse pass: every COARSE_STEP-th tau node and every COARSE_J-th ICVF node
COARSE_STEP = 8
COARSE_J = 5
#: measurements used by the grid search: a b-stratified subset of about this many (every
#: s-th volume in b order); the polish uses all measurements
N_GRID_MEAS = 128
#: Levenberg-Marquardt iterations after the grid search: N_SUB_ITER on the grid subset,
#: then N_DIR_ITER on all measurements (two cheap iterations on the subset bring the fit
#: close enough that one on all measurements converges: noise-free maps within 0.003; one
#: and one left errors up to 0.014)
N_SUB_ITER = 2
N_DIR_ITER = 1
#: optional early stop: an LM stage ends once an accepted step lowers the residual sum of
#: squares by less than this fraction (0: always the full number of iterations)
LM_RTOL = 0.0
#: the polish refines the fibre direction
LM_DIRECTION = True
#: S0 modes: "fixed" at the mean b0 (the NODDI toolbox), "fit" (free amplitudes), "auto"
S0_MODES = ("auto", "fixed", "fit")
#: "auto" fixes S0 where the scheme has at least this many b0 volumes. Chosen from the
#: independent-simulator grid (benchmarks/bench_noddi_sim.py, RESULTS.md): even with the
#: single b0 of DSI-515 (S0 0.3-3x, Rician SNR 10/20/50, WM and GM, full and half sphere) a
#: fixed S0 was as accurate as a fitted one (r within 0.005 at SNR >= 20) and better at SNR
#: 10 (ICVF r 0.713 vs 0.688 WM, 0.537 vs 0.502 GM): the free amplitudes' S0 is no less
#: noisy than one b0. So "auto" is the toolbox's choice on every scheme.
S0_FIXED_MIN_B0 = 1
#: compatibility presets: "toolbox" reproduces the NODDI MATLAB toolbox's choices (S0 fixed
#: at the mean b0, least squares without a noise floor)
COMPAT = ("toolbox",)
#: a voxel whose ICVF or ISOVF reaches this value is counted as "at a bound"
BOUND = 0.99
_CHUNK = 20_000
_MAX_TABLE_B = 64
#: fit-status codes of :attr:`NoddiFit.status`
STATUS_OUTSIDE, STATUS_OK, STATUS_BOUND, STATUS_FAILED = 0, 1, 2, 3


def check_noddi_options(s0: str = "auto", noise: str = "auto",
                        compat: str | None = None) -> None:
    """InputError unless ``s0`` is one of :data:`S0_MODES`, ``noise`` one of
    :data:`~microvba.models.noise.METHODS` and ``compat`` None or one of :data:`COMPAT`
    (the CLI's ``--noddi-s0``, ``--noddi-noise``, ``--noddi-compat``)."""
    from .._validation import check_option_choice

    check_option_choice("--noddi-s0", s0, S0_MODES)
    check_option_choice("--noddi-noise", noise, METHODS)
    if compat is not None:
        check_option_choice("--noddi-compat", compat, COMPAT)


@lru_cache(maxsize=1)
def _kappa_from_tau_table() -> np.ndarray:
    kappa = np.r_[0.0, np.logspace(-4, np.log10(2 * 1000.0), 4000)]
    out = np.stack([watson_tau(kappa), kappa])
    out.flags.writeable = False
    return out


@lru_cache(maxsize=16)
def _stick_table(ub: tuple, d_par: float, tau_nodes: tuple) -> np.ndarray:
    """(tau node, b, |c|) float32 table of the dispersed-stick signal, cached: subjects that
    share a gradient table (and d_par) build it once per process."""
    kappa = np.interp(np.asarray(tau_nodes), *_kappa_from_tau_table())
    cos = np.linspace(0.0, 1.0, N_COS + 1)
    table = watson_stick_signal((np.asarray(ub) * d_par)[:, None, None], kappa[None, None, :],
                                cos[None, :, None])
    out = np.ascontiguousarray(table.transpose(2, 0, 1), dtype=np.float32)
    out.flags.writeable = False
    return out


def _table_bvalues(bvals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct b-values for the stick table (rounded coarser until at most 64)."""
    for step in (0.0, 1.0, 5.0, 10.0, 20.0, 50.0, 100.0):
        rb = bvals if step == 0 else np.round(bvals / step) * step
        ub, index = np.unique(rb, return_inverse=True)
        if ub.size <= _MAX_TABLE_B:
            return ub, index.astype(np.int64)
    raise AssertionError("unreachable: b rounded to 100 has <= 64 values in practice")


def _tensor_design(bvals: np.ndarray, bvecs: np.ndarray) -> np.ndarray:
    x, y, z = bvecs.T
    return np.stack([np.ones_like(bvals), -bvals * x * x, -bvals * y * y, -bvals * z * z,
                     -2 * bvals * x * y, -2 * bvals * x * z, -2 * bvals * y * z], axis=1)


class NoddiModel:
    r"""NODDI model with a fast compiled fit (variable projection on exact kernels).

    Parameters
    ----------
    gtab
        :class:`~microvba.models.gradients.GradientTable`; needs b0 volumes and at least two
        non-zero shells (a DSI grid qualifies; all b-values are used).
    d_par
        Intrinsic parallel diffusivity (mm²/s): :data:`D_PAR_WM` (default) or
        :data:`D_PAR_GM` for gray-matter analyses.
    d_iso
        Free-water diffusivity (mm²/s).
    dti_bmax
        Kept for compatibility with callers that share one setting with
        :class:`~microvba.models.dti.TensorModel` and recorded in :meth:`parameters`; the
        NODDI starting direction uses a tensor fitted on *all* volumes, because the high-b
        volumes carry most of the angular contrast (restricting it to b <= 1750 made the
        gray-matter ODI markedly worse: MAE 0.08 vs 0.04 on simulated DSI-515 voxels).
    posterior
        Blend the least-squares tau (ODI) towards its posterior mean on the coarse grid
        profile (flat prior over the nodes) where that posterior is broad. Off by default:
        with the noise-floor-aware polish the least-squares ODI is less biased and the
        blend (on a coarse, sub-sampled profile) made the DSI-515 gray-matter ODI worse
        (MAE 0.035 -> 0.053) while changing the 3-shell one by < 0.002.
    s0
        ``"fixed"``: S0 = the mean of the b0 volumes, held fixed (the NODDI toolbox's
        ``FitLinearDT`` default; the two amplitudes sum to 1); ``"fit"``: free amplitudes
        (S0 measured from all volumes); ``"auto"``: fixed with >= :data:`S0_FIXED_MIN_B0` b0
        volumes, i.e. on every scheme (see :data:`S0_FIXED_MIN_B0` for the simulations that
        chose it, single-b0 DSI included).
    noise
        ``"auto"``, ``"b0"``, ``"pairs"``, ``"residual"`` or ``"none"`` (least squares).
    compat
        ``"toolbox"``: every choice of the NODDI MATLAB toolbox (S0 fixed at the mean b0,
        least squares without a floor, no posterior means), for users who must match
        published toolbox numbers.
    bound_mean
        In low-SNR voxels with a noise floor (:math:`\sigma_v/S_0 >
        1/`:data:`~microvba.models._noddi_kernels.LOW_SNR`) and S0 fixed, report the
        posterior means of ICVF, ODI and ISOVF under a uniform prior on their ranges
        (numerical integration of the floor likelihood, the S0 scale integrated out)
        instead of the least-squares point clipped at the bounds (see the notes, step 4).
        Default on; ``False`` keeps the clipped least-squares estimate everywhere. It
        changes nothing where there is no floor (clinical schemes with ``noise="auto"``,
        ``compat="toolbox"``) or SNR > LOW_SNR.

    Notes
    -----
    Algorithm (per voxel, numba-compiled, voxels in blocks across the cores):

    0. volumes with the same b-value and direction up to sign (antipodal pairs of a full
       DSI grid, repeated b0s or directions) are replaced by their mean with weight = count
       (:func:`~microvba.models.gradients.antipodal_groups`): exact for least squares, as
       the model is symmetric under :math:`g \to -g`; DSI-515 becomes 258 measurements;
    1. direction from a log-linear tensor (OLS, then one WLS step) on all measurements;
    2. coarse grid over :math:`(\tau, \nu_{ic})` on a b-stratified subset of about
       :data:`N_GRID_MEAS` measurements, the two amplitudes (anisotropic, isotropic) in
       closed-form NNLS;
    3. Levenberg-Marquardt polish of :math:`(\tau, \nu_{ic})`, both amplitudes and the
       direction on the exact model, :data:`N_SUB_ITER` iterations on the subset and
       then :data:`N_DIR_ITER` on all measurements (up to
       :data:`~microvba.models._noddi_kernels.LOW_SNR_ITER` where the voxel's
       :math:`\sigma/S_0 > 1/`:data:`~microvba.models._noddi_kernels.LOW_SNR`, stopping once
       the residual falls by less than 0.1 %), with a **Rician noise floor**: the fitted
       magnitude is the Rician mean of the model :math:`m` for a noise variance
       :math:`\phi`, approximated by :math:`\sqrt{m^2+\phi} + (\sqrt{\pi/2}-1)
       \sqrt\phi\, e^{-m^2/(1.5\phi)}` (exact at :math:`m=0`, within about 1 % elsewhere).
       :math:`\phi = \sigma_v^2 / S_{0,v}^2` is each voxel's own noise variance in its own
       signal units: :math:`\sigma_v` is estimated per voxel (``noise``, see
       :mod:`microvba.models.noise`: b0 repeats, repeated-direction pairs or fit residuals,
       pooled 3x3x3 in an image) and recorded as :attr:`NoddiFit.sigma`; the floor term
       vanishes as :math:`m/\sigma` grows. ``noise="auto"`` uses it on DSI grids and
       schemes reaching b = 4000 (without it, high-b DSI measurements biased ICVF by +0.04 and
       ODI by +0.015 in white matter) and least squares on clinical multi-shell schemes
       (b0 repeats of real scans vary far more than the thermal noise; see
       :func:`~microvba.models.noise.choose_method`).
    4. **posterior means at the bounds** (``bound_mean``, low-SNR voxels with a floor
       only): least squares piles noisy voxels on a bound (on DSI-515 at SNR 20 the
       fitted ISOVF is exactly 0 in 15 % of voxels, 28 % at SNR 10), which throws away
       their ranking. ICVF, ODI (through the tau node index, nodes uniform in ODI) and
       ISOVF are replaced by their joint posterior means under a uniform prior on their
       ranges and the fit's own floor likelihood
       :math:`\exp(-\sum_i c_i (y_i - M_i(\theta))^2 / 2\phi)`, integrated numerically
       (:func:`~microvba.models._noddi_kernels._grid_posterior_mean`): a midpoint rule of
       9^3 nodes, first on an axis-aligned box of +-4 Laplace sd around the least-squares
       point (MacKay 2003, ch. 27: centre = the point, or the Gauss-Newton step a bound
       cut off; sd from :math:`\phi (J^\top J)^{-1}`), then on nodes along the principal
       axes of the first pass's posterior covariance (adaptive quadrature, as adaptive
       Gauss-Hermite: Liu & Pierce 1994). S0 is fixed at the b0, whose own noise
       (variance :math:`\phi/n_{b0}` relative) scales every normalised measurement: that
       scale is integrated out by 3-node Gauss-Hermite quadrature. The truncated-normal
       means of the Laplace marginals
       (:func:`~microvba.models._noddi_kernels.truncated_normal_mean`) are kept where the
       quadrature finds no weight. Only ICVF, ODI and ISOVF change; the direction, S0 and
       NRMSE are the least-squares fit's. Cost: ~4,400 likelihood evaluations per gated
       voxel (~0.9 ms at one thread, ~18x the fit; none above the gate, but a voxel's
       noisy single b0 can put it over: 0.085 % of SNR-30 DSI-515 voxels). On the simulated
       DSI-515 cells of RESULTS.md (issue #13, point 4) it raised GM ODI r at SNR 10 by
       0.06-0.11 over the Laplace marginals it replaces, ICVF r by 0.01-0.03, and lowered
       ODI and ISOVF MAE; ISOVF r moved by -0.002 to +0.02.

    Failed voxels (non-finite data, mean b0 <= 0, all zero) are NaN in the maps and 3 in
    :attr:`NoddiFit.status`.

    See :mod:`microvba.models._noddi_kernels`.
    """

    def __init__(self, gtab, d_par: float = D_PAR_WM, d_iso: float = D_ISO,
                 dti_bmax: float = 1750.0, posterior: bool = False, s0: str = "auto",
                 noise: str = "auto", compat: str | None = None,
                 bound_mean: bool = True) -> None:
        from .._validation import InputError, check_choice, check_in_range

        self.gtab = gtab
        s0 = check_choice("s0", s0, S0_MODES)
        noise = check_choice("noise", noise, METHODS)
        self.compat = None if compat is None else check_choice("compat", compat, COMPAT)
        self.d_par = check_in_range("d_par", d_par, 1e-4, 5e-3)
        self.d_iso = check_in_range("d_iso", d_iso, 1e-4, 5e-3)
        self.dti_bmax = float(dti_bmax)
        self.posterior = bool(posterior)
        self.bound_mean = bool(bound_mean) and self.compat != "toolbox"
        if not np.any(gtab.b0s_mask):
            raise InputError("NODDI needs at least one b0 volume to normalise the signal",
                             file=gtab.source, fix="Include a b=0 volume in the scheme.")
        if gtab.shells.size < 2:
            raise InputError(
                f"NODDI needs at least two non-zero shells; this scheme has "
                f"{gtab.shells.size} ({', '.join(f'b={b:g}' for b in gtab.shells) or 'none'}). "
                "With one shell the intra-cellular fraction, dispersion and free water trade "
                "off against each other and are not identifiable (Zhang et al. 2012)",
                file=gtab.source,
                fix="Fit only the tensor (--model tensor), or acquire a second shell "
                    "(e.g. b=700 and b=2000 s/mm^2).")
        # volumes with the same b and direction up to sign predict the same signal: the
        # kernels fit their means with weight = count (exact for least squares; a full
        # DSI grid halves, 515 -> 258 measurements)
        labels = antipodal_groups(gtab.bvals, gtab.bvecs)
        counts = np.bincount(labels)
        rep = np.unique(labels, return_index=True)[1]  # first volume of each group
        # measurement order of the kernels: the grid-search subset first (every s-th
        # measurement in b order, s = round(n / N_GRID_MEAS)), then the others
        n_meas = rep.size
        order = np.argsort(gtab.bvals[rep], kind="stable")
        stride = max(1, int(round(n_meas / N_GRID_MEAS)))
        first = order[::stride]
        perm = np.r_[first, np.setdiff1d(order, first, assume_unique=True)].astype(np.int64)
        by_group = np.argsort(labels, kind="stable")
        group_start = np.r_[0, np.cumsum(counts)]
        members = np.ascontiguousarray(np.concatenate(
            [by_group[group_start[u]:group_start[u + 1]] for u in perm]).astype(np.int64))
        starts = np.r_[0, np.cumsum(counts[perm])].astype(np.int64)
        size = counts[perm]
        # first and second member of each group (the same volume twice for a single one;
        # groups of more than two are averaged separately, their first two read as one)
        pair_a = members[starts[:-1]]
        pair_b = np.where(size == 2, members[np.minimum(starts[:-1] + 1, starts[-1] - 1)],
                          pair_a)
        self._groups = (members, starts, pair_a, np.ascontiguousarray(pair_b),
                        np.flatnonzero(size > 2).astype(np.int64))
        self._count = counts[perm].astype(float)
        self.n_measurements = int(n_meas)
        bvals, bvecs = gtab.bvals[rep][perm], gtab.bvecs[rep][perm]
        self._b0_idx = np.flatnonzero(gtab.b0s_mask[rep][perm])
        xmat = _tensor_design(bvals, bvecs)
        self._xmat_t = np.ascontiguousarray(xmat.T)
        sw = np.sqrt(self._count)
        # weighted OLS: pinv(sqrt(C) X) sqrt(C)
        self._pinv = np.ascontiguousarray(np.linalg.pinv(xmat * sw[:, None]) * sw[None, :])
        self._xprod = np.ascontiguousarray(
            np.stack([xmat[:, d] * xmat[:, e] for d in range(7) for e in range(d + 1)]))
        q = bvals * self.d_par
        self._q = q
        self._eiso = np.exp(-bvals * self.d_iso)
        ub, ub_index = _table_bvalues(bvals)
        # kernels: directions as (3, n) rows, b-values as row offsets in a (b, |c|) slice
        self._ub = ub_index * (N_COS + 1)
        self._bvecs = np.ascontiguousarray(bvecs.T)
        ns = first.size
        # grid subset; the grid works in the weighted space (e0, ball times sqrt(count))
        self._sub = (np.ascontiguousarray(self._bvecs[:, :ns]),) + tuple(
            np.ascontiguousarray(a[:ns]) for a in (
                q, np.exp(-q) * sw, self._eiso, self._ub, sw, self._eiso * sw))
        self._tau_kappa = _kappa_from_tau_table()
        # table nodes uniform in ODI (1 -> ODI_MIN), snapped to the tau quantum
        tau_odi = watson_tau(odi_to_kappa(np.linspace(1.0, ODI_MIN, N_TAU)))
        self._k_nodes = np.unique(np.round((tau_odi - 1.0 / 3.0) * 1.5 * K_FINE)).astype(
            np.int64)
        self._tau_nodes = 1.0 / 3.0 + 2.0 / 3.0 * self._k_nodes / K_FINE
        # (tau node, b, |c|): one tau node's slice stays in L1 cache during a grid pass
        self._table = _stick_table(tuple(float(b) for b in ub), self.d_par,
                                   tuple(float(t) for t in self._tau_nodes))
        # noise-floor and S0 settings (see the class notes)
        n_b0 = int(np.sum(gtab.b0s_mask))
        self._b0_vol = np.flatnonzero(gtab.b0s_mask)
        self._pairs = repeated_pairs(gtab.bvals, labels, gtab.b0s_mask)
        if self.compat == "toolbox":
            self.s0_mode, self.noise_method = "fixed", "none"
        else:
            self.s0_mode = ("fixed" if n_b0 >= S0_FIXED_MIN_B0 else "fit") if s0 == "auto" \
                else s0
            self.noise_method = choose_method(n_b0, len(self._pairs), float(gtab.bvals.max())) \
                if noise == "auto" \
                else noise
        if self.noise_method == "b0" and n_b0 < 2:
            raise InputError(f"noise='b0' needs at least two b0 volumes; this scheme has {n_b0}",
                             file=gtab.source,
                             fix="Use noise='auto' (pairs of repeated directions, else fit "
                                 "residuals) or 'residual'.")
        if self.noise_method == "pairs" and len(self._pairs) == 0:
            raise InputError("noise='pairs' needs repeated diffusion-weighted directions "
                             "(e.g. antipodal pairs of a full DSI grid); this scheme has none",
                             file=gtab.source, fix="Use noise='auto' or 'residual'.")

    def parameters(self) -> dict:
        """Settings recorded in sidecars."""
        from ._noddi_kernels import LOW_SNR, LOW_SNR_ITER

        return {"model": "noddi", "d_par": self.d_par, "d_iso": self.d_iso,
                "dti_bmax": self.dti_bmax, "direction": "tensor on all volumes + polish",
                "n_tau": N_TAU, "n_icvf": N_ICVF, "posterior": self.posterior,
                "n_volumes": int(self.gtab.n_volumes),
                "n_measurements": self.n_measurements,
                "equivalent_volumes": "same b and direction up to sign averaged, weighted "
                                      "by count (exact for least squares)",
                "lm_iterations": f"{N_SUB_ITER} on a {self._sub[1].size}-measurement subset "
                                 f"+ {N_DIR_ITER} on all (up to {LOW_SNR_ITER} where "
                                 f"sigma/S0 > 1/{LOW_SNR:g})",
                "noise_floor": "none (least squares)" if self.noise_method == "none" else
                f"Rician floor per voxel, sigma from '{self.noise_method}'",
                "noise_method": self.noise_method, "s0": self.s0_mode,
                "compat": self.compat or "none",
                "bounded_estimates": (
                    f"posterior mean at bounds, low-SNR voxels (sigma/S0 > 1/{LOW_SNR:g}, "
                    "floor on, S0 fixed): uniform prior on the ranges, the floor "
                    "likelihood integrated on an adaptive grid, S0 scale integrated out"
                    if self.bound_mean else "least squares clipped at the bounds"),
                "algorithm": "microvba variable projection (exact Watson kernels)"}

    def _kernel_args(self) -> tuple:
        return (self._groups, self._count, self._b0_idx, self._pinv, self._xmat_t, self._xprod,
                self._bvecs, self._q, self._eiso, self._ub, self._sub, self._table,
                self._k_nodes, self._tau_nodes, K_FINE, N_ICVF, COARSE_STEP, COARSE_J,
                N_SUB_ITER, N_DIR_ITER, LM_DIRECTION, LM_RTOL)

    @property
    def fixed_s0(self) -> bool:
        """True where S0 is held at the mean b0 (the toolbox's choice), False where fitted."""
        return self.s0_mode == "fixed"

    def noise_variance(self, signals: np.ndarray) -> np.ndarray:
        r"""Per-row noise variance :math:`\sigma^2` (signal units squared) of ``signals``
        (n, n_volumes) by :attr:`noise_method` (:mod:`microvba.models.noise`), before any
        spatial pooling; zeros for ``"none"``, NaN where a row gives no estimate."""
        from ._noddi_kernels import free_floor

        signals = np.asarray(signals)
        if self.noise_method == "none":
            return np.zeros(signals.shape[0])
        if self.noise_method == "b0":
            return b0_variance(signals, self._b0_vol)
        if self.noise_method == "pairs":
            return pair_variance(signals, self._pairs)
        return free_floor(signals, self._kernel_args(), self.fixed_s0, self._tau_kappa)

    def fit_voxels(self, signals: np.ndarray, floor: float | None = None,
                   sigma: np.ndarray | None = None) -> np.ndarray:
        """Fit (n_voxels, n_volumes) signals; returns the raw (n_voxels, 9) parameter rows.

        ``sigma``: per-row noise sd in signal units (the Rician floor of each voxel);
        ``floor``: one noise *variance* for every row (0 switches the floor off); neither:
        estimated per row by :meth:`noise_variance` (no spatial pooling)."""
        from ._noddi_kernels import fit_voxels

        if sigma is None and floor is None and self.noise_method == "pairs":
            return self._fit_fused(signals)[0]
        if sigma is not None:
            sigma2 = np.square(np.asarray(sigma, np.float64))
        elif floor is not None:
            sigma2 = np.full(signals.shape[0], float(floor))
        else:
            sigma2 = self.noise_variance(signals)
        sigma2 = np.where(np.isfinite(sigma2) & (sigma2 > 0), sigma2, 0.0)
        return fit_voxels(signals, *self._kernel_args(), sigma2, self.fixed_s0,
                          self.posterior, self._tau_kappa, bound_mean=self.bound_mean)

    def _fit_fused(self, signals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fit with each row's own unpooled ``pairs`` variance, estimated in the fit's pass
        over the row (the same estimator as :meth:`noise_variance`, without a second read
        of the data); returns (parameter rows, variances)."""
        from ._noddi_kernels import fit_voxels

        return fit_voxels(signals, *self._kernel_args(), 0.0, self.fixed_s0, self.posterior,
                          self._tau_kappa, pairs=self._pairs, bound_mean=self.bound_mean)

    def fit(self, data: np.ndarray, mask: np.ndarray | None = None,
            chunk_size: int = _CHUNK, progress_desc: str | None = None) -> NoddiFit:
        """Fit every voxel of ``data`` (..., n_volumes) inside ``mask``, chunk by chunk.

        Chunks are slabs read in the array's own memory layout (a Fortran-ordered image, as
        nibabel returns, is never copied whole); each voxel's result depends on its own
        signal and its noise level only, so the maps do not depend on the chunk size or the
        number of threads. The noise sd (:attr:`NoddiFit.sigma`) is estimated per voxel and,
        in a 3-D image, pooled over the mask in a 3x3x3 neighbourhood
        (:mod:`microvba.models.noise`): a pass over the data before the fit. Where nothing
        is pooled (an (n, n_volumes) array) and the method is ``pairs``, each row's variance
        is estimated inside the fit's own pass over the row (one read of the data; the same
        estimator, maps equal to the two-pass route's to 1e-6)."""
        from .._logging import progress

        data, mask = check_data(self.gtab, data, mask)
        spatial = data.shape[:-1]
        n_spatial = int(np.prod(spatial))
        var = np.full(n_spatial, np.nan)
        pooled = len(spatial) == 3 and mask.sum() > 1
        full = np.full((n_spatial, 9), np.nan)
        if self.noise_method == "pairs" and not pooled:
            # nothing to pool: each row's variance is estimated in the fit's own pass
            chunks = list(_mask_chunks(data, mask, chunk_size, read=False))
            for idx, _ in progress(chunks, desc=progress_desc or "NODDI", total=len(chunks),
                                   unit="chunk"):
                full[idx], var[idx] = self._fit_fused(_read_voxels(data, idx))
            sigma = np.where(mask.ravel(), np.sqrt(np.maximum(np.nan_to_num(var), 0.0)), np.nan)
            return NoddiFit(full.reshape(spatial + (9,)), mask, sigma.reshape(spatial),
                            self.noise_method)
        if self.noise_method != "none":
            for idx, sig in _mask_chunks(data, mask, chunk_size):
                var[idx] = self.noise_variance(sig)
            if pooled:
                var = pool_variance(var.reshape(spatial), mask).ravel()
        else:
            var[np.flatnonzero(mask.ravel())] = 0.0
        chunks = list(_mask_chunks(data, mask, chunk_size, read=False))
        for idx, _ in progress(chunks, desc=progress_desc or "NODDI", total=len(chunks),
                               unit="chunk"):
            sig = _read_voxels(data, idx)
            full[idx] = self.fit_voxels(sig, sigma=np.sqrt(np.maximum(
                np.nan_to_num(var[idx]), 0.0)))
        sigma = np.where(mask.ravel(), np.sqrt(np.maximum(np.nan_to_num(var), 0.0)), np.nan)
        return NoddiFit(full.reshape(spatial + (9,)), mask, sigma.reshape(spatial),
                        self.noise_method)


def _slab_axis(data: np.ndarray) -> int:
    """Spatial axis to cut slabs along: the slowest-varying one in memory."""
    nsp = data.ndim - 1
    if nsp <= 1:
        return 0
    return nsp - 1 if data.flags.f_contiguous and not data.flags.c_contiguous else 0


def _mask_chunks(data: np.ndarray, mask: np.ndarray, chunk_size: int, read: bool = True):
    """Yield (flat C-order voxel indices, (n, n_volumes) signals or None) of the mask in slabs
    of whole slices along the slowest axis of ``data``, about ``chunk_size`` voxels each
    (at least one slice)."""
    if mask.ndim <= 1:  # rows of a (n, n_volumes) array: consecutive runs of the mask
        idx_all = np.flatnonzero(mask)
        for s in range(0, idx_all.size, chunk_size):
            idx = idx_all[s:s + chunk_size]
            yield idx, (_read_voxels(data, idx) if read else None)
        return
    axis = _slab_axis(data)
    flat_index = np.arange(mask.size).reshape(mask.shape)
    n_slices = mask.shape[axis] if mask.ndim else 1
    counts = mask.sum(axis=tuple(a for a in range(mask.ndim) if a != axis)) if mask.ndim > 1 \
        else mask.astype(np.int64)
    start = 0
    while start < n_slices:
        stop, total = start, 0
        while stop < n_slices and (total == 0 or total + counts[stop] <= chunk_size):
            total += int(counts[stop])
            stop += 1
        if total:
            sl = (slice(None),) * axis + (slice(start, stop),)
            m = mask[sl]
            idx = flat_index[sl][m]
            order = np.argsort(idx, kind="stable")
            idx = idx[order]
            if mask.ndim <= 1 or len(idx) <= chunk_size:
                yield idx, (data[sl][m][order] if read else None)
            else:  # a single slice with more than chunk_size voxels
                for s in range(0, idx.size, chunk_size):
                    yield idx[s:s + chunk_size], (_read_voxels(data, idx[s:s + chunk_size])
                                                  if read else None)
        start = stop


def _read_voxels(data: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(n, n_volumes) float32 signals of the voxels with flat C-order indices ``idx``."""
    coords = np.unravel_index(idx, data.shape[:-1])
    return np.ascontiguousarray(data[coords], dtype=np.float32)


class NoddiFit:
    """Fitted NODDI parameters.

    Maps are 0 outside the mask and **NaN** inside it where the data cannot be fitted
    (a non-finite value, mean b0 <= 0, all zero) or the fit failed; :attr:`status` says which
    (codes :data:`STATUS_OUTSIDE`, :data:`STATUS_OK`, :data:`STATUS_BOUND`,
    :data:`STATUS_FAILED`); :attr:`sigma` is the noise sd used for the Rician floor."""

    def __init__(self, params: np.ndarray, mask: np.ndarray, sigma: np.ndarray | None = None,
                 noise_method: str | None = None) -> None:
        self.params = params
        self.mask = mask
        self.sigma = sigma
        self.noise_method = noise_method

    def _col(self, i: int) -> np.ndarray:
        return np.where(self.mask, self.params[..., i], 0.0)

    @property
    def icvf(self) -> np.ndarray:
        return self._col(0)

    @property
    def isovf(self) -> np.ndarray:
        return self._col(1)

    @property
    def kappa(self) -> np.ndarray:
        return self._col(2)

    @property
    def odi(self) -> np.ndarray:
        return np.where(self.mask, kappa_to_odi(self.params[..., 2]), 0.0)

    @property
    def nrmse(self) -> np.ndarray:
        return self._col(4)

    @property
    def s0(self) -> np.ndarray:
        return self._col(5)

    @property
    def direction(self) -> np.ndarray:
        return np.where(self.mask[..., None], self.params[..., 6:9], 0.0)

    @property
    def failed(self) -> np.ndarray:
        """Voxels of the mask without a finite fit."""
        return self.mask & ~np.all(np.isfinite(self.params[..., :3]), axis=-1)

    @property
    def status(self) -> np.ndarray:
        """uint8 map: 0 outside the mask, 1 fitted, 2 fitted with ICVF or ISOVF at the
        :data:`BOUND`, 3 no fit (data that cannot be fitted, or a failed fit)."""
        st = np.where(self.mask, STATUS_OK, STATUS_OUTSIDE).astype(np.uint8)
        with np.errstate(invalid="ignore"):
            at_bound = (self.params[..., 0] >= BOUND) | (self.params[..., 1] >= BOUND)
        st[self.mask & at_bound] = STATUS_BOUND
        st[self.failed] = STATUS_FAILED
        return st

    @property
    def icvf_modulated(self) -> np.ndarray:
        """Tissue-weighted ICVF, :math:`\\nu_{ic}(1-\\nu_{iso})` (Parker et al. 2021)."""
        return self.icvf * (1.0 - self.isovf)

    @property
    def odi_modulated(self) -> np.ndarray:
        """Tissue-weighted ODI, :math:`\\mathrm{ODI}(1-\\nu_{iso})` (Parker et al. 2021)."""
        return self.odi * (1.0 - self.isovf)

    @property
    def n_failed(self) -> int:
        """Voxels in the mask without a fit (data that cannot be fitted, or a failed fit)."""
        return int(np.sum(self.failed))

    @property
    def n_bound(self) -> int:
        """Voxels in the mask with ICVF or ISOVF >= :data:`BOUND` (0.99)."""
        return int(np.sum(self.status == STATUS_BOUND))
