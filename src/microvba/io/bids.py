"""BIDS input: find subjects and sessions, and validate a dataset before any work starts.

Layout read (BIDS 1.9)::

    BIDS_DIR/participants.tsv
    BIDS_DIR/sub-<label>[/ses-<label>]/dwi/sub-<label>[_ses-<label>][_<entity>-<v>...]_dwi.nii[.gz]
                                           (+ the same name with .bval, .bvec, optional .json)
    BIDS_DIR/sub-<label>[/ses-<label>]/anat/..._T1w.nii[.gz]   (optional)

:func:`discover` lists the subjects; :func:`validate_dataset` checks everything a run will
read and raises one :class:`~microvba._validation.InputError` listing every problem, so a
malformed dataset never costs a half-written output folder.

Checks and tolerances
---------------------
- the ``.bval`` count, the ``.bvec`` columns and the number of DWI volumes agree;
- the ``.bvec`` file has 3 rows (x, y, z) (an N x 3 file is accepted and transposed);
- a volume with :math:`b \\le` :data:`B0_THRESHOLD` (50 s/mm², DIPY's ``b0_threshold``) is a
  b=0 volume and its vector is ignored; at least one is required;
- a volume with :math:`b >` :data:`B0_THRESHOLD` needs a unit vector:
  :math:`|\\lVert g \\rVert - 1| \\le` :data:`BVEC_NORM_TOL` (0.01, the tolerance with which
  DIPY's ``gradient_table`` accepts b-vectors);
- the DWI is a 4-D NIfTI, the T1w (if any) a 3-D one; both are read in full (in chunks of at
  most :data:`CHUNK_BYTES`, so memory stays bounded) to detect truncated or corrupt files and
  NaN or infinite voxels;
- ``participants.tsv`` (see :mod:`microvba.io.participants`): one row per subject with images
  and no row without images; the score column holds numbers and the covariate columns numbers
  or text labels (categorical), with no missing value for a selected subject.
"""

from __future__ import annotations

import functools
import gzip
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._logging import get_logger, progress
from .._validation import InputError, ProblemCollector, check_positive_int
from .gradients import (
    B0_THRESHOLD,
    BVEC_NORM_TOL,
    no_b0_problem,
    non_unit_problem,
    read_bvals,
    read_bvecs,
)
from .participants import column_problems, read_participants

log = get_logger(__name__)

# B0_THRESHOLD (50 s/mm^2) and BVEC_NORM_TOL (0.01) come from .gradients, shared with `fit`
#: largest block of image data read at once when checking a NIfTI file
CHUNK_BYTES = 128 * 2**20

_NIFTI_EXT = (".nii.gz", ".nii")
_LABEL = re.compile(r"^[A-Za-z0-9]+$")


@dataclass(frozen=True)
class Subject:
    """The inputs of one subject (and session): a DWI series and, optionally, a T1w image."""

    label: str
    session: str | None
    dwi: Path
    bval: Path
    bvec: Path
    json: Path | None = None
    t1w: Path | None = None

    @property
    def prefix(self) -> str:
        """BIDS entities prefix, ``sub-<label>`` or ``sub-<label>_ses-<label>``."""
        return f"sub-{self.label}" + (f"_ses-{self.session}" if self.session else "")


@dataclass
class Dataset:
    """A validated BIDS dataset.

    Attributes
    ----------
    root
        The dataset folder.
    subjects
        Selected subjects (and sessions), sorted by label then session.
    participants
        ``participants.tsv`` restricted to ``subjects``, one row per subject in the same order
        (a label with several sessions repeats its row), indexed by label without ``sub-``.
        Without a participants.tsv it has the index and no column.
    """

    root: Path
    subjects: list[Subject]
    participants: pd.DataFrame = field(repr=False)


# ---------------------------------------------------------------------------------------------
# discovery


def _strip(prefix: str, labels: Iterable[str] | str | None) -> list[str] | None:
    if labels is None:
        return None
    if isinstance(labels, str | int):
        labels = [labels]
    # "01,02" or "01 02" in one argument (or a TOML list of numbers) -> ["01", "02"]
    split = [t for lab in labels for t in re.split(r"[\s,]+", str(lab).strip()) if t]
    return [lab[len(prefix):] if lab.startswith(prefix) else lab for lab in split]


