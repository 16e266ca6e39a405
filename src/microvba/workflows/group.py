"""Group stage: voxel-based statistics in MNI gray matter, clusters, decoding, report.

For every metric the subjects' normalised maps are stacked inside the group gray-matter
mask, smoothed within the mask, and tested against the score with Freedman-Lane permutation
inference (exact TFCE, voxel and cluster statistics, FWE). Significant clusters are labelled,
followed up with partial correlations on the unsmoothed maps, decoded against Neurosynth and
NeuroQuery, and everything is gathered into ``group/report.html``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from .. import _defaults
from .._logging import get_logger, progress
from .._provenance import (
    clean_temporaries,
    save_nifti,
    software_versions,
    write_json,
    write_text,
)
from .._resources import check_memory, check_permutations, permutation_bytes
from .._validation import (
    InputError,
    ProblemCollector,
    check_option_choice,
    check_option_number,
)
from ..io import derivatives
from ..io.bids import check_one_session_per_subject, validate_dataset
from ..models import registry as _registry
from .participant import executor_from_args

# stats (numba), registration, regions, decode and report are imported inside the functions
# that use them: the command line imports this module (GroupSettings) to parse its options

log = get_logger(__name__)

#: Westfall-Young min-p with generalised-Pareto tail p-values of the permutation maxima
#: (:func:`microvba.stats.family.perm_p`): exact, and free of rank ties at any n_perm
FAMILY_METHOD = "minp-tail"
#: statistics corrected in one min-p family (:data:`microvba.stats.family.JOINT_STATISTICS_NOTE`):
#: a voxel is a finding when its TFCE or its voxel t is family-wise significant
FAMILY_STATISTICS = ("tfce", "vox")


@dataclass(frozen=True)
class GroupSettings:
    """What the group stage computes (recorded in ``group/analysis.json``)."""

    score: str
    covariates: tuple[str, ...] = ()
    metrics: tuple[str, ...] = derivatives.METRICS
    n_perm: int = _defaults.N_PERM
    seed: int = _defaults.SEED
    fwhm: float = 6.0
    gm_threshold: float = 0.3
    isovf_max: float | None = None
    resolution: float = 2.0
    alpha: float = 0.05
    tfce_H: float = _defaults.TFCE_H
    tfce_E: float = _defaults.TFCE_E
    tfce_connectivity: int = _defaults.TFCE_CONNECTIVITY
    cluster_threshold: float = _defaults.CLUSTER_THRESHOLD
    #: family corrected by min-p: "all" (every metric and sign; default), "metrics",
    #: "signs" or "none" (per-map FWE); True/False (the old flag) mean "all"/"none"
    correct_across: str = "all"
    #: NPC combining functions across metrics ("fisher", "tippett"); empty: no NPC
    npc: tuple[str, ...] = ()
    exclude_outliers: bool = True
    #: permutations of the whole leave-one-subject-out for the LOSO r's p and CI
    #: (:func:`microvba.regions.correlation.loso_r`); 0 = the analytic (uncalibrated) ones
    loso_n_perm: int = 199
    decode: bool = True
    vocabularies: tuple[str, ...] = ("lda50", "terms")
    data_dir: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check every value by its command-line name (exit code 2 before any file is read).

        Ranges: ``--n-perm`` an integer >= 2 whose null distributions (metrics x 2 signs x 4
        statistics x n_perm doubles) fit in memory; ``--fwhm`` in [0, 50] mm (0 = none);
        ``--gm-threshold`` in (0, 1); ``--alpha`` in (0, 1); ``--resolution`` in [0.5, 8] mm;
        ``--metrics`` among the registry's metrics
        (:func:`microvba.models.registry.all_metrics`); TFCE ``H``, ``E`` > 0; connectivity
        6, 18 or 26; cluster-forming threshold >= 0; ``--correct-across`` and ``--npc``
        (:class:`microvba.stats.family.Correction`).
        """
        corr = self.correction  # validates both (InputError naming the option)
        object.__setattr__(self, "correct_across", corr.across.value)
        object.__setattr__(self, "npc", corr.npc)
        check_group_settings(self)

    @property
    def correction(self):
        """The multiplicity setting (:class:`microvba.stats.family.Correction`)."""
        from ..stats.family import Correction

        return Correction(across=self.correct_across, npc=self.npc)


