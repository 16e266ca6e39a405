"""Integrity of the decoding cache before it is read: broken files are removed, not read.

A cache file cut short (a full disk, a killed copy, a sync tool) or with flipped bytes made
``microvba decode`` end with ``BadZipFile``, ``mmap length is greater than file size``,
``EOFError`` or ``KeyError`` (exit 1) until the user found and deleted the file. Every file
of the cache can be rebuilt from the databases, so :func:`repair_cache` checks the files a
decoding call will read and removes those that are broken (a warning names each); the normal
code path then rebuilds them.

Checks, cheap against a warm decoding call (which reads these files anyway):

* ``.npz`` (zip archives: the parsed database copy, the kept weights, the brain mask, cached
  ROI voxels): every member's CRC-32 (:meth:`zipfile.ZipFile.testzip`) -- this also catches
  flipped bytes;
* ``.npy`` (the association/uniformity maps, the peaks): the header parses and the file is
  exactly ``header + prod(shape) * itemsize`` bytes long (truncated or padded files);
* ``features.tsv``, ``dropped.tsv`` of a map entry: a header row with the columns decoding
  reads.

* content: a map entry's ``maps.json`` records the CRC-32 of each of its files
  (:data:`CHECKSUMS_KEY`, written by :mod:`microvba.decode.maps` when the entry is
  complete), which catches flipped bytes that keep a file's size. The files are read and
  summed on **every call** when they total at most :data:`VERIFY_EVERY_CALL` bytes (an
  LDA-50 entry: 111 MB, 0.06 s); a larger entry (2,003 NeuroQuery term maps: 1.9 GB,
  which a warm ``--roi`` call does not otherwise read) is summed on its **first use** after
  it was written and again whenever a file's size or modification time differs from those
  of its last verification (``verified.json``; a copied, restored or edited file), and in
  full by ``microvba data check`` (:func:`repair_cache` with ``verify="all"``). Figures:
  benchmarks/RESULTS.md, "Decode cache integrity (session 8)".

A broken file inside a map entry (``<database>-v*_vocab-*`` folder) invalidates the whole
entry (its ``maps.json`` is removed, so the entry is rebuilt and overwritten atomically).
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .._logging import get_logger
from .._validation import InputError, check_choice

log = get_logger(__name__)

#: ``maps.json`` key: file name -> ``crc32:<8 hex digits>`` of every file of the entry
CHECKSUMS_KEY = "FileChecksums"
#: entries whose files total at most this many bytes are verified on every call (CRC-32 runs
#: with the file reads: 111 MB of an LDA-50 entry 0.06 s, 1.9 GB of term maps 0.42 s)
VERIFY_EVERY_CALL = 256 * 2**20
#: per entry: the size and modification time of each file at its last full verification
VERIFIED_NAME = "verified.json"
#: ``verify`` modes of :func:`repair_cache`
VERIFY_MODES = ("auto", "all")
_CHUNK = 16 * 2**20

#: columns a map entry's tables must have
_TABLE_COLUMNS = {"features.tsv": ("feature", "label", "z_mean", "z_norm"),
                  "dropped.tsv": ("feature",)}


def npz_problem(path: Path) -> str | None:
    """What is wrong with a ``.npz`` archive (a member failing its CRC-32, not a zip), or
    None."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        return f"not a readable zip archive ({type(exc).__name__}: {exc})"
    if bad is not None:
        return f"member {bad} fails its CRC-32 check (corrupt bytes)"
    return None


def npy_problem(path: Path) -> str | None:
    """What is wrong with an ``.npy`` file's header or length, or None."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read(fh)
            offset = fh.tell()
        size = path.stat().st_size
    except (OSError, ValueError, EOFError, SyntaxError) as exc:
        return f"not a readable .npy array ({type(exc).__name__}: {exc})"
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size != expected:
        return f"{size} bytes where its header {tuple(shape)} {dtype} needs {expected}"
    return None


def table_problem(path: Path) -> str | None:
    """What is wrong with a map entry's TSV table (columns decoding reads), or None."""
    try:
        with open(path, encoding="utf-8") as fh:
            header = fh.readline().rstrip("\r\n").split("\t")
    except (OSError, UnicodeDecodeError) as exc:
        return f"unreadable table ({type(exc).__name__})"
    missing = [c for c in _TABLE_COLUMNS.get(path.name, ()) if c not in header]
    return f"columns missing: {', '.join(missing)}" if missing else None


def file_problem(path: Path) -> str | None:
    """The check of :mod:`this module <microvba.decode.cache_check>` for ``path``'s kind."""
    if path.name.endswith(".npz"):
        return npz_problem(path)
    if path.name.endswith(".npy"):
        return npy_problem(path)
    if path.name in _TABLE_COLUMNS:
        return table_problem(path)
    return None


