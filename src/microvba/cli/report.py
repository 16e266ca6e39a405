"""``microvba report OUT``: (re)build the HTML report of a derivatives folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..io import derivatives
from ._types import path_arg

HELP = (f"Rebuild OUTPUT_DIR/{derivatives.GROUP_DIR}/{derivatives.REPORT_HTML} from the "
        "outputs of the group stage.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output_dir", type=path_arg, help="the derivatives folder of a group run")
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
    if group.is_dir():
        check_group_files(group)
    print(build_report(args.output_dir, title=args.title))
    return 0


#: the first bytes of every PNG file
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_group_files(group: Path) -> None:
    """Before the report is built: every image and figure of ``group`` (and the subjects'
    QC figures beside it) is intact.

    A ``.nii.gz`` cut short ended the report with "EOFError: Compressed file ended before
    the end-of-stream marker" and a damaged figure with "UnidentifiedImageError" (exit 1,
    no file named). NIfTI maps get the streamed integrity pass of the inputs
    (:func:`~microvba.io.nifti_checks.check_image_file`: header, gzip CRC, length); PNG
    figures their signature and chunk CRCs (Pillow's ``verify``). Missing pieces are not
    refused: the report lists them.

    Raises
    ------
    InputError
        Listing every damaged file, with the fix.
    """
    from PIL import Image, UnidentifiedImageError

    from .._validation import InputError, ProblemCollector
    from ..io.nifti_checks import check_image_file

    problems = ProblemCollector()
    fix = ("Re-run the group stage (microvba BIDS_DIR OUTPUT_DIR group ...), or restore the "
           "file from a copy; then rebuild the report.")
    for path in sorted([*group.rglob("*.nii.gz"), *group.rglob("*.nii")]):
        try:
            check_image_file(path, signal=False)
        except InputError as exc:
            problems.problems.extend(type(q)(q.file, q.problem, fix) for q in exc.problems)
    qc_figures = group.parent.glob("sub-*/figures/*.png")  # the per-subject QC figures
    for path in sorted([*group.rglob("*.png"), *qc_figures]):
        try:
            with open(path, "rb") as fh:
                ok = fh.read(8) == PNG_SIGNATURE
            if ok:
                with Image.open(path) as im:
                    im.verify()
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
            problems.add(path, f"damaged PNG figure ({type(exc).__name__}: {exc})", fix)
            continue
        if not ok:
            problems.add(path, "not a PNG image (wrong signature)", fix)
    problems.raise_if_any()
