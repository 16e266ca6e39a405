r"""Compiled per-voxel NODDI fit (numba).

Per voxel, with the signal normalised by the mean b0 (measurements in the model's order:
the grid-search subset first; a measurement is the mean of a group of equivalent volumes,
weighted by the group size, see :func:`~microvba.models.gradients.antipodal_groups`):

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
   ``n_sub_iter`` iterations on the subset then ``n_iter`` on all measurements (up to
   :data:`LOW_SNR_ITER`, until the residual stops falling, where
   :math:`\sigma_v/S_0 > 1/`:data:`LOW_SNR`), with the
   Rician noise floor: the fitted magnitude is the Rician mean of the model :math:`m` for a
   noise variance :math:`\phi`, approximated by :math:`\sqrt{m^2+\phi} +
   (\sqrt{\pi/2}-1)\sqrt\phi\,e^{-m^2/(1.5\phi)}`; :math:`\phi = \sigma_v^2/S_0^2` with
   the voxel's own noise variance :math:`\sigma_v^2` (given per row to :func:`fit_voxels`;
   fitted freely by :func:`free_floor`, which returns the residual estimate of
   :func:`_residual_variance`); with ``tie`` S0 is fixed at the mean b0 (the two
   amplitudes sum to one, as in the NODDI toolbox); with a floor the grid search (step 2)
   runs on the floor-corrected magnitude :math:`\sqrt{\max(y^2-\phi, 0)}`;
4. optionally (``posterior``), the tau node index is blended towards its posterior mean on
   the coarse profile, weight ``min(1, 2 sd / coarse)``;
5. with ``bound_mean``, in low-SNR voxels with a floor (:math:`\sigma_v/S_0 >
   1/`:data:`LOW_SNR`, S0 fixed), the bounded parameters (tau node, ICVF, the anisotropic
   amplitude, i.e. 1 - ISOVF) are replaced by their joint posterior means under a uniform
   prior on their ranges and the floor likelihood, by adaptive numerical integration
   around the Laplace approximation (:func:`_bound_posterior_mean`,
   :func:`_grid_posterior_mean`), the S0 scale integrated out.

Voxels are processed in blocks of 64 across the threads; each block allocates its work
arrays once (nothing is allocated per voxel) and clears them before every voxel, so that a
voxel's result depends on its own signal only (not on the block, chunk or thread count); exponentials and logarithms over
measurements use vectorisable polynomials (:func:`_vexp`, :func:`_vlog`); directions are
stored as (3, n) rows and no loop reads and writes the same array through two names, so
that the per-measurement loops vectorise.

The extra-cellular signal on the grid needs one exponential per tau node: with the quantised
tau, :math:`E_{ec}(k, j) = e^{-q}\,(B_0 D^k)^j` with per-measurement :math:`q = b d_\parallel`,
:math:`B_0 = e^{2q/(3J)}`, :math:`D = e^{(q/3 - q c^2)/(KJ)}` (:math:`c = \mu\cdot g`); the
step between f nodes, :math:`(B_0 D^k)^{\Delta j}`, is one exponential and each f node one
multiplication, so each grid node costs four dot products. The dispersed-stick
signal comes from an exact table over (b, :math:`|c|`, tau node) interpolated linearly in
:math:`|c|` (257 nodes; error < 1e-4 for b d_par < 20).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .._jit import load_cached_callees
from .noise import _XI, _XI_DU, _XI_U0, pair_variance_row

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
def _amp_solve(aa, ae, ay, ee, ey, yy, tie):
    """Amplitudes of the anisotropic column a and the ball e: free and non-negative
    (:func:`_nnls2`) or, with ``tie`` (S0 fixed at the mean b0, as the NODDI toolbox),
    s = 1 - w in [0, 1]: min ||(y - e) - s (a - e)||^2; returns (residual, s, w)."""
    if not tie:
        return _nnls2(aa, ae, ay, ee, ey, yy)
    uu = aa - 2.0 * ae + ee
    uy = ay - ae - ey + ee
    r0 = yy - 2.0 * ey + ee
    s = uy / uu if uu > 0 else 1.0
    s = min(max(s, 0.0), 1.0)
    return r0 - 2.0 * s * uy + s * s * uu, s, 1.0 - s


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
def _vlog(x, floor, out, ibuf):
    """out = log(max(x, floor)) elementwise (floor > 0), vectorisable: exponent and mantissa
    from the bits, mantissa reduced to [sqrt(1/2), sqrt(2)], atanh series to s^13
    (|s| <= 0.172); relative error < 1e-12."""
    fb = ibuf.view(np.float64)
    for i in range(x.size):
        fb[i] = max(x[i], floor)
    for i in range(x.size):
        bits = ibuf[i]
        out[i] = ((bits >> 52) & 0x7FF) - 1023
        ibuf[i] = (bits & 0xFFFFFFFFFFFFF) | 0x3FF0000000000000
    for i in range(x.size):
        m = fb[i]
        e = out[i]
        if m > 1.4142135623730951:
            m *= 0.5
            e += 1.0
        z = (m - 1.0) / (m + 1.0)
        z2 = z * z
        out[i] = e * 0.6931471805599453 + 2.0 * z * (1.0 + z2 * (1.0 / 3 + z2 * (
            1.0 / 5 + z2 * (1.0 / 7 + z2 * (1.0 / 9 + z2 * (1.0 / 11 + z2 / 13))))))


@njit(cache=True, nogil=True, fastmath=True)
def _principal_direction(y, count, pinv, xmat_t, xprod, ly, wbuf, out_w, ibuf, out_dir, m,
                         beta, rhs):
    """Principal eigenvector of a log-linear tensor fit (OLS, then one WLS step with weights
    = count x predicted signal squared) on all measurements; vectorised sums over the
    precomputed design products ``xprod``, hand-coded 7x7 Cholesky and closed-form 3x3
    eigenvector. ``pinv`` is the count-weighted OLS pseudo-inverse."""
    n = y.size
    _vlog(y, 1e-4, ly, ibuf)
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
        out_w[i] = 2.0 * min(wbuf[i], 2.0)
    _vexp(out_w, wbuf, ibuf)  # never in place: aliasing defeats vectorisation
    for i in range(n):
        wbuf[i] *= count[i]
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
def _stick_column(k, table, ub, cbin, cw, sw, out):
    """Stick signal of tau node k, linear in |c|, times the weights ``sw`` (``ub``: offsets
    of the b rows in a flattened (b, |c|) slice of the table)."""
    tk = table[k].reshape(-1)
    for i in range(out.size):
        j = ub[i] + cbin[i]
        lo = tk[j]
        out[i] = sw[i] * (lo + cw[i] * (tk[j + 1] - lo))


@njit(cache=True, nogil=True, fastmath=True)
def _stick_products(eic, eiso, y):
    """The stick column's products with itself, the ball and the signal."""
    ii = 0.0
    ie = 0.0
    iy = 0.0
    for i in range(y.size):
        ii += eic[i] * eic[i]
        ie += eic[i] * eiso[i]
        iy += eic[i] * y[i]
    return ii, ie, iy


@njit(cache=True, nogil=True, fastmath=True)
def _eval_nodes(k, j_lo, j_hi, j_step, n_j, eic, p, mult, eiso, y, yy, ee, ey, res, ii, ie,
                iy, tie):
    """res[k, j] for j in range(j_lo, j_hi + 1, j_step), from p = the zeppelin column of
    j_lo (updated in place) and its per-step multiplier ``mult``; ii, ie, iy: the stick
    column's products with itself, the ball and the signal."""
    n = y.size
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
        r, _, _ = _amp_solve(aa, ae, ay, ee, ey, yy, tie)
        res[k, j] = r


