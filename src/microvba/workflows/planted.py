"""Planted versus found: check a simulated cohort's analysis against its ground truth.

A planted effect counts as found when a significant cluster of the same metric and sign
has its peak within ``max_distance_mm`` of the planted region's centre of mass (or inside
the region's label). Every significant cluster that matches no planted effect is a false
cluster; the demo must have none.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _effects(truth: dict) -> list[dict]:
    return list(truth.get("effects", truth if isinstance(truth, list) else []))


def planted_vs_found(truth: dict, clusters: pd.DataFrame, correlations: pd.DataFrame,
                     max_distance_mm: float = 10.0) -> pd.DataFrame:
    """One row per planted effect: found or not, the found r, the peak distance."""
    rows = []
    for eff in _effects(truth):
        metric, sign = eff["metric"].lower(), "+" if float(eff["r"]) > 0 else "-"
        centre = np.asarray(eff.get("mni_com_mm", eff.get("centre_mm")), float)
        row = {"region": eff.get("region"), "hemisphere": eff.get("hemisphere", ""),
               "metric": metric, "sign": sign, "planted_r": float(eff["r"]), "found": False,
               "found_r": np.nan, "loso_r": np.nan, "peak_distance_mm": np.nan,
               "cluster_id": np.nan}
        if len(clusters):
            cand = clusters[(clusters["metric"] == metric) & (clusters["sign"] == sign)]
            if len(cand):
                peaks = cand[["peak_x", "peak_y", "peak_z"]].to_numpy(float)
                dist = np.linalg.norm(peaks - centre, axis=1)
                best = int(np.argmin(dist))
                row["peak_distance_mm"] = float(dist[best])
                if dist[best] <= max_distance_mm:
                    cid = cand.iloc[best]["cluster_id"]
                    row.update(found=True, cluster_id=cid)
                    c = correlations[(correlations["metric"] == metric)
                                     & (correlations["sign"] == sign)
                                     & (correlations["cluster_id"] == cid)]
                    if len(c):
                        first = c.iloc[0]
                        row["found_r"] = float(first["r"])
                        row["loso_r"] = float(first.get("loso_r", np.nan))
        rows.append(row)
    n_false = 0
    for _, c in clusters.iterrows() if len(clusters) else ():
        peak = c[["peak_x", "peak_y", "peak_z"]].to_numpy(float)
        near = [e for e in _effects(truth)
                if e["metric"].lower() == c["metric"]
                and ("+" if float(e["r"]) > 0 else "-") == c["sign"]
                and np.linalg.norm(peak - np.asarray(e.get("mni_com_mm", e.get("centre_mm")),
                                                     float)) <= max_distance_mm]
        if not near:
            n_false += 1
            rows.append({"region": "(not planted)", "metric": c["metric"], "sign": c["sign"],
                         "planted_r": 0.0, "found": False, "cluster_id": c["cluster_id"],
                         "peak_distance_mm": np.nan})
    table = pd.DataFrame(rows)
    table.attrs["false_clusters"] = n_false
    return table
