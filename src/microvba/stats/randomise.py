r"""Multi-contrast permutation inference on a stack of images (``microvba randomise``).

:func:`randomise_contrasts` is the library entry point of the ``randomise`` subcommand:
one design, one or several t contrasts, one :class:`~microvba.stats.result.RandomiseResult`.

* One contrast vector :math:`c` (a design table with a tested column): ``tstat1`` tests
  :math:`c'\beta > 0` and, when ``two_sided``, ``tstat2`` tests :math:`-c` (FSL randomise with
  the two contrasts :math:`c, -c`), from the same permutations
  (:func:`microvba.stats.permutation.randomise_family`).
* A list of :class:`Contrast` (an FSL ``design.con``): each contrast :math:`k` is tested in
  its own direction, as FSL randomise does, and its maps are numbered by the contrast
  (``tstat<k>``, ``tfce_corrp_tstat<k>``, ...); every contrast uses the same seed, so the
  same rearrangements.

Family-wise correction across the tested maps is the :class:`~microvba.stats.family.Correction`
setting: ``Family.NONE`` (each map on its own) or any other family (over both directions of
one contrast, or over the tested contrasts: PALM ``-corrcon``). The family null is the
maximum of the maps' maximum statistics over the family for each permutation (PALM
``-corrcon -corrmod``; Winkler et al. 2016), giving ``*_famcorrp_tstat<k>`` and
``*_famlogp_tstat<k>`` maps; the p-values are those of :func:`microvba.stats.inference.fwe_p`,
the one FWE p of the package.

The helpers prepare the inputs: :func:`table_design` (tested column, covariates, blocks of a
design table), :func:`drop_constant_voxels`, :func:`check_rearrangements` and
:func:`warn_intercept` (an FSL design.mat used as given).

References
----------
Winkler A.M., Ridgway G.R., Webster M.A., Smith S.M., Nichols T.E. (2014). Permutation
inference for the general linear model. NeuroImage 92, 381-397.
Winkler A.M., Webster M.A., Brooks J.C., Tracey I., Smith S.M., Nichols T.E. (2016).
Non-parametric combination and related permutation tests for neuroimaging. Hum Brain Mapp
37, 1486-1511.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._defaults import (
    CLUSTER_CONNECTIVITY,
    CLUSTER_THRESHOLD,
    N_PERM,
    SEED,
    TFCE_CONNECTIVITY,
    TFCE_E,
    TFCE_H,
)
from .._logging import get_logger
from .._validation import InputError, Problem
from ..io import derivatives as D
from ..io.design_table import ID_COLUMNS, is_identifier
from ..io.fsl import FslDesign
from .design import Design, make_design
from .family import Correction, Family
from .glm import check_blocks, check_rearrangeable, freedman_lane
from .inference import fwe_p
from .permutation import BatchMap, randomise_family
from .result import RandomiseResult

log = get_logger(__name__)

#: statistics that can be corrected over a family of contrasts
_FAMILY_STATS = ("vox", "tfce", "clustere", "clusterm")
#: no correction across maps (each map FWE-corrected on its own)
PER_MAP = Correction(across=Family.NONE)


@dataclass(frozen=True)
class Contrast:
    """A t contrast of an FSL design.con: its 1-based ``number`` names the outputs
    (``tstat<number>``), ``name`` is its ``/ContrastName`` and ``vector`` its weights."""

    number: int
    name: str
    vector: np.ndarray


@dataclass(frozen=True)
class TableDesign:
    """The design of a table with named columns (:func:`table_design`)."""

    design: Design
    tested: str
    covariates: tuple[str, ...]
    blocks: np.ndarray | None
    blocks_column: str | None


def table_design(table: pd.DataFrame, tested: str, covariates: Sequence[str] | None = None,
                 blocks: str | None = None, *, source: str | Path = "design") -> TableDesign:
    """Intercept, the ``tested`` column and covariates from a design table.

    ``covariates`` None: every other column but ``participant_id``-like ones
    (:data:`microvba.io.design_table.ID_COLUMNS`), the ``blocks`` column and text columns
    unique to each row (identifiers: :func:`microvba.io.design_table.is_identifier`).
    Non-numeric covariates are dummy-coded (:func:`microvba.stats.design.make_design`).
    ``blocks`` names the column of exchangeability blocks. Problems raise
    :class:`InputError` naming ``source`` and the option (``--contrast``, ``--blocks``,
    ``--covariates``) to change.
    """
    source = str(source)
    if tested not in table.columns:
        cols = [c for c in table.columns if c not in ID_COLUMNS]
        raise InputError(f"the --contrast column {tested!r} is missing from the "
                         f"design (columns: {cols})", file=source,
                         fix=f"Pass one of {cols} as --contrast, or add the column.")
    if blocks is not None and blocks not in table.columns:
        raise InputError(f"blocks column {blocks!r} is not in the design (columns: "
                         f"{list(table.columns)})", file=source,
                         fix="Name an existing column in --blocks.")
    chosen = covariates
    if chosen is None:
        chosen = [c for c in table.columns if c not in (tested, blocks, *ID_COLUMNS)]
        ids = [c for c in chosen if is_identifier(table[c])]
        chosen = [c for c in chosen if c not in ids]
        log.info("design: tested column %r; covariates (every other column): %s%s",
                 tested, ", ".join(chosen) or "none",
                 f"; left out as identifiers (text unique to each row): {', '.join(ids)} "
                 "(name covariates with --covariates)" if ids else "")
    try:
        design = make_design(table, tested, list(chosen), source=source)
    except InputError as exc:
        if covariates is not None:
            raise
        hint = (f" (without --covariates every other design column is a covariate: "
                f"{', '.join(chosen)}; choose them with --covariates a,b)")
        raise InputError([Problem(p.file, p.problem, p.fix + hint)
                          for p in exc.problems]) from None
    block_labels = None if blocks is None else table[blocks].to_numpy()
    return TableDesign(design=design, tested=tested, covariates=tuple(chosen),
                       blocks=block_labels, blocks_column=blocks)


def drop_constant_voxels(Y: np.ndarray, mask: np.ndarray, source: str | Path
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Leave out voxels whose value is the same in every image (t is 0/0 there; rounding
    would otherwise give them a small spurious t). Their outputs are 0, as outside the mask.

    Returns the data and mask without them; InputError naming ``source`` when no voxel is
    left.
    """
    finite = np.isfinite(Y).all(axis=0)
    const = finite & (np.ptp(np.where(finite, Y, 0), axis=0) == 0)
    if not const.any():
        return Y, mask
    if const.all():
        raise InputError("every voxel of the mask has the same value in all images",
                         file=source,
                         fix="Check that the images differ between subjects (e.g. not all "
                             "copies of one map) and that the mask covers the data.")
    log.warning("%d of %d mask voxel(s) have the same value in every image (e.g. 0 outside "
                "the data); they are left out of the analysis", int(const.sum()), const.size)
    mask = mask.copy()
    mask[mask] = ~const
    return Y[:, ~const], mask


