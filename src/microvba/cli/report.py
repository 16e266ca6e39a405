"""``microvba report OUT``: (re)build the HTML report of a derivatives folder."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Rebuild OUTPUT_DIR/group/report.html from the outputs of the group stage."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output_dir", type=Path, help="the derivatives folder of a group run")
    parser.add_argument("--title", default="microvba report")


def run(args: argparse.Namespace) -> int:
    from ..report import build_report

    print(build_report(args.output_dir, title=args.title))
    return 0
