"""``microvba data fetch``: download the public decoding databases into the data directory."""

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
    parser.add_argument("action", choices=["fetch"], help="fetch: download missing files")
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


def run(args: argparse.Namespace) -> int:
    from .._validation import check_choice, check_output_dir
    from ..decode.database import resolve_data_dir
    from ..decode.fetch import FETCHABLE, data_folder, fetch_databases

    folder = resolve_data_dir(args.data_dir)
    for name in args.database:  # before any download: a bad name or folder fails at once
        check_choice("database", name, FETCHABLE)
        check_output_dir(folder / data_folder(name), "data folder")
    paths = fetch_databases(args.database, data_dir=args.data_dir, base_url=args.base_url,
                            force=args.force, timeout=args.timeout)
    print(f"{len(paths)} files ready under {resolve_data_dir(args.data_dir)}")
    return 0
