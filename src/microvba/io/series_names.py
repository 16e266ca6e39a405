"""BIDS names of DWI series, and the checks on a folder's series that need only their names.

:func:`entities` reads the ``key-value`` pairs of a file name; the checks refuse (or leave
out) series that must not be combined into one scheme by :mod:`microvba.io.discovery`.
"""

from __future__ import annotations

from pathlib import Path

from .._logging import get_logger
from .._validation import ProblemCollector

log = get_logger(__name__)

_NIFTI_EXT = (".nii.gz", ".nii")


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


#: entities of derived files (BIDS derivatives): two series differing in one are two versions
#: of one acquisition (raw and preprocessed, two resamplings), never parts of one scheme
_DERIVED_ENTITIES = ("desc", "space", "res", "den")


def _duplicate_copies(where: Path, dwis: list[Path], problems: ProblemCollector) -> bool:
    """Problem when one series is there twice, as ``.nii`` and ``.nii.gz`` (a ``gunzip -k``
    left behind): it would be combined with itself, doubling every volume."""
    stems: dict[str, list[Path]] = {}
    for d in dwis:
        stems.setdefault(_nifti_stem(d), []).append(d)
    twice = [v for v in stems.values() if len(v) > 1]
    for copies in twice:
        problems.add(where, "the same series is there twice: "
                            + " and ".join(d.name for d in copies),
                     f"Keep one file (e.g. delete {copies[0].name}); both would be combined "
                     "into one scheme, every volume twice.")
    return bool(twice)


def _magnitude_only(where: Path, dwis: list[Path], excluded: list[Path],
                    problems: ProblemCollector) -> list[Path]:
    """The magnitude series; phase/real/imaginary parts (``part-phase``...) are left out
    with a warning, as no model fits them (a problem when nothing else is left)."""
    other = [d for d in dwis if entities(d).get("part", "mag") != "mag"]
    if not other:
        return dwis
    kept = [d for d in dwis if d not in other]
    if not kept:
        problems.add(where, "only non-magnitude DWI series (" + ", ".join(
            d.name for d in other) + "); the models fit magnitude images",
                     "Add the magnitude series (part-mag) or reconstruct magnitude images "
                     "from the complex data.")
        return []
    log.warning("%s: ignoring the non-magnitude series %s (phase, real or imaginary parts)",
                where, ", ".join(d.name for d in other))
    excluded += other
    return kept


def _mixed_versions(where: Path, dwis: list[Path], problems: ProblemCollector) -> bool:
    """Problem when the series to combine differ in a derived-file entity (desc-, space-...):
    raw beside preprocessed data, or two resamplings of one scan."""
    if len(dwis) < 2:
        return False
    ents = [entities(d) for d in dwis]
    differ = [k for k in _DERIVED_ENTITIES if len({e.get(k) for e in ents}) > 1]
    if not differ:
        return False
    # some series has each differing entity: the first one found is the example
    example = next(f"{k}-{e[k]}" for e in ents for k in differ if k in e)
    problems.add(where, f"the DWI series differ in {', '.join(k + '-' for k in differ)} ("
                        + ", ".join(d.name for d in dwis) + "): versions of one "
                        "acquisition (e.g. raw and preprocessed), which would be combined "
                        "into one scheme, every volume twice",
                 f"Keep one version with --dwi-filter (e.g. --dwi-filter {example}), or "
                 "move derived files to derivatives/.")
    return True