def check_group_settings(s: GroupSettings) -> None:
    """Raise :class:`InputError` naming the first invalid option of ``s`` (see
    :meth:`GroupSettings.__post_init__`)."""
    if not isinstance(s.score, str) or not s.score.strip():
        raise InputError("the group stage needs the score to correlate with",
                         file="--score", fix="Pass --score COLUMN (a participants.tsv column).")
    check_option_choice("--metrics", s.metrics, _registry.all_metrics())
    n_perm = check_option_number("--n-perm", s.n_perm, 2, None, integer=True,
                                 hint="5000 as FSL randomise; the smallest p is 1/n_perm")
    check_option_number("--fwhm", s.fwhm, 0.0, 50.0, unit="mm", hint="0 = no smoothing")
    check_option_number("--loso-n-perm", s.loso_n_perm, 0, 100000, integer=True,
                        hint="199 (default); 0 = the analytic p, which is anti-conservative "
                             "for a cluster chosen on the same data")
    check_option_number("--gm-threshold", s.gm_threshold, 0.0, 1.0, low_open=True,
                        high_open=True, hint="a template gray-matter probability, e.g. 0.3")
    if s.isovf_max is not None:
        check_option_number("--isovf-max", s.isovf_max, 0.0, 1.0)
    check_option_number("--alpha", s.alpha, 0.0, 1.0, low_open=True, high_open=True,
                        hint="the FWE level, e.g. 0.05")
    check_option_number("--resolution", s.resolution, 0.5, 8.0, unit="mm",
                        hint="the MNI grid spacing of the participant stage, e.g. 2")
    check_option_number("--tfce-H", s.tfce_H, 0.0, 10.0, low_open=True)
    check_option_number("--tfce-E", s.tfce_E, 0.0, 10.0, low_open=True)
    check_option_choice("--tfce-connectivity", [str(s.tfce_connectivity)], ("6", "18", "26"))
    check_option_number("--cluster-threshold", s.cluster_threshold, 0.0, None)
    # per-map nulls, the family's min-p copies and one null per NPC combining function
    n_images = len(s.metrics) * (2 if s.correct_across != "none" else 1) + len(s.npc)
    check_permutations(n_perm, n_images=n_images, n_signs=2)


def _check_stack_memory(n_subjects: int, n_voxels: int, settings: GroupSettings) -> None:
    """Refuse, before stacking, data that cannot fit in memory: every metric's subjects x
    voxels float64 array (smoothed, held together), plus one unsmoothed copy and the
    permutation nulls (:func:`microvba._resources.permutation_bytes`)."""
    n_metrics = len(settings.metrics)
    needed = 8 * n_subjects * n_voxels * (n_metrics + 1) + permutation_bytes(
        settings.n_perm, n_images=n_metrics)
    check_memory(needed, f"stacking {n_metrics} metric(s) of {n_subjects} subjects x "
                         f"{n_voxels} gray-matter voxels", "--resolution/--metrics",
                 "Analyse fewer metrics at once (--metrics fa,md), a coarser grid "
                 "(--resolution 2 in both stages), or run on a machine with more memory.")


def _mni_paths(out_dir: Path, subjects: list, metrics: tuple[str, ...]) -> list[dict[str, Path]]:
    """Each subject's normalised maps; one InputError listing every missing file."""
    problems = ProblemCollector()
    paths = []
    for s in subjects:
        entry = {}
        for m in metrics:
            p = derivatives.map_path(out_dir, s.label, m, space=derivatives.SPACE_MNI,
                                     model=_registry.metric_model().get(m),
                                     session=s.session)
            if not p.exists():
                problems.add(p, f"the normalised {m.upper()} map of {s.prefix} is missing",
                             "Run the participant stage first: "
                             "microvba BIDS_DIR OUTPUT_DIR participant")
            entry[m] = p
        # the brain mask of the normalised subject marks its valid voxels
        mask = p.parent / derivatives.brain_mask_name(
            derivatives.space_prefix(s.prefix, derivatives.SPACE_MNI))
        if mask.exists():
            entry["mask"] = mask
        paths.append(entry)
    problems.raise_if_any()
    return paths


