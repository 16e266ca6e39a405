"""A priori region-of-interest analysis (``microvba roi``): region means and their partial
correlation with a score.

:func:`roi_analysis` takes maps in MNI space and an atlas region and returns an
:class:`RoiResult`: one row per map volume with the region's mean, and, with a score, the
partial correlation (:func:`microvba.regions.correlation.partial_corr`: Pearson or Spearman,
Fisher and bootstrap CIs) of the means with the score controlling the covariates. Maps are
matched to participants by the ``sub-<label>`` in their file name, else by order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from .._provenance import make_sidecar, write_json, write_text
from .._validation import InputError, ProblemCollector, check_option_number
from ..io import derivatives
from ..io.nifti_checks import check_image_file
from ..io.participants import read_participants
from .atlases import Atlas, load_atlas
from .correlation import partial_corr

_SUB = re.compile(r"sub-([A-Za-z0-9]+)")
#: most bootstrap resamples ``--n-boot`` may request (about 1 s for 60 subjects; a
#: percentile interval is stable to 0.01 from a few thousand)
MAX_N_BOOT = 100_000
_PARTICIPANT = derivatives.ROI_COLUMNS[3]


@dataclass
class RoiResult:
    """Region means of every map and, with a score, their partial correlation.

    Attributes
    ----------
    table : one row per map volume: ``region``, ``map``, ``volume``, ``participant``,
        ``n_voxels``, ``mean`` (and the score and covariate columns with a score).
    correlation : :func:`~microvba.regions.correlation.partial_corr` output, or None.
    params : the settings, recorded in the JSON sidecar.
    maps : the map files.
    """

    table: pd.DataFrame
    correlation: dict[str, Any] | None
    params: dict[str, Any]
    maps: list[str]

    def to_tsv(self) -> str:
        return self.table.to_csv(sep="\t", index=False)

    def save(self, path: str | Path) -> list[Path]:
        """Write the table to ``path`` (TSV) and the sidecar ``<stem>.json`` (atomic)."""
        path = Path(path)
        write_text(path, self.to_tsv())
        sidecar = make_sidecar(self.params, correlation=self.correlation, maps=self.maps)
        name = path.name
        stem = name[: -len(".tsv")] if name.endswith(".tsv") else path.stem
        return [path, write_json(path.with_name(stem + ".json"), sidecar)]


def roi_analysis(maps: Sequence[str | Path], atlas: str | Atlas, region: str, *,
                 hemisphere: str | None = None, participants: str | Path | None = None,
                 score: str | None = None, covariates: Sequence[str] = (),
                 method: str = "pearson", n_boot: int = 2000, seed: int = 0,
                 data_dir: str | Path | None = None) -> RoiResult:
    """Mean of an atlas region in each map and, with ``score``, its partial correlation.

    Parameters
    ----------
    maps : NIfTI maps in MNI space (3-D, or 4-D with one volume per subject).
    atlas : an :class:`Atlas` or its name (``brainnetome``, ``harvard_oxford``, ``aal``).
    region : region name, with or without ``_L``/``_R``; ``hemisphere`` restricts to one.
    participants : participants.tsv (needed with ``score``).
    score, covariates : columns of participants.tsv; the partial correlation of the means
        with ``score`` controls ``covariates`` (``method`` pearson or spearman; ``n_boot``
        bootstrap resamples with ``seed``).
    data_dir : folder of the Brainnetome atlas (default ``$MICROVBA_DATA``).
    """
    n_boot = check_option_number("--n-boot", n_boot, 0, MAX_N_BOOT, integer=True,
                                 hint="bootstrap resamples, e.g. 2000; 0 skips the bootstrap")
    if score and participants is None:
        raise InputError("--score needs --participants", file="--participants",
                         fix="Pass --participants participants.tsv.")
    maps = [Path(p) for p in maps]
    atlas_obj = atlas if isinstance(atlas, Atlas) else load_atlas(atlas, data_dir)
    table = region_means(maps, atlas_obj, region, hemisphere)
    table.insert(0, derivatives.ROI_COLUMNS[0], region + (f"_{hemisphere}" if hemisphere else ""))
    result = None
    covariates = list(covariates)
    if score:
        rows_in = read_participants(participants)
        problems = ProblemCollector()
        for col in [score, *covariates]:
            if col not in rows_in.columns:
                problems.add(participants, f"column {col!r} is missing",
                             f"Use one of: {', '.join(rows_in.columns)}.")
        problems.raise_if_any()
        rows = align_participants(table, rows_in, Path(participants))
        values = pd.to_numeric(rows[score], errors="coerce")
        if values.notna().sum() >= 2 and values.nunique() < 2:
            raise InputError(f"the score {score!r} has the same value ({values.dropna().iloc[0]:g}) "
                             "for every participant of the maps: no correlation can be "
                             "estimated", file=participants,
                             fix="Correlate a score that varies across these participants.")
        table[score] = rows[score].to_numpy()
        for c in covariates:
            table[c] = rows[c].to_numpy()
        cov = rows[covariates].reset_index(drop=True) if covariates else None
        result = partial_corr(table["mean"].to_numpy(float), rows[score].to_numpy(float),
                              cov, method=method, n_boot=n_boot, seed=seed)
    params = {"atlas": atlas_obj.name if isinstance(atlas, Atlas) else atlas,
              "region": region, "hemisphere": hemisphere, "score": score,
              "covariates": covariates, "method": method, "n_boot": n_boot, "seed": seed}
    return RoiResult(table=table, correlation=result, params=params,
                     maps=[str(p) for p in maps])


def region_means(paths: Sequence[Path], atlas: Atlas, region: str, hemisphere: str | None
                 ) -> pd.DataFrame:
    """Mean of ``region`` (of ``hemisphere``, None: both) in every map (every volume of a
    4-D map): columns ``map``, ``volume``, ``participant`` (the ``sub-<label>`` of a 3-D
    map's name, else None), ``n_voxels`` (finite values) and ``mean``.

    The region mask is resampled (nearest neighbour) onto each map's grid, once per grid;
    NaN voxels are ignored. InputError for missing or unreadable maps, unknown regions (with
    close matches) and regions outside a map's field of view.
    """
    problems = ProblemCollector()
    for p in paths:
        if not p.is_file():
            problems.add(p, "a folder, not a map" if p.is_dir() else "map not found",
                         "Check the path of --map (a shell pattern such as "
                         "'DIR/sub-*_fa.nii.gz' lists the maps of a folder).")
    problems.raise_if_any()
    atlas.find(region, hemisphere)  # unknown region: InputError with close matches
    rows = []
    masks: dict[tuple, np.ndarray] = {}  # one resampling per grid
    for path in paths:
        try:
            img = nib.load(str(path))
        except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError) as exc:
            raise InputError(f"not a readable NIfTI image ({exc})", file=path,
                             fix="Pass NIfTI maps (.nii or .nii.gz).") from exc
        check_image_file(path, signal=False)  # gzip CRC, truncation, voxel sizes
        if img.ndim not in (3, 4):
            raise InputError(f"expected a 3-D or 4-D image, got {img.ndim}-D", file=path,
                             fix="Pass 3-D maps or one 4-D stack.")
        grid = (img.shape[:3], img.affine.round(6).tobytes())
        if grid not in masks:
            masks[grid] = np.asarray(atlas.region_mask(region, hemisphere, img).dataobj) > 0
        mask = masks[grid]
        if not mask.any():
            raise InputError(f"region {region!r} has no voxel inside this map's field of view",
                             file=path, fix="Pass maps in MNI space covering the region.")
        n_vol = img.shape[3] if img.ndim == 4 else 1
        m = _SUB.search(path.name)
        for v in range(n_vol):
            vol = np.asarray(img.dataobj[..., v] if img.ndim == 4 else img.dataobj, float)
            vals = vol[mask]
            vals = vals[np.isfinite(vals)]
            rows.append((str(path), v, m.group(1) if m and n_vol == 1 else None,
                         int(vals.size), float(vals.mean()) if vals.size else float("nan")))
    # ROI_COLUMNS: region (inserted by the caller), map, volume, participant, n_voxels, mean
    return pd.DataFrame(rows, columns=list(derivatives.ROI_COLUMNS[1:]))


def align_participants(table: pd.DataFrame, participants: pd.DataFrame, path: Path
                       ) -> pd.DataFrame:
    """Participants row of each map row (by sub-<label> in the name, else by order)."""
    labels = table[_PARTICIPANT]
    if labels.notna().all():
        repeated = sorted(labels[labels.duplicated()].unique())
        if repeated:
            maps = table.loc[labels.isin(repeated), "map"].tolist()
            raise InputError(f"participant(s) {['sub-' + r for r in repeated[:10]]} have "
                             f"more than one map ({', '.join(maps[:6])}); each subject must "
                             "enter the correlation once", file=maps[0],
                             fix="Pass one map per participant (check the --map glob).")
        unknown = sorted(set(labels) - set(participants.index))
        if unknown:
            raise InputError(f"maps of participants not in the table: {unknown[:10]}",
                             file=path, fix="Add them to participants.tsv or drop their maps.")
        return participants.loc[list(labels)]
    if len(table) != len(participants):
        raise InputError(f"{len(table)} map volumes but {len(participants)} participants, and "
                         "the map names carry no sub-<label> to match them",
                         file=path, fix="Pass one volume per participant in the table's order, "
                                        "or maps named sub-<label>_*.nii.gz.")
    table[_PARTICIPANT] = list(participants.index)
    return participants
