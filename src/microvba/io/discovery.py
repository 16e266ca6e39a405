"""BIDS discovery: find the subjects, sessions and DWI series of a dataset (no image is read).

The layout, entity order and ``--dwi-filter`` rules are described in :mod:`microvba.io.bids`;
:func:`discover` lists the subjects, :func:`microvba.io.validation.validate_dataset` checks them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._logging import get_logger
from .._validation import InputError, ProblemCollector
from .gradients import (
    B0_THRESHOLD,
    read_bvals,
)
from .series_names import (  # noqa: F401 - _NIFTI_EXT, _nifti_stem re-exported (io.bids)
    _NIFTI_EXT,
    _duplicate_copies,
    _magnitude_only,
    _mixed_versions,
    _nifti_stem,
    entities,
)

log = get_logger(__name__)

#: largest difference (mm) between the affines of DWI series combined into one scheme
GRID_ATOL = 1e-3

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
    if _duplicate_copies(where, dwis, problems):
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
    dwis = _magnitude_only(where, dwis, excluded, problems)
    if not dwis or _mixed_versions(where, dwis, problems):
        return None
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
        stray = _niftis(sub_dir / "dwi", "_dwi")
        if stray:  # BIDS: with sessions every file is in one; these would be skipped
            problems.add(sub_dir / "dwi", "DWI series outside the session folders ("
                         + ", ".join(d.name for d in stray) + ") beside "
                         + ", ".join(d.name for d in ses_dirs) + "; they would not be read",
                         f"Move them into a session folder ({sub_dir.name}/ses-<label>/dwi, "
                         "with ses-<label> in the file names) or delete them.")
        for ses_dir in ses_dirs:
            ses = ses_dir.name[4:]
            seen_sessions.add(ses)
            if sessions is not None and ses not in sessions:
                continue
            s = _subject_in(sub_dir, ses_dir, ses, problems, dwi_filter)
            subjects += [s] if s else []
    if sessions is not None:
        left = [p.name for p in sub_dirs if any(q.is_dir() and q.name.startswith("ses-")
                                                for q in p.iterdir())
                and not any((p / f"ses-{x}").is_dir() for x in sessions)]
        if left:  # they have sessions, none of those asked for: say who is left out
            log.warning("no session %s for %s: left out", ", ".join(sessions),
                        ", ".join(left[:20]) + (f" and {len(left) - 20} more"
                                                if len(left) > 20 else ""))
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

