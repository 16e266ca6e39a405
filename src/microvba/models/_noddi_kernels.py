r"""Compiled per-voxel NODDI search (numba).

Per voxel, with the signal normalised by the mean b0:

1. starting direction :math:`\mu` = principal eigenvector of a log-linear WLS tensor fitted
   on the volumes with :math:`b \le b_{dti}`;
2. variable projection over the two non-linear parameters, the Watson moment
   :math:`\tau = \langle(\mu\cdot n)^2\rangle` (table nodes uniform in ODI, snapped to
   :math:`\tau_k = \tfrac13 + \tfrac23 k/K`) and the intra-cellular fraction :math:`f = j/J`
   (which also sets the tortuosity), the two linear amplitudes (anisotropic, isotropic)
   being solved in closed form with non-negativity (2x2 NNLS). A coarse pass (every
   ``coarse``-th tau node, every 4th f node) is followed by 3x3 passes with halving steps;
3. a bounded Levenberg-Marquardt polish of (tau, f, both amplitudes, direction) from the
   best node, on the exact model (table interpolated bilinearly in :math:`|c|` and tau).
5. optionally (``posterior``), the coarse pass is repeated with the refined direction and the
   node index is blended towards its posterior mean, weight ``min(1, 2 sd / coarse)``, where
   the profile residual is flat in tau.

The extra-cellular signal on the grid needs no exponential: with the quantised tau,
:math:`E_{ec}(k, j) = e^{-q}\,(B_0 D^k)^j` with per-measurement :math:`q = b d_\parallel`,
:math:`B_0 = e^{2q/(3J)}`, :math:`D = e^{(q/3 - q c^2)/(KJ)}` (:math:`c = \mu\cdot g`),
evaluated with binary powers, so each grid node costs four dot products. The dispersed-stick
signal comes from an exact table over (b, :math:`|c|`, tau node) interpolated linearly in
:math:`|c|` (257 nodes; error < 1e-4 for b d_par < 20).
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
def _eval_k(k, j_lo, j_hi, j_step, n_j, eic, bk, e0, eiso, y, yy, ee, ey, res, scratch,
            tmp):
    """Fill res[k, j] for j in range(j_lo, j_hi + 1, j_step)."""
    n = y.size
    ii = 0.0
    ie = 0.0
    iy = 0.0
    for i in range(n):
        ii += eic[i] * eic[i]
        ie += eic[i] * eiso[i]
        iy += eic[i] * y[i]
    # p = e0 * bk^j_lo ; mult = bk^j_step
    mult = scratch[1]
    p = scratch[0]
    p[:] = e0
    _power(bk, j_lo, p, tmp)
    mult[:] = 1.0
    _power(bk, j_step, mult, tmp)
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
def _power(base, e, out, tmp):
    """out *= base**e elementwise (binary exponentiation; tmp is scratch)."""
    tmp[:] = base
    while e > 0:
        if e & 1:
            for i in range(out.size):
                out[i] *= tmp[i]
        e >>= 1
        if e > 0:
            for i in range(out.size):
                tmp[i] *= tmp[i]


@njit(cache=True, nogil=True, fastmath=True)
def _node_bk(kf, pw, b0fac, out):
    """out = b0fac * dmul**kf from the binary powers pw[b] = dmul**(2**b)."""
    out[:] = b0fac
    for b in range(pw.shape[0]):
        if (kf >> b) & 1:
            for i in range(out.size):
                out[i] *= pw[b, i]


@njit(cache=True, nogil=True, fastmath=True)
def _binary_powers(dmul, pw):
    pw[0] = dmul
    for b in range(1, pw.shape[0]):
        for i in range(dmul.size):
            pw[b, i] = pw[b - 1, i] * pw[b - 1, i]


@njit(cache=True, nogil=True, fastmath=True)
def _geometry(mu, bvecs, q, n_c, n_kj, cbin, cw, c2, dmul):
    """Per-measurement |mu.g| table position and the extra-cellular grid multiplier."""
    for i in range(q.size):
        c = abs(mu[0] * bvecs[i, 0] + mu[1] * bvecs[i, 1] + mu[2] * bvecs[i, 2])
        c = min(c, 1.0)
        c2[i] = c * c
        x = c * n_c
        lo = min(int(x), n_c - 1)
        cbin[i] = lo
        cw[i] = x - lo
        dmul[i] = np.exp((q[i] / 3.0 - q[i] * c * c) / n_kj)


@njit(cache=True, nogil=True, fastmath=True)
def _search(k_lo, k_hi, k_step, j_lo, j_hi, j_step, n_k, n_j, table, ub, cbin, cw, k_nodes,
            pw, b0fac, e0, eiso, yn, yy, ee, ey, res, eic, bk, scratch, tmp):
    for k in range(k_lo, k_hi + 1, k_step):
        _node_bk(k_nodes[k], pw, b0fac, bk)
        _stick_column(k, table, ub, cbin, cw, eic)
        _eval_k(k, j_lo, j_hi, j_step, n_j, eic, bk, e0, eiso, yn, yy, ee, ey, res, scratch,
                tmp)


@njit(cache=True, nogil=True, fastmath=True)
def _amplitudes(kb, jb, tau_nodes, n_j, table, ub, cbin, cw, c2, q, e0, eiso, yn, ee, ey,
                yy, eic, a):
    """Solve the amplitudes at grid node (kb, jb); returns (residual, s, w)."""
    tau = tau_nodes[kb]
    f = jb / n_j
    _stick_column(kb, table, ub, cbin, cw, eic)
    alpha = 0.5 * (1.0 + tau)
    gamma = -0.5 * (3.0 * tau - 1.0)
    aa = 0.0
    ae = 0.0
    ay = 0.0
    for i in range(q.size):
        e_ec = np.exp(-q[i] + q[i] * f * (alpha + gamma * c2[i]))
        a[i] = f * eic[i] + (1.0 - f) * e_ec
        aa += a[i] * a[i]
        ae += a[i] * eiso[i]
        ay += a[i] * yn[i]
    return _nnls2(aa, ae, ay, ee, ey, yy)


@njit(cache=True, nogil=True, fastmath=True)
def _model_jac(theta, mu, e1, e2, bvecs, q, table, ub, eiso, tau_nodes, m, jac):
    """Model and Jacobian for theta = (k, f, s, w, d1, d2) (direction d in the tangent plane
    of mu spanned by e1, e2)."""
    n_c = table.shape[1] - 1
    kr, f, s, w, d1, d2 = theta[0], theta[1], theta[2], theta[3], theta[4], theta[5]
    v0 = mu[0] + d1 * e1[0] + d2 * e2[0]
    v1 = mu[1] + d1 * e1[1] + d2 * e2[1]
    v2 = mu[2] + d1 * e1[2] + d2 * e2[2]
    nv = np.sqrt(v0 * v0 + v1 * v1 + v2 * v2)
    v0 /= nv
    v1 /= nv
    v2 /= nv
    n_k = tau_nodes.size
    k0 = min(int(kr), n_k - 2)
    fk = kr - k0
    dtau = tau_nodes[k0 + 1] - tau_nodes[k0]
    tau = tau_nodes[k0] + fk * dtau
    alpha = 0.5 * (1.0 + tau)
    gamma = -0.5 * (3.0 * tau - 1.0)
    for i in range(q.size):
        dot = v0 * bvecs[i, 0] + v1 * bvecs[i, 1] + v2 * bvecs[i, 2]
        c = min(abs(dot), 1.0)
        x = c * n_c
        lo = min(int(x), n_c - 1)
        fc = x - lo
        t00 = table[ub[i], lo, k0]
        t01 = table[ub[i], lo, k0 + 1]
        t10 = table[ub[i], lo + 1, k0]
        t11 = table[ub[i], lo + 1, k0 + 1]
        a0 = t00 + fc * (t10 - t00)
        a1 = t01 + fc * (t11 - t01)
        e_ic = a0 + fk * (a1 - a0)
        de_ic_k = a1 - a0
        de_ic_c = ((t10 - t00) + fk * ((t11 - t01) - (t10 - t00))) * n_c
        c2 = c * c
        e_ec = np.exp(-q[i] + q[i] * f * (alpha + gamma * c2))
        de_ec_tau = e_ec * q[i] * f * (0.5 - 1.5 * c2)
        de_ec_f = e_ec * q[i] * (alpha + gamma * c2)
        de_ec_c = e_ec * q[i] * f * gamma * 2.0 * c
        aniso = f * e_ic + (1.0 - f) * e_ec
        m[i] = s * aniso + w * eiso[i]
        jac[i, 0] = s * (f * de_ic_k + (1.0 - f) * de_ec_tau * dtau)
        jac[i, 1] = s * (e_ic - e_ec + (1.0 - f) * de_ec_f)
        jac[i, 2] = aniso
        jac[i, 3] = eiso[i]
        dm_c = s * (f * de_ic_c + (1.0 - f) * de_ec_c)
        sg = 1.0 if dot >= 0 else -1.0
        jac[i, 4] = dm_c * sg * (bvecs[i, 0] * e1[0] + bvecs[i, 1] * e1[1] + bvecs[i, 2] * e1[2])
        jac[i, 5] = dm_c * sg * (bvecs[i, 0] * e2[0] + bvecs[i, 1] * e2[1] + bvecs[i, 2] * e2[2])


@njit(cache=True, nogil=True, fastmath=True)
def _levenberg_marquardt(theta, mu, bvecs, q, table, ub, eiso, yn, tau_nodes, n_iter):
    """Bounded Levenberg-Marquardt polish of (k, f, s, w, direction); returns the residual."""
    n = q.size
    a = np.array([1.0, 0.0, 0.0]) if abs(mu[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = a - (a[0] * mu[0] + a[1] * mu[1] + a[2] * mu[2]) * mu
    e1 /= np.sqrt(e1[0] ** 2 + e1[1] ** 2 + e1[2] ** 2)
    e2 = np.array([mu[1] * e1[2] - mu[2] * e1[1], mu[2] * e1[0] - mu[0] * e1[2],
                   mu[0] * e1[1] - mu[1] * e1[0]])
    lo = np.array([0.0, 0.0, 0.0, 0.0, -0.5, -0.5])
    hi = np.array([tau_nodes.size - 1.0, 1.0, 1e6, 1e6, 0.5, 0.5])
    m = np.empty(n)
    jac = np.empty((n, 6))
    _model_jac(theta, mu, e1, e2, bvecs, q, table, ub, eiso, tau_nodes, m, jac)
    r = 0.0
    for i in range(n):
        r += (yn[i] - m[i]) ** 2
    lam = 1e-3
    trial = np.empty(6)
    for _ in range(n_iter):
        h = jac.T @ jac
        g = np.zeros(6)
        for i in range(n):
            d = yn[i] - m[i]
            for p in range(6):
                g[p] += jac[i, p] * d
        improved = False
        for _try in range(4):
            hh = h.copy()
            for p in range(6):
                hh[p, p] += lam * h[p, p] + 1e-12
            step = np.linalg.solve(hh, g)
            for p in range(6):
                trial[p] = min(max(theta[p] + step[p], lo[p]), hi[p])
            _model_jac(trial, mu, e1, e2, bvecs, q, table, ub, eiso, tau_nodes, m, jac)
            r_new = 0.0
            for i in range(n):
                r_new += (yn[i] - m[i]) ** 2
            if r_new < r:
                theta[:] = trial
                r = r_new
                lam = max(lam * 0.3, 1e-6)
                improved = True
                break
            lam *= 10.0
        if not improved:
            _model_jac(theta, mu, e1, e2, bvecs, q, table, ub, eiso, tau_nodes, m, jac)
            break
    # write back the direction
    for t in range(3):
        mu[t] = mu[t] + theta[4] * e1[t] + theta[5] * e2[t]
    nm = np.sqrt(mu[0] ** 2 + mu[1] ** 2 + mu[2] ** 2)
    for t in range(3):
        mu[t] /= nm
    return r


@njit(cache=True, nogil=True, fastmath=True)
def _fit_voxel(y, b0_idx, sub, xmat, bvecs, q, e0, eiso, b0fac, ub, table, k_nodes,
               tau_nodes, k_fine, n_j, coarse, n_dir_iter, posterior, tau_grid_kappa, out):
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
    n_k = tau_nodes.size
    n_kj = k_fine * n_j
    cbin = np.empty(n, np.int64)
    cw = np.empty(n)
    c2 = np.empty(n)
    dmul = np.empty(n)
    yy = 0.0
    ee = 0.0
    ey = 0.0
    for i in range(n):
        yy += yn[i] * yn[i]
        ee += eiso[i] * eiso[i]
        ey += eiso[i] * yn[i]
    _geometry(mu, bvecs, q, n_c, n_kj, cbin, cw, c2, dmul)
    res = np.full((n_k, n_j + 1), np.inf)
    scratch = np.empty((2, n))
    tmp = np.empty(n)
    eic = np.empty(n)
    bk = np.empty(n)
    # coarse pass: every `coarse`-th tau node, every 4th node in f
    n_bits = 1
    while (1 << n_bits) <= k_fine:
        n_bits += 1
    pw = np.empty((n_bits, n))
    _binary_powers(dmul, pw)
    for k in range(0, n_k, coarse):
        _node_bk(k_nodes[k], pw, b0fac, bk)
        _stick_column(k, table, ub, cbin, cw, eic)
        _eval_k(k, 0, n_j, 4, n_j, eic, bk, e0, eiso, yn, yy, ee, ey, res, scratch, tmp)
    kb, jb = _argmin2(res)
    # finer passes: 3x3 neighbourhoods with halving steps in k, unit steps in f
    step = coarse // 2
    while step >= 1:
        _search(max(kb - step, 0), min(kb + step, n_k - 1), step, max(jb - 1, 0),
                min(jb + 1, n_j), 1, n_k, n_j, table, ub, cbin, cw, k_nodes, pw, b0fac,
                e0, eiso, yn, yy, ee, ey, res, eic, bk, scratch, tmp)
        kb, jb = _argmin2(res)
        step //= 2
    # Levenberg-Marquardt polish from the best grid node (direction included)
    r, s, w = _amplitudes(kb, jb, tau_nodes, n_j, table, ub, cbin, cw, c2, q, e0, eiso, yn,
                          ee, ey, yy, eic, bk)
    theta = np.array([float(kb), jb / n_j, s, w, 0.0, 0.0])
    r = _levenberg_marquardt(theta, mu, bvecs, q, table, ub, eiso, yn, tau_nodes,
                             n_dir_iter)
    kr, f, s, w = theta[0], theta[1], theta[2], theta[3]
    if posterior:
        # where the residual is flat in tau (high dispersion) the least-squares point is
        # noise-driven: blend towards the posterior mean of tau on the coarse profile,
        # re-evaluated with the refined direction
        _geometry(mu, bvecs, q, n_c, n_kj, cbin, cw, c2, dmul)
        _binary_powers(dmul, pw)
        res[:] = np.inf
        for k in range(0, n_k, coarse):
            _node_bk(k_nodes[k], pw, b0fac, bk)
            _stick_column(k, table, ub, cbin, cw, eic)
            _eval_k(k, 0, n_j, 4, n_j, eic, bk, e0, eiso, yn, yy, ee, ey, res, scratch, tmp)
        k_bar, k_sd = _profile_posterior(res, coarse, n_k, max(r, 1e-12) / max(n - 6, 1))
        blend = min(max(2.0 * k_sd / coarse, 0.0), 1.0)
        kr = (1.0 - blend) * kr + blend * k_bar
    k0 = min(int(kr), n_k - 2)
    tau = tau_nodes[k0] + (kr - k0) * (tau_nodes[k0 + 1] - tau_nodes[k0])
    out[OUT_ICVF] = f
    out[OUT_ISOVF] = w / (s + w) if s + w > 0 else 0.0
    out[OUT_TAU] = tau
    out[OUT_KAPPA] = np.interp(tau, tau_grid_kappa[0], tau_grid_kappa[1])
    out[OUT_NRMSE] = np.sqrt(max(r, 0.0) / yy) if yy > 0 else np.nan
    out[OUT_S0] = (s + w) * s0


@njit(cache=True, nogil=True)
def _profile_posterior(res, coarse, n_k, sigma2):
    """Mean and sd of the node index under exp(-R/(2 sigma^2)) on the coarse profile
    min_f R(tau, f) (flat prior over the nodes, i.e. over ODI)."""
    rmin = np.inf
    for k in range(0, n_k, coarse):
        for j in range(res.shape[1]):
            rmin = min(rmin, res[k, j])
    wsum = 0.0
    m1 = 0.0
    m2 = 0.0
    for k in range(0, n_k, coarse):
        pk = np.inf
        for j in range(res.shape[1]):
            pk = min(pk, res[k, j])
        w = np.exp(-(pk - rmin) / (2.0 * sigma2))
        wsum += w
        m1 += w * k
        m2 += w * k * k
    mean = m1 / wsum
    return mean, np.sqrt(max(m2 / wsum - mean * mean, 0.0))


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


@njit(cache=True, nogil=True)
def _valid_signal(y, b0_idx):
    """All values finite and a positive mean b0."""
    for i in range(y.size):
        if not np.isfinite(y[i]):
            return False
    s0 = 0.0
    for i in b0_idx:
        s0 += y[i]
    return s0 > 0.0


@njit(cache=True, nogil=True, parallel=True)
def fit_voxels(data, b0_idx, sub, xmat, bvecs, q, e0, eiso, b0fac, ub, table, k_nodes,
               tau_nodes, k_fine, n_j, coarse, n_dir_iter, posterior, tau_grid_kappa):
    """Fit every row of ``data`` (n_voxels, n_meas); returns (n_voxels, N_OUT)."""
    nv = data.shape[0]
    out = np.empty((nv, N_OUT))
    for v in prange(nv):
        y = data[v].astype(np.float64)
        # validity is checked here, outside fastmath code (which assumes finite values)
        if not _valid_signal(y, b0_idx):
            out[v, :] = np.nan
            continue
        _fit_voxel(y, b0_idx, sub, xmat, bvecs, q, e0, eiso, b0fac, ub, table, k_nodes,
                   tau_nodes, k_fine, n_j, coarse, n_dir_iter, posterior, tau_grid_kappa,
                   out[v])
    return out