@njit(cache=True, nogil=True, fastmath=True)
def _geometry(mu, bvecs, q, n_c, n_kj, cbin, cw, c2, ld):
    """Per-measurement |mu.g| table position and the log of the extra-cellular grid
    multiplier, ld = (q/3 - q c^2) / (K J) (``bvecs`` is (3, n))."""
    bx, by, bz = bvecs[0], bvecs[1], bvecs[2]
    for i in range(q.size):
        c = abs(mu[0] * bx[i] + mu[1] * by[i] + mu[2] * bz[i])
        c = min(c, 1.0)
        c2[i] = c * c
        x = c * n_c
        lo = min(int(x), n_c - 1)
        cbin[i] = lo
        cw[i] = x - lo
        ld[i] = (q[i] / 3.0 - q[i] * c * c) / n_kj


@njit(cache=True, nogil=True, fastmath=True)
def _amplitudes(kb, jb, tau_nodes, n_j, table, ub, cbin, cw, c2, q, sw, eiso, yn, ee, ey,
                yy, eic, a, tmp, ibuf, tie):
    """Solve the amplitudes at grid node (kb, jb) (``eiso``, ``yn`` already weighted by
    ``sw``); returns (residual, s, w)."""
    tau = tau_nodes[kb]
    f = jb / n_j
    _stick_column(kb, table, ub, cbin, cw, sw, eic)
    alpha = 0.5 * (1.0 + tau)
    gamma = -0.5 * (3.0 * tau - 1.0)
    for i in range(q.size):
        tmp[i] = -q[i] + q[i] * f * (alpha + gamma * c2[i])
    _vexp(tmp, a, ibuf)
    aa = 0.0
    ae = 0.0
    ay = 0.0
    for i in range(q.size):
        a[i] = f * eic[i] + (1.0 - f) * sw[i] * a[i]
        aa += a[i] * a[i]
        ae += a[i] * eiso[i]
        ay += a[i] * yn[i]
    return _amp_solve(aa, ae, ay, ee, ey, yy, tie)


#: polish parameters: tau node index, ICVF, amplitudes (anisotropic, isotropic), direction
#: offsets (2), squared noise floor
N_THETA = 7
#: voxels whose noise floor is above S0 / LOW_SNR take up to LOW_SNR_ITER Levenberg-
#: Marquardt iterations on all measurements (stopping once an accepted step lowers the
#: residual by less than LOW_SNR_RTOL of it) instead of the model's ``n_iter``: at SNR
#: 10-20 on DSI-515 one iteration leaves GM ODI short of the optimum (r 0.426 -> 0.473 at
#: SNR 10), at SNR >= 30 one converges (RESULTS.md, issue #13)
LOW_SNR = 25.0
#: degrees of freedom taken from the residuals by :func:`_residual_variance`: 3, not the 7
#: fitted parameters: calibrated on the independent simulator (DSI-515 half sphere, S0
#: 0.3-3x, Rician SNR 10/20/50): median sigma / truth 1.009 / 0.994 / 0.995 with 3, 1.033
#: / 1.005 / 1.002 with 7 (the floor's approximate Rician mean leaves a little misfit near
#: the floor, which the full correction counts twice at SNR 10)
_RESID_DOF = 3.0
LOW_SNR_ITER = 3
LOW_SNR_RTOL = 1e-3
_LM_ROWS = 9 + N_THETA
#: rows of the work vectors: g (and the tensor's beta), rhs of the tensor, step, trial, lo,
#: hi, e1, e2 of the LM, and theta
_N_VECS = 9
_RICE_A = np.sqrt(np.pi / 2.0) - 1.0
#: initial Levenberg-Marquardt damping (relative to the diagonal of J^T J)
LM_LAMBDA0 = 1e-3


