"""TOML configuration files whose keys mirror the long command-line options.

``--config run.toml`` sets parser defaults (so explicit options still win); every run writes
its effective configuration (:func:`write_effective_config`) next to its outputs, so the
same run can be repeated with ``--config``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._provenance import write_text
from .._resources import read_table_text
from .._validation import InputError, Problem, ProblemCollector
from ._types import path_arg

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: options that describe how a run is shown, not what it computes
_NOT_CONFIG = {"verbose", "quiet", "debug", "config", "help", "version"}


def _dests(parser: argparse.ArgumentParser) -> set[str]:
    return {a.dest for a in parser._actions if a.dest not in _NOT_CONFIG}


def apply_config(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Read ``--config FILE`` from ``argv`` (if any) and set its keys as parser defaults."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(list(argv))
    if not known.config:
        return
    path = Path(known.config)
    if not path.exists():
        raise InputError("cannot read the config file (No such file or directory)", file=path,
                         fix="Pass an existing TOML file to --config.")
    try:
        text = read_table_text(path, "--config file")
    except InputError as exc:
        raise InputError([Problem(p.file, p.problem, "Pass a TOML text file (UTF-8, key = "
                                  "value per line) to --config.") for p in exc.problems]
                         ) from None
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"not valid TOML ({exc})", file=path,
                         fix="Fix the TOML syntax (key = value per line).") from exc
    config = {k.replace("-", "_"): v for k, v in config.items()}
    unknown = sorted(set(config) - _dests(parser))
    if unknown:
        raise InputError(f"unknown keys {unknown}", file=path,
                         fix=f"Use keys among: {', '.join(sorted(_dests(parser)))}.")
    actions = {a.dest: a for a in parser._actions}
    problems = ProblemCollector()
    values = {}
    for key, value in config.items():
        try:
            values[key] = _config_value(actions[key], key, value, path)
        except InputError as exc:
            problems.extend(exc)
    problems.raise_if_any()
    parser.set_defaults(**values)
    for key in values:  # a required option (fit's --bval, -o) may come from the file too
        if actions[key].option_strings:
            actions[key].required = False


def config_keys(path: Path) -> dict[str, Any]:
    """The keys (with ``_``) and raw values of a ``--config`` file that
    :func:`apply_config` already read (empty when it cannot be read again)."""
    try:
        config = tomllib.loads(read_table_text(path, "--config file"))
    except (InputError, tomllib.TOMLDecodeError, OSError):
        return {}
    return {k.replace("-", "_"): v for k, v in config.items()}


def _config_value(action: argparse.Action, key: str, value: Any, path: Path) -> Any:
    """Check and convert one TOML value as the command line would convert the option."""

    def bad(why: str, fix: str) -> InputError:
        return InputError(f"key '{key}' {why}; got {value!r}", file=path, fix=fix)

    if action.nargs == 0:  # a flag such as --force
        if not isinstance(value, bool):
            raise bad("must be true or false", f"Write {key} = true or {key} = false.")
        return value
    many = action.nargs in ("+", "*") or (isinstance(action.nargs, int) and action.nargs > 1)
    if many:
        items = value if isinstance(value, list) else [value]
        out = [_config_item(action, key, v, path) for v in items]
    elif isinstance(value, list) and action.type not in (None, str, int, float, Path, path_arg):
        out = value  # an option parsed into a list (e.g. --models a,b) given as a TOML list
        if not all(isinstance(v, str) for v in out):
            raise bad("must be a list of strings", f'Write {key} = ["a", "b"].')
        out = _config_item(action, key, ",".join(out), path)  # e.g. aliases resolved
    else:
        out = _config_item(action, key, value, path)
    if action.choices is not None:
        for v in out if isinstance(out, list) else [out]:
            if v not in action.choices:
                raise bad(f"must be one of {list(action.choices)}",
                          f"Use one of {', '.join(map(str, action.choices))} for {key}.")
    return out


def _config_item(action: argparse.Action, key: str, value: Any, path: Path) -> Any:
    kind = action.type
    fix = {int: f"Write an integer, e.g. {key} = 10.",
           float: f"Write a number, e.g. {key} = 0.5."}.get(kind, f'Write {key} = "text".')
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InputError(f"key '{key}' has a value of the wrong type; got {value!r}",
                         file=path, fix=fix)
    if isinstance(value, str):
        if kind is None:
            return value
        if kind in (Path, path_arg):  # no shell expands "~" in a TOML file (a folder "~")
            kind = lambda v: path_arg(v).expanduser()  # noqa: E731
        try:
            return kind(value)
        except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
            raise InputError(f"key '{key}': invalid value {value!r} ({exc})", file=path,
                             fix=fix) from exc
    if kind is int and isinstance(value, int):
        return value
    if kind is float:
        return float(value)
    if kind not in (None, str, int) and not isinstance(kind, type):
        try:  # a converter function (e.g. a diffusivity with its unit check)
            return kind(repr(value))
        except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
            raise InputError(f"key '{key}': invalid value {value!r} ({exc})", file=path,
                             fix=f"Write a valid value for {key}.") from exc
    raise InputError(f"key '{key}' has a value of the wrong type; got {value!r}", file=path,
                     fix=fix)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return toml_string(str(v))


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string: backslash, quote and every control character
    escaped (a newline in a path is written ``\\n``, so the file stays valid TOML)."""
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


_TOML_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\b": "\\b", "\f": "\\f"}


def effective_config(args: argparse.Namespace) -> dict[str, Any]:
    """The options of a parsed run, without the display-only ones and unset values."""
    return {k: v for k, v in sorted(vars(args).items())
            if k not in _NOT_CONFIG and v is not None and not callable(v)}


def write_effective_config(args: argparse.Namespace, path: str | Path) -> Path:
    """Write the run's effective options as TOML (re-usable with ``--config``)."""
    lines = ["# microvba effective configuration; repeat this run with --config <this file>"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in effective_config(args).items()]
    return write_text(path, "\n".join(lines) + "\n")
