"""The generated methods paragraph: parameters, citations, escaping, omissions."""

from __future__ import annotations

import re

from microvba.report.methods import REFERENCES, lookup, methods_paragraph

ANALYSIS = {
    "score": "resilience", "covariates": ["age", "sex", "education", "depression"],
    "metrics": ["fa", "md", "rd", "ad", "icvf", "odi", "isovf"], "n_perm": 5000, "seed": 7,
    "fwhm": 6, "alpha": 0.05, "correction": "tfce",
    "tfce": {"H": 2.0, "E": 0.5, "connectivity": 26}, "space": "MNI152NLin2009cSym",
    "resolution": 2, "gm_threshold": 0.3, "n_voxels": 166012, "n_subjects": 64,
    "correlation": {"method": "spearman", "n_boot": 5000},
    "decoding": {"vocabularies": ["lda50", "terms"], "kernel_radius": 10},
    "correct_across": "all", "family_method": "minp", "npc": ["fisher"],
    "software_versions": {"microvba": "0.1.0", "antspyx": "0.5.4", "dipy": "1.12.0",
                          "platform": "Linux-x"},
}


def test_paragraph_reports_the_parameters():
    html = methods_paragraph(ANALYSIS)
    for text in ("5000 permutations", "seed 7", "H = 2", "E = 0.5", "26-connectivity",
                 "6 mm FWHM", "MNI152NLin2009cSym", "at 2 mm", "≥ 0.3", "166012 voxels",
                 "across 64 subjects", "controlling for age, sex, education and depression",
                 "p &lt; 0.05", "across all 7 metrics and both directions (14 maps)",
                 "Westfall-Young min-p", "Fisher combining", "Spearman partial",
                 "5000 bootstrap resamples", "leave-one-subject-out", "MKDA spheres of 10 mm",
                 "ANTsPy 0.5.4", "DIPY 1.12.0", "microvba 0.1.0"):
        assert text in html, text
    assert "Linux-x" not in html  # platform is not a software version


def test_paragraph_cites_every_method_once():
    html = methods_paragraph(ANALYSIS)
    refs = re.findall(r"<li>(.*?)</li>", html)
    assert len(refs) == len(set(refs)) == len(REFERENCES)
    for cite in ("Zhang et al., 2012", "Basser et al., 1994", "Avants et al., 2008",
                 "Smith &amp; Nichols, 2009", "Winkler et al., 2014", "Freedman &amp; Lane, 1983",
                 "Yarkoni et al., 2011", "Dockès et al., 2020", "Fan et al., 2016"):
        assert cite in html, cite
    assert "doi:10.1016/j.neuroimage.2012.03.072" in html  # NODDI


def test_paragraph_states_the_family():
    """Which family was corrected; for per-map FWE, what the family-wise rate is."""
    none = methods_paragraph({**ANALYSIS, "correct_across": "none", "npc": []})
    assert "within each map only" in none and "14 maps" in none
    assert "up to 0.51 for independent maps" in none and "Westfall" not in none
    old = methods_paragraph({**ANALYSIS, "correct_across": True, "family_method": None})
    assert "maximum statistic over the family" in old  # analyses written before min-p
    signs = methods_paragraph({**ANALYSIS, "correct_across": "signs"})
    assert "across both directions, each metric separately" in signs


def test_missing_parameters_drop_their_clause():
    html = methods_paragraph({"score": "resilience", "metrics": ["fa"]})
    assert "NODDI" not in html and "Zhang et al." not in html
    assert "FWHM" not in html and "seed" not in html and "bootstrap" not in html
    assert "Neurosynth" not in html  # no decoding recorded
    assert "Basser et al., 1994" in html
    html = methods_paragraph({"fwhm": 0, "correction": "vox", "metrics": ["odi"]})
    assert "not smoothed" in html and "TFCE" not in html and "voxel-wise maximum t" in html


def test_paragraph_escapes_values():
    html = methods_paragraph({"score": "<b>resilience</b>", "covariates": "age,<sex>",
                              "metrics": ["fa"]})
    assert "&lt;b&gt;resilience&lt;/b&gt;" in html and "&lt;sex&gt;" in html
    assert "<b>" not in html and "<sex>" not in html


def test_lookup_aliases_and_nesting():
    assert lookup({"tfce": {"H": 2}}, "tfce_H", "tfce.H") == 2
    assert lookup({"tfce_H": 3}, "tfce.H", "tfce_H") == 3
    assert lookup({"x": None}, "x", default=1) == 1
    assert lookup({}, "a.b", default="d") == "d"