def _qc_table(out_dir: Path, subjects: list) -> pd.DataFrame:
    """Registration QC of every subject (from the participant stage's QC JSON files)."""
    rows = []
    for s in subjects:
        found = sorted((out_dir / f"sub-{s.label}").rglob(
            derivatives.registration_qc_name(s.prefix, derivatives.SPACE_MNI)))
        row = {derivatives.PARTICIPANT_ID: derivatives.entities_prefix(s.label, s.session)}
        if found:
            row.update({k: v for k, v in json.loads(found[0].read_text()).items()
                        if isinstance(v, int | float | bool)})
        rows.append(row)
    table = pd.DataFrame(rows).set_index(derivatives.PARTICIPANT_ID)
    numeric = table.select_dtypes("number")
    if len(numeric.columns):
        from ..registration.qc import flag_outliers

        table[derivatives.OUTLIER] = flag_outliers(numeric).to_numpy(bool)
    else:
        table[derivatives.OUTLIER] = False
    return table


def _floors_text() -> str:
    from ..registration.qc import ABSOLUTE_FLOORS

    return ", ".join(f"{k} {v:g}" for k, v in ABSOLUTE_FLOORS.items())


def _stack(paths: list[dict[str, Path]], metric: str, mask: np.ndarray) -> np.ndarray:
    """(n_subjects, n_voxels_in_mask) float64 array of one metric."""
    return np.stack([np.asarray(nib.load(p[metric]).dataobj, dtype=np.float64)[mask]
                     for p in paths])


def _smooth(paths, metric, mask, fwhm, voxel_size) -> np.ndarray:
    from ..registration.smooth import smooth_in_mask

    if fwhm <= 0:
        return _stack(paths, metric, mask)
    out = []
    for p in paths:
        vol = np.asarray(nib.load(p[metric]).dataobj, dtype=np.float64)
        out.append(smooth_in_mask(vol, mask, fwhm, voxel_size)[mask])
    return np.stack(out)


def check_decoding_data(settings: GroupSettings) -> None:
    """With ``settings.decode``, the databases of ``settings.vocabularies`` must be in the data
    folder before the group stage starts: one InputError (exit 2) naming every missing file
    and the ``microvba data fetch`` command that downloads it."""
    if not settings.decode:
        return
    from ..decode.database import VOCABULARY_DATABASE, database_files

    problems = ProblemCollector()
    check_option_choice("--vocabularies", settings.vocabularies, tuple(VOCABULARY_DATABASE))
    for database in dict.fromkeys(VOCABULARY_DATABASE[v] for v in settings.vocabularies):
        try:
            database_files(database, settings.data_dir)
        except InputError as exc:
            problems.extend(exc)
    problems.raise_if_any()


def _exclude_outliers(qc: pd.DataFrame, subjects: list, paths: list[dict[str, Path]],
                     participants: pd.DataFrame, settings: GroupSettings, out_dir: Path
                     ) -> tuple[list, list[dict[str, Path]], pd.DataFrame]:
    """The subjects, map paths and participants rows left after leaving out the registration
    outliers of ``qc`` (when ``settings.exclude_outliers``); InputError when none is left."""
    keep = np.ones(len(subjects), bool)
    if settings.exclude_outliers and qc[derivatives.OUTLIER].any():
        keep = ~qc[derivatives.OUTLIER].to_numpy(bool)
        log.warning("excluding registration outliers: %s", ", ".join(qc.index[~keep]))
    subjects = [s for s, k in zip(subjects, keep, strict=True) if k]
    paths = [p for p, k in zip(paths, keep, strict=True) if k]
    participants = participants.loc[[s.label for s in subjects]]
    if not subjects:
        raise InputError(
            f"every subject ({len(keep)}) was flagged as a registration outlier, so no subject "
            "is left for the group analysis (similarity to the template below the floors "
            f"{_floors_text()}; per subject in "
            f"sub-*/dwi/{derivatives.registration_qc_name('*', derivatives.SPACE_MNI)})",
            file=str(out_dir / "sub-*" / "figures"),
            fix="Look at the registration mosaics of the participant stage "
                f"(sub-*/figures/{derivatives.qc_mosaic_name('*', derivatives.SPACE_MNI)}): "
                "the images must show a whole brain "
                "(a small field of view, e.g. a 'microvba simulate' box dataset, cannot be "
                "normalised to MNI); fix the inputs (orientation, brain mask, coverage) and "
                "re-run the participant stage with --force.")
    return subjects, paths, participants


