"""NIfTI checks before any work: readable header, size against the file and memory, one
streamed pass over the data (gzip CRC, truncation, NaN/inf, scaling) in bounded chunks."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .._logging import get_logger
from .._resources import image_size_problem
from .._validation import ProblemCollector
from .nifti import (
    NiftiScan,
    gzip_problem,
    scaled_volume_stats,
    scaling_problem,
    scan_nifti,
    voxel_size_problem,
)

log = get_logger(__name__)

#: largest block of image data read at once when checking a NIfTI file
CHUNK_BYTES = 128 * 2**20


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
    _warn_orientation(path, img)
    return img


#: largest distance (mm) between the qform and sform mappings of a corner voxel before the
#: difference is reported
QFORM_SFORM_ATOL = 1.0


def _warn_orientation(path: Path, img: Any) -> None:
    """Warn when the header's orientation is missing (qform and sform codes 0: the voxel
    axes are then taken as RAS, which normalisation to MNI may not recover) or when the
    qform and sform disagree: the sform is used (as nibabel and FSL do) while ITK-based tools
    (ANTs, ITK-SNAP) read the qform, so their view of the image differs from ours."""
    header = img.header
    if not hasattr(header, "get_qform"):
        return
    qform, qcode = header.get_qform(coded=True)
    sform, scode = header.get_sform(coded=True)
    if not qcode and not scode:
        log.warning("%s: no orientation in the header (qform and sform codes 0); the voxel "
                    "axes are taken as RAS. Re-export the image with its orientation (e.g. "
                    "dcm2niix) if the maps or the normalisation look flipped", path)
    elif qcode and scode:
        shape = np.asarray(img.shape[:3], float) - 1
        corners = np.array([[i, j, k, 1.0] for i in (0, shape[0]) for j in (0, shape[1])
                            for k in (0, shape[2])]).T
        gap = float(np.linalg.norm(((qform - sform) @ corners)[:3], axis=0).max())
        if gap > QFORM_SFORM_ATOL:
            log.warning("%s: the qform and sform differ (by up to %.1f mm at a corner); the "
                        "sform is used, as FSL and nibabel do, while ITK-based tools (ANTs, "
                        "ITK-SNAP) read the qform. Make them agree (e.g. fslorient "
                        "-copysform2qform) if another tool shows the image elsewhere",
                        path, gap)


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


def signal_volume_problems(mean: np.ndarray, vmin: np.ndarray, vmax: np.ndarray,
                           bvals: np.ndarray, b0: np.ndarray,
                           bval_name: str) -> list[tuple[str, str]]:
    r"""(message, fix) for diffusion volumes no model can use, from per-volume statistics.

    * **Dropped**: every finite value of the volume is 0 (an interrupted or padded series,
      an unreconstructed volume). Its :math:`\log S` is undefined; the tensor reads it as
      complete attenuation along its direction.
    * **Inverted**: a diffusion-weighted volume (``b0`` False) whose mean over the whole
      image is :math:`\le 0` while the mean of the b=0 volumes is positive (a sign flip in
      a conversion or an intensity correction). Whole-image means, not a mask: a small mask
      in CSF may hold no positive value at a high b on real denoised data, but noise around
      zero outside the brain cancels in the mean while the brain's signal, however
      attenuated, stays positive in a magnitude series.

    Parameters
    ----------
    mean, vmin, vmax
        Per-volume mean, minimum and maximum of the finite values (NaN: none finite).
    bvals, b0
        b-value and b=0 flag of each volume.
    bval_name
        Name of the ``.bval`` file, for the fix.
    """
    out = []
    fix = (f"Remove those volumes from the image and their entries from {bval_name} and the "
           ".bvec (e.g. with fslselectvols or mrconvert -coord 3), or re-export the series.")

    def listed(idx: np.ndarray) -> str:
        shown = ", ".join(f"{int(v)} (b={bvals[v]:g})" for v in idx[:8])
        return shown + (f" and {idx.size - 8} more" if idx.size > 8 else "")

    with np.errstate(invalid="ignore"):
        empty = np.flatnonzero((vmin == 0) & (vmax == 0))
    if empty.size:
        out.append((f"{empty.size} volume(s) are zero in every voxel (dropped or empty "
                    f"volumes): {listed(empty)} (0-based volume indices)", fix))
    b0_means = mean[b0 & np.isfinite(mean)]
    if b0_means.size and float(b0_means.mean()) > 0:
        with np.errstate(invalid="ignore"):
            inverted = np.flatnonzero(~b0 & (mean <= 0) & ~((vmin == 0) & (vmax == 0)))
        if inverted.size:
            out.append((f"{inverted.size} diffusion-weighted volume(s) are inverted (mean "
                        f"signal <= 0 while the b=0 volumes' mean is "
                        f"{float(b0_means.mean()):.4g}): {listed(inverted)} (0-based volume "
                        "indices)",
                        "Re-export or re-convert the series (a sign flip in a conversion or "
                        "intensity correction), or " + fix[0].lower() + fix[1:]))
    return out


def check_signal_volumes(path: Path, img: Any, scan: NiftiScan | None, bvals: np.ndarray,
                         bval_path: Path, problems: ProblemCollector,
                         b0_threshold: float) -> None:
    """Report dropped and inverted volumes (:func:`signal_volume_problems`) of a 4-D image
    from the per-volume figures of its streamed scan (no second pass over the data)."""
    if scan is None:
        return
    stats = scaled_volume_stats(img, scan)
    if stats is None or stats["mean"].size != bvals.size:
        return
    for message, fix in signal_volume_problems(stats["mean"], stats["min"], stats["max"],
                                               bvals, bvals <= b0_threshold, bval_path.name):
        problems.add(path, message, fix)


def check_image_data(path: Path, img: Any, problems: ProblemCollector,
                     *, chunk_bytes: int = CHUNK_BYTES, signal: bool = True,
                     scaling: bool = False) -> NiftiScan | None:
    """Read ``path`` to its end once (:func:`~microvba.io.nifti.scan_nifti`) and report it.

    Reported: a gzip CRC or length mismatch, a truncated stream or data block, NaN or
    infinite values, and a scaling (``scl_slope``, ``scl_inter``) under which no voxel is
    positive. About ``chunk_bytes`` of data are held at once whatever the image size.

    ``signal`` (an image of signal intensities, DWI or T1w) reports NaN/inf values and an
    image without any positive voxel; otherwise ``scaling`` reports only a scaling that
    turns positive stored values into none positive (e.g. ``scl_slope = -1``).

    Returns the scan (None when the file is cut short before the scan), whose per-volume
    figures :func:`check_signal_volumes` reads.
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
            return None
    scan = scan_nifti(path, img, chunk_bytes)
    if scan.problem is not None:
        problems.add(path, f"truncated or corrupt image data ({scan.problem})",
                     "Copy or re-export the file again (check the copy with gzip -t); its "
                     "data ends before the header says or does not decompress intact.")
        return scan
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
    return scan


