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
- several DWI series in one ``dwi/`` folder (``run-``, ``acq-``, ``dir-`` ...) are combined
  into one scheme, sorted by their BIDS entities (:func:`series_sort_key`); b=0-only series
  (reverse phase-encoding scans for distortion correction) are left out when a
  diffusion-weighted series is present, and ``dwi_filter`` (``--dwi-filter``) keeps a subset.
  Combined series must share the voxel grid: same 3-D shape and affines equal within
  :data:`GRID_ATOL` mm; the b=0 volume may then be in any of them;
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
from .._resources import image_size_problem
from .._validation import InputError, ProblemCollector, check_positive_int
from .gradients import (
    B0_THRESHOLD,
    BVEC_NORM_TOL,
    no_b0_problem,
    non_unit_problem,
    read_bvals,
    read_bvecs,
)
from .nifti import gzip_problem, scaling_problem, scan_nifti, voxel_size_problem
from .participants import column_problems, read_participants

log = get_logger(__name__)

# B0_THRESHOLD (50 s/mm^2) and BVEC_NORM_TOL (0.01) come from .gradients, shared with `fit`
#: largest block of image data read at once when checking a NIfTI file
CHUNK_BYTES = 128 * 2**20

#: largest difference (mm) between the affines of DWI series combined into one scheme
GRID_ATOL = 1e-3

_NIFTI_EXT = (".nii.gz", ".nii")
_LABEL = re.compile(r"^[A-Za-z0-9]+$")
# BIDS 1.9 entity order (file names list entities in this order)
_ENTITY_ORDER = ("sub", "ses", "sample", "task", "tracksys", "acq", "nuc", "voi", "ce", "trc",
                 "stain", "rec", "dir", "run", "mod", "echo", "flip", "inv", "mt", "part",
                 "proc", "hemi", "space", "split", "recording", "chunk", "seg", "res", "den",
                 "label", "desc")
_FILTER_TOKEN = re.compile(r"^([A-Za-z]+)-([A-Za-z0-9]+)$")


@dataclass(frozen=True)
class DwiSeries:
    """One DWI series: the 4-D image and its gradient files (and JSON sidecar)."""

    dwi: Path
    bval: Path
    bvec: Path
    json: Path | None = None

    @property
    def entities(self) -> dict[str, str]:
        """BIDS entities of the image name, e.g. ``{"sub": "01", "run": "2"}``."""
        return entities(self.dwi)


@dataclass(frozen=True)
class Subject:
    """The inputs of one subject (and session): its DWI series and, optionally, a T1w image.

    ``dwi``, ``bval``, ``bvec`` and ``json`` are those of the first series; ``series`` lists
    every series to combine (in order, along the 4th axis), one when there is a single series.
    ``excluded`` lists the DWI images of the folder that are not used (left out by the DWI
    filter, or b=0-only series beside diffusion-weighted ones).
    """

    label: str
    session: str | None
    dwi: Path
    bval: Path
    bvec: Path
    json: Path | None = None
    t1w: Path | None = None
    series: tuple[DwiSeries, ...] = ()
    excluded: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if not self.series:
            object.__setattr__(self, "series",
                               (DwiSeries(self.dwi, self.bval, self.bvec, self.json),))

    @property
    def prefix(self) -> str:
        """BIDS entities prefix, ``sub-<label>`` or ``sub-<label>_ses-<label>``."""
        return f"sub-{self.label}" + (f"_ses-{self.session}" if self.session else "")

    @property
    def combined(self) -> bool:
        """True when several DWI series are concatenated into one scheme."""
        return len(self.series) > 1


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


def entities(path: str | Path) -> dict[str, str]:
    """The ``key-value`` entities of a BIDS file name (the suffix, e.g. ``_dwi``, excluded)."""
    parts = _nifti_stem(Path(path)).split("_")[:-1]
    return dict(p.split("-", 1) for p in parts if "-" in p)


def _natural(value: str) -> tuple:
    # "run-10" after "run-2": digit runs compare as numbers
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t)
                 for t in re.split(r"(\d+)", value) if t)


def _entity_rank(key: str) -> tuple[int, str]:
    return (_ENTITY_ORDER.index(key), "") if key in _ENTITY_ORDER else (len(_ENTITY_ORDER), key)