@njit(cache=True, nogil=True, fastmath=True)
def _model_eval(theta, act, n_act, mu, e1, e2, bvecs, q, table, ub, eiso, yn, sw, tau_nodes,
                lw, ibuf, idx, h, g, want_jac, tie):
    """Residual sum of squares at theta = (k, f, s, w, d1, d2, phi) (direction d in the
    tangent plane of mu spanned by e1, e2; the fitted magnitude is the approximate Rician
    mean of the model for the noise variance phi >= 0; measurement i weighted by sw[i]^2);
    with ``want_jac`` also the Gauss-Newton normal equations
    h = J^T J, g = J^T r of the active parameters ``act[:n_act]``. ``lw`` holds
    ``_LM_ROWS`` work rows, ``idx`` n ints; ``bvecs`` is (3, n), ``ub`` the row offsets of
    the b-values in a flattened (b, |c|) table slice.

    The loops are split so that each vectorises: geometry, table gathers, exponentials
    (never in place), magnitude, residual and Jacobian."""
    n = q.size
    n_c = table.shape[2] - 1
    nc = np.float64(n_c)
    kr, f, s, w, d1, d2, phi = (theta[0], theta[1], theta[2], theta[3], theta[4], theta[5],
                                theta[6])
    if tie:  # S0 fixed at the mean b0: the isotropic amplitude is 1 - s
        w = 1.0 - s
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
    e_ic, dk, dc, c2, arg, e_ec, sg, fcw, ex = (lw[0], lw[1], lw[2], lw[3], lw[4], lw[5],
                                                 lw[6], lw[7], lw[8])
    jac = lw[9:9 + N_THETA]
    bx, by, bz = bvecs[0], bvecs[1], bvecs[2]
    for i in range(n):
        dot = v0 * bx[i] + v1 * by[i] + v2 * bz[i]
        sg[i] = 1.0 if dot >= 0 else -1.0
        c = min(abs(dot), 1.0)
        x = min(c * nc, nc - 1e-9)
        lo = np.floor(x)
        fcw[i] = x - lo
        idx[i] = ub[i] + np.int64(lo)
        c2[i] = c * c
        arg[i] = -q[i] + q[i] * f * (alpha + gamma * c * c)
    t0 = table[k0].reshape(-1)
    t1 = table[k0 + 1].reshape(-1)
    for i in range(n):
        j = idx[i]
        t00 = np.float64(t0[j])
        t10 = np.float64(t0[j + 1])
        t01 = np.float64(t1[j])
        t11 = np.float64(t1[j + 1])
        fc = fcw[i]
        a0 = t00 + fc * (t10 - t00)
        a1 = t01 + fc * (t11 - t01)
        e_ic[i] = a0 + fk * (a1 - a0)
        dk[i] = a1 - a0
        dc[i] = ((t10 - t00) + fk * ((t11 - t01) - (t10 - t00))) * nc
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
    _vexp(arg, ex, ibuf)
    r = 0.0
    if not want_jac:
        for i in range(n):
            m = m_row[i]
            d = sw[i] * (yn[i] - (np.sqrt(m * m + phi + 1e-300) + _RICE_A * ex[i] * sd))
            r += d * d
        return r
    for i in range(n):
        aniso = f * e_ic[i] + (1.0 - f) * e_ec[i]
        m = m_row[i]
        base = np.sqrt(m * m + phi + 1e-300)
        exa = _RICE_A * ex[i]
        d = sw[i] * (yn[i] - (base + exa * sd))
        r += d * d
        rat = sw[i] * (m / base - exa * 2.0 * m * inv * sd)
        qi = q[i] * e_ec[i]
        jac[0, i] = rat * s * (f * dk[i] + (1.0 - f) * qi * f * (0.5 - 1.5 * c2[i]) * dtau)
        jac[1, i] = rat * s * (e_ic[i] - e_ec[i] + (1.0 - f) * qi * (alpha + gamma * c2[i]))
        jac[2, i] = rat * (aniso - eiso[i] if tie else aniso)
        jac[3, i] = rat * eiso[i]
        dm_c = rat * s * sg[i] * (f * dc[i] + (1.0 - f) * qi * f * gamma * 2.0
                                  * np.sqrt(c2[i]))
        jac[4, i] = dm_c * (bx[i] * e1[0] + by[i] * e1[1] + bz[i] * e1[2])
        jac[5, i] = dm_c * (bx[i] * e2[0] + by[i] * e2[1] + bz[i] * e2[2])
        jac[6, i] = sw[i] * (0.5 / base + (exa * (0.5 / sd + m * m * inv * sd / phi)
                                           if phi > 0 else 0.0))
        arg[i] = d
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
def _levenberg_marquardt(theta, mu, bvecs, q, table, ub, eiso, yn, sw, tau_nodes, n_iter,
                         fit_dir, fit_floor, lw, ibuf, idx, mats, vecs, act, rtol, tie):
    """Bounded Levenberg-Marquardt polish of (k, f, s, w[, direction][, noise floor]):
    at most ``n_iter`` iterations, stopping early once an accepted step lowers the residual
    sum of squares by less than ``rtol`` times its value (``rtol`` = 0: exactly
    ``n_iter``); returns the residual sum of squares and writes the refined direction into
    mu.
    ``mats`` (2, N_THETA, N_THETA), ``vecs`` (_N_VECS, N_THETA) and ``act`` (N_THETA,) are
    work arrays (no allocation per voxel)."""
    h, chol = mats[0], mats[1]
    g, step, trial, lo, hi, e1, e2 = (vecs[0], vecs[2], vecs[3], vecs[4], vecs[5], vecs[6],
                                      vecs[7])
    _tangent_basis(mu, e1, e2)
    lo[0], lo[1], lo[2], lo[3], lo[4], lo[5], lo[6] = 0.0, 0.0, 0.0, 0.0, -0.5, -0.5, 0.0
    hi[0], hi[1], hi[2], hi[3], hi[4], hi[5], hi[6] = (tau_nodes.size - 1.0, 1.0, 1e6, 1e6,
                                                       0.5, 0.5, 1.0)
    if tie:
        hi[2] = 1.0
    n_act = 0
    for p in range(N_THETA):
        if (p < 3) or (p == 3 and not tie) or (p < 6 and fit_dir) or (p == 6 and fit_floor):
            act[n_act] = p
            n_act += 1
    trial[:] = theta
    lam = LM_LAMBDA0
    r = _model_eval(theta, act, n_act, mu, e1, e2, bvecs, q, table, ub, eiso, yn, sw,
                    tau_nodes, lw, ibuf, idx, h, g, True, tie)
    for it in range(n_iter):
        improved = False
        done = False
        for _try in range(4):
            if not _solve_spd(h, lam, g, n_act, chol, step):
                lam *= 10.0
                continue
            trial[:] = theta
            for a in range(n_act):
                p = act[a]
                trial[p] = min(max(theta[p] + step[a], lo[p]), hi[p])
            if tie:
                trial[3] = 1.0 - trial[2]
            # trials need no Jacobian (rejected steps are common from a grid node): it is
            # computed once a step is accepted and another iteration follows
            r_new = _model_eval(trial, act, n_act, mu, e1, e2, bvecs, q, table, ub, eiso, yn,
                                sw, tau_nodes, lw, ibuf, idx, h, g, False, tie)
            if r_new < r:
                theta[:] = trial
                done = (r - r_new) <= rtol * r_new
                r = r_new
                lam = max(lam * 0.3, 1e-6)
                improved = True
                break
            lam *= 10.0
        if not improved or done or it == n_iter - 1:
            break
        r = _model_eval(theta, act, n_act, mu, e1, e2, bvecs, q, table, ub, eiso, yn, sw,
                        tau_nodes, lw, ibuf, idx, h, g, True, tie)
    if fit_dir:
        for t in range(3):
            mu[t] = mu[t] + theta[4] * e1[t] + theta[5] * e2[t]
        nm = np.sqrt(mu[0] ** 2 + mu[1] ** 2 + mu[2] ** 2)
        for t in range(3):
            mu[t] /= nm
        theta[4] = 0.0
        theta[5] = 0.0
    return r


_SQRT2 = np.sqrt(2.0)
_INV_SQRT2PI = 1.0 / np.sqrt(2.0 * np.pi)


@njit(cache=True, nogil=True)
def truncated_normal_mean(m, sd, lo, hi):
    r"""Mean of a normal :math:`N(m, s^2)` truncated to :math:`[l, h]`:

    .. math::

        E = m + s\,\frac{\varphi(a) - \varphi(b)}{\Phi(b) - \Phi(a)},\qquad
        a = \frac{l - m}{s},\; b = \frac{h - m}{s}

    (:math:`\varphi`, :math:`\Phi` the standard normal density and distribution; Johnson,
    Kotz & Balakrishnan 1994, *Continuous Univariate Distributions* vol. 1, ch. 13.10).
    With a uniform prior on :math:`[l, h]` and a Gaussian (Laplace) likelihood centred on
    :math:`m` with sd :math:`s`, this is the posterior mean (the minimum mean squared
    error estimate). It is increasing in :math:`m`, lies inside :math:`(l, h)`, and equals
    :math:`m` to within :math:`s\,\varphi(a)/\Phi(\cdot)` when :math:`m` is many
    :math:`s` inside the range. The difference of :math:`\Phi` is taken from the tail on
    the side of :math:`m` (no cancellation when :math:`m` lies far outside the range);
    beyond 30 sd the tail expansion :math:`E - l \approx s(1/a - 2/a^3)` is used. ``sd``
    <= 0 gives :math:`m` clipped to the range."""
    if not (sd > 0.0):
        return min(max(m, lo), hi)
    a = (lo - m) / sd
    b = (hi - m) / sd
    if a > 30.0:
        return min(lo + sd * (1.0 / a - 2.0 / (a * a * a)), hi)
    if b < -30.0:
        nb = -b
        return max(hi - sd * (1.0 / nb - 2.0 / (nb * nb * nb)), lo)
    if a > 0.0:  # m below the range: both upper tails
        z = 0.5 * (math.erfc(a / _SQRT2) - math.erfc(b / _SQRT2))
    elif b < 0.0:  # m above the range: both lower tails
        z = 0.5 * (math.erfc(-b / _SQRT2) - math.erfc(-a / _SQRT2))
    else:
        z = 1.0 - 0.5 * (math.erfc(b / _SQRT2) + math.erfc(-a / _SQRT2))
    num = (math.exp(-0.5 * a * a) - math.exp(-0.5 * b * b)) * _INV_SQRT2PI
    if not (z > 0.0):
        return min(max(m, lo), hi)
    return min(max(m + sd * num / z, lo), hi)


@njit(cache=True, nogil=True, fastmath=True)
def _tangent_basis(mu, e1, e2):
    """Orthonormal basis (e1, e2) of the plane normal to the unit vector mu (e1 from the
    axis least aligned with mu, e2 = mu x e1): the direction's two tangent parameters in
    :func:`_levenberg_marquardt` and the posterior means at the bounds."""
    ax = 0 if abs(mu[0]) < 0.9 else 1
    for t in range(3):
        e1[t] = (1.0 if t == ax else 0.0) - mu[ax] * mu[t]
    ne = np.sqrt(e1[0] ** 2 + e1[1] ** 2 + e1[2] ** 2)
    for t in range(3):
        e1[t] /= ne
    e2[0] = mu[1] * e1[2] - mu[2] * e1[1]
    e2[1] = mu[2] * e1[0] - mu[0] * e1[2]
    e2[2] = mu[0] * e1[1] - mu[1] * e1[0]


