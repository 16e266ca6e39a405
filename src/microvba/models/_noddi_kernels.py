r"""Compiled per-voxel NODDI search (numba).

Per voxel, with the signal normalised by the mean b0:

1. mean direction :math:`\mu` = principal eigenvector of a log-linear WLS tensor fitted on
   the volumes with :math:`b \le b_{dti}`;
2. variable projection over the two non-linear parameters, the Watson mean
   :math:`\tau = \langle(\mu\cdot n)^2\rangle` (uniform grid, :math:`\tau_k = \tfrac13 +
   \tfrac23 k/K`, which is close to uniform in ODI) and the intra-cellular fraction
   :math:`f = j/J` (which also sets the tortuosity), the two linear amplitudes
   (anisotropic and isotropic) being solved in closed form with non-negativity (2x2 NNLS);
3. a coarse pass on every other grid node, a full-resolution pass around the best node and a
   separable parabolic refinement of the residual surface; the fractions are re-solved at
   the refined point.

The extra-cellular signal on the grid needs no exponential: with the uniform grids,
:math:`E_{ec}(k, j) = e^{-q}\,(B_0 D^k)^j` with per-measurement :math:`q = b d_\parallel`,
:math:`B_0 = e^{2q/(3J)}`, :math:`D = e^{(q/3 - q c^2)/(KJ)}` (:math:`c = \mu\cdot g`), so each
grid node costs four dot products. The dispersed-stick signal comes from an exact table over
(b, :math:`|c|`, :math:`\tau_k`) interpolated linearly in :math:`|c|` (257 nodes).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# output columns
OUT_ICVF, OUT_ISOVF, OUT_KAPPA, OUT_TAU, OUT_NRMSE, OUT_S0 = 0, 1, 2, 3, 4, 5
OUT_DIR = 6  # 6, 7, 8
N_OUT = 9


@njit(cache=True, nogil=True, fastmath=True)
def _nnls2(aa, ae, ay, ee, ey, yy):
    """min ||y - s a - w e||^2 with s, w >= 0; returns (residual, s, w)."""
    det = aa * ee - ae * ae
    if det > 1e-12 * aa * ee:
        s = (ay * ee - ey * ae) / det
        w = (ey * aa - ay * ae) / det
        if s >= 0.0 and w >= 0.0:
            return yy - s * ay - w * ey, s, w
    s = max(ay, 0.0) / aa if aa > 0 else 0.0
    r1 = yy - s * ay
    w = max(ey, 0.0) / ee if ee > 0 else 0.0
    r2 = yy - w * ey
    if r1 <= r2:
        return r1, s, 0.0
    return r2, 0.0, w


@njit(cache=True, nogil=True, fastmath=True)
def _principal_direction(y, sub, xmat, out_dir):
    """Principal eigenvector of a WLS log-linear tensor fit on volumes ``sub``."""
    n = sub.size
    ly = np.empty(n)
    for i in range(n):
        ly[i] = np.log(max(y[sub[i]], 1e-4))
    # OLS then one WLS step with weights = predicted signal^2
    m = xmat.T @ xmat
    beta = np.linalg.solve(m, xmat.T @ ly)
    pred = xmat @ beta
    w = np.empty(n)
    for i in range(n):
        w[i] = np.exp(2.0 * min(pred[i], 2.0))
    xw = xmat * w[:, None]
    m = xw.T @ xmat
    for d in range(7):
        m[d, d] += 1e-12
    beta = np.linalg.solve(m, xw.T @ ly)
    ten = np.empty((3, 3))
    ten[0, 0], ten[1, 1], ten[2, 2] = beta[1], beta[2], beta[3]
    ten[0, 1] = ten[1, 0] = beta[4]
    ten[0, 2] = ten[2, 0] = beta[5]
    ten[1, 2] = ten[2, 1] = beta[6]
    _, vecs = np.linalg.eigh(ten)
    out_dir[0], out_dir[1], out_dir[2] = vecs[0, 2], vecs[1, 2], vecs[2, 2]


@njit(cache=True, nogil=True, fastmath=True)
def _stick_column(k, table, ub, cbin, cw, out):
    for i in range(out.size):
        lo = table[ub[i], cbin[i], k]
        hi = table[ub[i], cbin[i] + 1, k]
        out[i] = lo + cw[i] * (hi - lo)


@njit(cache=True, nogil=True, fastmath=True)
def _eval_k(k, j_lo, j_hi, j_step, n_j, eic, bk, e0, eiso, y, yy, ee, ey, res, scratch):
    """Fill res[k, j] for j in range(j_lo, j_hi + 1, j_step)."""
    n = y.size
    ii = 0.0
    ie = 0.0
    iy = 0.0
    for i in range(n):
        ii += eic[i] * eic[i]
        ie += eic[i] * eiso[i]
        iy += eic[i] * y[i]
    # scratch = e0 * bk^j_lo ; step multiplier = bk^j_step
    mult = scratch[1]
    p = scratch[0]
    for i in range(n):
        b = bk[i]
        v = e0[i]
        for _ in range(j_lo):
            v *= b
        p[i] = v
        s = 1.0
        for _ in range(j_step):
            s *= b
        mult[i] = s
    for j in range(j_lo, j_hi + 1, j_step):
        cc = 0.0
        ic = 0.0
        ce = 0.0
        cy = 0.0
        for i in range(n):
            v = p[i]
            cc += v * v
            ic += v * eic[i]
            ce += v * eiso[i]
            cy += v * y[i]
            p[i] = v * mult[i]
        f = j / n_j
        g = 1.0 - f
        aa = f * f * ii + 2.0 * f * g * ic + g * g * cc
        ae = f * ie + g * ce
        ay = f * iy + g * cy
        r, _, _ = _nnls2(aa, ae, ay, ee, ey, yy)
        res[k, j] = r


@njit(cache=True, nogil=True, fastmath=True)
def _power_rows(b0, d, k, out):
    for i in range(out.size):
        v = b0[i]
        for _ in range(k):
            v *= d[i]
        out[i] = v


@njit(cache=True, nogil=True, fastmath=True)
def _parabola(rm, r0, rp):
    den = rm - 2.0 * r0 + rp
    if den <= 0.0 or not np.isfinite(den):
        return 0.0
    return min(max(0.5 * (rm - rp) / den, -0.5), 0.5)


@njit(cache=True, nogil=True, fastmath=True)
def _fit_voxel(y, b0_idx, sub, xmat, bvecs, q, e0, eiso, b0fac, ub, table, n_k, n_j,
               coarse, tau_grid_kappa, out):
    n = y.size
    s0 = 0.0
    for i in b0_idx:
        s0 += y[i]
    s0 /= b0_idx.size
    if not (s0 > 0.0) or not np.isfinite(s0):
        out[:] = np.nan
        return
    yn = y / s0
    _principal_direction(yn, sub, xmat, out[OUT_DIR:OUT_DIR + 3])
    mu = out[OUT_DIR:OUT_DIR + 3]
    n_c = table.shape[1] - 1
    cbin = np.empty(n, np.int64)
    cw = np.empty(n)
    c2 = np.empty(n)
    dmul = np.empty(n)
    yy = 0.0
    ee = 0.0
    ey = 0.0
    for i in range(n):
        c = abs(mu[0] * bvecs[i, 0] + mu[1] * bvecs[i, 1] + mu[2] * bvecs[i, 2])
        c = min(c, 1.0)
        c2[i] = c * c
        x = c * n_c
        lo = min(int(x), n_c - 1)
        cbin[i] = lo
        cw[i] = x - lo
        dmul[i] = np.exp((q[i] / 3.0 - q[i] * c * c) / (n_k * n_j))
        yy += yn[i] * yn[i]
        ee += eiso[i] * eiso[i]
        ey += eiso[i] * yn[i]
    res = np.full((n_k, n_j + 1), np.inf)
    scratch = np.empty((2, n))
    eic = np.empty(n)
    bk = np.empty(n)
    # coarse pass: every `coarse`-th node in k and j
    step_d = np.empty(n)
    for i in range(n):
        v = 1.0
        for _ in range(coarse):
            v *= dmul[i]
        step_d[i] = v
    bk[:] = b0fac
    for k in range(0, n_k, coarse):
        _stick_column(k, table, ub, cbin, cw, eic)
        _eval_k(k, 0, n_j, coarse, n_j, eic, bk, e0, eiso, yn, yy, ee, ey, res, scratch)
        for i in range(n):
            bk[i] *= step_d[i]
    kb, jb = _argmin2(res)
    # fine pass around the best coarse node
    k_lo, k_hi = max(kb - coarse, 0), min(kb + coarse, n_k - 1)
    j_lo, j_hi = max(jb - coarse, 0), min(jb + coarse, n_j)
    for k in range(k_lo, k_hi + 1):
        _power_rows(b0fac, dmul, k, bk)
        _stick_column(k, table, ub, cbin, cw, eic)
        _eval_k(k, j_lo, j_hi, 1, n_j, eic, bk, e0, eiso, yn, yy, ee, ey, res, scratch)
    kb, jb = _argmin2(res)
    dk = 0.0
    if 0 < kb < n_k - 1:
        dk = _parabola(res[kb - 1, jb], res[kb, jb], res[kb + 1, jb])
    dj = 0.0
    if 0 < jb < n_j:
        dj = _parabola(res[kb, jb - 1], res[kb, jb], res[kb, jb + 1])
    kr = kb + dk
    f = min(max((jb + dj) / n_j, 0.0), 1.0)
    tau = 1.0 / 3.0 + 2.0 / 3.0 * kr / n_k
    # re-solve the amplitudes at the refined point
    k0 = min(int(kr), n_k - 2)
    fr = kr - k0
    _stick_column(k0, table, ub, cbin, cw, eic)
    _stick_column(k0 + 1, table, ub, cbin, cw, bk)
    alpha = 0.5 * (1.0 + tau)
    gamma = -0.5 * (3.0 * tau - 1.0)
    aa = 0.0
    ae = 0.0
    ay = 0.0
    a = scratch[0]
    for i in range(n):
        e_ic = eic[i] + fr * (bk[i] - eic[i])
        e_ec = np.exp(-q[i] + q[i] * f * (alpha + gamma * c2[i]))
        a[i] = f * e_ic + (1.0 - f) * e_ec
        aa += a[i] * a[i]
        ae += a[i] * eiso[i]
        ay += a[i] * yn[i]
    r, s, w = _nnls2(aa, ae, ay, ee, ey, yy)
    out[OUT_ICVF] = f
    out[OUT_ISOVF] = w / (s + w) if s + w > 0 else 0.0
    out[OUT_TAU] = tau
    out[OUT_KAPPA] = np.interp(tau, tau_grid_kappa[0], tau_grid_kappa[1])
    out[OUT_NRMSE] = np.sqrt(max(r, 0.0) / yy) if yy > 0 else np.nan
    out[OUT_S0] = (s + w) * s0


@njit(cache=True, nogil=True)
def _argmin2(res):
    best = np.inf
    kb = 0
    jb = 0
    for k in range(res.shape[0]):
        for j in range(res.shape[1]):
            if res[k, j] < best:
                best = res[k, j]
                kb = k
                jb = j
    return kb, jb


@njit(cache=True, nogil=True, parallel=True)
def fit_voxels(data, b0_idx, sub, xmat, bvecs, q, e0, eiso, b0fac, ub, table, n_k, n_j,
               coarse, tau_grid_kappa):
    """Fit every row of ``data`` (n_voxels, n_meas); returns (n_voxels, N_OUT)."""
    nv = data.shape[0]
    out = np.empty((nv, N_OUT))
    for v in prange(nv):
        y = data[v].astype(np.float64)
        _fit_voxel(y, b0_idx, sub, xmat, bvecs, q, e0, eiso, b0fac, ub, table, n_k, n_j,
                   coarse, tau_grid_kappa, out[v])
    return out
