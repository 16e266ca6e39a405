"""The output contract: every derivative name, table column and ``analysis.json`` key.

One module owns the spelling of what microvba writes; every stage writes through it and the
report reads through it, so a name cannot drift between a writer and its reader (a test
greps ``src/`` for these fragments outside this module). Names and columns are those of
microvba 0.1 (users' scripts read them); ``tests/io/test_contract.py`` pins them.

Layout of an output folder ``OUT`` (``<p>`` = ``sub-<label>[_ses-<label>]``)::

    OUT/dataset_description.json
    OUT/sub-<label>[/ses-<label>]/dwi/
        <p>_space-orig_model-<model>_param-<param>_dwimap.nii.gz (+ .json)   native maps
        <p>_space-orig_desc-brain_mask.nii.gz, <p>_space-orig_desc-meanb0_dwiref.nii.gz
        <p>_space-<MNI>_model-<model>_param-<param>_dwimap.nii.gz (+ .json) normalised maps
        <p>_space-<MNI>_desc-brain_mask.nii.gz, <p>_space-<MNI>_desc-registration_qc.json
        <p>_from-dwi_to-<MNI>_{mode-image_xfm.json,desc-warp_xfm.nii.gz,desc-affine_xfm.mat}
    OUT/sub-<label>/figures/<p>_space-<MNI>_desc-qc_dwimap.png             registration QC
    OUT/group/analysis.json, participants.tsv, qc.tsv, clusters.tsv, correlations.tsv,
              planted_vs_found.tsv (simulations), report.html,
              space-<MNI>_desc-gm_mask.nii.gz
    OUT/group/<metric>/<metric>_<map>.nii.gz, <metric>_randomise.json   randomise names
    OUT/group/<metric>/<metric>_<pos|neg>_{clusters.tsv,cluster-labels.tsv,
              cluster-means.tsv,correlations.tsv,clusters.nii.gz,regions.json,
              cluster-<k>_scatter.png}
    OUT/group/npc/npc-<function>_<map>.nii.gz, npc_clusters.tsv
    OUT/group/decoding/<metric>_<pos|neg>_cluster-<k>_vocab-<v>_{decoding.tsv,
              mapdecoding.tsv,bar.png,polar.png}, <metric>_<pos|neg>_decoding.json

Map names follow the BIDS diffusion-derivatives proposal (BEP016):
``sub-<label>[_ses-<label>]_space-<space>_model-<model>_param-<param>_dwimap.nii.gz``;
statistic maps follow FSL randomise (``<prefix>_tfce_corrp_tstat1.nii.gz``: 1 - p).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from .. import __version__
from .._provenance import write_json
from .._validation import InputError

SPACE_NATIVE = "orig"
#: nilearn ships the ICBM152 2009a nonlinear symmetric template (mni_icbm152_*_tal_nlin_sym_09a)
SPACE_MNI = "MNI152NLin2009aSym"

#: which model produces which parameter map: the study's two here; every model of
#: :mod:`microvba.models.registry` (gqi, mapmri, ...) adds its own when that module is
#: imported (:func:`register_model_params`; io/ may not import models/)
MODEL_PARAMS: dict[str, tuple[str, ...]] = {
    "tensor": ("fa", "md", "rd", "ad"),
    "noddi": ("icvf", "odi", "isovf"),
}
#: the seven metrics of the study, in report order (the default analysis)
METRICS: tuple[str, ...] = ("fa", "md", "rd", "ad", "icvf", "odi", "isovf")
PARAM_MODEL: dict[str, str] = {p: m for m, ps in MODEL_PARAMS.items() for p in ps}


def register_model_params(model: str, params: tuple[str, ...]) -> None:
    """Record that ``model`` writes the group metrics ``params`` (names its maps
    ``_model-<model>_param-<param>``); called by the model registry."""
    MODEL_PARAMS[model] = tuple(params)
    PARAM_MODEL.update({p: model for p in params})


def all_metrics() -> tuple[str, ...]:
    """Every registered group metric (the study's seven first)."""
    return tuple(p for ps in MODEL_PARAMS.values() for p in ps)


def entities_prefix(subject: str, session: str | None = None) -> str:
    """``sub-<label>[_ses-<label>]``."""
    return f"sub-{subject}" + (f"_ses-{session}" if session else "")


def subject_dir(out_dir: str | Path, subject: str, session: str | None = None,
                datatype: str = "dwi") -> Path:
    """``OUT/sub-<label>[/ses-<label>]/<datatype>``."""
    d = Path(out_dir) / f"sub-{subject}"
    if session:
        d = d / f"ses-{session}"
    return d / datatype


def map_name(subject: str, param: str, space: str = SPACE_NATIVE,
             session: str | None = None, model: str | None = None,
             desc: str | None = None, suffix: str = "dwimap",
             ext: str = ".nii.gz") -> str:
    """BIDS derivative file name of one parameter map.

    >>> map_name("01", "icvf", space="MNI152NLin2009cSym")
    'sub-01_space-MNI152NLin2009cSym_model-noddi_param-icvf_dwimap.nii.gz'
    >>> map_name("01", "rtop", space="MNI152NLin2009aSym", model="mapmri")
    'sub-01_space-MNI152NLin2009aSym_model-mapmri_param-rtop_dwimap.nii.gz'
    """
    model = model or PARAM_MODEL.get(param)
    parts = [entities_prefix(subject, session), f"space-{space}"]
    if desc:
        parts.append(f"desc-{desc}")
    if model:
        parts.append(f"model-{model}")
    parts.append(f"param-{param}")
    return "_".join(parts) + f"_{suffix}{ext}"


def map_path(out_dir: str | Path, subject: str, param: str, space: str = SPACE_NATIVE,
             session: str | None = None, **kwargs: str) -> Path:
    """Full path of one subject's parameter map in the derivatives folder."""
    return subject_dir(out_dir, subject, session) / map_name(
        subject, param, space=space, session=session, **kwargs)


def image_like(data, ref):
    """A NIfTI image of ``data`` on the grid of ``ref``, keeping its qform/sform codes and
    units (so a derivative map overlays its source in every viewer)."""
    import nibabel as nib

    out = nib.Nifti1Image(data, ref.affine)
    out.header.set_qform(ref.header.get_qform(), int(ref.header["qform_code"]))
    out.header.set_sform(ref.header.get_sform(), int(ref.header["sform_code"]))
    out.header.set_xyzt_units(*ref.header.get_xyzt_units())
    return out


def sidecar_path(path: str | Path) -> Path:
    """JSON sidecar beside a NIfTI file (``x.nii.gz`` -> ``x.json``)."""
    p = Path(path)
    name = p.name
    for ext in (".nii.gz", ".nii", ".tsv", ".png"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    return p.with_name(name + ".json")


DATASET_DESCRIPTION_JSON = "dataset_description.json"


def write_dataset_description(out_dir: str | Path, source: str | Path | None = None) -> Path:
    """Write the derivatives ``dataset_description.json`` (BIDS 1.9)."""
    desc = {
        "Name": "microvba derivatives",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{
            "Name": "microvba",
            "Version": __version__,
            "Description": "DTI/NODDI fitting, MNI normalisation, permutation VBA, decoding",
        }],
    }
    if source is not None:
        desc["SourceDatasets"] = [{"URL": Path(source).resolve().as_uri()}]
    return write_json(Path(out_dir) / DATASET_DESCRIPTION_JSON, desc)


# =============================================================================== the contract
# --------------------------------------------------------------------- per-subject names
#: suffixes and ``desc-`` labels of the participant stage's files
DESC_BRAIN_MASK = "brain"
DESC_QC = "qc"


def space_prefix(prefix: str, space: str = SPACE_NATIVE) -> str:
    """``<prefix>_space-<space>`` (``sub-01_space-orig``): the prefix of a subject's maps."""
    return f"{prefix}_space-{space}"


def model_map_name(prefix: str, model: str, param: str, desc: str | None = None) -> str:
    """``{prefix}[_desc-{desc}]_model-{model}_param-{param}_dwimap.nii.gz`` (a fitted map).

    >>> model_map_name("sub-01_space-orig", "noddi", "icvf")
    'sub-01_space-orig_model-noddi_param-icvf_dwimap.nii.gz'
    """
    d = f"_desc-{desc}" if desc else ""
    return f"{prefix}{d}_model-{model}_param-{param}_dwimap.nii.gz"


def model_of_name(name: str) -> str | None:
    """The ``model-`` entity of a map name (``None`` when it has none)."""
    for part in Path(name).name.split("_"):
        if part.startswith("model-") and len(part) > len("model-"):
            return part[len("model-"):]
    return None


def brain_mask_name(prefix: str) -> str:
    """``{prefix}_desc-brain_mask.nii.gz`` (valid voxels of a subject, native or MNI)."""
    return f"{prefix}_desc-{DESC_BRAIN_MASK}_mask.nii.gz"


def meanb0_name(prefix: str) -> str:
    """``{prefix}_desc-meanb0_dwiref.nii.gz``: the mean b=0 image (registration contrast)."""
    return f"{prefix}_desc-meanb0_dwiref.nii.gz"


def combined_dwi_stem(prefix: str) -> str:
    """``{prefix}_desc-combined_dwi``: work files of several concatenated DWI series."""
    return f"{prefix}_desc-combined_dwi"


def registration_qc_name(prefix: str, space: str = SPACE_MNI) -> str:
    """``{prefix}_space-{space}_desc-registration_qc.json`` (similarity to the template)."""
    return f"{space_prefix(prefix, space)}_desc-registration_qc.json"


def qc_mosaic_name(prefix: str, space: str = SPACE_MNI) -> str:
    """``{prefix}_space-{space}_desc-qc_dwimap.png`` (registration QC mosaic)."""
    return f"{space_prefix(prefix, space)}_desc-{DESC_QC}_dwimap.png"


def qc_mosaic_path(out_dir: str | Path, prefix: str, space: str = SPACE_MNI) -> Path:
    """``OUT/sub-<label>/figures/<qc_mosaic_name>`` (``prefix`` = ``sub-<label>[_ses-..]``)."""
    return Path(out_dir) / prefix.split("_")[0] / "figures" / qc_mosaic_name(prefix, space)


def xfm_names(prefix: str, space: str) -> dict[str, str]:
    """Names of the saved registration: ``json`` index, ``warp``, ``affine``, ``rigid``."""
    to = f"{prefix}_from-dwi_to-{space}"
    return {"json": f"{to}_mode-image_xfm.json", "warp": f"{to}_desc-warp_xfm.nii.gz",
            "affine": f"{to}_desc-affine_xfm.mat",
            "rigid": f"{prefix}_from-dwi_to-T1w_desc-rigid_xfm.mat"}


def dwi_series_log_name(prefix: str) -> str:
    """``logs/<prefix>_dwi-series.json``: how several DWI series were combined."""
    return f"{prefix}_dwi-series.json"


# --------------------------------------------------------------------- group folder
GROUP_DIR = "group"
ANALYSIS_JSON = "analysis.json"
GROUP_PARTICIPANTS_TSV = "participants.tsv"
QC_TSV = "qc.tsv"
CLUSTERS_TSV = "clusters.tsv"
CORRELATIONS_TSV = "correlations.tsv"
PLANTED_TSV = "planted_vs_found.tsv"
REPORT_HTML = "report.html"
DECODING_DIR = "decoding"
NPC_DIR = "npc"
NPC_CLUSTERS_TSV = "npc_clusters.tsv"
PARTICIPANT_SETTINGS_JSON = "participant_settings.json"
LOGS_DIR = "logs"


def group_dir(out_dir: str | Path) -> Path:
    """``OUT/group``."""
    return Path(out_dir) / GROUP_DIR


def group_mask_name(space: str = SPACE_MNI) -> str:
    """``space-<space>_desc-gm_mask.nii.gz``: the gray-matter analysis mask."""
    return f"space-{space}_desc-gm_mask.nii.gz"


def npc_prefix(function: str) -> str:
    """``npc-<function>``: prefix of the NPC maps of one combining function."""
    return f"npc-{function}"


# --------------------------------------------------------------------- randomise maps
#: statistics of a permutation analysis, most preferred correction first
STATS: tuple[str, ...] = ("tfce", "vox", "clustere", "clusterm")
#: the t map's own name token and the "no statistic" entry of :data:`STATS`
TSTAT = "tstat"
#: FWE-corrected 1 - p within the map / over a family of maps
CORRP, FAMCORRP = "corrp", "famcorrp"
LOGP, FAMLOGP = "logp", "famlogp"
#: one-sided contrasts of a group analysis: 1 tests +score, 2 tests -score
SIGNS: tuple[str, ...] = ("+", "-")
CONTRAST_OF_SIGN = {"+": 1, "-": 2}
SIGN_TAG = {"+": "pos", "-": "neg"}


def tstat_key(contrast: int = 1) -> str:
    """``tstat<k>``: the t map of contrast ``k``."""
    return f"{TSTAT}{contrast}"


def stat_key(stat: str, contrast: int = 1) -> str:
    """``<stat>_tstat<k>`` (``tfce_tstat1``): a statistic map of contrast ``k``."""
    return f"{stat}_{tstat_key(contrast)}"


def corrp_key(stat: str, contrast: int = 1, *, family: bool = False) -> str:
    """``<stat>_corrp_tstat<k>`` (``_famcorrp_`` for the family-wise map): 1 - FWE p."""
    return f"{stat}_{FAMCORRP if family else CORRP}_{tstat_key(contrast)}"


def logp_key(stat: str, contrast: int = 1, *, family: bool = False) -> str:
    """``<stat>_logp_tstat<k>`` (``_famlogp_``): -log10 of the FWE p."""
    return f"{stat}_{FAMLOGP if family else LOGP}_{tstat_key(contrast)}"


def map_key_kind(key: str, kind: str, family: bool = False) -> str:
    """Rename a ``<stat>_corrp_tstat<k>``/``<stat>_logp_tstat<k>`` key to its family
    spelling (``famcorrp``/``famlogp``) or keep it."""
    if not family:
        return key
    return key.replace(f"_{CORRP}_", f"_{FAMCORRP}_").replace(f"_{LOGP}_", f"_{FAMLOGP}_")


def renumber_key(key: str, contrast: int) -> str:
    """``tfce_corrp_tstat1`` -> ``tfce_corrp_tstat<k>`` (FSL numbers outputs by contrast)."""
    head, sep, _ = key.rpartition(TSTAT)
    return f"{head}{sep}{contrast}" if sep else key


#: how each randomise map family is defined (``MapDefinitions`` of ``<prefix>_randomise.json``)
MAP_DEFINITIONS: dict[str, str] = {
    "tstat{k}": "t statistic; tstat1 tests the contrast c, tstat2 tests -c",
    "tfce_tstat{k}": "exact TFCE of tstat{k} (positive part; no step size)",
    "{stat}": "vox (t), tfce, clustere (cluster extent), clusterm (cluster mass)",
    "{stat}_corrp_tstat{k}": "1 - p, FWE-corrected by the maximum statistic over the "
                             "permutations (as FSL randomise: > 0.95 means p < 0.05)",
    "{stat}_logp_tstat{k}": "-log10 of the FWE-corrected p",
    "vox_p_tstat{k}": "1 - p, uncorrected (each voxel's own permutation distribution)",
    "vox_unclogp_tstat{k}": "-log10 of the uncorrected p",
    "vox_fdrp_tstat{k}": "1 - q, Benjamini-Hochberg FDR-adjusted voxel p",
    "vox_fdrlogp_tstat{k}": "-log10 of the FDR q",
    "{stat}_famcorrp_tstat{k}": "1 - p, FWE-corrected over the family of images and both "
                                "directions (max over the family, as PALM -corrcon -corrmod)",
    "{stat}_famlogp_tstat{k}": "-log10 of the family-wise corrected p",
    "tfcevox_famcorrp_tstat{k}": "1 - p, the smaller of the TFCE and voxel family-wise p "
                                 "when both statistics are corrected in one family (min-p): "
                                 "significant by either statistic",
    "clustere_*/clusterm_*": "cluster extent / mass (sum of t) at the cluster-forming "
                             "threshold; each cluster voxel carries its cluster's value, "
                             "0 outside clusters",
}


def randomise_map_name(prefix: str, key: str) -> str:
    """``<prefix>_<key>.nii.gz`` (``fa_tfce_corrp_tstat1.nii.gz``)."""
    return f"{prefix}_{key}.nii.gz"


def randomise_sidecar_name(prefix: str) -> str:
    """``<prefix>_randomise.json``: settings and methods of one permutation analysis."""
    return f"{prefix}_randomise.json"


# --------------------------------------------------------------------- regions follow-up
#: what :meth:`microvba.regions.followup.RegionsResult.save` writes, per ``<tag>``
REGION_FILES: dict[str, str] = {
    "clusters": "clusters.tsv", "labels": "cluster-labels.tsv", "means": "cluster-means.tsv",
    "correlations": "correlations.tsv", "label_img": "clusters.nii.gz",
    "sidecar": "regions.json"}


def sign_tag(sign: str) -> str:
    """``pos``/``neg`` of a sign (``+``/``-``); an error for any other spelling."""
    return SIGN_TAG[parse_sign(sign)]


def parse_sign(value: object, file: str | Path = "sign") -> str:
    """The one spelling of a direction: ``+`` or ``-`` (the ``sign`` column of every table).

    Raises
    ------
    InputError
        For any other value (a table written by another tool or an edited one).
    """
    text = str(value).strip()
    if text not in SIGNS:
        raise InputError(f"the sign {value!r} is not one of {', '.join(SIGNS)}", file=file,
                         fix="Re-run the group stage: its tables write the sign as + or -.")
    return text


def region_tag(metric: str, sign: str) -> str:
    """``<metric>_<pos|neg>`` (``fa_pos``): the prefix of one metric and direction."""
    return f"{metric}_{sign_tag(sign)}"


def region_file(tag: str, what: str) -> str:
    """``<tag>_<file>`` of :data:`REGION_FILES` (``fa_pos_clusters.tsv``)."""
    return f"{tag}_{REGION_FILES[what]}"


def cluster_figure_key(cluster_id: object) -> str:
    """``cluster-<k>``: one cluster's entity (figures, decoding stems)."""
    return f"cluster-{int(float(cluster_id))}"


def scatter_name(tag: str, figure_key: str) -> str:
    """``<tag>_cluster-<k>_scatter.png``: residualised metric vs score of one cluster."""
    return f"{tag}_{figure_key}_scatter.png"


def cluster_mean_column(cluster_id: object) -> str:
    """``cluster_<k>``: column of one cluster's per-subject mean in ``cluster-means.tsv``."""
    return f"cluster_{int(float(cluster_id))}"


# --------------------------------------------------------------------- decoding
VOCABULARIES: tuple[str, ...] = ("lda50", "terms")
#: kinds of decoding table: ROI association and unthresholded-map correlation
DECODING, MAP_DECODING = "decoding", "mapdecoding"
FIGURE_KINDS: tuple[str, ...] = ("bar", "polar")


def decoding_stem(prefix: str, vocabulary: str, cluster_id: object | None = None) -> str:
    """``<prefix>[_cluster-<k>]_vocab-<v>``: one decoded ROI in one vocabulary."""
    cl = f"_{cluster_figure_key(cluster_id)}" if cluster_id is not None else ""
    return f"{prefix}{cl}_vocab-{vocabulary}"


def decoding_table_name(stem: str, kind: str = DECODING) -> str:
    """``<stem>_decoding.tsv`` / ``<stem>_mapdecoding.tsv``."""
    return f"{stem}_{kind}.tsv"


def decoding_figure_name(stem: str, figure: str, kind: str = DECODING) -> str:
    """``<stem>_bar.png`` / ``<stem>_polar.png`` (``<stem>_map_bar.png`` for a map decoded
    by the ``decode`` subcommand)."""
    return f"{stem}{'_map' if kind == MAP_DECODING else ''}_{figure}.png"


def decoding_sidecar_name(stem: str) -> str:
    """``<stem>_decoding.json``: parameters of one decoding call."""
    return f"{stem}_{DECODING}.json"


def cluster_stem(prefix: str, cluster_id: object) -> str:
    """``<prefix>_cluster-<k>``: one cluster of one metric and sign."""
    return f"{prefix}_{cluster_figure_key(cluster_id)}"


#: the decoding folder's table of clusters merged into regions by voxel overlap
REGIONS_TSV = "regions.tsv"
REGION_COLUMNS: tuple[str, ...] = ("region", "metric", "sign", "cluster", "n_voxels",
                                   "overlap", "region_voxels", "decoded_as", "metrics")


def dropped_features_name(stem: str) -> str:
    """``<stem>_dropped-features.tsv``: the vocabulary's features without a map."""
    return f"{stem}_dropped-features.tsv"


# --------------------------------------------------------------------- table columns
#: ``<tag>_clusters.tsv`` of one map: one row per cluster (regions/clusters.py)
CLUSTER_COLUMNS: tuple[str, ...] = (
    "cluster_id", "tail", "n_voxels", "volume_mm3", "peak_stat", "peak_x", "peak_y", "peak_z",
    "com_x", "com_y", "com_z", "n_subpeaks", "subpeaks")
#: where the follow-up inserts the metric and the sign (after ``cluster_id``)
METRIC, SIGN, CLUSTER_ID, REGION = "metric", "sign", "cluster_id", "region"
PEAK_XYZ: tuple[str, ...] = ("peak_x", "peak_y", "peak_z")
#: ``clusters.tsv``: the columns every row has (atlas columns follow, :func:`atlas_columns`)
GROUP_CLUSTER_COLUMNS: tuple[str, ...] = (
    CLUSTER_ID, METRIC, SIGN, *CLUSTER_COLUMNS[1:])
#: ``<tag>_cluster-labels.tsv``: percentage of each cluster in each atlas label (long)
CLUSTER_LABEL_COLUMNS: tuple[str, ...] = (
    "cluster_id", "atlas", "label_id", "label", "n_voxels", "percent", "rank")
#: ``<tag>_correlations.tsv`` and ``correlations.tsv`` (+ metric, sign)
CORRELATION_COLUMNS: tuple[str, ...] = (
    "cluster_id", "method", "n", "k", "r", "ci_low", "ci_high", "p", "q_fdr", "boot_ci_low",
    "boot_ci_high", "loso_r", "loso_ci_low", "loso_ci_high", "loso_p", "loso_n", "loso_rank",
    "loso_mean_overlap", "r_interpretation")
#: keys of :func:`microvba.regions.correlation.partial_corr`'s result (the statistics
#: columns of the correlation tables and of the ``roi`` sidecar)
PARTIAL_CORR_KEYS: tuple[str, ...] = (
    "n", "k", "dof", "r", "ci_low", "ci_high", "p", "boot_ci_low", "boot_ci_high", "method")
#: the leave-one-subject-out columns of the correlation tables
LOSO_COLUMNS: tuple[str, ...] = CORRELATION_COLUMNS[11:18]
#: the first five LOSO columns hold these keys of the held-out partial correlation
LOSO_OF_PARTIAL: dict[str, str] = dict(zip(LOSO_COLUMNS[:5], ("r", "ci_low", "ci_high", "p",
                                                               "n"), strict=True))
#: ``npc/npc_clusters.tsv``
NPC_CLUSTER_COLUMNS: tuple[str, ...] = (
    "combining", "cluster", "n_voxels", "peak_z", "peak_x", "peak_y", "peak_z_mm", "min_p_fwe")
#: ``qc.tsv``: participant_id, the similarity measures of the QC JSON, then ``outlier``
PARTICIPANT_ID, OUTLIER = "participant_id", "outlier"
#: the registration similarity measures (``*_desc-registration_qc.json``; ``qc.tsv`` in
#: the alphabetical order of the JSON)
QC_CORRELATION, QC_DICE_GM, QC_DICE_BRAIN = "correlation", "dice_gm", "dice_brain"
QC_MEASURES: tuple[str, ...] = (QC_CORRELATION, QC_DICE_GM, QC_DICE_BRAIN)
QC_COLUMNS: tuple[str, ...] = (PARTICIPANT_ID, QC_CORRELATION, QC_DICE_BRAIN, QC_DICE_GM,
                               OUTLIER)
#: ``<stem>_decoding.tsv`` (ROI association), in this order
DECODING_COLUMNS: tuple[str, ...] = (
    "feature", "label", "n_selected", "p_roi_given_feature", "p_roi_given_other", "log_odds",
    "z", "p", "p_method", "q", "p_perm", "p_null", "q_null", "r", "significant")
#: ``<stem>_mapdecoding.tsv`` (correlation of an unthresholded map with each feature's map)
MAP_DECODING_COLUMNS: tuple[str, ...] = (
    "feature", "label", "n_selected", "r", "p_perm", "p_null", "q_null", "significant")
#: ``<stem>_dropped-features.tsv``: features of the vocabulary without an association map
DROPPED_FEATURE_COLUMNS: tuple[str, ...] = ("feature", "n_selected", "reason", "label")
#: ``planted_vs_found.tsv`` (simulations): one row per planted effect, then one per
#: significant cluster outside them (region ``(not planted)``, status expected or false)
PLANTED_COLUMNS: tuple[str, ...] = (
    "region", "hemisphere", "metric", "sign", "planted_r", "study_r", "found", "found_r",
    "loso_r", "peak_distance_mm", "cluster_id", "status")
#: ``region`` of a planted_vs_found row that is a cluster outside the planted effects
NOT_PLANTED = "(not planted)"
#: ``status`` values of planted_vs_found rows
PLANTED_STATUS: tuple[str, ...] = ("found", "missed", "expected side effect",
                                   "false positive")
#: ``roi`` subcommand table (then the score and covariates when given)
ROI_COLUMNS: tuple[str, ...] = ("region", "map", "volume", "participant", "n_voxels", "mean")


#: columns read by name (by the report, the planted check, the follow-up); each one is in
#: one of the column lists above (a test checks it)
N_VOXELS, VOLUME_MM3, PEAK_STAT = "n_voxels", "volume_mm3", "peak_stat"
METHOD, N, R, P = "method", "n", "r", "p"
CI_LOW, CI_HIGH, Q_FDR = "ci_low", "ci_high", "q_fdr"
BOOT_CI_LOW, BOOT_CI_HIGH = "boot_ci_low", "boot_ci_high"
LOSO_R, LOSO_CI_LOW, LOSO_CI_HIGH, LOSO_P = "loso_r", "loso_ci_low", "loso_ci_high", "loso_p"
FEATURE, LABEL, LOG_ODDS, Q, SIGNIFICANT = "feature", "label", "log_odds", "q", "significant"
Z, P_NULL, Q_NULL = "z", "p_null", "q_null"
R_INTERPRETATION = "r_interpretation"
HEMISPHERE, PLANTED_R, STUDY_R, FOUND, FOUND_R = (
    "hemisphere", "planted_r", "study_r", "found", "found_r")
PEAK_DISTANCE_MM, STATUS = "peak_distance_mm", "status"
#: the correlation method whose r the planted check and the figures quote
PRIMARY_METHOD = "pearson"


def atlas_columns(atlas: str) -> tuple[str, str, str]:
    """Columns an atlas adds to ``clusters.tsv``: ``<atlas>`` (percent of the cluster per
    label), ``<atlas>_top`` (its main label) and ``peak_<atlas>`` (label at the peak)."""
    return atlas, f"{atlas}_top", f"peak_{atlas}"


def atlases_in(columns: Iterable[str]) -> list[str]:
    """The atlases whose three :func:`atlas_columns` a cluster table holds, in its order (a
    new atlas appears here without any change to the reader)."""
    cols = list(columns)
    return [c for c in cols if all(x in cols for x in atlas_columns(c))]


def check_columns(columns: Iterable[str], required: Sequence[str], file: str | Path) -> None:
    """Refuse a table whose columns lack any of ``required`` (a renamed or missing column is
    an error, never blank cells).

    Raises
    ------
    InputError
        Naming the file, the missing columns and the columns it has.
    """
    have = [str(c) for c in columns]
    missing = [c for c in required if c not in have]
    if missing:
        raise InputError(
            f"the table lacks the column(s) {', '.join(missing)} (it has: "
            f"{', '.join(have) or 'none'})", file=file,
            fix="Re-run the stage that writes it (microvba ... group); tables written by "
                "another version or edited by hand are not read.")


# --------------------------------------------------------------------- analysis.json
FAMILY_METHOD_KEY, EXCLUDED_OUTLIERS_KEY = "family_method", "excluded_outliers"
#: the statistics corrected together in the min-p family (``["tfce", "vox"]``)
FAMILY_STATISTICS_KEY = "family_statistics"
#: keys the group stage adds to its settings (``asdict(GroupSettings)``) in analysis.json
ANALYSIS_EXTRA_KEYS: tuple[str, ...] = (
    FAMILY_METHOD_KEY, FAMILY_STATISTICS_KEY, "subjects", EXCLUDED_OUTLIERS_KEY, "space",
    "design_columns", "SoftwareVersions", "summary")
#: keys of ``analysis["summary"]`` in their order (``npc``, ``planted_found`` and
#: ``false_clusters`` only when computed)
SUMMARY_KEYS: tuple[str, ...] = ("n_subjects", "n_voxels", "metrics", "family", "npc",
                                 "n_clusters", "planted_found", "false_clusters")
SUMMARY_OPTIONAL_KEYS: tuple[str, ...] = ("npc", "planted_found", "false_clusters")
PLANTED_FOUND_KEY, FALSE_CLUSTERS_KEY = SUMMARY_OPTIONAL_KEYS[1:]


def analysis_record(settings: dict, *, family_method: str, family_statistics: list[str],
                    subjects: list[str], excluded_outliers: list[str], space: str,
                    design_columns: list[str], software_versions: dict,
                    summary: dict) -> dict:
    """The content of ``group/analysis.json``: the group settings (``asdict``), then
    :data:`ANALYSIS_EXTRA_KEYS`."""
    values = (family_method, family_statistics, subjects, excluded_outliers, space,
              design_columns, software_versions, summary)
    clash = set(settings) & set(ANALYSIS_EXTRA_KEYS)
    if clash:
        raise ValueError(f"settings fields {sorted(clash)} shadow analysis.json keys")
    return {**settings, **dict(zip(ANALYSIS_EXTRA_KEYS, values, strict=True))}


def analysis_summary(*, n_subjects: int, n_voxels: int, metrics: dict, family: str,
                     n_clusters: int, npc: dict | None = None, planted_found: int | None = None,
                     false_clusters: int | None = None) -> dict:
    """``analysis["summary"]`` (:data:`SUMMARY_KEYS`; an optional entry left out when None)."""
    values = (n_subjects, n_voxels, metrics, family, npc, n_clusters, planted_found,
              false_clusters)
    return {k: v for k, v in zip(SUMMARY_KEYS, values, strict=True)
            if v is not None or k not in SUMMARY_OPTIONAL_KEYS}


#: kinds of voxel-wise map (:func:`voxel_key`): 1 - uncorrected p, its -log10, 1 - FDR q, its
#: -log10
UNC_P, UNC_LOGP, FDR_P, FDR_LOGP = "p", "unclogp", "fdrp", "fdrlogp"


def voxel_key(kind: str, contrast: int = 1) -> str:
    """``vox_<kind>_tstat<k>`` of the voxel-wise maps: ``p`` (1 - uncorrected p), ``unclogp``,
    ``fdrp`` (1 - FDR q), ``fdrlogp``."""
    return f"vox_{kind}_{tstat_key(contrast)}"


# --------------------------------------------------------------------- simulation truth
def truth_map_name(space: str, metric: str) -> str:
    """``space-<space>_param-<metric>_desc-truth_dwimap.nii.gz``: a simulated cohort's
    planted effect map (``BIDS/derivatives/truth``)."""
    return f"space-{space}_param-{metric}_desc-truth_dwimap.nii.gz"


def planted_seg_name(space: str) -> str:
    """``space-<space>_desc-planted_dseg.nii.gz``: the planted regions of a simulation."""
    return f"space-{space}_desc-planted_dseg.nii.gz"


#: glob patterns of the two truth files (any space)
TRUTH_MAP_GLOB = "*param-{metric}_desc-truth_*"
PLANTED_SEG_GLOB = "*desc-planted_dseg.nii*"
