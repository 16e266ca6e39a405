"""Command line: the BIDS-App form plus convenience subcommands.

``microvba BIDS_DIR OUTPUT_DIR participant|group [options]`` follows the BIDS-Apps
convention; ``microvba <subcommand> ...`` (``fit``, ``randomise``, ``decode``, ``roi``,
``simulate``, ``demo``, ``data``) runs one stage on its own. Every subcommand lives in its own
module of this package exposing ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.

Invalid input (:class:`microvba._validation.InputError`) exits with code 2 and a message
naming each offending file; tracebacks are shown only with ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import warnings
from collections.abc import Sequence

from .. import __version__
from .._logging import configure
from .._validation import InputError
from ._config import apply_config

#: subcommand name -> module in this package
SUBCOMMANDS: dict[str, str] = {
    "fit": "fit",
    "randomise": "randomise",
    "decode": "decode",
    "roi": "roi",
    "simulate": "simulate",
    "demo": "demo",
    "data": "data",
    "report": "report",
}

EXIT_INPUT = 2


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, SLURM's ``scancel`` or time limit): unwinds like Ctrl-C so that
    temporary files are removed and workers stopped; exit code 128 + 15 = 143."""

    signum = signal.SIGTERM


def _on_sigterm(signum: int, frame: object) -> None:
    # once: a second SIGTERM while cleaning up must not interrupt the clean-up
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def _install_signal_handlers() -> None:
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # pragma: no cover - not the main thread (e.g. main() from a thread)
        pass


def _interrupted(exc: KeyboardInterrupt, log: logging.Logger) -> int:
    """Report an interruption in one line (no traceback), clean the temporary folders."""
    from ..workflows.executor import clean_stale_tempdirs

    term = isinstance(exc, Terminated)
    try:
        clean_stale_tempdirs()
    except Exception:  # noqa: BLE001 - best effort while exiting
        pass
    log.error("%s: stopped; finished outputs are kept and a re-run resumes from them",
              "terminated (SIGTERM)" if term else "interrupted (SIGINT)")
    return 128 + (signal.SIGTERM if term else signal.SIGINT)


def _common(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("run options")
    g.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv)")
    g.add_argument("-q", "--quiet", action="count", default=0,
                   help="only warnings and errors, no progress bars")
    g.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    g.add_argument("--config", metavar="TOML",
                   help="TOML file whose keys mirror the long options (e.g. n_perm = 5000); "
                        "command-line options override it")


def _load(name: str):
    return importlib.import_module(f"{__name__}.{SUBCOMMANDS[name]}")


def build_subcommand_parser(name: str) -> argparse.ArgumentParser:
    mod = _load(name)
    parser = argparse.ArgumentParser(prog=f"microvba {name}", description=mod.HELP,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    mod.add_arguments(parser)
    _common(parser)
    return parser


def build_bids_app_parser() -> argparse.ArgumentParser:
    from . import bids_app

    parser = argparse.ArgumentParser(
        prog="microvba",
        description=__doc__.split("\n\n")[0] + "\n\nSubcommands: " + ", ".join(SUBCOMMANDS)
        + " (run 'microvba <subcommand> --help').",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"microvba {__version__}")
    bids_app.add_arguments(parser)
    _common(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``microvba`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        name, argv = argv[0], argv[1:]
        parser = build_subcommand_parser(name)
        run = _load(name).run
    else:
        from . import bids_app

        parser = build_bids_app_parser()
        run = bids_app.run
    try:
        apply_config(parser, argv)
    except InputError as exc:
        print(f"microvba: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    args = parser.parse_args(argv)
    configure(args.verbose - args.quiet)
    # a local Dask cluster moves its dashboard to a free port by itself: not worth a warning
    warnings.filterwarnings("ignore", message=r"Port \d+ is already in use",
                            category=UserWarning)
    log = logging.getLogger("microvba")
    _install_signal_handlers()
    try:
        return int(run(args) or 0)
    except InputError as exc:
        if args.debug:
            raise
        print(f"microvba: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt as exc:
        return _interrupted(exc, log)
    except OSError as exc:
        if args.debug:
            raise
        return _os_error(exc, log)
    except Exception as exc:  # noqa: BLE001 - top level: report, exit non-zero
        if args.debug:
            raise
        log.error("%s: %s (run with --debug for the traceback)", type(exc).__name__, exc)
        return 1


def _os_error(exc: OSError, log: logging.Logger) -> int:
    """An operating-system error (disk full, quota, permission) with the path and a fix."""
    import errno

    where = f" ({exc.filename})" if exc.filename else ""
    fixes = {errno.ENOSPC: "free disk space (or choose an OUTPUT_DIR on a disk with room) and "
                           "re-run: finished outputs are kept and the run resumes",
             errno.EDQUOT: "free space within your disk quota (or choose another OUTPUT_DIR) "
                           "and re-run: the run resumes",
             errno.EACCES: "choose a folder you can write to, or fix the permissions",
             errno.EROFS: "choose an OUTPUT_DIR on a writable file system"}
    fix = fixes.get(exc.errno, "check the path and the file system, then re-run")
    log.error("%s%s: %s (run with --debug for the traceback)",
              exc.strerror or type(exc).__name__, where, fix)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