def series_sort_key(path: str | Path) -> tuple:
    """Order of DWI series by their BIDS entities (in BIDS order, numbers numerically).

    ``sub-01_dwi`` < ``sub-01_acq-b1000_dwi`` < ``sub-01_acq-b2000_dwi``, and ``run-2`` <
    ``run-10``.
    """
    ents = entities(path)
    return tuple((_entity_rank(k), _natural(v))
                 for k, v in sorted(ents.items(), key=lambda kv: _entity_rank(kv[0])))


def parse_dwi_filter(spec: str | Sequence[str] | None) -> dict[str, tuple[str, ...]] | None:
    """Parse a DWI series filter: ``"acq-b1000,run-2"`` -> ``{"acq": ("b1000",), ...}``.

    Tokens are BIDS ``entity-value`` pairs, separated by commas or spaces. A series is kept
    when, for every entity named, its value is one of those given: values of one entity are
    alternatives (``run-1,run-2``: run 1 or 2), different entities must all match
    (``acq-b1000,dir-AP``). Numeric values compare as numbers (``run-02`` = ``run-2``).
    None or an empty filter keeps every series.

    Raises
    ------
    InputError
        A token is not ``entity-value``, or names ``sub``/``ses`` (use the participant and
        session labels for those).
    """
    if spec is None:
        return None
    tokens = [spec] if isinstance(spec, str) else list(spec)
    tokens = [t for tok in tokens for t in re.split(r"[\s,]+", str(tok).strip()) if t]
    problems = ProblemCollector()
    out: dict[str, tuple[str, ...]] = {}
    for tok in tokens:
        m = _FILTER_TOKEN.match(tok)
        if m is None:
            problems.add("parameter dwi_filter", f"{tok!r} is not a BIDS entity-value pair",
                         "Write entity-value pairs separated by commas, e.g. "
                         "--dwi-filter acq-b1000,run-2.")
            continue
        key, value = m.group(1), m.group(2)
        if key in ("sub", "ses"):
            problems.add("parameter dwi_filter", f"{tok!r} selects a subject or session",
                         "Use --participant-label / --session-label for subjects and "
                         "sessions; --dwi-filter selects series within them (run, acq, dir...).")
            continue
        out[key] = tuple(dict.fromkeys(out.get(key, ()) + (value,)))
    problems.raise_if_any()
    return out or None


def format_dwi_filter(wanted: dict[str, tuple[str, ...]]) -> str:
    return ",".join(f"{k}-{v}" for k, vs in wanted.items() for v in vs)


def _same_value(a: str, b: str) -> bool:
    return int(a) == int(b) if a.isdigit() and b.isdigit() else a == b


