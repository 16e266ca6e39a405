r"""Family-wise error over several maps (min-p) and non-parametric combination (NPC).

The study tests :math:`K` metrics in both directions: :math:`2K` maps, all from the same
Freedman-Lane permutations (:func:`microvba.stats.permutation.randomise_family`), so the
dependence between maps is kept in the joint null distribution.

Balanced family-wise correction (Westfall-Young min-p)
------------------------------------------------------
For map :math:`m` with permutation maxima :math:`M_{m,1} (= \text{observed}), \dots, M_{m,N}`
(of the voxel t, TFCE, cluster extent or mass), each permutation's maximum is turned into a
p-value against the map's *own* null distribution,

.. math::  p_{m,j} = \#\{k : M_{m,k} \ge M_{m,j}\} / N ,

and the family null is the minimum over the maps of the family,
:math:`\underline{p}_j = \min_{m \in \mathcal{F}} p_{m,j}`. A voxel of map :math:`m` with
per-map FWE p-value :math:`p_{m}(v) = \#\{k : M_{m,k} \ge T_m(v)\}/N` gets the family-wise
p-value

.. math::  p^{\mathcal{F}}_m(v) = \#\{j : \underline{p}_j \le p_m(v)\} / N

(single-step min-p, Westfall & Young 1993, p. 48; Winkler et al. 2016, sec. 2.6). Unlike the
maximum of the raw statistics (PALM ``-corrcon -corrmod`` without ``-zstat``), this gives
every map the same chance :math:`\alpha / |\mathcal{F}|`-ish of a false positive whatever the
scale of its statistic (TFCE values differ by orders of magnitude between metrics of
different smoothness). The counts are integers, so the comparisons are exact.

Several statistics of each map can share the family (``joint`` in :func:`minp_null`; the group
stage puts TFCE and the voxel t together): the minimum then runs over maps *and* statistics,
:math:`\underline{p}_j = \min_{m \in \mathcal{F}, k \in \mathcal{K}} p_{m,k,j}`, and a voxel
significant by any of them is a family-wise controlled finding. TFCE alone misses strong focal
effects in spatially smooth data; the voxel t alone misses weak extended ones.

Non-parametric combination (NPC)
--------------------------------
"Where does microstructure as a whole track the score": at every voxel the :math:`K`
partial tests (one t per metric, same permutation) are combined into one statistic and that
statistic is itself permuted (Pesarin 2001; Winkler et al. 2016). Partial p-values are
two-sided (:math:`p_k = 2\,P(T_{\nu} \ge |t_k|)`; metrics such as FA and MD change in opposite
directions) and, as PALM does to avoid storing the voxel-wise null of every metric
(Winkler et al. 2016, sec. 2.5, "transformation of the partial statistics to p-values via
their parametric distribution"), computed from the t distribution with the GLM's residual
degrees of freedom. Combining functions:

* Fisher: :math:`\Psi = -2 \sum_k \ln p_k`,
* Tippett: :math:`\Psi = \max_k (-\ln p_k)` (= :math:`\max_k |t_k|`, since all partial
  tests share the degrees of freedom).

:math:`\Psi` is then mapped, monotonically, to a z score through its parametric
distribution under independence (Fisher: :math:`\chi^2_{2K}`; Tippett:
:math:`1 - (1 - p_{\min})^K`). The z map is the combined statistic: its voxel, TFCE and
cluster statistics are assessed by the same permutations as the partial tests, so the
combined test is exact whatever the dependence between metrics (the parametric steps only
fix the *shape* of the combining function, not the p-values).

References
----------
Westfall P.H., Young S.S. (1993). Resampling-based multiple testing. Wiley.
Pesarin F. (2001). Multivariate permutation tests. Wiley.
Winkler A.M., Webster M.A., Brooks J.C., Tracey I., Smith S.M., Nichols T.E. (2016).
Non-parametric combination and related permutation tests for neuroimaging. Hum Brain Mapp
37, 1486-1511.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

import numba
import numpy as np

from .._validation import InputError


class Family(str, Enum):
    """Which maps are corrected together (``--correct-across``)."""

    NONE = "none"  # each metric and direction on its own (per-map FWE)
    METRICS = "metrics"  # all metrics, each direction separately
    SIGNS = "signs"  # both directions, each metric separately
    ALL = "all"  # every metric and both directions

    @classmethod
    def parse(cls, value: object, what: str = "--correct-across") -> Family:
        """A :class:`Family` from a name, a bool (old flag: True = all) or None (= none)."""
        if isinstance(value, cls):
            return value
        if value is None or value is False:
            return cls.NONE
        if value is True:
            return cls.ALL
        text = str(value).strip().lower()
        aliases = {"true": "all", "yes": "all", "false": "none", "no": "none",
                   "contrasts": "signs", "directions": "signs", "modalities": "metrics",
                   "per-map": "none", "map": "none"}
        text = aliases.get(text, text)
        try:
            return cls(text)
        except ValueError:
            raise InputError(f"unknown family {value!r}", file=what,
                             fix="Choose none, metrics, signs or all.") from None

    def groups(self, n_images: int, n_signs: int) -> list[list[tuple[int, int]]]:
        """The families as lists of ``(image, sign)`` indices."""
        if self is Family.NONE:
            return [[(m, s)] for m in range(n_images) for s in range(n_signs)]
        if self is Family.SIGNS:
            return [[(m, s) for s in range(n_signs)] for m in range(n_images)]
        if self is Family.METRICS:
            return [[(m, s) for m in range(n_images)] for s in range(n_signs)]
        return [[(m, s) for m in range(n_images) for s in range(n_signs)]]

    def describe(self, n_images: int, n_signs: int = 2) -> str:
        """Words for methods text and reports."""
        return {
            Family.NONE: "each map on its own (no correction across maps)",
            Family.METRICS: f"across the {n_images} metrics, each direction separately",
            Family.SIGNS: "across both directions, each metric separately",
            Family.ALL: f"across all {n_images} metrics and both directions "
                        f"({n_images * n_signs} maps)",
        }[self]


#: family-wise false-positive rate over the 14 maps (7 metrics x 2 signs) with per-map FWE
#: only, measured on null cohorts by ``benchmarks/bench_family.py`` (see RESULTS.md)
PER_MAP_FAMILY_RATE = "0.49 [0.44, 0.54] (14 maps, 400 null cohorts)"


def family_sentence(value: object, n_metrics: int | None, alpha: float = 0.05,
                    method: str | None = "minp",
                    statistics: Sequence[str] | None = None) -> str:
    """Plain-text statement of the corrected family (methods text and report summary).

    ``statistics``: the statistics corrected together (e.g. ``("tfce", "vox")``), if any.
    """
    try:
        fam = Family.parse(value)
    except InputError:
        return f"family: {value}"
    if value is True and not str(method).startswith("minp"):  # written before min-p (max)
        return "family-wise error controlled over all metrics and both directions (maximum " \
               "statistic over the family)"
    k = n_metrics or 0
    words = [_STAT_WORDS.get(str(x), str(x)) for x in (statistics or ())]
    if fam is Family.NONE:
        m = 2 * k
        bound = 1.0 - (1.0 - alpha) ** m if m else None
        return ("family-wise error controlled within each map only (metric and direction), "
                "not across maps" + (f": with {m} maps the chance of at least one false "
                                     f"positive among them exceeds {alpha:g} (up to "
                                     f"{bound:.2f} for independent maps; measured "
                                     f"{PER_MAP_FAMILY_RATE} for the study's design)"
                                     if m > 2 else ""))
    return ("family-wise error controlled " + fam.describe(k) + " by the Westfall-Young "
            "min-p procedure: each map's maximum statistic converted to a p-value against "
            "its own permutation distribution, the family corrected on the minimum p "
            "(same permutations for every map), so each map has the same chance of a false "
            "positive" + ("; p-values of the permutation maxima beyond their 90th percentile "
                          "from a generalised Pareto fit (Winkler et al. 2016, PALM -accel "
                          "tail), which keeps the test exact and free of rank ties"
                          if method == "minp-tail" else "")
            + (f"; the family includes the {' and the '.join(words)} statistics of every "
               "map (a voxel is significant when either statistic is)" if len(words) > 1
               else ""))


_STAT_WORDS = {"tfce": "TFCE", "vox": "voxel t", "clustere": "cluster extent",
               "clusterm": "cluster mass"}


#: combining functions of the non-parametric combination
NPC_FUNCTIONS = ("fisher", "tippett")


@dataclass(frozen=True)
class Correction:
    """The multiplicity setting shared by stats, workflows and the report.

    Attributes
    ----------
    across : the family corrected by min-p (:class:`Family`; default all maps).
    npc : combining functions of an additional NPC analysis across metrics
        (``"fisher"``, ``"tippett"``; empty: none).
    """

    across: Family = Family.ALL
    npc: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "across", Family.parse(self.across))
        npc = self.npc
        if isinstance(npc, str):
            npc = tuple(t for t in (x.strip().lower() for x in npc.split(",")) if t)
        npc = tuple(dict.fromkeys(str(x).strip().lower() for x in npc))
        bad = [x for x in npc if x not in NPC_FUNCTIONS]
        if bad:
            raise InputError(f"unknown NPC combining function(s) {bad}", file="--npc",
                             fix=f"Choose among {', '.join(NPC_FUNCTIONS)}.")
        object.__setattr__(self, "npc", npc)


# ----------------------------------------------------------------------------- min-p
#: share of the permutation maxima above the generalised Pareto threshold (tail p-values)
TAIL_FRACTION = 0.1
#: fewest exceedances for a tail fit (else the empirical p-values are kept)
TAIL_MIN = 20


def exceed_counts(null: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``#{null >= value}`` for every value (integers; ``null`` 1-D)."""
    srt = np.sort(np.asarray(null, dtype=np.float64))
    return srt.size - np.searchsorted(srt, np.asarray(values, dtype=np.float64), side="left")


