"""Paper figures of a decoding table: ranked bar chart and polar (radar) plot.

matplotlib is imported when a figure is drawn, not with the package: a decode that writes
no figure (the API, the tests of the statistics) does not pay for it. The axes are placed
with fixed margins (the bar chart's left margin sized to its longest label) rather than by
matplotlib's constrained layout, whose extra pass over every text's extent cost about a
quarter of the drawing time.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._validation import InputError, check_positive_int
from ..io import derivatives as D

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_SIGNIFICANT = "#c0392b"
_OTHER = "#7f8c8d"


def _statistic(table: pd.DataFrame) -> str:
    stat = table.attrs.get("statistic")
    if stat is None:
        stat = next((c for c in (D.LOG_ODDS, D.R) if c in table.columns), None)
    if stat is None or stat not in table.columns:
        raise InputError("The decoding table has no statistic column (log_odds or r).",
                         file="<decoding table>",
                         fix="Pass a table from Decoder.decode_roi or Decoder.decode_map.")
    return stat


def _text_width_pt(texts: list[str], size: float) -> float:
    """Width in points of the widest of ``texts`` in matplotlib's default font."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    prop = FontProperties(size=size)
    measure = TextToPath().get_text_width_height_descent
    return max((measure(t, prop, ismath=False)[0] for t in texts), default=0.0)


def _name(row: pd.Series, width: int = 32) -> str:
    label = str(row.get("label", row["feature"]))
    words = label.split()
    short = " ".join(words[:4]) if len(words) > 4 else label
    return textwrap.shorten(short, width=width, placeholder="...")


_AXIS_LABEL = {D.LOG_ODDS: "log-odds ratio (ROI | feature vs others)",
               D.R: "Pearson r with association map", D.Z: "association z"}


def bar_chart(table: pd.DataFrame, top: int = 15) -> Figure:
    """Horizontal bars of the ``top`` features by the table's statistic (significant in red).

    Parameters
    ----------
    table
        Output of :meth:`Decoder.decode_roi` or :meth:`Decoder.decode_map`.
    top
        Number of features shown.
    """
    top = check_positive_int("top", top)
    stat = _statistic(table)
    rows = table.sort_values(stat, ascending=False).head(top).iloc[::-1]
    from matplotlib.figure import Figure

    names = [_name(r) for _, r in rows.iterrows()]
    width, height = 6.5, 0.32 * len(rows) + 1.2
    fig = Figure(figsize=(width, height))
    # left margin: the longest label (8 pt) plus the tick and a gap, in inches
    left = (_text_width_pt(names, 8) + 12) / 72
    fig.subplots_adjust(left=min(left / width, 0.6), right=0.96, bottom=0.6 / height,
                        top=1 - 0.4 / height)
    ax = fig.add_subplot()
    sig = rows["significant"].to_numpy(bool) if "significant" in rows else np.zeros(len(rows),
                                                                                    bool)
    ax.barh(np.arange(len(rows)), rows[stat].to_numpy(float),
            color=[_SIGNIFICANT if s else _OTHER for s in sig])
    ax.set_yticks(np.arange(len(rows)), names, fontsize=8)
    ax.axvline(0, color="k", lw=0.6)
    ax.set_xlabel(_AXIS_LABEL.get(stat, stat))
    vocab = table.attrs.get("vocabulary", "")
    ax.set_title(f"Top {len(rows)} {vocab} features" + (" (red: significant)" if sig.any()
                                                         else ""), fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def polar_plot(table: pd.DataFrame, top: int = 10) -> Figure:
    """Radar plot of the ``top`` features' statistic (negative values drawn at zero)."""
    top = check_positive_int("top", top)
    stat = _statistic(table)
    rows = table.sort_values(stat, ascending=False).head(top)
    values = np.clip(rows[stat].to_numpy(float), 0, None)
    values = np.nan_to_num(values)
    n = len(rows)
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 6))
    # room around the circle for the spoke labels (two to three lines of 7 pt) and the title
    ax = fig.add_axes((0.14, 0.07, 0.72, 0.72), projection="polar")
    closed_a = np.append(angles, angles[:1])
    closed_v = np.append(values, values[:1])
    ax.plot(closed_a, closed_v, color=_SIGNIFICANT, lw=1.5)
    ax.fill(closed_a, closed_v, color=_SIGNIFICANT, alpha=0.25)
    ax.set_xticks(angles, [textwrap.fill(_name(r, 24), 14) for _, r in rows.iterrows()],
                  fontsize=7)
    ax.set_rlabel_position(90)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(_AXIS_LABEL.get(stat, stat), fontsize=9, pad=34)
    return fig