def matches_dwi_filter(path: str | Path, wanted: dict[str, tuple[str, ...]] | None) -> bool:
    """True when the series ``path`` passes the filter of :func:`parse_dwi_filter`."""
    if not wanted:
        return True
    ents = entities(path)
    return all(k in ents and any(_same_value(ents[k], v) for v in vs)
               for k, vs in wanted.items())


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
                problems: ProblemCollector,
                dwi_filter: dict[str, tuple[str, ...]] | None = None) -> Subject | None:
    label = sub_dir.name[4:]
    where = ses_dir / "dwi"
    dwis = sorted(_niftis(where, "_dwi"), key=series_sort_key)
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
    excluded: list[Path] = []
    if dwi_filter:
        kept = [d for d in dwis if matches_dwi_filter(d, dwi_filter)]
        if not kept:
            problems.add(where, f"no DWI series matches --dwi-filter "
                                f"{format_dwi_filter(dwi_filter)} (series here: "
                                f"{', '.join(d.name for d in dwis)})",
                         "Change --dwi-filter to match the entities of the series to use, or "
                         "leave this subject/session out with --participant-label / "
                         "--session-label.")
            return None
        excluded += [d for d in dwis if d not in kept]
        dwis = kept
    if len(dwis) > 1:
        weighted = [d for d in dwis if _has_diffusion_weighting(d)]
        if weighted and len(weighted) < len(dwis):
            # the others: b=0-only series (reverse phase encoding, for distortion correction)
            log.warning("%s: ignoring the b=0-only series %s (e.g. reverse phase-encoding "
                        "scans for distortion correction)", where,
                        ", ".join(d.name for d in dwis if d not in weighted))
            excluded += [d for d in dwis if d not in weighted]
            dwis = weighted
    if len(dwis) > 1:
        log.info("%s: combining %d DWI series into one scheme, in this order: %s", where,
                 len(dwis), ", ".join(d.name for d in dwis))
    series: list[DwiSeries] = []
    ok = True
    for dwi in dwis:
        bval, bvec, sidecar = (_inherited(dwi, ext, (ses_dir, sub_dir, sub_dir.parent))
                               for ext in (".bval", ".bvec", ".json"))
        for f, what in ((bval, "b-values"), (bvec, "b-vectors")):
            if f.is_symlink() and not f.exists():
                problems.add(f, f"a symbolic link whose target does not exist (the {what} of "
                                f"{dwi.name}; file content not present)", _ANNEX_FIX)
                ok = False
            elif not f.is_file():
                problems.add(f, f"missing: the {what} of {dwi.name}",
                             f"Write the {what} in FSL format as {f.name} beside the DWI.")
                ok = False
        series.append(DwiSeries(dwi, bval, bvec, sidecar if sidecar.is_file() else None))
    if not ok:
        return None
    t1w = _find_t1w(sub_dir, ses_dir)
    if t1w is None:
        for folder in dict.fromkeys([ses_dir / "anat", sub_dir / "anat"]):
            for link in _broken_links(folder, "_T1w"):
                problems.add(link, "a symbolic link whose target does not exist (file "
                                   "content not present)", _ANNEX_FIX)
    first = series[0]
    return Subject(label=label, session=session, dwi=first.dwi, bval=first.bval,
                   bvec=first.bvec, json=first.json, t1w=t1w, series=tuple(series),
                   excluded=tuple(excluded))


def _discover(bids_dir: str | Path, participant_label: Sequence[str] | str | None,
              session_label: Sequence[str] | str | None,
              problems: ProblemCollector,
              dwi_filter: dict[str, tuple[str, ...]] | None = None) -> list[Subject]:
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
            s = _subject_in(sub_dir, sub_dir, None, problems, dwi_filter)
            subjects += [s] if s else []
            continue
        for ses_dir in ses_dirs:
            ses = ses_dir.name[4:]
            seen_sessions.add(ses)
            if sessions is not None and ses not in sessions:
                continue
            s = _subject_in(sub_dir, ses_dir, ses, problems, dwi_filter)
            subjects += [s] if s else []
    if sessions is not None:
        absent = [s for s in sessions if s not in seen_sessions]
        if absent:
            problems.add(root, f"session label(s) {absent} not found "
                               f"(available: {sorted(seen_sessions)})",
                         "Pass labels of existing ses-<label> folders, without 'ses-'.")
    return sorted(subjects, key=lambda s: (s.label, s.session or ""))


