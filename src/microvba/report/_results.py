"""Result sections of the report: corrected maps, clusters, correlations, decoding, planted vs found."""

from __future__ import annotations

from html import escape
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from ..io import derivatives as D
from . import figures
from ._common import (
    _KIND_NAMES,
    FIGURE_DPI,
    _alpha,
    _cell,
    _cluster_region,
    _img_tag,
    _is_true,
    _kind,
    _load,
    _metric_label,
    _norm_key,
    _sign_html,
    _text,
)
from ._inputs import DecodingResult, MetricMaps, ReportInputs, ScatterPlot, read_tsv
from .html import (
    Column,
    Numbering,
    figure_html,
    format_number,
    table_html,
)

# ----------------------------------------------------------------------------- clusters
#: column the report adds to the cluster table: the smallest FWE p inside each cluster
FWE_P = "_fwe_p"
#: how the report titles an atlas of ``clusters.tsv`` (another atlas: its name)
ATLAS_TITLES = {"brainnetome": "Brainnetome", "harvard_oxford": "Harvard-Oxford",
                "aal": "AAL"}


def atlas_title(atlas: str) -> str:
    return ATLAS_TITLES.get(atlas, atlas.replace("_", " "))


def normalise_clusters(inputs: ReportInputs) -> pd.DataFrame | None:
    """The cluster table with the smallest FWE p of each cluster (column :data:`FWE_P`).

    The p is read from the corrected map inside each cluster's label image
    (``<metric>_<pos|neg>_clusters.nii.gz``): :math:`p = 1 - \\max corrp`.
    """
    c = inputs.clusters
    if c is None or c.empty:
        return c
    out = c.copy()
    out[FWE_P] = [_cluster_fwe_p(inputs, str(m), s, cid) for m, s, cid in
                  zip(out[D.METRIC], out[D.SIGN], out[D.CLUSTER_ID], strict=True)]
    return out


def _cluster_fwe_p(inputs: ReportInputs, metric: str, sign: str, cluster_id: Any) -> float:
    maps = inputs.metrics.get(metric)
    if maps is None or sign not in maps.cluster_labels:
        return float("nan")
    kind = _kind(inputs, maps)
    contrast = D.CONTRAST_OF_SIGN[sign]
    corrp_img = _load(maps.corrp.get(kind, {}).get(contrast)) if kind else None
    label_img = _load(maps.cluster_labels[sign])
    if corrp_img is None or label_img is None or corrp_img.shape[:3] != label_img.shape[:3]:
        return float("nan")
    try:
        inside = np.asarray(label_img.dataobj).reshape(label_img.shape[:3]) == int(
            float(cluster_id))
    except (TypeError, ValueError):
        return float("nan")
    if not inside.any():
        return float("nan")
    cp = np.asarray(corrp_img.dataobj, dtype=np.float64).reshape(corrp_img.shape[:3])
    return float(1.0 - np.nanmax(cp[inside]))


# ----------------------------------------------------------------------------- maps
def _metric_result(maps: MetricMaps, kind: str | None, alpha: float) -> dict[str, Any]:
    """Significant signed map and summary numbers of one metric."""
    t1 = _load(maps.tstat.get(1))
    t2 = _load(maps.tstat.get(2))
    if t2 is None and t1 is not None:
        t2 = nib.Nifti1Image(-np.asarray(t1.dataobj, dtype=np.float32), t1.affine)
    result: dict[str, Any] = {"max_t": np.nan, "map": None}
    sig_images = []
    for contrast, sign, timg in ((1, 1, t1), (2, -1, t2)):
        corrp = _load(maps.corrp.get(kind, {}).get(contrast)) if kind else None
        key = "+" if sign > 0 else "-"
        result[f"p_{key}"] = np.nan
        result[f"n_{key}"] = 0
        if timg is None:
            continue
        if corrp is not None:
            cp = np.asarray(corrp.dataobj, dtype=np.float32)
            result[f"p_{key}"] = float(1.0 - np.nanmax(cp)) if cp.size else np.nan
        sig = figures.significant_t(timg, corrp, alpha=alpha, sign=sign)
        result[f"n_{key}"] = int(np.count_nonzero(np.asarray(sig.dataobj)))
        sig_images.append(sig)
    if t1 is not None:
        result["max_t"] = float(np.nanmax(np.abs(np.asarray(t1.dataobj, dtype=np.float32))))
    if sig_images and any(result[f"n_{k}"] for k in "+-"):
        result["map"] = figures.combine_signs(sig_images)
    return result