def run_group(bids_dir: Path, out_dir: Path, settings: GroupSettings, *,
              participant_label: list[str] | None = None,
              session_label: list[str] | None = None, executor=None,
              dataset=None, report: bool = True) -> dict:
    """Run the group analysis; return a summary dict (also written as analysis.json).

    Everything that can be refused is checked before anything is written: the settings, the
    dataset, the normalised maps, the decoding databases (with ``settings.decode``), the
    design of the subjects left after QC exclusion and the labelling atlases. ``report``:
    build ``group/report.html`` at the end (the demo builds it after its planted-vs-found
    check, :func:`microvba.workflows.planted.check_planted`).
    """
    from ..registration.masks import group_gm_mask
    from ..registration.template import load_template
    from ..stats.design import make_design
    from ..stats.family import Family

    out_dir = Path(out_dir)
    check_decoding_data(settings)
    if dataset is None:
        dataset = validate_dataset(bids_dir, subjects=participant_label,
                                   session_label=session_label, score=settings.score,
                                   covariates=list(settings.covariates), check_images=False)
    check_one_session_per_subject(bids_dir, dataset.subjects)
    paths = _mni_paths(out_dir, dataset.subjects, settings.metrics)
    group_dir = derivatives.group_dir(out_dir)

    qc = _qc_table(out_dir, dataset.subjects)
    subjects, paths, participants = _exclude_outliers(qc, dataset.subjects, paths,
                                                     dataset.participants, settings, out_dir)
    # a design the remaining subjects cannot support fails here, before anything is written
    design = make_design(participants, settings.score, list(settings.covariates))
    from ..regions.atlases import ATLASES, as_atlases

    # the labelling atlases too (a missing one would fail only after the permutations)
    atlases = as_atlases(ATLASES, settings.data_dir)  # loaded once for every metric and sign
    group_dir.mkdir(parents=True, exist_ok=True)
    clean_temporaries(group_dir)
    write_text(group_dir / derivatives.QC_TSV, qc.to_csv(sep="\t"))
    part_out = participants.drop(columns=[derivatives.PARTICIPANT_ID], errors="ignore")
    part_out.index = [f"sub-{i}" for i in part_out.index]
    part_out.index.name = derivatives.PARTICIPANT_ID
    write_text(group_dir / derivatives.GROUP_PARTICIPANTS_TSV, part_out.to_csv(sep="\t"))

    template = load_template(settings.resolution)
    mask_img = group_gm_mask(template, paths, gm_threshold=settings.gm_threshold,
                             isovf_max=settings.isovf_max)
    mask = np.asarray(mask_img.dataobj) > 0
    _check_stack_memory(len(subjects), int(mask.sum()), settings)
    affine = mask_img.affine
    voxel_size = tuple(float(v) for v in mask_img.header.get_zooms()[:3])
    mask_path = group_dir / derivatives.group_mask_name(derivatives.SPACE_MNI)
    save_nifti(nib.Nifti1Image(mask.astype(np.uint8), affine), mask_path)
    log.info("group analysis: %d subjects, %d gray-matter voxels, metrics %s",
             len(subjects), int(mask.sum()), ",".join(settings.metrics))

    contrast = design.contrast(settings.score)
    results = _run_statistics(paths, mask, voxel_size, design, contrast, settings, executor)
    npc_results = {k: results.pop(k) for k in list(results) if k.startswith("npc_")}

    family = settings.correction.across.describe(len(results))
    npc = _save_npc(npc_results, group_dir, mask, affine, settings.alpha) if npc_results \
        else None
    saved_maps: dict[str, dict[str, str]] = {}
    cluster_tables, corr_tables = [], []
    to_decode: list = []  # clusters of every metric and sign, decoded once per region
    for metric, res in results.items():
        mdir = group_dir / metric
        saved = res.save(mdir, metric, mask, affine)
        saved_maps[metric] = {k: str(v) for k, v in saved.items()}
        clusters, corrs = _follow_up(metric, saved, paths, affine, participants,
                                     settings, mdir, out_dir, atlases, to_decode)
        cluster_tables += clusters
        corr_tables += corrs
    if settings.decode and to_decode:
        _decode(to_decode, settings, out_dir)
    clusters = pd.concat(cluster_tables, ignore_index=True) if cluster_tables else pd.DataFrame()
    corrs = pd.concat(corr_tables, ignore_index=True) if corr_tables else pd.DataFrame()
    write_text(group_dir / derivatives.CLUSTERS_TSV, clusters.to_csv(sep="\t", index=False))
    write_text(group_dir / derivatives.CORRELATIONS_TSV, corrs.to_csv(sep="\t", index=False))
    summary = derivatives.analysis_summary(
        n_subjects=len(subjects), n_voxels=int(mask.sum()), metrics=saved_maps, family=family,
        npc=npc, n_clusters=len(clusters), planted_found=None, false_clusters=None)
    analysis = derivatives.analysis_record(
        asdict(settings), family_method=FAMILY_METHOD,
        family_statistics=list(FAMILY_STATISTICS)
        if settings.correction.across is not Family.NONE else ["tfce"],
        subjects=[s.prefix for s in subjects],
        excluded_outliers=[str(i) for i in qc.index[qc[derivatives.OUTLIER].to_numpy(bool)]],
        space=derivatives.SPACE_MNI, design_columns=list(design.names),
        software_versions=software_versions(), summary=summary)
    write_json(group_dir / derivatives.ANALYSIS_JSON, analysis)
    if report:
        from ..report import build_report

        log.info("report written to %s", build_report(out_dir))
    return analysis


