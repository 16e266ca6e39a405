"""Meta-analytic maps per feature (topic or term), MKDA chi-square, cached on disk.

For each feature the studies whose weight reaches ``threshold`` (the *selected* studies) are
compared with all other studies, voxel by voxel, on the binary MKDA activation of each study
(a sphere of ``kernel_mm`` around every reported peak, Wager et al. 2007). Two maps come out,
as in Neurosynth (Yarkoni et al. 2011) and NiMARE's ``MKDAChi2``:

* association (reverse inference, :math:`P(F \\mid A)`): signed z of the 2 x 2 chi-square
  test of independence between selection and activation;
* uniformity (forward inference, :math:`P(A \\mid F)`): signed z of the one-way chi-square
  test of the selected studies' activation count against its mean over voxels.

The Benjamini-Hochberg threshold at FDR ``q = 0.01`` of each map is stored beside it, so
:meth:`FeatureMaps.image` can return Neurosynth's thresholded maps as well.

The work is one product, not one meta-analysis per feature. With the binary study x voxel
incidence matrix :math:`A` and the binary study x feature selection :math:`S`, the
selected-active counts of every feature are :math:`S^\\top A` and the all-study counts
:math:`\\mathbf{1}^\\top A`; the chi-square statistics are closed forms of those counts
(:func:`microvba.decode._kernels.chi2_z_maps`). :math:`A` (~46 million entries for
Neurosynth) is never built: :func:`microvba.decode._kernels.feature_active_counts` slides
the sphere along each grid row over the peaks, and a study's features change only when it
enters or leaves the sphere, so one pass over the peaks gives the counts of many features
(:attr:`FeatureMaps.activation` still builds :math:`A` on request; the tests check the
counts against it).

Cold build
----------
A build in a fresh process (``Decoder("lda50").fit()`` on an empty cache entry) is mostly
fixed costs, so it is arranged around them: the caller imports neither pandas, nibabel nor
scipy before the work starts (``features.tsv``/``dropped.tsv`` are written by a csv writer
that matches ``DataFrame.to_csv`` byte for byte; the selection is computed on the weights'
CSC arrays); the counts, z maps and their files are made in a forked child process
(:mod:`microvba.decode._child`: numba is imported there, with the garbage collector off,
and its ~80,000 objects never reach the caller), while the caller imports scipy, writes
the entry's other files and prepares the decoder's index; the z maps are written around
the page cache (:mod:`microvba.decode._direct`); and the large temporaries are avoided
(peak voxels in blocks, study-level feature lists, 4 MB z buffers), as fresh memory costs
3-6 ms per MB on a virtual machine whose host backs it lazily. The maps are the same bytes
as an in-process build (``tests/decode/test_build_child.py``).

Default thresholds
------------------
``lda50``: 0.05. At Neurosynth's tf-idf threshold of 0.001 three LDA-50 topics select every
one of the 14,371 studies (LDA smooths every weight above zero), leaving no comparison group;
at 0.05 every topic selects between 361 and 9,755 studies, so all 50 topics get a map.
``terms``: 0.001 on tf-idf, as Neurosynth (a study is selected when it uses the term).

Features selecting no study, every study, or fewer than ``min_studies`` studies (or leaving
fewer than ``min_studies`` others) get no map: they are listed in :attr:`FeatureMaps.dropped`
with the reason, and a warning is logged for those selecting all or none.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .. import _paths
from .._logging import get_logger
from .._provenance import atomic_path, file_hash, make_sidecar, params_hash, write_json
from .._validation import InputError, check_choice, check_in_range, check_positive_int
from ._child import ChildCall
from ._direct import DirectWriter
from ._lazy import lazy_module
from .cache_check import CHECKSUMS_KEY, file_checksums
from .database import VERSIONS, VOCABULARY_DATABASE, Database, database_files, file_stamps
from .grid import BrainGrid, mni_brain_grid

#: scipy.sparse, imported on first use: after the map build's child process has started
sp = lazy_module("scipy.sparse")

if TYPE_CHECKING:  # pandas and nibabel are imported where they are used: a cold build
    import nibabel as nib  # in a fresh process needs neither (about 0.2 s of imports)
    import pandas as pd

log = get_logger(__name__)

VOCABULARIES = ("lda50", "terms")
DEFAULT_THRESHOLD = {"lda50": 0.05, "terms": 0.001}
FDR_Q = 0.01
#: bump when the map computation changes, so old caches are not reused
ALGORITHM_VERSION = 3
#: maps larger than this (bytes as float32) are stored as float16
_FLOAT16_ABOVE = 512 * 2**20
_CHUNK_BYTES = 384 * 2**20
#: per chunk of features while writing maps: association and uniformity buffers of
#: ~16 MB each (17 features at 2 mm), reused from chunk to chunk: fresh memory costs page
#: faults (most of the time of the 2,003 term maps once went to them), while each call of
#: a parallel kernel costs a few ms of thread wake-ups on a busy machine (0.25 ms per
#: feature with 32-feature chunks, 1.6 ms with 4)
_BUILD_CHUNK_BYTES = 32 * 2**20
#: the same for float32 maps (the 50 LDA topics, 2 features per 4 MB chunk): a cold build
#: of so few maps pays more for the buffers' fresh pages (3-6 ms per MB on the development
#: VM, whose host backs guest memory lazily) than for a dozen more kernel calls
_BUILD_CHUNK_BYTES_SMALL = 4 * 2**20
#: features counted in one pass over the voxels (uint16 counts): one pass costs about the
#: same for 50 features as for 500, so the passes are few and large
_COUNT_CHUNK_BYTES = 256 * 2**20


def resolve_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$MICROVBA_CACHE``, else ``~/.cache/microvba/maps``."""
    return _paths.cache_dir(cache_dir)


