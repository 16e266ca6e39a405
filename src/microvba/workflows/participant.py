"""Participant stage: validate the dataset, then fit and normalise every subject.

One task per subject runs on the chosen executor (serial, local processes, Dask, SLURM).
A subject whose outputs are up to date (sidecar parameters and input hashes unchanged) is
skipped, so a killed run resumes where it stopped; a failing subject is reported and does not
stop the others.

A subject (or session) with several DWI series (``run-``, ``acq-``, ``dir-`` ...; see
:mod:`microvba.io.bids`) is fitted once, on the series concatenated along the 4th axis with
their ``.bval``/``.bvec`` in the same order (QSIPrep-like). Each series is first scaled so that
its mean b=0 intensity matches the first series' (receiver gain differs between runs; QSIPrep's
b=0 harmonisation), when it has b=0 volumes. The combined image is a work file under
``OUT/sub-<label>/[ses-<label>/]dwi/`` (a temporary name, removed after the fit and by the
next run if killed); the BIDS input is never written. Which series were combined, their
volumes and scale factors are recorded in ``OUT/logs/<prefix>_dwi-series.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import _defaults
from .._logging import get_logger
from .._provenance import (
    _tmp_prefix,
    clean_temporaries,
    file_hash,
    save_nifti,
    write_json,
    write_text,
)
from .._validation import InputError, Problem, check_option_choice, check_option_number
from ..io import derivatives
from ..io.derivatives import image_like, subject_dir, write_dataset_description
from .executor import SlurmOptions, TaskResult, make_executor, summarise_failures

log = get_logger(__name__)


@dataclass(frozen=True)
class ParticipantSettings:
    """What the participant stage computes (recorded with every run)."""

    models: tuple[str, ...] = ("tensor", "noddi")
    tissue: str = _defaults.TISSUE
    d_par: float | None = None
    d_iso: float = _defaults.D_ISO
    dti_bmax: float = 1750.0
    dti_method: str = "wls"
    denoise: bool = False
    resolution: float = 2.0
    skip_normalise: bool = False
    force: bool = False
    noddi_s0: str = "auto"
    noddi_noise: str = "auto"
    noddi_compat: str | None = None
    #: per-model options of registry models (``{"mapmri": {"laplacian": 0.2}}``)
    model_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check every value by its command-line name (exit code 2 before any file is read).

        Ranges: ``--models`` among :data:`microvba.models.KNOWN_MODELS`; ``--d-par`` and
        ``--d-iso`` in [1e-4, 5e-3] mm^2/s with ``--d-par`` < ``--d-iso`` (the free-water
        compartment diffuses fastest); ``--dti-bmax`` in (50, 1e5] s/mm^2 (above the b=0
        threshold, so the tensor has diffusion-weighted volumes); ``--resolution`` in
        [0.5, 8] mm (the template grids).
        """
        check_participant_settings(self)


def check_participant_settings(s: ParticipantSettings) -> None:
    """Raise :class:`InputError` naming the first invalid option of ``s`` (see
    :meth:`ParticipantSettings.__post_init__`)."""
    from ..io.gradients import B0_THRESHOLD
    from ..models import KNOWN_MODELS

    if isinstance(s.models, str) or not all(isinstance(m, str) for m in s.models):
        raise InputError(f"--models must be a comma-separated list of names; got {s.models!r}",
                         file="--models", fix=f"Pass e.g. --models {','.join(KNOWN_MODELS)}.")
    check_option_choice("--models", s.models, KNOWN_MODELS)
    check_option_choice("--tissue", s.tissue, tuple(_defaults.TISSUE_D_PAR))
    check_option_choice("--dti-method", s.dti_method, ("wls", "ols"))
    d_iso = check_option_number("--d-iso", s.d_iso, 1e-4, 5e-3, unit="mm^2/s",
                                hint="free water at body temperature is 3.0e-3")
    if s.d_par is not None:
        d_par = check_option_number("--d-par", s.d_par, 1e-4, 5e-3, unit="mm^2/s",
                                    hint="white matter 1.7e-3, gray matter 1.1e-3")
        if d_par >= d_iso:
            raise InputError(f"--d-par ({d_par:g}) must be below --d-iso ({d_iso:g})",
                             file="--d-par", fix="Pass --d-par below --d-iso (e.g. 1.7e-3 "
                                                 "with --d-iso 3.0e-3).")
    check_option_number("--dti-bmax", s.dti_bmax, float(B0_THRESHOLD), 1e5, low_open=True,
                        unit="s/mm^2", hint="b-values up to it are used for the tensor, "
                                            "e.g. 1750")
    check_option_number("--resolution", s.resolution, 0.5, 8.0, unit="mm",
                        hint="the MNI grid spacing, e.g. 2")
    from ..models.noddi import check_noddi_options

    check_noddi_options(s.noddi_s0, s.noddi_noise, s.noddi_compat)