def warn_intercept(design: FslDesign) -> None:
    """FSL uses a design.mat as given; warn when it does not model the mean of the data."""
    if design.has_constant():
        return
    if design.demeaned():
        log.warning("%s: the design has no intercept (no column of 1s, and the columns do not "
                    "add up to one) and its regressors are demeaned: the mean of the data is "
                    "not modelled (FSL randomise -D demeans the data for this case). Add a "
                    "column of 1s unless the images were demeaned", design.path)
    else:
        log.warning("%s: the design has no intercept (no column of 1s, and the columns do not "
                    "add up to one) and its regressors are not demeaned: each regressor also "
                    "models the mean of the data. microvba, like FSL randomise, uses the "
                    "design as given; add a column of 1s (and demean the regressors) unless "
                    "this is intended", design.path)


def check_rearrangements(design_matrix: np.ndarray, contrasts: Sequence[Contrast],
                         correction: Correction, *, source: str | Path = "contrasts",
                         blocks: np.ndarray | None = None) -> dict[int, bool]:
    """Whether each contrast is tested by sign flips (one-sample); a family correction over
    the contrasts needs the same rearrangements for all (InputError naming ``source``).
    With ``blocks`` (one label per design row), blocks that leave nothing to rearrange are
    refused too (:func:`microvba.stats.glm.check_rearrangeable`), before any image is read."""
    methods = {c.number: freedman_lane(design_matrix, c.vector).sign_flip for c in contrasts}
    if blocks is not None and np.size(blocks) == design_matrix.shape[0]:
        codes = check_blocks(blocks, design_matrix.shape[0])
        for flip in set(methods.values()):
            check_rearrangeable(design_matrix.shape[0], flip, codes)
    if correction.across is not Family.NONE and len(set(methods.values())) > 1:
        raise InputError("--corrcon needs the same rearrangements for every contrast, but "
                         "some contrasts are tested by sign flips (one-sample) and others by "
                         "permutations", file=str(source),
                         fix="Run the one-sample and the other contrasts separately "
                             "(--contrast), or leave out --corrcon.")
    return methods