def maps_section(inputs: ReportInputs, numbering: Numbering) -> str:
    if not inputs.metrics:
        return '<p class="empty">No statistical maps (group/&lt;metric&gt;/) were found.</p>'
    alpha = _alpha(inputs)
    rows, parts = [], []
    for metric, maps in inputs.metrics.items():
        kind = _kind(inputs, maps)
        res = _metric_result(maps, kind, alpha)
        rows.append({"metric": _metric_label(metric), "kind": _KIND_NAMES.get(kind or "", "none"),
                     **{k: v for k, v in res.items() if k != "map"}})
        label = f"{_metric_label(metric)}"
        if res["map"] is None:
            why = "no corrected map was found" if kind is None else (
                f"no voxel survived FWE correction at p &lt; {alpha:g}")
            parts.append(f'<h3>{escape(label)}</h3><p class="empty">{escape(label)}: {why}.</p>')
            continue
        # no name holds the figure: nilearn calls gc.collect() about ten times per figure,
        # and each call would walk a previous figure's ~65k artists again
        png = figures.figure_png(figures.corrected_map_figure(res["map"]), dpi=FIGURE_DPI)
        caption = (f"<b>{escape(label)}</b>, {escape(_KIND_NAMES.get(kind, kind))}: t values of "
                   f"the voxels with FWE-corrected p &lt; {alpha:g} "
                   f"({res['n_+']} positive, {res['n_-']} negative voxels); positive association "
                   "with the score in red-yellow, negative in blue. Glass brain (top) and axial "
                   "slices through the cluster peaks (bottom; z in mm).")
        parts.append(f"<h3>{escape(label)}</h3>" + figure_html(
            png, caption, numbering,
            alt=f"{label} corrected map", caption_is_html=True))
    df = pd.DataFrame(rows)
    cols = [Column("Metric", lambda r: f"<b>{escape(r['metric'])}</b>"),
            Column("Correction", lambda r: escape(r["kind"])),
            Column("max |t|", _cell("max_t", 2), numeric=True),
            Column("min FWE p (+)", _cell("p_+", p=True), numeric=True,
                   css=lambda r: "sig" if r["p_+"] < alpha else ""),
            Column("voxels (+)", _cell("n_+", 0), numeric=True),
            Column("min FWE p (−)", _cell("p_-", p=True), numeric=True,
                   css=lambda r: "sig" if r["p_-"] < alpha else ""),
            Column("voxels (−)", _cell("n_-", 0), numeric=True)]
    table = table_html(df, cols, f"Voxel-wise results per metric: smallest FWE-corrected p and "
                       f"number of voxels with p &lt; {alpha:g} in each direction.", numbering,
                       caption_is_html=True)
    return table + "\n" + "\n".join(parts)


# ----------------------------------------------------------------------------- clusters
def clusters_section(inputs: ReportInputs, numbering: Numbering) -> str:
    c = inputs.clusters
    if c is None:
        return f'<p class="empty">No cluster table (group/{D.CLUSTERS_TSV}) was found.</p>'
    if c.empty:
        return '<p class="empty">No cluster survived family-wise error correction.</p>'
    cols = [Column("Metric", lambda r: escape(_metric_label(str(r[D.METRIC])))),
            Column("Sign", lambda r: _sign_html(r[D.SIGN])),
            Column("Cluster", _cell(D.CLUSTER_ID, 0)),
            Column("Voxels", _cell(D.N_VOXELS, 0), numeric=True),
            Column("mm³", _cell(D.VOLUME_MM3, 0), numeric=True),
            Column("Peak x, y, z (mm)", lambda r: ", ".join(
                format_number(r[a], 0) for a in D.PEAK_XYZ), numeric=True),
            Column("Peak t", _cell(D.PEAK_STAT, 2), numeric=True)]
    # the atlases are those clusters.tsv holds: the first names the region (and its
    # coverage), the others their main label; a new atlas shows up without a change here
    atlases = D.atlases_in(c.columns)
    for i, atlas in enumerate(atlases):
        cover, top, _ = D.atlas_columns(atlas)
        if i == 0 and D.REGION in c:
            cols += [Column(f"{atlas_title(atlas)} region", _text(D.REGION)),
                     Column(f"{atlas_title(atlas)} (% of cluster)", _text(cover))]
        else:
            cols.append(Column(atlas_title(atlas), _text(top)))
    if FWE_P in c:
        cols.append(Column("FWE p", _cell(FWE_P, p=True), numeric=True))
    names = ", ".join(atlas_title(a) for a in atlases)
    caption = ("Significant clusters: size, peak MNI coordinates and statistic, "
               + (f"anatomical labels ({names}) " if atlases else "")
               + "and the smallest FWE-corrected p in the cluster.")
    return table_html(c, cols, caption, numbering)


