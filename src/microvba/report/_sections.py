"""The sections of the report, each built from :class:`ReportInputs` into an HTML fragment."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import pandas as pd

from ..io import derivatives as D
from . import figures
from ._common import (
    _KIND_NAMES,
    FIGURE_DPI,
    _alpha,
    _cell,
    _img_tag,
    _is_true,
    _metric_label,
    _n_perm,
    _sign_html,
)
from ._inputs import ReportInputs
from ._results import (
    FWE_P,
    _planted_counts,
    clusters_section,
    correlations_section,
    decoding_section,
    maps_section,
    normalise_clusters,
    planted_section,
    planted_sentence,
)
from .html import (
    Column,
    Numbering,
    figure_html,
    format_number,
    format_p,
    notice_html,
    table_html,
)
from .methods import lookup, methods_paragraph


# ----------------------------------------------------------------------------- summary
def _findings(inputs: ReportInputs) -> list[str]:
    clusters = inputs.clusters
    if clusters is None:
        return []
    if clusters.empty:
        return ["No cluster survived family-wise error correction."]
    items = []
    for (metric, sgn), rows in clusters.groupby([clusters[D.METRIC], clusters[D.SIGN]],
                                                sort=False):
        best = rows.sort_values(D.N_VOXELS, ascending=False).iloc[0]
        text = (f"<b>{escape(_metric_label(str(metric)))}</b> {_sign_html(sgn)}: "
                f"{len(rows)} cluster{'s' if len(rows) != 1 else ''}")
        details = [f"largest {format_number(best[D.N_VOXELS], 0)} voxels"]
        if D.REGION in rows and pd.notna(best[D.REGION]):
            details.append(f"in {escape(str(best[D.REGION]))}")
        if FWE_P in rows and pd.notna(best[FWE_P]):
            details.append(f"FWE p = {format_p(float(best[FWE_P]))}")
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
    if inputs.qc is not None and D.OUTLIER in inputs.qc:
        n_out = int(inputs.qc[D.OUTLIER].map(_is_true).sum())
        excluded = a.get(D.ANALYSIS_EXTRA_KEYS[2]) or []
        text = f"{n_out} of {len(inputs.qc)}"
        if excluded:
            text += f" (excluded: {escape(', '.join(map(str, excluded)))})"
        rows.append(("Registration outliers", text))
    for label, key in (("Score", "score"), ("Covariates", "covariates"), ("Space", "space")):
        value = a.get(key)
        if value is not None:
            text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            rows.append((label, escape(text)))
    metrics = [_metric_label(m) for m in inputs.metrics] or [
        _metric_label(str(m)) for m in a.get("metrics", [])]
    if metrics:
        rows.append(("Metrics", escape(", ".join(metrics))))
    n_perm = _n_perm(inputs, next(iter(inputs.metrics.values()), None))
    correction = "tfce"  # the group stage's correction (randomise folders: their own kind)
    inference = f"{escape(_KIND_NAMES[correction])}, FWE p &lt; {_alpha(inputs):g}"
    if n_perm is not None:
        inference += f", {escape(str(n_perm))} permutations"
    if a or inputs.metrics:
        rows.append(("Inference", inference))
    family = a.get("correct_across")
    if family is not None:
        from ..stats.family import family_sentence

        rows.append(("Family corrected", escape(family_sentence(
            family, len(metrics) or None, _alpha(inputs), a.get(D.ANALYSIS_EXTRA_KEYS[0]),
            statistics=a.get(D.FAMILY_STATISTICS_KEY)))))
    body = '<dl class="summary">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"
    findings = _findings(inputs)
    if findings:
        body += "<h3>Findings</h3><ul class=\"findings\">" + "".join(
            f"<li>{f}</li>" for f in findings) + "</ul>"
    if inputs.planted is not None and not inputs.planted.empty:
        k, n, n_false, n_side = _planted_counts(inputs.planted)
        if n:
            body += (f"<p>Simulation check: <b>{k} of {n}</b> planted effects recovered, "
                     f"{planted_sentence(n_false, n_side)} "
                     "(see <a href=\"#planted\">planted vs found</a>).</p>")
    body += notice_html("Missing inputs (the sections that need them are left out or shortened):",
                        inputs.missing)
    body += notice_html("Unreadable inputs:", inputs.unreadable)
    return body


# ----------------------------------------------------------------------------- methods
def methods_section(inputs: ReportInputs, numbering: Numbering) -> str:
    if not inputs.analysis and not inputs.metrics:
        return (f'<p class="empty">The parameters of the group run (group/{D.ANALYSIS_JSON}) were '
                "not found, so no methods paragraph can be written.</p>")
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
    corr = inputs.correlations
    if corr is not None and not corr.empty and not lookup(params, "correlation.method",
                                                          "correlation_method"):
        params["correlation_method"] = list(dict.fromkeys(corr[D.METHOD].astype(str)))
        if corr[D.BOOT_CI_LOW].notna().any():
            params.setdefault("bootstrap", True)
    if "decoding" not in params and inputs.decoding:
        params["decoding"] = {"vocabularies": sorted({d.vocabulary for d in inputs.decoding})}
    return methods_paragraph(params)


# ----------------------------------------------------------------------------- cohort
def cohort_section(inputs: ReportInputs, numbering: Numbering) -> str:
    table = inputs.participants
    if table is None:
        return '<p class="empty">No cohort table (group/participants.tsv) was found.</p>'
    # a second participant_id column (pandas renames it participant_id.1) is not a variable
    table = table[[c for c in table.columns if not str(c).startswith(D.PARTICIPANT_ID)]]
    if table.empty:
        return ('<p class="empty">The cohort table (group/participants.tsv) lists no '
                "subject.</p>")
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
    return (f'<figure class="fig" id="fig-{n}"><div class="grid mosaics">{"".join(cells)}</div>'
            f"<figcaption><b>Figure {n}.</b> {escape(caption)}</figcaption></figure>")


def qc_section(inputs: ReportInputs, numbering: Numbering) -> str:
    qc = inputs.qc
    parts = []
    outliers: list[str] = []
    if qc is None:
        parts.append(f'<p class="empty">No registration QC table (group/{D.QC_TSV}) was '
                     "found.</p>")
    else:
        qc = qc.copy()
        flag = qc[D.OUTLIER].map(_is_true) if D.OUTLIER in qc else pd.Series(False, index=qc.index)
        if D.PARTICIPANT_ID in qc:
            outliers = [str(s) for s in qc.loc[flag, D.PARTICIPANT_ID]]
        parts.append(figure_html(
            figures.figure_png(figures.qc_similarity_figure(qc), dpi=FIGURE_DPI),
            "Similarity of each subject's normalised image with the template; registration "
            "outliers in red.", numbering))
        measures = [c for c in qc.columns if c not in (D.PARTICIPANT_ID, D.OUTLIER)]
        cols = [Column("Subject", _cell(D.PARTICIPANT_ID))] + [
            Column(c, _cell(c, 3), numeric=pd.api.types.is_numeric_dtype(qc[c]))
            for c in measures] + [Column("Outlier", lambda r: "yes" if _is_true(r.get(D.OUTLIER))
                                         else "", css=lambda r: "no" if _is_true(
                                             r.get(D.OUTLIER)) else "")]
        caption = (f"Registration QC: {len(qc)} subjects, {int(flag.sum())} flagged as "
                   "outliers (highlighted).")
        long = len(qc) > 20
        if long and flag.any():
            parts.append(table_html(qc[flag], cols, "Subjects flagged as registration outliers.",
                                    numbering, row_class=lambda r: "flag"))
        table = table_html(qc, cols, caption, numbering,
                           row_class=lambda r: "flag" if _is_true(r.get(D.OUTLIER)) else "")
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
                                 "gray-matter outline.", 640)
            parts.append(html if len(others) <= 6 else
                         f"<details><summary>QC mosaics of {len(others)} subjects</summary>"
                         f"{html}</details>")
    else:
        parts.append('<p class="empty">No registration QC mosaics '
                     f"(sub-*/figures/{D.qc_mosaic_name('sub-*')}) were found.</p>")
    return "\n".join(parts)


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
