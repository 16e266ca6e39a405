"""Resource bounds checked before any large allocation or read.

A wrong value on a shared server must cost seconds, never hours or a machine's memory: every
function here estimates what a step will need from sizes known up front (a NIfTI header, a
file size, the number of permutations) and raises :class:`~microvba._validation.InputError`
(exit code 2) naming the file or option, the estimate, what the machine has and the fix.

Bounds
------
- memory: an estimate above :data:`MEMORY_FRACTION` of the available memory
  (``MemAvailable`` of ``/proc/meminfo``, else ``os.sysconf`` free pages) is refused;
- tables (``participants.tsv``, designs, ``--config``): regular files only (no FIFO, device
  or directory: ``/dev/zero`` would be read forever) of at most :data:`MAX_TABLE_BYTES`;
- worker processes: at most the usable cores (:func:`usable_cores`) unless forced with
  ``--oversubscribe``, and never more than :data:`MAX_WORKERS`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ._validation import InputError

#: largest table (participants.tsv, design, TOML config) read, in bytes
MAX_TABLE_BYTES = 64 * 2**20
#: share of the available memory an estimated allocation may take
MEMORY_FRACTION = 0.8
#: most permutations accepted (the Monte-Carlo error of p = 0.05 is 7e-5 at this count)
MAX_PERMUTATIONS = 10**7
#: hard ceiling on worker processes/threads, even with --oversubscribe
MAX_WORKERS = 4096


def fmt_bytes(n: float) -> str:
    """``1.5 GiB``-style size."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.3g} PiB"  # pragma: no cover