def randomise_contrasts(
    Y: np.ndarray,
    design_matrix: np.ndarray,
    contrasts: np.ndarray | Sequence[Contrast],
    mask: np.ndarray,
    *,
    correction: Correction = PER_MAP,
    two_sided: bool = True,
    image: str = "data",
    n_perm: int = N_PERM,
    seed: int = SEED,
    tfce: bool = True,
    tfce_H: float = TFCE_H,
    tfce_E: float = TFCE_E,
    tfce_connectivity: int = TFCE_CONNECTIVITY,
    cluster_threshold: float | None = CLUSTER_THRESHOLD,
    cluster_connectivity: int = CLUSTER_CONNECTIVITY,
    exchangeability_blocks: np.ndarray | None = None,
    n_jobs: int | None = None,
    batch_map: BatchMap | None = None,
) -> RandomiseResult:
    """Permutation inference of one or several t contrasts on one stack of images.

    Parameters
    ----------
    Y : (n_images, n_voxels_in_mask) data.
    design_matrix : (n_images, p), used as given (intercept included by the caller).
    contrasts : a (p,) vector (``tstat1``; ``tstat2`` for its negative when ``two_sided``)
        or a list of :class:`Contrast` (each in its own direction, maps numbered by
        ``Contrast.number``; ``two_sided`` is ignored, as FSL randomise).
    mask : (X, Y, Z) bool analysis mask.
    correction : the family corrected together (``*_famcorrp`` maps): anything but
        ``Family.NONE`` corrects over every tested map (both directions, or all the
        contrasts) with the maximum statistic.
    image : name of the data recorded in ``params["image"]`` and ``params["family"]``.
    n_perm, seed, tfce, tfce_H, tfce_E, tfce_connectivity, cluster_threshold,
    cluster_connectivity, exchangeability_blocks, n_jobs, batch_map :
        as :func:`microvba.stats.permutation.randomise` (``cluster_threshold`` None or 0:
        no cluster inference).

    Returns
    -------
    RandomiseResult
        One result; with a list of contrasts ``params["contrasts"]`` lists each one's
        number, name, vector, output name and rearrangement method.
    """
    correction = correction if isinstance(correction, Correction) else Correction(correction)
    engine = dict(n_perm=n_perm, seed=seed, tfce=tfce, tfce_H=tfce_H, tfce_E=tfce_E,
                  tfce_connectivity=tfce_connectivity,
                  cluster_threshold=cluster_threshold if cluster_threshold else None,
                  cluster_connectivity=cluster_connectivity,
                  exchangeability_blocks=exchangeability_blocks, n_jobs=n_jobs,
                  batch_map=batch_map)
    if isinstance(contrasts, np.ndarray):
        return randomise_family({image: Y}, design_matrix, contrasts, mask,
                                two_sided=two_sided,
                                family_maps=correction.across is not Family.NONE,
                                **engine)[image]
    contrasts = list(contrasts)
    if not contrasts:
        raise InputError("no contrast to test", file="contrasts",
                         fix="Give at least one t contrast.")
    methods = check_rearrangements(design_matrix, contrasts, correction)
    results = []
    for c in contrasts:
        log.info("contrast %d (%s): [%s]", c.number, c.name,
                 " ".join(f"{w:g}" for w in c.vector))
        results.append(randomise_family({image: Y}, design_matrix, c.vector, mask,
                                        two_sided=False, family_maps=False, **engine)[image])
    corrected = correction.across is not Family.NONE and len(results) > 1
    if corrected:
        _correct_over_contrasts(results)
    return _merge(contrasts, results, methods, corrected)


