"""Figures: bar chart and polar plot of decoding tables."""

from __future__ import annotations

import pandas as pd
import pytest
from matplotlib.figure import Figure

from microvba._validation import InputError
from microvba.decode import bar_chart, polar_plot


def _table(n=20) -> pd.DataFrame:
    t = pd.DataFrame({"feature": [f"f{i}" for i in range(n)],
                      "label": [f"word{i} other words here more" for i in range(n)],
                      "log_odds": [1.0 - 0.1 * i for i in range(n)],
                      "significant": [i < 3 for i in range(n)]})
    t.attrs["statistic"] = "log_odds"
    return t


def test_bar_chart_shows_top_features():
    fig = bar_chart(_table(), top=15)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert len(ax.patches) == 15
    widths = sorted(p.get_width() for p in ax.patches)
    assert widths[-1] == pytest.approx(1.0)
    colours = {p.get_facecolor() for p in ax.patches}
    assert len(colours) == 2  # significant vs not


def test_polar_plot_has_one_spoke_per_feature():
    fig = polar_plot(_table(), top=10)
    ax = fig.axes[0]
    assert ax.name == "polar" and len(ax.get_xticks()) == 10


def test_figure_errors():
    with pytest.raises(InputError, match="no statistic column"):
        bar_chart(pd.DataFrame({"feature": ["a"]}))
    with pytest.raises(InputError, match="'top' parameter must be a positive int"):
        polar_plot(_table(), top=0)