def _run_statistics(paths, mask, voxel_size, design, contrast, settings, executor) -> dict:
    """Permutation inference of every metric with the same permutations.

    Family-wise error over ``settings.correct_across`` by Westfall-Young min-p
    (``*_famcorrp`` maps), and NPC maps (``npc_<function>`` entries) when asked.
    """
    from ..stats.family import Family
    from ..stats.permutation import randomise_family

    corr = settings.correction
    Ys = {m: _smooth(paths, m, mask, settings.fwhm, voxel_size)
          for m in progress(settings.metrics, "smoothing metrics")}
    return randomise_family(
        Ys, design.matrix, contrast, mask, n_perm=settings.n_perm, seed=settings.seed,
        tfce=True, tfce_H=settings.tfce_H, tfce_E=settings.tfce_E,
        tfce_connectivity=settings.tfce_connectivity,
        cluster_threshold=settings.cluster_threshold,
        # remote workers get the permutation batches; locally, threads are faster
        batch_map=executor.batch_map if getattr(executor, "remote", False) else None,
        family_maps=corr.across is not Family.NONE, family_method=FAMILY_METHOD,
        correct_across=corr.across, npc=corr.npc if len(Ys) > 1 else (),
        family_statistics=FAMILY_STATISTICS)


def _save_npc(results: dict, group_dir: Path, mask: np.ndarray, affine: np.ndarray,
              alpha: float) -> dict:
    """Write the NPC maps (``group/npc/npc-<function>_*.nii.gz``) and their clusters."""
    from ..stats.clusters import label_clusters

    out, rows = {}, []
    for name, res in results.items():
        function = name.removeprefix("npc_")
        saved = res.save(group_dir / derivatives.NPC_DIR, derivatives.npc_prefix(function),
                         mask, affine)
        corrp = res.maps[derivatives.corrp_key("tfce", 1)]
        sig = corrp > 1.0 - alpha
        vol = np.zeros(mask.shape)
        vol[mask] = np.where(sig, res.maps[derivatives.tstat_key(1)], 0.0)
        labels, cl = label_clusters(np.where(vol > 0, 1.0, 0.0), 0.5, 26)
        for k in range(cl.n_clusters):
            idx = np.argwhere(labels == k + 1)
            peak = idx[np.argmax(vol[tuple(idx.T)])]
            x, y, z = (affine @ np.r_[peak, 1.0])[:3]
            p = 1.0 - corrp[labels[mask] == k + 1].max()
            rows.append((function, k + 1, int(cl.extent[k]), float(vol[tuple(peak)]), x, y, z,
                         p))
        out[function] = {"maps": {k: str(v) for k, v in saved.items()},
                         "n_significant_voxels": int(sig.sum()), "n_clusters": cl.n_clusters}
    write_text(group_dir / derivatives.NPC_DIR / derivatives.NPC_CLUSTERS_TSV,
               pd.DataFrame(rows, columns=list(derivatives.NPC_CLUSTER_COLUMNS))
               .to_csv(sep="\t", index=False))
    return out