def _b0_mean(data: np.ndarray, bvals: np.ndarray) -> float | None:
    from ..io.gradients import B0_THRESHOLD

    b0 = np.flatnonzero(bvals <= B0_THRESHOLD)
    if b0.size == 0:
        return None
    value = float(np.mean([np.mean(data[..., i], dtype=np.float64) for i in b0]))
    return value if np.isfinite(value) and value > 0 else None


def _combine_series(subject) -> tuple:
    """Concatenate a subject's DWI series: (image, bvals, bvecs, provenance record)."""
    import nibabel as nib

    from ..io.gradients import read_bvals, read_bvecs

    datas, bvals, bvecs, record = [], [], [], []
    ref_img = None
    ref_b0 = None
    start = 0
    for series in subject.series:
        img = nib.load(str(series.dwi))
        data = img.get_fdata(dtype=np.float32)
        b, g = read_bvals(series.bval), read_bvecs(series.bvec)
        b0 = _b0_mean(data, b)
        if ref_img is None:
            ref_img = img
        scale = 1.0
        if ref_b0 is None:
            ref_b0 = b0
        elif b0 is not None:
            scale = ref_b0 / b0
            data *= np.float32(scale)
        else:
            log.warning("%s: %s has no b=0 volume; its intensity is not harmonised with %s",
                        subject.prefix, series.dwi.name, subject.series[0].dwi.name)
        n = int(data.shape[3])
        record.append({"dwi": str(series.dwi), "bval": str(series.bval),
                       "bvec": str(series.bvec), "volumes": [start, start + n - 1],
                       "n_volumes": n, "b0_scale": scale,
                       "InputHashes": {k: file_hash(getattr(series, k))
                                       for k in ("dwi", "bval", "bvec")}})
        start += n
        datas.append(data)
        bvals.append(b)
        bvecs.append(g)
    data = np.concatenate(datas, axis=3)
    del datas
    return image_like(data, ref_img), np.concatenate(bvals), np.concatenate(bvecs, axis=0), record


def _user_names(text: str, work: tuple[Path, ...], subject) -> str:
    """``text`` with the combined work files' paths replaced by the series they hold."""
    series = (f"{subject.prefix} (series {', '.join(str(s.dwi) for s in subject.series)}, "
              "combined)")
    for path in work:
        text = text.replace(str(path), series)
    return text


