"""Download the public database files from their publishers (``microvba data fetch``).

Sources (pinned commits, the same files NiMARE's ``fetch_neurosynth`` / ``fetch_neuroquery``
download):

* Neurosynth v0.7 (July 2018), ODbL, https://github.com/neurosynth/neurosynth-data at commit
  ``209c33cd009d0b069398a802198b41b9c488b9b7`` (repository root);
* NeuroQuery v1, BSD-3, https://github.com/neuroquery/neuroquery_data at commit
  ``4580f86267fb7c14ac1f601e298cbed898d79f2d`` (``data/``);
* the Brainnetome BN-246 1 mm label image (Fan et al. 2016; research use), from the
  publisher (:data:`~microvba.regions.atlases.BRAINNETOME_URL`), into
  ``atlases/brainnetome/``. Its label names are not downloaded: the package ships its own
  corrected look-up and label tables (``microvba/data/``).

:data:`FETCHABLE` lists them all; ``microvba data fetch`` fetches every one by default and
``microvba demo`` calls :func:`ensure_data` to fetch what it is missing on first use.

Every file is checked against its SHA-256 below and written atomically, so an interrupted
download never leaves a file the loader would accept. With ``base_url`` (a mirror, or a local
server in tests) the files are read from ``<base_url>/<database>/<file>``, the layout of a data
directory.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from .._logging import get_logger
from .._provenance import atomic_path, file_hash
from .._validation import InputError, check_choice
from .database import DATABASES, FILES, resolve_data_dir

log = get_logger(__name__)

PUBLISHER_URLS = {
    "neurosynth": "https://github.com/neurosynth/neurosynth-data/raw/"
                  "209c33cd009d0b069398a802198b41b9c488b9b7/",
    "neuroquery": "https://github.com/neuroquery/neuroquery_data/raw/"
                  "4580f86267fb7c14ac1f601e298cbed898d79f2d/data/",
}

SHA256 = {
    "data-neurosynth_version-7_coordinates.tsv.gz":
        "17135be3e08a0ab045896c77217e8463086543a0817d52a6a88c8e32c1161616",
    "data-neurosynth_version-7_metadata.tsv.gz":
        "8acde7de2a14ee2a12b406e50a8805e83288b0bc78924ddb36879d496dfb757b",
    "data-neurosynth_version-7_vocab-LDA50_keys.tsv":
        "7d2c872af784eb0bb96e7f2d63ba5c699cd002d3f58baa60353d9450c9431bac",
    "data-neurosynth_version-7_vocab-LDA50_metadata.json":
        "d803b63c1b9afa4e65503b07c087f16304147cb236c8d82e7d79e4e2339e308f",
    "data-neurosynth_version-7_vocab-LDA50_source-abstract_type-weight_features.npz":
        "dff7606079404b8496be4baca35c0d261e91d4ac6ff5c5595e1ef519e598a571",
    "data-neurosynth_version-7_vocab-LDA50_vocabulary.txt":
        "57a5fba4d3ee97cfcbf73a13d0631a1d9709a53c5a1fdf6d173f04ac8bb8f302",
    "data-neuroquery_version-1_coordinates.tsv.gz":
        "b97cf50346dc8a6f78b3c02c8a19680679d7dbdf35f760a1032e46c2cad3666c",
    "data-neuroquery_version-1_metadata.tsv.gz":
        "d84d2c7b2e2ca1692381419833fde043fb42d279014104c3c957feeeece140ea",
    "data-neuroquery_version-1_vocab-neuroquery7547_source-abstract_type-count_features.npz":
        "79c38b2515a316b711eef1ef1737ba57ce720d79d8506b7a08da6639418cf60a",
    "data-neuroquery_version-1_vocab-neuroquery7547_source-keywords_type-count_features.npz":
        "01c51de4b0f58194725c0c160e529c1c59cd812b83e51a693924be824f0e9c1b",
    "data-neuroquery_version-1_vocab-neuroquery7547_source-title_type-count_features.npz":
        "c8243762f0f4c705c7ec60246c25e36785f0ea555dc914f85ede08a623afec74",
    "data-neuroquery_version-1_vocab-neuroquery7547_vocabulary.txt":
        "ae4a13380451797735d3df142fb8b4b3792056fbf79471454aa40e12bec7717b",
}


#: every external data set microvba reads: the decoding databases and the Brainnetome atlas
FETCHABLE: tuple[str, ...] = (*DATABASES, "brainnetome")


def data_folder(database: str) -> str:
    """Folder of ``database`` below the data directory (and below a mirror's base URL)."""
    if database == "brainnetome":
        from ..regions.atlases import BRAINNETOME_DIR

        return BRAINNETOME_DIR.as_posix()
    return database


def _files(database: str) -> dict[str, str | None]:
    """File name -> SHA-256 of ``database``."""
    if database == "brainnetome":
        from ..regions.atlases import BRAINNETOME_IMAGE, BRAINNETOME_SHA256

        return {BRAINNETOME_IMAGE: BRAINNETOME_SHA256}
    return {name: SHA256.get(name) for name in FILES[database].values()}


def file_url(database: str, name: str, base_url: str | None = None) -> str:
    """Where ``name`` of ``database`` is downloaded from."""
    if base_url:
        return f"{base_url.rstrip('/')}/{data_folder(database)}/{name}"
    if database == "brainnetome":
        from ..regions.atlases import BRAINNETOME_URL

        return BRAINNETOME_URL
    return PUBLISHER_URLS[database] + name


def missing_files(databases: Sequence[str] = FETCHABLE,
                  data_dir: str | Path | None = None) -> list[Path]:
    """Files of ``databases`` absent from the data directory (no checksum computed)."""
    root = resolve_data_dir(data_dir)
    return [root / data_folder(db) / name for db in databases for name in _files(db)
            if not (root / data_folder(db) / name).is_file()]


def _download(url: str, path: Path, sha256: str | None, timeout: float) -> None:
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, \
                atomic_path(path) as tmp, open(tmp, "wb") as out:
            for block in iter(lambda: response.read(1 << 20), b""):
                h.update(block)
                out.write(block)
            if sha256 and h.hexdigest() != sha256:
                raise InputError(f"Checksum mismatch for {url} (got sha256 {h.hexdigest()}).",
                                 file=str(path),
                                 fix="Run 'microvba data fetch' again; if it persists the "
                                     "source (or --base-url mirror) serves other files.")
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise InputError(f"Download of {url} failed ({exc}).", file=str(path),
                         fix="Check the internet connection or --base-url, then run "
                             "'microvba data fetch' again.") from exc


def fetch_databases(databases: Sequence[str] = FETCHABLE, data_dir: str | Path | None = None,
                    base_url: str | None = None, force: bool = False,
                    timeout: float = 120.0) -> list[Path]:
    """Download the files of ``databases`` into ``<data_dir>/<folder>/``.

    ``databases`` are among :data:`FETCHABLE` (``neurosynth``, ``neuroquery``,
    ``brainnetome``, into ``atlases/brainnetome``). Files already present with the right
    checksum are kept unless ``force``. Returns the paths of all the databases' files.
    """
    root = resolve_data_dir(data_dir)
    for db in databases:  # every name checked before any download
        check_choice("database", db, FETCHABLE)
    out = []
    for db in databases:
        for name, sha in _files(db).items():
            path = root / data_folder(db) / name
            if path.is_file() and not force and (sha is None or
                                                 file_hash(path) == f"sha256:{sha}"):
                log.info("%s: present", path)
            else:
                url = file_url(db, name, base_url)
                log.info("downloading %s", url)
                _download(url, path, sha, timeout)
            out.append(path)
    return out


def ensure_data(databases: Sequence[str], data_dir: str | Path | None = None,
                base_url: str | None = None, timeout: float = 30.0) -> list[Path]:
    """Fetch the files of ``databases`` that are missing (first use); return those fetched.

    Nothing is downloaded when every file is present. When the download fails (no network,
    a firewall), the :class:`~microvba._validation.InputError` names the one command that
    fixes it, ``microvba data fetch --database ... --data-dir ...``.
    """
    missing = missing_files(databases, data_dir)
    if not missing:
        return []
    root = resolve_data_dir(data_dir)
    wanted = [db for db in databases
              if any(p.parent == root / data_folder(db) for p in missing)]
    log.info("fetching %d missing data file(s) (%s) into %s", len(missing),
             ", ".join(wanted), root)
    command = f"microvba data fetch --database {','.join(wanted)} --data-dir {root}"
    try:
        fetch_databases(wanted, root, base_url=base_url, timeout=timeout)
    except InputError as exc:
        detail = exc.problems[0].problem if exc.problems else str(exc)
        names = ", ".join(p.name for p in missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise InputError(
            f"{len(missing)} data file(s) needed are missing ({names}) and could not be "
            f"downloaded: {detail}",
            file=missing[0],
            fix=f"Run '{command}' on a machine with internet access (or copy the folder "
                f"{root} from one), then run this command again.") from exc
    return missing
