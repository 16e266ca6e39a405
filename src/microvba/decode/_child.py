"""A function run in a forked child process, its result or exception sent back by a pipe.

The cold map build (:func:`microvba.decode.maps.feature_maps`) computes and writes the z
maps in a child: numba's import and the loading of its compiled kernels create ~80,000
Python objects that the garbage collector then traverses again and again (two full
collections during an LDA-50 build, and the interpreter's final collection at exit: 0.1 to
0.3 s of CPU in a fresh process, as much as the counting itself). The child runs with the
collector disabled, leaves OpenMP's idle workers asleep instead of spinning
(``OMP_WAIT_POLICY=PASSIVE``, set in the child only) and ends with :func:`os._exit`, so
none of that is paid; the caller's process never imports numba, and meanwhile writes the
cache entry's other files. Nothing of the caller's state changes.

A child is forked only where that is safe: ``os.fork`` exists (POSIX, not macOS, whose
system libraries are not fork-safe), no other thread runs (a lock held by another thread
would stay locked in the child) and numba is not imported yet (OpenMP's thread pool, once
started, does not survive a fork). Elsewhere, and when ``fork`` fails, the function runs in
the calling process, with the same result.
"""

from __future__ import annotations

import os
import pickle
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

#: environment of the child (set there only, before numba loads OpenMP)
CHILD_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def can_fork() -> bool:
    """True where :class:`ChildCall` runs its function in a forked child (module doc)."""
    return (hasattr(os, "fork") and sys.platform != "darwin"
            and threading.active_count() == 1 and "numba" not in sys.modules)


class ChildTraceback(Exception):
    """The child's traceback, chained to an exception re-raised in the parent."""


class ChildCall:
    """``fn(*args)``, started now in a forked child when :func:`can_fork` (else run here);
    :meth:`result` waits for it and returns its value or raises its exception."""

    def __init__(self, fn: Callable[..., Any], *args: Any, fork: bool | None = None) -> None:
        self._pid = 0
        self._read = -1
        self._done: tuple[bool, Any] | None = None
        if fork is None:
            fork = can_fork()
        if fork:
            try:
                self._start(fn, args)
                return
            except OSError:  # no memory for a child, process limit: run here
                pass
        self._run_here(fn, args)

    @property
    def forked(self) -> bool:
        return self._pid != 0

    def _run_here(self, fn: Callable[..., Any], args: tuple) -> None:
        try:
            self._done = (True, fn(*args))
        except Exception as exc:  # noqa: BLE001 - raised by result(), as from a child
            self._done = (False, exc)

    def _start(self, fn: Callable[..., Any], args: tuple) -> None:
        read, write = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(read)
            os.close(write)
            raise
        if pid == 0:  # the child: never returns into the caller's code
            code = 1
            try:
                os.close(read)
                import gc

                gc.disable()
                os.environ.update(CHILD_ENV)
                try:
                    payload = (True, fn(*args))
                except BaseException as exc:  # noqa: BLE001 - sent to the parent
                    payload = (False, (exc, "".join(traceback.format_exception(exc))))
                try:
                    data = pickle.dumps(payload)
                except Exception:  # noqa: BLE001 - an exception that does not pickle
                    exc, text = payload[1] if not payload[0] else (None, "")
                    data = pickle.dumps((False, (RuntimeError(repr(exc)), text)))
                with os.fdopen(write, "wb") as fh:
                    fh.write(data)
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        self._pid, self._read = pid, read

    def result(self) -> Any:
        """The function's value; its exception is raised here (a child's chained to its
        traceback)."""
        if self._done is None:
            try:
                with os.fdopen(self._read, "rb") as fh:
                    data = fh.read()
            except BaseException:
                os.kill(self._pid, 9)  # interrupted: do not leave the child running
                os.waitpid(self._pid, 0)
                raise
            _, status = os.waitpid(self._pid, 0)
            code = os.waitstatus_to_exitcode(status)
            if not data or code != 0:
                raise RuntimeError(f"the map build process (pid {self._pid}) ended with "
                                   f"status {code} without a result")
            ok, value = pickle.loads(data)
            if not ok:
                value, text = value
                value.__cause__ = ChildTraceback(f"in the child process:\n{text}")
            self._done = (ok, value)
        ok, value = self._done
        if not ok:
            raise value
        return value
