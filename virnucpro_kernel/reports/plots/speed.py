"""Figures of one GPU's speed (``reports.speed``): ESM-2 MFU per speed route, where its GPU time goes, and the time
around the compute of a whole run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..figure import Figure, colors, empty_figure, is_empty, style, titled
from ..speed import STARTUP_PARTS


def _caveat(table) -> str:
    return table.attrs.get("caveat", "") if isinstance(table, pd.DataFrame) else ""


def route_mfu(table: pd.DataFrame | None) -> Figure:
    """MFU of each ESM-2 stage of ``speed.route_table``, the default (all routes on) first among ours."""
    title = titled("ESM-2 3B: MFU per speed route (each switched off or swapped alone)", _caveat(table))
    if is_empty(table) or table["mfu"].notna().sum() == 0:
        return empty_figure("no ESM-2 stage measured on a GPU", title)
    t = table.dropna(subset=["mfu"])
    labels = [w if len(w) < 48 else w[:45] + "..." for w in t["what"]]
    values = 100 * t["mfu"].astype(float)
    fig = go.Figure(go.Bar(x=values, y=labels, orientation="h", marker_color=colors(1)[0],
                           text=[f"{v:.1f}%" for v in values], textposition="outside"))
    fig.update_xaxes(title="MFU (%)", range=[0, max(100.0, float(values.max()) + 10)])
    fig.update_yaxes(autorange="reversed")

    def draw(mfig):
        ax = mfig.add_subplot()
        bars = ax.barh(range(len(labels)), values, color=colors(1)[0])
        ax.bar_label(bars, [f"{v:.1f}%" for v in values], fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, max(100.0, float(values.max()) + 10))
        style(ax, "MFU (%)")

    return Figure(fig, draw, title, height=120 + 40 * len(labels))


def kernel_time(categories: pd.DataFrame | None) -> Figure:
    """Shares of the compiled ESM-2's GPU time by kernel category (``speed.kernel_time``)."""
    title = titled("Where ESM-2's GPU time goes (share of kernel time)", _caveat(categories))
    if is_empty(categories):
        return empty_figure("no kernel profile (measured on GPUs only)", title)
    shares = 100 * categories["share"].astype(float)
    fig = go.Figure(go.Bar(x=list(categories["category"]), y=shares, marker_color=colors(len(categories)),
                           text=[f"{v:.1f}%" for v in shares], textposition="outside"))
    fig.update_yaxes(title="% of kernel time", range=[0, 100])

    def draw(mfig):
        ax = mfig.add_subplot()
        bars = ax.bar(range(len(categories)), shares, color=colors(len(categories)))
        ax.bar_label(bars, [f"{v:.1f}%" for v in shares], fontsize=8)
        ax.set_xticks(range(len(categories)), list(categories["category"]), fontsize=8)
        ax.set_ylim(0, 100)
        style(ax, "", "% of kernel time")

    return Figure(fig, draw, title)


def run_overhead(table: pd.DataFrame | None) -> Figure:
    """Each whole run's time before its first batch, by part, beside its compute and its time after the last batch
    (``speed.run_overhead``). Parts marked "beside" run at the same time as the others: they overlap."""
    title = titled("A whole run: the time around the compute", _caveat(table))
    if is_empty(table):
        return empty_figure("no whole run measured", title)
    runs = list(table["run"])
    series = [("before the first batch", table["before_first_batch_s"]), ("compute", table["compute_s"]),
              ("after the last batch", table["after_last_batch_s"])]
    fig = go.Figure([go.Bar(x=runs, y=v, name=n, marker_color=c) for (n, v), c in zip(series, colors(3))])
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title="seconds")
    parts = [(k, n) for k, n in STARTUP_PARTS if table[k].notna().any()]

    def draw(mfig):
        ax = mfig.add_subplot()
        bottom = np.zeros(len(runs))
        for (name, values), color in zip(series, colors(3)):
            v = values.astype(float).fillna(0).to_numpy()
            ax.bar(range(len(runs)), v, bottom=bottom, color=color, label=name)
            bottom += v
        ax.set_xticks(range(len(runs)), runs, fontsize=8)
        style(ax, "", "seconds", legend=True)

    note = "; ".join(f"{n}: " + ", ".join(f"{r} {v:.1f} s" for r, v in zip(runs, table[k]) if pd.notna(v))
                     for k, n in parts)
    figure = Figure(fig, draw, title)
    if note:
        figure.add_annotation(text=note[:300], x=0, y=-0.25, xref="paper", yref="paper", showarrow=False,
                              font=dict(size=10), align="left")
    return figure