def _nifti_stem(path: Path) -> str:
    name = path.name
    for ext in _NIFTI_EXT:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _niftis(folder: Path, suffix: str) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".")  # skip ._* and editor files
                  and any(p.name.endswith(f"{suffix}{e}") for e in _NIFTI_EXT))


def _find_t1w(sub_dir: Path, ses_dir: Path) -> Path | None:
    for folder in dict.fromkeys([ses_dir / "anat", sub_dir / "anat"]):
        found = _niftis(folder, "_T1w")
        if len(found) > 1:
            log.warning("%s: %d T1w images, using %s", folder, len(found), found[0].name)
        if found:
            return found[0]
    return None


def _broken_links(folder: Path, suffix: str) -> list[Path]:
    """Symbolic links named like ``*{suffix}.nii[.gz]`` whose target is missing."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_symlink() and not p.exists()
                  and any(p.name.endswith(f"{suffix}{e}") for e in _NIFTI_EXT))


_ANNEX_FIX = ("Fetch the file content (for a DataLad / git-annex dataset: datalad get <file>), "
              "or copy the file itself instead of a link.")


def _inherited(dwi: Path, ext: str, upper: Sequence[Path]) -> Path:
    """The ``ext`` companion of ``dwi``: beside it, else inherited from a higher level.

    BIDS inheritance: a file in ``ses-*/``, ``sub-*/`` or the dataset root applies when its
    entities are a subset of the image's (``dwi.bval`` at the root serves every subject;
    ``acq-mb3_dwi.bval`` every ``..._acq-mb3_dwi``); the nearest level wins, then the most
    specific name. Without any, the path beside the image is returned (reported missing).
    """
    stem = _nifti_stem(dwi)
    beside = dwi.with_name(stem + ext)
    if beside.exists() or beside.is_symlink():
        return beside
    entities = set(stem.split("_")[:-1])
    for folder in dict.fromkeys([dwi.parent, *upper]):
        if not folder.is_dir():
            continue
        found = []
        for p in folder.iterdir():
            name = p.name
            if not name.endswith(ext) or not (name == f"dwi{ext}"
                                              or name.endswith(f"_dwi{ext}")):
                continue
            parts = name[: -len(ext)].split("_")[:-1]
            if set(parts) <= entities:
                found.append((len(parts), p))
        if found:
            return max(found)[1]
    return beside


def _has_diffusion_weighting(dwi: Path) -> bool:
    """False only when the series' .bval is readable and holds b=0 volumes only."""
    try:
        return bool(np.any(read_bvals(_inherited(dwi, ".bval", ())) > B0_THRESHOLD))
    except InputError:
        return True  # unreadable: keep it, validation reports the file


def _subject_in(sub_dir: Path, ses_dir: Path, session: str | None,
                problems: ProblemCollector) -> Subject | None:
    label = sub_dir.name[4:]
    where = ses_dir / "dwi"
    dwis = _niftis(where, "_dwi")
    broken = _broken_links(where, "_dwi")
    for link in broken:
        problems.add(link, "a symbolic link whose target does not exist (file content not "
                           "present)", _ANNEX_FIX)
    if broken:
        return None
    if not dwis:
        leave_out = ("this session out with --session-label" if session is not None
                     else "this subject out with --participant-label")
        problems.add(where, "no DWI image (*_dwi.nii or *_dwi.nii.gz) found",
                     f"Add the subject's DWI series here, or leave {leave_out}.")
        return None
    if len(dwis) > 1:
        weighted = [d for d in dwis if _has_diffusion_weighting(d)]
        if len(weighted) == 1:  # the others: b=0-only series (reverse phase encoding)
            log.warning("%s: using %s; ignoring the b=0-only series %s (e.g. reverse "
                        "phase-encoding scans for distortion correction)", where,
                        weighted[0].name, ", ".join(d.name for d in dwis if d not in weighted))
            dwis = weighted
    if len(dwis) > 1:
        problems.add(where, f"{len(dwis)} DWI series ({', '.join(p.name for p in dwis)}); "
                            "microvba uses one per subject and session",
                     "Keep one diffusion-weighted series per subject and session (move the "
                     "others out of the dataset, e.g. to sourcedata/), or merge the runs into "
                     "one series with its .bval/.bvec concatenated in the same order.")
        return None
    dwi = dwis[0]
    bval, bvec, sidecar = (_inherited(dwi, ext, (ses_dir, sub_dir, sub_dir.parent))
                           for ext in (".bval", ".bvec", ".json"))
    ok = True
    for f, what in ((bval, "b-values"), (bvec, "b-vectors")):
        if f.is_symlink() and not f.exists():
            problems.add(f, f"a symbolic link whose target does not exist (the {what} of "
                            f"{dwi.name}; file content not present)", _ANNEX_FIX)
            ok = False
        elif not f.is_file():
            problems.add(f, f"missing: the {what} of {dwi.name}",
                         f"Write the {what} in FSL format as {f.name} beside the DWI.")
            ok = False
    if not ok:
        return None
    t1w = _find_t1w(sub_dir, ses_dir)
    if t1w is None:
        for folder in dict.fromkeys([ses_dir / "anat", sub_dir / "anat"]):
            for link in _broken_links(folder, "_T1w"):
                problems.add(link, "a symbolic link whose target does not exist (file "
                                   "content not present)", _ANNEX_FIX)
    return Subject(label=label, session=session, dwi=dwi, bval=bval, bvec=bvec,
                   json=sidecar if sidecar.is_file() else None, t1w=t1w)