def perm_p(null: np.ndarray, values: np.ndarray, tail: bool = False) -> np.ndarray:
    r"""p-values of ``values`` against permutation maxima ``null`` (1-D, entry 0 observed).

    ``#{null >= value} / N``; with ``tail``, values in the top :data:`TAIL_FRACTION` of the
    null get a continuous p from a generalised Pareto distribution fitted (maximum
    likelihood, location at the threshold :math:`u`) to the exceedances
    :math:`M_j - u` (Winkler et al. 2016, *Faster permutation inference in brain imaging*,
    NeuroImage 141, 502-516; PALM ``-accel tail``):
    :math:`p = (n_u / N)\,\bar G_{\xi,\sigma}(x - u)`. The fit is a symmetric function of
    the permutation maxima (the observed included), so applying it to every permutation keeps
    the family test of :func:`minp_p` exact while removing the ties of the ranks (with
    ``N`` permutations and ``F`` maps, rank-based min-p can only reach a level of
    ``floor(alpha N / F) F / N``, e.g. 0.028 for 500 permutations and 14 maps). Falls back
    to the ranks when fewer than :data:`TAIL_MIN` distinct values exceed the threshold.
    """
    null = np.asarray(null, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    N = null.size
    p = exceed_counts(null, values) / N
    if not tail:
        return p
    n_u = int(np.ceil(TAIL_FRACTION * N))
    srt = np.sort(null)
    u = srt[N - n_u - 1] if n_u < N else srt[0]
    exc = null[null > u] - u
    if exc.size < TAIL_MIN or np.unique(exc).size < TAIL_MIN:
        return p
    xi, scale = _gpd_fit(exc)
    if not (np.isfinite(xi) and np.isfinite(scale) and scale > 0):
        return p
    above = values > u
    if above.any():
        from scipy import stats

        p = p.copy()
        p[above] = exc.size / N * stats.genpareto.sf(values[above] - u, xi, 0.0, scale)
    return p


#: fits already made (:func:`minp_p` refits the null that :func:`minp_null` fitted)
_FITS: dict[bytes, tuple[float, float]] = {}


def _gpd_fit(exc: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood generalised Pareto (shape, scale) of exceedances (location 0).

    Memoised on the exceedances' bytes (a deterministic function of them)."""
    import hashlib
    import warnings

    from scipy import stats

    exc = np.ascontiguousarray(exc, dtype=np.float64)
    key = hashlib.blake2b(exc.tobytes(), digest_size=16).digest()
    hit = _FITS.get(key)
    if hit is not None:
        return hit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            xi, _, scale = stats.genpareto.fit(exc, floc=0.0)
        except (ValueError, RuntimeError, FloatingPointError):
            xi, scale = float("nan"), float("nan")
    if len(_FITS) >= 4096:
        _FITS.clear()
    _FITS[key] = (float(xi), float(scale))
    return _FITS[key]


def minp_null(null: np.ndarray, groups: Sequence[Iterable[tuple[int, int]]],
              tail: bool = False, joint: Sequence[int] = ()) -> np.ndarray:
    r"""Per map, the min-p null distribution of its family.

    Parameters
    ----------
    null : (n_images, n_signs, n_stats, N) permutation maxima (entry 0 the observed data).
    groups : families of ``(image, sign)`` indices (:meth:`Family.groups`).
    tail : p-values of the maxima from a tail fit (:func:`perm_p`) rather than ranks.
    joint : statistics (indices of axis 2) corrected *together*: the family of each of them
        is every ``(image, sign, statistic)`` of the group with a statistic in ``joint``
        (e.g. the voxel t and TFCE: a voxel is then a finding when either statistic is
        significant, with the family-wise error of the union controlled; see
        :data:`JOINT_STATISTICS_NOTE`). The other statistics keep a family of their own.

    Returns
    -------
    (n_images, n_signs, n_stats, N) float64
        ``out[m, s, k, j]``: the minimum over the family of ``(m, s, k)`` of each map's
        p-value of permutation ``j``'s maximum against its own null (``#{i : M_i >= M_j}
        / N`` without ``tail``).
    """
    n_img, n_sign, n_stat, N = null.shape
    pv = np.empty(null.shape, dtype=np.float64)
    for m in range(n_img):
        for s in range(n_sign):
            for k in range(n_stat):
                pv[m, s, k] = perm_p(null[m, s, k], null[m, s, k], tail)
    out = np.empty_like(pv)
    for group in groups:
        group = list(group)
        low = np.min([pv[m, s] for m, s in group], axis=0)  # (n_stat, N)
        if len(joint) > 1:
            low[list(joint)] = low[list(joint)].min(axis=0)
        for m, s in group:
            out[m, s] = low
    return out


#: why the voxel and TFCE statistics are corrected together by default (group stage)
JOINT_STATISTICS_NOTE = """\
TFCE weighs a voxel by the extent of the supra-threshold regions around it. When the
between-subject variability is spatially smooth (large, correlated regions of the maps move
together across subjects), the permutation maxima of TFCE come from broad blobs, and a strong
but focal effect (a small region, e.g. one Brainnetome subregion) can stay below them while
its voxel t is far above the permutation maxima of t. Min-p over both statistics of every map
gives each statistic the same chance under the null, so the family-wise error of "TFCE or
voxel significant" is controlled at alpha; since the two statistics are strongly dependent,
the family's critical p drops by much less than a factor 2."""


def minp_p(observed: np.ndarray, own_null: np.ndarray, family_minp: np.ndarray,
           tail: bool = False) -> np.ndarray:
    """Family-wise p of observed values of one map (see the module docstring).

    ``own_null`` (N,) the map's permutation maxima; ``family_minp`` (N,) from
    :func:`minp_null` (same ``tail``): ``#{j : minp_j <= p_map(value)} / N``.
    """
    p_map = perm_p(own_null, observed, tail)
    srt = np.sort(np.asarray(family_minp, dtype=np.float64))
    # the p-values are ratios of integers (ranks) or continuous: compare with a relative
    # tolerance so that a map's own maximum (p_map == its minp entry) counts
    return np.searchsorted(srt, p_map * (1 + 1e-9), side="right") / srt.size


# ----------------------------------------------------------------------------- NPC
#: grid of the partial-test table (|t| from 0 to T_MAX) and of the z table (-ln p)
T_STEP, T_MAX = 1.0 / 256.0, 64.0
LP_STEP, LP_MAX = 1.0 / 64.0, 1000.0
#: floor of the combined z (combined p = 1); only the positive part enters TFCE and maxima
Z_MIN = -8.0


@dataclass(frozen=True)
class NpcTables:
    """Lookup tables of the NPC transforms for one residual df (monotone, linear interp.)."""

    partial: np.ndarray  # -ln p of a two-sided t test at |t| = i * T_STEP
    zscore: np.ndarray  # z with P(Z >= z) = exp(-x) at x = i * LP_STEP
    df: int


def npc_tables(df: int) -> NpcTables:
    """Tables for the partial p-values (t with ``df`` degrees of freedom) and the z map."""
    from scipy import special, stats

    t = np.arange(0.0, T_MAX + T_STEP / 2, T_STEP)
    partial = -(math.log(2.0) + stats.t.logsf(t, df))
    partial = np.maximum(partial, 0.0)
    partial[0] = 0.0
    x = np.arange(0.0, LP_MAX + LP_STEP / 2, LP_STEP)
    z = np.maximum(-special.ndtri_exp(-x), Z_MIN)  # p = 1 would be z = -inf
    return NpcTables(partial=np.maximum.accumulate(partial), zscore=z, df=int(df))


@numba.njit(cache=True, nogil=True)
def _interp(table, step, x):
    n = table.shape[0]
    f = x / step
    i = int(f)
    if i >= n - 1:  # linear extrapolation past the grid (keeps monotonicity)
        return table[n - 1] + (f - (n - 1)) * (table[n - 1] - table[n - 2])
    w = f - i
    return table[i] * (1.0 - w) + table[i + 1] * w


@numba.njit(cache=True, nogil=True)
def npc_combine(t, fisher, partial, t_step, zscore, lp_step, out):
    """Combined z of ``K`` partial t maps ``t`` (K, V) into ``out`` (V,).

    ``fisher``: Fisher's :math:`-2\\sum \\ln p_k` (combined p from the chi-square with
    ``2K`` df, closed form for even df); else Tippett's :math:`\\min p_k` (combined
    :math:`1 - (1 - p)^K`).
    """
    K = t.shape[0]
    V = t.shape[1]
    for v in range(V):
        if fisher:
            s = 0.0
            for k in range(K):
                s += _interp(partial, t_step, abs(np.float64(t[k, v])))
            # P(chi2_{2K} >= 2s) = exp(-s) * sum_{i<K} s^i / i!
            term = 1.0
            tot = 1.0
            for i in range(1, K):
                term *= s / i
                tot += term
            nlp = s - math.log(tot)
        else:
            mx = 0.0
            for k in range(K):
                a = abs(np.float64(t[k, v]))
                if a > mx:
                    mx = a
            x = _interp(partial, t_step, mx)
            if x > 30.0:
                nlp = x - math.log(K)
            else:
                nlp = -math.log(-math.expm1(K * math.log1p(-math.exp(-x))))
        if nlp < 0.0:
            nlp = 0.0
        out[v] = _interp(zscore, lp_step, nlp)
    return out


def combine(t_maps: np.ndarray, function: str, tables: NpcTables) -> np.ndarray:
    """The NPC z map of ``t_maps`` (K, V) with ``function`` (``fisher`` or ``tippett``)."""
    t_maps = np.ascontiguousarray(t_maps)
    out = np.empty(t_maps.shape[1])
    return npc_combine(t_maps, function == "fisher", tables.partial, T_STEP, tables.zscore,
                       LP_STEP, out)


def combine_reference(t_maps: np.ndarray, function: str, df: int) -> np.ndarray:
    """Slow scipy version of :func:`combine` (for tests)."""
    from scipy import stats

    t_maps = np.asarray(t_maps, dtype=np.float64)
    p = 2.0 * stats.t.sf(np.abs(t_maps), df)
    K = t_maps.shape[0]
    if function == "fisher":
        pc = stats.chi2.sf(-2.0 * np.log(p).sum(axis=0), 2 * K)
    else:
        pc = 1.0 - (1.0 - p.min(axis=0)) ** K
    return np.maximum(stats.norm.isf(pc), Z_MIN)