# ----------------------------------------------------------------------------- correlations
def _with_regions(corr: pd.DataFrame, inputs: ReportInputs) -> pd.DataFrame:
    corr = corr.copy()
    corr["_region"] = [_cluster_region(inputs, m, s, c) for m, s, c in
                       zip(corr[D.METRIC], corr[D.SIGN], corr[D.CLUSTER_ID], strict=True)]
    return corr


def _r_ci(r: str, lo: str, hi: str):
    def render(row: pd.Series) -> str:
        if pd.isna(row[r]):
            return ""
        text = f"{float(row[r]):.2f}"
        if pd.notna(row[lo]) and pd.notna(row[hi]):
            text += f" [{float(row[lo]):.2f}, {float(row[hi]):.2f}]"
        return text
    return render


def _ci(lo: str, hi: str):
    def render(row: pd.Series) -> str:
        if pd.isna(row[lo]) or pd.isna(row[hi]):
            return ""
        return f"[{float(row[lo]):.2f}, {float(row[hi]):.2f}]"
    return render


def _scatter_caption(inputs: ReportInputs, plot: ScatterPlot) -> str:
    region = _cluster_region(inputs, plot.metric, plot.sign, plot.cluster_id)
    head = (f"<b>{escape(_metric_label(plot.metric))}</b> {_sign_html(plot.sign)} cluster "
            f"{escape(plot.cluster_id)}" + (f" · {escape(region)}" if region else ""))
    return (f"{head}: cluster-mean metric against the score, both residualised on the "
            "covariates (in-sample, descriptive).")


def correlations_section(inputs: ReportInputs, numbering: Numbering) -> str:
    parts = []
    corr = inputs.correlations
    if corr is None:
        parts.append(f'<p class="empty">No correlation table (group/{D.CORRELATIONS_TSV}) '
                     "was found.</p>")
    elif corr.empty:
        parts.append('<p class="empty">No cluster to follow up.</p>')
    else:
        corr = _with_regions(corr, inputs)
        q = D.Q_FDR
        cols = [Column("Metric", lambda r: escape(_metric_label(str(r[D.METRIC])))),
                Column("Sign", lambda r: _sign_html(r[D.SIGN])),
                Column("Cluster", _cell(D.CLUSTER_ID, 0)),
                Column("Region", lambda r: escape(str(r["_region"])) if pd.notna(r["_region"])
                       else ""),
                Column("Method", _cell(D.METHOD)),
                Column("n", _cell(D.N, 0), numeric=True),
                Column("In-sample r [95% CI] (descriptive)",
                       _r_ci(D.R, D.CI_LOW, D.CI_HIGH), numeric=True),
                Column("Bootstrap CI", _ci(D.BOOT_CI_LOW, D.BOOT_CI_HIGH), numeric=True),
                # in-sample p and q are circular (~1e-4 for every selected null cluster,
                # bench_circularity): shown as descriptive, never flagged significant
                Column("In-sample p (descriptive)", _cell(D.P, p=True), numeric=True),
                Column("In-sample q (FDR)", _cell(q, p=True), numeric=True),
                Column("LOSO r [95% CI]", _r_ci(D.LOSO_R, D.LOSO_CI_LOW, D.LOSO_CI_HIGH),
                       numeric=True),
                # the calibrated test of the held-out effect (0.050 on 200 null cohorts)
                Column("LOSO p", _cell(D.LOSO_P, p=True) if D.LOSO_P in corr else _cell(None),
                       numeric=True,
                       css=lambda r: "sig" if pd.notna(r.get(D.LOSO_P)) and float(r[D.LOSO_P])
                       < 0.05 else "")]
        caption = ("Partial correlation of the cluster-mean metric with the score, controlling "
                   "for the covariates. The in-sample r is <b>descriptive</b>: the cluster was "
                   "selected with the same data, so it is inflated. The leave-one-subject-out "
                   "(LOSO) r, with the cluster redefined without each subject, is the "
                   "non-circular estimate; its CI (and <code>loso_p</code>) come, by default, from "
                   "permutations of the whole leave-one-out.")
        parts.append(table_html(corr, cols, caption, numbering, caption_is_html=True))
    scatter = [p for m in list(inputs.metrics) + sorted(set(inputs.scatter) - set(inputs.metrics))
               for p in inputs.scatter.get(m, [])]
    if scatter:
        cells = []
        for plot in scatter:
            cells.append(figure_html(figures.thumbnail_png(plot.path, max_width=700),
                                     _scatter_caption(inputs, plot), numbering,
                                     caption_is_html=True))
        parts.append(f'<div class="grid">{"".join(cells)}</div>')
    else:
        parts.append('<p class="empty">No scatter plots (group/&lt;metric&gt;/'
                     f"{escape(D.scatter_name('*', '*'))}) were found.</p>")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- decoding
