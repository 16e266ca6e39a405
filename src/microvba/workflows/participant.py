"""Participant stage: validate the dataset, then fit and normalise every subject.

One task per subject runs on the chosen executor (serial, local processes, Dask, SLURM).
A subject whose outputs are up to date (sidecar parameters and input hashes unchanged) is
skipped, so a killed run resumes where it stopped; a failing subject is reported and does not
stop the others.
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import asdict, dataclass
from pathlib import Path

from .._logging import get_logger
from .._provenance import clean_temporaries, write_json
from ..io.derivatives import subject_dir, write_dataset_description
from .executor import SlurmOptions, TaskResult, make_executor, summarise_failures

log = get_logger(__name__)


@dataclass(frozen=True)
class ParticipantSettings:
    """What the participant stage computes (recorded with every run)."""

    models: tuple[str, ...] = ("tensor", "noddi")
    tissue: str = "wm"
    d_par: float | None = None
    d_iso: float = 3.0e-3
    dti_bmax: float = 1750.0
    dti_method: str = "wls"
    denoise: bool = False
    resolution: float = 2.0
    skip_normalise: bool = False
    force: bool = False


def process_subject(subject, out_dir: Path, settings: ParticipantSettings) -> dict:
    """Fit the models and normalise the maps of one subject; return its output paths."""
    from ..models.pipeline import fit_image

    native = fit_image(
        subject.dwi, subject.bval, subject.bvec,
        out_dir=subject_dir(out_dir, subject.label, subject.session),
        prefix=f"{subject.prefix}_space-orig",
        models=tuple(settings.models), d_par=settings.d_par, tissue=settings.tissue,
        d_iso=settings.d_iso, dti_bmax=settings.dti_bmax, dti_method=settings.dti_method,
        denoise=settings.denoise, force=settings.force,
    )
    result = {"native": {k: str(v) for k, v in native.items()}}
    if not settings.skip_normalise:
        from ..registration.normalise import normalise_subject

        norm = normalise_subject(native, out_dir=out_dir, prefix=subject.prefix,
                                 t1w=subject.t1w, resolution=settings.resolution,
                                 force=settings.force)
        result["mni"] = {k: str(v) for k, v in norm.maps.items()}
        result["qc"] = dict(norm.qc)
    return result


def run_participant(bids_dir: Path, out_dir: Path, settings: ParticipantSettings,
                    participant_label: list[str] | None = None,
                    session_label: list[str] | None = None,
                    executor=None, dataset=None) -> list[TaskResult]:
    """Validate ``bids_dir``, then process every selected subject into ``out_dir``.

    Nothing is written before the whole dataset has been validated (``dataset`` may be
    given when the caller has validated it already).
    """
    from ..io.bids import validate_dataset

    if dataset is None:
        dataset = validate_dataset(bids_dir, subjects=participant_label,
                                   session_label=session_label)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    removed = clean_temporaries(out_dir)
    if removed:
        log.info("removed %d temporary files left by an interrupted run", removed)
    write_dataset_description(out_dir, source=bids_dir)
    write_json(out_dir / "logs" / "participant_settings.json", asdict(settings))
    log.info("participant stage: %d subject(s), models %s", len(dataset.subjects),
             ",".join(settings.models))
    task = functools.partial(process_subject, out_dir=out_dir, settings=settings)
    own = executor is None
    executor = executor or make_executor(n_jobs=1)
    try:
        results = executor.map(task, dataset.subjects, desc="subjects")
    finally:
        if own:
            executor.close()
    return results


def settings_from_args(args: argparse.Namespace) -> ParticipantSettings:
    return ParticipantSettings(
        models=tuple(args.models), tissue=args.tissue, d_par=args.d_par, d_iso=args.d_iso,
        dti_bmax=args.dti_bmax, dti_method=args.dti_method, denoise=args.denoise,
        resolution=args.resolution, skip_normalise=args.skip_normalise, force=args.force)


def executor_from_args(args: argparse.Namespace):
    slurm = SlurmOptions(queue=args.slurm_queue, cores=args.slurm_cores,
                         memory=args.slurm_memory, walltime=args.slurm_walltime,
                         jobs=args.slurm_jobs)
    return make_executor(n_jobs=args.n_jobs, scheduler=args.scheduler, cluster=args.cluster,
                         slurm=slurm)


def run_participant_cli(args: argparse.Namespace) -> int:
    from ..io.bids import validate_dataset

    settings = settings_from_args(args)
    # validate everything before starting workers (or submitting SLURM jobs)
    dataset = validate_dataset(args.bids_dir, subjects=args.participant_label,
                               session_label=args.session_label, score=args.score,
                               covariates=list(args.covariates))
    with executor_from_args(args) as executor:
        results = run_participant(args.bids_dir, args.output_dir, settings,
                                  executor=executor, dataset=dataset)
    failed = summarise_failures(results)
    log.info("participant stage finished: %d ok, %d failed", len(results) - len(failed),
             len(failed))
    return 1 if failed else 0
