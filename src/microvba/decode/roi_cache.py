"""The voxels of a command-line ROI on the decoding grid, cached by the ROI file's content.

``microvba decode --roi ATLAS --labels ...`` reads the ROI image (a 1 mm atlas is 7 million
voxels, gzip-compressed: decompressed, selected, resampled to the 2 mm grid), which cost
0.2-0.6 s of a warm call, most of it page faults of its ~150 MB of temporaries. The result,
:func:`microvba.decode.grid.check_roi_extent`'s ``(in-mask voxel indices, voxels outside
the brain mask)``, is stored in the map cache (``<cache>/roi/<key>.npz``) under a key of

* the SHA-256 of the ROI file's content (not its name or time stamp),
* the selection (``--labels``, sorted and unique, or ``--roi-threshold``),
* the grid (shape, affine and brain mask) and :data:`VERSION` of this rule,

so a changed file, selection or grid is a new entry. The warnings logged while the ROI was
first read (part of the ROI outside the brain, a field of view that misses the brain) are
stored with it and logged again on every hit; invalid ROIs raise before anything is stored.
An unreadable or unwritable cache only costs the reading.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from .. import _paths
from .._logging import get_logger
from .._provenance import atomic_path, file_hash
from .grid import BrainGrid, check_roi_extent, select_roi

log = get_logger(__name__)

#: version of the cached result's rule: bump when the ROI selection or resampling changes
VERSION = 1


def _key(roi: Path, labels: list[int] | None, threshold: float | None,
         grid: BrainGrid) -> str:
    h = hashlib.sha256()
    grid_id = hashlib.sha256(np.ascontiguousarray(grid.mask).tobytes()
                             + np.asarray(grid.affine, np.float64).tobytes()).hexdigest()
    selection = {"labels": sorted({int(v) for v in labels}) if labels is not None else None,
                 "threshold": None if threshold is None else float(threshold)}
    h.update(json.dumps({"version": VERSION, "roi": file_hash(roi), "grid": grid_id,
                         "shape": list(grid.shape), **selection}, sort_keys=True).encode())
    return h.hexdigest()[:32]


class _Capture(logging.Handler):
    """Collects the warnings logged under ``microvba`` while the ROI is read."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.name, record.getMessage()))


def roi_grid_voxels(roi: str | Path, grid: BrainGrid, labels: list[int] | None = None,
                    threshold: float | None = None,
                    cache_dir: str | Path | None = None) -> tuple[np.ndarray, int]:
    """:func:`~microvba.decode.grid.check_roi_extent` of
    :func:`~microvba.decode.grid.select_roi` (``labels`` or ``threshold``) on ``grid``,
    from the cache when this ROI content, selection and grid were read before.

    Returns
    -------
    tuple
        In-mask voxel indices (int64) and the number of ROI voxels outside the brain mask.
    """
    roi = Path(roi)
    path = None
    try:
        path = _paths.cache_dir(cache_dir) / "roi" / f"{_key(roi, labels, threshold, grid)}.npz"
        with np.load(path) as f:
            idx, n_outside = f["idx"].astype(np.int64), int(f["n_outside"])
            warnings = json.loads(str(f["warnings"]))
        for name, message in warnings:
            logging.getLogger(name).warning("%s", message)
        return idx, n_outside
    except (OSError, ValueError, KeyError):
        pass  # not cached (or unreadable): read the ROI
    capture = _Capture()
    root = logging.getLogger("microvba")
    root.addHandler(capture)
    try:
        img = roi if labels is None and threshold is None else \
            select_roi(roi, labels=labels, threshold=threshold)
        idx, n_outside = check_roi_extent(img, grid)
    finally:
        root.removeHandler(capture)
    if path is not None:
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, idx=idx.astype(np.int32), n_outside=np.int64(n_outside),
                         warnings=np.array(json.dumps(capture.records)))
        except OSError as exc:
            log.debug("ROI not cached (%s)", exc)
    return idx, n_outside
