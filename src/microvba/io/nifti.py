"""Integrity of NIfTI input files: one streamed pass over the bytes, bounded memory.

:func:`scan_nifti` reads a ``.nii`` or ``.nii.gz`` file from its first to its last byte once:

* a gzip stream is decompressed to its end with :mod:`zlib`, which verifies each member's
  CRC-32 and length (RFC 1952, section 2.3.1) -- nibabel stops reading when it has the bytes
  the header describes, so a flipped bit inside a ``.nii.gz`` (``gzip -t``: "crc error")
  otherwise yields wrong voxel values without any error;
* the data block (``vox_offset`` onwards, ``prod(dim) * bitpix / 8`` bytes) is parsed in
  chunks of at most :data:`CHUNK_BYTES` with the header's on-disk dtype, counting NaN and
  infinite values and keeping the raw minimum and maximum, so that
  :func:`scaled_range` gives the range after NIfTI scaling
  :math:`y = \\mathrm{scl\\_slope}\\, x + \\mathrm{scl\\_inter}` without converting the image to
  floating point.

Decompression output is bounded per call (``max_length``), so a "gzip bomb" costs time
proportional to its size, never memory. :func:`voxel_size_problem` checks the voxel sizes of
the header (``pixdim[1:4]``) and of the affine (column norms of its 3 x 3 part).
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: largest block of image data parsed at once
CHUNK_BYTES = 64 * 2**20
_READ = 2**20  # compressed bytes read per call


@dataclass
class NiftiScan:
    """What one pass over a NIfTI file found.

    Attributes
    ----------
    problem
        None when the file is intact; else what is wrong (CRC mismatch, stream cut short,
        fewer data bytes than the header describes, trailing garbage).
    n_nonfinite
        Number of NaN or infinite stored values (floating-point types).
    raw_min, raw_max
        Smallest and largest finite stored value (None for non-numeric types or when no
        value is finite).
    volume_sum, volume_count, volume_min, volume_max
        For a 4-D numeric image: per volume (last axis) the sum (float64), number, minimum
        and maximum of its finite stored values, gathered in the same pass (NIfTI stores
        volume :math:`t` as one contiguous run of ``prod(shape[:3])`` items); None otherwise
        or when the pass did not reach the end of the data. Minimum and maximum are
        :math:`+\\infty` / :math:`-\\infty` for a volume without a finite value.
    """

    problem: str | None = None
    n_nonfinite: int = 0
    raw_min: float | None = None
    raw_max: float | None = None
    volume_sum: np.ndarray | None = None
    volume_count: np.ndarray | None = None
    volume_min: np.ndarray | None = None
    volume_max: np.ndarray | None = None


def _gzip_chunks(path: Path, limit: int) -> Iterator[bytes]:
    """Decompressed bytes of every gzip member of ``path``, CRC-checked by zlib.

    Raises ``zlib.error`` on a CRC/length mismatch or corrupt deflate data and ``EOFError``
    when the stream ends early.
    """
    with open(path, "rb") as fh:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending = b""
        while True:
            if not pending:
                pending = fh.read(_READ)
                if not pending:  # input exhausted: drain what zlib still holds
                    while not d.eof:
                        out = d.decompress(b"", limit)
                        if not out:
                            break
                        yield out
                    break
            out = d.decompress(pending, limit)
            pending = d.unconsumed_tail
            if out:
                yield out
            if d.eof:  # unused_data holds every input byte after the member (the tail too)
                rest = d.unused_data
                pending = b""
                while not rest.strip(b"\x00"):  # trailing zero padding is tolerated
                    more = fh.read(_READ)
                    if not more:
                        return
                    rest = more
                if rest[:2] != b"\x1f\x8b":
                    raise zlib.error("trailing data after the end of the gzip stream")
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                pending = rest
        if not d.eof:
            raise EOFError("the compressed stream ends before its end marker (file cut short)")


def _plain_chunks(path: Path, limit: int) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        yield from iter(lambda: fh.read(limit), b"")


def _data_blocks(chunks: Iterator[bytes], offset: int, n_bytes: int,
                 itemsize: int) -> Iterator[bytes]:
    """Cut the byte stream into the data block, in pieces that are whole items."""
    pos = 0
    left = b""
    for chunk in chunks:
        start, end = pos, pos + len(chunk)
        pos = end
        lo, hi = max(offset - start, 0), min(offset + n_bytes - start, len(chunk))
        if hi > lo:
            piece = left + chunk[lo:hi]
            cut = len(piece) - len(piece) % itemsize
            left = piece[cut:]
            if cut:
                yield piece[:cut]
    if pos < offset + n_bytes:
        raise EOFError(f"the header describes {n_bytes} bytes of data from byte {offset} but "
                       f"the stream has {max(pos - offset, 0)}")


def gzip_problem(path: str | Path) -> str | None:
    """What is wrong with the gzip stream of ``path`` (read to its end), or None."""
    try:
        for _ in _gzip_chunks(Path(path), CHUNK_BYTES):
            pass
    except zlib.error as exc:
        return f"corrupt compressed data ({_zlib_text(exc)})"
    except EOFError as exc:
        return f"truncated image ({exc})"
    except OSError:
        return None
    return None


def _zlib_text(exc: BaseException) -> str:
    text = str(exc)
    if "incorrect data check" in text:
        return "gzip CRC-32 mismatch: the decompressed data differ from what was written"
    if "incorrect length check" in text:
        return "gzip length mismatch: the decompressed size differs from what was written"
    return text


def scan_nifti(path: str | Path, img: Any, chunk_bytes: int = CHUNK_BYTES,
               per_volume: bool = True) -> NiftiScan:
    """Read ``path`` to its end once; check its gzip CRC and the values of its data block.

    Parameters
    ----------
    path
        A ``.nii`` or ``.nii.gz`` file (gzip is detected from the magic bytes).
    img
        The nibabel image of ``path`` (header already read).
    chunk_bytes
        Largest piece of data held at once.
    per_volume
        Also gather, for a 4-D image, each volume's sum, count, minimum and maximum
        (:attr:`NiftiScan.volume_sum`, ...; a few float64 per volume).
    """
    path = Path(path)
    image_file = getattr(img, "file_map", {}).get("image")
    if image_file is not None and image_file.filename:  # an .hdr/.img pair: the data file
        path = Path(image_file.filename)
    dtype = np.dtype(img.header.get_data_dtype())
    offset = int(getattr(img.dataobj, "offset", img.header.get_data_offset()))
    n_bytes = int(np.prod(img.shape, dtype=np.int64)) * dtype.itemsize
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    chunk_bytes = max(int(chunk_bytes), dtype.itemsize)
    chunks = (_gzip_chunks if gz else _plain_chunks)(path, chunk_bytes)
    scan = NiftiScan()
    numeric = dtype.kind in "iuf"
    lo, hi = math.inf, -math.inf
    n_bad = 0
    per_volume = per_volume and numeric and len(img.shape) == 4
    if per_volume:
        n_vol = int(img.shape[3])
        vol_items = int(np.prod(img.shape[:3], dtype=np.int64))
        v_sum, v_cnt = np.zeros(n_vol), np.zeros(n_vol, np.int64)
        v_min, v_max = np.full(n_vol, math.inf), np.full(n_vol, -math.inf)
        item = 0  # index of the first item of the next block
    try:
        for block in _data_blocks(chunks, offset, n_bytes, dtype.itemsize):
            values = np.frombuffer(block, dtype=dtype)
            if dtype.kind in "fc":
                finite = np.isfinite(values)
                n_bad = values.size - int(np.count_nonzero(finite))
                scan.n_nonfinite += n_bad
                if n_bad and numeric and not per_volume:
                    values = values[finite]
            if per_volume:  # split at volume boundaries (volume t: one contiguous run)
                start = 0
                while start < values.size:
                    t = (item + start) // vol_items
                    stop = min(values.size, (t + 1) * vol_items - item)
                    part = values[start:stop]
                    if dtype.kind == "f" and n_bad:
                        part = part[finite[start:stop]]
                    if part.size:
                        v_sum[t] += float(np.sum(part, dtype=np.float64))
                        v_cnt[t] += part.size
                        v_min[t] = min(v_min[t], float(part.min()))
                        v_max[t] = max(v_max[t], float(part.max()))
                    start = stop
                item += values.size
            elif numeric and values.size:
                lo, hi = min(lo, float(values.min())), max(hi, float(values.max()))
        for _ in chunks:  # the rest of the stream (extensions after the data, trailer, CRC)
            pass
    except zlib.error as exc:
        scan.problem = f"corrupt compressed data ({_zlib_text(exc)})"
    except EOFError as exc:
        scan.problem = f"truncated image ({exc})"
    except OSError as exc:
        scan.problem = f"unreadable file ({type(exc).__name__}: {exc})"
    if per_volume:  # the whole image's range from the volumes' (one min/max per value)
        lo, hi = float(v_min.min(initial=math.inf)), float(v_max.max(initial=-math.inf))
    if numeric and lo <= hi:
        scan.raw_min, scan.raw_max = lo, hi
    if per_volume and scan.problem is None:
        scan.volume_sum, scan.volume_count = v_sum, v_cnt
        scan.volume_min, scan.volume_max = v_min, v_max
    return scan


def scaled_volume_stats(img: Any, scan: NiftiScan) -> dict[str, np.ndarray] | None:
    """Per-volume mean, minimum and maximum of the finite values after NIfTI scaling.

    With :math:`y = a x + c` (``scl_slope`` :math:`a`, ``scl_inter`` :math:`c`), the mean of
    a volume is :math:`a \\bar x + c` and its extremes are :math:`a` times the raw ones
    plus :math:`c` (swapped when :math:`a < 0`). None when the scan has no per-volume
    figures (not 4-D, not numeric, or unreadable).
    """
    if scan.volume_sum is None:
        return None
    slope = float(getattr(img.dataobj, "slope", 1.0))
    inter = float(getattr(img.dataobj, "inter", 0.0))
    if not math.isfinite(slope) or slope == 0:  # nibabel reads slope 0 / NaN as 1 (no scaling)
        slope, inter = 1.0, 0.0
    if not math.isfinite(inter):
        inter = 0.0
    count = np.maximum(scan.volume_count, 1)
    mean = slope * scan.volume_sum / count + inter
    lo, hi = slope * scan.volume_min + inter, slope * scan.volume_max + inter
    if slope < 0:
        lo, hi = hi, lo
    empty = scan.volume_count == 0
    mean[empty], lo[empty], hi[empty] = np.nan, np.nan, np.nan
    return {"mean": mean, "min": lo, "max": hi}


def scaled_range(img: Any, scan: NiftiScan) -> tuple[float, float] | None:
    """Smallest and largest finite value after NIfTI scaling (None when unknown)."""
    if scan.raw_min is None or scan.raw_max is None:
        return None
    slope = float(getattr(img.dataobj, "slope", 1.0))
    inter = float(getattr(img.dataobj, "inter", 0.0))
    ends = sorted((slope * scan.raw_min + inter, slope * scan.raw_max + inter))
    return ends[0], ends[1]


def scaling_problem(img: Any, scan: NiftiScan, any_cause: bool = True) -> str | None:
    """A message when no voxel is positive after scaling (all signal <= 0), else None.

    A negative ``scl_slope`` (or an ``scl_inter`` that shifts every value below 0) turns a
    magnitude image into one whose signal is never positive: every model fit then fails.
    With ``any_cause=False`` only that case is reported (stored values of which some are
    positive, none after scaling); otherwise also an image whose stored values are all
    <= 0.
    """
    rng = scaled_range(img, scan)
    if rng is None or rng[1] > 0:
        return None
    if not any_cause and not (scan.raw_max is not None and scan.raw_max > 0):
        return None
    slope = float(getattr(img.dataobj, "slope", 1.0))
    inter = float(getattr(img.dataobj, "inter", 0.0))
    return (f"no voxel value is positive after scaling (largest value {rng[1]:g}; header "
            f"scl_slope = {slope:g}, scl_inter = {inter:g}): an image of signal intensities "
            "must have positive values")


def raw_pixdim(path: str | Path) -> list[float] | None:
    """``pixdim[1:4]`` as stored in the file (nibabel replaces 0 and negative values on load).

    NIfTI-1 (``sizeof_hdr`` 348: float32 at byte 80) and NIfTI-2 (540: float64 at byte 112),
    either byte order; None when the header is neither.
    """
    import gzip

    try:
        with open(path, "rb") as fh:
            gz = fh.read(2) == b"\x1f\x8b"
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as fh:
            head = fh.read(540)
    except (OSError, EOFError, zlib.error):
        return None
    for order in "<>":
        if len(head) >= 348 and struct.unpack(order + "i", head[:4])[0] == 348:
            return list(struct.unpack(order + "3f", head[80:92]))
        if len(head) >= 540 and struct.unpack(order + "i", head[:4])[0] == 540:
            return list(struct.unpack(order + "3d", head[112:136]))
    return None


def voxel_size_problem(img: Any, path: str | Path | None = None) -> str | None:
    """A message when a voxel size is zero, negative or not finite, else None.

    Both the header's ``pixdim[1:4]`` (as stored in ``path``, before nibabel silently
    replaces zeros by 1 and negatives by their absolute value) and the voxel sizes of the
    affine (norms of the columns of its 3 x 3 part, :math:`\\lVert A_{:,j} \\rVert`) must be
    finite and positive, and the affine invertible (else nibabel cannot decompose it:
    "Could not decompose affine").
    """
    pixdim = raw_pixdim(path) if path is not None else None
    if pixdim is None:
        pixdim = [float(v) for v in np.asarray(img.header["pixdim"]).ravel()[1:4]]
    n = min(3, len(img.shape))
    bad = [v for v in pixdim[:n] if not (math.isfinite(v) and v > 0)]
    if bad:
        return (f"voxel size(s) {bad} in the header (pixdim[1:4] = "
                f"{', '.join(f'{v:g}' for v in pixdim)}) are not finite positive numbers")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        return "the voxel-to-world affine (qform/sform) holds NaN or infinite values"
    sizes = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if np.any(sizes <= 0) or abs(np.linalg.det(affine[:3, :3])) <= 0:
        return (f"the voxel-to-world affine (qform/sform) is singular: voxel sizes "
                f"{', '.join(f'{v:g}' for v in sizes)} mm")
    return None
