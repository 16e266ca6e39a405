"""``microvba report OUT``: (re)build the HTML report of a derivatives folder."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Rebuild OUTPUT_DIR/group/report.html from the outputs of the group stage."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output_dir", type=Path, help="the derivatives folder of a group run")
    parser.add_argument("--title", default="microvba report")


def run(args: argparse.Namespace) -> int:
    from .._validation import InputError
    from ..io import derivatives
    from ..report import build_report

    group = derivatives.group_dir(args.output_dir)
    if Path(args.output_dir).is_dir() and not (group / derivatives.ANALYSIS_JSON).is_file():
        raise InputError("no group results to report (group/analysis.json is missing)",
                         file=args.output_dir,
                         fix="Run the group stage first: microvba BIDS_DIR OUTPUT_DIR group "
                             "--score ...; then (re)build the report with microvba report.")
    print(build_report(args.output_dir, title=args.title))
    return 0
