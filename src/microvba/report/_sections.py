"""The sections of the report, each built from :class:`ReportInputs` into an HTML fragment."""

from __future__ import annotations

import re
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from .._logging import get_logger
from . import figures
from ._inputs import CORRP_KINDS, DecodingResult, MetricMaps, ReportInputs, read_tsv
from .html import (
    Column,
    Numbering,
    data_uri,
    figure_html,
    format_number,
    format_p,
    notice_html,
    table_html,
)
from .methods import lookup, methods_paragraph

log = get_logger(__name__)

_KIND_NAMES = {"tfce": "TFCE", "vox": "voxel-wise max t", "clustere": "cluster extent",
               "clusterm": "cluster mass"}
_KIND_NAMES.update({f"{k}_fam": f"{v} (FWE over all metrics and directions)"
                    for k, v in list(_KIND_NAMES.items())})
_SIGN = {"+": "+", "pos": "+", "positive": "+", "plus": "+", "1": "+", "1.0": "+",
         "-": "-", "−": "-", "neg": "-", "negative": "-", "minus": "-", "2": "-", "-1": "-",
         "-1.0": "-", "2.0": "-"}
FIGURE_DPI = 90


# ----------------------------------------------------------------------------- helpers
def _sign(value: Any) -> str:
    return _SIGN.get(str(value).strip().lower(), str(value))


def _sign_html(value: Any) -> str:
    s = _sign(value)
    cls = {"+": "pos", "-": "neg"}.get(s, "")
    return f'<span class="{cls}">{"+" if s == "+" else "−" if s == "-" else escape(s)}</span>'


def _pick(table: pd.DataFrame, *names: str) -> str | None:
    lower = {str(c).lower(): c for c in table.columns}
    for name in names:
        if name.lower() in lower:
            return lower[name.lower()]
    return None


def _cell(col: str | None, decimals: int = 2, p: bool = False):
    def render(row: pd.Series) -> str:
        if col is None:
            return ""
        value = row[col]
        if p:
            try:
                return format_p(float(value))
            except (TypeError, ValueError):
                return escape(str(value))
        return format_number(value, decimals)
    return render


def _is_true(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "1.0", "yes", "y")


def _metric_label(metric: str) -> str:
    return metric.upper()


def _alpha(inputs: ReportInputs) -> float:
    try:
        return float(lookup(inputs.analysis, "alpha", "fwe_alpha", default=0.05))
    except (TypeError, ValueError):
        return 0.05


def _n_perm(inputs: ReportInputs, maps: MetricMaps | None = None) -> Any:
    n = lookup(inputs.analysis, "n_perm", "n_permutations", "permutations")
    if n is None and maps is not None:
        n = lookup(maps.sidecar, "Parameters.n_perm", "n_perm", "Parameters.n_permutations")
    return n


def _kind(inputs: ReportInputs, maps: MetricMaps) -> str | None:
    wanted = str(lookup(inputs.analysis, "correction", "inference", default="tfce")).lower()
    wanted = {"voxel": "vox", "cluster": "clustere"}.get(wanted, wanted)
    family = lookup(inputs.analysis, "correct_across", "correct_across_metrics", "family")
    if _is_true(family) and f"{wanted}_fam" in maps.corrp:
        return f"{wanted}_fam"
    if wanted in maps.corrp:
        return wanted
    return next((k for k in CORRP_KINDS if k in maps.corrp), None)


def _load(path: Path | None) -> nib.spatialimages.SpatialImage | None:
    if path is None:
        return None
    try:
        return nib.load(str(path))
    except (OSError, ValueError, nib.filebasedimages.ImageFileError) as exc:
        log.warning("could not read %s: %s", path, exc)
        return None


def _img_tag(png: bytes, alt: str) -> str:
    return f'<img src="{data_uri(png)}" alt="{escape(alt)}">'


