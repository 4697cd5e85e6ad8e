"""The report figure: a plotly figure with a matplotlib drawing of the same data.

Each figure function in :mod:`.plots` prepares its data once and draws it twice: a plotly figure (interactive:
JupyterLab and the HTML page, plotly.js inlined once per page by ``display.setup``) and a matplotlib drawing
(a PNG: the markdown page). Neither is converted from the other. Static images come from matplotlib on every
machine: plotly's own export (kaleido) needs a browser, which neither the CI machine nor the GPU machine has,
and one drawing path everywhere keeps the committed PNGs the same from one render to the next.

A :class:`Figure` is a ``plotly.graph_objects.Figure`` (``.data``, ``.layout``, ``update_layout``...). Shown
in a notebook (a cell's last value, or ``IPython.display.display``) it gives one bundle: ``text/html`` (the
figure's ``<div>``, which the HTML exporter picks), ``image/png`` (which the markdown exporter picks) and
plotly's JSON (JupyterLab).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from typing import Callable

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

TEMPLATE = "plotly_white"
WIDTH, HEIGHT = 900, 480  # pixels: the plotly figure's default height, the PNG's size at DPI
DPI = 100
PNG_SCALE = 1.5
CONFIG = {"displaylogo": False, "responsive": True}
CALL_COLORS = {"virus": "#d62728", "others": "#1f77b4", "no_frames": "#b0b0b0"}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")


def colors(n: int) -> list[str]:
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


class Figure(go.Figure):
    """A plotly figure and ``draw(matplotlib_figure)``, which draws the same data with matplotlib."""

    def __init__(self, fig: go.Figure, draw: Callable, title: str = "", height: int | None = None,
                 png_height: int | None = None):
        height = height or HEIGHT
        fig.update_layout(title=title, template=TEMPLATE, height=height, margin=dict(l=70, r=30, t=70, b=60))
        super().__init__(fig)
        self._draw, self._title, self._height, self._png_height = draw, title, height, png_height or height

    def to_matplotlib(self):
        """A new ``matplotlib.figure.Figure`` (no pyplot state) with the drawing and the title."""
        from matplotlib.figure import Figure as MplFigure

        mfig = MplFigure(figsize=(WIDTH / DPI, self._png_height / DPI), dpi=DPI, layout="constrained")
        self._draw(mfig)
        if self._title:
            mfig.suptitle(self._title, x=0.01, ha="left", fontsize=11)
        return mfig

    def to_png(self, path=None) -> bytes:
        """:func:`to_png` of this figure."""
        return to_png(self, path)

    def to_div(self) -> str:
        """The figure's ``<div>`` and the script that draws it, without plotly.js; its ID is derived from its
        content, so the same figure gives the same HTML."""
        spec = pio.to_json(self, validate=False)
        div_id = "vnp-fig-" + hashlib.sha1(spec.encode()).hexdigest()[:12]
        return pio.to_html(self, config=CONFIG, include_plotlyjs=False, include_mathjax=False, full_html=False,
                           default_width="100%", default_height=self._height, validate=False, div_id=div_id)

    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        return {"text/html": self.to_div(), "image/png": base64.b64encode(self.to_png()).decode("ascii"),
                "application/vnd.plotly.v1+json": {**json.loads(pio.to_json(self, validate=False)), "config": CONFIG},
                "text/plain": f"<figure: {self._title}>"}

    def _repr_html_(self):
        return self.to_div()

    def _ipython_display_(self):
        from IPython.display import display

        display(self._repr_mimebundle_(), raw=True)

    def show(self, *args, **kwargs):
        self._ipython_display_()


def to_png(fig: Figure, path=None) -> bytes:
    """PNG bytes of ``fig``'s matplotlib drawing (written to ``path`` as well when given); the file holds no
    time or software version, so the same figure gives the same bytes."""
    buf = io.BytesIO()
    fig.to_matplotlib().savefig(buf, format="png", dpi=DPI * PNG_SCALE, metadata={"Software": None})
    data = buf.getvalue()
    if path is not None:
        with open(path, "wb") as fh:
            fh.write(data)
    return data


def empty_figure(message: str, title: str = "") -> Figure:
    """A figure holding only ``message``: what a page shows where its data is missing."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=15, color="#666"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)

    def draw(mfig):
        ax = mfig.add_subplot()
        ax.set_axis_off()
        ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=13, color="#666", transform=ax.transAxes)

    return Figure(fig, draw, title, height=260)


def titled(title: str, caveat: str = "") -> str:
    """``title``, prefixed with the page's caveat (``pipeline check (demo profile)``) when there is one."""
    return f"[{caveat}] {title}" if caveat else title


def style(ax, xlabel: str = "", ylabel: str = "", title: str = "", legend: bool = False) -> None:
    """Common look of a matplotlib axes: labels, light grid, no top/right frame, legend outside on the right."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def threshold_line(fig: go.Figure, value: float, axis: str = "x", **kwargs) -> None:
    """The dashed threshold line of a plotly figure (``add_vline``/``add_hline``)."""
    add = fig.add_vline if axis == "x" else fig.add_hline
    add(value, line=dict(color="#444", dash="dash", width=1.5), **kwargs)


def mpl_threshold_line(ax, value: float, axis: str = "x") -> None:
    """The same dashed line on a matplotlib axes."""
    (ax.axvline if axis == "x" else ax.axhline)(value, color="#444", linestyle="--", linewidth=1.2)


def is_empty(data) -> bool:
    """None or no rows: what a figure function draws a message for."""
    return data is None or len(data) == 0


def grouped_bars(table: pd.DataFrame, x: str, columns: list[tuple[str, str]], title: str, ylabel: str,
                 log: bool = False, ylim=None, labels=None) -> Figure:
    """One group of bars per row of ``table`` (named by its column ``x``), one bar per ``(column, name)`` of
    ``columns``; ``labels(values)`` gives the text above the bars."""
    x = list(table[x])
    fig = go.Figure([go.Bar(x=x, y=table[c], name=name, marker_color=color,
                            text=labels(table[c]) if labels else None, textposition="outside" if labels else None)
                     for (c, name), color in zip(columns, colors(len(columns)))])
    fig.update_layout(barmode="group")
    fig.update_yaxes(title=ylabel, type="log" if log else None, range=ylim)

    def draw(mfig):
        ax = mfig.add_subplot()
        width = 0.8 / len(columns)
        for i, ((c, name), color) in enumerate(zip(columns, colors(len(columns)))):
            bars = ax.bar(np.arange(len(x)) + (i - (len(columns) - 1) / 2) * width, table[c].astype(float), width,
                          color=color, label=name)
            if labels:
                ax.bar_label(bars, labels(table[c]), fontsize=7)
        ax.set_xticks(range(len(x)), x, rotation=20 if len(x) > 3 else 0, fontsize=8)
        if log:
            ax.set_yscale("log")
        if ylim:
            ax.set_ylim(*ylim)
        style(ax, "", ylabel, legend=True)

    return Figure(fig, draw, title)