#: parameters of theta given their posterior mean by :func:`_bound_posterior_mean`: the tau
#: node index (ODI), ICVF and the anisotropic amplitude (1 - ISOVF with S0 fixed)
N_BOUNDED = 3


@njit(cache=True, nogil=True, fastmath=True)
def _bound_posterior_mean(theta, mu, bvecs, q, table, ub, eiso, yn, sw, tau_nodes, fit_dir,
                          n_b0, lw, ibuf, idx, mats, vecs, act):
    r"""Replace the bounded parameters of a converged low-SNR fit (S0 fixed: theta = (k, f,
    s, 1 - s, 0, 0, phi)) by their posterior means under a uniform prior on their ranges.

    Laplace approximation (MacKay 2003, *Information Theory, Inference, and Learning
    Algorithms*, ch. 27) of the likelihood around the unconstrained optimum: with the
    Gauss-Newton normal equations at the fitted point, :math:`H = J^\top J/\phi` (J the
    Jacobian of the weighted fitted magnitudes over the free parameters, direction
    included; :math:`\phi = \sigma_v^2/S_0^2` the noise variance in S0 units), the
    marginal sd of parameter i is :math:`s_i = \sqrt{\phi\,(J^\top J)^{-1}_{ii}}` and its
    centre :math:`\mu_i = x_i + [(J^\top J)^{-1} J^\top r]_i`, the Gauss-Newton step that
    the bound cut off, where the fit stopped on a bound of that parameter, else the fitted
    :math:`x_i`. For the anisotropic amplitude :math:`s` the b0's own noise is added,
    :math:`s_s^2 \mathrel{+}= \phi/n_{b0}`: with S0 fixed at the mean of :math:`n_{b0}`
    b0 measurements its relative error moves every normalised measurement, hence
    :math:`s`, one for one, and is not in :math:`J` (on the cached DSI-515 cells it raised
    ISOVF r by 0.003-0.013 at SNR 10-20). The reported value is the mean of :math:`N(\mu_i, s_i^2)` truncated to
    the parameter's range (:func:`truncated_normal_mean`): monotone in :math:`\mu_i`, so
    the voxels that least squares piles on a bound keep their ranking, and equal to the
    fitted value where :math:`s_i` is small beside the distance to the bounds. The tau
    node index (nodes uniform in ODI) is treated in that index, i.e. with a prior close
    to uniform in ODI, and mapped to tau and kappa afterwards. These Laplace means are
    then refined into the exact joint posterior means by :func:`_grid_posterior_mean`
    (the Laplace ones are kept where its quadrature finds no weight; on the cached DSI-515
    cells the exact means raised GM ODI r at SNR 10 by 0.06-0.11 over them). Nothing is
    changed where the normal equations are singular."""
    h, chol = mats[0], mats[1]
    g, rhs, step, col, lo, hi, e1, e2 = (vecs[0], vecs[1], vecs[2], vecs[3], vecs[4],
                                         vecs[5], vecs[6], vecs[7])
    _tangent_basis(mu, e1, e2)
    lo[0], lo[1], lo[2] = 0.0, 0.0, 0.0
    hi[0], hi[1], hi[2] = tau_nodes.size - 1.0, 1.0, 1.0
    n_act = 0
    for p in range(N_THETA):
        if p < 3 or (3 < p < 6 and fit_dir):
            act[n_act] = p
            n_act += 1
    _model_eval(theta, act, n_act, mu, e1, e2, bvecs, q, table, ub, eiso, yn, sw, tau_nodes,
                lw, ibuf, idx, h, g, True, True)
    if not _solve_spd(h, 0.0, g, n_act, chol, step):
        return
    phi = theta[6]
    k_new, f_new, s_new = theta[0], theta[1], theta[2]
    for a in range(N_BOUNDED):
        for t in range(n_act):
            rhs[t] = 0.0
        rhs[a] = 1.0
        if not _solve_spd(h, 0.0, rhs, n_act, chol, col):
            return
        if not (col[a] > 0.0):
            return
        var = phi * col[a]
        if a == 2:
            var += phi / n_b0
        for a2 in range(N_BOUNDED):  # the 3x3 covariance, where the solves never write
            chol[a, 4 + a2] = phi * col[a2] + (phi / n_b0 if a == 2 and a2 == 2 else 0.0)
        sd = np.sqrt(var)
        x = theta[a]
        centre = x + step[a] if (x <= lo[a] or x >= hi[a]) else x
        h[5, a] = centre  # for the grid, in a row of h the 5-parameter solves leave
        e = truncated_normal_mean(centre, sd, lo[a], hi[a])
        if a == 0:
            k_new = e
        elif a == 1:
            f_new = e
        else:
            s_new = e
    theta[0], theta[1], theta[2], theta[3] = k_new, f_new, s_new, 1.0 - s_new
    # the exact posterior means on the Laplace box; the Laplace means above stay where the
    # quadrature finds no weight
    _grid_posterior_mean(theta, mu, bvecs, q, table, ub, eiso, yn, sw, tau_nodes, n_b0, lw,
                         ibuf, idx, mats, vecs)


#: probabilists' Gauss-Hermite nodes and weights (3 nodes: exact for polynomials of degree
#: 5) for the S0 scale t ~ N(1, phi / n_b0) of :func:`_grid_moments`
_GH_X = np.array([-np.sqrt(3.0), 0.0, np.sqrt(3.0)])
_GH_W = np.array([1.0 / 6.0, 2.0 / 3.0, 1.0 / 6.0])
#: log of each node's weight over the normal density that placed it (the b0's likelihood
#: of t is in the fitted residual already: the quadrature integrates over t, not under it)
_GH_LW = np.log(_GH_W) + 0.5 * _GH_X ** 2
#: midpoint-rule nodes per axis of the posterior integration (GRID_N^3 x 3 likelihoods per
#: pass), the half-width of the node box in sd, and the passes (the first on an axis-aligned
#: box from the Laplace sds, the next along the principal axes of the previous pass's
#: posterior covariance). On the cached DSI-515 cells 7 nodes per axis left ISOVF r up to
#: 0.01 from 9 and 11 (which agreed within 0.004): the rule is converged at 9
GRID_N = 9
GRID_HALF = 4.0
GRID_PASSES = 2


@njit(cache=True, nogil=True, fastmath=True)
def _chol3(c00, c10, c11, c20, c21, c22, out):
    """Lower Cholesky factor of a 3x3 covariance into out[:6] (l00, l10, l11, l20, l21,
    l22); False where it is not positive definite."""
    if not (c00 > 0.0):
        return False
    l00 = np.sqrt(c00)
    l10 = c10 / l00
    l20 = c20 / l00
    d11 = c11 - l10 * l10
    if not (d11 > 0.0):
        return False
    l11 = np.sqrt(d11)
    l21 = (c21 - l20 * l10) / l11
    d22 = c22 - l20 * l20 - l21 * l21
    if not (d22 > 0.0):
        return False
    out[0], out[1], out[2], out[3], out[4], out[5] = l00, l10, l11, l20, l21, np.sqrt(d22)
    return True