@dataclass
class FeatureMaps:
    """Association and uniformity z maps of every kept feature, with what made them.

    Attributes
    ----------
    features, labels, n_selected
        Kept features (those with a map), their labels and numbers of selected studies.
    z_association, z_uniformity
        (n_features, n_voxels) in-mask z maps (float32, float16 for large vocabularies).
    fdr_z
        DataFrame indexed by feature: |z| thresholds at FDR 0.01 of both maps (inf: none),
        computed on first use.
    activation
        (n_studies, n_voxels) boolean CSR: study ``s`` has a peak within ``kernel_mm`` of
        voxel ``v`` (the MKDA incidence matrix); rebuilt from the peaks on first use.
    peaks
        (n_peaks, 4) int32: grid voxel (i, j, k, possibly outside the grid) and study row
        of every peak, from which ROI association is computed.
    selection, weights
        (n_studies, n_features) CSC: binary selection and continuous weights of kept features.
    dropped
        DataFrame (feature, label, n_selected, reason) of features without a map (after a
        build, read from the cache entry's ``dropped.tsv`` on first use).
    grid
        The :class:`~microvba.decode.grid.BrainGrid` of the maps.
    parameters
        Database, vocabulary, kernel, threshold, resolution, min_studies.
    """

    features: list[str]
    labels: list[str]
    n_selected: np.ndarray
    z_association: np.ndarray
    z_uniformity: np.ndarray
    _activation: sp.csr_matrix | None
    selection: sp.csc_matrix
    weights: sp.csc_matrix
    _dropped: pd.DataFrame | None  # None: read from ``path`` on first use
    grid: BrainGrid
    parameters: dict[str, Any]
    z_mean: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    z_norm: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    path: Path | None = None
    peaks: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 4), np.int32))
    #: set by :func:`begin_feature_maps` until the z maps are written (:meth:`complete`)
    _pending: Any = field(repr=False, default=None)

    def complete(self) -> FeatureMaps:
        """Wait for maps still being computed (:func:`begin_feature_maps`); ``self``."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending(self)
        return self

    @property
    def n_studies(self) -> int:
        return int(self.weights.shape[0])

    @property
    def dropped(self) -> pd.DataFrame:
        if self._dropped is None:  # a fresh build: read as a cache hit reads it
            self._dropped = _read_dropped(self.path)
        return self._dropped

    @property
    def activation(self) -> sp.csr_matrix:
        """The study x voxel incidence matrix, rebuilt from :attr:`peaks` on first use (ROI
        decoding works from the peaks and does not need it; not stored in the cache)."""
        if self._activation is None:
            self._activation = peak_activation(self.peaks[:, :3], self.peaks[:, 3],
                                               self.n_studies, self.grid,
                                               self.parameters["kernel_mm"])
        return self._activation

    @functools.cached_property
    def fdr_z(self) -> pd.DataFrame:
        import pandas as pd

        from ._kernels import fdr_z_thresholds as _fdr_z_thresholds

        cols = {}
        for kind, z in (("association", self.z_association), ("uniformity", self.z_uniformity)):
            step = max(1, _CHUNK_BYTES // (4 * self.grid.n_voxels))
            cols[kind] = np.concatenate([
                _fdr_z_thresholds(np.asarray(z[lo:lo + step], dtype=np.float32), FDR_Q)
                for lo in range(0, len(self.features), step)]) if self.features else []
        return pd.DataFrame(cols, index=self.features)

    def index(self, feature: str) -> int:
        try:
            return self.features.index(feature)
        except ValueError:
            raise InputError(f"Feature {feature!r} has no map.", file="parameter feature",
                             fix="Pick one of FeatureMaps.features (see .dropped for the "
                                 "features without a map).") from None

    def image(self, feature: str, kind: str = "association",
              fdr: bool = False) -> nib.Nifti1Image:
        """The z map of ``feature`` as an image; ``fdr=True`` zeroes voxels not surviving
        FDR 0.01."""
        check_choice("kind", kind, ("association", "uniformity"))
        i = self.index(feature)
        z = np.asarray((self.z_association if kind == "association" else self.z_uniformity)[i],
                       dtype=np.float32)
        if fdr:
            z = np.where(np.abs(z) >= self.fdr_z[kind].iloc[i], z, 0.0)
        return self.grid.unmask(z)

    def table(self) -> pd.DataFrame:
        """One row per kept feature: label, selected studies, FDR thresholds."""
        import pandas as pd

        return pd.DataFrame({"feature": self.features, "label": self.labels,
                             "n_selected": self.n_selected,
                             "fdr_z_association": self.fdr_z["association"].to_numpy(),
                             "fdr_z_uniformity": self.fdr_z["uniformity"].to_numpy()})


def _selection(weights: sp.csc_matrix, threshold: float) -> sp.csc_matrix:
    sel = sp.csc_matrix(weights >= threshold, dtype=bool)
    sel.sort_indices()
    return sel


def _drop_table(db: Database, n_sel: np.ndarray, min_studies: int
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Which features get a map (``keep``) and the columns of the dropped ones."""
    n = db.n_studies
    reason = np.full(n_sel.shape, "", dtype=object)
    reason[n_sel < min_studies] = f"fewer than min_studies={min_studies} selected studies"
    reason[n - n_sel < min_studies] = f"fewer than min_studies={min_studies} other studies"
    reason[n_sel == 0] = "threshold selects no study"
    reason[n_sel == n] = "threshold selects every study"
    keep = reason == ""
    dropped = {"feature": np.asarray(db.features)[~keep], "label": np.asarray(db.labels)[~keep],
               "n_selected": n_sel[~keep], "reason": reason[~keep]}
    return keep, dropped  # logged once per process (_log_dropped)