@contextlib.contextmanager
def combined_inputs(subject, out_dir: Path) -> Iterator[tuple[Path, Path, Path]]:
    """The DWI, bval and bvec paths to fit: the subject's own files for a single series, or
    work files holding the concatenated series (removed on exit) for several."""
    if not subject.combined:
        yield subject.dwi, subject.bval, subject.bvec
        return
    img, bvals, bvecs, record = _combine_series(subject)
    work = subject_dir(out_dir, subject.label, subject.session)
    # a temporary name (.tmp-<pid>@<host>@...): removed below, or by clean_temporaries on the
    # next run when this one is killed; uncompressed, so the content (hashed by the fit's
    # up-to-date check) is the same from one run to the next
    stem = work / f"{_tmp_prefix()}{derivatives.combined_dwi_stem(subject.prefix)}"
    paths = (stem.with_name(stem.name + ".nii"), stem.with_name(stem.name + ".bval"),
             stem.with_name(stem.name + ".bvec"))
    log_path = (Path(out_dir) / derivatives.LOGS_DIR
                / derivatives.dwi_series_log_name(subject.prefix))
    write_json(log_path, {"Subject": subject.prefix, "Combined": record,
                          "Excluded": [str(p) for p in subject.excluded],
                          "NumberOfVolumes": int(img.shape[3]),
                          "Concatenation": "4th axis, in this order; each series scaled by "
                                           "b0_scale (its mean b=0 to the first series')"})
    log.info("%s: fitting %d DWI series combined (%s; %d volumes)", subject.prefix,
             len(subject.series), ", ".join(s.dwi.name for s in subject.series),
             img.shape[3])
    try:
        save_nifti(img, paths[0])
        del img
        write_text(paths[1], " ".join(f"{b:g}" for b in bvals) + "\n")
        write_text(paths[2], "\n".join(" ".join(f"{v:.10g}" for v in row)
                                       for row in bvecs.T) + "\n")
        try:
            yield paths
        except InputError as exc:  # name the user's series, not our work file
            raise InputError([Problem(*(_user_names(t, paths, subject) for t in (
                p.file, p.problem)), p.fix) for p in exc.problems]) from exc
    finally:
        for path in paths:
            path.unlink(missing_ok=True)


def process_subject(subject, out_dir: Path, settings: ParticipantSettings) -> dict:
    """Fit the models and normalise the maps of one subject; return its output paths.

    Several DWI series of the subject (session) are concatenated into one scheme first (see
    :func:`combined_inputs`).
    """
    from ..models.pipeline import fit_image

    with combined_inputs(subject, Path(out_dir)) as (dwi, bval, bvec):
        native = fit_image(
            dwi, bval, bvec,
            out_dir=subject_dir(out_dir, subject.label, subject.session),
            prefix=derivatives.space_prefix(subject.prefix),
            models=tuple(settings.models), d_par=settings.d_par, tissue=settings.tissue,
            d_iso=settings.d_iso, dti_bmax=settings.dti_bmax, dti_method=settings.dti_method,
            denoise=settings.denoise, force=settings.force, noddi_s0=settings.noddi_s0,
            noddi_noise=settings.noddi_noise, noddi_compat=settings.noddi_compat,
            sources=[str(p) for s in subject.series for p in (s.dwi, s.bval, s.bvec)]
            if subject.combined else None,
            options=settings.model_options or None,
        )
    result = {"native": {k: str(v) for k, v in native.items()}}
    if subject.combined:
        result["series"] = [str(s.dwi) for s in subject.series]
    if not settings.skip_normalise:
        from ..registration.normalise import normalise_subject

        norm = normalise_subject(native, out_dir=out_dir, prefix=subject.prefix,
                                 t1w=subject.t1w, resolution=settings.resolution,
                                 force=settings.force)
        result["mni"] = {k: str(v) for k, v in norm.maps.items()}
        result["qc"] = dict(norm.qc)
        _check_registration(subject.prefix, norm)
    return result


class RegistrationQCError(RuntimeError):
    """A registration below the absolute QC floors (a gross failure, e.g. a wrong header)."""


def _check_registration(prefix: str, norm) -> None:
    """Fail the subject when its registration is below an absolute floor (see qc.py)."""
    from ..registration.qc import below_floors

    low = below_floors(norm.qc)
    if low:
        raise RegistrationQCError(
            f"{prefix}: registration to the template failed its QC ({'; '.join(low)}: below "
            "the absolute floors, e.g. a header rotated or flipped). The normalised maps are "
            f"kept for inspection ({norm.figure}) and the group stage excludes this subject; "
            "fix the image orientation (qform/sform) and re-run the participant stage with "
            "--force.")


