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
        out[f"{stat}_corrp"] = cl.voxel_map(1.0 - p)
        out[f"{stat}_logp"] = cl.voxel_map(_logp(p))
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
        k = f"tstat{s + 1}"
        ts = sign * t
        maps[k] = ts
        observed = {"vox": ts}
        p_unc = vox_counts[s] / n_perm
        maps[f"vox_p_{k}"] = 1.0 - p_unc
        maps[f"vox_unclogp_{k}"] = _logp(p_unc)
        q = fdr_bh(p_unc)
        maps[f"vox_fdrp_{k}"] = 1.0 - q
        maps[f"vox_fdrlogp_{k}"] = _logp(q)
        if tfce_obs is not None:
            observed["tfce"] = tfce_obs[s]
            maps[f"tfce_{k}"] = tfce_obs[s]
        for stat, obs in observed.items():
            nl = null[s, idx[stat]]
            null_max[f"{stat}_{k}"] = nl
            p = fwe_p(obs, nl)
            maps[f"{stat}_corrp_{k}"] = 1.0 - p
            maps[f"{stat}_logp_{k}"] = _logp(p)
            pf = None
            if family_null is not None:
                pf = fwe_p(obs, family_null[idx[stat]])
            elif family_minp is not None:
                pf = minp_p(obs, nl, family_minp[s, idx[stat]], tail)
                null_max[f"{stat}_famminp_{k}"] = family_minp[s, idx[stat]]
            if pf is not None:
                maps[f"{stat}_famcorrp_{k}"] = 1.0 - pf
                maps[f"{stat}_famlogp_{k}"] = _logp(pf)
        if family_minp is not None and len(joint) > 1:
            name = "".join(joint)
            p_union = np.min([1.0 - maps[f"{stat}_famcorrp_{k}"] for stat in joint
                              if stat in observed], axis=0)
            maps[f"{name}_famcorrp_{k}"] = 1.0 - p_union
            maps[f"{name}_famlogp_{k}"] = _logp(p_union)
        if clusters is not None:
            cl = clusters[s]
            cluster_info[k] = cl
            ne, nm = null[s, idx["clustere"]], null[s, idx["clusterm"]]
            null_max[f"clustere_{k}"], null_max[f"clusterm_{k}"] = ne, nm
            for name, arr in _cluster_maps(cl, ne, nm).items():
                maps[f"{name}_{k}"] = arr
            fam = None
            if family_null is not None:
                fam = _cluster_maps(cl, family_null[idx["clustere"]],
                                    family_null[idx["clusterm"]])
            elif family_minp is not None:
                fam = {}
                for stat, values, nl in (("clustere", cl.extent, ne), ("clusterm", cl.mass, nm)):
                    p = minp_p(values, nl, family_minp[s, idx[stat]], tail)
                    null_max[f"{stat}_famminp_{k}"] = family_minp[s, idx[stat]]
                    fam[f"{stat}_corrp"] = cl.voxel_map(1.0 - p)
                    fam[f"{stat}_logp"] = cl.voxel_map(_logp(p))
            for name, arr in (fam or {}).items():
                maps[f"{name.replace('_corrp', '_famcorrp').replace('_logp', '_famlogp')}"
                     f"_{k}"] = arr
    if family_null is not None:
        for stat in stats:
            if stat == "tfce" and tfce_obs is None or stat.startswith("cluster") and not clusters:
                continue
            null_max[f"{stat}_family"] = family_null[idx[stat]]
    return RandomiseResult(maps=maps, null_max=null_max, params=dict(params),
                           clusters=cluster_info)