# ----------------------------------------------------------------------------- clusters
#: canonical column -> accepted spellings (the regions stage's names first)
_CLUSTER_ALIASES: dict[str, tuple[str, ...]] = {
    "metric": ("metric",),
    "sign": ("sign", "tail"),
    "cluster_id": ("cluster_id", "cluster"),
    "size_vox": ("size_vox", "n_voxels", "size"),
    "size_mm3": ("size_mm3", "volume_mm3"),
    "peak_stat": ("peak_stat", "peak_t"),
    "region": ("region", "brainnetome_top", "peak_brainnetome", "brainnetome",
               "brainnetome_label"),
    "bn_cover": ("brainnetome",),
    "ho": ("harvard_oxford_top", "peak_harvard_oxford", "harvard_oxford"),
    "aal": ("aal_top", "peak_aal", "aal"),
    "fwe_p": ("min_fwe_p", "fwe_p", "p_fwe", "min_p_fwe"),
}


def normalise_clusters(inputs: ReportInputs) -> pd.DataFrame | None:
    """The cluster table with canonical column names, signs as ``+``/``-`` and FWE p.

    When the table has no FWE p, it is read from the corrected map inside each cluster's
    label image (``<metric>_<pos|neg>_clusters.nii.gz``): :math:`p = 1 - \\max corrp`.
    """
    c = inputs.clusters
    if c is None or c.empty:
        return c
    out = c.copy()
    for canon, names in _CLUSTER_ALIASES.items():
        col = _pick(c, *names)
        if col is not None and canon not in out.columns.difference([col]):
            out[canon] = c[col]
    if "bn_cover" in out and "region" in out and out["bn_cover"].equals(out["region"]):
        out = out.drop(columns="bn_cover")
    if "sign" in out:
        out["sign"] = out["sign"].map(_sign)
    if "metric" in out:
        out["metric"] = out["metric"].astype(str).str.lower()
    if "fwe_p" not in out and {"metric", "sign", "cluster_id"} <= set(out.columns):
        out["fwe_p"] = [_cluster_fwe_p(inputs, r["metric"], r["sign"], r["cluster_id"])
                        for _, r in out.iterrows()]
    return out


def _cluster_fwe_p(inputs: ReportInputs, metric: str, sign: str, cluster_id: Any) -> float:
    maps = inputs.metrics.get(metric)
    if maps is None or sign not in maps.cluster_labels:
        return float("nan")
    kind = _kind(inputs, maps)
    corrp_img = _load(maps.corrp.get(kind, {}).get(1 if sign == "+" else 2)) if kind else None
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


# ----------------------------------------------------------------------------- summary
def _findings(inputs: ReportInputs) -> list[str]:
    clusters = inputs.clusters
    if clusters is None:
        return []
    if clusters.empty:
        return ["No cluster survived family-wise error correction."]
    if "metric" not in clusters:
        return [f"{len(clusters)} significant clusters."]
    items = []
    sign = clusters["sign"] if "sign" in clusters else pd.Series("+", index=clusters.index)
    for (metric, sgn), rows in clusters.groupby([clusters["metric"], sign], sort=False):
        best = (rows.sort_values("size_vox", ascending=False).iloc[0] if "size_vox" in rows
                else rows.iloc[0])
        text = (f"<b>{escape(_metric_label(str(metric)))}</b> {_sign_html(sgn)}: "
                f"{len(rows)} cluster{'s' if len(rows) != 1 else ''}")
        details = []
        if "size_vox" in rows:
            details.append(f"largest {format_number(best['size_vox'], 0)} voxels")
        if "region" in rows and pd.notna(best["region"]):
            details.append(f"in {escape(str(best['region']))}")
        if "fwe_p" in rows and pd.notna(best["fwe_p"]):
            details.append(f"FWE p = {format_p(float(best['fwe_p']))}")
        items.append(text + (f" ({'; '.join(details)})" if details else ""))
    return items


