"""Argument types shared by the subcommands: each converts one option and explains a value
written the way another tool would write it (exit code 2, as every argparse error)."""

from __future__ import annotations

import argparse
from pathlib import Path

#: other tools' names for the models (DIPY/FSL say "dti")
MODEL_ALIASES = {"dti": "tensor"}


def parse_models(text: str) -> list[str]:
    """``"DTI, noddi"`` -> ``["tensor", "noddi"]`` (lower case, aliases resolved)."""
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    return list(dict.fromkeys(MODEL_ALIASES.get(n, n) for n in names))


def diffusivity(text: str) -> float:
    """A diffusivity in mm^2/s; values written in um^2/ms (1.7, 3.0) are refused with the
    conversion, since they would otherwise fail later with a bare range error."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if 0.05 <= value <= 50:
        raise argparse.ArgumentTypeError(
            f"{text} looks like um^2/ms; microvba takes mm^2/s (pass {value:g}e-3)")
    return value


def seed(text: str) -> int:
    """A random seed: an integer >= 0 (NumPy refuses negative seeds)."""
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from exc
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative; pass an integer >= 0")
    return value


def path_arg(text: str) -> Path:
    """A file or folder path; an empty one (``-o "$OUT"`` with ``OUT`` unset) is refused,
    since it would mean the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "an empty path (an unset shell variable?); pass a file or folder name")
    return Path(text)