def _correct_over_contrasts(results: list[RandomiseResult]) -> None:
    """Add ``*_famcorrp_tstat1`` / ``*_famlogp_tstat1`` maps FWE-corrected over the contrasts
    (same permutations: the same seed, design and blocks), as PALM ``-corrcon``: the family
    null is the maximum over the contrasts of each permutation's maximum statistic."""
    def logp(p: np.ndarray) -> np.ndarray:
        return -np.log10(np.clip(p, 1e-300, 1.0))

    for stat in _FAMILY_STATS:
        key = D.stat_key(stat, 1)
        if not all(key in r.null_max for r in results):
            continue
        family = np.max(np.stack([r.null_max[key] for r in results]), axis=0)
        for r in results:
            r.null_max[f"{stat}_family"] = family
            if stat in ("vox", "tfce"):
                obs = r.maps[D.tstat_key(1) if stat == "vox" else D.stat_key("tfce", 1)]
                p = fwe_p(obs, family)
                r.maps[D.corrp_key(stat, 1, family=True)] = 1.0 - p
                r.maps[D.logp_key(stat, 1, family=True)] = logp(p)
            else:
                cl = r.clusters[D.tstat_key(1)]
                p = fwe_p(cl.extent if stat == "clustere" else cl.mass, family)
                r.maps[D.corrp_key(stat, 1, family=True)] = cl.voxel_map(1.0 - p)
                r.maps[D.logp_key(stat, 1, family=True)] = cl.voxel_map(logp(p))
    log.info("family-wise maps corrected over %d contrasts", len(results))


def _renumber(name: str, k: int) -> str:
    """``tfce_corrp_tstat1`` -> ``tfce_corrp_tstat<k>`` (FSL numbers outputs by contrast)."""
    return D.renumber_key(name, k)


def _merge(contrasts: list[Contrast], results: list[RandomiseResult],
           methods: dict[int, bool], corrected: bool) -> RandomiseResult:
    """One result holding every contrast's maps, renamed ``*_tstat<number>``."""
    maps: dict[str, np.ndarray] = {}
    null_max: dict[str, np.ndarray] = {}
    clusters: dict[str, Any] = {}
    described = []
    for c, r in zip(contrasts, results, strict=True):
        maps.update({_renumber(n, c.number): v for n, v in r.maps.items()})
        null_max.update({n if n.endswith("_family") else _renumber(n, c.number): v
                         for n, v in r.null_max.items()})
        clusters.update({_renumber(n, c.number): v for n, v in r.clusters.items()})
        described.append({"number": c.number, "name": c.name,
                          "vector": np.asarray(c.vector, dtype=float).tolist(),
                          "tstat": f"tstat{c.number}", "method": r.params["method"],
                          "n_possible_rearrangements": r.params["n_possible_rearrangements"]})
    params = dict(results[0].params)
    for name in ("contrast", "method", "n_possible_rearrangements"):
        params.pop(name, None)
    params.update(
        contrasts=described, contrast=[c["vector"] for c in described],
        tested=[c["name"] for c in described],
        method=described[0]["method"] if len(set(methods.values())) == 1 else "mixed",
        corrcon=corrected)
    return RandomiseResult(maps=maps, null_max=null_max, params=params, clusters=clusters)