def run_participant(bids_dir: Path, out_dir: Path, settings: ParticipantSettings,
                    *, participant_label: list[str] | None = None,
                    session_label: list[str] | None = None,
                    executor=None, dataset=None,
                    dwi_filter: str | list[str] | None = None) -> list[TaskResult]:
    """Validate ``bids_dir``, then process every selected subject into ``out_dir``.

    Nothing is written before the whole dataset has been validated (``dataset`` may be
    given when the caller has validated it already). ``dwi_filter`` keeps only the DWI
    series with these BIDS entities (e.g. ``"acq-b1000,run-2"``; see
    :func:`microvba.io.bids.parse_dwi_filter`); the series left are combined.
    """
    from ..io.bids import validate_dataset

    if dataset is None:
        dataset = validate_dataset(bids_dir, subjects=participant_label,
                                   session_label=session_label, dwi_filter=dwi_filter)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    removed = clean_temporaries(out_dir)
    if removed:
        log.info("removed %d temporary files left by an interrupted run", removed)
    write_dataset_description(out_dir, source=bids_dir)
    write_json(out_dir / derivatives.LOGS_DIR / derivatives.PARTICIPANT_SETTINGS_JSON,
               asdict(settings))
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
        resolution=args.resolution, skip_normalise=args.skip_normalise, force=args.force,
        noddi_s0=getattr(args, "noddi_s0", "auto"),
        noddi_noise=getattr(args, "noddi_noise", "auto"),
        noddi_compat=getattr(args, "noddi_compat", None),
        model_options=_registry_options(args))


def executor_settings_from_args(args: argparse.Namespace) -> SlurmOptions:
    """The SLURM resources of the parsed options (checked when built)."""
    return SlurmOptions(queue=args.slurm_queue, cores=args.slurm_cores,
                        memory=args.slurm_memory, walltime=args.slurm_walltime,
                        jobs=args.slurm_jobs)


def _registry_options(args: argparse.Namespace) -> dict:
    """Every option of the requested registry models (defaults filled in: recorded in
    ``logs/participant_settings.json`` and quoted by the report's methods)."""
    from ..models import KNOWN_MODELS
    from ..models.registry import model_options, options_from_args

    check_option_choice("--models", args.models, KNOWN_MODELS)  # before the registry looks
    return model_options(args.models, options_from_args(args))


def executor_from_args(args: argparse.Namespace):
    slurm = executor_settings_from_args(args)
    return make_executor(n_jobs=args.n_jobs, scheduler=args.scheduler, cluster=args.cluster,
                         slurm=slurm)


def check_schemes(dataset, models) -> None:
    """Before any work: every subject's scheme must suit the requested models (NODDI, GQI
    and MAP-MRI need a DSI grid or several shells: a single-shell clinical dataset run with
    the default models used to fail every subject after the workers started); one
    InputError lists them all."""
    from .._validation import InputError, ProblemCollector
    from ..io.gradients import read_bvals, read_bvecs
    from ..models.gradients import GradientTable
    from ..models.mapmri import check_multishell
    from ..models.registry import get

    needy = [m for m in models if get(m).multishell]
    if not needy:
        return
    keep = ",".join(m for m in models if m not in needy) or "tensor"
    problems = ProblemCollector()
    for subject in dataset.subjects:
        try:
            gtab = GradientTable(np.concatenate([read_bvals(s.bval) for s in subject.series]),
                                 np.concatenate([read_bvecs(s.bvec) for s in subject.series]),
                                 source=str(subject.series[0].bvec))
            check_multishell(gtab, " and ".join(get(m).label for m in needy),
                             f"Leave {' and '.join(needy)} out of --models for this dataset "
                             f"(--models {keep}), or acquire a DSI grid or several shells.")
        except InputError as exc:
            problems.extend(exc)
    problems.raise_if_any()


def run_participant_cli(args: argparse.Namespace) -> int:
    from ..io.bids import validate_dataset

    settings = settings_from_args(args)
    # validate everything before starting workers (or submitting SLURM jobs)
    dataset = validate_dataset(args.bids_dir, subjects=args.participant_label,
                               session_label=args.session_label, score=args.score,
                               covariates=list(args.covariates),
                               dwi_filter=getattr(args, "dwi_filter", None))
    check_schemes(dataset, settings.models)
    with executor_from_args(args) as executor:
        results = run_participant(args.bids_dir, args.output_dir, settings,
                                  executor=executor, dataset=dataset)
    failed = summarise_failures(results)
    log.info("participant stage finished: %d ok, %d failed", len(results) - len(failed),
             len(failed))
    return 1 if failed else 0
