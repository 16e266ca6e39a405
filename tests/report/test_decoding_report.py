"""The report's decoding section: each distinct region decoded once (clusters of several
metrics merged), one summary heatmap per vocabulary; the planted-vs-found wording."""

from __future__ import annotations

import re

import pandas as pd
from synthetic_output import PLANTED, make_output_folder

from microvba.report import build_report


def _section(html: str, name: str) -> str:
    return html.split(f'<section id="{name}">')[1].split("</section>")[0]


def test_clusters_in_one_region_are_decoded_once(tmp_path):
    out = make_output_folder(tmp_path / "deriv", n_subjects=3, seed=1)
    group = out / "group"
    clusters = pd.read_table(group / "clusters.tsv")
    # the FA cluster lies in the same region as the first AD cluster (as A23c in the demo)
    first = clusters.loc[clusters["metric"] == "ad", "region"].iloc[0]
    clusters.loc[clusters["metric"] == "fa", "region"] = first
    clusters.to_csv(group / "clusters.tsv", sep="\t", index=False)
    planted = pd.read_table(group / "planted_vs_found.tsv")
    planted["status"] = ["found"] * (len(planted) - 1) + ["false positive"]
    side = planted.iloc[[-1]].assign(status="expected side effect", metric="rd")
    planted = pd.concat([planted, side], ignore_index=True)
    planted.to_csv(group / "planted_vs_found.tsv", sep="\t", index=False)

    html = build_report(out).read_text(encoding="utf-8")
    dec = _section(html, "decoding")
    n_regions = len(PLANTED) - 1
    assert f"{n_regions} distinct regions of the {len(PLANTED)} significant clusters" in dec
    assert dec.count("<h3>") == n_regions  # one detail block per region, not per cluster
    heads = re.findall(r"<h3>(.*?)</h3>", dec)
    assert sum(first.replace("<", "&lt;").replace(">", "&gt;") in h for h in heads) == 1
    assert "(decoded once, from the first)" in dec
    assert dec.count("<details>") == 1 and dec.index("<details>") > dec.index("Figure")
    assert dec.count("decoding summary") == 2  # lda50 and terms heatmaps
    # one wording for the count of clusters outside the planted regions
    summary = _section(html, "summary")
    assert "1 cluster outside the planted regions (1 more is an expected side effect " \
           "inside planted regions)" in summary


def test_regions_merged_by_overlap_are_shown_as_the_group_stage_wrote_them(tmp_path):
    """With ``decoding/regions.tsv`` (clusters merged by voxel overlap), the report shows
    one block per region, its metrics listed, whatever the atlas labels say."""
    import numpy as np

    from microvba.decode.regions import Cluster, merge_clusters, write_regions

    out = make_output_folder(tmp_path / "deriv", n_subjects=3, seed=1)
    group = out / "group"
    clusters = pd.read_table(group / "clusters.tsv")
    aff = np.eye(4)
    masks, made = {}, []
    for i, r in enumerate(clusters.itertuples()):
        m = np.zeros((40, 4, 4), bool)
        m[4 * i:4 * i + 3] = True
        masks[(r.metric, r.sign, int(r.cluster_id))] = m
    # the FA cluster overlaps the first AD cluster although its atlas label differs
    ad1 = clusters[clusters["metric"] == "ad"].iloc[0]
    fa = clusters[clusters["metric"] == "fa"].iloc[0]
    assert ad1["brainnetome"] != fa["brainnetome"]
    masks[("fa", fa["sign"], int(fa["cluster_id"]))] = masks[
        ("ad", ad1["sign"], int(ad1["cluster_id"]))].copy()
    for (metric, sign, cid), m in masks.items():
        made.append(Cluster(metric, sign, cid, m, aff))
    regions = merge_clusters(made)
    assert len(regions) == len(PLANTED) - 1
    write_regions(regions, group / "decoding")
    for f in (group / "decoding").glob(f"fa_pos_cluster-{fa['cluster_id']}_*"):
        f.unlink()  # the group stage writes no files for a merged cluster

    html = build_report(out).read_text(encoding="utf-8")
    dec = _section(html, "decoding")
    heads = re.findall(r"<h3>(.*?)</h3>", dec)
    assert len(heads) == len(PLANTED) - 1
    assert heads[0].startswith("Region 1: ")
    assert "(they overlap: decoded once, as their union)" in dec
    assert dec.count("(they overlap") == 1
    block = dec.split("<h3>")[1]
    assert "AD" in block and "FA" in block  # both metrics listed under the one region