def _discover(bids_dir: str | Path, participant_label: Sequence[str] | str | None,
              session_label: Sequence[str] | str | None,
              problems: ProblemCollector) -> list[Subject]:
    root = Path(bids_dir)
    if not root.exists():
        raise InputError("the BIDS folder does not exist", file=root,
                         fix="Pass the path of an existing BIDS dataset as BIDS_DIR.")
    if not root.is_dir():
        raise InputError("BIDS_DIR is a file, not a folder", file=root,
                         fix="Pass the dataset folder (the one holding participants.tsv).")
    sub_dirs = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("sub-"))
    if not sub_dirs:
        what = "the folder is empty" if not any(root.iterdir()) else "no sub-<label> folder"
        raise InputError(f"no subjects found: {what}", file=root,
                         fix="Pass a BIDS dataset: BIDS_DIR/sub-<label>/dwi/"
                             "sub-<label>_dwi.nii.gz with .bval and .bvec beside it.")
    wanted = _strip("sub-", participant_label)
    sessions = _strip("ses-", session_label)
    available = [p.name[4:] for p in sub_dirs]
    if wanted is not None:
        absent = [w for w in wanted if w not in available]
        if absent:
            problems.add(root, f"participant label(s) {absent} not found "
                               f"(available: {available})",
                         "Pass labels of existing sub-<label> folders, without 'sub-'.")
        sub_dirs = [p for p in sub_dirs if p.name[4:] in wanted]
    subjects: list[Subject] = []
    seen_sessions: set[str] = set()
    for sub_dir in sub_dirs:
        if not _LABEL.match(sub_dir.name[4:]):
            problems.add(sub_dir, "the label is not alphanumeric",
                         "Rename the folder sub-<label> with letters and digits only.")
            continue
        ses_dirs = sorted(p for p in sub_dir.iterdir()
                          if p.is_dir() and p.name.startswith("ses-"))
        if not ses_dirs:
            s = _subject_in(sub_dir, sub_dir, None, problems)
            subjects += [s] if s else []
            continue
        for ses_dir in ses_dirs:
            ses = ses_dir.name[4:]
            seen_sessions.add(ses)
            if sessions is not None and ses not in sessions:
                continue
            s = _subject_in(sub_dir, ses_dir, ses, problems)
            subjects += [s] if s else []
    if sessions is not None:
        absent = [s for s in sessions if s not in seen_sessions]
        if absent:
            problems.add(root, f"session label(s) {absent} not found "
                               f"(available: {sorted(seen_sessions)})",
                         "Pass labels of existing ses-<label> folders, without 'ses-'.")
    return sorted(subjects, key=lambda s: (s.label, s.session or ""))


def discover(bids_dir: str | Path, participant_label: Sequence[str] | str | None = None,
             session_label: Sequence[str] | str | None = None) -> list[Subject]:
    """Find the subjects (and sessions) of a BIDS dataset.

    Parameters
    ----------
    bids_dir
        The dataset folder.
    participant_label, session_label
        Keep only these labels (with or without ``sub-`` / ``ses-``).

    Returns
    -------
    list of Subject
        Sorted by label, then session.

    Raises
    ------
    InputError
        The folder does not exist or holds no subject, a requested label is absent, or a
        subject lacks its DWI, ``.bval`` or ``.bvec`` (every problem is listed).
    """
    problems = ProblemCollector()
    subjects = _discover(bids_dir, participant_label, session_label, problems)
    problems.raise_if_any()
    return subjects