@njit(cache=True, nogil=True, fastmath=True)
def _grid_moments(cen, ll_, phi, n_b0, mu, bvecs, q, table, ub, eiso, yn, sw,
                  tau_nodes, lo, hi, lw, ibuf, idx, mom):
    """Posterior mean and covariance of (k, f, s) by a midpoint rule on nodes x = cen + L z,
    z in [-GRID_HALF, GRID_HALF]^3 (GRID_N per axis), likelihood of the floor model, uniform
    prior on the ranges, S0 scale integrated by Gauss-Hermite; into mom[:9] (3 means, 6
    covariances c00 c10 c11 c20 c21 c22); False where no node has weight."""
    n = q.size
    n_c = table.shape[2] - 1
    nc = np.float64(n_c)
    n_k = tau_nodes.size
    n_nodes = GRID_N
    l00, l10, l11, l20, l21, l22 = ll_[0], ll_[1], ll_[2], ll_[3], ll_[4], ll_[5]
    sd_t = np.sqrt(phi / n_b0)
    e_ic, aniso, arg, ex, c2, fcw, m_row, cnt = (lw[0], lw[1], lw[2], lw[3], lw[4], lw[5],
                                                 lw[6], lw[7])
    bx, by, bz = bvecs[0], bvecs[1], bvecs[2]
    for i in range(n):
        c = min(abs(mu[0] * bx[i] + mu[1] * by[i] + mu[2] * bz[i]), 1.0)
        x = min(c * nc, nc - 1e-9)
        lo_c = np.floor(x)
        fcw[i] = x - lo_c
        idx[i] = ub[i] + np.int64(lo_c)
        c2[i] = c * c
        cnt[i] = sw[i] * sw[i]
    sd = np.sqrt(phi)
    inv = 1.0 / (1.5 * phi)
    lmax = -np.inf
    for t in range(9):
        mom[t] = 0.0
    wsum = 0.0
    span = GRID_HALF
    for i0 in range(n_nodes):
        z0 = -span + (i0 + 0.5) * 2.0 * span / n_nodes
        kr = cen[0] + l00 * z0
        if kr < lo[0] or kr > hi[0]:
            continue
        k0 = min(int(kr), n_k - 2)
        fk = kr - k0
        tau = tau_nodes[k0] + fk * (tau_nodes[k0 + 1] - tau_nodes[k0])
        alpha = 0.5 * (1.0 + tau)
        gamma = -0.5 * (3.0 * tau - 1.0)
        t0 = table[k0].reshape(-1)
        t1 = table[k0 + 1].reshape(-1)
        for i in range(n):
            j = idx[i]
            fc = fcw[i]
            a0 = np.float64(t0[j]) + fc * (np.float64(t0[j + 1]) - np.float64(t0[j]))
            a1 = np.float64(t1[j]) + fc * (np.float64(t1[j + 1]) - np.float64(t1[j]))
            e_ic[i] = a0 + fk * (a1 - a0)
        for i1 in range(n_nodes):
            z1 = -span + (i1 + 0.5) * 2.0 * span / n_nodes
            f = cen[1] + l10 * z0 + l11 * z1
            if f < lo[1] or f > hi[1]:
                continue
            for i in range(n):
                arg[i] = -q[i] + q[i] * f * (alpha + gamma * c2[i])
            _vexp(arg, ex, ibuf)
            for i in range(n):
                aniso[i] = f * e_ic[i] + (1.0 - f) * ex[i]
            for i2 in range(n_nodes):
                z2 = -span + (i2 + 0.5) * 2.0 * span / n_nodes
                sv = cen[2] + l20 * z0 + l21 * z1 + l22 * z2
                if sv < lo[2] or sv > hi[2]:
                    continue
                for it in range(_GH_X.size):
                    t = 1.0 + sd_t * _GH_X[it]
                    lw_t = _GH_LW[it]
                    for i in range(n):
                        m = t * (sv * aniso[i] + (1.0 - sv) * eiso[i])
                        m_row[i] = m
                        arg[i] = -m * m * inv
                    _vexp(arg, ex, ibuf)
                    r = 0.0
                    for i in range(n):
                        m = m_row[i]
                        d = yn[i] - (np.sqrt(m * m + phi) + _RICE_A * ex[i] * sd)
                        r += cnt[i] * d * d
                    lg = -r / (2.0 * phi) + lw_t
                    if lg > lmax:
                        sc = np.exp(lmax - lg) if wsum > 0.0 else 0.0
                        wsum *= sc
                        for u in range(9):
                            mom[u] *= sc
                        lmax = lg
                    wt = np.exp(lg - lmax)
                    wsum += wt
                    mom[0] += wt * kr
                    mom[1] += wt * f
                    mom[2] += wt * sv
                    mom[3] += wt * kr * kr
                    mom[4] += wt * f * kr
                    mom[5] += wt * f * f
                    mom[6] += wt * sv * kr
                    mom[7] += wt * sv * f
                    mom[8] += wt * sv * sv
    if not (wsum > 0.0):
        return False
    for u in range(9):
        mom[u] /= wsum
    mom[3] -= mom[0] * mom[0]
    mom[4] -= mom[1] * mom[0]
    mom[5] -= mom[1] * mom[1]
    mom[6] -= mom[2] * mom[0]
    mom[7] -= mom[2] * mom[1]
    mom[8] -= mom[2] * mom[2]
    return True


@njit(cache=True, nogil=True, fastmath=True)
def _grid_posterior_mean(theta, mu, bvecs, q, table, ub, eiso, yn, sw, tau_nodes, n_b0,
                         lw, ibuf, idx, mats, vecs):
    r"""Joint posterior means of (tau node index, ICVF, anisotropic amplitude s) of a
    gated voxel (S0 fixed, floor :math:`\phi`) under a uniform prior on their ranges:

    .. math::

        E[x] = \frac{\int x\,\int L(x, t)\,N(t; 1, \phi/n_{b0})^{-1}\,
        \mathrm{d}N(t)\,\mathrm{d}x}{\int \ldots},\qquad
        L = \exp\Big(-\sum_i c_i\big(y_i - R(t\,m_i(x))\big)^2 / 2\phi\Big)

    with :math:`R` the floor model's approximate Rician mean, :math:`m_i` the model with
    the fitted direction, :math:`t` the scale of the true S0 against the b0 it was fixed
    at (the b0 measurement, whose residual is in :math:`L`, is its likelihood; integrated
    by 3-node Gauss-Hermite over :math:`N(1, \phi/n_{b0})`, each node's weight divided by
    that density). Adaptive midpoint rule (:func:`_grid_moments`, :data:`GRID_N` nodes
    per axis, :data:`GRID_PASSES` passes): first an axis-aligned box of
    +-:data:`GRID_HALF` Laplace sd (from :func:`_bound_posterior_mean`, which leaves the
    centres in ``h[5]`` and the 3x3 covariance in ``chol[:3, 4:]``) inside the ranges, then
    nodes :math:`x = \bar x + L z` along the principal axes of the previous pass's
    posterior mean and covariance (adaptive Gauss-Hermite in spirit: Liu & Pierce 1994,
    Biometrika 81:624). theta is left unchanged where no node has weight."""
    h, chol = mats[0], mats[1]
    lo, hi = vecs[4], vecs[5]
    phi = theta[6]
    cen = vecs[1]
    lf = vecs[2]
    mom = h[3:5].reshape(-1)  # rows 3-4 of h (14 values): free after the Laplace step
    # first pass: an axis-aligned box of +-GRID_HALF Laplace sd (the range where that is
    # wider), inside the range
    for a in range(N_BOUNDED):
        w = min(2.0 * GRID_HALF * np.sqrt(max(chol[a, 4 + a], 0.0)), hi[a] - lo[a])
        cen[a] = min(max(h[5, a], lo[a] + 0.5 * w), hi[a] - 0.5 * w)
        lf[a] = w / (2.0 * GRID_HALF)
    lf[0], lf[1], lf[2], lf[3], lf[4], lf[5] = lf[0], 0.0, lf[1], 0.0, 0.0, lf[2]
    for _ in range(GRID_PASSES):
        if not _grid_moments(cen, lf, phi, n_b0, mu, bvecs, q, table, ub, eiso, yn,
                             sw, tau_nodes, lo, hi, lw, ibuf, idx, mom):
            return
        cen[0], cen[1], cen[2] = mom[0], mom[1], mom[2]
        if not _chol3(mom[3], mom[4], mom[5], mom[6], mom[7], mom[8], lf):
            break
    theta[0], theta[1], theta[2], theta[3] = cen[0], cen[1], cen[2], 1.0 - cen[2]


