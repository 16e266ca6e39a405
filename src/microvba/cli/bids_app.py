"""The BIDS-App form: ``microvba BIDS_DIR OUTPUT_DIR participant|group [options]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._defaults import TISSUE_D_PAR
from .._logging import get_logger
from .._validation import InputError, Problem, check_output_dir, check_output_placement
from ..io import derivatives
from ..io.derivatives import METRICS, PARAM_MODEL, SPACE_MNI
from ..models import registry
from ._config import write_effective_config
from ._types import diffusivity, parse_models, path_arg, seed
from .fit import add_noddi_options

log = get_logger(__name__)

HELP = "Run the participant (fit + normalise) or group (VBA + regions + decoding) stage."


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _dwi_filter(text: str) -> list[str]:
    from ..io.bids import format_dwi_filter, parse_dwi_filter

    try:
        wanted = parse_dwi_filter(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError("; ".join(p.problem for p in exc.problems)
                                         + " (write e.g. acq-b1000,run-2)") from exc
    if not wanted:
        raise argparse.ArgumentTypeError("empty filter (write e.g. acq-b1000,run-2)")
    return format_dwi_filter(wanted).split(",")


def _metrics(text: str) -> list[str]:
    names = [m.lower() for m in _csv(text)]
    known = registry.all_metrics()
    unknown = [m for m in names if m not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown metric(s) {unknown or [text]}; choose among "
                                         f"{','.join(known)}")
    return list(dict.fromkeys(names))


def _family(text: str) -> str:
    from ..stats.family import Family

    try:
        return Family.parse(text).value
    except InputError as exc:
        raise argparse.ArgumentTypeError(f"invalid family {text!r}: choose all, metrics, "
                                         "signs or none") from exc


def _npc(text: str) -> list[str]:
    from ..stats.family import NPC_FUNCTIONS

    names = [t.lower() for t in _csv(text)]  # empty (e.g. npc = [] in a config): no NPC
    bad = [t for t in names if t not in NPC_FUNCTIONS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown combining function(s) {bad}; choose among "
                                         f"{','.join(NPC_FUNCTIONS)}")
    return list(dict.fromkeys(names))


def _default_metrics(out_dir: Path) -> list[str]:
    """Every metric of the study (the tensor ones only when the participant stage wrote no
    NODDI map), plus those of the other registry models (gqi, mapmri, ...) it normalised."""
    tensor = [m for m in METRICS if PARAM_MODEL.get(m) == "tensor"]
    def written(model: str, param: str) -> bool:
        pattern = derivatives.model_map_name(derivatives.space_prefix("*", SPACE_MNI), model,
                                             param)
        return any(out_dir.glob(f"sub-*/**/{pattern}"))

    more = [m for name, spec in registry.REGISTRY.items() if name not in ("tensor", "noddi")
            and written(name, spec.metrics[0]) for m in spec.metrics]
    noddi = written("noddi", "icvf")
    if not noddi and written("tensor", "fa"):
        log.warning("no NODDI map in %s (participant stage run with --models tensor): "
                    "analysing %s", out_dir, ",".join(tensor + more))
        return tensor + more
    return list(METRICS) + more


def _defaults() -> tuple[dict, dict, dict]:
    """Each option's default, declared once in its settings dataclass."""
    from dataclasses import MISSING, fields

    from ..workflows.executor import ExecutionSettings, SlurmOptions
    from ..workflows.group import GroupSettings
    from ..workflows.participant import ParticipantSettings

    def of(cls) -> dict:
        return {f.name: f.default for f in fields(cls) if f.default is not MISSING}

    slurm = of(SlurmOptions)
    slurm.update(of(ExecutionSettings))
    return of(ParticipantSettings), of(GroupSettings), slurm


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pdef, gdef, xdef = _defaults()
    parser.add_argument("bids_dir", type=path_arg, help="the BIDS dataset (read only)")
    parser.add_argument("output_dir", type=path_arg, help="the derivatives folder to write")
    parser.add_argument("analysis_level", choices=["participant", "group"],
                        help="participant: per-subject fitting and normalisation; "
                             "group: voxel-based statistics, clusters, decoding, report")

    sel = parser.add_argument_group("selection")
    sel.add_argument("--participant-label", "--participant_label", nargs="+", default=None,
                     metavar="LABEL", help="subjects to process (without 'sub-')")
    sel.add_argument("--session-label", nargs="+", default=None, metavar="LABEL",
                     help="sessions to process (without 'ses-')")
    sel.add_argument("--dwi-filter", type=_dwi_filter, default=None,
                     metavar="ENTITY-VALUE[,...]",
                     help="participant: keep only the DWI series with these BIDS entities, "
                          "e.g. 'acq-b1000,acq-b2000' or 'run-1' or 'acq-b1000,dir-AP' "
                          "(values of one entity are alternatives, different entities must "
                          "all match). By default every DWI series of a subject/session is "
                          "used: several series (runs, acq-, dir-) on the same voxel grid "
                          "are concatenated, sorted by their entities, and fitted as one "
                          "scheme; b=0-only series (reverse phase encoding) are left out")

    fit = parser.add_argument_group("microstructure fitting (participant)")
    fit.add_argument("--models", type=parse_models, default=list(pdef["models"]),
                     help="comma-separated models: " + ", ".join(registry.REGISTRY)
                          + " (gqi and mapmri need a DSI grid or several shells)")
    fit.add_argument("--tissue", choices=list(TISSUE_D_PAR), default=pdef["tissue"],
                     help="NODDI intrinsic-diffusivity preset: wm = 1.7e-3, gm = 1.1e-3 mm^2/s")
    fit.add_argument("--d-par", type=diffusivity, default=pdef["d_par"],
                     help="NODDI intrinsic parallel diffusivity in mm^2/s (overrides --tissue)")
    fit.add_argument("--d-iso", type=diffusivity, default=pdef["d_iso"],
                     help="NODDI isotropic diffusivity in mm^2/s")
    fit.add_argument("--dti-bmax", type=float, default=pdef["dti_bmax"],
                     help="fit the tensor on volumes with b <= this (s/mm^2), as DSI Studio")
    fit.add_argument("--dti-method", choices=["wls", "ols"], default=pdef["dti_method"])
    fit.add_argument("--denoise", action="store_true", help="MP-PCA denoising before fitting")
    add_noddi_options(fit)
    registry.add_cli_options(fit)

    reg = parser.add_argument_group("normalisation")
    reg.add_argument("--resolution", type=float, default=pdef["resolution"],
                     help="MNI grid spacing in mm, 0.5 to 8")
    reg.add_argument("--skip-normalise", action="store_true",
                     help="participant stage: fit only, no MNI normalisation")

    grp = parser.add_argument_group("group statistics")
    grp.add_argument("--score", default=None, help="participants.tsv column to correlate with")
    grp.add_argument("--covariates", type=_csv, default=[],
                     help="comma-separated participants.tsv columns to control for")
    grp.add_argument("--metrics", type=_metrics, default=None,
                     help="comma-separated maps to analyse among "
                          + ",".join(registry.all_metrics())
                          + " (default: all that the participant stage wrote, i.e. fa,md,rd,ad "
                            "after --models tensor)")
    grp.add_argument("--n-perm", type=int, default=gdef["n_perm"],
                     help="number of permutations (>= 2; the smallest p is 1/n)")
    grp.add_argument("--seed", type=seed, default=gdef["seed"])
    grp.add_argument("--fwhm", type=float, default=gdef["fwhm"],
                     help="smoothing FWHM in mm, 0 = none (0 to 50)")
    grp.add_argument("--gm-threshold", type=float, default=gdef["gm_threshold"],
                     help="template GM probability defining the analysis mask, in (0, 1)")
    grp.add_argument("--alpha", type=float, default=gdef["alpha"],
                     help="FWE level for clusters, in (0, 1)")
    grp.add_argument("--loso-n-perm", type=int, default=gdef["loso_n_perm"],
                     help="permutations of the whole leave-one-subject-out behind each "
                          "cluster's loso_p and LOSO CI (0 to 100000; 0 = analytic, not "
                          "calibrated for a cluster chosen on the same data)")
    grp.add_argument("--correct-across", type=_family, nargs="?", const="all", default="all",
                     metavar="{all,metrics,signs,none}",
                     help="family over which the family-wise error is controlled, balanced by "
                          "Westfall-Young min-p (each map's statistic as a p-value against its "
                          "own permutation distribution): all = every metric and both signs "
                          "(default; a bare --correct-across also means all), metrics, signs, "
                          "or none = each map on its own (per-map FWE)")
    grp.add_argument("--npc", type=_npc, default=[], metavar="fisher[,tippett]",
                     help="also run a non-parametric combination across metrics (Winkler et "
                          "al. 2016) with these combining functions: one corrected map of "
                          "where microstructure as a whole tracks the score (group/npc/)")
    grp.add_argument("--data-dir", type=path_arg, default=None,
                     help="folder with the Neurosynth/NeuroQuery databases "
                          "(default $MICROVBA_DATA, else ~/.cache/microvba)")
    grp.add_argument("--no-decode", action="store_true", help="skip meta-analytic decoding")

    ex = parser.add_argument_group("execution")
    ex.add_argument("--n-jobs", type=int, default=xdef["n_jobs"],
                    help="local workers (default: cores; more than the usable cores are "
                         "reduced to them unless --oversubscribe)")
    ex.add_argument("--oversubscribe", action="store_true",
                    help="start --n-jobs workers even when that is more than the cores")
    ex.add_argument("--scheduler", default=xdef["scheduler"],
                    help="address of a running Dask scheduler (tcp://HOST:PORT)")
    ex.add_argument("--cluster", choices=["local", "slurm"], default=xdef["cluster"])
    ex.add_argument("--slurm-queue", default=xdef["queue"])
    ex.add_argument("--slurm-cores", type=int, default=xdef["cores"])
    ex.add_argument("--slurm-memory", default=xdef["memory"])
    ex.add_argument("--slurm-walltime", default=xdef["walltime"])
    ex.add_argument("--slurm-jobs", type=int, default=xdef["jobs"],
                    help="number of SLURM jobs to start")
    ex.add_argument("--force", action="store_true", help="recompute outputs that are up to date")



