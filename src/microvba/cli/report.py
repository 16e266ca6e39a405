"""``microvba report OUT``: (re)build the HTML report of a derivatives folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..io import derivatives

HELP = (f"Rebuild OUTPUT_DIR/{derivatives.GROUP_DIR}/{derivatives.REPORT_HTML} from the "
        "outputs of the group stage.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output_dir", type=Path, help="the derivatives folder of a group run")
    parser.add_argument("--title", default="microvba report")


def run(args: argparse.Namespace) -> int:
    from .._validation import InputError
    from ..report import build_report

    group = derivatives.group_dir(args.output_dir)
    if Path(args.output_dir).is_dir() and not (group / derivatives.ANALYSIS_JSON).is_file():
        raise InputError("no group results to report "
                         f"(group/{derivatives.ANALYSIS_JSON} is missing)",
                         file=args.output_dir,
                         fix="Run the group stage first: microvba BIDS_DIR OUTPUT_DIR group "
                             "--score ...; then (re)build the report with microvba report.")
    print(build_report(args.output_dir, title=args.title))
    return 0
