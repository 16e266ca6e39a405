"""``microvba data fetch``: download the public decoding databases into the data directory;
``microvba data check``: verify every file of the decoding cache against the checksums
recorded when it was written (broken entries are removed and rebuilt on their next use)."""

from __future__ import annotations

import argparse

HELP = ("Download every external data file microvba needs into the data directory, with "
        "checksums: the decoding databases (Neurosynth v0.7 from "
        "github.com/neurosynth/neurosynth-data, NeuroQuery v1 from "
        "github.com/neuroquery/neuroquery_data) and the Brainnetome BN-246 atlas image "
        "(atlas.brainnetome.org; its corrected label table ships with the package).")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["fetch", "check"],
                        help="fetch: download missing files; check: verify the decoding "
                             "cache (--cache-dir) in full, removing broken entries")
    parser.add_argument("--data-dir", default=None,
                        help="where to put <database>/ (unset: $MICROVBA_DATA, else "
                             "~/.cache/microvba)")
    parser.add_argument("--database", type=_csv,
                        default=["neurosynth", "neuroquery", "brainnetome"],
                        help="comma-separated, among neurosynth, neuroquery, brainnetome "
                             "(default: all)")
    parser.add_argument("--base-url", default=None,
                        help="mirror serving <database>/<file> (and "
                             "atlases/brainnetome/<file>; unset: the publishers' sources, "
                             "pinned)")
    parser.add_argument("--force", action="store_true",
                        help="download again even when a file with the right checksum exists")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for the server")
    parser.add_argument("--cache-dir", default=None,
                        help="check: the decoding cache (unset: $MICROVBA_CACHE, else "
                             "~/.cache/microvba/maps)")


def run(args: argparse.Namespace) -> int:
    from .._validation import check_choice, check_output_dir
    from ..decode.database import resolve_data_dir
    from ..decode.fetch import FETCHABLE, data_folder, fetch_databases

    if args.action == "check":
        return _check(args)
    folder = resolve_data_dir(args.data_dir)
    for name in args.database:  # before any download: a bad name or folder fails at once
        check_choice("database", name, FETCHABLE)
        check_output_dir(folder / data_folder(name), "data folder")
    paths = fetch_databases(args.database, data_dir=args.data_dir, base_url=args.base_url,
                            force=args.force, timeout=args.timeout)
    print(f"{len(paths)} files ready under {resolve_data_dir(args.data_dir)}")
    return 0


def _check(args: argparse.Namespace) -> int:
    """Every file of the decoding cache of ``--database`` summed and compared (1 when
    something was broken: it is removed and rebuilt on its next use)."""
    from .. import _paths
    from .._validation import check_choice
    from ..decode.cache_check import repair_cache
    from ..decode.fetch import FETCHABLE

    for name in args.database:
        check_choice("database", name, FETCHABLE)
    root = _paths.cache_dir(args.cache_dir)
    broken = [p for name in args.database if name != "brainnetome"
              for p in repair_cache(root, name, verify="all")]
    print(f"decoding cache {root}: " + (f"{len(broken)} broken file(s) removed, rebuilt on "
                                        "their next use" if broken else "every file intact"))
    return 1 if broken else 0