#: cache entries (or builds) whose dropped features were already logged in this process
_DROPPED_LOGGED: set[str] = set()


def _log_dropped(dropped: pd.DataFrame | dict[str, Any], vocabulary: str, min_studies: int,
                 key: str | None = None) -> None:
    """Log the features without a map once per process and ``key`` (a cache entry): a group
    run loads the same maps for every metric and vocabulary, and the list is in the TSV
    sidecar of each decoding anyway; later loads log at debug level only."""
    first = key is None or key not in _DROPPED_LOGGED
    if key is not None:
        _DROPPED_LOGGED.add(key)
    if not first:
        log.debug("%d %s feature(s) get no map (already reported)", len(dropped), vocabulary)
        return
    reasons = [str(r) for r in dropped["reason"]]
    extreme = [str(f) for f, r in zip(dropped["feature"], reasons, strict=True)
               if r.startswith("threshold")]
    if extreme:
        log.warning("%d %s feature(s) get no map because the threshold selects all or no "
                    "studies: %s", len(extreme), vocabulary, ", ".join(extreme[:10]))
    if len(reasons) > len(extreme):
        log.info("%d %s feature(s) get no map (fewer than %d studies on one side)",
                 len(reasons) - len(extreme), vocabulary, min_studies)


def study_activation(db: Database, grid: BrainGrid, kernel_mm: float) -> sp.csr_matrix:
    """Boolean study x in-mask-voxel MKDA incidence (sphere of ``kernel_mm`` per peak)."""
    return peak_activation(grid.mm_to_ijk(db.xyz), db.peak_study, db.n_studies, grid,
                           kernel_mm)


def peak_activation(ijk: np.ndarray, peak_study: np.ndarray, n_studies: int, grid: BrainGrid,
                    kernel_mm: float) -> sp.csr_matrix:
    """:func:`study_activation` from peak voxels ``ijk`` and their (sorted) study rows."""
    from . import _kernels  # numba: only when maps are built

    peak_ptr = np.searchsorted(peak_study, np.arange(n_studies + 1)).astype(np.int64)
    offsets = _kernels.sphere_offsets(kernel_mm, grid.resolution)
    n_chunks = max(4 * (os.cpu_count() or 1), 1)
    indptr, indices = _kernels.sphere_incidence(
        np.ascontiguousarray(ijk, dtype=np.int64), peak_ptr, offsets,
        np.asarray(grid.shape, np.int64), grid.flat_to_masked, grid.n_voxels, n_chunks)
    data = np.ones(indices.shape[0], dtype=bool)
    return sp.csr_matrix((data, indices, indptr), shape=(n_studies, grid.n_voxels))


