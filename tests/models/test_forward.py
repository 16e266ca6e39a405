"""NODDI and tensor forward models against brute-force numerical integration."""

from __future__ import annotations

import numpy as np
import pytest

from microvba.models.dti import tensor_signal
from microvba.models.noddi import D_PAR_WM, kappa_to_odi, noddi_signal, odi_to_kappa
from microvba.models.watson import watson_stick_signal, watson_tau

_T, _WT = np.polynomial.legendre.leggauss(400)
_PHI = np.linspace(0.0, 2.0 * np.pi, 180, endpoint=False)


def _sphere_grid():
    """Product quadrature on the sphere about z: Gauss-Legendre in cos(theta), uniform phi."""
    st = np.sqrt(1.0 - _T**2)
    n = np.stack([st[:, None] * np.cos(_PHI), st[:, None] * np.sin(_PHI),
                  np.broadcast_to(_T[:, None], (_T.size, _PHI.size))], axis=-1)
    return n.reshape(-1, 3), np.repeat(_WT, _PHI.size)


def _watson_average(kappa, f):
    """<f(n)>_Watson with mean direction z, by quadrature of the density itself."""
    n, w = _sphere_grid()
    dens = w * np.exp(kappa * (n[:, 2] ** 2 - 1.0))
    return (dens * f(n)).sum() / dens.sum()


@pytest.mark.parametrize("kappa", [0.0, 0.3, 1.0, 4.0, 16.0, 32.0, 64.0])
def test_stick_average_matches_integration(kappa):
    for b in (700.0, 1500.0, 3000.0, 4000.0):
        beta = b * D_PAR_WM
        for c in (0.0, 0.35, 0.8, 1.0):
            g = np.array([np.sqrt(1.0 - c * c), 0.0, c])
            ref = _watson_average(kappa, lambda n, g=g, beta=beta: np.exp(-beta * (n @ g) ** 2))
            assert watson_stick_signal(beta, kappa, c) == pytest.approx(ref, abs=1e-4)


@pytest.mark.parametrize("kappa", [0.0, 2.0, 64.0])
def test_full_noddi_signal_matches_integration(kappa, rng):
    """Every compartment averaged over Watson orientations numerically (zeppelin included)."""
    icvf, isovf, d_par, d_iso = 0.55, 0.1, D_PAR_WM, 3e-3
    bvals = np.array([0.0, 1000.0, 2000.0, 3000.0, 4000.0])
    bvecs = rng.normal(size=(5, 3))
    bvecs /= np.linalg.norm(bvecs, axis=1, keepdims=True)
    odi = kappa_to_odi(kappa)
    got = noddi_signal(bvals, bvecs, icvf, odi, isovf, np.array([0.0, 0.0, 1.0]), d_par, d_iso)
    tau = _watson_average(kappa, lambda n: n[:, 2] ** 2)
    d_perp = d_par * (1 - icvf)
    for b, g, s in zip(bvals, bvecs, got, strict=True):
        e_ic = _watson_average(kappa, lambda n, b=b, g=g: np.exp(-b * d_par * (n @ g) ** 2))
        # Watson-averaged zeppelin tensor: d_perp I + (d_par - d_perp) <n n^T>
        nnt = np.diag([(1 - tau) / 2, (1 - tau) / 2, tau])
        dten = d_perp * np.eye(3) + (d_par - d_perp) * nnt
        e_ec = np.exp(-b * g @ dten @ g)
        ref = (1 - isovf) * (icvf * e_ic + (1 - icvf) * e_ec) + isovf * np.exp(-b * d_iso)
        assert s == pytest.approx(ref, abs=1e-4)


def test_tau_matches_integration():
    for kappa in (0.0, 0.01, 0.1, 1.0, 10.0, 64.0):
        ref = _watson_average(kappa, lambda n: n[:, 2] ** 2)
        assert watson_tau(kappa) == pytest.approx(ref, abs=1e-8)


def test_odi_kappa_roundtrip():
    odi = np.array([0.01, 0.1, 0.5, 0.9, 1.0])
    assert np.allclose(kappa_to_odi(odi_to_kappa(odi)), odi)
    assert odi_to_kappa(1.0) == 0.0
    assert kappa_to_odi(0.0) == 1.0


def test_noddi_limits_and_shapes(rng):
    bvals = np.r_[0.0, np.full(20, 2000.0)]
    bvecs = rng.normal(size=(21, 3))
    mu = rng.normal(size=(4, 2, 3))
    s = noddi_signal(bvals, bvecs, np.full((4, 2), 0.5), 0.2, 0.0, mu)
    assert s.shape == (4, 2, 21)
    assert np.allclose(s[..., 0], 1.0)
    free = noddi_signal(bvals, bvecs, 0.3, 0.4, 1.0, mu[0, 0])
    assert np.allclose(free, np.exp(-bvals * 3e-3))
    # near-zero dispersion -> a single stick along mu
    g = bvecs / np.linalg.norm(bvecs, axis=1, keepdims=True)
    stick = noddi_signal(bvals, g, 1.0, 1e-4, 0.0, np.array([1.0, 0, 0]))
    assert np.allclose(stick, np.exp(-bvals * D_PAR_WM * g[:, 0] ** 2), atol=2e-3)


def test_tensor_signal(rng):
    bvals = np.full(30, 1000.0)
    g = rng.normal(size=(30, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    evals = np.array([1.7e-3, 0.4e-3, 0.3e-3])
    d = q @ np.diag(evals) @ q.T
    ref = np.exp(-bvals * np.einsum("ni,ij,nj->n", g, d, g))
    assert np.allclose(tensor_signal(bvals, g, evals, q), ref)
    assert tensor_signal(bvals, g, np.tile(evals, (2, 1)), np.tile(q, (2, 1, 1))).shape == (2, 30)
