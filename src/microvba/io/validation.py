"""Validate a whole BIDS dataset at once (gradients, images, grids, participants.tsv,
dataset_description.json): one InputError listing every problem (see :mod:`microvba.io.bids`)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._logging import get_logger, progress
from .._resources import image_size_problem
from .._validation import InputError, Problem, ProblemCollector, check_positive_int
from .discovery import (
    GRID_ATOL,
    Dataset,
    DwiSeries,
    Subject,
    _discover,
    entities,
    parse_dwi_filter,
)
from .gradients import (
    B0_THRESHOLD,
    BVEC_NORM_TOL,
    no_b0_problem,
    non_unit_problem,
    read_bvals,
    read_bvecs,
)
from .nifti_checks import _describe, _load_header, check_image_data, check_signal_volumes
from .participants import column_problems, read_participants

log = get_logger(__name__)

def check_gradients(subject: Subject | DwiSeries, n_volumes: int | None,
                    problems: ProblemCollector, require_b0: bool = True) -> None:
    """Check a series' ``.bval``/``.bvec`` against each other and the number of volumes.

    ``require_b0=False`` skips the b=0 check (a series combined with others: the b=0 volumes
    may be in another series of the scheme).
    """
    try:
        bvals = read_bvals(subject.bval)
    except InputError as exc:
        problems.extend(exc)
        bvals = None
    try:
        bvecs = read_bvecs(subject.bvec)
    except InputError as exc:
        problems.extend(exc)
        bvecs = None
    counts = {}
    if bvals is not None:
        counts[subject.bval.name] = bvals.size
    if bvecs is not None:
        counts[subject.bvec.name + " (columns)"] = bvecs.shape[0]
    if n_volumes is not None:
        counts[subject.dwi.name + " (volumes)"] = n_volumes
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{k}: {v}" for k, v in counts.items())
        problems.add(subject.bval if bvals is not None else subject.dwi,
                     f"the number of b-values, b-vectors and DWI volumes disagree ({detail})",
                     "Write one b-value and one b-vector column per DWI volume, in the order "
                     "of the volumes (e.g. regenerate them with dcm2niix).")
        return
    if bvals is None:
        return
    missing_b0 = no_b0_problem(bvals, B0_THRESHOLD) if require_b0 else None
    if missing_b0 is not None:
        problems.add(subject.bval, *missing_b0)
    if bvecs is None:
        return
    found = non_unit_problem(bvals, bvecs, B0_THRESHOLD, BVEC_NORM_TOL)
    if found is not None:
        problems.add(subject.bvec, *found)


def _check_dwi_image(series: DwiSeries, problems: ProblemCollector,
                     scans: dict | None = None) -> Any:
    """Check one DWI image; return it (None when unread or not 4-D).

    ``scans`` receives the streamed scan of the image (per-volume figures for
    :func:`~microvba.io.nifti_checks.check_signal_volumes`), keyed by the DWI path.
    """
    img = _load_header(series.dwi, problems)
    if img is None:
        return None
    if len(img.shape) == 3:
        problems.add(series.dwi, f"a 3-D image (shape {img.shape}) was given as DWI",
                     "Pass the 4-D DWI series (one volume per b-value), not a single "
                     "volume or a map.")
        return None
    if len(img.shape) != 4:
        problems.add(series.dwi, f"the DWI must be 4-D; it has shape {img.shape}",
                     "Re-export the DWI as a 4-D series (x, y, z, volume).")
        return None
    too_big = image_size_problem(series.dwi, img)  # before reading any voxel
    if too_big is not None:
        problems.add(series.dwi, *too_big)
        return None
    scan = check_image_data(series.dwi, img, problems)
    if scans is not None:
        scans[series.dwi] = scan
    return img


def _check_grids(subject: Subject, images: list[Any], problems: ProblemCollector) -> None:
    """Combined series must share the voxel grid (3-D shape and affine)."""
    ref_series, ref = subject.series[0], images[0]
    for series, img in zip(subject.series[1:], images[1:], strict=True):
        what = []
        if tuple(img.shape[:3]) != tuple(ref.shape[:3]):
            what.append(f"shape {tuple(img.shape[:3])} vs {tuple(ref.shape[:3])}")
        elif not np.allclose(img.affine, ref.affine, rtol=0, atol=GRID_ATOL):
            diff = float(np.max(np.abs(np.asarray(img.affine) - np.asarray(ref.affine))))
            what.append(f"affines differ by up to {diff:.3g} mm (tolerance {GRID_ATOL:g})")
        if what:
            problems.add(series.dwi,
                         f"not on the voxel grid of {ref_series.dwi.name} ({'; '.join(what)}), "
                         f"so the {len(subject.series)} DWI series of {subject.prefix} cannot "
                         "be combined into one scheme",
                         f"Resample the series onto one grid (e.g. flirt -applyxfm "
                         f"-usesqform, or mrgrid/antsApplyTransforms with "
                         f"{ref_series.dwi.name} as reference) and keep the result in "
                         f"derivatives, or process one grid at a time with --dwi-filter "
                         f"(e.g. --dwi-filter {_filter_hint(series.dwi)}).")


def _filter_hint(path: Path) -> str:
    ents = {k: v for k, v in entities(path).items() if k not in ("sub", "ses")}
    return ",".join(f"{k}-{v}" for k, v in ents.items()) or "run-1"


def _check_subject(subject: Subject, problems: ProblemCollector, check_images: bool) -> None:
    found = ProblemCollector()
    combined = subject.combined
    scans: dict = {}
    images = [_check_dwi_image(s, found, scans) if check_images else None
              for s in subject.series]
    if check_images and subject.t1w is not None:
        t1 = _load_header(subject.t1w, found)
        if t1 is not None:
            if len(t1.shape) != 3 and not (len(t1.shape) == 4 and t1.shape[3] == 1):
                found.add(subject.t1w, f"the T1w image must be 3-D; shape {t1.shape}",
                          "Provide a single 3-D T1-weighted volume.")
            elif (too_big := image_size_problem(subject.t1w, t1)) is not None:
                found.add(subject.t1w, *too_big)
            else:
                check_image_data(subject.t1w, t1, found)
    for s, img in zip(subject.series, images, strict=True):
        check_gradients(s, None if img is None else int(img.shape[3]), found,
                        require_b0=not combined)
        if img is not None and scans.get(s.dwi) is not None:  # dropped / inverted volumes
            try:
                bvals = read_bvals(s.bval)
            except InputError:
                bvals = None  # reported by check_gradients
            if bvals is not None and bvals.size == int(img.shape[3]):
                check_signal_volumes(s.dwi, img, scans[s.dwi], bvals, s.bval, found,
                                     B0_THRESHOLD)
    if combined:
        if check_images and all(img is not None for img in images):
            _check_grids(subject, images, found)
        _check_combined_b0(subject, found)
        if any(p.file != str(subject.t1w) for p in found.problems):
            names = ", ".join(s.dwi.name for s in subject.series)
            found.add(subject.dwi.parent,
                      f"the {len(subject.series)} DWI series ({names}) are combined into one "
                      f"scheme; the problems listed for them must be fixed first",
                      "Fix those series, or leave some out with --dwi-filter (BIDS entities, "
                      "e.g. --dwi-filter run-1 or acq-b1000,acq-b2000).")
    problems.problems.extend(found.problems)


def _check_combined_b0(subject: Subject, problems: ProblemCollector) -> None:
    """The combined scheme needs a b=0 volume in at least one series."""
    all_bvals = []
    for s in subject.series:
        try:
            all_bvals.append(read_bvals(s.bval))
        except InputError:
            return  # reported by check_gradients
    missing_b0 = no_b0_problem(np.concatenate(all_bvals), B0_THRESHOLD)
    if missing_b0 is not None:
        problems.add(subject.bval, f"{missing_b0[0]} (in any of the "
                                   f"{len(subject.series)} combined series)", missing_b0[1])


def _check_one(subject: Subject, check_images: bool) -> ProblemCollector:
    found = ProblemCollector()
    _check_subject(subject, found, check_images)
    return found


def _check_subjects(subjects: list[Subject], check_images: bool,
                    n_jobs: int) -> list[ProblemCollector]:
    """Problems of each subject, in subject order (threads when ``n_jobs > 1``)."""
    n_jobs = check_positive_int("n_jobs", n_jobs)
    bar = functools.partial(progress, desc="validating inputs", total=len(subjects),
                            unit="subject")
    if n_jobs == 1 or len(subjects) < 2:
        return [_check_one(s, check_images) for s in bar(subjects)]
    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        return list(bar(pool.map(functools.partial(_check_one, check_images=check_images),
                                 subjects)))


# ---------------------------------------------------------------------------------------------
# participants.tsv


def _check_participants(root: Path, subjects: list[Subject], all_labels: list[str],
                        score: str | None, covariates: Sequence[str],
                        problems: ProblemCollector) -> pd.DataFrame:
    path = root / "participants.tsv"
    labels = list(dict.fromkeys(s.label for s in subjects))
    empty = pd.DataFrame(index=pd.Index([s.label for s in subjects], name="participant"))
    needed = score is not None or bool(covariates)
    if not path.exists() and not needed:
        return empty
    try:
        df = read_participants(path)
    except InputError as exc:
        problems.extend(exc)
        return empty
    no_row = [lab for lab in labels if lab not in df.index]
    if no_row:
        problems.add(path, f"{len(no_row)} subject(s) with images but no row: "
                           + ", ".join(f"sub-{lab}" for lab in no_row),
                     "Add a row (participant_id sub-<label>) for each of them.")
    no_images = [lab for lab in df.index if lab not in all_labels]
    if no_images:
        problems.add(path, f"{len(no_images)} row(s) without images (no sub-<label> folder): "
                           + ", ".join(f"sub-{lab}" for lab in no_images),
                     "Remove these rows or add the subjects' images.")
    present = [lab for lab in labels if lab in df.index]
    requested = ([score] if score is not None else []) + list(covariates)
    dup = sorted({c for c in requested if requested.count(c) > 1})
    if dup:
        problems.add(path, f"column(s) {dup} requested more than once (as score and/or "
                           "covariate)",
                     "Use each column once; the score cannot also be a covariate.")
    for col in dict.fromkeys(requested):
        found = column_problems(df, col, present, path, numeric=(col == score))
        if col not in df.columns and (where := _phenotype_file(root, col)) is not None:
            found.problems[:] = [Problem(p.file, f"{p.problem}; {where.name} in phenotype/ "
                                         f"has a '{col}' column", "Copy that column into "
                                         "participants.tsv (matched by participant_id): "
                                         "microvba reads the score and covariates there.")
                                 for p in found.problems]
        problems.problems.extend(found.problems)
    if no_row:
        return empty
    return df.loc[[s.label for s in subjects]]


def check_one_session_per_subject(root: str | Path, subjects: Sequence[Subject]) -> None:
    """InputError when a subject enters with more than one session.

    The group stage correlates one image per subject with a per-subject score: two sessions
    of one subject would enter the GLM as two independent subjects with the same score
    (pseudo-replication), doubling the apparent sample and inflating every statistic.
    """
    sessions: dict[str, list[str]] = {}
    for s in subjects:
        sessions.setdefault(s.label, []).append(s.session or "")
    repeated = {lab: ses for lab, ses in sessions.items() if len(ses) > 1}
    if not repeated:
        return
    shown = "; ".join(f"sub-{lab}: {', '.join('ses-' + x for x in ses)}"
                      for lab, ses in list(repeated.items())[:5])
    more = f" and {len(repeated) - 5} more" if len(repeated) > 5 else ""
    common = sorted(set.intersection(*(set(v) for v in repeated.values())))
    example = common[0] if common else "LABEL"
    raise InputError(
        f"{len(repeated)} subject(s) have several sessions ({shown}{more}); the group "
        "stage tests one image per subject against the score, and each session would "
        "enter as another subject with the same score (pseudo-replication: the sample "
        "looks twice as large and every p-value is too small)", file=root,
        fix=f"Pick one session per subject with --session-label (e.g. --session-label "
            f"{example}) and run the group stage once per session.")


def _phenotype_file(root: Path, column: str) -> Path | None:
    """The BIDS ``phenotype/*.tsv`` whose header names ``column`` (questionnaire scores
    such as a CD-RISC total live there), or None."""
    folder = root / "phenotype"
    for tsv in sorted(folder.glob("*.tsv")) if folder.is_dir() else []:
        try:
            with tsv.open(encoding="utf-8-sig", errors="replace") as fh:
                header = fh.readline(65536)
        except OSError:
            continue
        if column in (c.strip() for c in header.rstrip("\r\n").split("\t")):
            return tsv
    return None


def check_dataset_description(root: Path, problems: ProblemCollector) -> None:
    """Check ``dataset_description.json`` as the BIDS validator does.

    Errors (the validator's classification, BIDS 1.9): the file is missing
    (``DATASET_DESCRIPTION_JSON_MISSING``), is not valid JSON (``JSON_INVALID``), is not a
    JSON object, or lacks the required ``Name`` or ``BIDSVersion`` (``JSON_KEY_REQUIRED``;
    both must be strings). A missing recommended key (``Authors``, ``DatasetType``...) is a
    validator warning: it is logged and does not stop the run.
    """
    import json

    path = root / "dataset_description.json"
    fix_new = ('Write a dataset_description.json at the dataset root, at least '
               '{"Name": "<study name>", "BIDSVersion": "1.9.0"} (BIDS 1.9, section '
               '"Dataset description").')
    if not path.is_file():
        problems.add(path, "missing: the BIDS validator reports the compulsory "
                           "dataset_description.json as an error "
                           "(DATASET_DESCRIPTION_JSON_MISSING)", fix_new)
        return
    try:
        text = path.read_bytes()[: 2**20 + 1]
        if len(text) > 2**20:
            raise ValueError("larger than 1 MiB")
        doc = json.loads(text.decode("utf-8"))
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError included
        problems.add(path, f"not valid JSON ({_describe(exc)}; JSON_INVALID)",
                     "Repair the file (check it with python -m json.tool), or replace it: "
                     + fix_new)
        return
    if not isinstance(doc, dict):
        problems.add(path, f"the content is a JSON {type(doc).__name__}, not an object "
                           "(JSON_SCHEMA_VALIDATION_ERROR)", fix_new)
        return
    absent = [k for k in ("Name", "BIDSVersion") if not isinstance(doc.get(k), str)
              or not doc.get(k).strip()]
    if absent:
        problems.add(path, f"the required key(s) {', '.join(absent)} are missing or not "
                           "non-empty strings (JSON_KEY_REQUIRED)",
                     'Add them, e.g. "Name": "<study name>", "BIDSVersion": "1.9.0".')
        return
    recommended = [k for k in ("Authors", "DatasetType", "License") if k not in doc]
    if recommended:
        log.warning("%s: recommended key(s) %s missing (a BIDS validator warning)", path,
                    ", ".join(recommended))


def validate_dataset(bids_dir: str | Path, *, subjects: Sequence[Subject] | Sequence[str] |
                     str | None = None, score: str | None = None,
                     covariates: Sequence[str] = (), check_images: bool = True,
                     session_label: Sequence[str] | str | None = None,
                     n_jobs: int = 1, dwi_filter: str | Sequence[str] | None = None
                     ) -> Dataset:
    """Check everything a run will read, and report every problem at once.

    Parameters
    ----------
    bids_dir
        The BIDS dataset.
    subjects
        Which subjects: None (all), participant labels (with or without ``sub-``), or
        :class:`Subject` objects from :func:`discover`.
    score
        ``participants.tsv`` column that must hold a number for every selected subject.
    covariates
        Columns that must be complete for every selected subject: numeric, or categorical
        (text labels only, e.g. ``sex`` = M/F).
    check_images
        Read every image in full (truncation, NaN/inf) and check its dimensions; False checks
        the gradient files and participants.tsv only.
    session_label
        Keep only these sessions.
    n_jobs
        Threads checking subjects in parallel (decompression and NumPy release the GIL);
        problems are reported in subject order whatever the value.
    dwi_filter
        Keep only the DWI series matching these BIDS entities (:func:`parse_dwi_filter`);
        ignored when ``subjects`` are :class:`Subject` objects (already selected).

    Returns
    -------
    Dataset

    Raises
    ------
    InputError
        Listing every problem found (see the module docstring for the checks).
    """
    root = Path(bids_dir)
    wanted = parse_dwi_filter(dwi_filter)
    problems = ProblemCollector()
    if subjects is not None and not isinstance(subjects, str) and all(
            isinstance(s, Subject) for s in subjects):
        selected = list(subjects)
    else:
        selected = _discover(root, subjects, session_label, problems, wanted)
    all_labels = [p.name[4:] for p in root.iterdir() if p.is_dir()
                  and p.name.startswith("sub-")] if root.is_dir() else []
    if not selected and not problems:
        problems.add(root, "no subject left to process",
                     "Check --participant-label / --session-label.")
    check_dataset_description(root, problems)
    for found in _check_subjects(selected, check_images, n_jobs):
        problems.problems.extend(found.problems)
    covariates = [covariates] if isinstance(covariates, str) else list(covariates)
    participants = _check_participants(root, selected, all_labels, score, covariates, problems)
    problems.raise_if_any()
    log.info("validated %d subject(s) in %s", len(selected), root)
    return Dataset(root=root, subjects=selected, participants=participants)
