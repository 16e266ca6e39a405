r"""Real gradient schemes for simulated acquisitions.

``dsi515``
    The 515-point DSI q-space grid shipped with DIPY (``dsi515_b_table.txt``: every lattice
    point :math:`q \in \mathbb{Z}^3` with :math:`|q| \le 5`), with the b-values rescaled so that
    the largest equals ``bmax`` (:math:`b \propto |q|^2`; 4000 s/mm² as in the study's DSI
    protocol). One b=0 volume, 22 distinct non-zero b-values.
``dsi515-half``
    The half-sphere of the same grid (258 points: b=0 plus one of each antipodal pair). The
    diffusion signal is antipodally symmetric, :math:`E(q) = E(-q)`, so the half grid carries
    the same information with half the volumes (half-sphere DSI acquisitions are common; they
    lose only the noise averaging of the duplicated points).
``multishell``
    b = 0 (``n_b0`` volumes), 1000, 2000 and 3000 s/mm² with 30, 60 and 90 directions spread on
    each shell by a Fibonacci lattice on the hemisphere, each shell rotated differently.

References
----------
Wedeen V.J. et al. (2005) Mapping complex tissue architecture with diffusion spectrum magnetic
resonance imaging. Magn Reson Med 54, 1377-1386.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_choice, check_in_range

SCHEMES: tuple[str, ...] = ("dsi515", "dsi515-half", "multishell")
#: the largest b-value of the study's DSI protocol (s/mm²)
DSI_BMAX = 4000.0


def dsi515_table() -> tuple[np.ndarray, np.ndarray]:
    """DIPY's DSI-515 b-table as ``(bvals, bvecs)`` (b-values as shipped, bmax ~11538)."""
    from dipy.data import get_fnames

    table = np.loadtxt(get_fnames(name="dsi515btable"))
    bvals, bvecs = table[:, 0].astype(float), table[:, 1:4].astype(float)
    norms = np.linalg.norm(bvecs, axis=1, keepdims=True)
    bvecs = np.where(norms > 0, bvecs / np.where(norms > 0, norms, 1.0), 0.0)
    return bvals, bvecs


def dsi515_scheme(bmax: float = DSI_BMAX, half_sphere: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
    """DSI-515 grid rescaled to ``bmax``; ``half_sphere`` keeps one of each antipodal pair."""
    bmax = check_in_range("bmax", bmax, 100.0, 50000.0)
    bvals, bvecs = dsi515_table()
    bvals = bvals * (bmax / bvals.max())
    if half_sphere:
        q = bvecs * np.sqrt(bvals)[:, None]
        keep = (q[:, 2] > 1e-9) | ((np.abs(q[:, 2]) <= 1e-9)
                                   & ((q[:, 1] > 1e-9) | ((np.abs(q[:, 1]) <= 1e-9)
                                                          & (q[:, 0] > 1e-9))))
        keep |= bvals == 0
        bvals, bvecs = bvals[keep], bvecs[keep]
    return np.round(bvals, 1), bvecs


def fibonacci_hemisphere(n: int, rotation: np.ndarray | None = None) -> np.ndarray:
    """``n`` nearly uniform unit vectors on the upper hemisphere (Fibonacci lattice)."""
    i = np.arange(n) + 0.5
    z = 1.0 - i / n  # uniform in (0, 1): equal-area bands on the hemisphere
    phi = np.pi * (1.0 + 5**0.5) * i
    r = np.sqrt(1.0 - z * z)
    v = np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)
    if rotation is not None:
        v = v @ np.asarray(rotation).T
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _rotation(angle_rad: float, axis: np.ndarray) -> np.ndarray:
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle_rad) * k + (1 - np.cos(angle_rad)) * (k @ k)


def multishell_scheme(shells: tuple[float, ...] = (1000.0, 2000.0, 3000.0),
                      n_dirs: tuple[int, ...] = (30, 60, 90), n_b0: int = 6
                      ) -> tuple[np.ndarray, np.ndarray]:
    """A 3-shell HARDI scheme with interleaved b=0 volumes (b=0 first, then every ~30)."""
    bvals, bvecs = [], []
    for k, (b, n) in enumerate(zip(shells, n_dirs, strict=True)):
        rot = _rotation(0.7 * (k + 1), np.array([1.0, 0.3 * k, 0.5]))
        bvecs.append(fibonacci_hemisphere(int(n), rot))
        bvals.append(np.full(int(n), float(b)))
    bv, bg = np.concatenate(bvals), np.concatenate(bvecs)
    total = bv.size + n_b0
    b0_at = set(np.linspace(0, total, n_b0, endpoint=False).astype(int).tolist())
    out_b, out_g, j = np.zeros(total), np.zeros((total, 3)), 0
    for i in range(total):
        if i not in b0_at:
            out_b[i], out_g[i] = bv[j], bg[j]
            j += 1
    return out_b, out_g


def gradient_scheme(name: str, bmax: float = DSI_BMAX) -> tuple[np.ndarray, np.ndarray]:
    """``(bvals, bvecs)`` of a named scheme (see the module docstring)."""
    name = check_choice("scheme", name, SCHEMES)
    if name == "multishell":
        return multishell_scheme()
    return dsi515_scheme(bmax=bmax, half_sphere=name == "dsi515-half")
