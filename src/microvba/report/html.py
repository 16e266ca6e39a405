"""HTML building blocks of the report: numbered figures and tables, cells, the page.

Every figure is embedded as a base64 PNG ``data:`` URI and the stylesheet is inlined, so the
file opens offline, can be mailed as one attachment, and needs no JavaScript. All text that
comes from the inputs is escaped with :func:`html.escape`.
"""

from __future__ import annotations

import base64
import datetime as _dt
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from html import escape
from importlib import resources

import pandas as pd

from .. import __version__


@dataclass
class Numbering:
    """Running figure and table numbers of one report."""

    figure: int = 0
    table: int = 0

    def next_figure(self) -> int:
        self.figure += 1
        return self.figure

    def next_table(self) -> int:
        self.table += 1
        return self.table


def stylesheet() -> str:
    """The report's CSS (``templates/report.css``, shipped as package data)."""
    return resources.files(__package__).joinpath("templates/report.css").read_text("utf-8")


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` URI of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_html(png: bytes, caption: str, numbering: Numbering, *, alt: str = "",
                css_class: str = "fig", caption_is_html: bool = False) -> str:
    """``<figure>`` with an embedded PNG and a numbered caption."""
    n = numbering.next_figure()
    text = caption if caption_is_html else escape(caption)
    return (f'<figure class="{css_class}" id="fig-{n}">'
            f'<img src="{data_uri(png)}" alt="{escape(alt or caption)}">'
            f"<figcaption><b>Figure {n}.</b> {text}</figcaption></figure>")


def format_p(p: float) -> str:
    """p value as papers print it: three decimals, ``<0.001`` below."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return ""
    p = float(p)
    return "&lt;0.001" if p < 0.001 else f"{p:.3f}"


def format_number(value: object, decimals: int = 2) -> str:
    """Escaped cell text; floats rounded, NaN as empty, booleans as yes/no."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float | int) and not isinstance(value, bool):
        if isinstance(value, float) and math.isnan(value):
            return ""
        if float(value).is_integer() and decimals == 0:
            return f"{int(value)}"
        return f"{float(value):.{decimals}f}"
    return escape(str(value))


@dataclass
class Column:
    """One table column: source column(s), header and formatter of the row."""

    header: str
    render: Callable[[pd.Series], str]
    numeric: bool = False
    css: Callable[[pd.Series], str] | None = None


def table_html(rows: pd.DataFrame, columns: Sequence[Column], caption: str,
               numbering: Numbering, *, row_class: Callable[[pd.Series], str] | None = None,
               caption_is_html: bool = False) -> str:
    """Booktabs-style ``<table>`` with a numbered caption (cells are rendered escaped)."""
    n = numbering.next_table()
    head = "".join(f'<th class="{"num" if c.numeric else ""}">{escape(c.header)}</th>'
                   for c in columns)
    body = []
    for _, row in rows.iterrows():
        cls = row_class(row) if row_class else ""
        cells = []
        for c in columns:
            classes = " ".join(x for x in ("num" if c.numeric else "", c.css(row) if c.css else "")
                               if x)
            cells.append(f'<td class="{classes}">{c.render(row)}</td>')
        body.append(f'<tr class="{cls}">' + "".join(cells) + "</tr>")
    text = caption if caption_is_html else escape(caption)
    return (f'<figure class="table" id="table-{n}"><table>'
            f"<caption><b>Table {n}.</b> {text}</caption>"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></figure>")


def section_html(anchor: str, heading: str, body: str) -> str:
    """A top-level ``<section>`` with an ``<h2>``."""
    return f'<section id="{escape(anchor)}"><h2>{escape(heading)}</h2>\n{body}\n</section>'


def notice_html(title: str, items: Iterable[str]) -> str:
    """A highlighted box listing (escaped) items, e.g. the missing inputs."""
    items = list(items)
    if not items:
        return ""
    li = "".join(f"<li>{escape(i)}</li>" for i in items)
    return f'<div class="notice"><b>{escape(title)}</b><ul>{li}</ul></div>'


def page_html(title: str, sections: Sequence[tuple[str, str, str]], subtitle: str = "") -> str:
    """The whole document: inline CSS, title block, table of contents and sections."""
    toc = "".join(f'<li><a href="#{escape(a)}">{escape(h)}</a></li>' for a, h, _ in sections)
    body = "\n".join(section_html(a, h, b) for a, h, b in sections)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="microvba {escape(__version__)}">
<title>{escape(title)}</title>
<style>
{stylesheet()}
</style>
</head>
<body>
<main>
<header class="title"><h1>{escape(title)}</h1>
<div class="meta">{escape(subtitle)}{' · ' if subtitle else ''}generated {stamp} by microvba {escape(__version__)}</div>
</header>
<nav class="toc"><ol>{toc}</ol></nav>
{body}
<footer>Self-contained report: every figure is embedded; no script, font or network resource is
used. Maps follow the FSL randomise convention (corrp = 1 − p, FWE-corrected).</footer>
</main>
</body>
</html>
"""