def build_settings(args: argparse.Namespace) -> None:
    """Build (and so check) every settings object of the run from the parsed options,
    before any file is read or written; ``args.n_jobs`` is capped to the usable cores."""
    from ..workflows.executor import ExecutionSettings
    from ..workflows.participant import executor_settings_from_args
    from ..workflows.participant import settings_from_args as participant_settings

    execution = ExecutionSettings(n_jobs=args.n_jobs, oversubscribe=args.oversubscribe,
                                  scheduler=args.scheduler, cluster=args.cluster)
    executor_settings_from_args(args)  # SLURM resources
    args.n_jobs = execution.n_jobs
    from ..workflows.group import settings_from_args as group_settings

    if args.analysis_level == "participant":
        participant_settings(args)
        if getattr(args, "config", None):  # every key of the file, whatever the stage
            _check_config_keys(args, group_settings)
        return
    metrics = args.metrics
    try:
        if metrics is None:  # the default depends on the outputs; check the others now
            args.metrics = list(METRICS)
        settings = group_settings(args)
    finally:
        args.metrics = metrics
    if getattr(args, "config", None):
        _check_config_keys(args, participant_settings)
    if 1.0 / settings.n_perm > settings.alpha:
        log.warning("--n-perm %d: no FWE p-value can be below 1/%d = %.3g, so nothing can "
                    "reach --alpha %g; pass --n-perm 5000 (as FSL randomise)", settings.n_perm,
                    settings.n_perm, 1.0 / settings.n_perm, settings.alpha)


