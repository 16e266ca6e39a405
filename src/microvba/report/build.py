"""``build_report``: one self-contained HTML report per derivatives folder.

The report is assembled here and only here: :mod:`._inputs` reads the folder through the
output contract (:mod:`microvba.io.derivatives`), :mod:`._sections` and :mod:`._results`
turn it into HTML fragments with the blocks of :mod:`.html`. Imports run one way
(``build -> _sections -> _results -> _common -> _inputs``, all of them -> ``html``), so
the package has no import cycle (``tests/test_layering.py``).
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator
from pathlib import Path

from .._logging import get_logger
from .._provenance import write_text
from ..io import derivatives
from ._inputs import load_inputs
from ._sections import all_sections
from .html import Numbering, page_html

log = get_logger(__name__)

REPORT_NAME = derivatives.REPORT_HTML


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """Move the objects alive now out of the collector's reach while the report is drawn.

    nilearn's plotting calls ``gc.collect()`` every time it reads an image (about ten times
    per figure); with the ~200k objects that numpy/pandas/matplotlib/nilearn bring, each call
    costs 0.15-0.3 s, i.e. most of the report's time. ``gc.freeze`` makes those collections
    scan only the new objects; ``gc.unfreeze`` restores the heap as it was. A caller that
    froze objects itself is left alone.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def build_report(out_dir: str | Path, title: str = "microvba report") -> Path:
    """Write ``OUT/group/report.html`` from the files of a derivatives folder.

    The report reads ``dataset_description.json``, ``group/analysis.json``, the cohort,
    QC, cluster, correlation, decoding and (for the demo) planted-vs-found tables, the
    randomise-style maps of each metric and the PNG figures of the earlier stages. Any piece
    may be absent: the report shows what exists and lists what is missing.

    Parameters
    ----------
    out_dir
        The derivatives folder (``OUT`` of ``microvba BIDS OUT group``).
    title
        Title of the document.

    Returns
    -------
    Path
        The written report (atomic write).

    Raises
    ------
    InputError
        If ``out_dir`` is not a folder.
    """
    t0 = time.perf_counter()
    inputs = load_inputs(out_dir)
    numbering = Numbering()
    import nilearn.plotting  # noqa: F401

    from . import figures  # noqa: F401  (imports nilearn/matplotlib before the heap is frozen)

    with _frozen_heap():
        sections = all_sections(inputs, numbering)
    name = inputs.dataset_description.get("Name", "")
    subtitle = f"{name} · {inputs.out_dir.resolve()}" if name else str(inputs.out_dir.resolve())
    path = write_text(inputs.group_dir / REPORT_NAME, page_html(title, sections, subtitle))
    log.info("report written to %s (%d figures, %d tables, %.1f s)", path, numbering.figure,
             numbering.table, time.perf_counter() - t0)
    return path