@njit(cache=True, nogil=True, fastmath=True)
def _fit_voxel(y, within, count, sw, b0_idx, pinv, xmat_t, xprod, bvecs, q, eiso, ub, sub,
               table, k_nodes,
               tau_nodes, k_fine, n_j, coarse, coarse_j, n_sub_iter, n_iter, fit_dir, lm_rtol,
               fit_floor, tie, floor_abs2, posterior, bound_mean, tau_grid_kappa, out, ws, wss,
               cbin, ibuf, res, prof, phi_out, mats, vecs, act, idx):
    n = y.size
    s0 = 0.0
    c0 = 0.0
    for i in b0_idx:
        s0 += count[i] * y[i]
        c0 += count[i]
    s0 /= c0
    if not (s0 > 0.0) or not np.isfinite(s0):
        out[:] = np.nan
        return
    yn = ws[0]
    for i in range(n):
        yn[i] = y[i] / s0
    mu = out[OUT_DIR:OUT_DIR + 3]
    _principal_direction(yn, count, pinv, xmat_t, xprod, ws[1], ws[2], ws[3], ibuf, mu,
                         mats[0], vecs[0], vecs[1])
    # grid search on the measurement subset `sub` (the first ns measurements), in the
    # weighted space: signal, e0 (hence the zeppelin powers), ball and sticks times sw
    bvecs_s, q_s, e0_s, eiso_s, ub_s, sw_s, eiso_g = sub
    ns = q_s.size
    ys = wss[0]
    phi0 = floor_abs2 / (s0 * s0)
    if phi0 > 0.0:
        # the grid's start on the floor-corrected magnitude sqrt(max(y^2 - phi, 0)) (the
        # inverse of the floor's large-signal mean sqrt(m^2 + phi)): least squares on the raw
        # magnitude starts the polish from a node biased by the floor (ICVF up, ISOVF down)
        for i in range(ns):
            ys[i] = np.sqrt(max(yn[i] * yn[i] - phi0, 0.0)) * sw_s[i]
    else:
        for i in range(ns):
            ys[i] = yn[i] * sw_s[i]
    cw, c2, ld, eic, bk, tmp = wss[1], wss[2], wss[3], wss[4], wss[5], wss[6]
    scratch = wss[7:9]
    n_c = table.shape[2] - 1
    n_k = tau_nodes.size
    n_kj = k_fine * n_j
    yy = 0.0
    ee = 0.0
    ey = 0.0
    for i in range(ns):
        yy += ys[i] * ys[i]
        ee += eiso_g[i] * eiso_g[i]
        ey += eiso_g[i] * ys[i]
    _geometry(mu, bvecs_s, q_s, n_c, n_kj, cbin, cw, c2, ld)
    # coarse pass: every `coarse`-th tau node, every `coarse_j`-th node in f. The zeppelin
    # column of node (k, j) is e0 B0^j D^(k j); its step multiplier (B0 D^k)^coarse_j is one
    # exponential: exp(coarse_j (2q/(3J) + k ld))
    p, mult = scratch[0], scratch[1]
    for k in range(0, n_k, coarse):
        kf = k_nodes[k]
        for i in range(ns):
            tmp[i] = coarse_j * (2.0 * q_s[i] / (3.0 * n_j) + kf * ld[i])
        _vexp(tmp, mult, ibuf)
        _stick_column(k, table, ub_s, cbin, cw, sw_s, eic)
        ii, ie, iy = _stick_products(eic, eiso_g, ys)
        p[:] = e0_s
        _eval_nodes(k, 0, n_j, coarse_j, n_j, eic, p, mult, eiso_g, ys, yy, ee, ey, res, ii,
                    ie, iy, tie)
    n_prof = 0
    if posterior:
        for k in range(0, n_k, coarse):
            pk = np.inf
            for j in range(0, n_j + 1, coarse_j):
                pk = min(pk, res[k, j])
            prof[n_prof] = pk
            n_prof += 1
    # only the visited nodes (the rest of ``res`` is never written)
    kb, jb = _argmin2(res, coarse, coarse_j)
    _, s, w = _amplitudes(kb, jb, tau_nodes, n_j, table, ub_s, cbin, cw, c2, q_s, sw_s,
                          eiso_g, ys, ee, ey, yy, eic, bk, tmp, ibuf, tie)
    # Levenberg-Marquardt polish from the best grid node, on all measurements
    r = 0.0
    theta = vecs[8]
    theta[0], theta[1], theta[2], theta[3] = float(kb), jb / n_j, s, w
    theta[4], theta[5], theta[6] = 0.0, 0.0, floor_abs2 / (s0 * s0)
    lw = ws[4:4 + _LM_ROWS]
    if n_sub_iter > 0:
        # first iterations on the grid subset, the last ones on all measurements
        _levenberg_marquardt(theta, mu, bvecs_s, q_s, table, ub_s, eiso_s, yn[:ns], sw_s,
                             tau_nodes, n_sub_iter, fit_dir, fit_floor, lw, ibuf, idx, mats,
                             vecs, act, lm_rtol, tie)
    if n_iter > 0:
        n_full, rtol_full = n_iter, lm_rtol
        if phi0 * LOW_SNR * LOW_SNR > 1.0 and n_iter < LOW_SNR_ITER:
            # low SNR (sigma / S0 > 1 / LOW_SNR): the floor's curvature leaves one
            # iteration short of the optimum (GM ODI); iterate until the residual stops
            # falling by LOW_SNR_RTOL
            n_full, rtol_full = LOW_SNR_ITER, max(lm_rtol, LOW_SNR_RTOL)
        r = _levenberg_marquardt(theta, mu, bvecs, q, table, ub, eiso, yn, sw, tau_nodes,
                                 n_full, fit_dir, fit_floor, lw, ibuf, idx, mats, vecs, act,
                                 rtol_full, tie)
        # low SNR, S0 fixed (the same gate as the extra iterations): the posterior means
        # of the bounded parameters replace the clipped least-squares point in a second
        # pass (:func:`_posterior_rows`), outside the per-voxel fit, so that the fit of
        # every other voxel compiles and runs as it did without them
    kr, f, s, w = theta[0], theta[1], theta[2], theta[3]
    phi_out[0] = theta[6] * s0 * s0
    if fit_floor and n_iter > 0:
        phi_out[0] = _residual_variance(theta, mu, vecs[6], vecs[7], bvecs, q, table, ub,
                                        eiso, yn, sw, count, tau_nodes, lw, ibuf, idx, mats,
                                        vecs, act, tie, within / (s0 * s0)) * s0 * s0
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
    # NRMSE over every volume: the within-group scatter of merged volumes added back
    w2 = within / (s0 * s0)
    yy_all = w2
    for i in range(n):
        yy_all += count[i] * yn[i] * yn[i]
    out[OUT_NRMSE] = np.sqrt(max(r + w2, 0.0) / yy_all) if yy_all > 0 else np.nan
    out[OUT_S0] = (s + w) * s0


