"""Coordinate databases (Neurosynth v0.7, NeuroQuery v1) read from a data directory.

The files are the publishers' own (see :mod:`microvba.cli.data` for their addresses); they
are never shipped with microvba. The data directory is, in order: the ``data_dir`` argument
(``--data-dir``), the ``MICROVBA_DATA`` environment variable, ``~/.cache/microvba``. Each
database lives in a sub-folder named after it (``<data_dir>/neurosynth``).

Vocabularies
------------
``lda50``
    Neurosynth v0.7's 50 LDA topics (Poldrack et al. 2012 style topic model of the abstracts):
    per-study topic weights in [0, 1] that sum to one over topics.
``terms``
    NeuroQuery v1's 7,547 terms (Dockès et al. 2020). Their raw counts in title, abstract and
    keywords are summed, :math:`c_{st}`, and turned into tf-idf as scikit-learn's
    ``TfidfVectorizer`` (and Neurosynth) do:

    .. math::

        \\mathrm{idf}_t = \\ln\\frac{1 + n}{1 + \\mathrm{df}_t} + 1, \\qquad
        x_{st} = \\frac{c_{st}\\,\\mathrm{idf}_t}
                      {\\lVert c_{s\\cdot}\\,\\mathrm{idf} \\rVert_2},

    with :math:`n` studies and :math:`\\mathrm{df}_t` the number of studies using term
    :math:`t`. Each study's vector has unit L2 norm, so Neurosynth's threshold of 0.001
    keeps a study whenever the term occurs in it at all.

Coordinates
-----------
Peaks reported in Talairach space (Neurosynth ``space == "TAL"``) are mapped to MNI with
Lancaster's tal2icbm transform (``tal2icbm_other``; Lancaster et al. 2007, Hum Brain Mapp
28:1194), as NiMARE does; peaks in ``MNI`` or ``UNKNOWN`` space are used as reported.

Parsed copy
-----------
Parsing the publishers' text files (gzip-compressed tables of ~500,000 peaks) is most of
the time of loading a database. The parsed arrays (study ids, peaks, the sparse weights,
feature names and labels) are kept as one uncompressed ``.npz`` in
``<cache_dir>/databases/``, named by the database version and a hash of the source files'
paths, sizes and modification times; a later load with unchanged files reads it with
:func:`numpy.load` (no pickles) instead of parsing. It is written atomically, and a
missing, stale or unreadable copy is simply parsed again; ``cache=False`` bypasses it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from .. import _paths
from .._logging import get_logger
from .._validation import InputError, check_choice
from ._lazy import lazy_module

if TYPE_CHECKING:
    import pandas as pd

sp = lazy_module("scipy.sparse")  # imported on first use

log = get_logger(__name__)

__all__ = ["Database", "load_database", "load_vocabulary", "resolve_data_dir", "tal2mni",
           "tfidf"]

DATABASES = ("neurosynth", "neuroquery")
#: vocabulary -> the database that provides it
VOCABULARY_DATABASE = {"lda50": "neurosynth", "terms": "neuroquery"}

#: file names inside ``<data_dir>/<database>``; the publishers' names, unchanged
FILES: dict[str, dict[str, str]] = {
    "neurosynth": {
        "coordinates": "data-neurosynth_version-7_coordinates.tsv.gz",
        "metadata": "data-neurosynth_version-7_metadata.tsv.gz",
        "features": "data-neurosynth_version-7_vocab-LDA50_source-abstract_type-weight_features.npz",
        "vocabulary": "data-neurosynth_version-7_vocab-LDA50_vocabulary.txt",
        "keys": "data-neurosynth_version-7_vocab-LDA50_keys.tsv",
        "vocab_metadata": "data-neurosynth_version-7_vocab-LDA50_metadata.json",
    },
    "neuroquery": {
        "coordinates": "data-neuroquery_version-1_coordinates.tsv.gz",
        "metadata": "data-neuroquery_version-1_metadata.tsv.gz",
        "abstract": "data-neuroquery_version-1_vocab-neuroquery7547_source-abstract_type-count_features.npz",
        "title": "data-neuroquery_version-1_vocab-neuroquery7547_source-title_type-count_features.npz",
        "keywords": "data-neuroquery_version-1_vocab-neuroquery7547_source-keywords_type-count_features.npz",
        "vocabulary": "data-neuroquery_version-1_vocab-neuroquery7547_vocabulary.txt",
    },
}
VERSIONS = {"neurosynth": "7", "neuroquery": "1"}

#: Lancaster et al. (2007) tal2icbm "other" (MNI -> Talairach); invert for Talairach -> MNI
_ICBM_OTHER = np.array([[0.9357, 0.0029, -0.0072, -1.0423],
                        [-0.0065, 0.9396, -0.0726, -1.3940],
                        [0.0103, 0.0752, 0.8967, 3.6475],
                        [0.0, 0.0, 0.0, 1.0]])


@dataclass
class Database:
    """A coordinate database with one vocabulary of per-study feature weights.

    Attributes
    ----------
    name, version, vocabulary
        e.g. ``"neurosynth"``, ``"7"``, ``"lda50"``.
    study_ids
        (n_studies,) study identifiers (PMIDs), in the row order of ``weights``.
    xyz
        (n_peaks, 3) MNI coordinates in mm.
    peak_study
        (n_peaks,) row of ``study_ids`` each peak belongs to (sorted).
    weights
        (n_studies, n_features) sparse CSC matrix of feature weights (topic weight or tf-idf).
    features, labels
        Feature names (column order) and human-readable labels (a topic's top words).
    files
        The source files read, for provenance and cache keys.
    """

    name: str
    version: str
    vocabulary: str
    study_ids: np.ndarray
    xyz: np.ndarray
    peak_study: np.ndarray
    weights: sp.csc_matrix
    features: list[str]
    labels: list[str]
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def n_studies(self) -> int:
        return int(self.study_ids.shape[0])

    @property
    def n_features(self) -> int:
        return len(self.features)

    def __repr__(self) -> str:
        return (f"Database({self.name} v{self.version}, vocabulary={self.vocabulary}, "
                f"{self.n_studies} studies, {self.xyz.shape[0]} peaks, "
                f"{self.n_features} features)")

    def csc_arrays(self) -> CSCArrays:
        """``weights`` as CSC arrays, without importing scipy when they were loaded from
        the parsed copy and ``weights`` was not used yet."""
        w = self.__dict__["_weights"]
        if isinstance(w, CSCArrays):
            return w
        w = sp.csc_matrix(w)
        return CSCArrays(w.data, w.indices, w.indptr, tuple(w.shape))


class CSCArrays(NamedTuple):
    """A CSC matrix as its arrays (``scipy.sparse.csc_matrix((data, indices, indptr),
    shape)``)."""

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    shape: tuple[int, int]


def _get_weights(db: Database) -> sp.csc_matrix:
    w = db.__dict__["_weights"]
    if isinstance(w, CSCArrays):  # from the parsed copy: the scipy matrix on first use
        w = sp.csc_matrix((w.data, w.indices, w.indptr), shape=w.shape)
        db.__dict__["_weights"] = w
    return w


def _set_weights(db: Database, value) -> None:
    db.__dict__["_weights"] = value


# a property over the dataclass field (set by the generated __init__): the parsed copy's
# arrays become a scipy matrix only when used, so a cold map build need not import scipy
# before it starts its child process (microvba/decode/_child.py)
Database.weights = property(_get_weights, _set_weights,
                            doc="(n_studies, n_features) CSC matrix of feature weights.")


#: the data folder (:func:`microvba._paths.data_dir`: ``data_dir``, else ``$MICROVBA_DATA``,
#: else ``~/.cache/microvba``)
resolve_data_dir = _paths.data_dir


def database_files(name: str, data_dir: str | Path | None = None) -> dict[str, Path]:
    """Paths of the files of database ``name``; InputError listing those that are missing."""
    check_choice("database", name, DATABASES)
    folder = resolve_data_dir(data_dir) / name
    paths = {k: folder / v for k, v in FILES[name].items()}
    missing = [p for p in paths.values() if not p.is_file()]
    if missing:
        fix = (f"Run 'microvba data fetch --database {name} --data-dir {folder.parent}' (needs "
               f"internet), or point --data-dir / the MICROVBA_DATA environment variable at the "
               f"folder that contains '{name}/'.")
        shown = ", ".join(p.name for p in missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise InputError(f"The {name} database is missing {len(missing)} file(s): {shown}",
                         file=str(folder), fix=fix)
    return paths


def tal2mni(xyz: np.ndarray) -> np.ndarray:
    """Talairach -> MNI (ICBM) coordinates with Lancaster's tal2icbm_other transform.

    .. math:: x_{\\mathrm{MNI}} = T^{-1} \\, [x_{\\mathrm{TAL}}, 1]^\\top

    with :math:`T` the published icbm_other -> Talairach affine (Lancaster et al. 2007).
    """
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    inv = np.linalg.inv(_ICBM_OTHER)
    return xyz @ inv[:3, :3].T + inv[:3, 3]


def _read_coordinates(path: Path, metadata: pd.DataFrame) -> tuple[np.ndarray, np.ndarray,
                                                                    np.ndarray]:
    """(kept study ids, xyz, peak_study) for studies with at least one peak."""
    import pandas as pd

    coords = pd.read_table(path, usecols=["id", "x", "y", "z"])
    meta_ids = metadata["id"].to_numpy()
    row = pd.Index(meta_ids).get_indexer(coords["id"].to_numpy())
    if (row < 0).any():
        log.warning("%s: %d peaks of studies absent from the metadata ignored", path.name,
                    int((row < 0).sum()))
        coords, row = coords[row >= 0], row[row >= 0]
    xyz = coords[["x", "y", "z"]].to_numpy(dtype=np.float64)
    ok = np.isfinite(xyz).all(axis=1)
    xyz, row = xyz[ok], row[ok]
    if "space" in metadata.columns:
        tal = (metadata["space"].astype(str).str.upper() == "TAL").to_numpy()[row]
        xyz[tal] = tal2mni(xyz[tal])
    order = np.argsort(row, kind="stable")
    xyz, row = xyz[order], row[order]
    kept = np.unique(row)
    if kept.size < len(meta_ids):
        log.info("%s: %d studies without peaks left out", path.name, len(meta_ids) - kept.size)
    remap = np.full(len(meta_ids), -1, dtype=np.int64)
    remap[kept] = np.arange(kept.size)
    return kept, xyz, remap[row]


def _lda_labels(keys_path: Path, features: list[str], n_words: int = 8) -> list[str]:
    import pandas as pd

    keys = pd.read_table(keys_path, header=None)
    words = {int(r[0]): " ".join(str(r[2]).split()[:n_words]) for r in keys.itertuples(index=False)}
    return [words.get(i, f) for i, f in enumerate(features)]


def tfidf(counts: sp.spmatrix) -> sp.csc_matrix:
    """Smooth-idf, L2-normalised tf-idf of a studies x terms count matrix (module docstring)."""
    counts = sp.csr_matrix(counts, dtype=np.float64)
    n = counts.shape[0]
    df = np.bincount(counts.indices, minlength=counts.shape[1])
    idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
    x = counts @ sp.diags(idf)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    x = sp.diags(1.0 / norms) @ x
    return sp.csc_matrix(x)


@contextlib.contextmanager
def _reading(name: str, path: Path) -> Iterator[None]:
    """Turn the errors of a truncated or corrupt database file into an InputError naming it."""
    import zipfile
    import zlib

    import pandas as pd  # pandas is imported only to parse the text files

    try:
        yield
    except (OSError, EOFError, ValueError, KeyError, UnicodeDecodeError, zlib.error,
            zipfile.BadZipFile, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"The {name} database file cannot be read ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:200]}); it is truncated or corrupt.",
                         file=path,
                         fix=f"Download it again: microvba data fetch --database {name} "
                             f"--data-dir {path.parent.parent}") from exc


#: bump when the parsed arrays (or their meaning) change, so old parsed copies are not used
_PARSED_FORMAT = 1
_PARSED_ARRAYS = ("study_ids", "xyz", "peak_study", "w_data", "w_indices", "w_indptr",
                  "w_shape", "features", "labels", "vocabulary")


def file_stamps(files: dict[str, Path]) -> dict[str, list[int]]:
    """Size and modification time (ns) of each file: a change of either marks it changed
    (the parsed copy's name; the map cache re-hashes such an input)."""
    out = {}
    for k, v in files.items():
        st = Path(v).stat()
        out[k] = [int(st.st_size), int(st.st_mtime_ns)]
    return out


def parsed_cache_path(name: str, paths: dict[str, Path],
                      cache_dir: str | Path | None = None) -> Path:
    """Where the parsed copy of database ``name`` with source files ``paths`` lives: named
    by a hash of the version, the format and each file's resolved path, size and
    modification time (ns), so an edited or replaced file never matches an old copy."""
    from .._provenance import params_hash

    stamps = {k: [str(Path(paths[k]).resolve()), *st] for k, st in file_stamps(paths).items()}
    key = params_hash({"database": name, "version": VERSIONS[name],
                       "format": _PARSED_FORMAT, "files": stamps})[7:23]
    return _paths.cache_dir(cache_dir) / "databases" / f"{name}-v{VERSIONS[name]}_{key}.npz"


def _load_parsed(name: str, path: Path, paths: dict[str, Path]) -> Database | None:
    """The parsed copy at ``path``, or None when it is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            a = {k: z[k] for k in _PARSED_ARRAYS}
        weights = _checked_csc(a["w_data"], a["w_indices"], a["w_indptr"], a["w_shape"])
        return Database(name=name, version=VERSIONS[name], vocabulary=str(a["vocabulary"]),
                        study_ids=a["study_ids"], xyz=a["xyz"], peak_study=a["peak_study"],
                        weights=weights, features=a["features"].tolist(),
                        labels=a["labels"].tolist(), files=paths)
    except (OSError, EOFError, ValueError, KeyError) as exc:
        log.debug("parsed copy %s unreadable (%s); parsing the database again", path, exc)
        return None


def _checked_csc(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray,
                 shape: np.ndarray) -> CSCArrays:
    """The parsed copy's weights, checked as ``scipy.sparse.csc_matrix`` checks them when
    built (ValueError for a damaged copy, which is then parsed again)."""
    shape = tuple(int(x) for x in shape)
    ok = (len(shape) == 2 and indptr.ndim == indices.ndim == data.ndim == 1
          and indptr.size == shape[1] + 1 and indices.size == data.size
          and indptr.size > 0 and indptr[0] == 0 and indptr[-1] == indices.size
          and bool(np.all(np.diff(indptr) >= 0))
          and (indices.size == 0 or (indices.min() >= 0 and indices.max() < shape[0])))
    if not ok:
        raise ValueError("inconsistent CSC arrays of the weights")
    return CSCArrays(data, indices, indptr, shape)


def _save_parsed(db: Database, path: Path) -> None:
    """Write the parsed copy atomically; a cache folder that cannot be written only costs
    the next load a parse."""
    from .._provenance import atomic_path

    w = db.csc_arrays()
    arrays = {"study_ids": db.study_ids, "xyz": db.xyz, "peak_study": db.peak_study,
              "w_data": w.data, "w_indices": w.indices, "w_indptr": w.indptr,
              "w_shape": np.asarray(w.shape, np.int64),
              "features": np.asarray(db.features, dtype=str),
              "labels": np.asarray(db.labels, dtype=str),
              "vocabulary": np.asarray(db.vocabulary)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    except OSError as exc:
        log.debug("parsed copy not written to %s (%s)", path, exc)


def load_database(name: str, data_dir: str | Path | None = None,
                  cache_dir: str | Path | None = None, cache: bool = True) -> Database:
    """Load the Neurosynth (``lda50``) or NeuroQuery (``terms``) database.

    Parameters
    ----------
    name
        ``"neurosynth"`` or ``"neuroquery"``.
    data_dir
        Folder holding ``<name>/``; default ``$MICROVBA_DATA`` or ``~/.cache/microvba``.
    cache_dir
        Cache root for the parsed copy (module docstring, *Parsed copy*); default
        ``$MICROVBA_CACHE`` or ``~/.cache/microvba/maps``.
    cache
        Read and write the parsed copy (``False``: always parse the source files).

    Raises
    ------
    InputError
        When files are missing (the fix says to run ``microvba data fetch``) or unreadable.
    """
    paths = database_files(name, data_dir)
    if not cache:
        return _parse_database(name, paths)
    where = parsed_cache_path(name, paths, cache_dir)
    db = _load_parsed(name, where, paths)
    if db is None:
        db = _parse_database(name, paths)
        _save_parsed(db, where)
    return db


def _parse_database(name: str, paths: dict[str, Path]) -> Database:
    """Parse the publishers' files of database ``name`` (:func:`load_database`)."""
    import pandas as pd

    with _reading(name, paths["metadata"]):
        metadata = pd.read_table(paths["metadata"])
        ids = metadata["id"]
    if not ids.is_unique:
        raise InputError("The metadata has duplicated study ids.", file=paths["metadata"],
                         fix="Download the file again with 'microvba data fetch'.")
    with _reading(name, paths["coordinates"]):
        kept, xyz, peak_study = _read_coordinates(paths["coordinates"], metadata)
    with _reading(name, paths["vocabulary"]):
        vocab = [v.strip() for v in paths["vocabulary"].read_text().splitlines() if v.strip()]
    if name == "neurosynth":
        with _reading(name, paths["features"]):
            weights = sp.load_npz(paths["features"]).tocsr()
        with _reading(name, paths["keys"]):
            labels = _lda_labels(paths["keys"], vocab)
        vocabulary = "lda50"
        with _reading(name, paths["vocab_metadata"]):
            meta = json.loads(paths["vocab_metadata"].read_text())
        log.debug("LDA model: %s", meta.get("name"))
    else:
        counts = 0
        for k in ("abstract", "title", "keywords"):
            with _reading(name, paths[k]):
                counts = counts + sp.load_npz(paths[k]).tocsr()
        weights = tfidf(counts).tocsr()
        labels = list(vocab)
        vocabulary = "terms"
    if weights.shape != (len(metadata), len(vocab)):
        raise InputError(f"The feature matrix has shape {weights.shape}; expected "
                         f"({len(metadata)} studies, {len(vocab)} features).",
                         file=str(paths["vocabulary"].parent),
                         fix="Download matching files again with 'microvba data fetch'.")
    return Database(name=name, version=VERSIONS[name], vocabulary=vocabulary,
                    study_ids=metadata["id"].to_numpy()[kept], xyz=xyz, peak_study=peak_study,
                    weights=sp.csc_matrix(weights[kept]), features=vocab, labels=labels,
                    files=paths)


def load_vocabulary(vocabulary: str, data_dir: str | Path | None = None,
                    cache_dir: str | Path | None = None, cache: bool = True) -> Database:
    """The database that provides ``vocabulary`` (``lda50`` -> Neurosynth, ``terms`` ->
    NeuroQuery); ``cache_dir``, ``cache`` as in :func:`load_database`."""
    check_choice("vocabulary", vocabulary, VOCABULARY_DATABASE)
    return load_database(VOCABULARY_DATABASE[vocabulary], data_dir, cache_dir, cache)

