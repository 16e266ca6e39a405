"""The one writer of decoding outputs: tables, figures and sidecar summaries.

Used by ``microvba decode`` (:mod:`microvba.cli.decode`), the group stage
(:func:`microvba.decode.stage.decode_clusters`, :func:`microvba.decode.stage.decode_regions`),
so that a table and its figures have the same names and contents whichever route wrote them:

``<stem>_decoding.tsv``
    ROI association table (:meth:`~microvba.decode.decoder.Decoder.decode_roi`), with
    ``<stem>_bar.png`` and ``<stem>_polar.png``;
``<stem>_mapdecoding.tsv``
    map correlation table (:meth:`~microvba.decode.decoder.Decoder.decode_map`), with
    ``<stem>_map_bar.png`` and ``<stem>_map_polar.png`` when figures are asked for;
``<stem>_dropped-features.tsv``
    the features without a map (feature, n_selected, reason, label).

Every file is written atomically (a temporary name, renamed when complete).

Figures in a child process
--------------------------
matplotlib's import (~0.3 s) and the drawing of a table's two figures (~0.1 s each) are
most of a warm ``microvba decode``'s time that does not depend on the tables' numbers.
:class:`FigureProcess` forks a child when the command starts: the child imports
matplotlib while the parent decodes, then receives the finished tables through a pipe and
draws the figures, two processes at once (the child forks once more, so a table's bar and
polar plots are drawn side by side). The parent waits for it before writing the sidecar;
an error in either process is sent back and raised in the parent (nonzero exit), and a
parent that stops before handing over its tables (invalid input, an interruption) leaves
no figure behind. Where ``os.fork`` is missing, or other threads run (forking them is
unsafe), the figures are drawn in the calling process, as :func:`write_figures` does.
"""

from __future__ import annotations

import gc
import os
import pickle
import struct
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from .._provenance import atomic_path, save_figure
from ..io import derivatives as D

#: the kinds of decoding table (ROI association, unthresholded-map correlation)
KINDS = (D.DECODING, D.MAP_DECODING)
#: resolution of the saved figures
FIGURE_DPI = 150
#: columns of the dropped-features sidecar, in order
DROPPED_COLUMNS = list(D.DROPPED_FEATURE_COLUMNS)


def write_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Atomically write a decoding table as TSV (6 significant digits)."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    return Path(path)


#: one figure to draw: (name, path, table, top)
FigureTask = tuple[str, Path, pd.DataFrame, int]


def figure_tasks(table: pd.DataFrame, stem: str | Path, kind: str = D.DECODING,
                 top: int = 15) -> list[FigureTask]:
    """The bar (top ``top`` features) and polar plots of a table, with their paths
    (:func:`microvba.io.derivatives.decoding_figure_name`)."""
    stem = Path(stem)
    return [(f, stem.with_name(D.decoding_figure_name(stem.name, f, kind)), table, top)
            for f in D.FIGURE_KINDS]


def draw_figure(task: FigureTask, dpi: int = FIGURE_DPI) -> Path:
    """Draw and atomically save one figure of :func:`figure_tasks`."""
    from .figures import bar_chart, polar_plot

    name, path, table, top = task
    fig = bar_chart(table, top=top) if name == "bar" else polar_plot(table)
    return save_figure(fig, path, dpi=dpi)


def write_figures(table: pd.DataFrame, stem: str | Path, kind: str = D.DECODING,
                  top: int = 15, dpi: int = FIGURE_DPI) -> dict[str, Path]:
    """The bar (top ``top`` features) and polar plots of a table
    (:func:`microvba.io.derivatives.decoding_figure_name`)."""
    return {task[0]: draw_figure(task, dpi) for task in figure_tasks(table, stem, kind, top)}


