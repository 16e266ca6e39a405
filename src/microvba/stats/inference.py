r"""From null distributions to randomise-style p maps.

FWE-corrected p of an observed value :math:`x` against the maximum-statistic null
:math:`M_1 (= \text{observed}), M_2, \dots, M_N`:
:math:`p = \#\{j : M_j \ge x\} / N`. Uncorrected voxel p: the same count over the voxel's own
permutation values. Maps store :math:`1 - p` (``*_corrp``, ``*_p``: FSL randomise's
convention, so that "bright = significant" and ``> 0.95`` means ``p < 0.05``) and
:math:`-\log_{10} p` (``*_logp``, ``*_unclogp``, ``*_fdrlogp``, ``*_famlogp``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..io import derivatives
from .clusters import Clusters, fdr_bh
from .family import minp_p
from .result import RandomiseResult


def fwe_p(observed: np.ndarray, null_max: np.ndarray) -> np.ndarray:
    """``#{null_max >= observed} / len(null_max)`` for every observed value."""
    srt = np.sort(np.asarray(null_max, dtype=np.float64))
    n = srt.size
    return (n - np.searchsorted(srt, np.asarray(observed, dtype=np.float64), side="left")) / n


def _logp(p: np.ndarray) -> np.ndarray:
    return -np.log10(np.clip(p, 1e-300, 1.0))


def _cluster_maps(cl: Clusters, null_ext: np.ndarray, null_mass: np.ndarray
                  ) -> dict[str, np.ndarray]:
    out = {}
    for stat, values, nl in (("clustere", cl.extent, null_ext), ("clusterm", cl.mass, null_mass)):
        p = fwe_p(values, nl)
        out[stat] = (cl.voxel_map(1.0 - p), cl.voxel_map(_logp(p)))
    return out


def assemble_maps(*, t: np.ndarray, signs: Sequence[int], null: np.ndarray,
                  stats: Sequence[str], vox_counts: np.ndarray, tfce_obs: np.ndarray | None,
                  clusters: dict[int, Clusters] | None,
                  family_null: np.ndarray | None, n_perm: int, params: dict,
                  family_minp: np.ndarray | None = None, tail: bool = False,
                  joint: Sequence[str] = ()) -> RandomiseResult:
    """Build the :class:`RandomiseResult` of one image from its permutation summaries.

    ``null`` is ``(n_signs, len(stats), n_perm)``; ``vox_counts`` ``(n_signs, V)`` exceedance counts including the unpermuted data; ``family_null``
    ``(len(stats), n_perm)`` the maximum over the family (or None); ``family_minp``
    ``(n_signs, len(stats), n_perm)`` the min-p null of each direction's family
    (:func:`microvba.stats.family.minp_null` with the same ``tail``; or None). Either one gives the
    ``*_famcorrp``/``*_famlogp`` maps. ``joint``: statistics corrected together by
    ``family_minp`` (e.g. ``("tfce", "vox")``); their union map, the smaller family p of a
    voxel, is ``<joint names>_famcorrp_tstat{k}`` (``tfcevox_famcorrp_tstat1``).
    """
    maps: dict[str, np.ndarray] = {}
    null_max: dict[str, np.ndarray] = {}
    cluster_info: dict[str, Clusters] = {}
    idx = {s: i for i, s in enumerate(stats)}
    for s, sign in enumerate(signs):
        c = s + 1
        k = derivatives.tstat_key(c)
        ts = sign * t
        maps[k] = ts
        observed = {"vox": ts}
        p_unc = vox_counts[s] / n_perm
        maps[derivatives.voxel_key(derivatives.UNC_P, c)] = 1.0 - p_unc
        maps[derivatives.voxel_key(derivatives.UNC_LOGP, c)] = _logp(p_unc)
        q = fdr_bh(p_unc)
        maps[derivatives.voxel_key(derivatives.FDR_P, c)] = 1.0 - q
        maps[derivatives.voxel_key(derivatives.FDR_LOGP, c)] = _logp(q)
        if tfce_obs is not None:
            observed["tfce"] = tfce_obs[s]
            maps[derivatives.stat_key("tfce", c)] = tfce_obs[s]
        for stat, obs in observed.items():
            nl = null[s, idx[stat]]
            null_max[derivatives.stat_key(stat, c)] = nl
            p = fwe_p(obs, nl)
            maps[derivatives.corrp_key(stat, c)] = 1.0 - p
            maps[derivatives.logp_key(stat, c)] = _logp(p)
            pf = None
            if family_null is not None:
                pf = fwe_p(obs, family_null[idx[stat]])
            elif family_minp is not None:
                pf = minp_p(obs, nl, family_minp[s, idx[stat]], tail)
                null_max[f"{stat}_famminp_{k}"] = family_minp[s, idx[stat]]
            if pf is not None:
                maps[derivatives.corrp_key(stat, c, family=True)] = 1.0 - pf
                maps[derivatives.logp_key(stat, c, family=True)] = _logp(pf)
        if family_minp is not None and len(joint) > 1:
            name = "".join(joint)
            p_union = np.min([1.0 - maps[derivatives.corrp_key(stat, c, family=True)]
                              for stat in joint if stat in observed], axis=0)
            maps[derivatives.corrp_key(name, c, family=True)] = 1.0 - p_union
            maps[derivatives.logp_key(name, c, family=True)] = _logp(p_union)
        if clusters is not None:
            cl = clusters[s]
            cluster_info[k] = cl
            ne, nm = null[s, idx["clustere"]], null[s, idx["clusterm"]]
            null_max[derivatives.stat_key("clustere", c)] = ne
            null_max[derivatives.stat_key("clusterm", c)] = nm
            for stat, (corrp, logp) in _cluster_maps(cl, ne, nm).items():
                maps[derivatives.corrp_key(stat, c)] = corrp
                maps[derivatives.logp_key(stat, c)] = logp
            fam = None
            if family_null is not None:
                fam = _cluster_maps(cl, family_null[idx["clustere"]],
                                    family_null[idx["clusterm"]])
            elif family_minp is not None:
                fam = {}
                for stat, values, nl in (("clustere", cl.extent, ne), ("clusterm", cl.mass, nm)):
                    p = minp_p(values, nl, family_minp[s, idx[stat]], tail)
                    null_max[f"{stat}_famminp_{k}"] = family_minp[s, idx[stat]]
                    fam[stat] = (cl.voxel_map(1.0 - p), cl.voxel_map(_logp(p)))
            for stat, (corrp, logp) in (fam or {}).items():
                maps[derivatives.corrp_key(stat, c, family=True)] = corrp
                maps[derivatives.logp_key(stat, c, family=True)] = logp
    if family_null is not None:
        for stat in stats:
            if stat == "tfce" and tfce_obs is None or stat.startswith("cluster") and not clusters:
                continue
            null_max[f"{stat}_family"] = family_null[idx[stat]]
    return RandomiseResult(maps=maps, null_max=null_max, params=dict(params),
                           clusters=cluster_info)
