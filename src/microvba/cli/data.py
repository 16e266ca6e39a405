"""``microvba data fetch``: download the public decoding databases into the data directory."""

from __future__ import annotations

import argparse

HELP = ("Download the public databases used for decoding (Neurosynth v0.7 from "
        "github.com/neurosynth/neurosynth-data, NeuroQuery v1 from "
        "github.com/neuroquery/neuroquery_data) into the data directory, with checksums.")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["fetch"], help="fetch: download missing files")
    parser.add_argument("--data-dir", default=None,
                        help="where to put <database>/ (unset: $MICROVBA_DATA, else "
                             "~/.cache/microvba)")
    parser.add_argument("--database", type=_csv, default=["neurosynth", "neuroquery"],
                        help="comma-separated databases: neurosynth, neuroquery")
    parser.add_argument("--base-url", default=None,
                        help="mirror serving <database>/<file> (unset: the publishers' "
                             "GitHub repositories at pinned commits)")
    parser.add_argument("--force", action="store_true",
                        help="download again even when a file with the right checksum exists")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for the server")


def run(args: argparse.Namespace) -> int:
    from .._validation import check_output_dir
    from ..decode.database import resolve_data_dir
    from ..decode.fetch import fetch_databases

    folder = resolve_data_dir(args.data_dir)
    for name in args.database:  # before any download: a bad folder fails at once
        check_output_dir(folder / name, "data folder")
    paths = fetch_databases(args.database, data_dir=args.data_dir, base_url=args.base_url,
                            force=args.force, timeout=args.timeout)
    print(f"{len(paths)} files ready under {resolve_data_dir(args.data_dir)}")
    return 0
