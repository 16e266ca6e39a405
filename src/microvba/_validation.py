"""Input validation in one style: every problem names the file, what is wrong, and the fix.

The CLI maps :class:`InputError` to exit code 2 and prints every problem found, so a user
repairs a dataset in one pass instead of one error per run.
"""

from __future__ import annotations

import math
import numbers
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input."""

    file: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.file}: {self.problem}\n    fix: {self.fix}"


class InputError(ValueError):
    """Invalid input (a file, a dataset or a parameter), with every problem found.

    Parameters
    ----------
    problems
        Either a list of :class:`Problem` or a single message (then ``file`` and ``fix``
        describe it).
    """

    def __init__(
        self,
        problems: Iterable[Problem] | str,
        file: str | Path | None = None,
        fix: str = "",
    ) -> None:
        if isinstance(problems, str):
            problems = [Problem(str(file) if file is not None else "<input>", problems, fix)]
        self.problems: list[Problem] = list(problems)
        super().__init__(self.format())

    def format(self) -> str:
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} found in the input:"
        return "\n".join([head] + [f"  - {p}" for p in self.problems])


class ProblemCollector:
    """Accumulate problems and raise them together at the end of a validation pass."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, file: str | Path, problem: str, fix: str) -> None:
        self.problems.append(Problem(str(file), problem, fix))

    def extend(self, error: InputError) -> None:
        self.problems.extend(error.problems)

    def raise_if_any(self) -> None:
        if self.problems:
            raise InputError(self.problems)

    def __bool__(self) -> bool:
        return bool(self.problems)


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` as an int if it is a positive integer, else raise InputError.

    Python and numpy integers are accepted, and floats with an integral value (``5000.0``);
    booleans, NaN, infinities and fractions are not.
    """
    if isinstance(value, bool):
        ok = False
    elif isinstance(value, numbers.Integral):
        ok = value > 0
    elif isinstance(value, numbers.Real):
        ok = math.isfinite(value) and value > 0 and float(value).is_integer()
    else:
        ok = False
    if not ok:
        raise InputError(
            f"The '{name}' parameter must be a positive int. Got {value!r} instead.",
            file=f"parameter {name}",
            fix=f"Pass a positive integer for {name}.",
        )
    return int(value)


def check_in_range(name: str, value: float, low: float, high: float) -> float:
    """Return ``value`` as a float if ``low <= value <= high``, else raise InputError."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not (low <= v <= high):
        raise InputError(
            f"The '{name}' parameter must be in [{low}, {high}]. Got {value!r} instead.",
            file=f"parameter {name}",
            fix=f"Pass a value between {low} and {high} for {name}.",
        )
    return v


def check_choice(name: str, value: str, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise InputError."""
    choices = list(choices)
    if value not in choices:
        raise InputError(
            f"The '{name}' parameter must be one of {choices}. Got {value!r} instead.",
            file=f"parameter {name}",
            fix=f"Pass one of {', '.join(map(str, choices))} for {name}.",
        )
    return value


def check_output_dir(path: str | Path, what: str = "output folder") -> Path:
    """Check, before any work starts, that ``path`` can be used (or created) as a folder.

    Raises InputError when ``path`` (or one of its parents) is an existing file, or when the
    nearest existing folder is not writable; nothing is created here.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"the {what} is an existing file, not a folder", file=path,
                         fix="Pass a folder path (new or existing), or move the file away.")
    parent = path
    while not parent.exists():
        if parent.parent == parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise InputError(f"cannot create the {what}: {parent} is a file, not a folder",
                         file=path, fix="Pass a path whose parent folders are folders.")
    if parent.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"the {what} cannot be written: no write permission in {parent}",
                         file=path, fix="Pass a folder you can write to, or fix the "
                                        "permissions.")
    try:  # what access() cannot tell: a read-only mount, /proc, root without the right
        os.rmdir(tempfile.mkdtemp(prefix=".microvba-probe-", dir=parent))
    except OSError as exc:
        raise InputError(f"the {what} cannot be created in {parent} ({exc.strerror})",
                         file=path, fix="Pass a folder on a writable file system.") from exc
    return path


# --- options: checked once, when the settings objects are built -------------------------------

def _as_real(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def check_option_number(option: str, value: object, low: float | None = None,
                        high: float | None = None, *, low_open: bool = False,
                        high_open: bool = False, integer: bool = False, unit: str = "",
                        hint: str = "") -> float | int:
    """Check one numeric option by its public name (``--fwhm``), in a (half-)open range.

    Parameters
    ----------
    option
        The command-line name shown to the user, e.g. ``"--fwhm"`` (the settings field name,
        such as ``fwhm_mm``, is never shown).
    value
        The value (NaN and infinities are always refused).
    low, high
        Bounds (None: unbounded); ``low_open``/``high_open`` exclude them.
    integer
        Require an integral value (returned as ``int``).
    unit, hint
        Appended to the allowed range (``"mm"``) and to the fix (what the value means).

    Raises
    ------
    InputError
        Naming ``option``, the value and the allowed range.
    """
    v = _as_real(value)
    ok = v is not None and math.isfinite(v)
    if ok and integer:
        ok = float(v).is_integer()
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v < high if high_open else v <= high
    if not ok:
        lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
        kind = "an integer" if integer else "a number"
        allowed = f"{kind} in {lo}, {hi}" + (f" {unit}" if unit else "")
        raise InputError(f"{option} must be {allowed}; got {value!r}", file=option,
                         fix=f"Pass {kind} in {allowed.split(' in ', 1)[1]} to {option}"
                             + (f" ({hint})" if hint else "") + ".")
    return int(v) if integer else float(v)


def check_option_choice(option: str, value: object, choices: Iterable[str]) -> None:
    """Check that ``value`` (one name, or a sequence of names) is among ``choices``."""
    choices = list(choices)
    values = [value] if isinstance(value, str) else list(value)  # type: ignore[arg-type]
    bad = [v for v in values if v not in choices]
    if bad or not values:
        raise InputError(f"{option}: unknown value(s) {bad or values}; allowed: "
                         f"{', '.join(choices)}", file=option,
                         fix=f"Pass {option} with values among {', '.join(choices)}.")


def check_output_placement(bids_dir: str | Path, out_dir: str | Path) -> None:
    """Refuse an output folder that would write into the raw BIDS data.

    Refused: ``OUTPUT_DIR`` equal to ``BIDS_DIR``, inside a raw subject folder
    (``BIDS_DIR/sub-01/dwi/out``), a folder named ``sub-*`` at the dataset root
    (``BIDS_DIR/sub-99`` would be read as a subject by the next run), or any other folder
    inside the dataset but outside ``derivatives/`` (``BIDS_DIR/out``: the BIDS-Apps
    convention keeps the input dataset unmodified, and the BIDS validator reports an unknown
    top-level folder). Allowed: anywhere outside the dataset, and ``BIDS_DIR/derivatives/...``
    (BIDS's place for derivatives).
    """
    bids = Path(os.path.realpath(bids_dir))
    out = Path(os.path.realpath(out_dir))
    fix = (f"Write derivatives outside the dataset or under "
           f"{Path(bids_dir) / 'derivatives' / 'microvba'}.")
    if out == bids:
        raise InputError("the output folder is the BIDS dataset itself", file=out_dir,
                         fix="Write derivatives elsewhere, e.g. BIDS_DIR/derivatives/microvba.")
    try:
        rel = out.relative_to(bids)
    except ValueError:
        return
    top = rel.parts[0]
    if top == "derivatives":
        return
    if top.startswith("sub-"):
        where = ("is inside the raw subject folder " + str(Path(bids_dir) / top)
                 if len(rel.parts) > 1 else
                 "is named like a subject folder (sub-*) at the BIDS root, so it would be "
                 "read as a subject")
        raise InputError(f"the output folder {where}; outputs would be mixed with the raw "
                         "data", file=out_dir, fix=fix)
    raise InputError(f"the output folder is inside the BIDS dataset {bids_dir} but not under "
                     "its derivatives/ folder: BIDS Apps leave the input dataset unmodified, "
                     f"and the BIDS validator would report {top!r} as an unknown folder",
                     file=out_dir, fix=fix)