def summary_section(inputs: ReportInputs, numbering: Numbering) -> str:
    a = inputs.analysis
    rows: list[tuple[str, str]] = []
    name = inputs.dataset_description.get("Name")
    if name:
        rows.append(("Dataset", escape(str(name))))
    if inputs.participants is not None:
        rows.append(("Subjects analysed", str(len(inputs.participants))))
    if inputs.qc is not None and "outlier" in inputs.qc:
        n_out = int(inputs.qc["outlier"].map(_is_true).sum())
        excluded = lookup(a, "excluded_outliers", default=[])
        text = f"{n_out} of {len(inputs.qc)}"
        if excluded:
            text += f" (excluded: {escape(', '.join(map(str, excluded)))})"
        rows.append(("Registration outliers", text))
    for label, keys in (("Score", ("score",)), ("Covariates", ("covariates",)),
                        ("Space", ("space", "template"))):
        value = lookup(a, *keys)
        if value is not None:
            text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            rows.append((label, escape(text)))
    metrics = [_metric_label(m) for m in inputs.metrics] or [
        _metric_label(str(m)) for m in a.get("metrics", [])]
    if metrics:
        rows.append(("Metrics", escape(", ".join(metrics))))
    n_perm = _n_perm(inputs, next(iter(inputs.metrics.values()), None))
    correction = str(lookup(a, "correction", "inference", default="tfce")).lower()
    inference = f"{_KIND_NAMES.get(correction, correction)}, FWE p &lt; {_alpha(inputs):g}"
    if n_perm is not None:
        inference += f", {escape(str(n_perm))} permutations"
    rows.append(("Inference", inference))
    body = '<dl class="summary">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"
    findings = _findings(inputs)
    if findings:
        body += "<h3>Findings</h3><ul class=\"findings\">" + "".join(
            f"<li>{f}</li>" for f in findings) + "</ul>"
    if inputs.planted is not None and not inputs.planted.empty:
        k, n, n_false = _planted_counts(inputs.planted)
        if n:
            body += (f"<p>Simulation check: <b>{k} of {n}</b> planted effects recovered, "
                     f"{n_false} cluster{'s' if n_false != 1 else ''} outside the planted "
                     "regions (see <a href=\"#planted\">planted vs found</a>).</p>")
    body += notice_html("Missing inputs (the sections that need them are left out or shortened):",
                        inputs.missing)
    body += notice_html("Unreadable inputs:", inputs.unreadable)
    return body


# ----------------------------------------------------------------------------- methods
def methods_section(inputs: ReportInputs, numbering: Numbering) -> str:
    params = dict(inputs.analysis)
    for maps in inputs.metrics.values():  # settings only the randomise sidecars recorded
        side = maps.sidecar.get("Parameters", maps.sidecar)
        for key, value in side.items() if isinstance(side, dict) else ():
            params.setdefault(key, value)
        versions = maps.sidecar.get("SoftwareVersions")
        if versions and not lookup(params, "software_versions", "SoftwareVersions", "software"):
            params["software_versions"] = versions
    if "metrics" not in params and inputs.metrics:
        params["metrics"] = list(inputs.metrics)
    if "n_subjects" not in params and inputs.participants is not None:
        params["n_subjects"] = len(inputs.participants)
    if "decoding" not in params and inputs.decoding:
        params["decoding"] = {"vocabularies": sorted({d.vocabulary for d in inputs.decoding})}
    return methods_paragraph(params)