class _PeakCounter:
    """Per-feature active-study counts of an MKDA incidence, computed from the peaks.

    Holds what :func:`microvba.decode._kernels.feature_active_counts` needs besides the
    feature lists: the sphere as z columns, the grid rows that hold in-mask voxels and the
    voxel -> peaks index on the padded grid
    (:func:`microvba.decode._roi_hits.peak_voxel_index`).
    """

    def __init__(self, peaks: np.ndarray, n_studies: int, grid: BrainGrid, kernel_mm: float):
        from ._roi_hits import peak_voxel_index, sphere_offsets

        self.n_studies = int(n_studies)
        offsets = sphere_offsets(kernel_mm, grid.resolution)
        self.pad = int(np.abs(offsets).max()) if offsets.size else 0
        # the sphere as columns (di, dj, h): offsets (di, dj, -h..h) (symmetric, convex)
        cols, first = np.unique(offsets[:, :2], axis=0, return_index=True)
        self.disc = np.column_stack([cols, -offsets[first, 2]]).astype(np.int64)
        self.padded = np.asarray(grid.shape, np.int64) + 2 * self.pad
        self.shape = np.asarray(grid.shape, np.int64)
        self.flat_to_masked = grid.flat_to_masked
        self.vox_ptr, self.studies = peak_voxel_index(peaks[:, :3], peaks[:, 3], grid.shape,
                                                       self.pad, unique=True)
        most = np.bincount(self.studies).max(initial=0)
        self.mult_dtype = np.int16 if most <= np.iinfo(np.int16).max else np.int32
        any_k = grid.mask.any(axis=2)
        i, j = np.nonzero(any_k)
        nz = grid.shape[2]
        row_mask = grid.mask[i, j]
        k_first = row_mask.argmax(axis=1)
        k_last = nz - 1 - row_mask[:, ::-1].argmax(axis=1)
        self.rows = np.column_stack([i, j, k_first, k_last]).astype(np.int64)
        self.n_chunks = 32 * max(1, os.cpu_count() or 1)

    def __call__(self, lists: sp.csr_matrix, counts: np.ndarray, n_active: np.ndarray) -> None:
        """Fill ``counts`` (n_features, n_voxels) with :math:`L^\\top A` for the binary
        study x feature matrix ``lists`` (CSR: anything with ``indptr`` over studies and
        ``indices``, e.g. :func:`_study_lists`) and ``n_active`` with the column counts
        of A."""
        from . import _kernels  # numba: only when maps are built

        idx = np.asarray(lists.indices)
        idx = idx.astype(np.int16 if counts.shape[0] <= np.iinfo(np.int16).max else np.int32)
        _kernels.feature_active_counts(
            self.rows, self.disc, self.pad, self.padded, self.flat_to_masked, self.shape,
            self.vox_ptr, self.studies, np.asarray(lists.indptr, np.int64), idx,
            np.zeros(self.n_studies, self.mult_dtype), counts, n_active, self.n_chunks)


class _StudyLists(NamedTuple):
    """A binary study x feature matrix as CSR arrays (what :class:`_PeakCounter` reads)."""

    indptr: np.ndarray
    indices: np.ndarray


def _study_lists(dense: np.ndarray) -> _StudyLists:
    """CSR of a dense boolean study x feature array (row-major: each study's features in
    ascending order, as ``scipy.sparse.csr_matrix(dense)``)."""
    rows, cols = np.nonzero(dense)
    indptr = np.zeros(dense.shape[0] + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=dense.shape[0]), out=indptr[1:])
    return _StudyLists(indptr, cols)


