r"""The voxel-wise GLM, its Freedman-Lane permutation scheme and permutation generation.

Partitioning
------------
A t contrast :math:`c` of :math:`y = X\beta + \varepsilon` is rewritten as the coefficient of a
single regressor :math:`x` beside nuisance regressors :math:`Z` (Beckmann et al. 2001; Winkler
et al. 2014, appendix A): with :math:`Q = (X'X)^{-1}`,

.. math::  x = X Q c\,(c'Qc)^{-1}, \qquad Z = X c_\perp,

where the columns of :math:`c_\perp` span the orthogonal complement of :math:`c`. The t of
:math:`x` in :math:`[x, Z]` equals the t of :math:`c'\beta` in the original model.

Freedman-Lane
-------------
With :math:`R_Z` the residual-forming matrix of :math:`Z` and :math:`e = R_Z y`, each
permutation (or sign flip) :math:`P` builds :math:`y^* = P e + H_Z y` and refits the full model
(Freedman & Lane 1983; the default of FSL randomise). :math:`H_Z y` lies in the span of
:math:`Z` and does not change the t of :math:`x`, so with :math:`u` the unit vector of
:math:`R_Z x` and :math:`U_Z` an orthonormal basis of :math:`Z`:

.. math::  t^* = \frac{s \sqrt{n - p}}{\sqrt{e'e - \lVert U_Z' P e \rVert^2 - s^2}},
           \qquad s = u' P e.

Every permutation is thus one small matrix product :math:`[u, U_Z]' P \, e`, computed for all
voxels at once, and :math:`e'e` is permutation invariant.

References
----------
Freedman D., Lane D. (1983). A nonstochastic interpretation of reported significance levels.
J Bus Econ Stat 1, 292-298.
Winkler A.M., Ridgway G.R., Webster M.A., Smith S.M., Nichols T.E. (2014). Permutation
inference for the general linear model. NeuroImage 92, 381-397.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import linalg

from .._validation import InputError


@dataclass(frozen=True)
class FreedmanLane:
    """What a design and contrast fix once for all permutations.

    Attributes
    ----------
    basis : (n, 1 + q) float64, column 0 the unit vector ``u`` of ``R_Z x``, columns 1.. an
        orthonormal basis ``U_Z`` of the nuisance space.
    df : residual degrees of freedom ``n - rank(X)``.
    sign_flip : True when the tested regressor is constant (one-sample design): the
        residuals are sign-flipped instead of permuted (errors assumed symmetric).
    """

    basis: np.ndarray
    df: int
    sign_flip: bool

    @property
    def n_subjects(self) -> int:
        return int(self.basis.shape[0])

    @property
    def nuisance(self) -> np.ndarray:
        return self.basis[:, 1:]

    def residualise(self, Y: np.ndarray) -> np.ndarray:
        """``e = R_Z Y`` (float64)."""
        Y = np.asarray(Y, dtype=np.float64)
        Uz = self.nuisance
        if Uz.shape[1] == 0:
            return Y.copy()
        e = Y - Uz @ (Uz.T @ Y)
        # a voxel the nuisance explains exactly (e.g. the same value in every subject) keeps
        # only rounding residue, whose t would be noise: make it exactly zero (t = 0)
        ee = np.einsum("ij,ij->j", e, e)
        yy = np.einsum("ij,ij->j", Y, Y)
        e[:, ee <= 1e-20 * yy] = 0.0
        return e

    def t_stat(self, e: np.ndarray) -> np.ndarray:
        """Unpermuted t of every voxel from its nuisance residuals ``e`` (float64)."""
        s = self.basis[:, 0] @ e
        ee = np.einsum("ij,ij->j", e, e)
        sse = ee - s * s
        with np.errstate(divide="ignore", invalid="ignore"):
            t = s * math.sqrt(self.df) / np.sqrt(np.maximum(sse, ee * 1e-12))
        return np.where(ee > 0, t, 0.0)


def partition(X: np.ndarray, contrast: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Beckmann partition ``(x, Z)`` of ``X`` for a t contrast (see module docstring)."""
    X = np.asarray(X, dtype=np.float64)
    c = np.asarray(contrast, dtype=np.float64).reshape(-1)
    Q = np.linalg.pinv(X.T @ X)
    Qc = Q @ c
    x = X @ Qc / float(c @ Qc)
    c_perp = linalg.null_space(c[None, :])
    Z = X @ c_perp
    return x, Z


