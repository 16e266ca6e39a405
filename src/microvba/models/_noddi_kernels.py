r"""Compiled per-voxel NODDI fit (numba).

Per voxel, with the signal normalised by the mean b0 (measurements in the model's order:
the grid-search subset first):

1. starting direction :math:`\mu` = principal eigenvector of a log-linear tensor (OLS, then
   one WLS step) on all volumes (vectorised sums, hand-coded 7x7 Cholesky, closed-form 3x3
   eigenvector: no LAPACK call);
2. variable projection over the two non-linear parameters, the Watson moment
   :math:`\tau = \langle(\mu\cdot n)^2\rangle` (table nodes uniform in ODI, snapped to
   :math:`\tau_k = \tfrac13 + \tfrac23 k/K`) and the intra-cellular fraction :math:`f = j/J`
   (which also sets the tortuosity), the two linear amplitudes (anisotropic, isotropic)
   being solved in closed form with non-negativity (2x2 NNLS): a coarse pass (every
   ``coarse``-th tau node, every ``coarse_j``-th f node) on the measurement subset;
3. a bounded Levenberg-Marquardt polish of (tau, f, both amplitudes, direction) from the
   best node on the exact model (table interpolated bilinearly in :math:`|c|` and tau),
   ``n_sub_iter`` iterations on the subset then ``n_iter`` on all measurements, with the
   Rician noise floor: the fitted magnitude is the Rician mean of the model :math:`m` for a
   noise variance :math:`\phi`, approximated by :math:`\sqrt{m^2+\phi} +
   (\sqrt{\pi/2}-1)\sqrt\phi\,e^{-m^2/(1.5\phi)}`; :math:`\phi` is fitted freely on a
   sample of voxels (:func:`noise_floor`) and its median (in signal units) held fixed for
   the rest (:func:`fit_voxels`);
4. optionally (``posterior``), the tau node index is blended towards its posterior mean on
   the coarse profile, weight ``min(1, 2 sd / coarse)``.

Voxels are processed in blocks of 64 across the threads; each block allocates its work
arrays once; exponentials over measurements use a vectorisable polynomial (:func:`_vexp`).

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
def _vexp(x, out, ibuf):
    """out = exp(x) elementwise, vectorisable (range reduction to [-ln2/2, ln2/2], degree-11
    Taylor polynomial, 2^n from the exponent bits); relative error < 1e-14, x >= -700."""
    for i in range(x.size):
        t = max(x[i] * 1.4426950408889634, -1020.0)
        nf = np.floor(t + 0.5)
        r = (t - nf) * 0.6931471805599453
        p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120 + r * (
            1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320 + r * (1.0 / 362880 + r * (
                1.0 / 3628800 + r / 39916800))))))))))
        ibuf[i] = (np.int64(nf) + 1023) << 52
        out[i] = p
    fb = ibuf.view(np.float64)
    for i in range(x.size):
        out[i] *= fb[i]


@njit(cache=True, nogil=True, fastmath=True)
def _principal_direction(y, pinv, xmat_t, xprod, ly, wbuf, ibuf, out_dir):
    """Principal eigenvector of a log-linear tensor fit (OLS, then one WLS step with weights
    = predicted signal squared) on all volumes; vectorised sums over the precomputed design
    products ``xprod``, hand-coded 7x7 Cholesky and closed-form 3x3 eigenvector."""
    n = y.size
    for i in range(n):
        ly[i] = np.log(max(y[i], 1e-4))
    beta = np.zeros(7)
    for d in range(7):
        acc = 0.0
        for i in range(n):
            acc += pinv[d, i] * ly[i]
        beta[d] = acc
    for i in range(n):
        wbuf[i] = beta[0] * xmat_t[0, i]
    for d in range(1, 7):
        bd = beta[d]
        for i in range(n):
            wbuf[i] += bd * xmat_t[d, i]
    for i in range(n):
        wbuf[i] = 2.0 * min(wbuf[i], 2.0)
    _vexp(wbuf, wbuf, ibuf)
    m = np.zeros((7, 7))
    rhs = np.zeros(7)
    t = 0
    for d in range(7):
        acc = 0.0
        for i in range(n):
            acc += wbuf[i] * ly[i] * xmat_t[d, i]
        rhs[d] = acc
        for e in range(d + 1):
            acc = 0.0
            for i in range(n):
                acc += wbuf[i] * xprod[t, i]
            m[d, e] = acc
            t += 1
    # Cholesky (lower) with a tiny ridge, then two triangular solves
    for d in range(7):
        m[d, d] += 1e-12 * (1.0 + m[d, d])
        for e in range(d + 1):
            acc = m[d, e]
            for u in range(e):
                acc -= m[d, u] * m[e, u]
            if d == e:
                m[d, d] = np.sqrt(max(acc, 1e-300))
            else:
                m[d, e] = acc / m[e, e]
    for d in range(7):
        acc = rhs[d]
        for u in range(d):
            acc -= m[d, u] * beta[u]
        beta[d] = acc / m[d, d]
    for d in range(6, -1, -1):
        acc = beta[d]
        for u in range(d + 1, 7):
            acc -= m[u, d] * beta[u]
        beta[d] = acc / m[d, d]
    _max_eigvec3(beta[1], beta[2], beta[3], beta[4], beta[5], beta[6], out_dir)


@njit(cache=True, nogil=True, fastmath=True)
def _max_eigvec3(a00, a11, a22, a01, a02, a12, out):
    """Unit eigenvector of the largest eigenvalue of a symmetric 3x3 matrix (closed form)."""
    p1 = a01 * a01 + a02 * a02 + a12 * a12
    q = (a00 + a11 + a22) / 3.0
    p2 = (a00 - q) ** 2 + (a11 - q) ** 2 + (a22 - q) ** 2 + 2.0 * p1
    p = np.sqrt(p2 / 6.0)
    if not (p > 1e-30 * (abs(q) + 1e-300)):
        out[0], out[1], out[2] = 0.0, 0.0, 1.0
        return
    b00, b11, b22 = (a00 - q) / p, (a11 - q) / p, (a22 - q) / p
    b01, b02, b12 = a01 / p, a02 / p, a12 / p
    r = 0.5 * (b00 * (b11 * b22 - b12 * b12) - b01 * (b01 * b22 - b12 * b02)
               + b02 * (b01 * b12 - b11 * b02))
    r = min(max(r, -1.0), 1.0)
    lam = q + 2.0 * p * np.cos(np.arccos(r) / 3.0)
    # rows of A - lam I; the eigenvector is the largest cross product of two rows
    r0 = (a00 - lam, a01, a02)
    r1 = (a01, a11 - lam, a12)
    r2 = (a02, a12, a22 - lam)
    best = -1.0
    for u, v in ((r0, r1), (r0, r2), (r1, r2)):
        c0 = u[1] * v[2] - u[2] * v[1]
        c1 = u[2] * v[0] - u[0] * v[2]
        c2 = u[0] * v[1] - u[1] * v[0]
        nn = c0 * c0 + c1 * c1 + c2 * c2
        if nn > best:
            best = nn
            out[0], out[1], out[2] = c0, c1, c2
    nrm = np.sqrt(best)
    if nrm > 0:
        out[0] /= nrm
        out[1] /= nrm
        out[2] /= nrm
    else:
        out[0], out[1], out[2] = 0.0, 0.0, 1.0


@njit(cache=True, nogil=True, fastmath=True)
def _stick_column(k, table, ub, cbin, cw, out):
    for i in range(out.size):
        lo = table[k, ub[i], cbin[i]]
        hi = table[k, ub[i], cbin[i] + 1]
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
def _geometry(mu, bvecs, q, n_c, n_kj, cbin, cw, c2, dmul, ibuf):
    """Per-measurement |mu.g| table position and the extra-cellular grid multiplier."""
    for i in range(q.size):
        c = abs(mu[0] * bvecs[i, 0] + mu[1] * bvecs[i, 1] + mu[2] * bvecs[i, 2])
        c = min(c, 1.0)
        c2[i] = c * c
        x = c * n_c
        lo = min(int(x), n_c - 1)
        cbin[i] = lo
        cw[i] = x - lo
        dmul[i] = (q[i] / 3.0 - q[i] * c * c) / n_kj
    _vexp(dmul, dmul, ibuf)


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
                yy, eic, a, ibuf):
    """Solve the amplitudes at grid node (kb, jb); returns (residual, s, w)."""
    tau = tau_nodes[kb]
    f = jb / n_j
    _stick_column(kb, table, ub, cbin, cw, eic)
    alpha = 0.5 * (1.0 + tau)
    gamma = -0.5 * (3.0 * tau - 1.0)
    for i in range(q.size):
        a[i] = -q[i] + q[i] * f * (alpha + gamma * c2[i])
    _vexp(a, a, ibuf)
    aa = 0.0
    ae = 0.0
    ay = 0.0
    for i in range(q.size):
        a[i] = f * eic[i] + (1.0 - f) * a[i]
        aa += a[i] * a[i]
        ae += a[i] * eiso[i]
        ay += a[i] * yn[i]
    return _nnls2(aa, ae, ay, ee, ey, yy)


#: polish parameters: tau node index, ICVF, amplitudes (anisotropic, isotropic), direction
#: offsets (2), squared noise floor
N_THETA = 7
_LM_ROWS = 7 + N_THETA
_RICE_A = np.sqrt(np.pi / 2.0) - 1.0


@njit(cache=True, nogil=True, fastmath=True)
def _model_eval(theta, act, n_act, mu, e1, e2, bvecs, q, table, ub, eiso, yn, tau_nodes,
                lw, ibuf, h, g, want_jac):
    """Residual sum of squares at theta = (k, f, s, w, d1, d2, phi) (direction d in the
    tangent plane of mu spanned by e1, e2; the fitted magnitude is the approximate Rician
    mean of the model for the noise variance phi >= 0); with ``want_jac`` also the Gauss-Newton normal equations
    h = J^T J, g = J^T r of the active parameters ``act[:n_act]``. ``lw`` holds
    ``_LM_ROWS`` work rows."""
    n = q.size
    n_c = table.shape[2] - 1
    kr, f, s, w, d1, d2, phi = (theta[0], theta[1], theta[2], theta[3], theta[4], theta[5],
                                theta[6])
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
    e_ic, dk, dc, c2, arg, e_ec, sg = lw[0], lw[1], lw[2], lw[3], lw[4], lw[5], lw[6]
    jac = lw[7:7 + N_THETA]
    for i in range(n):
        dot = v0 * bvecs[i, 0] + v1 * bvecs[i, 1] + v2 * bvecs[i, 2]
        sg[i] = 1.0 if dot >= 0 else -1.0
        c = min(abs(dot), 1.0)
        x = c * n_c
        lo = min(int(x), n_c - 1)
        fc = x - lo
        t00 = table[k0, ub[i], lo]
        t01 = table[k0 + 1, ub[i], lo]
        t10 = table[k0, ub[i], lo + 1]
        t11 = table[k0 + 1, ub[i], lo + 1]
        a0 = t00 + fc * (t10 - t00)
        a1 = t01 + fc * (t11 - t01)
        e_ic[i] = a0 + fk * (a1 - a0)
        dk[i] = a1 - a0
        dc[i] = ((t10 - t00) + fk * ((t11 - t01) - (t10 - t00))) * n_c
        c2[i] = c * c
        arg[i] = -q[i] + q[i] * f * (alpha + gamma * c * c)
    _vexp(arg, e_ec, ibuf)
    # Rician mean of a magnitude m with noise variance phi, approximated by
    # sqrt(m^2 + phi) + (sqrt(pi/2) - 1) sqrt(phi) exp(-m^2 / (1.5 phi)): exact at m = 0,
    # within 1 % of the exact mean for all m
    sd = np.sqrt(phi)
    inv = 1.0 / (1.5 * phi) if phi > 0 else 0.0
    m_row = jac[6]
    for i in range(n):
        m = s * (f * e_ic[i] + (1.0 - f) * e_ec[i]) + w * eiso[i]
        m_row[i] = m
        arg[i] = -m * m * inv if phi > 0 else -800.0
    _vexp(arg, arg, ibuf)
    r = 0.0
    for i in range(n):
        aniso = f * e_ic[i] + (1.0 - f) * e_ec[i]
        m = m_row[i]
        base = np.sqrt(m * m + phi + 1e-300)
        ex = _RICE_A * arg[i]
        mm = base + ex * sd
        d = yn[i] - mm
        r += d * d
        if want_jac:
            rat = m / base - ex * 2.0 * m * inv * sd
            qi = q[i] * e_ec[i]
            jac[0, i] = rat * s * (f * dk[i] + (1.0 - f) * qi * f * (0.5 - 1.5 * c2[i]) * dtau)
            jac[1, i] = rat * s * (e_ic[i] - e_ec[i] + (1.0 - f) * qi * (alpha + gamma * c2[i]))
            jac[2, i] = rat * aniso
            jac[3, i] = rat * eiso[i]
            dm_c = rat * s * sg[i] * (f * dc[i] + (1.0 - f) * qi * f * gamma * 2.0
                                      * np.sqrt(c2[i]))
            jac[4, i] = dm_c * (bvecs[i, 0] * e1[0] + bvecs[i, 1] * e1[1]
                                + bvecs[i, 2] * e1[2])
            jac[5, i] = dm_c * (bvecs[i, 0] * e2[0] + bvecs[i, 1] * e2[1]
                                + bvecs[i, 2] * e2[2])
            jac[6, i] = 0.5 / base + (ex * (0.5 / sd + m * m * inv * sd / phi)
                                      if phi > 0 else 0.0)
        arg[i] = d
    if want_jac:
        for a in range(n_act):
            pa = act[a]
            acc = 0.0
            for i in range(n):
                acc += jac[pa, i] * arg[i]
            g[a] = acc
            for b in range(a + 1):
                pb = act[b]
                acc = 0.0
                for i in range(n):
                    acc += jac[pa, i] * jac[pb, i]
                h[a, b] = acc
    return r


@njit(cache=True, nogil=True, fastmath=True)
def _solve_spd(h, lam, g, n_par, m, out):
    """Solve (h + lam diag(h)) out = g (lower triangle of h; Cholesky in the scratch m)."""
    for p in range(n_par):
        for t in range(p + 1):
            m[p, t] = h[p, t]
        m[p, p] += lam * h[p, p] + 1e-12
    for p in range(n_par):
        for t in range(p + 1):
            acc = m[p, t]
            for u in range(t):
                acc -= m[p, u] * m[t, u]
            if p == t:
                if not (acc > 0.0):
                    return False
                m[p, p] = np.sqrt(acc)
            else:
                m[p, t] = acc / m[t, t]
    for p in range(n_par):
        acc = g[p]
        for u in range(p):
            acc -= m[p, u] * out[u]
        out[p] = acc / m[p, p]
    for p in range(n_par - 1, -1, -1):
        acc = out[p]
        for u in range(p + 1, n_par):
            acc -= m[u, p] * out[u]
        out[p] = acc / m[p, p]
    return True


@njit(cache=True, nogil=True, fastmath=True)
def _levenberg_marquardt(theta, mu, bvecs, q, table, ub, eiso, yn, tau_nodes, n_iter,
                         fit_dir, fit_floor, lw, ibuf):
    """Bounded Levenberg-Marquardt polish of (k, f, s, w[, direction][, noise floor]);
    returns the residual sum of squares and writes the refined direction into mu."""
    a = np.array([1.0, 0.0, 0.0]) if abs(mu[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = a - (a[0] * mu[0] + a[1] * mu[1] + a[2] * mu[2]) * mu
    e1 /= np.sqrt(e1[0] ** 2 + e1[1] ** 2 + e1[2] ** 2)
    e2 = np.array([mu[1] * e1[2] - mu[2] * e1[1], mu[2] * e1[0] - mu[0] * e1[2],
                   mu[0] * e1[1] - mu[1] * e1[0]])
    lo = np.array([0.0, 0.0, 0.0, 0.0, -0.5, -0.5, 0.0])
    hi = np.array([tau_nodes.size - 1.0, 1.0, 1e6, 1e6, 0.5, 0.5, 1.0])
    act = np.empty(N_THETA, np.int64)
    n_act = 0
    for p in range(N_THETA):
        if (p < 4) or (p < 6 and fit_dir) or (p == 6 and fit_floor):
            act[n_act] = p
            n_act += 1
    h = np.empty((N_THETA, N_THETA))
    g = np.empty(N_THETA)
    ht = np.empty((N_THETA, N_THETA))
    gt = np.empty(N_THETA)
    chol = np.empty((N_THETA, N_THETA))
    step = np.empty(N_THETA)
    trial = theta.copy()
    lam = 1e-3
    r = _model_eval(theta, act, n_act, mu, e1, e2, bvecs, q, table, ub, eiso, yn, tau_nodes,
                    lw, ibuf, h, g, True)
    for it in range(n_iter):
        improved = False
        for _try in range(4):
            if not _solve_spd(h, lam, g, n_act, chol, step):
                lam *= 10.0
                continue
            trial[:] = theta
            for a in range(n_act):
                p = act[a]
                trial[p] = min(max(theta[p] + step[a], lo[p]), hi[p])
            # the last accepted step needs no Jacobian
            r_new = _model_eval(trial, act, n_act, mu, e1, e2, bvecs, q, table, ub, eiso, yn,
                                tau_nodes, lw, ibuf, ht, gt, it < n_iter - 1)
            if r_new < r:
                theta[:] = trial
                r = r_new
                h[:, :] = ht
                g[:] = gt
                lam = max(lam * 0.3, 1e-6)
                improved = True
                break
            lam *= 10.0
        if not improved:
            break
    if fit_dir:
        for t in range(3):
            mu[t] = mu[t] + theta[4] * e1[t] + theta[5] * e2[t]
        nm = np.sqrt(mu[0] ** 2 + mu[1] ** 2 + mu[2] ** 2)
        for t in range(3):
            mu[t] /= nm
        theta[4] = 0.0
        theta[5] = 0.0
    return r


@njit(cache=True, nogil=True, fastmath=True)
def _fit_voxel(y, b0_idx, pinv, xmat_t, xprod, bvecs, q, eiso, ub, sub, table, k_nodes,
               tau_nodes, k_fine, n_j, coarse, coarse_j, n_fine, n_sub_iter, n_iter, fit_dir, fit_floor,
               floor_abs2, posterior, tau_grid_kappa, out, ws, wss, cbin, ibuf, res, pw, prof,
               phi_out):
    n = y.size
    s0 = 0.0
    for i in b0_idx:
        s0 += y[i]
    s0 /= b0_idx.size
    if not (s0 > 0.0) or not np.isfinite(s0):
        out[:] = np.nan
        return
    yn = ws[0]
    for i in range(n):
        yn[i] = y[i] / s0
    mu = out[OUT_DIR:OUT_DIR + 3]
    _principal_direction(yn, pinv, xmat_t, xprod, ws[1], ws[2], ibuf, mu)
    # grid search on the measurement subset `sub` (the first ns measurements)
    bvecs_s, q_s, e0_s, eiso_s, b0fac_s, ub_s = sub
    ns = q_s.size
    ys = wss[0]
    for i in range(ns):
        ys[i] = yn[i]
    cw, c2, dmul, eic, bk, tmp = wss[1], wss[2], wss[3], wss[4], wss[5], wss[6]
    scratch = wss[7:9]
    n_c = table.shape[2] - 1
    n_k = tau_nodes.size
    n_kj = k_fine * n_j
    yy = 0.0
    ee = 0.0
    ey = 0.0
    for i in range(ns):
        yy += ys[i] * ys[i]
        ee += eiso_s[i] * eiso_s[i]
        ey += eiso_s[i] * ys[i]
    _geometry(mu, bvecs_s, q_s, n_c, n_kj, cbin, cw, c2, dmul, ibuf)
    res[:, :] = np.inf
    _binary_powers(dmul, pw)
    # coarse pass: every `coarse`-th tau node, every `coarse_j`-th node in f
    for k in range(0, n_k, coarse):
        _node_bk(k_nodes[k], pw, b0fac_s, bk)
        _stick_column(k, table, ub_s, cbin, cw, eic)
        _eval_k(k, 0, n_j, coarse_j, n_j, eic, bk, e0_s, eiso_s, ys, yy, ee, ey, res,
                scratch, tmp)
    n_prof = 0
    for k in range(0, n_k, coarse):
        pk = np.inf
        for j in range(res.shape[1]):
            pk = min(pk, res[k, j])
        prof[n_prof] = pk
        n_prof += 1
    kb, jb = _argmin2(res)
    # optional finer passes: 3x3 neighbourhoods with halving steps in k, unit steps in f
    step = coarse // 2
    level = 0
    while step >= 1 and level < n_fine:
        level += 1
        _search(max(kb - step, 0), min(kb + step, n_k - 1), step, max(jb - 1, 0),
                min(jb + 1, n_j), 1, n_k, n_j, table, ub_s, cbin, cw, k_nodes, pw, b0fac_s,
                e0_s, eiso_s, ys, yy, ee, ey, res, eic, bk, scratch, tmp)
        kb, jb = _argmin2(res)
        step //= 2
    _, s, w = _amplitudes(kb, jb, tau_nodes, n_j, table, ub_s, cbin, cw, c2, q_s, e0_s,
                          eiso_s, ys, ee, ey, yy, eic, bk, ibuf)
    # Levenberg-Marquardt polish from the best grid node, on all measurements
    r = 0.0
    theta = np.array([float(kb), jb / n_j, s, w, 0.0, 0.0, floor_abs2 / (s0 * s0)])
    lw = ws[3:3 + _LM_ROWS]
    if n_sub_iter > 0:
        # first iterations on the grid subset, the last ones on all measurements
        _levenberg_marquardt(theta, mu, bvecs_s, q_s, table, ub_s, eiso_s, ys, tau_nodes,
                             n_sub_iter, fit_dir, fit_floor, lw, ibuf)
    if n_iter > 0:
        r = _levenberg_marquardt(theta, mu, bvecs, q, table, ub, eiso, yn, tau_nodes,
                                 n_iter, fit_dir, fit_floor, lw, ibuf)
    kr, f, s, w = theta[0], theta[1], theta[2], theta[3]
    phi_out[0] = theta[6] * s0 * s0
    if posterior:
        # where the residual is flat in tau (high dispersion) the least-squares point is
        # noise-driven: blend towards the posterior mean of tau on the coarse profile
        # (the profile is over the ns-measurement subset: its likelihood is scaled to n)
        k_bar, k_sd = _profile_posterior(prof, n_prof, coarse,
                                         max(r, 1e-12) / max(n - 6, 1) * ns / n)
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
def _profile_posterior(prof, n_prof, coarse, sigma2):
    """Mean and sd of the node index under exp(-R/(2 sigma^2)) on the coarse profile
    min_f R(tau, f) (flat prior over the nodes, i.e. over ODI)."""
    rmin = np.inf
    for t in range(n_prof):
        rmin = min(rmin, prof[t])
    wsum = 0.0
    m1 = 0.0
    m2 = 0.0
    for t in range(n_prof):
        w = np.exp(-(prof[t] - rmin) / (2.0 * sigma2))
        k = t * coarse
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
def _fit_rows(data, rows, perm, b0_idx, pinv, xmat_t, xprod, bvecs, q, eiso, ub, sub,
              table, k_nodes, tau_nodes, k_fine, n_j, coarse, coarse_j, n_fine, n_sub_iter, n_iter,
              fit_dir, fit_floor, floor_abs2, posterior, tau_grid_kappa, out, phi):
    """Fit data[rows[t], perm] into out[t] (and the squared noise floor into phi[t])."""
    nv = rows.size
    n = data.shape[1]
    ns = sub[1].size
    n_k = tau_nodes.size
    n_bits = 1
    while (1 << n_bits) <= k_fine:
        n_bits += 1
    block = 64
    n_blocks = (nv + block - 1) // block
    for bi in prange(n_blocks):
        ws = np.empty((3 + _LM_ROWS, n))
        wss = np.empty((9, ns))
        cbin = np.empty(ns, np.int64)
        ibuf = np.empty(n, np.int64)
        res = np.empty((n_k, n_j + 1))
        pw = np.empty((n_bits, ns))
        prof = np.empty(n_k)
        y = np.empty(n)
        for t in range(bi * block, min((bi + 1) * block, nv)):
            v = rows[t]
            for i in range(n):
                y[i] = data[v, perm[i]]
            phi[t] = np.nan
            # validity is checked here, outside fastmath code (which assumes finite values)
            if not _valid_signal(y, b0_idx):
                out[t, :] = np.nan
                continue
            _fit_voxel(y, b0_idx, pinv, xmat_t, xprod, bvecs, q, eiso, ub, sub, table,
                       k_nodes, tau_nodes, k_fine, n_j, coarse, coarse_j, n_fine, n_sub_iter, n_iter,
                       fit_dir, fit_floor, floor_abs2, posterior, tau_grid_kappa, out[t], ws,
                       wss, cbin, ibuf, res, pw, prof, phi[t:t + 1])


def fit_voxels(data, perm, b0_idx, pinv, xmat_t, xprod, bvecs, q, eiso, ub, sub, table,
               k_nodes, tau_nodes, k_fine, n_j, coarse, coarse_j, n_fine, n_sub_iter, n_iter,
               fit_dir, floor, n_floor_sample, posterior, tau_grid_kappa, floor_abs2=-1.0):
    """Fit every row of ``data`` (n_voxels, n_meas); returns (n_voxels, N_OUT).

    The model arrays are in the measurement order ``perm`` (the grid-search subset ``sub``
    first). With ``floor``, the Rician noise variance is held fixed at ``floor_abs2`` (signal
    units squared) or, if that is negative, estimated first with :func:`noise_floor` on
    ``n_floor_sample`` evenly spaced rows (the noise level is taken as constant across the
    data given)."""
    nv = data.shape[0]
    args = (perm, b0_idx, pinv, xmat_t, xprod, bvecs, q, eiso, ub, sub, table, k_nodes,
            tau_nodes, k_fine, n_j, coarse, coarse_j, n_fine, n_sub_iter, n_iter, fit_dir)
    if not floor:
        floor_abs2 = 0.0
    elif floor_abs2 < 0:
        floor_abs2 = noise_floor(data, n_floor_sample, args, tau_grid_kappa)
    out = np.empty((nv, N_OUT))
    phi = np.empty(nv)
    _fit_rows(data, np.arange(nv), *args, False, floor_abs2, posterior, tau_grid_kappa, out,
              phi)
    return out


def noise_floor(data, n_sample, args, tau_grid_kappa):
    """Median over ``n_sample`` evenly spaced rows of the Rician noise variance (signal
    units squared) fitted freely in each; 0 when no row can be fitted."""
    nv = data.shape[0]
    if nv == 0:
        return 0.0
    rows = np.unique(np.linspace(0, nv - 1, min(nv, n_sample)).astype(np.int64))
    out = np.empty((rows.size, N_OUT))
    phi = np.empty(rows.size)
    _fit_rows(data, rows, *args, True, 0.0, False, tau_grid_kappa, out, phi)
    phi = phi[np.isfinite(phi)]
    return float(np.median(phi)) if phi.size else 0.0
