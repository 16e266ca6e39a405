"""The HTML report: every section and figure present, self-contained, escaped, defensive."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from synthetic_output import PLANTED, make_output_folder

from microvba._validation import InputError
from microvba.report import build_report

SECTIONS = ("summary", "methods", "cohort", "qc", "maps", "clusters", "correlations",
            "decoding", "planted")


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'<img src="data:image/png;base64,([^"]+)"',
                                                    html)]


def test_report_has_every_section(built_report):
    path, _ = built_report
    assert path.name == "report.html" and path.parent.name == "group"
    html = path.read_text(encoding="utf-8")
    for anchor in SECTIONS:
        assert f'<section id="{anchor}">' in html, anchor
    assert html.startswith("<!DOCTYPE html>")
    assert "@media print" in html


def test_report_figures_are_embedded_pngs(built_report, report_out):
    html = built_report[0].read_text(encoding="utf-8")
    images = _images(html)
    # every <img> is an embedded PNG that decodes
    assert len(images) == html.count("<img ")
    for png in images:
        with Image.open(io.BytesIO(png)) as im:
            im.verify()
    n_sig_metrics = len({m for m, *_ in PLANTED})  # ad, fa, icvf, odi
    n_clusters = len(PLANTED)
    expected = (1  # QC similarity strip plot
                + 12  # QC mosaics (one per subject)
                + n_sig_metrics  # corrected maps, one figure per metric with a result
                + n_clusters  # scatter plots
                + 2  # decoding summary heatmaps, regions x top features (lda50, terms)
                + n_clusters * 3)  # decoding: bar + polar PNGs (lda50) + drawn bar (terms)
    assert len(images) == expected
    # one corrected-map figure per significant metric, and a statement for the others
    for metric in ("FA", "AD", "ICVF", "ODI"):
        assert f"<b>{metric}</b>, TFCE: t values" in html
    for metric in ("MD", "RD", "ISOVF"):
        assert f"{metric}: no voxel survived FWE correction" in html


def test_report_is_self_contained(built_report):
    html = built_report[0].read_text(encoding="utf-8")
    assert "<script" not in html.lower()
    assert "<link" not in html.lower()
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "url(" not in html


def test_report_escapes_text(built_report):
    html = built_report[0].read_text(encoding="utf-8")
    assert "<title>Synthetic &lt;cohort&gt; &amp; report</title>" in html
    assert "microvba demo &lt;synthetic&gt;" in html  # dataset name
    assert "Cingulate &lt;Gyrus&gt;" in html  # atlas label
    assert "emotion &lt;0&gt; &amp; memory" in html  # decoded feature
    body = re.sub(r'src="data:[^"]+"', "", html)
    for raw in ("<synthetic>", "<Gyrus>", "<0>", "<cohort>"):
        assert raw not in body


def test_report_tables(built_report, report_out):
    html = built_report[0].read_text(encoding="utf-8")
    # cohort: score first, descriptives and counts
    cohort = html.split('<section id="cohort">')[1].split("</section>")[0]
    assert "<b>resilience</b>" in cohort and "Mean (SD)" in cohort and "F: " in cohort
    # QC: the outlier row is highlighted
    assert re.search(r'<tr class="flag"><td class="">sub-12</td>', html)
    # clusters with Brainnetome labels and MNI peaks
    clusters = html.split('<section id="clusters">')[1].split("</section>")[0]
    for *_, label, _r in PLANTED:
        assert label in clusters
    assert "-4, -10, 38" in clusters
    # correlations: in-sample r labelled descriptive, LOSO r beside it
    corr = html.split('<section id="correlations">')[1].split("</section>")[0]
    assert "In-sample r [95% CI] (descriptive)" in corr and "LOSO r [95% CI]" in corr
    # in-sample p/q are circular: labelled descriptive, never flagged; the LOSO p is the test
    assert "In-sample p (descriptive)" in corr and "LOSO p" in corr
    assert ">q (FDR)</th>" not in corr and ">In-sample q (FDR)</th>" in corr
    assert "0.48 [0.23, 0.73]" in corr  # LOSO r of the A23c cluster
    # FWE p of each cluster, read from its label image and the TFCE corrp map (0.99)
    assert clusters.count('<td class="num">0.010</td>') == len(PLANTED)
    # planted vs found, with the recovery count in the summary
    assert "<b>4 of 5</b> planted effects recovered, 1 cluster outside" in html
    planted = html.split('<section id="planted">')[1].split("</section>")[0]
    assert planted.count("<tr") == 1 + len(PLANTED) + 1  # header, planted, "(not planted)"
    assert planted.count('<tr class="flag">') == 2  # the missed effect and the false cluster


def test_methods_uses_the_run_parameters(built_report):
    html = built_report[0].read_text(encoding="utf-8")
    methods = html.split('<section id="methods">')[1].split("</section>")[0]
    for text in ("500 permutations", "seed 42", "H = 2", "E = 0.5", "6-connectivity",
                 "6 mm FWHM", "4321 voxels", "across 12 subjects", "Freedman &amp; Lane, 1983",
                 "Zhang et al., 2012", "Fan et al., 2016", "antspyx 0.5.4", "NeuroQuery"):
        assert text in methods, text


def test_atomic_write_leaves_no_temporaries(built_report, report_out):
    assert not list(report_out.rglob(".tmp-*"))


@pytest.mark.parametrize(("table", "column"), [
    ("clusters.tsv", "n_voxels"), ("clusters.tsv", "sign"), ("correlations.tsv", "q_fdr"),
    ("qc.tsv", "outlier"), ("planted_vs_found.tsv", "found")])
def test_renamed_column_is_an_error_naming_the_file(tmp_path, table, column):
    out = make_output_folder(tmp_path / "deriv", n_subjects=4, metrics=("ad",), n_mosaics=1)
    path = out / "group" / table
    pd.read_table(path).rename(columns={column: column + "_old"}).to_csv(
        path, sep="\t", index=False)
    with pytest.raises(InputError, match=rf"{column}(.|\n)*{table}|{table}(.|\n)*{column}"):
        build_report(out)
    assert not (out / "group" / "report.html").exists()


@pytest.mark.parametrize("sign", ["pos", "positive", "1", "−"])
def test_other_sign_spellings_are_an_error(tmp_path, sign):
    out = make_output_folder(tmp_path / "deriv", n_subjects=4, metrics=("ad",), n_mosaics=1)
    path = out / "group" / "clusters.tsv"
    t = pd.read_table(path, dtype={"sign": str})
    t["sign"] = sign
    t.to_csv(path, sep="\t", index=False)
    with pytest.raises(InputError, match="sign .* is not one of"):
        build_report(out)


def test_a_new_atlas_shows_up_as_a_column(tmp_path):
    out = make_output_folder(tmp_path / "deriv", n_subjects=4, metrics=("ad",), n_mosaics=1,
                             atlases=("brainnetome", "harvard_oxford", "aal", "julich_brain"))
    html = build_report(out).read_text(encoding="utf-8")
    clusters = html.split('<section id="clusters">')[1].split("</section>")[0]
    assert "<th class=\"\">julich brain</th>" in clusters
    assert "julich_brain label" in clusters
    for header in ("Brainnetome region", "Brainnetome (% of cluster)", "Harvard-Oxford", "AAL"):
        assert f'<th class="">{header}</th>' in clusters, header
    # and without atlases (the group stage without Brainnetome data) no label column
    out = make_output_folder(tmp_path / "bare", n_subjects=4, metrics=("ad",), n_mosaics=1,
                             atlases=("brainnetome",))
    clusters = build_report(out).read_text(encoding="utf-8").split(
        '<section id="clusters">')[1].split("</section>")[0]
    assert "Harvard-Oxford" not in clusters and "Brainnetome region" in clusters


def test_report_with_missing_pieces(tmp_path):
    out = tmp_path / "deriv"
    (out / "group").mkdir(parents=True)
    (out / "group" / "analysis.json").write_text(json.dumps(
        {"score": "resilience", "metrics": ["fa", "md"], "n_perm": 100}))
    html = build_report(out).read_text(encoding="utf-8")
    assert "Missing inputs" in html
    for missing in ("dataset_description.json", "group/participants.tsv", "group/qc.tsv",
                    "group/clusters.tsv", "group/fa/", "group/md/"):
        assert missing in html, missing
    assert "No cohort table" in html and "No statistical maps" in html
    assert "For each metric (2 in total)" in html  # methods from analysis.json alone
    assert "<img" not in html
    assert 'id="planted"' not in html  # demo-only section left out


def test_report_escapes_analysis_values(tmp_path):
    out = make_output_folder(tmp_path / "deriv", n_subjects=4, metrics=("fa",),
                             with_planted=False)
    analysis = json.loads((out / "group" / "analysis.json").read_text())
    analysis.update(covariates=["<i>odd</i>"], score="<b>score</b>", space="<x>")
    (out / "group" / "analysis.json").write_text(json.dumps(analysis))
    html = build_report(out).read_text(encoding="utf-8")
    for raw in ("<i>odd</i>", "<b>score</b>", "<x>"):
        assert raw not in html
    assert "&lt;i&gt;odd&lt;/i&gt;" in html and "&lt;b&gt;score&lt;/b&gt;" in html


def test_report_of_a_run_that_stopped_early(tmp_path):
    # what a group run that excluded every subject leaves: QC, an empty cohort, no analysis
    out = make_output_folder(tmp_path / "deriv", n_subjects=3, metrics=(), with_planted=False)
    for name in ("analysis.json", "clusters.tsv", "correlations.tsv"):
        (out / "group" / name).unlink()
    (out / "group" / "participants.tsv").write_text(
        "participant_id\tparticipant_id.1\tresilience\tage\n")
    html = build_report(out).read_text(encoding="utf-8")
    assert "no methods paragraph can be written" in html
    assert "lists no subject" in html and "participant_id.1" not in html
    assert '<tr class="flag"><td class="">sub-03</td>' in html  # QC still shown


def test_report_lists_unreadable_inputs(tmp_path):
    out = make_output_folder(tmp_path / "deriv", n_subjects=4, metrics=("fa",),
                             with_planted=False)
    (out / "group" / "qc.tsv").write_bytes(b"participant_id\tcorr\n\xff\xfe\x00bad\n")
    (out / "group" / "analysis.json").write_text("{not json")
    html = build_report(out).read_text(encoding="utf-8")
    assert "Unreadable inputs" in html
    assert "group/qc.tsv" in html and "group/analysis.json" in html
    assert 'id="planted"' not in html


def test_report_without_clusters(tmp_path):
    out = make_output_folder(tmp_path / "deriv", n_subjects=4, metrics=("md",),
                             with_planted=False)
    for name in ("clusters.tsv", "correlations.tsv"):  # as the group stage writes "no rows"
        (out / "group" / name).write_text(pd.DataFrame().to_csv(sep="\t", index=False))
    html = build_report(out).read_text(encoding="utf-8")
    assert "Unreadable inputs" not in html
    assert html.count("No cluster survived family-wise error correction.") == 2
    assert "No cluster to follow up." in html


def test_report_falls_back_to_voxel_correction(tmp_path):
    out = make_output_folder(tmp_path / "deriv", n_subjects=4, metrics=("fa",),
                             with_planted=False)
    for p in (out / "group" / "fa").glob("*_tfce_corrp_*"):
        p.unlink()
    html = build_report(out).read_text(encoding="utf-8")
    assert "<b>FA</b>, voxel-wise max t: t values" in html


def test_missing_output_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist or is not a folder"):
        build_report(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="does not exist or is not a folder"):
        build_report(Path(tmp_path / "file"))


def test_build_time(built_report):
    # 7 metrics, 4 with significant maps: well under the 20 s budget on an idle machine
    _, seconds = built_report
    assert seconds < 60