def _follow_up(metric, saved, paths, affine, participants, settings, mdir, out_dir, atlases,
               to_decode):
    """Clusters, labels and partial correlations of one metric, both signs; its clusters
    are appended to ``to_decode`` (decoded once per region, after every metric)."""
    from ..regions.followup import follow_up
    from ..stats.family import Family

    raw = np.stack([np.asarray(nib.load(p[metric]).dataobj, dtype=np.float32)
                    for p in paths], axis=-1)
    raw_img = nib.Nifti1Image(raw, affine)
    clusters, corrs = [], []
    family = settings.correction.across is not Family.NONE
    for sign in derivatives.SIGNS:
        k = derivatives.CONTRAST_OF_SIGN[sign]
        stat = nib.load(saved[derivatives.tstat_key(k)])
        key = derivatives.corrp_key("tfce", k, family=family)
        joint = derivatives.corrp_key("".join(FAMILY_STATISTICS), k, family=True)
        if family and joint in saved:  # TFCE or voxel t significant (one min-p family)
            key = joint
        corrp = nib.load(saved[key])
        res = follow_up(stat, corrp, raw_img, participants, settings.score,
                        list(settings.covariates), metric, sign, mdir, atlases=atlases,
                        data_dir=settings.data_dir, alpha=settings.alpha,
                        loso_fwhm_mm=settings.fwhm, seed=settings.seed,
                        loso_n_perm=settings.loso_n_perm)
        res.save(mdir)
        if len(res.clusters):
            tags = {derivatives.METRIC: metric, derivatives.SIGN: sign}
            clusters.append(res.clusters.assign(**tags))
            corrs.append(res.correlations.assign(**tags))
            if settings.decode:
                from ..decode.regions import clusters_of

                to_decode += clusters_of(res.label_img, metric, sign, stat)
    return clusters, corrs


def _decode(clusters, settings, out_dir):
    """Decode the distinct regions of all metrics' clusters, each once (merged by voxel
    overlap: :func:`microvba.decode.decode_regions`)."""
    from ..decode import decode_regions

    try:
        decode_regions(clusters, derivatives.group_dir(out_dir) / derivatives.DECODING_DIR,
                       vocabularies=settings.vocabularies, data_dir=settings.data_dir,
                       decoders={}, seed=settings.seed)
    except InputError as exc:
        log.warning("decoding skipped: %s", exc)


def settings_from_args(args: argparse.Namespace) -> GroupSettings:
    if not args.score:
        raise InputError("the group stage needs the score to correlate with",
                         file="--score", fix="Pass --score COLUMN (a participants.tsv column).")
    return GroupSettings(
        score=args.score, covariates=tuple(args.covariates), metrics=tuple(args.metrics),
        n_perm=args.n_perm, seed=args.seed, fwhm=args.fwhm, gm_threshold=args.gm_threshold,
        resolution=args.resolution, alpha=args.alpha, correct_across=args.correct_across,
        npc=tuple(getattr(args, "npc", None) or ()),
        loso_n_perm=args.loso_n_perm, decode=not args.no_decode,
        data_dir=str(args.data_dir) if args.data_dir else None)


def run_group_cli(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    check_decoding_data(settings)  # missing databases: exit 2 before any work
    # the same series selection as the participant stage, so that a dataset it accepted
    # with --dwi-filter is not refused here
    dataset = validate_dataset(args.bids_dir, subjects=args.participant_label,
                               session_label=args.session_label, score=settings.score,
                               covariates=list(settings.covariates), check_images=False,
                               dwi_filter=getattr(args, "dwi_filter", None))
    check_one_session_per_subject(args.bids_dir, dataset.subjects)
    _mni_paths(Path(args.output_dir), dataset.subjects, settings.metrics)
    with executor_from_args(args) as executor:
        run_group(args.bids_dir, args.output_dir, settings, executor=executor,
                  dataset=dataset)
    return 0