def available_memory() -> int:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``; else free pages).

    ``MICROVBA_MEMORY_LIMIT`` (bytes) lowers it, e.g. for a job with a memory allocation.
    """
    avail = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        avail = None
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # pragma: no cover - exotic platform
            avail = 2**62
    limit = os.environ.get("MICROVBA_MEMORY_LIMIT")
    if limit:
        try:
            avail = min(avail, int(float(limit)))
        except ValueError:
            pass
    return int(avail)


def check_memory(needed: int, what: str, file: str | Path, fix: str) -> None:
    """Refuse an allocation of ``needed`` bytes above :data:`MEMORY_FRACTION` of what is
    available; ``what`` says what would be allocated, ``file`` names the file or option."""
    avail = available_memory()
    if needed > MEMORY_FRACTION * avail:
        raise InputError(f"{what} needs about {fmt_bytes(needed)} of memory but this machine "
                         f"has {fmt_bytes(avail)} available", file=file, fix=fix)


def usable_cores() -> int:
    """Cores this process may run on (CPU affinity, e.g. SLURM or taskset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def check_regular_file(path: str | Path, what: str = "file",
                       max_bytes: int | None = MAX_TABLE_BYTES) -> Path:
    """Refuse anything but an existing regular file of at most ``max_bytes``.

    A FIFO would block the reader forever and ``/dev/zero`` never ends; both are refused from
    ``stat`` alone, without opening them. Symbolic links to regular files are followed.
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise InputError(f"the {what} does not exist", file=path,
                         fix="Check the path.") from exc
    except OSError as exc:
        raise InputError(f"cannot access the {what} ({exc.strerror})", file=path,
                         fix="Check the path and its permissions.") from exc
    if not stat.S_ISREG(st.st_mode):
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else
                "a named pipe (FIFO)" if stat.S_ISFIFO(st.st_mode) else
                "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
                "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise InputError(f"cannot read the {what}: it is {kind}, not a regular file", file=path,
                         fix=f"Pass the {what} as a regular file (copy the content into a "
                             "file first).")
    if max_bytes is not None and st.st_size > max_bytes:
        raise InputError(f"the {what} is {fmt_bytes(st.st_size)}, more than the "
                         f"{fmt_bytes(max_bytes)} a table may have", file=path,
                         fix=f"Check that this is the right file; a {what} has one short "
                             "line per subject.")
    return path


def decode_text(raw: bytes) -> str:
    """Text of a table file: UTF-8 (a BOM allowed), or UTF-16 when it starts with a UTF-16
    byte-order mark (Excel's "Unicode Text" export). UnicodeDecodeError otherwise."""
    import codecs

    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16")
    return raw.decode("utf-8-sig")


def read_table_text(path: str | Path, what: str = "table",
                    max_bytes: int = MAX_TABLE_BYTES) -> str:
    """UTF-8 text (a BOM allowed; UTF-16 with its BOM) of a regular file of at most
    ``max_bytes`` bytes."""
    path = check_regular_file(path, what, max_bytes)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        raise InputError(f"cannot read the {what} ({exc.strerror})", file=path,
                         fix=f"Make the {what} a readable regular file.") from exc
    if len(raw) > max_bytes:  # grew since stat
        raise InputError(f"the {what} is larger than {fmt_bytes(max_bytes)}", file=path,
                         fix="Check that this is the right file.")
    try:
        return decode_text(raw)
    except UnicodeDecodeError as exc:
        raise InputError(f"the {what} is not UTF-8 text (byte {exc.start} is "
                         f"{raw[exc.start:exc.start + 1]!r})", file=path,
                         fix=f"Save the {what} as UTF-8 text.") from exc


def image_bytes(shape: tuple[int, ...], itemsize: int = 4) -> int:
    """Bytes of an array of ``shape`` with ``itemsize``-byte elements (Python ints: no
    overflow for absurd headers)."""
    n = 1
    for s in shape:
        n *= max(int(s), 0)
    return n * int(itemsize)


def image_size_problem(path: str | Path, img, itemsize: int = 4) -> tuple[str, str] | None:
    """(problem, fix) when the image ``img`` loaded from ``path`` cannot be read safely.

    Two checks from the header alone, before any voxel is read: an uncompressed ``.nii`` must
    be as large as its header says (offset + voxels x bytes per voxel), and the image as
    ``itemsize``-byte floats (the fit reads float32) must fit in available memory.
    """
    path = Path(path)
    shape = tuple(int(n) for n in img.shape)
    try:
        disk_item = int(img.header.get_data_dtype().itemsize)
    except (AttributeError, TypeError):
        disk_item = itemsize
    if path.name.endswith(".nii"):
        offset = getattr(img.dataobj, "offset", None)
        if offset is None:
            offset = img.header.get_data_offset()
        needed = int(offset) + image_bytes(shape, disk_item)
        size = path.stat().st_size
        if size < needed:
            return (f"truncated image: the header describes {needed} bytes ({shape}) but the "
                    f"file has {size}",
                    "Copy or re-export the file again; its data ends before the header says.")
    in_memory = image_bytes(shape, itemsize)
    avail = available_memory()
    if in_memory > MEMORY_FRACTION * avail:
        return (f"the header describes {shape} voxels, {fmt_bytes(in_memory)} as "
                f"{8 * itemsize}-bit floats, more than the {fmt_bytes(avail)} of memory "
                "available",
                "Check the image dimensions in the header (a corrupt or wrong file?), or run "
                "on a machine with more memory.")
    return None


def permutation_bytes(n_perm: int, *, n_images: int = 1, n_signs: int = 2, n_stats: int = 4,
                      n_subjects: int = 0, n_voxels: int = 0) -> int:
    """Memory of a permutation run: the null distributions of the maxima (float64, one per
    image, sign, statistic and permutation, as :func:`microvba.stats.randomise_family` keeps
    them) plus the data (float64, subjects x voxels) and a few per-voxel work arrays."""
    null = 8 * int(n_images) * int(n_signs) * int(n_stats) * int(n_perm)
    data = 8 * int(n_images) * int(n_subjects) * int(n_voxels) * 3
    return null + data


def check_permutations(n_perm: int, option: str = "--n-perm", **sizes: int) -> int:
    """Refuse a permutation count whose storage (:func:`permutation_bytes`) exceeds the
    available memory; return the estimate in bytes."""
    needed = permutation_bytes(n_perm, **sizes)
    per_perm = max(needed - permutation_bytes(0, **sizes), 1) / max(int(n_perm), 1)
    room = min(max(int((MEMORY_FRACTION * available_memory() - permutation_bytes(0, **sizes))
                       // per_perm), 0), MAX_PERMUTATIONS)
    check_memory(needed, f"{option} {n_perm} (null distributions of the maxima)", option,
                  f"Pass {option} of at most {room:,} here (5000 gives p down to 0.0002; "
                  "10000 is ample for FWE p-values).")
    if int(n_perm) > MAX_PERMUTATIONS:
        raise InputError(f"{option} {n_perm} is more than {MAX_PERMUTATIONS:,} permutations "
                         "(days of computing for no gain in precision: the Monte-Carlo "
                         "standard error of p = 0.05 is already 0.00007 at 10^7)", file=option,
                         fix=f"Pass {option} of at most {MAX_PERMUTATIONS:,} (5000 as FSL "
                             "randomise; 10000 is ample for FWE p-values).")
    return needed