@njit(cache=True, nogil=True, fastmath=True)
def _residual_variance(theta, mu, e1, e2, bvecs, q, table, ub, eiso, yn, sw, count,
                       tau_nodes, lw, ibuf, idx, mats, vecs, act, tie, within):
    r"""Noise variance (in units of S0^2) from the residuals of the fit with a free floor:
    :math:`\hat\sigma^2 = (\mathrm{RSS} + W) / (\sum_i c_i\,\xi(\hat M_i/\hat\sigma)
    - p)`, with :math:`\hat M_i` the fitted Rician mean of measurement i (count
    :math:`c_i`), :math:`W` the scatter within groups of equivalent volumes,
    :math:`\xi` the Rician variance factor (:func:`~microvba.models.noise.pair_variance`),
    p = :data:`_RESID_DOF`; three fixed-point steps from the fitted floor
    :math:`\phi`. The floor parameter alone is poorly determined where the signal stays
    far above it (at SNR 50 its scatter was +-48 % between voxels); the residuals
    measure sigma directly there, and near the floor :math:`\xi` accounts for the smaller
    magnitude variance."""
    n = q.size
    phi = theta[6]
    rss = _model_eval(theta, act, 0, mu, e1, e2, bvecs, q, table, ub, eiso, yn, sw,
                      tau_nodes, lw, ibuf, idx, mats[0], vecs[0], False, tie) + within
    m_row = lw[9 + 6]
    ex = lw[8]
    sd = np.sqrt(max(phi, 0.0))
    # the fitted Rician means, into lw[0] (not read again by _model_eval's caller)
    em = lw[0]
    for i in range(n):
        m = m_row[i]
        em[i] = np.sqrt(m * m + phi + 1e-300) + _RICE_A * ex[i] * sd
    var = phi
    if not (var > 0.0):
        var = rss / max(np.sum(count) - _RESID_DOF, 1.0)
    n_xi = _XI.size
    for _ in range(3):
        if not (var > 0.0):
            return 0.0
        inv_du = 1.0 / (np.sqrt(var) * _XI_DU)
        acc = 0.0
        for i in range(n):
            x = min(max(em[i] * inv_du - _XI_U0 / _XI_DU, 0.0), n_xi - 1.000001)
            k = np.int64(x)
            acc += count[i] * (_XI[k] + (x - k) * (_XI[k + 1] - _XI[k]))
        var = rss / max(acc - _RESID_DOF, 1.0)
    return var


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
def _argmin2(res, k_step, j_step):
    """Index of the smallest of res[::k_step, ::j_step]."""
    best = np.inf
    kb = 0
    jb = 0
    for k in range(0, res.shape[0], k_step):
        for j in range(0, res.shape[1], j_step):
            if res[k, j] < best:
                best = res[k, j]
                kb = k
                jb = j
    return kb, jb


@njit(cache=True, nogil=True)
def _valid_signal(y, count, b0_idx):
    """All values finite and a positive mean b0."""
    for i in range(y.size):
        if not np.isfinite(y[i]):
            return False
    s0 = 0.0
    for i in b0_idx:
        s0 += count[i] * y[i]
    return s0 > 0.0


@njit(cache=True, nogil=True, parallel=True)
def _fit_rows(data, rows, groups, count, b0_idx, pinv, xmat_t, xprod, bvecs, q, eiso, ub, sub,
              table, k_nodes, tau_nodes, k_fine, n_j, coarse, coarse_j, n_sub_iter, n_iter,
              fit_dir, lm_rtol, fit_floor, tie, sigma2, posterior, bound_mean, tau_grid_kappa,
              out, phi, pair_a, pair_b, fuse_pairs, var_out):
    """Fit row rows[t] of data into out[t] (and the squared noise floor into phi[t]), with
    the Rician noise variance sigma2[t] (signal units squared; the start value where
    ``fit_floor``) and, with ``tie``, S0 fixed at the mean b0;
    with ``fuse_pairs`` the variance is instead estimated from the row itself by
    :func:`~microvba.models.noise.pair_variance_row` over the volume pairs
    (pair_a[i], pair_b[i]) and written to var_out[t] (one read of the row for both);
    measurement u is the mean of data[v, members[starts[u]:starts[u + 1]]], with
    ``groups`` = (members, starts, first, second, big): the first two members of each group
    (equal for a single volume) and the groups of more than two."""
    members, starts, first, second, big = groups
    nv = rows.size
    n = count.size
    sw = np.sqrt(count)
    ns = sub[1].size
    n_k = tau_nodes.size
    block = 64
    n_blocks = (nv + block - 1) // block
    for bi in prange(n_blocks):
        ws = np.empty((4 + _LM_ROWS, n))
        wss = np.empty((9, ns))
        cbin = np.empty(ns, np.int64)
        ibuf = np.empty(n, np.int64)
        res = np.empty((n_k, n_j + 1))
        prof = np.empty(n_k)
        y = np.empty(n)
        mats = np.empty((2, N_THETA, N_THETA))
        vecs = np.empty((_N_VECS, N_THETA))
        act = np.empty(N_THETA, np.int64)
        idx = np.empty(n, np.int64)
        pwork = np.empty((3, pair_a.size))
        for t in range(bi * block, min((bi + 1) * block, nv)):
            v = rows[t]
            s2 = sigma2[t]
            if fuse_pairs:
                s2 = pair_variance_row(data, v, pair_a, pair_b, pwork)
                var_out[t] = s2
                if not (np.isfinite(s2) and s2 > 0.0):
                    s2 = 0.0
            # groups of one or two volumes (all of them in most schemes) in one
            # branch-free pass; larger groups (repeated b0s) after it
            within = 0.0
            for i in range(n):
                xa = np.float64(data[v, first[i]])
                xb = np.float64(data[v, second[i]])
                y[i] = 0.5 * (xa + xb)
                within += 0.5 * (xa - xb) * (xa - xb)
            for i in big:
                acc = 0.0
                for m in range(starts[i], starts[i + 1]):
                    acc += data[v, members[m]]
                y[i] = acc / count[i]
                for m in range(starts[i], starts[i + 1]):
                    within += (data[v, members[m]] - y[i]) ** 2
            phi[t] = np.nan
            # every work value of the previous voxel is cleared: a voxel's result depends
            # on its own signal only, never on which voxel its thread fitted before
            mats[:] = 0.0
            vecs[:] = 0.0
            act[:] = 0
            # validity is checked here, outside fastmath code (which assumes finite values)
            if not _valid_signal(y, count, b0_idx) or not np.isfinite(within):
                out[t, :] = np.nan
                continue
            _fit_voxel(y, within, count, sw, b0_idx, pinv, xmat_t, xprod, bvecs, q, eiso, ub, sub, table,
                       k_nodes, tau_nodes, k_fine, n_j, coarse, coarse_j, n_sub_iter, n_iter,
                       fit_dir, lm_rtol, fit_floor, tie, s2, posterior, bound_mean,
                       tau_grid_kappa, out[t], ws, wss, cbin, ibuf, res, prof, phi[t:t + 1], mats, vecs, act,
                       idx)