def freedman_lane(X: np.ndarray, contrast: np.ndarray) -> FreedmanLane:
    """Precompute the Freedman-Lane projection basis of a design and t contrast."""
    X = np.asarray(X, dtype=np.float64)
    c = np.asarray(contrast, dtype=np.float64).reshape(-1)
    if c.shape[0] != X.shape[1]:
        raise InputError(f"The contrast has {c.shape[0]} weights for {X.shape[1]} design "
                         "columns.", file="contrast",
                         fix="Give one weight per design column.")
    if not np.any(c):
        raise InputError("The contrast is all zeros.", file="contrast",
                         fix="Give a non-zero weight to the tested column.")
    x, Z = partition(X, c)
    if Z.shape[1]:
        Uz, sv, _ = np.linalg.svd(Z, full_matrices=False)
        Uz = Uz[:, sv > sv.max() * 1e-10]
    else:
        Uz = np.zeros((X.shape[0], 0))
    xr = x - Uz @ (Uz.T @ x)
    norm = np.linalg.norm(xr)
    if norm <= 1e-10 * max(np.linalg.norm(x), 1e-300):
        raise InputError("The tested regressor is collinear with the nuisance regressors.",
                         file="design", fix="Drop the covariates that duplicate the score.")
    u = xr / norm
    df = X.shape[0] - (1 + Uz.shape[1])
    if df <= 0:
        raise InputError("The design leaves no residual degrees of freedom.", file="design",
                         fix="Use fewer regressors or more subjects.")
    sign_flip = bool(np.ptp(x) <= 1e-10 * np.abs(x).max())
    return FreedmanLane(basis=np.column_stack([u, Uz]), df=int(df), sign_flip=sign_flip)


def check_blocks(blocks: np.ndarray | None, n: int) -> np.ndarray | None:
    """Validate exchangeability blocks; returns integer block codes or None."""
    if blocks is None:
        return None
    blocks = np.asarray(blocks)
    if blocks.shape != (n,):
        raise InputError(f"exchangeability_blocks has shape {blocks.shape}; expected ({n},), "
                         "one label per subject.", file="exchangeability_blocks",
                         fix="Give one block label (e.g. site) per subject.")
    _, codes = np.unique(blocks.astype(str), return_inverse=True)
    return codes.astype(np.int64)


def n_possible(n: int, sign_flip: bool, blocks: np.ndarray | None) -> float:
    """Number of distinct rearrangements (permutations or sign flips) of ``n`` subjects."""
    if sign_flip:
        return 2.0 ** n
    if blocks is None:
        return float(math.factorial(n)) if n < 171 else math.inf
    total = 1.0
    for b in np.unique(blocks):
        k = int(np.sum(blocks == b))
        total *= float(math.factorial(k)) if k < 171 else math.inf
    return total


def check_rearrangeable(n: int, sign_flip: bool, blocks: np.ndarray | None) -> float:
    """:func:`n_possible`, refused (InputError) when only the identity exists: blocks of one
    subject each leave nothing to permute, and every p-value would be 1 (a meaningless map,
    not a test)."""
    possible = n_possible(n, sign_flip, blocks)
    if possible < 2:
        raise InputError(f"the exchangeability blocks allow no rearrangement of the "
                         f"{n} subjects (every block holds a single subject), so "
                         "every permutation p-value would be 1",
                         file="exchangeability blocks (--blocks / -e)",
                         fix="Use blocks that group several subjects (e.g. site or family), "
                             "not a column with a different value in every row.")
    return possible


def draw_rearrangements(rng: np.random.Generator, n: int, count: int, sign_flip: bool,
                        blocks: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``count`` random rearrangements: row permutations (within blocks) and signs.

    Returns ``(perm, signs)``, each ``(count, n)``: the rearranged residuals are
    ``signs[:, None] * e[perm]``.
    """
    perm = np.tile(np.arange(n), (count, 1))
    signs = np.ones((count, n))
    for i in range(count):
        if sign_flip:
            signs[i] = rng.choice([-1.0, 1.0], size=n)
        elif blocks is None:
            perm[i] = rng.permutation(n)
        else:
            for b in np.unique(blocks):
                idx = np.flatnonzero(blocks == b)
                perm[i, idx] = idx[rng.permutation(idx.size)]
    return perm, signs


def enumerate_rearrangements(start: int, count: int, n: int, sign_flip: bool,
                             blocks: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Rearrangements ``start .. start + count - 1`` of the exhaustive list (index 0 is the
    identity), as ``(perm, signs)`` like :func:`draw_rearrangements`.

    Sign flips: the bits of the index; permutations: the index in the factorial number
    system (Lehmer code), within blocks a mixed radix of the blocks' factorials.
    """
    perm = np.tile(np.arange(n), (count, 1))
    signs = np.ones((count, n))
    groups = ([np.arange(n)] if blocks is None else
              [np.flatnonzero(blocks == b) for b in np.unique(blocks)])
    for i in range(count):
        index = start + i
        if sign_flip:
            signs[i] = [-1.0 if (index >> k) & 1 else 1.0 for k in range(n)]
            continue
        for idx in groups:
            k = idx.size
            index, code = divmod(index, math.factorial(k))
            pool = list(idx)
            for pos in range(k):
                j, code = divmod(code, math.factorial(k - 1 - pos))
                perm[i, idx[pos]] = pool.pop(j)
    return perm, signs


def projection_weights(basis: np.ndarray, perm: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """Rows ``W`` with ``W @ e = basis' (signs * e[perm])`` for one rearrangement."""
    W = np.empty((basis.shape[1], basis.shape[0]), dtype=basis.dtype)
    W[:, perm] = (basis * signs[:, None]).T
    return W