# ---------------------------------------------------------------------------------------------
# image and gradient checks

def nifti_read_errors() -> tuple[type[BaseException], ...]:
    """Errors nibabel, gzip and zlib raise on unreadable, corrupt or truncated files."""
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    return (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile, ImageFileError,
            HeaderDataError, MemoryError)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: " + " ".join(str(exc).split())


def nifti_read_fix(path: Path) -> str:
    """The fix for an unreadable NIfTI file, specific when the name lies about compression."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(2)
    except OSError:
        magic = b""
    if path.name.endswith(".gz") and magic and magic != b"\x1f\x8b":
        return (f"The file is not gzip-compressed although its name ends in .gz: rename it "
                f"to {path.name[:-3]} (or compress it with gzip).")
    if path.name.endswith(".nii") and magic == b"\x1f\x8b":
        return f"The file is gzip-compressed: rename it to {path.name}.gz."
    if path.name.endswith((".mif", ".mif.gz")):
        return ("Convert the MRtrix image to NIfTI with its gradient table: mrconvert "
                f"{path.name} dwi.nii.gz -export_grad_fsl dwi.bvec dwi.bval")
    if not path.name.endswith((".nii", ".nii.gz")):
        return ("Convert the image to NIfTI (.nii or .nii.gz), e.g. dcm2niix for DICOM, "
                "mrconvert for MRtrix .mif, mri_convert for .mgz.")
    return ("Copy the file again if it was cut short, or re-export it as NIfTI (e.g. with "
            "dcm2niix).")


def _load_header(path: Path, problems: ProblemCollector) -> Any:
    import nibabel as nib

    try:
        img = nib.load(str(path), keep_file_open=True)
        shape = img.shape
        np.dtype(img.get_data_dtype())
    except nifti_read_errors() as exc:
        problems.add(path, f"not a readable NIfTI image ({_describe(exc)})",
                     nifti_read_fix(path))
        return None
    if any(int(n) <= 0 for n in shape):
        problems.add(path, f"image has an empty dimension (shape {shape})",
                     "Re-export the image; every dimension must be at least 1.")
        return None
    return img


def _blocks(shape: tuple[int, ...], chunk_bytes: int) -> Iterator[tuple]:
    """Index tuples covering an image in contiguous blocks of about ``chunk_bytes``."""
    if len(shape) not in (3, 4):
        yield (...,)
        return
    itemsize = 8  # scaled data may be float64
    nz = int(shape[2])
    vol_bytes = int(np.prod(shape[:3], dtype=np.int64)) * itemsize
    per = max(1, chunk_bytes // max(vol_bytes // nz, 1))  # z-planes per block
    if len(shape) == 3:
        for k in range(0, nz, per):
            yield (slice(None), slice(None), slice(k, min(k + per, nz)))
        return
    n_vol = int(shape[3])
    if vol_bytes <= chunk_bytes:
        step = max(1, chunk_bytes // vol_bytes)
        for i in range(0, n_vol, step):
            yield (..., slice(i, min(i + step, n_vol)))
        return
    for t in range(n_vol):
        for k in range(0, nz, per):
            yield (slice(None), slice(None), slice(k, min(k + per, nz)), t)


def check_image_data(path: Path, img: Any, problems: ProblemCollector,
                     chunk_bytes: int = CHUNK_BYTES) -> None:
    """Read every voxel of ``img`` in bounded chunks; report truncation and NaN/inf values.

    Blocks are runs of whole volumes (contiguous in a NIfTI file), or runs of z-planes of one
    volume when a volume alone exceeds ``chunk_bytes``, so about ``chunk_bytes`` of data (as
    float64) is held at once whatever the image size.
    """
    if path.name.endswith(".nii"):  # uncompressed: the size tells truncation before reading
        offset = getattr(img.dataobj, "offset", None)
        offset = img.header.get_data_offset() if offset is None else offset
        needed = int(offset) + int(np.prod(img.shape, dtype=np.int64)) * int(
            img.header.get_data_dtype().itemsize)
        size = path.stat().st_size
        if size < needed:
            problems.add(path, f"truncated image: the header describes {needed} bytes but the "
                               f"file has {size}",
                         "Copy or re-export the file again; its data ends before the header "
                         "says.")
            return
    n_bad = 0
    try:
        for index in _blocks(tuple(int(n) for n in img.shape), chunk_bytes):
            block = np.asanyarray(img.dataobj[index])
            if block.dtype.kind in "fc":
                n_bad += int(np.count_nonzero(~np.isfinite(block)))
    except nifti_read_errors() as exc:
        problems.add(path, f"truncated or corrupt image data ({_describe(exc)})",
                     "Copy or re-export the file again; its data ends before the header says "
                     "or does not decompress.")
        return
    if n_bad:
        problems.add(path, f"{n_bad} voxel value(s) are NaN or infinite",
                     "Re-export the image, or replace non-finite values (e.g. by 0) before "
                     "running microvba.")


def check_gradients(subject: Subject, n_volumes: int | None,
                    problems: ProblemCollector) -> None:
    """Check a subject's ``.bval``/``.bvec`` against each other and the number of volumes."""
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
    missing_b0 = no_b0_problem(bvals, B0_THRESHOLD)
    if missing_b0 is not None:
        problems.add(subject.bval, *missing_b0)
    if bvecs is None:
        return
    found = non_unit_problem(bvals, bvecs, B0_THRESHOLD, BVEC_NORM_TOL)
    if found is not None:
        problems.add(subject.bvec, *found)