@njit(cache=True, nogil=True, parallel=True)
def _posterior_rows(data, groups, count, b0_idx, bvecs, q, eiso, ub, table, tau_nodes,
                    fit_dir, n_iter, sigma2, tau_grid_kappa, out):
    """Second pass of a fit with S0 fixed and the floor sigma2[t] (signal units squared,
    as the fit used it): in the rows the fit's gate selects (a fitted voxel, n_iter > 0,
    sigma2 / S0^2 > 1 / LOW_SNR^2, S0 the mean b0), the least-squares fit in out[t] is
    taken back to theta = (tau node index, ICVF, s = 1 - ISOVF, 1 - s, 0, 0, phi) at its
    direction, and ICVF, ISOVF, tau and kappa are replaced by the posterior means of
    :func:`_bound_posterior_mean`. Other rows are left untouched."""
    members, starts, first, second, big = groups
    nv = data.shape[0]
    n = count.size
    sw = np.sqrt(count)
    n_k = tau_nodes.size
    c0 = 0.0
    for i in b0_idx:
        c0 += count[i]
    # the gate, from the b0 groups only (the fit's own S0 and floor)
    gate = np.zeros(nv, np.bool_)
    for t in prange(nv):
        s0 = 0.0
        for i in b0_idx:
            acc = 0.0
            for m in range(starts[i], starts[i + 1]):
                acc += np.float64(data[t, members[m]])
            s0 += count[i] * (acc / count[i])
        s0 /= c0
        gate[t] = (n_iter > 0 and np.isfinite(out[t, OUT_ICVF]) and s0 > 0.0
                   and sigma2[t] / (s0 * s0) * LOW_SNR * LOW_SNR > 1.0)
    idx_g = np.flatnonzero(gate)
    block = 16
    n_blocks = (idx_g.size + block - 1) // block
    for bi in prange(n_blocks):
        lw = np.empty((_LM_ROWS, n))
        yn = np.empty(n)
        ibuf = np.empty(n, np.int64)
        idx = np.empty(n, np.int64)
        mats = np.empty((2, N_THETA, N_THETA))
        vecs = np.empty((_N_VECS, N_THETA))
        act = np.empty(N_THETA, np.int64)
        mu = np.empty(3)
        for u in range(bi * block, min((bi + 1) * block, idx_g.size)):
            t = idx_g[u]
            v = t
            for i in range(n):
                acc = 0.0
                for m in range(starts[i], starts[i + 1]):
                    acc += np.float64(data[v, members[m]])
                yn[i] = acc / count[i]
            s0 = 0.0
            for i in b0_idx:
                s0 += count[i] * yn[i]
            s0 /= c0
            for i in range(n):
                yn[i] /= s0
            mats[:] = 0.0
            vecs[:] = 0.0
            act[:] = 0
            theta = vecs[8]
            tau = out[t, OUT_TAU]
            k0 = min(max(np.searchsorted(tau_nodes, tau, side="right") - 1, 0), n_k - 2)
            theta[0] = k0 + (tau - tau_nodes[k0]) / (tau_nodes[k0 + 1] - tau_nodes[k0])
            theta[1] = out[t, OUT_ICVF]
            theta[2] = 1.0 - out[t, OUT_ISOVF]
            theta[3] = out[t, OUT_ISOVF]
            theta[6] = sigma2[t] / (s0 * s0)
            for d in range(3):
                mu[d] = out[t, OUT_DIR + d]
            _bound_posterior_mean(theta, mu, bvecs, q, table, ub, eiso, yn, sw, tau_nodes,
                                  fit_dir, c0, lw, ibuf, idx, mats, vecs, act)
            kr = min(max(theta[0], 0.0), n_k - 1.0)
            k0 = min(int(kr), n_k - 2)
            tau = tau_nodes[k0] + (kr - k0) * (tau_nodes[k0 + 1] - tau_nodes[k0])
            out[t, OUT_ICVF] = theta[1]
            out[t, OUT_ISOVF] = 1.0 - theta[2]
            out[t, OUT_TAU] = tau
            out[t, OUT_KAPPA] = np.interp(tau, tau_grid_kappa[0], tau_grid_kappa[1])


def fit_voxels(data, groups, count, b0_idx, pinv, xmat_t, xprod, bvecs, q, eiso, ub, sub,
               table, k_nodes, tau_nodes, k_fine, n_j, coarse, coarse_j, n_sub_iter, n_iter,
               fit_dir, lm_rtol, sigma2, tie, posterior, tau_grid_kappa, pairs=None,
               bound_mean=False):
    """Fit every row of ``data`` (n_voxels, n_volumes); returns (n_voxels, N_OUT).

    The model arrays are per measurement (a group of equivalent volumes, see
    :func:`~microvba.models.gradients.antipodal_groups`), the grid-search subset ``sub``
    first. ``sigma2`` (n_voxels,): the Rician noise variance of each row in signal units
    squared (0: no floor); ``tie``: S0 fixed at the mean b0 (else fitted); ``bound_mean``:
    posterior means of the bounded parameters in low-SNR voxels (see
    :func:`_bound_posterior_mean`; only with ``tie`` and a floor above S0 / LOW_SNR).

    ``pairs`` ((n_pairs, 2) volume indices): estimate each row's variance from its pairs
    of repeated volumes in the same pass (:func:`~microvba.models.noise.pair_variance`,
    unpooled; ``sigma2`` is ignored) and return ``(out, variance)``."""
    nv = data.shape[0]
    args = (groups, count, b0_idx, pinv, xmat_t, xprod, bvecs, q, eiso, ub, sub, table, k_nodes,
            tau_nodes, k_fine, n_j, coarse, coarse_j, n_sub_iter, n_iter, fit_dir, lm_rtol)
    out = np.empty((nv, N_OUT))
    phi = np.empty(nv)
    data = _kernel_input(data)
    sigma2 = np.ascontiguousarray(np.broadcast_to(np.asarray(sigma2, np.float64), (nv,)))
    fuse = pairs is not None and len(pairs) > 0
    pa, pb = _pair_columns(pairs if fuse else None)
    var = np.full(nv, np.nan)
    load_cached_callees(_fit_rows)  # fresh and cached processes: bit-identical fits
    _fit_rows(data, np.arange(nv), *args, False,
              bool(tie), sigma2, posterior, bool(bound_mean), tau_grid_kappa, out, phi, pa,
              pb, fuse, var)
    if bound_mean and tie:
        # the floor each row was fitted with: its own pairs estimate where fused
        used = np.where(np.isfinite(var) & (var > 0), var, 0.0) if fuse else sigma2
        load_cached_callees(_posterior_rows)
        _posterior_rows(data, groups, count, b0_idx, bvecs, q, eiso, ub, table, tau_nodes,
                        fit_dir, n_iter, used, tau_grid_kappa, out)
    return (out, var) if pairs is not None else out


def _pair_columns(pairs):
    if pairs is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    return np.ascontiguousarray(pairs[:, 0]), np.ascontiguousarray(pairs[:, 1])


def _kernel_input(data):
    """C-contiguous, writable float32: one compiled specialisation of the kernel for every
    caller (a read-only array, as Dask hands to its workers, would compile another)."""
    data = np.ascontiguousarray(data, dtype=np.float32)
    return data if data.flags.writeable else data.copy()


def free_floor(data, args, tie, tau_grid_kappa):
    """Rician noise variance (signal units squared) fitted freely in every row of ``data``
    (NaN where a row cannot be fitted)."""
    nv = data.shape[0]
    out = np.empty((nv, N_OUT))
    phi = np.empty(nv)
    pa, pb = _pair_columns(None)
    load_cached_callees(_fit_rows)
    _fit_rows(_kernel_input(data), np.arange(nv), *args, True,
              bool(tie), np.zeros(nv), False, False, tau_grid_kappa, out, phi, pa, pb,
              False, np.empty(0))
    return phi
