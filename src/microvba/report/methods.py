"""A methods paragraph generated from the parameters a run actually used, with citations.

The paragraph is written from ``OUT/group/analysis.json`` (and the randomise sidecars merged
into it by the report), so what a reader sees is what was run. A clause whose parameter was
not recorded is left out rather than filled with a default. Keys are looked up under a few
spellings (``n_perm`` or ``n_permutations``; ``tfce.H`` or ``tfce_H``) so that the paragraph
survives small changes of the group stage's layout.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from html import escape
from typing import Any

from ..io import derivatives as D
from ..models import registry as _registry

#: in-text citation -> full reference (Vancouver-like, with DOI)
REFERENCES: dict[str, str] = {
    "Basser et al., 1994": (
        "Basser PJ, Mattiello J, LeBihan D. MR diffusion tensor spectroscopy and imaging. "
        "Biophys J. 1994;66(1):259-267. doi:10.1016/S0006-3495(94)80775-1"),
    "Zhang et al., 2012": (
        "Zhang H, Schneider T, Wheeler-Kingshott CA, Alexander DC. NODDI: practical in vivo "
        "neurite orientation dispersion and density imaging of the human brain. NeuroImage. "
        "2012;61(4):1000-1016. doi:10.1016/j.neuroimage.2012.03.072"),
    "Fonov et al., 2011": (
        "Fonov V, Evans AC, Botteron K, Almli CR, McKinstry RC, Collins DL. Unbiased average "
        "age-appropriate atlases for pediatric studies. NeuroImage. 2011;54(1):313-327. "
        "doi:10.1016/j.neuroimage.2010.07.033"),
    "Avants et al., 2008": (
        "Avants BB, Epstein CL, Grossman M, Gee JC. Symmetric diffeomorphic image registration "
        "with cross-correlation: evaluating automated labeling of elderly and neurodegenerative "
        "brain. Med Image Anal. 2008;12(1):26-41. doi:10.1016/j.media.2007.06.004"),
    "Freedman & Lane, 1983": (
        "Freedman D, Lane D. A nonstochastic interpretation of reported significance levels. "
        "J Bus Econ Stat. 1983;1(4):292-298. doi:10.1080/07350015.1983.10509354"),
    "Winkler et al., 2014": (
        "Winkler AM, Ridgway GR, Webster MA, Smith SM, Nichols TE. Permutation inference for the "
        "general linear model. NeuroImage. 2014;92:381-397. "
        "doi:10.1016/j.neuroimage.2014.01.060"),
    "Westfall & Young, 1993": (
        "Westfall PH, Young SS. Resampling-Based Multiple Testing: Examples and Methods for "
        "p-Value Adjustment. New York: Wiley; 1993."),
    "Winkler et al., 2016": (
        "Winkler AM, Webster MA, Brooks JC, Tracey I, Smith SM, Nichols TE. Non-parametric "
        "combination and related permutation tests for neuroimaging. Hum Brain Mapp. "
        "2016;37(4):1486-1511. doi:10.1002/hbm.23115"),
    "Smith & Nichols, 2009": (
        "Smith SM, Nichols TE. Threshold-free cluster enhancement: addressing problems of "
        "smoothing, threshold dependence and localisation in cluster inference. NeuroImage. "
        "2009;44(1):83-98. doi:10.1016/j.neuroimage.2008.03.061"),
    "Fan et al., 2016": (
        "Fan L, Li H, Zhuo J, et al. The Human Brainnetome Atlas: a new brain atlas based on "
        "connectional architecture. Cereb Cortex. 2016;26(8):3508-3526. "
        "doi:10.1093/cercor/bhw157"),
    "Yarkoni et al., 2011": (
        "Yarkoni T, Poldrack RA, Nichols TE, Van Essen DC, Wager TD. Large-scale automated "
        "synthesis of human functional neuroimaging data. Nat Methods. 2011;8(8):665-670. "
        "doi:10.1038/nmeth.1635"),
    "Dockès et al., 2020": (
        "Dockès J, Poldrack RA, Primet R, et al. NeuroQuery, comprehensive meta-analysis of "
        "human brain mapping. eLife. 2020;9:e53385. doi:10.7554/eLife.53385"),
}

_METRIC_NAMES = {"fa": "FA", "md": "MD", "rd": "RD", "ad": "AD", "icvf": "ICVF", "odi": "ODI",
                 "isovf": "ISOVF"}
# every other model of the registry (GQI, MAP-MRI, ...): its metric names and citations
#: (cited only when one of its metrics was analysed)
MODEL_REFERENCES: dict[str, str] = {}
for _spec in _registry.REGISTRY.values():
    for _m, _label in _spec.metric_names.items():
        _METRIC_NAMES.setdefault(_m, _label)
    for _key, _ref in _spec.citations.items():
        if _key not in REFERENCES:
            MODEL_REFERENCES[_key] = _ref
#: registry options quoted in the methods text, if recorded: (model, option) -> wording
_OPTION_WORDS = {("gqi", "sampling_length"): "diffusion sampling length {}",
                 ("mapmri", "radial_order"): "radial order {}",
                 ("mapmri", "laplacian"): "Laplacian regularisation ({})"}
_DTI = ("fa", "md", "rd", "ad")
_NODDI = ("icvf", "odi", "isovf")
_CORRECTION = {"tfce": "threshold-free cluster enhancement (TFCE)",
               "vox": "the voxel-wise maximum t", "voxel": "the voxel-wise maximum t",
               "clustere": "cluster extent", "cluster": "cluster extent",
               "clusterm": "cluster mass"}


def lookup(params: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    """First value found under any of ``names``; dotted names descend into sub-dicts.

    >>> lookup({"tfce": {"H": 2}}, "tfce_H", "tfce.H")
    2
    """
    for name in names:
        node: Any = params
        for part in name.split("."):
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            else:
                break
        else:
            if node is not None and node != "":
                return node
    return default


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return escape(str(value))


def _join(items: Iterable[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def _cite(*keys: str) -> str:
    return "(" + "; ".join(escape(k) for k in keys) + ")"


def _versions(params: Mapping[str, Any]) -> dict[str, str]:
    versions = lookup(params, "software_versions", "SoftwareVersions", "software", "versions",
                      default={})
    return {str(k): str(v) for k, v in versions.items()} if isinstance(versions, Mapping) else {}


def _v(versions: Mapping[str, str], name: str) -> str:
    return f" {escape(versions[name])}" if name in versions else ""


def _models_sentence(metrics: list[str], params: Mapping[str, Any],
                     versions: Mapping[str, str]) -> tuple[str, list[str]]:
    dti = [m for m in metrics if m in _DTI]
    noddi = [m for m in metrics if m in _NODDI]
    cites: list[str] = []
    parts = []
    if dti:
        parts.append(f"diffusion-tensor metrics ({_join(_METRIC_NAMES[m] for m in dti)}; "
                     f"{escape('Basser et al., 1994')})")
        cites.append("Basser et al., 1994")
    if noddi:
        extra = []
        dpar = lookup(params, "noddi.dpar", "models.noddi.dpar", "noddi_dpar", "dpar")
        if dpar is not None:
            extra.append(f"intrinsic parallel diffusivity {_fmt(dpar)} mm²/s")
        diso = lookup(params, "noddi.diso", "models.noddi.diso", "noddi_diso", "diso")
        if diso is not None:
            extra.append(f"isotropic diffusivity {_fmt(diso)} mm²/s")
        fixed = f", with {_join(extra)}" if extra else ""
        parts.append(f"NODDI metrics ({_join(_METRIC_NAMES[m] for m in noddi)}; "
                     f"{escape('Zhang et al., 2012')}{fixed})")
        cites.append("Zhang et al., 2012")
    for name, spec in _registry.REGISTRY.items():
        if name in ("tensor", "noddi"):
            continue
        chosen = [m for m in metrics if m in spec.metrics]
        if not chosen:
            continue
        keys = list(spec.citations)
        words = []
        for (model, option), wording in _OPTION_WORDS.items():
            value = lookup(params, f"model_options.{name}.{option}", f"{name}.{option}",
                           f"models.{name}.{option}") if model == name else None
            if value is not None:
                words.append(wording.format(_fmt(value)))
        settings = f", with {_join(words)}" if words else ""
        parts.append(f"{escape(spec.description)} ({_join(_METRIC_NAMES[m] for m in chosen)}; "
                     f"{_cite(*keys)[1:-1]}{settings})")
        cites.extend(keys)
    if not parts:
        return "", cites
    return (f"In each subject, {_join(parts)} were estimated voxel-wise with "
            f"microvba{_v(versions, 'microvba')} and DIPY{_v(versions, 'dipy')}. "), cites


def _space_sentence(params: Mapping[str, Any], versions: Mapping[str, str]) -> tuple[str, list[str]]:
    space = lookup(params, "space", "template", "registration.space")
    res = lookup(params, "resolution", "resolution_mm", "registration.resolution")
    fwhm = lookup(params, "fwhm", "smoothing_fwhm", "smoothing.fwhm")
    gm = lookup(params, "gm_threshold", "mask.gm_threshold", "gm_probability")
    n_vox = lookup(params, "n_voxels", "mask_voxels", "mask.n_voxels", "summary.n_voxels")
    isovf_max = lookup(params, "isovf_max", "mask.isovf_max")
    cites = ["Avants et al., 2008"]
    text = "Maps were normalised"
    if space is not None:
        text += f" to {_fmt(space)}"
        if "2009" in str(space):
            text += f" {_cite('Fonov et al., 2011')}"
            cites.append("Fonov et al., 2011")
    if res is not None:
        text += f" at {_fmt(res)} mm"
    text += (" with a single composite affine and symmetric diffeomorphic (SyN) transform per "
             f"subject {_cite('Avants et al., 2008')}, computed with ANTsPy{_v(versions, 'antspyx')}")
    text += ". "
    if fwhm is not None:
        if float(fwhm) > 0:
            text += (f"They were smoothed with a Gaussian kernel of {_fmt(fwhm)} mm FWHM "
                     "restricted to the analysis mask. ")
        else:
            text += "Maps were not smoothed. "
    if gm is not None or n_vox is not None:
        text += "The analysis was restricted to gray matter"
        if gm is not None:
            text += f" (template gray-matter probability ≥ {_fmt(gm)})"
        if isovf_max is not None:
            text += f", excluding voxels with ISOVF above {_fmt(isovf_max)}"
        if n_vox is not None:
            text += f", {_fmt(n_vox)} voxels"
        text += ". "
    return text, cites


def _inference_sentence(params: Mapping[str, Any], metrics: list[str],
                        n_subjects: Any) -> tuple[str, list[str]]:
    score = lookup(params, "score", "contrast", "design.score")
    covariates = _as_list(lookup(params, "covariates", "design.covariates"))
    n_perm = lookup(params, "n_perm", "n_permutations", "permutations", "randomise.n_perm")
    seed = lookup(params, "seed", "random_state", "randomise.seed")
    alpha = lookup(params, "alpha", "fwe_alpha", default=0.05)
    correction = str(lookup(params, "correction", "inference", "statistic", default="tfce"))
    method = str(lookup(params, "permutation_method", "permutation", "method",
                        default="freedman_lane")).lower()
    h = lookup(params, "tfce.H", "tfce_H", "tfce.h", "tfce_h", "H")
    e = lookup(params, "tfce.E", "tfce_E", "tfce.e", "tfce_e", "E")
    conn = lookup(params, "tfce.connectivity", "tfce_connectivity", "connectivity")
    family = lookup(params, "correct_across", "correct_across_metrics", "family", "corrcon",
                    "fwe_family")
    cites: list[str] = []
    what = f"its association with {_fmt(score)}" if score is not None else "its association with the score"
    n = f" across {_fmt(n_subjects)} subjects" if n_subjects is not None else ""
    count = f" ({len(metrics)} in total)" if metrics else ""
    text = (f"For each metric{count}, {what}{n} was tested voxel-wise with a "
            "general linear model (score, covariates and an intercept; t contrasts in both "
            "directions)")
    if covariates:
        text += f" controlling for {_join(_fmt(c) for c in covariates)}"
    text += ". "
    text += "Inference used "
    text += f"{_fmt(n_perm)} permutations" if n_perm is not None else "permutations"
    if seed is not None:
        text += f" (seed {_fmt(seed)})"
    if "freedman" in method or covariates:
        text += (" with the Freedman-Lane procedure, which permutes the residuals of the "
                 "covariates-only model "
                 f"{_cite('Freedman & Lane, 1983', 'Winkler et al., 2014')},")
        cites += ["Freedman & Lane, 1983", "Winkler et al., 2014"]
    else:
        text += f" {_cite('Winkler et al., 2014')}"
        cites.append("Winkler et al., 2014")
    kind = _CORRECTION.get(correction.lower(), escape(correction))
    text += " and the maximum-statistic null distribution of "
    if correction.lower() == "tfce":
        tf = [f"{label} = {_fmt(v)}" for label, v in (("H", h), ("E", e)) if v is not None]
        if conn is not None:
            tf.append(f"{_fmt(conn)}-connectivity")
        text += ("threshold-free cluster enhancement (TFCE"
                 + (f"; {', '.join(tf)}" if tf else "")
                 + f"; {escape('Smith & Nichols, 2009')})")
        cites.append("Smith & Nichols, 2009")
    else:
        text += kind
    text += (f"; maps were thresholded at family-wise error corrected p &lt; {_fmt(alpha)}")
    if family is not None:
        from ..stats.family import family_sentence

        sentence = family_sentence(family, len(metrics) or None, float(alpha),
                                   lookup(params, D.FAMILY_METHOD_KEY),
                                   statistics=lookup(params, D.FAMILY_STATISTICS_KEY))
        text += "; " + escape(sentence)
        if "min-p" in sentence:
            text += f" {_cite('Westfall & Young, 1993', 'Winkler et al., 2016')}"
            cites += ["Westfall & Young, 1993", "Winkler et al., 2016"]
    npc = _as_list(lookup(params, "npc", default=[]))
    if npc:
        text += (". A non-parametric combination across metrics "
                 f"({_join(escape(str(f).capitalize()) for f in npc)} combining functions on "
                 "two-sided partial t tests, the combined statistic as a z score with TFCE, "
                 "assessed with the same permutations) gave a map of where microstructure as "
                 f"a whole tracks the score {_cite('Winkler et al., 2016')}")
        if "Winkler et al., 2016" not in cites:
            cites.append("Winkler et al., 2016")
    text += ". "
    return text, cites


def _followup_sentence(params: Mapping[str, Any]) -> tuple[str, list[str]]:
    methods = _as_list(lookup(params, "correlation.method", "correlation_method",
                              "correlation.methods", default="pearson"))
    n_boot = lookup(params, "correlation.n_boot", "n_boot")
    bootstrap = lookup(params, "correlation.bootstrap", "bootstrap")
    atlases = _as_list(lookup(params, "atlases", "labels.atlases",
                              default=["Brainnetome", "Harvard-Oxford", "AAL"]))
    cites = ["Fan et al., 2016"]
    text = (f"Clusters were labelled with the {_join(_fmt(a) for a in atlases)} atlases "
            f"{_cite('Fan et al., 2016')}. The unsmoothed cluster-mean metric was related to the "
            f"score by {_join(escape(m.capitalize()) for m in methods)} partial correlation "
            "controlling for the covariates, with 95% confidence intervals from Fisher's z")
    if n_boot is not None:
        text += f" and from {_fmt(n_boot)} bootstrap resamples"
    elif bootstrap:
        text += " and from bootstrap resamples"
    text += ("; because the clusters were selected on the same data, the in-sample r is "
             "descriptive and a leave-one-subject-out estimate (the cluster redefined without "
             "each subject) is given beside it. ")
    return text, cites


def _decoding_sentence(params: Mapping[str, Any]) -> tuple[str, list[str]]:
    vocabs = [v.lower() for v in _as_list(lookup(params, "decoding.vocabularies",
                                                 "vocabularies", "decoding.vocabulary"))]
    if params.get("decode") is False or (not vocabs and lookup(params, "decoding") is None):
        return "", []
    cites = []
    bases = []
    if not vocabs or any("lda" in v or "neurosynth" in v or "topic" in v for v in vocabs):
        bases.append(f"Neurosynth v0.7 LDA-50 topics {_cite('Yarkoni et al., 2011')}")
        cites.append("Yarkoni et al., 2011")
    if not vocabs or any("term" in v or "neuroquery" in v for v in vocabs):
        bases.append(f"NeuroQuery terms {_cite('Dockès et al., 2020')}")
        cites.append("Dockès et al., 2020")
    radius = lookup(params, "decoding.kernel_radius", "decoding.radius", "kernel_radius")
    text = f"Each cluster was decoded against {_join(bases)}"
    if radius is not None:
        text += f" (MKDA spheres of {_fmt(radius)} mm)"
    text += " by region-of-interest association tests with FDR correction across features. "
    return text, cites


def methods_paragraph(analysis: Mapping[str, Any]) -> str:
    """HTML methods paragraph (``<p>`` plus a reference list) from a run's parameters.

    Parameters
    ----------
    analysis
        Parameters of the group run (``OUT/group/analysis.json``): ``score``,
        ``covariates``, ``metrics``, ``n_perm``, ``fwhm``, ``tfce`` (``H``, ``E``,
        ``connectivity``), ``alpha``, ``space``, ``software_versions``, ... Missing
        parameters drop their clause.

    Returns
    -------
    str
        ``<p class="methods">...</p>`` followed by ``<ol class="references">``; all values
        are HTML-escaped.
    """
    versions = _versions(analysis)
    metrics = [str(m).lower() for m in _as_list(lookup(analysis, "metrics", default=[]))]
    n_subjects = lookup(analysis, "n_subjects", "summary.n_subjects", "n", "n_participants")
    sentences = []
    cited: list[str] = []
    for text, cites in (_models_sentence(metrics, analysis, versions),
                        _space_sentence(analysis, versions),
                        _inference_sentence(analysis, metrics, n_subjects),
                        _followup_sentence(analysis),
                        _decoding_sentence(analysis)):
        sentences.append(text)
        cited += [c for c in cites if c not in cited]
    if versions:
        listed = [f"{escape(k)} {escape(v)}" for k, v in versions.items() if k != "platform"]
        sentences.append(f"Software: {', '.join(listed)}.")
    refs = "".join(f"<li>{escape(REFERENCES.get(c) or MODEL_REFERENCES[c])}</li>"
                   for c in cited)
    return (f'<p class="methods">{"".join(sentences).strip()}</p>\n'
            f'<ol class="references">{refs}</ol>')