def _top_features(table: pd.DataFrame, n: int = 5) -> str:
    top = table.sort_values(D.LOG_ODDS, ascending=False)
    return ", ".join(str(v) for v in top[D.LABEL].head(n))


def _decoding_panel(inputs: ReportInputs, d: DecodingResult) -> tuple[list[bytes], str]:
    """PNGs and caption sentence of one vocabulary of one cluster."""
    table = read_tsv(inputs, d.table_path, columns=D.DECODING_COLUMNS)
    head = f"{_metric_label(d.metric)} {d.sign} cluster {d.cluster_id}, {d.vocabulary}"
    text = f"<b>{escape(d.vocabulary)}</b>: "
    if table is None or table.empty:
        return [], text + "empty decoding table."
    top = _top_features(table)
    text += f"top features {escape(top)}"
    k = int(table[D.SIGNIFICANT].map(_is_true).sum())
    text += f"; {k} significant feature{'s' if k != 1 else ''}"
    figs = [p for p in (d.bar, d.polar) if p is not None]
    if figs:
        return [figures.thumbnail_png(p, max_width=700) for p in figs], text + "."
    png = figures.figure_png(figures.decoding_bar_figure(table, title=head), dpi=FIGURE_DPI)
    return [png], text + "."


def _regions_by_overlap(inputs: ReportInputs, table: pd.DataFrame
                        ) -> list[tuple[str, list[tuple[str, str, str, list[DecodingResult]]]]]:
    """Regions as the group stage merged them by voxel overlap (``decoding/regions.tsv``,
    :mod:`microvba.decode.regions`): each decoded once, as its first cluster."""
    results: dict[tuple[str, str, str], list[DecodingResult]] = {}
    for d in inputs.decoding:
        results.setdefault((d.metric, d.sign, str(d.cluster_id)), []).append(d)
    out = []
    for region, rows in table.groupby("region", sort=True):
        members = [(str(r["metric"]), str(r["sign"]), str(r["cluster"]),
                    results.get((str(r["metric"]), str(r["sign"]), str(r["cluster"])), []))
                   for _, r in rows.iterrows()]
        members.sort(key=lambda m: not m[3])  # the decoded cluster first
        if not members[0][3]:
            continue
        metric, sign, cid, _ = members[0]
        label = _cluster_region(inputs, metric, sign, cid)
        name = f"Region {region}" + (f": {label}" if label else "")
        out.append((name, members))
    return out


