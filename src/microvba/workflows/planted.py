"""Planted versus found: check a simulated cohort's analysis against its ground truth.

A planted effect counts as found when a significant cluster of the same metric and sign has
its peak within ``max_distance_mm`` of the planted region (of its voxels when the planted
label image is available, else of its centre of mass). A significant cluster that matches no
planted effect is *expected* when it lies on a planted region in a metric the ground truth
lists as a mechanical side effect (e.g. MD moves with AD, since MD = (AD + 2 RD) / 3), and
*false* otherwise; the demo must have no false cluster.

:func:`check_planted` is the demo's step after the group stage: it reads the ground truth the
simulator wrote (``BIDS_DIR/code/ground_truth.json``) and the group stage's tables, and writes
``group/planted_vs_found.tsv`` (the group stage itself knows nothing of simulations).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from .._provenance import write_json, write_text
from ..io import derivatives as D

#: a secondary effect at least this strong (|true regional r|) explains a cluster
SECONDARY_MIN_R = 0.1


def _sign(eff: dict) -> str:
    return eff.get("sign") or ("+" if float(eff.get("r", eff.get("truth_r", 0))) > 0 else "-")


def _region_points(truth: dict, bids_dir: Path | None) -> list[np.ndarray]:
    """MNI coordinates (mm) of each planted region's voxels, in effect order."""
    effects = truth.get("effects", [])
    fallback = [np.asarray([e["mni_com_mm"]], float) for e in effects]
    if bids_dir is None:
        return fallback
    seg = sorted((Path(bids_dir) / "derivatives" / "truth").glob(D.PLANTED_SEG_GLOB))
    if not seg:
        return fallback
    img = nib.load(seg[0])
    data = np.asarray(img.dataobj).astype(int)
    points = []
    for k in range(1, len(effects) + 1):
        ijk = np.argwhere(data == k)
        points.append(nib.affines.apply_affine(img.affine, ijk) if len(ijk) else fallback[k - 1])
    return points


def _distance(peak: np.ndarray, points: np.ndarray) -> float:
    return float(np.min(np.linalg.norm(points - peak, axis=1)))


def planted_vs_found(truth: dict, clusters: pd.DataFrame, correlations: pd.DataFrame,
                     bids_dir: str | Path | None = None,
                     *, max_distance_mm: float = 10.0) -> pd.DataFrame:
    """One row per planted effect (found or not, found r, peak distance), then one row per
    significant cluster outside the planted effects (``status`` expected or false)."""
    effects = truth.get("effects", [])
    regions = _region_points(truth, Path(bids_dir) if bids_dir else None)
    peaks = (clusters[list(D.PEAK_XYZ)].to_numpy(float) if len(clusters)
             else np.empty((0, 3)))
    cid_col = D.CLUSTER_ID
    used: set[int] = set()
    rows = []
    for eff, pts in zip(effects, regions, strict=True):
        metric, sign = eff["metric"].lower(), _sign(eff)
        study_r = float(eff["study_r"] if eff.get("study_r") is not None else eff["r"])
        # the columns of derivatives.PLANTED_COLUMNS, in order
        row = dict(zip(D.PLANTED_COLUMNS, (
            eff.get("region_label", eff.get("region")), eff.get("hemisphere", ""), metric,
            sign, float(eff["r"]), study_r, False, np.nan, np.nan, np.nan, np.nan,
            D.PLANTED_STATUS[1]), strict=True))
        idx = [i for i in range(len(peaks)) if clusters.iloc[i][D.METRIC] == metric
               and clusters.iloc[i][D.SIGN] == sign]
        if idx:
            dist = [_distance(peaks[i], pts) for i in idx]
            best = int(np.argmin(dist))
            row[D.PEAK_DISTANCE_MM] = dist[best]
            for i, d in zip(idx, dist, strict=True):
                if d <= max_distance_mm:
                    used.add(i)
            if dist[best] <= max_distance_mm:
                cid = clusters.iloc[idx[best]][cid_col]
                row.update({D.FOUND: True, cid_col: cid, D.STATUS: D.PLANTED_STATUS[0]})
                row.update(_found_r(correlations, metric, sign, cid))
        rows.append(row)
    secondary = [(s, pts) for s in truth.get("secondary", [])
                 for e, pts in zip(effects, regions, strict=True)
                 if s.get("code") == e.get("code") and abs(s.get("truth_r", 0)) >= SECONDARY_MIN_R]
    n_false = 0
    for i in range(len(peaks)):
        if i in used:
            continue
        c = clusters.iloc[i]
        expected = any(s["metric"] == c[D.METRIC] and _sign(s) == c[D.SIGN]
                       and _distance(peaks[i], pts) <= max_distance_mm for s, pts in secondary)
        n_false += not expected
        rows.append({D.REGION: D.NOT_PLANTED, D.METRIC: c[D.METRIC], D.SIGN: c[D.SIGN],
                     D.PLANTED_R: 0.0, D.FOUND: False, cid_col: c[cid_col],
                     D.STATUS: D.PLANTED_STATUS[2 if expected else 3]})
    table = pd.DataFrame(rows)
    table.attrs[D.FALSE_CLUSTERS_KEY] = n_false
    return table


def _found_r(correlations: pd.DataFrame, metric: str, sign: str, cid) -> dict:
    if not len(correlations):
        return {}
    c = correlations[(correlations[D.METRIC] == metric) & (correlations[D.SIGN] == sign)
                     & (correlations[D.CLUSTER_ID] == cid)]
    if D.METHOD in c:
        c = c[c[D.METHOD] == D.PRIMARY_METHOD]
    if not len(c):
        return {}
    first = c.iloc[0]
    return {D.FOUND_R: float(first[D.R]), D.LOSO_R: float(first.get(D.LOSO_R, np.nan))}


def _read_table(path: Path) -> pd.DataFrame:
    """A group-stage TSV (empty when the stage found no cluster)."""
    try:
        return pd.read_csv(path, sep="\t")
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def check_planted(bids_dir: str | Path, out_dir: str | Path) -> dict | None:
    """Compare a finished group analysis of a simulated cohort with its ground truth.

    Writes ``OUT/group/planted_vs_found.tsv`` (:func:`planted_vs_found` of
    ``group/clusters.tsv`` and ``group/correlations.tsv``) and adds ``planted_found`` and
    ``false_clusters`` to the summary of ``group/analysis.json``. Returns those two counts,
    or None when ``BIDS_DIR/code/ground_truth.json`` does not exist (not a simulation).
    """
    truth = Path(bids_dir) / "code" / "ground_truth.json"
    if not truth.exists():
        return None
    group = D.group_dir(out_dir)
    table = planted_vs_found(json.loads(truth.read_text()),
                             _read_table(group / D.CLUSTERS_TSV),
                             _read_table(group / D.CORRELATIONS_TSV), bids_dir)
    write_text(group / D.PLANTED_TSV, table.to_csv(sep="\t", index=False))
    counts = {D.PLANTED_FOUND_KEY: int(table[D.FOUND].sum()),
              D.FALSE_CLUSTERS_KEY: int(table.attrs.get(D.FALSE_CLUSTERS_KEY, 0))}
    analysis_path = group / D.ANALYSIS_JSON
    analysis = json.loads(analysis_path.read_text())
    analysis.setdefault("summary", {}).update(counts)
    write_json(analysis_path, analysis)
    return counts