# ----------------------------------------------------------------------------- cohort
def cohort_section(inputs: ReportInputs, numbering: Numbering) -> str:
    table = inputs.participants
    if table is None:
        return '<p class="empty">No cohort table (group/participants.tsv) was found.</p>'
    score = lookup(inputs.analysis, "score")
    covariates = [str(c) for c in lookup(inputs.analysis, "covariates", default=[]) or []]
    order = ([score] if score in table else []) + [c for c in covariates if c in table]
    order += [c for c in table.columns if c not in order]
    rows = []
    for col in order:
        values = table[col]
        role = "score" if col == score else "covariate" if col in covariates else ""
        n = int(values.notna().sum())
        numeric = (pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
                   and values.nunique() > 2)
        if numeric:
            v = values.astype(float)
            desc = f"{v.mean():.1f} ({v.std(ddof=1):.1f})"
            rng = f"{v.min():.4g} to {v.max():.4g}"
            r = ""
            if score in table and col != score and pd.api.types.is_numeric_dtype(table[score]):
                r = f"{v.corr(table[score].astype(float)):.2f}"
        else:
            counts = values.astype(str).where(values.notna(), "n/a").value_counts()
            desc = "; ".join(f"{escape(str(k))}: {c} ({100 * c / len(values):.0f}%)"
                             for k, c in counts.items())
            rng, r = "", ""
        rows.append({"variable": escape(str(col)), "role": role, "n": n, "desc": desc,
                     "range": rng, "r": r})
    df = pd.DataFrame(rows)
    cols = [Column("Variable", lambda r: f"<b>{r['variable']}</b>" if r["role"] == "score"
                   else r["variable"]),
            Column("Role", lambda r: escape(r["role"])),
            Column("n", lambda r: str(r["n"]), numeric=True),
            Column("Mean (SD) or counts", lambda r: r["desc"]),
            Column("Range", lambda r: r["range"], numeric=True),
            Column("r with score", lambda r: r["r"], numeric=True)]
    caption = (f"Cohort analysed (N = {len(table)}): mean (standard deviation) of continuous "
               "variables, counts (%) of categorical ones, Pearson r with the score.")
    return table_html(df, cols, caption, numbering)


# ----------------------------------------------------------------------------- QC
def _mosaics_html(inputs: ReportInputs, subjects: Sequence[str], numbering: Numbering,
                  caption: str, max_width: int) -> str:
    cells = []
    for sub in subjects:
        for png in inputs.qc_mosaics.get(sub, []):
            try:
                data = figures.thumbnail_png(png, max_width=max_width)
            except OSError as exc:
                inputs.unreadable.append(f"{png.name} ({exc})")
                continue
            cells.append(f'<figure class="fig">{_img_tag(data, png.name)}'
                         f"<figcaption>{escape(png.name)}</figcaption></figure>")
    if not cells:
        return ""
    n = numbering.next_figure()
    return (f'<figure class="fig" id="fig-{n}"><div class="grid small">{"".join(cells)}</div>'
            f"<figcaption><b>Figure {n}.</b> {escape(caption)}</figcaption></figure>")