def _check_subject(subject: Subject, problems: ProblemCollector, check_images: bool) -> None:
    n_volumes = None
    if check_images:
        img = _load_header(subject.dwi, problems)
        if img is not None:
            if len(img.shape) == 3:
                problems.add(subject.dwi, f"a 3-D image (shape {img.shape}) was given as DWI",
                             "Pass the 4-D DWI series (one volume per b-value), not a single "
                             "volume or a map.")
            elif len(img.shape) != 4:
                problems.add(subject.dwi, f"the DWI must be 4-D; it has shape {img.shape}",
                             "Re-export the DWI as a 4-D series (x, y, z, volume).")
            else:
                n_volumes = int(img.shape[3])
                check_image_data(subject.dwi, img, problems)
        if subject.t1w is not None:
            t1 = _load_header(subject.t1w, problems)
            if t1 is not None:
                if len(t1.shape) != 3 and not (len(t1.shape) == 4 and t1.shape[3] == 1):
                    problems.add(subject.t1w, f"the T1w image must be 3-D; shape {t1.shape}",
                                 "Provide a single 3-D T1-weighted volume.")
                else:
                    check_image_data(subject.t1w, t1, problems)
    check_gradients(subject, n_volumes, problems)


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
        problems.problems.extend(column_problems(df, col, present, path,
                                                 numeric=(col == score)).problems)
    if no_row:
        return empty
    return df.loc[[s.label for s in subjects]]


def validate_dataset(bids_dir: str | Path, subjects: Sequence[Subject] | Sequence[str] |
                     str | None = None, score: str | None = None,
                     covariates: Sequence[str] = (), check_images: bool = True,
                     session_label: Sequence[str] | str | None = None,
                     n_jobs: int = 1) -> Dataset:
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

    Returns
    -------
    Dataset

    Raises
    ------
    InputError
        Listing every problem found (see the module docstring for the checks).
    """
    root = Path(bids_dir)
    problems = ProblemCollector()
    if subjects is not None and not isinstance(subjects, str) and all(
            isinstance(s, Subject) for s in subjects):
        selected = list(subjects)
    else:
        selected = _discover(root, subjects, session_label, problems)
    all_labels = [p.name[4:] for p in root.iterdir() if p.is_dir()
                  and p.name.startswith("sub-")] if root.is_dir() else []
    if not selected and not problems:
        problems.add(root, "no subject left to process",
                     "Check --participant-label / --session-label.")
    for found in _check_subjects(selected, check_images, n_jobs):
        problems.problems.extend(found.problems)
    covariates = [covariates] if isinstance(covariates, str) else list(covariates)
    participants = _check_participants(root, selected, all_labels, score, covariates, problems)
    problems.raise_if_any()
    log.info("validated %d subject(s) in %s", len(selected), root)
    return Dataset(root=root, subjects=selected, participants=participants)