def file_crc32(path: Path) -> str:
    """``crc32:<8 hex digits>`` of a file's bytes (read in 16 MiB chunks)."""
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return f"crc32:{crc:08x}"


def file_checksums(folder: Path, names) -> dict[str, str]:
    """:func:`file_crc32` of each file ``names`` of ``folder`` (for ``maps.json``)."""
    return {name: file_crc32(Path(folder) / name) for name in names}


def _stamps(folder: Path, names) -> dict[str, list[int]]:
    out = {}
    for name in names:
        st = os.stat(folder / name)
        out[name] = [st.st_size, st.st_mtime_ns]
    return out


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def content_problem(entry: Path, verify: str = "auto") -> tuple[Path, str] | None:
    """The first file of a map entry whose CRC-32 differs from the one its ``maps.json``
    records, with what is wrong, or None (see the module docstring for when the files are
    read: ``verify="all"`` always)."""
    checksums = _read_json(entry / "maps.json").get(CHECKSUMS_KEY)
    if not isinstance(checksums, dict) or not checksums:
        return None  # an entry without checksums is stale and rebuilt (decode/maps.py)
    try:
        stamps = _stamps(entry, checksums)
    except OSError as exc:
        return entry / "maps.json", f"a file it records is missing ({exc})"
    if verify != "all" and sum(s for s, _ in stamps.values()) > VERIFY_EVERY_CALL:
        if _read_json(entry / VERIFIED_NAME) == stamps:
            return None  # verified before and unchanged since: not read again
    for name, expected in checksums.items():
        got = file_crc32(entry / name)
        if got != expected:
            return entry / name, (f"content checksum {got} differs from the {expected} "
                                  "recorded when it was written (corrupt bytes)")
    try:  # remembered so that a large entry is not read again while unchanged
        (entry / VERIFIED_NAME).write_text(json.dumps(stamps))
    except OSError:
        pass  # a read-only cache: verified again next time
    return None


def repair_cache(root: Path, database: str, maps: bool = True,
                 verify: str = "auto") -> list[Path]:
    """Remove the broken files of ``root`` that decoding with ``database`` reads.

    Checked: the map entries of ``database`` (``<database>-v*`` folders), its parsed copy
    (``databases/<database>-*.npz``), the brain-mask grids (``mni152-*.npz``) and cached ROI
    voxels (``roi/*.npz``). A broken file of a map entry removes the entry's ``maps.json``
    (the entry is rebuilt); other broken files are removed (rebuilt on the next miss).

    ``maps=False`` checks only the small grid files (brain mask, ROI voxels), which the
    command line reads before the decoder is fitted (the fit checks everything).
    ``verify``: ``"auto"`` sums the contents of a map entry as the module docstring says;
    ``"all"`` sums every entry (``microvba data check``).

    Returns
    -------
    list of Path
        The files found broken.

    Raises
    ------
    InputError
        When a broken file cannot be removed (a read-only cache), naming it and the fix.
    """
    check_choice("verify", verify, VERIFY_MODES)
    root = Path(root)
    if not root.is_dir():
        return []
    broken: list[Path] = []
    candidates = [*root.glob("mni152-*.npz"), *root.glob("roi/*.npz")]
    entries = []
    if maps:
        candidates += root.glob(f"databases/{database}-*.npz")
        entries = [p for p in root.glob(f"{database}-v*") if p.is_dir()]
    for path in candidates:
        found = file_problem(path)
        if found is not None:
            broken.append(path)
            _remove(path, path, found)
    for entry in entries:
        sidecar = entry / "maps.json"
        if not sidecar.exists():
            continue  # not a valid entry: rebuilt anyway
        for path in sorted(entry.iterdir()):
            found = file_problem(path)
            if found is not None:
                broken.append(path)
                _remove(sidecar, path, found)
                break
        else:
            found = content_problem(entry, verify)
            if found is not None:
                broken.append(found[0])
                _remove(sidecar, *found)
    return broken


def _remove(target: Path, broken: Path, problem: str) -> None:
    try:
        target.unlink(missing_ok=True)
    except OSError as exc:
        raise InputError(f"a decoding cache file is broken ({problem}) and cannot be "
                         f"removed ({type(exc).__name__}: {exc})", file=broken,
                         fix=f"Delete {target} (or the whole cache folder), or pass another "
                             "--cache-dir / $MICROVBA_CACHE; it is rebuilt from the "
                             "databases.") from None
    log.warning("%s: broken decoding cache file (%s); removed, it is rebuilt", broken,
                problem)