def _send(fd: int, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    with os.fdopen(fd, "wb") as fh:
        fh.write(struct.pack("<Q", len(data)) + data)


def _receive(fd: int) -> Any:
    """The object :func:`_send` wrote, or ``None`` when the writer closed without one."""
    with os.fdopen(fd, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return None
        return pickle.loads(fh.read(struct.unpack("<Q", head)[0]))


def _draw_all(tasks: list[FigureTask], dpi: int) -> list[str]:
    """Draw ``tasks``; the errors, as text (empty when all were drawn)."""
    errors = []
    for task in tasks:
        try:
            draw_figure(task, dpi)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            errors.append(f"{task[1].name}: {type(exc).__name__}: {exc}\n"
                          + "".join(traceback.format_exception(exc)[-3:]))
    return errors


def _fork(work: Callable[[], list[str]]) -> tuple[int, int]:
    """Fork a child that runs ``work`` and sends its errors back: ``(pid, read fd)``."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into the caller's code
        code = 1
        try:
            os.close(read)
            try:
                errors = work()
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                errors = [f"{type(exc).__name__}: {exc}"]
            _send(write, errors)
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    return pid, read


def _reap(pid: int, read: int) -> list[str]:
    """Errors sent by the child ``pid``, after it exited (its exit status checked)."""
    errors = _receive(read)
    _, status = os.waitpid(pid, 0)
    if errors is None or os.waitstatus_to_exitcode(status) != 0:
        return (errors or []) + [f"the figure process exited with status "
                                 f"{os.waitstatus_to_exitcode(status)}"]
    return errors


class FigureProcess:
    """Draw decoding figures in a forked child process (module docstring).

    Use::

        figures = FigureProcess()           # fork: the child imports matplotlib
        try:
            ...                             # decode, write the tables
            figures.submit(tasks)           # figure_tasks(...) of each table
            ...
            paths = figures.wait()          # RuntimeError if a figure failed
        finally:
            figures.close()                 # no figure when submit was not reached
    """

    def __init__(self, dpi: int = FIGURE_DPI) -> None:
        self.dpi = dpi
        self._tasks: list[FigureTask] | None = None
        self._pid = self._jobs = self._result = None
        if not hasattr(os, "fork") or threading.active_count() > 1:
            return  # drawn in this process by wait()
        jobs_read, jobs_write = os.pipe()
        self._pid, self._result = _fork(lambda: self._child(jobs_read, jobs_write))
        os.close(jobs_read)
        self._jobs = jobs_write

    @property
    def forked(self) -> bool:
        """Whether a child process draws the figures."""
        return self._pid is not None

    def _child(self, jobs_read: int, jobs_write: int) -> list[str]:
        os.close(jobs_write)
        # a short-lived process: no cyclic GC, whose passes over the objects shared with
        # the parent would copy their pages
        gc.disable()
        from . import figures

        figures._text_width_pt(["warm up the font"], 8)  # font loaded before the tables
        tasks = _receive(jobs_read)
        if not tasks:  # the parent stopped before its tables were written
            return []
        mine, other = tasks[::2], tasks[1::2]
        helper = _fork(lambda: _draw_all(other, self.dpi)) if other else None
        errors = _draw_all(mine, self.dpi)
        return errors + (_reap(*helper) if helper else [])

    def submit(self, tasks: list[FigureTask]) -> None:
        """Hand the figures to draw over (once)."""
        if self._tasks is not None:
            raise RuntimeError("FigureProcess.submit may be called once")
        self._tasks = list(tasks)
        if self._jobs is not None:
            jobs, self._jobs = self._jobs, None
            try:
                _send(jobs, self._tasks)
            except BrokenPipeError:
                pass  # the child has already stopped; wait() reports why

    def wait(self) -> list[Path]:
        """Wait for the figures (drawn here when no child was forked); their paths.

        Raises RuntimeError naming each figure that could not be drawn.
        """
        tasks = self._tasks or []
        if self._pid is None:
            return [draw_figure(t, self.dpi) for t in tasks]
        pid, result, self._pid = self._pid, self._result, None
        errors = _reap(pid, result)
        if errors:
            raise RuntimeError("drawing the decoding figures failed: " + "; ".join(errors))
        return [t[1] for t in tasks]

    def close(self) -> None:
        """Stop the child without drawing (when :meth:`submit` was not reached) and reap it;
        nothing to do after :meth:`wait`."""
        if self._jobs is not None:
            os.close(self._jobs)
            self._jobs = None
        if self._pid is not None:
            pid, result, self._pid = self._pid, self._result, None
            _reap(pid, result)


def write_decoding(table: pd.DataFrame, stem: str | Path, kind: str = D.DECODING,
                   figures: bool = True, top: int = 15) -> dict[str, Path]:
    """Write one decoding table (``kind`` ``"decoding"`` or ``"mapdecoding"``) and, with
    ``figures``, its bar and polar plots; return ``{"tsv", "bar", "polar"}`` paths."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    stem = Path(stem)
    out = {"tsv": write_table(table, stem.with_name(D.decoding_table_name(stem.name, kind)))}
    if figures:
        out.update(write_figures(table, stem, kind=kind, top=top))
    return out


def write_dropped(dropped: pd.DataFrame, stem: str | Path) -> Path | None:
    """``<stem>_dropped-features.tsv`` listing the features without a map (``None`` when
    every feature has one: no file)."""
    if not len(dropped):
        return None
    stem = Path(stem)
    return write_table(dropped[DROPPED_COLUMNS],
                       stem.with_name(D.dropped_features_name(stem.name)))


def dropped_summary(dropped: pd.DataFrame, path: Path | None) -> dict[str, Any]:
    """Sidecar entry of the dropped features: count, table name, count per reason."""
    return {"n": int(len(dropped)), "table": path.name if path is not None else None,
            "reasons": {str(k): int(v) for k, v in dropped["reason"].value_counts().items()}}


def roi_summary(table: pd.DataFrame) -> dict[str, Any]:
    """Sidecar entry of an ROI table: voxels decoded and voxels outside the brain mask."""
    return {"voxels_decoded": table.attrs["roi_voxels"],
            "voxels_outside_brain_mask": table.attrs["roi_voxels_outside_mask"],
            "fraction_outside_brain_mask": round(table.attrs["roi_fraction_outside_mask"], 6)}


def null_summary(table: pd.DataFrame, kind: str) -> dict[str, Any]:
    """Sidecar entry of the spatial null behind a table's ``p_null``."""
    return {"n_null": table.attrs.get("n_null"),
            "method": "ROI translations" if kind == D.DECODING else
                      "in-support Gaussian-field surrogates, rank-matched",
            D.P_NULL: "empirical (k+1)/(n+1); GPD tail below 10 exceedances"}