def _compute_maps(counter: _PeakCounter, selection: _Selection, n_vox: int, out_assoc,
                  out_unif, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Stream the maps, chunk of features by chunk, as ``dtype`` bytes to the binary files
    ``out_assoc``/``out_unif``; return the mean and centred norm of each association map
    (of the stored values).

    The selected-active counts of up to :data:`_COUNT_CHUNK_BYTES` worth of features
    (uint16) come from one pass of ``counter`` over the voxels (its cost hardly depends on
    the number of features: one pass for the 50 topics, four for the 2,003 terms);
    features selecting more than half of the studies are counted over the other studies
    (selected-active = all-active - other-active), so no study lists more than half of
    them. The z maps are then computed and written in smaller chunks into buffers reused
    throughout.
    """
    from . import _kernels  # numba: only when maps are built

    n_studies = counter.n_studies
    n_feat = selection.n_features
    n_sel = np.diff(selection.indptr).astype(np.int64)
    count_dtype = np.uint16 if n_studies <= np.iinfo(np.uint16).max else np.int32
    per_count = max(1, min(n_feat, _COUNT_CHUNK_BYTES
                           // (np.dtype(count_dtype).itemsize * n_vox)))
    chunk = max(1, min(per_count, _BUILD_CHUNK_BYTES // (8 * n_vox)))
    mean = np.empty(n_feat)
    norm = np.empty(n_feat)
    half = np.dtype(dtype) != np.float32
    if not half:  # the 50 LDA maps: small buffers (fresh memory costs more than calls)
        chunk = max(1, min(chunk, _BUILD_CHUNK_BYTES_SMALL // (8 * n_vox)))
    counts_buf = np.empty((per_count, n_vox), count_dtype)
    n_active = np.empty(n_vox, np.int64)
    za_buf = np.empty((chunk, n_vox), np.float32)
    zu_buf = np.empty((chunk, n_vox), np.float32)
    # the stored (float16) values' bits, one buffer for all chunks
    stored = np.empty((chunk, n_vox), np.uint16) if half else None
    for c_lo in range(0, n_feat, per_count):
        c_hi = min(n_feat, c_lo + per_count)
        flip = n_sel[c_lo:c_hi] > n_studies // 2
        dense = selection.dense(c_lo, c_hi)
        dense[:, flip] = ~dense[:, flip]
        counts = counts_buf[:c_hi - c_lo]
        counter(_study_lists(dense), counts, n_active)
        del dense
        for f in np.flatnonzero(flip):
            counts[f] = n_active - counts[f]
        for lo in range(c_lo, c_hi, chunk):
            hi = min(c_hi, lo + chunk)
            k = hi - lo
            za, zu = za_buf[:k], zu_buf[:k]
            _kernels.chi2_z_maps(counts[lo - c_lo:hi - c_lo], n_active, n_sel[lo:hi],
                                 n_studies, za, zu, mean[lo:hi], norm[lo:hi], not half)
            if half:  # float16 bits as astype(np.float16) rounds them, stats of those
                _kernels.to_half(za, stored[:k], mean[lo:hi], norm[lo:hi], True)
                out_assoc.write(memoryview(stored[:k]))
                _kernels.to_half(zu, stored[:k], mean[lo:hi], norm[lo:hi], False)
                out_unif.write(memoryview(stored[:k]))
            else:
                out_assoc.write(memoryview(za))
                out_unif.write(memoryview(zu))
            log.debug("maps %d-%d of %d done", lo, hi, n_feat)
    return mean, norm


def _check_args(db: Database, vocabulary: str, kernel_mm: float, threshold: float | None,
                resolution: float, min_studies: int) -> float:
    check_choice("vocabulary", vocabulary, VOCABULARIES)
    if db.vocabulary != vocabulary:
        raise InputError(f"The database provides the '{db.vocabulary}' vocabulary, not "
                         f"'{vocabulary}'.", file="parameter vocabulary",
                         fix="Load the matching database: load_vocabulary(vocabulary).")
    check_in_range("kernel_mm", kernel_mm, 0.0, 50.0)
    check_in_range("resolution", resolution, 0.5, 10.0)
    check_positive_int("min_studies", min_studies)
    threshold = DEFAULT_THRESHOLD[vocabulary] if threshold is None else threshold
    return check_in_range("threshold", threshold, 0.0, 1.0)


def _cache_key(name: str, version: str, vocabulary: str, kernel_mm: float, threshold: float,
               resolution: float, min_studies: int, grid: BrainGrid,
               cache_dir: str | Path | None) -> tuple[dict[str, Any], Path]:
    params = {"database": name, "version": version, "vocabulary": vocabulary,
              "kernel_mm": float(kernel_mm), "threshold": float(threshold),
              "resolution": float(resolution), "min_studies": int(min_studies),
              "fdr_q": FDR_Q, "n_voxels": grid.n_voxels, "algorithm": ALGORITHM_VERSION}
    folder = resolve_cache_dir(cache_dir) / (
        f"{name}-v{version}_vocab-{vocabulary}_kernel-{kernel_mm:g}mm"
        f"_thr-{threshold:g}_res-{resolution:g}mm_min-{min_studies}"
        f"_{params_hash(params)[7:19]}")
    return params, folder


#: files of a cache entry: the maps, their feature table, and what decoding needs without
#: the database (kept weights, dropped features, peak voxels and studies)
_BUNDLE = ("z_association.npy", "z_uniformity.npy", "features.tsv", "weights.npz",
           "dropped.tsv", "peaks.npy")


def _bundle_valid(folder: Path, params: dict[str, Any], inputs: dict[str, Path]) -> bool:
    """The entry exists for these parameters and inputs; inputs whose size and mtime match
    those recorded are not hashed again (a warm call reads no database file)."""
    sidecar = folder / "maps.json"
    if not sidecar.exists() or not all((folder / f).exists() for f in _BUNDLE):
        return False
    try:
        recorded = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if recorded.get("ParametersHash") != params_hash(params) or CHECKSUMS_KEY not in recorded:
        return False  # an entry written without content checksums is rebuilt once
    stamps = recorded.get("InputStamps", {})
    hashes = recorded.get("InputHashes", {})
    if set(hashes) != set(inputs):
        return False
    now = file_stamps(inputs)
    return all(stamps.get(k) == now[k] or hashes[k] == file_hash(v)
               for k, v in inputs.items())


def _read_dropped(folder: Path) -> pd.DataFrame:
    import pandas as pd

    return pd.read_table(folder / "dropped.tsv", keep_default_na=False,
                         dtype={"feature": str, "label": str})


def _load_bundle(folder: Path, params: dict[str, Any], grid: BrainGrid) -> FeatureMaps:
    import pandas as pd

    table = pd.read_table(folder / "features.tsv", keep_default_na=False)
    dropped = _read_dropped(folder)
    _log_dropped(dropped, params["vocabulary"], params["min_studies"], key=str(folder))
    weights = sp.load_npz(folder / "weights.npz").tocsc()
    selection = _selection(weights, params["threshold"])
    return FeatureMaps(features=table["feature"].astype(str).tolist(),
                       labels=table["label"].astype(str).tolist(),
                       n_selected=np.diff(selection.indptr),
                       z_association=np.load(folder / "z_association.npy", mmap_mode="r"),
                       z_uniformity=np.load(folder / "z_uniformity.npy", mmap_mode="r"),
                       _activation=None, selection=selection, weights=weights,
                       _dropped=dropped, grid=grid, parameters=params,
                       z_mean=table["z_mean"].to_numpy(float),
                       z_norm=table["z_norm"].to_numpy(float), path=folder,
                       peaks=np.load(folder / "peaks.npy"))


def cached_feature_maps(vocabulary: str = "lda50", data_dir: str | Path | None = None,
                        kernel_mm: float = 6.0, threshold: float | None = None,
                        resolution: float = 2.0, min_studies: int = 50,
                        cache_dir: str | Path | None = None) -> FeatureMaps | None:
    """The cached :class:`FeatureMaps` of these parameters without loading the database
    (``None`` when the cache entry is missing or stale; then call :func:`feature_maps`)."""
    check_choice("vocabulary", vocabulary, VOCABULARIES)
    name = VOCABULARY_DATABASE[vocabulary]
    inputs = database_files(name, data_dir)
    threshold = DEFAULT_THRESHOLD[vocabulary] if threshold is None else float(threshold)
    grid = mni_brain_grid(resolution, cache_dir)
    params, folder = _cache_key(name, VERSIONS[name], vocabulary, kernel_mm, threshold,
                                resolution, min_studies, grid, cache_dir)
    if not _bundle_valid(folder, params, inputs):
        return None
    return _load_bundle(folder, params, grid)


def feature_maps(db: Database, vocabulary: str = "lda50", kernel_mm: float = 6.0,
                 threshold: float | None = None, resolution: float = 2.0,
                 min_studies: int = 50, cache_dir: str | Path | None = None) -> FeatureMaps:
    """Association and uniformity maps of every feature of ``db`` (cached; see module doc).

    Parameters
    ----------
    db
        From :func:`microvba.decode.database.load_database`.
    vocabulary
        ``"lda50"`` (Neurosynth) or ``"terms"`` (NeuroQuery); must match ``db``.
    kernel_mm
        MKDA sphere radius: 6 mm as Neurosynth, 10 mm as NiMARE's default.
    threshold
        Weight a study needs to be selected for a feature; default 0.05 for ``lda50``,
        0.001 for ``terms`` (module docstring).
    resolution
        Grid spacing in mm of the MNI brain mask.
    min_studies
        Smallest number of selected (and of other) studies for a feature to get a map.
    cache_dir
        Cache root; default ``$MICROVBA_CACHE`` or ``~/.cache/microvba/maps``. Entries are
        keyed by database version, parameters and input-file hashes. An entry also holds
        the peaks (grid voxel and study), the kept weights and the dropped features, so
        :func:`cached_feature_maps` serves a warm call without reading the database.
    """
    return begin_feature_maps(db, vocabulary, kernel_mm, threshold, resolution, min_studies,
                              cache_dir).complete()


def begin_feature_maps(db: Database, vocabulary: str = "lda50", kernel_mm: float = 6.0,
                       threshold: float | None = None, resolution: float = 2.0,
                       min_studies: int = 50, cache_dir: str | Path | None = None
                       ) -> FeatureMaps:
    """:func:`feature_maps`, returned while the maps may still be computed (in a child
    process, :mod:`microvba.decode._child`): everything but the z maps and their
    statistics is set; :meth:`FeatureMaps.complete` waits for them and finishes the cache
    entry (its sidecar last). :class:`~microvba.decode.decoder.Decoder` prepares its ROI
    index meanwhile."""
    threshold = _check_args(db, vocabulary, kernel_mm, threshold, resolution, min_studies)
    grid = mni_brain_grid(resolution, cache_dir)
    params, folder = _cache_key(db.name, db.version, vocabulary, kernel_mm, threshold,
                                resolution, min_studies, grid, cache_dir)
    if _bundle_valid(folder, params, db.files):
        return _load_bundle(folder, params, grid)
    peaks = _peak_voxels(grid, db.xyz, db.peak_study)
    counter = _PeakCounter(peaks, db.n_studies, grid, float(kernel_mm))
    keep, dropped, sel = _kept_selection(db, threshold, min_studies)
    features = [f for f, k in zip(db.features, keep, strict=True) if k]
    labels = [lab for lab, k in zip(db.labels, keep, strict=True) if k]
    files = [folder / f for f in _BUNDLE]
    # the maps: in a child process where possible (microvba/decode/_child.py), while this
    # one imports scipy.sparse and writes the other files
    maps = ChildCall(_build_cache, counter, sel, features, labels, files[:3], grid)
    weights = sp.csc_matrix(db.weights)[:, np.flatnonzero(keep)]
    selection = _selection(weights, threshold)
    n_selected = np.diff(selection.indptr)
    with atomic_path(files[3]) as tmp, open(tmp, "wb") as fh:
        sp.save_npz(fh, sp.csc_matrix(weights), compressed=False)
    with atomic_path(files[4]) as tmp:
        _write_tsv(tmp, dropped)
    with atomic_path(files[5]) as tmp, open(tmp, "wb") as fh:
        np.save(fh, peaks)
    sidecar = make_sidecar(params, db.files, n_dropped=len(dropped["feature"]),
                           InputStamps=file_stamps(db.files))

    def finish(fm: FeatureMaps) -> None:
        fm.z_mean, fm.z_norm = maps.result()
        # content checksums, verified before the entry is read (decode/cache_check.py)
        sidecar[CHECKSUMS_KEY] = file_checksums(folder, _BUNDLE)
        write_json(folder / "maps.json", sidecar)  # the entry is complete: valid from now
        _log_dropped(dropped, vocabulary, min_studies, key=str(folder))
        fm.z_association = np.load(files[0], mmap_mode="r")
        fm.z_uniformity = np.load(files[1], mmap_mode="r")

    # what _load_bundle would read back: the same values (the tests compare them)
    return FeatureMaps(features=features, labels=labels, n_selected=n_selected,
                       z_association=np.zeros((0, grid.n_voxels), np.float32),
                       z_uniformity=np.zeros((0, grid.n_voxels), np.float32),
                       _activation=None, selection=selection, weights=weights,
                       _dropped=None, grid=grid, parameters=params, path=folder,
                       peaks=peaks, _pending=finish)


class _Selection(NamedTuple):
    """The binary study x feature selection of the kept features as CSC arrays (what the
    map build reads: no scipy needed)."""

    indptr: np.ndarray
    indices: np.ndarray
    n_studies: int

    @property
    def n_features(self) -> int:
        return self.indptr.size - 1

    def dense(self, lo: int, hi: int) -> np.ndarray:
        """(n_studies, hi - lo) bool: the columns ``lo:hi`` (``selection[:, lo:hi]
        .toarray()``)."""
        a, b = self.indptr[lo], self.indptr[hi]
        out = np.zeros((self.n_studies, hi - lo), bool)
        out[self.indices[a:b], np.repeat(np.arange(hi - lo), np.diff(self.indptr[lo:hi + 1]))] \
            = True
        return out


def _kept_selection(db: Database, threshold: float, min_studies: int
                    ) -> tuple[np.ndarray, dict[str, np.ndarray], _Selection]:
    """``keep`` (features with a map), the dropped features' columns and the kept
    features' selection (weight >= ``threshold``), as :func:`_selection` on
    ``db.weights`` gives them, computed on the CSC arrays without scipy."""
    w = db.csc_arrays()
    if threshold <= 0:  # implicit zeros select too: scipy's comparison
        full = _selection(sp.csc_matrix(db.weights), threshold)
        keep, dropped = _drop_table(db, np.diff(full.indptr), min_studies)
        s = _selection(sp.csc_matrix(db.weights)[:, np.flatnonzero(keep)], threshold)
        return keep, dropped, _Selection(s.indptr.astype(np.int64), s.indices, w.shape[0])
    col = np.repeat(np.arange(w.shape[1]), np.diff(w.indptr))
    chosen = np.asarray(w.data) >= threshold  # only stored weights can reach it
    keep, dropped = _drop_table(db, np.bincount(col[chosen], minlength=w.shape[1]),
                                min_studies)
    kept = chosen & keep[col]
    new_col = np.cumsum(keep) - 1
    ptr = np.zeros(int(keep.sum()) + 1, np.int64)
    np.cumsum(np.bincount(new_col[col[kept]], minlength=ptr.size - 1), out=ptr[1:])
    return keep, dropped, _Selection(ptr, np.asarray(w.indices)[kept], w.shape[0])


def _peak_voxels(grid: BrainGrid, xyz: np.ndarray, peak_study: np.ndarray,
                 block: int = 1 << 15) -> np.ndarray:
    """(n_peaks, 4) int32: the grid voxel of every peak (:meth:`BrainGrid.mm_to_ijk`) and
    its study row, ``np.column_stack([grid.mm_to_ijk(xyz), peak_study]).astype(np.int32)``
    computed in blocks: the same operations on 768 kB pieces instead of four 12 MB float64
    and int64 temporaries, whose fresh pages cost more than the arithmetic on a VM."""
    xyz = np.asarray(xyz).reshape(-1, 3)
    out = np.empty((xyz.shape[0], 4), np.int32)
    out[:, 3] = np.asarray(peak_study, dtype=np.int64)  # -> int32 as astype casts
    buf = np.empty((min(block, xyz.shape[0]), 3))
    for lo in range(0, xyz.shape[0], block):
        hi = min(xyz.shape[0], lo + block)
        out[lo:hi, :3] = grid.mm_to_ijk(xyz[lo:hi], out=buf[:hi - lo])
    return out


def _build_cache(counter: _PeakCounter, selection: _Selection, features: list[str],
                 labels: list[str], files: list[Path], grid: BrainGrid
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Write the two z map files and ``features.tsv``; return each association map's mean
    and centred norm (as stored in ``features.tsv``)."""
    n_feat, n_vox = selection.n_features, grid.n_voxels
    dtype = np.float16 if n_feat * n_vox * 4 > _FLOAT16_ABOVE else np.float32
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": (n_feat, n_vox)}
    with contextlib.ExitStack() as stack:
        tmp_a = stack.enter_context(atomic_path(files[0]))
        tmp_u = stack.enter_context(atomic_path(files[1]))
        fa = stack.enter_context(DirectWriter(tmp_a))
        fu = stack.enter_context(DirectWriter(tmp_u))
        for fh in (fa, fu):
            np.lib.format.write_array_header_1_0(fh, header)
        mean, norm = _compute_maps(counter, selection, n_vox, fa, fu, dtype)
    table = {"feature": features, "label": labels, "n_selected": np.diff(selection.indptr),
             "z_mean": mean, "z_norm": norm}
    with atomic_path(files[2]) as tmp:
        _write_tsv(tmp, table)
    return mean, norm


def _tsv_field(value: Any) -> Any:
    """A cell as ``DataFrame.to_csv`` writes it: floats by their shortest repr (as
    numpy's ``str``), NaN as an empty field, integers and strings as they are."""
    if isinstance(value, float | np.floating):
        value = float(value)
        return repr(value) if value == value else ""
    if isinstance(value, np.integer):
        return int(value)
    return value


def _write_tsv(path: Path, columns: dict[str, Any]) -> None:
    """Write ``columns`` (name -> sequence, equal lengths) as ``pd.DataFrame(columns)
    .to_csv(path, sep="\t", index=False)`` does, byte for byte (the csv module with
    pandas' dialect: minimal quoting, ``"\n"`` line ends), without importing pandas."""
    names = list(columns)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n", quotechar='"',
                            quoting=csv.QUOTE_MINIMAL, doublequote=True)
        writer.writerow(names)
        cols = [columns[n].tolist() if isinstance(columns[n], np.ndarray) else columns[n]
                for n in names]
        writer.writerows([_tsv_field(v) for v in row] for row in zip(*cols, strict=True))