def _decoded_regions(inputs: ReportInputs) -> list[tuple[str, list[tuple[str, str, str,
                                                                        list[DecodingResult]]]]]:
    """Decoded clusters grouped into distinct regions. Outputs of a run that merged the
    clusters by voxel overlap (``decoding/regions.tsv``) are shown as merged there; for
    older outputs, clusters of different metrics (and signs) in the same atlas region are
    one region (the first metric's cluster, in the order of the analysis, represents it)
    and clusters without a region label stay on their own."""
    from ..decode.regions import read_regions

    table = read_regions(inputs.group_dir / "decoding")
    if table is not None and len(table):
        return _regions_by_overlap(inputs, table)
    order = {m: i for i, m in enumerate(inputs.metrics)}
    clusters: dict[tuple[str, str, str], list[DecodingResult]] = {}
    for d in sorted(inputs.decoding, key=lambda d: (order.get(d.metric, len(order)), d.metric,
                                                   d.sign, _norm_key(d.cluster_id),
                                                   d.vocabulary)):
        clusters.setdefault((d.metric, d.sign, d.cluster_id), []).append(d)
    regions: dict[str, list] = {}
    for (metric, sign, cid), results in clusters.items():
        region = _cluster_region(inputs, metric, sign, cid)
        key = region or f"{_metric_label(metric)} {sign} cluster {cid}"
        regions.setdefault(key, []).append((metric, sign, cid, results))
    return list(regions.items())


def _summary_heatmap(inputs: ReportInputs, regions, vocabulary: str,
                     n_top: int = 3) -> tuple[bytes, str] | None:
    """Heatmap of regions x the union of each region's top features in ``vocabulary``."""
    tables = {}
    stat = None
    for name, members in regions:
        d = next((d for d in members[0][3] if d.vocabulary == vocabulary), None)
        t = read_tsv(inputs, d.table_path, columns=D.DECODING_COLUMNS) if d else None
        if t is None or t.empty:
            continue
        stat = D.LOG_ODDS
        tables[name] = t.set_index(D.FEATURE)
    if not tables or stat is None:
        return None
    cols: list[str] = []
    for t in tables.values():
        for f in pd.to_numeric(t[stat], errors="coerce").sort_values(
                ascending=False).index[:n_top]:
            if f not in cols:
                cols.append(f)
    values = pd.DataFrame({f: [pd.to_numeric(t[stat], errors="coerce").get(f, np.nan)
                               for t in tables.values()] for f in cols},
                          index=list(tables))
    sig = pd.DataFrame({f: [_is_true(t[D.SIGNIFICANT].get(f, False)) for t in tables.values()]
                        for f in cols}, index=list(tables))
    fig = figures.decoding_heatmap_figure(values, sig, statistic=stat,
                                          title=f"{vocabulary}: top {n_top} per region")
    return figures.figure_png(fig, dpi=FIGURE_DPI), stat


def decoding_section(inputs: ReportInputs, numbering: Numbering) -> str:
    if not inputs.decoding:
        return (f'<p class="empty">No decoding results (group/{D.DECODING_DIR}/'
                f"{D.decoding_table_name('*')}) were found.</p>")
    regions = _decoded_regions(inputs)
    n_clusters = sum(len(m) for _, m in regions)
    parts = []
    vocabularies = sorted({d.vocabulary for d in inputs.decoding},
                          key=lambda v: (v != "lda50", v))
    for vocab in vocabularies:
        summary = _summary_heatmap(inputs, regions, vocab)
        if summary is None:
            continue
        png, stat = summary
        n = numbering.next_figure()
        parts.append(
            f'<figure class="fig" id="fig-{n}">{_img_tag(png, f"decoding summary {vocab}")}'
            f"<figcaption><b>Figure {n}.</b> Meta-analytic decoding ({escape(vocab)}) of the "
            f"{len(regions)} distinct region{'s' if len(regions) != 1 else ''} of the "
            f"{n_clusters} significant cluster{'s' if n_clusters != 1 else ''} (clusters of "
            "different metrics in the same region decoded once): "
            f"{escape(stat)} of each region's top features; * significant against the "
            "spatial null and FDR.</figcaption></figure>")
    detail = []
    for name, members in regions:
        metric, sign, cluster_id, results = members[0]
        merged = ", ".join(f"{_metric_label(m)} {_sign_html(s)} cluster {escape(str(c))}"
                           for m, s, c, _ in members)
        head = escape(name)
        images, sentences = [], []
        for d in results:
            pngs, text = _decoding_panel(inputs, d)
            images += [(png, d.vocabulary) for png in pngs]
            sentences.append(text)
        once = (" (they overlap: decoded once, as their union)" if name.startswith("Region ")
                else " (decoded once, from the first)")
        detail.append(f"<h3>{head}</h3><p>Clusters: {merged}"
                      + (once if len(members) > 1 else "") + ".</p>")
        if not images:
            detail.append(f'<p class="empty">{" ".join(sentences)}</p>')
            continue
        n = numbering.next_figure()
        cells = "".join(f"<div>{_img_tag(png, f'{metric} {sign} {cluster_id} {v}')}</div>"
                        for png, v in images)
        detail.append(f'<figure class="fig" id="fig-{n}"><div class="grid">{cells}</div>'
                      f"<figcaption><b>Figure {n}.</b> Meta-analytic decoding of {head} "
                      f"({_metric_label(metric)} {_sign_html(sign)} cluster "
                      f"{escape(str(cluster_id))}). {' '.join(sentences)}</figcaption></figure>")
    parts.append(f"<details><summary>Decoding of each of the {len(regions)} regions (bar "
                 f"and polar plots)</summary>{''.join(detail)}</details>")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- planted