def _same_value(in_file: object, parsed: object) -> bool:
    """Whether the parsed option still holds the config file's value (numbers compared as
    numbers, NaN equal to NaN; lists and text as written)."""
    import math

    def number(v):
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

    a, b = number(in_file), number(parsed)
    if a is not None and b is not None:
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(in_file, list | dict) or isinstance(parsed, list | tuple):
        return True  # converted (aliases, lists): assume the file's
    return str(in_file) == str(parsed)


def _check_config_keys(args: argparse.Namespace, other_stage) -> None:
    """Check the ``--config`` file's keys that belong to the other stage.

    One TOML file usually serves both stages; a value only the group stage uses
    (``n_perm = 0``) was accepted by the participant stage and refused hours later. The
    other stage's settings are built from the same options (a placeholder score and the
    default metrics where the group stage needs them), and a refusal of an option the file
    set is reported as the file's key; options not in the file are left to their stage.
    """
    from ._config import config_keys

    path = Path(args.config).expanduser()
    keys = config_keys(path)
    probe = argparse.Namespace(**vars(args))
    probe.score = probe.score or "score"
    probe.metrics = list(probe.metrics or METRICS)
    try:
        other_stage(probe)
    except InputError as exc:
        stage = "group" if args.analysis_level == "participant" else "participant"
        problems = []
        for p in exc.problems:
            key = str(p.file).lstrip("-").replace("-", "_")
            if key in keys and _same_value(keys[key], getattr(args, key, None)):
                # (a value the command line overrode is left to its stage)
                problems.append(Problem(str(path), f"key '{key}' (used by the {stage} stage): "
                                              f"{p.problem}", p.fix))
        if problems:
            raise InputError(problems) from None


def run(args: argparse.Namespace) -> int:
    bids_dir, out_dir = Path(args.bids_dir), Path(args.output_dir)
    build_settings(args)
    check_output_placement(bids_dir, out_dir)
    check_output_dir(out_dir)
    if args.metrics is None:
        args.metrics = _default_metrics(out_dir) if args.analysis_level == "group" \
            else list(METRICS)
    if args.analysis_level == "participant":
        from ..workflows.participant import run_participant_cli as stage
    else:
        from ..workflows.group import run_group_cli as stage
    code = stage(args)
    # the effective options, re-usable with --config, next to the outputs
    write_effective_config(args, out_dir / "logs" / f"{args.analysis_level}_config.toml")
    return code