def discover(bids_dir: str | Path, participant_label: Sequence[str] | str | None = None,
             session_label: Sequence[str] | str | None = None,
             dwi_filter: str | Sequence[str] | None = None) -> list[Subject]:
    """Find the subjects (and sessions) of a BIDS dataset.

    Parameters
    ----------
    bids_dir
        The dataset folder.
    participant_label, session_label
        Keep only these labels (with or without ``sub-`` / ``ses-``).
    dwi_filter
        Keep only the DWI series matching these BIDS entities (see :func:`parse_dwi_filter`);
        the series left of a subject/session are combined.

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
    wanted = parse_dwi_filter(dwi_filter)
    problems = ProblemCollector()
    subjects = _discover(bids_dir, participant_label, session_label, problems, wanted)
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


def _is_gzip(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == b"\x1f\x8b"
    except OSError:
        return False


def _load_header(path: Path, problems: ProblemCollector) -> Any:
    import nibabel as nib

    try:
        img = nib.load(str(path), keep_file_open=True)
        shape = img.shape
        np.dtype(img.get_data_dtype())
    except nifti_read_errors() as exc:
        stream = gzip_problem(path) if _is_gzip(path) else None
        if stream is not None:  # small files: gzip checks the CRC while reading the header
            problems.add(path, f"truncated or corrupt image data ({stream})",
                         "Copy or re-export the file again (check the copy with gzip -t).")
            return None
        problems.add(path, f"not a readable NIfTI image ({_describe(exc)})",
                     nifti_read_fix(path))
        return None
    if any(int(n) <= 0 for n in shape):
        problems.add(path, f"image has an empty dimension (shape {shape})",
                     "Re-export the image; every dimension must be at least 1.")
        return None
    found = voxel_size_problem(img, path)
    if found is not None:
        problems.add(path, found,
                     "Fix the header's voxel sizes (pixdim) and qform/sform, e.g. re-export "
                     "the image with dcm2niix, or set them with nibabel "
                     "(img.header.set_zooms, img.set_qform / img.set_sform).")
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


def check_image_file(path: str | Path, signal: bool = True, scaling: bool = False,
                     itemsize: int = 4) -> None:
    """Check one NIfTI input file outside a BIDS dataset (``fit``, ``randomise``, ``roi``).

    The header (readable, no empty dimension, finite positive voxel sizes), its size against
    the file and against available memory as ``itemsize``-byte floats
    (:func:`~microvba._resources.image_size_problem`, before any voxel is read), then one
    streamed pass over the file (gzip CRC, truncation; see :func:`check_image_data` for
    ``signal`` and ``scaling``), as :func:`validate_dataset` does for BIDS images.

    Raises
    ------
    InputError
        Naming ``path``, what is wrong and the fix.
    """
    path = Path(path)
    problems = ProblemCollector()
    img = _load_header(path, problems)
    if img is not None:
        too_big = image_size_problem(path, img, itemsize)
        if too_big is not None:
            problems.add(path, *too_big)
        else:
            check_image_data(path, img, problems, signal=signal, scaling=scaling)
    problems.raise_if_any()


def check_image_data(path: Path, img: Any, problems: ProblemCollector,
                     chunk_bytes: int = CHUNK_BYTES, signal: bool = True,
                     scaling: bool = False) -> None:
    """Read ``path`` to its end once (:func:`~microvba.io.nifti.scan_nifti`) and report it.

    Reported: a gzip CRC or length mismatch, a truncated stream or data block, NaN or
    infinite values, and a scaling (``scl_slope``, ``scl_inter``) under which no voxel is
    positive. About ``chunk_bytes`` of data are held at once whatever the image size.

    ``signal`` (an image of signal intensities, DWI or T1w) reports NaN/inf values and an
    image without any positive voxel; otherwise ``scaling`` reports only a scaling that
    turns positive stored values into none positive (e.g. ``scl_slope = -1``).
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
    scan = scan_nifti(path, img, chunk_bytes)
    if scan.problem is not None:
        problems.add(path, f"truncated or corrupt image data ({scan.problem})",
                     "Copy or re-export the file again (check the copy with gzip -t); its "
                     "data ends before the header says or does not decompress intact.")
        return
    if scan.n_nonfinite and signal:
        problems.add(path, f"{scan.n_nonfinite} voxel value(s) are NaN or infinite",
                     "Re-export the image, or replace non-finite values (e.g. by 0) before "
                     "running microvba.")
    if signal:  # an image of signal intensities: some voxel must be positive
        found = scaling_problem(img, scan)
    elif scaling:  # only a scaling that turns positive stored values into none positive
        found = scaling_problem(img, scan, any_cause=False)
    else:
        found = None
    if found is not None:
        problems.add(path, found,
                     "Fix the header's scaling (e.g. nibabel: img.header.set_slope_inter(1, 0) "
                     "on the stored data, or fslmaths in.nii.gz -abs out.nii.gz), or "
                     "re-export the image from the scanner data.")


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


def _check_dwi_image(series: DwiSeries, problems: ProblemCollector) -> Any:
    """Check one DWI image; return it (None when unread or not 4-D)."""
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
    check_image_data(series.dwi, img, problems)
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
    images = [_check_dwi_image(s, found) if check_images else None for s in subject.series]
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
        problems.problems.extend(column_problems(df, col, present, path,
                                                 numeric=(col == score)).problems)
    if no_row:
        return empty
    return df.loc[[s.label for s in subjects]]


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


def validate_dataset(bids_dir: str | Path, subjects: Sequence[Subject] | Sequence[str] |
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
