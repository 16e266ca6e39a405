r"""Permutation inference for the voxel-wise GLM: a randomise-class engine.

:func:`randomise` tests one t contrast in both directions (``tstat1`` for :math:`c`,
``tstat2`` for :math:`-c`, as FSL randomise with two contrasts) with Freedman-Lane
permutations of the nuisance residuals (sign flips for one-sample designs), optionally within
exchangeability blocks, and reports voxel, exact-TFCE, cluster-extent and cluster-mass
statistics with family-wise error (FWE) control by the maximum statistic (Nichols & Holmes
2002), uncorrected voxel p and voxel FDR. :func:`randomise_family` applies the same
permutations to several images (e.g. the study's 7 metrics) and adds p-values corrected over
the whole family of metrics and directions (max over the family, as PALM
``-corrcon -corrmod``).

Permutation ``0`` is the unpermuted data, as in randomise, so with ``n_perm`` permutations
``p = #{null >= observed} / n_perm >= 1 / n_perm``. The other ``n_perm - 1`` are drawn at
random (with replacement) in fixed-size batches, batch ``b`` from child ``b`` of
``np.random.SeedSequence(seed)``: the result is identical whatever the number of workers or
the executor (local threads or ``batch_map``, e.g. a Dask client's ``map``). When
``n_perm`` is at least the number of distinct rearrangements (small samples), every one is
run once instead, as FSL randomise does (exhaustive test, exact p-values, independent of the
seed).

References
----------
Nichols T.E., Holmes A.P. (2002). Nonparametric permutation tests for functional
neuroimaging: a primer with examples. Hum Brain Mapp 15, 1-25.
Winkler A.M., et al. (2014). Permutation inference for the general linear model. NeuroImage
92, 381-397.
Winkler A.M., et al. (2016). Non-parametric combination and related permutation tests for
neuroimaging. Hum Brain Mapp 37, 1486-1511 (correction over contrasts and modalities).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _defaults
from .._logging import get_logger, progress
from .._validation import InputError, check_positive_int
from ..io import derivatives
from ._kernels import count_exceed, freedman_lane_t
from .clusters import ClusterWorkspace, find_clusters
from .design import check_design_matrix
from .family import (
    LP_STEP,
    T_STEP,
    Correction,
    Family,
    NpcTables,
    combine,
    minp_null,
    npc_combine,
    npc_tables,
)
from .glm import (
    FreedmanLane,
    check_blocks,
    check_rearrangeable,
    draw_rearrangements,
    enumerate_rearrangements,
    freedman_lane,
    projection_weights,
)
from .inference import assemble_maps
from .result import RandomiseResult
from .tfce import HeightOrder, TfceWorkspace, check_connectivity, neighbour_table

log = get_logger(__name__)

#: permutations per batch; fixed so that results do not depend on the number of workers
BATCH_SIZE = 100
#: rearrangements whose t maps are computed in one pass over the residuals
GLM_BLOCK = 16
#: statistics whose maximum is recorded per permutation (axis 2 of the null arrays)
STATS = ("vox", "tfce", "clustere", "clusterm")
#: order of the statistics in the name of a union map (``tfcevox_famcorrp_tstat1``)
_JOINT_ORDER = ("tfce", "vox", "clustere", "clusterm")

BatchMap = Callable[[Callable, list], list]


@dataclass(frozen=True)
class _Context:
    """Everything a batch needs (shared, read-only)."""

    basis: np.ndarray  # (n, 1 + q) float64
    df: int
    sign_flip: bool
    blocks: np.ndarray | None
    residuals: tuple[np.ndarray, ...]  # per image: (n, V) float32
    ee: tuple[np.ndarray, ...]  # per image: (V,) float64
    t_obs: tuple[np.ndarray, ...]  # per image: (V,) float64
    tfce_obs: tuple[np.ndarray, ...] | None  # per image: (n_signs, V) float64
    signs: tuple[int, ...]
    neigh_tfce: np.ndarray | None
    neigh_cluster: np.ndarray | None
    tfce_H: float
    tfce_E: float
    cluster_threshold: float | None
    exhaustive: bool = False  # every distinct rearrangement, in enumeration order
    npc: tuple[str, ...] = ()  # NPC combining functions (across images)
    npc_tables: NpcTables | None = None
    z_obs: tuple[np.ndarray, ...] = ()  # per combining function: observed z (V,)


@dataclass(frozen=True)
class _Batch:
    index: int
    start: int
    size: int
    seed: np.random.SeedSequence
    context: _Context


@dataclass
class _BatchResult:
    start: int
    null: np.ndarray  # (n_images, n_signs, len(STATS), size)
    vox_counts: np.ndarray  # (n_images, n_signs, V) int32
    npc_null: np.ndarray | None = None  # (n_functions, 1, len(STATS), size)
    npc_counts: np.ndarray | None = None  # (n_functions, 1, V) int32


def _summarise(t, order, sign, s, i, m, ctx, null, counts, t_obs, tws, cws, neigh_tfce):
    """Maxima (voxel, TFCE, cluster) and voxel exceedances of one permuted map."""
    null[m, s, 0, i] = max(0.0, float(np.max(sign * t)))
    count_exceed(t, t_obs, float(sign), counts[m, s])
    if tws is not None:
        null[m, s, 1, i] = tws.sweep(t, order, sign, neigh_tfce, ctx.tfce_H)
    if cws is not None:
        null[m, s, 2:, i] = cws.sweep(t, order, sign, ctx.cluster_threshold,
                                      ctx.neigh_cluster)


def _run_batch(batch: _Batch) -> _BatchResult:
    """Compute one batch of permutations (module level so that it pickles for Dask)."""
    ctx = batch.context
    n_img, n_sign = len(ctx.residuals), len(ctx.signs)
    V = ctx.residuals[0].shape[1]
    if ctx.exhaustive:
        perm, flips = enumerate_rearrangements(batch.start, batch.size, ctx.basis.shape[0],
                                               ctx.sign_flip, ctx.blocks)
    else:
        rng = np.random.default_rng(batch.seed)
        perm, flips = draw_rearrangements(rng, ctx.basis.shape[0], batch.size,
                                          ctx.sign_flip, ctx.blocks)
    null = np.zeros((n_img, n_sign, len(STATS), batch.size))
    vox_counts = np.zeros((n_img, n_sign, V), dtype=np.int32)
    n_npc = len(ctx.npc)
    npc_null = np.zeros((n_npc, 1, len(STATS), batch.size)) if n_npc else None
    npc_counts = np.zeros((n_npc, 1, V), dtype=np.int32) if n_npc else None
    sub = min(GLM_BLOCK, batch.size)
    # every image's t maps of a block of rearrangements (NPC combines them per rearrangement)
    t_block = np.empty((n_img if n_npc else 1, sub, V), dtype=np.float32)
    z = np.empty(V) if n_npc else None
    tws = TfceWorkspace(V, ctx.tfce_E) if ctx.neigh_tfce is not None else None
    cws = ClusterWorkspace(V) if ctx.neigh_cluster is not None else None
    sort = HeightOrder(V)  # O(V) radix sort of the float32 t maps, shared by both signs
    Ws = np.stack([projection_weights(ctx.basis, perm[i], flips[i]) for i in range(batch.size)])
    Ws = Ws.astype(np.float32)
    for i0 in range(0, batch.size, sub):
        i1 = min(batch.size, i0 + sub)
        for m in range(n_img):
            tb = t_block[m if n_npc else 0]
            freedman_lane_t(Ws[i0:i1], ctx.residuals[m], ctx.ee[m], float(ctx.df),
                            tb[:i1 - i0])
            for i in range(i0, i1):
                if batch.start + i == 0:  # the unpermuted data: filled in from the observed maps
                    continue
                t = tb[i - i0]
                order = sort(t)
                for s, sign in enumerate(ctx.signs):
                    _summarise(t, order, sign, s, i, m, ctx, null, vox_counts, ctx.t_obs[m],
                               tws, cws, ctx.neigh_tfce)
        for c, function in enumerate(ctx.npc):
            tab = ctx.npc_tables
            for i in range(i0, i1):
                if batch.start + i == 0:
                    continue
                npc_combine(t_block[:, i - i0], function == "fisher", tab.partial, T_STEP,
                            tab.zscore, LP_STEP, z)
                _summarise(z, np.argsort(z), 1, 0, i, c, ctx, npc_null, npc_counts,
                           ctx.z_obs[c], tws, cws, ctx.neigh_tfce)
    return _BatchResult(batch.start, null, vox_counts, npc_null, npc_counts)


def _check_inputs(Ys: dict[str, np.ndarray], X: np.ndarray, mask: np.ndarray,
                  n_perm: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise InputError(f"The mask must be a 3-D array. Got shape {mask.shape}.",
                         file="mask", fix="Pass the 3-D analysis mask.")
    mask = mask.astype(bool)
    n_vox = int(mask.sum())
    if n_vox == 0:
        raise InputError("The mask is empty.", file="mask", fix="Use a non-empty mask.")
    X = check_design_matrix(X)
    out = {}
    for name, Y in Ys.items():
        Y = np.asarray(Y)
        if not np.issubdtype(Y.dtype, np.number):
            raise InputError(f"Data {name!r} is not numeric (dtype {Y.dtype}).", file=name,
                             fix="Pass a float array of image values.")
        if Y.ndim != 2 or Y.shape[1] != n_vox:
            raise InputError(f"Data {name!r} has shape {Y.shape}; expected (n_subjects, "
                             f"{n_vox}) for a mask of {n_vox} voxels.", file=name,
                             fix="Pass Y = images[:, mask] (subjects x in-mask voxels).")
        if Y.shape[0] != X.shape[0]:
            raise InputError(f"Data {name!r} has {Y.shape[0]} subjects but the design has "
                             f"{X.shape[0]} rows.", file=name,
                             fix="Give one design row per image, in the same order.")
        if not np.isfinite(Y).all():
            bad = int((~np.isfinite(Y)).any(axis=0).sum())
            raise InputError(f"Data {name!r} has NaN/inf values in {bad} in-mask voxel(s).",
                             file=name, fix="Restrict the mask to voxels valid in every "
                             "subject (or fill the missing values).")
        out[name] = Y
    check_positive_int("n_perm", n_perm)
    return out, X, mask


def _observed(ctx_parts: dict, fl: FreedmanLane, Y: np.ndarray, signs: Sequence[int],
              tfce_args: tuple | None) -> None:
    e64 = fl.residualise(Y)
    t = fl.t_stat(e64)
    e = e64.astype(np.float32)
    del e64
    ctx_parts["residuals"].append(e)
    ctx_parts["ee"].append(np.einsum("ij,ij->j", e, e, dtype=np.float64))
    ctx_parts["t_obs"].append(t)
    if tfce_args is not None:
        neigh, H, E = tfce_args
        order = np.argsort(t)
        ws = TfceWorkspace(t.shape[0], E)
        tf = np.zeros((len(signs), t.shape[0]))
        for s, sign in enumerate(signs):
            ws.sweep(t, order, sign, neigh, H, tf[s])
        ctx_parts["tfce_obs"].append(tf)


def _batches(ctx: _Context, n_perm: int, seed: int, batch_size: int) -> list[_Batch]:
    n_batches = math.ceil(n_perm / batch_size)
    seeds = np.random.SeedSequence(seed).spawn(n_batches)
    return [_Batch(b, b * batch_size, min(batch_size, n_perm - b * batch_size), seeds[b], ctx)
            for b in range(n_batches)]


def _execute(batches: list[_Batch], batch_map: BatchMap | None, n_jobs: int | None,
             reduce: Callable[[_BatchResult], None]) -> None:
    if batch_map is not None:
        chunk = 8
        groups = [batches[i:i + chunk] for i in range(0, len(batches), chunk)]
        for group in progress(groups, desc="permutation batches", unit="chunk"):
            for res in batch_map(_run_batch, group):
                reduce(res)
        return
    if n_jobs is None or n_jobs == -1:
        n_jobs = os.cpu_count() or 1
    n_jobs = check_positive_int("n_jobs", n_jobs)
    if n_jobs == 1:
        for b in progress(batches, desc="permutations", unit="batch"):
            reduce(_run_batch(b))
        return
    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        futures = [pool.submit(_run_batch, b) for b in batches]
        for fut in progress(as_completed(futures), desc="permutations", total=len(futures),
                            unit="batch"):
            reduce(fut.result())


def randomise_family(Ys: dict[str, np.ndarray], design_matrix: np.ndarray,
                     contrast: np.ndarray, mask: np.ndarray, **kwargs: Any
                     ) -> dict[str, RandomiseResult]:
    """Permutation inference for several images with the same permutations.

    Parameters are those of :func:`randomise`; ``Ys`` maps a name (e.g. a metric) to its
    ``(n_subjects, n_voxels_in_mask)`` data. Each returned result holds that image's maps
    corrected within the image and direction (``*_corrp_tstat{k}``) and, when the family
    has more than one member (images x directions), corrected over the whole family
    (``*_famcorrp_tstat{k}``, ``*_famlogp_tstat{k}``): the null distribution is the maximum
    over all images and both directions of each permutation (PALM ``-corrcon -corrmod``);
    ``null_max["<stat>_family"]`` holds it (``family_maps=False`` skips these maps).

    With ``family_method="minp"`` or ``"minp-tail"`` the family is corrected by
    Westfall-Young min-p (:mod:`microvba.stats.family`) over ``correct_across``;
    ``family_statistics=("tfce", "vox")`` puts both statistics of every map in one family
    (their ``*_famcorrp`` maps then hold the p-values of that family, and
    ``tfcevox_famcorrp_tstat{k}`` the smaller of the two: a voxel significant by either).
    """
    kwargs.setdefault("family_maps", True)
    return _randomise_images(Ys, design_matrix, contrast, mask, **kwargs)


def _randomise_images(
    Ys: dict[str, np.ndarray],
    design_matrix: np.ndarray,
    contrast: np.ndarray,
    mask: np.ndarray,
    *,
    n_perm: int = _defaults.N_PERM,
    seed: int = _defaults.SEED,
    tfce: bool = True,
    tfce_H: float = _defaults.TFCE_H,
    tfce_E: float = _defaults.TFCE_E,
    tfce_connectivity: int = _defaults.TFCE_CONNECTIVITY,
    cluster_threshold: float | None = _defaults.CLUSTER_THRESHOLD,
    cluster_connectivity: int = _defaults.CLUSTER_CONNECTIVITY,
    exchangeability_blocks: np.ndarray | None = None,
    two_sided: bool = True,
    batch_map: BatchMap | None = None,
    n_jobs: int | None = None,
    batch_size: int = BATCH_SIZE,
    family_maps: bool = True,
    family_method: str = "max",
    correct_across: Family | str | bool = Family.ALL,
    npc: Sequence[str] = (),
    family_statistics: Sequence[str] = (),
) -> dict[str, RandomiseResult]:
    """Shared implementation of :func:`randomise` and :func:`randomise_family`."""
    if family_method not in ("max", "minp", "minp-tail"):
        raise InputError(f"unknown family_method {family_method!r}", file="parameter family_method",
                         fix="Use 'minp-tail' or 'minp' (balanced, Westfall-Young; with or "
                             "without tail p-values) or 'max' (max statistic).")
    # one spelling whatever the order given: TFCE first (the union map is "tfcevox")
    family_statistics = tuple(sorted(dict.fromkeys(str(x) for x in family_statistics),
                                     key=lambda x: (_JOINT_ORDER + (x,)).index(x)))
    bad = [x for x in family_statistics if x not in STATS]
    if bad or (len(family_statistics) > 1 and not family_method.startswith("minp")):
        raise InputError(f"family_statistics {list(family_statistics)} are not statistics "
                         f"that can be corrected together by {family_method!r}",
                         file=derivatives.FAMILY_STATISTICS_KEY,
                         fix=f"Choose among {', '.join(STATS)} with family_method 'minp' or "
                             "'minp-tail'.")
    if (("tfce" in family_statistics and not tfce) or (cluster_threshold is None and any(
            x.startswith("cluster") for x in family_statistics))):
        raise InputError(f"family_statistics {list(family_statistics)} include a statistic "
                         "that is not computed", file=derivatives.FAMILY_STATISTICS_KEY,
                         fix="Enable TFCE / cluster inference, or drop it from the list.")
    correction = Correction(across=correct_across, npc=tuple(npc))
    if not isinstance(Ys, dict) or not Ys:
        raise InputError("Ys must be a non-empty dict of name -> (n_subjects, n_voxels) array.",
                         file="Ys", fix="Pass e.g. {'fa': Y_fa, 'md': Y_md}.")
    Ys, X, mask = _check_inputs(Ys, design_matrix, mask, n_perm)
    if tfce:
        check_connectivity("tfce_connectivity", tfce_connectivity)
        if not (tfce_H >= 0 and tfce_E >= 0):
            raise InputError(f"TFCE exponents must be >= 0. Got H={tfce_H}, E={tfce_E}.",
                             file="parameters tfce_H/tfce_E", fix="Use H=2, E=0.5.")
    if cluster_threshold is not None:
        check_connectivity("cluster_connectivity", cluster_connectivity)
        if not (np.isfinite(cluster_threshold) and cluster_threshold > 0):
            raise InputError(f"cluster_threshold must be > 0. Got {cluster_threshold!r}.",
                             file="parameter cluster_threshold",
                             fix="Use e.g. 3.1 (or None to skip cluster inference).")
    batch_size = check_positive_int("batch_size", batch_size)
    fl = freedman_lane(X, contrast)
    blocks = check_blocks(exchangeability_blocks, X.shape[0])
    signs = (1, -1) if two_sided else (1,)
    possible = check_rearrangeable(X.shape[0], fl.sign_flip, blocks)
    n_requested = n_perm
    exhaustive = n_perm >= possible
    if exhaustive:
        # as FSL randomise: every distinct rearrangement once (exact p-values); random
        # draws would repeat some and waste the time
        n_perm = int(possible)
        log.warning("only %d distinct rearrangements of %d subjects exist (%d requested): "
                    "running all of them (exhaustive test); the smallest possible p is "
                    "%.3g", n_perm, X.shape[0], n_requested, 1.0 / n_perm)
    neigh_tfce = neighbour_table(mask, tfce_connectivity) if tfce else None
    neigh_cluster = (neighbour_table(mask, cluster_connectivity)
                     if cluster_threshold is not None else None)
    parts: dict[str, list] = {"residuals": [], "ee": [], "t_obs": [], "tfce_obs": []}
    for Y in Ys.values():
        _observed(parts, fl, Y, signs, (neigh_tfce, tfce_H, tfce_E) if tfce else None)
    tables = npc_tables(fl.df) if correction.npc else None
    if correction.npc and len(Ys) < 2:
        raise InputError("non-parametric combination needs at least two images (metrics)",
                         file="npc", fix="Give several metrics, or no NPC.")
    z_obs = tuple(combine(np.stack(parts["t_obs"]), f, tables) for f in correction.npc)
    npc_parts: dict[str, list] = {"t_obs": list(z_obs), "tfce_obs": []}
    if tfce:
        for z in z_obs:
            ws = TfceWorkspace(z.shape[0], tfce_E)
            tf = np.zeros((1, z.shape[0]))
            ws.sweep(z, np.argsort(z), 1, neigh_tfce, tfce_H, tf[0])
            npc_parts["tfce_obs"].append(tf)
    ctx = _Context(basis=fl.basis, df=fl.df, sign_flip=fl.sign_flip, blocks=blocks,
                   residuals=tuple(parts["residuals"]), ee=tuple(parts["ee"]),
                   t_obs=tuple(parts["t_obs"]),
                   tfce_obs=tuple(parts["tfce_obs"]) if tfce else None, signs=signs,
                   neigh_tfce=neigh_tfce, neigh_cluster=neigh_cluster, tfce_H=float(tfce_H),
                   tfce_E=float(tfce_E),
                   cluster_threshold=None if cluster_threshold is None
                   else float(cluster_threshold), exhaustive=exhaustive,
                   npc=correction.npc, npc_tables=tables, z_obs=z_obs)
    n_img, V = len(Ys), int(mask.sum())
    null = np.zeros((n_img, len(signs), len(STATS), n_perm))
    vox_counts = np.zeros((n_img, len(signs), V), dtype=np.int64)
    n_npc = len(correction.npc)
    npc_null = np.zeros((n_npc, 1, len(STATS), n_perm))
    npc_counts = np.zeros((n_npc, 1, V), dtype=np.int64)

    def reduce(res: _BatchResult) -> None:
        null[..., res.start:res.start + res.null.shape[-1]] = res.null
        vox_counts[...] += res.vox_counts
        if n_npc:
            npc_null[..., res.start:res.start + res.null.shape[-1]] = res.npc_null
            npc_counts[...] += res.npc_counts

    log.info("randomise: %d image(s), %d subjects, %d voxels, %d permutations (%s)",
             n_img, X.shape[0], V, n_perm, "sign flips" if fl.sign_flip else "Freedman-Lane")
    _execute(_batches(ctx, n_perm, seed, batch_size), batch_map, n_jobs, reduce)

    # permutation 0: the unpermuted data
    clusters = _observed_maxima(null, ctx.t_obs, ctx.tfce_obs, signs, neigh_cluster,
                                cluster_threshold)
    npc_clusters = _observed_maxima(npc_null, z_obs, tuple(npc_parts["tfce_obs"]) or None,
                                    (1,), neigh_cluster, cluster_threshold)
    vox_counts += 1
    npc_counts += 1

    params = {
        "n_perm": int(n_perm), "seed": int(seed), "tfce": bool(tfce), "tfce_H": float(tfce_H),
        "tfce_E": float(tfce_E), "tfce_connectivity": int(tfce_connectivity),
        "cluster_threshold": ctx.cluster_threshold,
        "cluster_connectivity": int(cluster_connectivity),
        "two_sided": bool(two_sided), "batch_size": batch_size,
        "exchangeability_blocks": None if blocks is None else int(blocks.max() + 1),
        "method": "sign_flip" if fl.sign_flip else "freedman_lane",
        "n_subjects": int(X.shape[0]), "n_voxels": V, "df": fl.df,
        "contrast": np.asarray(contrast, dtype=float).tolist(),
        "family": list(Ys), "n_possible_rearrangements": possible,
        "exhaustive": bool(exhaustive), "n_perm_requested": int(n_requested),
    }
    multi = family_maps and (n_img > 1 or len(signs) > 1)
    family_null = null.max(axis=(0, 1)) if multi and family_method == "max" else None
    tail = family_method == "minp-tail"
    joint = [STATS.index(x) for x in family_statistics] if len(family_statistics) > 1 else []
    family_minp = (minp_null(null, correction.across.groups(n_img, len(signs)), tail=tail,
                             joint=joint)
                   if multi and family_method.startswith("minp") else None)
    if family_minp is not None:
        params.update(family_method=family_method, correct_across=correction.across.value,
                      family_statistics=list(family_statistics) if joint else [])
    elif family_null is not None:
        params.update(family_method="max", correct_across=Family.ALL.value)
    results = {}
    for m, name in enumerate(Ys):
        results[name] = assemble_maps(
            t=ctx.t_obs[m], signs=signs, null=null[m], stats=STATS,
            vox_counts=vox_counts[m],
            tfce_obs=ctx.tfce_obs[m] if tfce else None,
            clusters={s: clusters[m, s] for s in range(len(signs))} if clusters else None,
            family_null=family_null,
            family_minp=None if family_minp is None else family_minp[m], tail=tail,
            joint=[STATS[k] for k in joint] if family_minp is not None else (),
            n_perm=n_perm, params={**params, "image": name},
        )
    for c, function in enumerate(correction.npc):
        results[f"npc_{function}"] = assemble_maps(
            t=z_obs[c], signs=(1,), null=npc_null[c], stats=STATS, vox_counts=npc_counts[c],
            tfce_obs=npc_parts["tfce_obs"][c] if tfce else None,
            clusters={0: npc_clusters[c, 0]} if npc_clusters else None,
            family_null=None, n_perm=n_perm,
            params={**params, "image": f"npc_{function}", "npc": function,
                    "npc_partial": "two-sided parametric t p-values (Winkler et al. 2016)",
                    "npc_statistic": f"z of the combined p ({derivatives.tstat_key(1)} "
                                     "holds z)"})
    return results


def _observed_maxima(null: np.ndarray, t_obs: Sequence[np.ndarray],
                     tfce_obs: Sequence[np.ndarray] | None, signs: Sequence[int],
                     neigh_cluster: np.ndarray | None, cluster_threshold: float | None
                     ) -> dict:
    """Fill permutation 0 (the unpermuted data) of ``null``; return the observed clusters."""
    clusters = {}
    for m, t in enumerate(t_obs):
        order = np.argsort(t)
        for s, sign in enumerate(signs):
            null[m, s, 0, 0] = max(0.0, float(np.max(sign * t)))
            if tfce_obs is not None:
                null[m, s, 1, 0] = float(tfce_obs[m][s].max())
            if cluster_threshold is not None:
                cl = find_clusters(t, neigh_cluster, cluster_threshold, sign, order)
                clusters[m, s] = cl
                null[m, s, 2, 0] = float(cl.extent.max()) if cl.n_clusters else 0.0
                null[m, s, 3, 0] = float(cl.mass.max()) if cl.n_clusters else 0.0
    return clusters

def randomise(
    Y: np.ndarray,
    design_matrix: np.ndarray,
    contrast: np.ndarray,
    mask: np.ndarray,
    *,
    n_perm: int = _defaults.N_PERM,
    seed: int = _defaults.SEED,
    tfce: bool = True,
    tfce_H: float = _defaults.TFCE_H,
    tfce_E: float = _defaults.TFCE_E,
    tfce_connectivity: int = _defaults.TFCE_CONNECTIVITY,
    cluster_threshold: float | None = _defaults.CLUSTER_THRESHOLD,
    cluster_connectivity: int = _defaults.CLUSTER_CONNECTIVITY,
    exchangeability_blocks: np.ndarray | None = None,
    two_sided: bool = True,
    batch_map: BatchMap | None = None,
    n_jobs: int | None = None,
    batch_size: int = BATCH_SIZE,
) -> RandomiseResult:
    """Voxel-wise permutation inference for one t contrast (both directions).

    Parameters
    ----------
    Y : (n_subjects, n_voxels_in_mask) data; voxel ``i`` is ``np.flatnonzero(mask)[i]``.
    design_matrix : (n_subjects, p), intercept included (see
        :func:`microvba.stats.design.make_design`).
    contrast : (p,) t contrast; ``tstat1`` tests ``c'beta > 0``, ``tstat2`` ``c'beta < 0``.
    mask : (X, Y, Z) bool analysis mask (defines the neighbourhood of the voxels).
    n_perm : permutations including the unpermuted data (randomise ``-n``).
    seed : seed of ``np.random.SeedSequence`` (reproducible whatever ``n_jobs``).
    tfce, tfce_H, tfce_E, tfce_connectivity : exact TFCE and its parameters.
    cluster_threshold : cluster-forming threshold on t (None: no cluster inference).
    cluster_connectivity : 6, 18 or 26 (randomise uses 26).
    exchangeability_blocks : (n_subjects,) labels; permutations stay within blocks.
    two_sided : also test the negative direction (``tstat2``).
    batch_map : optional ``map(func, batches) -> list`` (e.g. ``dask_client.map`` +
        gather) distributing the batches; default: ``n_jobs`` local threads.
    n_jobs : local threads (default: all cores).
    batch_size : permutations per batch (part of the seed scheme: keep it fixed).

    Returns
    -------
    RandomiseResult
        ``.maps`` (randomise names, corrp = 1 - p), ``.null_max``, ``.params``.
    """
    res = _randomise_images(
        {"data": Y}, design_matrix, contrast, mask, n_perm=n_perm, seed=seed, tfce=tfce,
        tfce_H=tfce_H, tfce_E=tfce_E, tfce_connectivity=tfce_connectivity,
        cluster_threshold=cluster_threshold, cluster_connectivity=cluster_connectivity,
        exchangeability_blocks=exchangeability_blocks, two_sided=two_sided,
        batch_map=batch_map, n_jobs=n_jobs, batch_size=batch_size, family_maps=False)
    return res["data"]
