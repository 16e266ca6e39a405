"""Report stage: one self-contained HTML report of a derivatives folder.

>>> from microvba.report import build_report
>>> build_report("derivatives/microvba")  # doctest: +SKIP
PosixPath('derivatives/microvba/group/report.html')
"""

from .build import build_report
from .methods import methods_paragraph

__all__ = ["build_report", "methods_paragraph"]