def _not_planted(row: pd.Series) -> bool:
    return str(row.get(D.REGION, "")) == D.NOT_PLANTED


def _planted_counts(t: pd.DataFrame) -> tuple[int, int, int, int]:
    """(found, planted, false-positive clusters outside the planted regions, expected
    side-effect clusters): the "(not planted)" rows are split by their ``status``, as the
    command line counts them (``false_clusters``)."""
    extra = t.apply(_not_planted, axis=1) if len(t) else pd.Series(dtype=bool)
    planted = t[~extra]
    found = int(planted[D.FOUND].map(_is_true).sum())
    side = int((extra & (t[D.STATUS].astype(str) == D.PLANTED_STATUS[2])).sum())
    return found, len(planted), int(extra.sum()) - side, side


def planted_sentence(n_false: int, n_side: int) -> str:
    """One wording for the report and the command line."""
    text = f"{n_false} cluster{'s' if n_false != 1 else ''} outside the planted regions"
    if n_side:
        text += (f" ({n_side} more {'are' if n_side != 1 else 'is an'} expected side "
                 f"effect{'s' if n_side != 1 else ''} inside planted regions)")
    return text


def planted_section(inputs: ReportInputs, numbering: Numbering) -> str:
    t = inputs.planted
    if t is None or t.empty:
        return ""
    found = D.FOUND
    cols = [Column("Region", _text(D.REGION)),
            Column("Hemisphere", _text(D.HEMISPHERE)),
            Column("Metric", lambda r: escape(_metric_label(str(r[D.METRIC])))),
            Column("Sign", lambda r: _sign_html(r[D.SIGN])),
            Column("Planted r", lambda r: "" if _not_planted(r) else
                   _cell(D.PLANTED_R)(r), numeric=True)]
    scaled = not np.allclose(pd.to_numeric(t[D.STUDY_R], errors="coerce").fillna(0),
                             pd.to_numeric(t[D.PLANTED_R], errors="coerce").fillna(0))
    if scaled:
        cols.append(Column("Study r", lambda r: "" if _not_planted(r) else
                           _cell(D.STUDY_R)(r), numeric=True))
    cols += [
             Column("Found", lambda r: "" if _not_planted(r) else
                    ("yes" if _is_true(r[found]) else "no"),
                    css=lambda r: "" if _not_planted(r) else
                    ("yes" if _is_true(r[found]) else "no")),
             Column("Found r (in-sample)", _cell(D.FOUND_R), numeric=True),
             Column("LOSO r", _cell(D.LOSO_R), numeric=True),
             Column("Peak distance (mm)", _cell(D.PEAK_DISTANCE_MM, 1), numeric=True)]
    k, n, n_false, n_side = _planted_counts(t)
    caption = (f"Simulation check: planted effects and what the analysis found ({k} of {n} "
               "recovered: a significant cluster of the same metric and sign with its peak "
               f"near the planted region; {planted_sentence(n_false, n_side)}: a metric "
               "that moves mechanically with the planted one, e.g. MD with AD; both listed "
               "as “(not planted)”)."
               + (" The effects were planted stronger than the study's r (in Fisher z, as if "
                  "the study's r had been measured in a larger cohort): at the study's "
                  "n = 64 its weakest effects cannot survive whole-brain FWE correction."
                  if scaled else ""))
    return table_html(t, cols, caption, numbering,
                      row_class=lambda r: "flag" if _not_planted(r) or (
                          not _is_true(r[found])) else "")