def qc_section(inputs: ReportInputs, numbering: Numbering) -> str:
    qc = inputs.qc
    parts = []
    outliers: list[str] = []
    if qc is None:
        parts.append('<p class="empty">No registration QC table (group/qc.tsv) was found.</p>')
    else:
        qc = qc.copy()
        flag = qc["outlier"].map(_is_true) if "outlier" in qc else pd.Series(False, index=qc.index)
        if "participant_id" in qc:
            outliers = [str(s) for s in qc.loc[flag, "participant_id"]]
        parts.append(figure_html(
            figures.figure_png(figures.qc_similarity_figure(qc), dpi=FIGURE_DPI),
            "Similarity of each subject's normalised image with the template; registration "
            "outliers in red.", numbering))
        measures = [c for c in qc.columns if c not in ("participant_id", "outlier")]
        cols = [Column("Subject", _cell("participant_id"))] + [
            Column(c, _cell(c, 3), numeric=pd.api.types.is_numeric_dtype(qc[c]))
            for c in measures] + [Column("Outlier", lambda r: "yes" if _is_true(r.get("outlier"))
                                         else "", css=lambda r: "no" if _is_true(
                                             r.get("outlier")) else "")]
        caption = (f"Registration QC: {len(qc)} subjects, {int(flag.sum())} flagged as "
                   "outliers (highlighted).")
        long = len(qc) > 20
        if long and flag.any():
            parts.append(table_html(qc[flag], cols, "Subjects flagged as registration outliers.",
                                    numbering, row_class=lambda r: "flag"))
        table = table_html(qc, cols, caption, numbering,
                           row_class=lambda r: "flag" if _is_true(r.get("outlier")) else "")
        parts.append(f"<details><summary>Similarity of all {len(qc)} subjects</summary>"
                     f"{table}</details>" if long else table)
    if inputs.qc_mosaics:
        flagged = [s for s in outliers if s in inputs.qc_mosaics]
        others = [s for s in inputs.qc_mosaics if s not in flagged]
        if flagged:
            parts.append("<h3>Outliers</h3>" + _mosaics_html(
                inputs, flagged, numbering, "Registration QC mosaics of the outliers.", 1000))
        if others:
            html = _mosaics_html(inputs, others, numbering,
                                 "Registration QC mosaics: warped maps over the template's "
                                 "gray-matter outline.", 420)
            parts.append(html if len(others) <= 6 else
                         f"<details><summary>QC mosaics of {len(others)} subjects</summary>"
                         f"{html}</details>")
    else:
        parts.append('<p class="empty">No registration QC mosaics '
                     "(sub-*/figures/*qc*.png) were found.</p>")
    return "\n".join(parts)


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
        fig = figures.corrected_map_figure(res["map"])
        caption = (f"<b>{escape(label)}</b>, {escape(_KIND_NAMES.get(kind, kind))}: t values of "
                   f"the voxels with FWE-corrected p &lt; {alpha:g} "
                   f"({res['n_+']} positive, {res['n_-']} negative voxels); positive association "
                   "with the score in red-yellow, negative in blue. Glass brain (top) and axial "
                   "slices through the cluster peaks (bottom; z in mm).")
        parts.append(f"<h3>{escape(label)}</h3>" + figure_html(
            figures.figure_png(fig, dpi=FIGURE_DPI), caption, numbering,
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
def _text(col: str):
    return lambda r: "" if col not in r or pd.isna(r[col]) else escape(str(r[col]))


def clusters_section(inputs: ReportInputs, numbering: Numbering) -> str:
    c = inputs.clusters
    if c is None:
        return '<p class="empty">No cluster table (group/clusters.tsv) was found.</p>'
    if c.empty:
        return '<p class="empty">No cluster survived family-wise error correction.</p>'
    cols = []
    if "metric" in c:
        cols.append(Column("Metric", lambda r: escape(_metric_label(str(r["metric"])))))
    if "sign" in c:
        cols.append(Column("Sign", lambda r: _sign_html(r["sign"])))
    if "cluster_id" in c:
        cols.append(Column("Cluster", _cell("cluster_id", 0)))
    for header, col, dec in (("Voxels", "size_vox", 0), ("mm³", "size_mm3", 0)):
        if col in c:
            cols.append(Column(header, _cell(col, dec), numeric=True))
    if all(f"peak_{a}" in c for a in "xyz"):
        cols.append(Column("Peak x, y, z (mm)", lambda r: ", ".join(
            format_number(r[f"peak_{a}"], 0) for a in "xyz"), numeric=True))
    if "peak_stat" in c:
        cols.append(Column("Peak t", _cell("peak_stat", 2), numeric=True))
    for header, col in (("Brainnetome region", "region"),
                        ("Brainnetome (% of cluster)", "bn_cover"),
                        ("Harvard-Oxford", "ho"), ("AAL", "aal")):
        if col in c:
            cols.append(Column(header, _text(col)))
    if "fwe_p" in c:
        cols.append(Column("FWE p", _cell("fwe_p", p=True), numeric=True))
    caption = ("Significant clusters: size, peak MNI coordinates and statistic, anatomical "
               "labels (Brainnetome subregion, Harvard-Oxford, AAL) and the smallest "
               "FWE-corrected p in the cluster.")
    return table_html(c, cols, caption, numbering)


# ----------------------------------------------------------------------------- correlations
def _with_regions(corr: pd.DataFrame, inputs: ReportInputs) -> pd.DataFrame:
    corr = corr.copy()
    keys = [_pick(corr, "metric"), _pick(corr, "sign"), _pick(corr, "cluster_id", "cluster")]
    corr["_region"] = ([_cluster_region(inputs, r[keys[0]], r[keys[1]], r[keys[2]])
                        for _, r in corr.iterrows()] if all(keys) else "")
    return corr


def _norm_key(value: Any) -> str:
    s = _sign(value)
    if s in ("+", "-"):
        return s
    try:
        return str(int(float(value)))
    except (TypeError, ValueError):
        return str(value).lower()


def _r_ci(r: str | None, lo: str | None, hi: str | None):
    def render(row: pd.Series) -> str:
        if r is None or pd.isna(row[r]):
            return ""
        text = f"{float(row[r]):.2f}"
        if lo and hi and pd.notna(row[lo]) and pd.notna(row[hi]):
            text += f" [{float(row[lo]):.2f}, {float(row[hi]):.2f}]"
        return text
    return render


def _ci(lo: str | None, hi: str | None):
    def render(row: pd.Series) -> str:
        if lo is None or hi is None or pd.isna(row[lo]) or pd.isna(row[hi]):
            return ""
        return f"[{float(row[lo]):.2f}, {float(row[hi]):.2f}]"
    return render


def _scatter_caption(inputs: ReportInputs, png: Path) -> str:
    m = re.match(r"(?P<metric>[^_]+)_(?P<sign>pos|neg)_cluster-(?P<cid>[^_]+)_", png.name)
    if m is None:
        return f"{escape(png.parent.name.upper())}: {escape(png.stem)}."
    sign = "+" if m["sign"] == "pos" else "-"
    region = _cluster_region(inputs, m["metric"], sign, m["cid"])
    head = (f"<b>{escape(_metric_label(m['metric']))}</b> {_sign_html(sign)} cluster "
            f"{escape(m['cid'])}" + (f" · {escape(region)}" if region else ""))
    return (f"{head}: cluster-mean metric against the score, both residualised on the "
            "covariates (in-sample, descriptive).")


def correlations_section(inputs: ReportInputs, numbering: Numbering) -> str:
    parts = []
    corr = inputs.correlations
    if corr is None:
        parts.append('<p class="empty">No correlation table (group/correlations.tsv) was '
                     "found.</p>")
    elif corr.empty:
        parts.append('<p class="empty">No cluster to follow up.</p>')
    else:
        corr = _with_regions(corr, inputs)
        q = _pick(corr, "q", "q_fdr", "p_fdr")
        cols = [Column("Metric", lambda r: escape(_metric_label(str(r[_pick(corr, "metric")])))
                       if _pick(corr, "metric") else ""),
                Column("Sign", lambda r: _sign_html(r[_pick(corr, "sign")])
                       if _pick(corr, "sign") else ""),
                Column("Cluster", _cell(_pick(corr, "cluster_id", "cluster"), 0)),
                Column("Region", lambda r: escape(str(r["_region"])) if pd.notna(r["_region"])
                       else ""),
                Column("Method", _cell(_pick(corr, "method"))),
                Column("n", _cell(_pick(corr, "n"), 0), numeric=True),
                Column("In-sample r [95% CI] (descriptive)",
                       _r_ci(_pick(corr, "r"), _pick(corr, "ci_low"), _pick(corr, "ci_high")),
                       numeric=True),
                Column("Bootstrap CI", _ci(_pick(corr, "boot_ci_low"), _pick(corr, "boot_ci_high")),
                       numeric=True),
                Column("p", _cell(_pick(corr, "p"), p=True), numeric=True),
                Column("q (FDR)", _cell(q, p=True), numeric=True,
                       css=lambda r: "sig" if q and pd.notna(r[q]) and float(r[q]) < 0.05 else ""),
                Column("LOSO r [95% CI]", _r_ci(_pick(corr, "loso_r"), _pick(corr, "loso_ci_low"),
                                                _pick(corr, "loso_ci_high")), numeric=True)]
        caption = ("Partial correlation of the cluster-mean metric with the score, controlling "
                   "for the covariates. The in-sample r is <b>descriptive</b>: the cluster was "
                   "selected with the same data, so it is inflated. The leave-one-subject-out "
                   "(LOSO) r, with the cluster redefined without each subject, is the "
                   "non-circular estimate.")
        parts.append(table_html(corr, cols, caption, numbering, caption_is_html=True))
    scatter = [p for m in list(inputs.metrics) + sorted(set(inputs.scatter) - set(inputs.metrics))
               for p in inputs.scatter.get(m, [])]
    if scatter:
        cells = []
        for png in scatter:
            cells.append(figure_html(figures.thumbnail_png(png, max_width=700),
                                     _scatter_caption(inputs, png), numbering,
                                     caption_is_html=True))
        parts.append(f'<div class="grid">{"".join(cells)}</div>')
    else:
        parts.append('<p class="empty">No scatter plots (group/&lt;metric&gt;/*_scatter*.png) '
                     "were found.</p>")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- decoding
def _top_features(table: pd.DataFrame, n: int = 5) -> str:
    label = _pick(table, "label", "top_words", "feature", "term", "topic")
    stat = _pick(table, "statistic", "z", "r", "log_odds_ratio")
    if label is None:
        return ""
    top = table.sort_values(stat, ascending=False) if stat else table
    return ", ".join(str(v) for v in top[label].head(n))


def _cluster_region(inputs: ReportInputs, metric: Any, sign: Any, cluster_id: Any) -> str:
    c = inputs.clusters
    if c is None or c.empty or not {"metric", "sign", "cluster_id", "region"} <= set(c.columns):
        return ""
    want = (str(metric).lower(), _norm_key(sign), _norm_key(cluster_id))
    for _, row in c.iterrows():
        if (row["metric"], _norm_key(row["sign"]), _norm_key(row["cluster_id"])) == want:
            return "" if pd.isna(row["region"]) else str(row["region"])
    return ""


def _decoding_panel(inputs: ReportInputs, d: DecodingResult) -> tuple[list[bytes], str]:
    """PNGs and caption sentence of one vocabulary of one cluster."""
    table = read_tsv(inputs, d.table_path)
    head = f"{_metric_label(d.metric)} {d.sign} cluster {d.cluster_id}, {d.vocabulary}"
    text = f"<b>{escape(d.vocabulary)}</b>: "
    if table is None or table.empty:
        return [], text + "empty decoding table."
    top = _top_features(table)
    text += f"top features {escape(top)}"
    q = _pick(table, "q")
    if q is not None:
        k = int((pd.to_numeric(table[q], errors="coerce") < 0.05).sum())
        text += f"; {k} feature{'s' if k != 1 else ''} with q &lt; 0.05"
    figs = [p for p in (d.bar, d.polar) if p is not None]
    if figs:
        return [figures.thumbnail_png(p, max_width=700) for p in figs], text + "."
    fig = figures.decoding_bar_figure(table, title=head)
    return [figures.figure_png(fig, dpi=FIGURE_DPI)], text + "."


def decoding_section(inputs: ReportInputs, numbering: Numbering) -> str:
    if not inputs.decoding:
        return ('<p class="empty">No decoding results (group/decoding/*_decoding.tsv) were '
                "found.</p>")
    order = {m: i for i, m in enumerate(inputs.metrics)}
    groups: dict[tuple[str, str, str], list[DecodingResult]] = {}
    for d in sorted(inputs.decoding, key=lambda d: (order.get(d.metric, len(order)), d.metric,
                                                   d.sign, _norm_key(d.cluster_id),
                                                   d.vocabulary)):
        groups.setdefault((d.metric, d.sign, d.cluster_id), []).append(d)
    parts = []
    for (metric, sign, cluster_id), results in groups.items():
        region = _cluster_region(inputs, metric, sign, cluster_id)
        head = f"{_metric_label(metric)} {_sign_html(sign)} cluster {escape(str(cluster_id))}"
        if region:
            head += f" · {escape(region)}"
        images, sentences = [], []
        for d in results:
            pngs, text = _decoding_panel(inputs, d)
            images += [(png, d.vocabulary) for png in pngs]
            sentences.append(text)
        parts.append(f"<h3>{head}</h3>")
        if not images:
            parts.append(f'<p class="empty">{" ".join(sentences)}</p>')
            continue
        n = numbering.next_figure()
        cells = "".join(f"<div>{_img_tag(png, f'{metric} {sign} {cluster_id} {v}')}</div>"
                        for png, v in images)
        parts.append(f'<figure class="fig" id="fig-{n}"><div class="grid">{cells}</div>'
                     f"<figcaption><b>Figure {n}.</b> Meta-analytic decoding of {head}. "
                     f"{' '.join(sentences)}</figcaption></figure>")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- planted
def _not_planted(row: pd.Series) -> bool:
    return str(row.get("region", "")).strip().lower() in ("(not planted)", "not planted")


def _planted_counts(t: pd.DataFrame) -> tuple[int, int, int]:
    """(found, planted, clusters outside the planted regions)."""
    false = t.apply(_not_planted, axis=1) if len(t) else pd.Series(dtype=bool)
    planted = t[~false]
    found = int(planted["found"].map(_is_true).sum()) if "found" in t else 0
    return found, len(planted), int(false.sum())


def planted_section(inputs: ReportInputs, numbering: Numbering) -> str:
    t = inputs.planted
    if t is None or t.empty:
        return ""
    found = _pick(t, "found")
    cols = [Column("Region", _text("region"))]
    if _pick(t, "hemisphere"):
        cols.append(Column("Hemisphere", _text(_pick(t, "hemisphere"))))
    cols += [Column("Metric", lambda r: escape(_metric_label(str(r[_pick(t, "metric")])))
                    if _pick(t, "metric") else ""),
             Column("Sign", lambda r: _sign_html(r[_pick(t, "sign")]) if _pick(t, "sign") else ""),
             Column("Planted r", _cell(_pick(t, "planted_r")), numeric=True),
             Column("Found", lambda r: "" if _not_planted(r) or not found else
                    ("yes" if _is_true(r[found]) else "no"),
                    css=lambda r: "" if _not_planted(r) or not found else
                    ("yes" if _is_true(r[found]) else "no")),
             Column("Found r (in-sample)", _cell(_pick(t, "found_r")), numeric=True)]
    if _pick(t, "loso_r"):
        cols.append(Column("LOSO r", _cell(_pick(t, "loso_r")), numeric=True))
    cols.append(Column("Peak distance (mm)", _cell(_pick(t, "peak_distance_mm"), 1),
                       numeric=True))
    if _pick(t, "fwe_p", "min_fwe_p"):
        cols.append(Column("FWE p", _cell(_pick(t, "fwe_p", "min_fwe_p"), p=True), numeric=True))
    k, n, n_false = _planted_counts(t)
    caption = (f"Simulation check: planted effects and what the analysis found ({k} of {n} "
               "recovered: a significant cluster of the same metric and sign with its peak "
               f"near the planted region; {n_false} significant cluster"
               f"{'s' if n_false != 1 else ''} outside the planted regions, listed as "
               "“(not planted)”).")
    return table_html(t, cols, caption, numbering,
                      row_class=lambda r: "flag" if _not_planted(r) or (
                          found and not _is_true(r[found])) else "")


def all_sections(inputs: ReportInputs, numbering: Numbering) -> list[tuple[str, str, str]]:
    """``(anchor, heading, html)`` of every section, in reading order."""
    builders = [("summary", "Summary", None), ("methods", "Methods", methods_section),
                ("cohort", "Cohort", cohort_section),
                ("qc", "Registration quality control", qc_section),
                ("maps", "Corrected statistical maps", maps_section),
                ("clusters", "Clusters", clusters_section),
                ("correlations", "Cluster–score correlations", correlations_section),
                ("decoding", "Meta-analytic decoding", decoding_section),
                ("planted", "Planted vs found", planted_section)]
    inputs.clusters = normalise_clusters(inputs)
    out = []
    for anchor, heading, build in builders:
        if build is None:
            continue
        html = build(inputs, numbering)
        if html:
            out.append((anchor, heading, html))
    # the summary is written last so that it lists inputs found unreadable on the way
    out.insert(0, ("summary", "Summary", summary_section(inputs, numbering)))
    return out
