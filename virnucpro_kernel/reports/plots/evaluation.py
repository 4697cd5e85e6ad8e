"""Figures of an :class:`~virnucpro_kernel.evaluation.Evaluation` (``vk.evaluate``): ROC and precision-recall
curves, metrics by length, score distributions, tools side by side. Each takes ``caveat`` (``tables.caveat(run)``)
for its title."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..figure import (CALL_COLORS, Figure, colors, empty_figure, grouped_bars, mpl_threshold_line, style,
                      threshold_line, titled)

MAX_POINTS = 4000  # curve points drawn per tool (curves of millions of reads are thinned evenly)


def _thin(curve: pd.DataFrame) -> pd.DataFrame:
    if len(curve) <= MAX_POINTS:
        return curve
    return curve.iloc[np.unique(np.linspace(0, len(curve) - 1, MAX_POINTS).round().astype(int))]


def _labels(values) -> list[str]:
    return ["n/a" if math.isnan(v) else f"{v:.2f}" for v in values]


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _tools(ev, level: str):
    """(name, Scores, operating point, has_score) for this tool, then each other tool (sequences only)."""
    from ...evaluation import THIS_TOOL

    own = ev.scores(level)
    yield THIS_TOOL, own, own.at(ev.threshold), True
    if level == "sequence":
        for name, peer in ev.peers.items():
            yield name, peer.scores, peer.operating_point(), peer.has_score


def _curve_parts(ev, level: str, kind: str):
    """ROC (``kind="roc"``) or precision-recall curves of every tool with scores, and each tool's own calls as
    a diamond: the plotly traces, a function drawing the same on a matplotlib axes, the axis titles and the
    title; or a message when there is nothing to draw."""
    from ...evaluation import LEVELS, THIS_TOOL

    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    counts = ev.scores(level).counts()
    roc = kind == "roc"
    if roc and (not counts["virus"] or not counts["others"]):
        return "ROC needs both virus and others records"
    if not counts["virus"]:
        return "precision-recall needs virus records"
    prevalence = counts["virus"] / counts["records"]
    x, y = ("fpr", "tpr") if roc else ("recall", "precision")
    base = ([0, 1], [0, 1]) if roc else ([0, 1], [prevalence, prevalence])
    lines, points = [], []
    for (name, sc, point, has_score), color in zip(_tools(ev, level), colors(8)):
        if has_score:
            c = _thin(sc.curve if roc else sc.curve.iloc[1:])  # the +inf point has no precision
            area = f"AUROC {_fmt(sc.auroc)}" if roc else f"AP {_fmt(sc.auprc)}"
            lines.append((f"{name} ({area})", c[x].to_numpy(), c[y].to_numpy(), color))
        px, py = (point.fpr, point.recall) if roc else (point.recall, point.precision)
        if not math.isnan(py):
            label = f"{name}: own calls" if point.threshold is None else f"{name} at {point.threshold:g}"
            points.append((label, px, py, color, not has_score or name == THIS_TOOL))
    traces = [go.Scatter(x=base[0], y=base[1], mode="lines", name="chance" if roc else "share of virus",
                         showlegend=False, hoverinfo="skip",
                         line=dict(color="#bbb", dash="dot", width=1))]
    traces += [go.Scatter(x=lx, y=ly, mode="lines", name=name, line=dict(color=color, width=2, shape="linear" if roc
                                                                          else "vh")) for name, lx, ly, color in lines]
    traces += [go.Scatter(x=[px], y=[py], mode="markers", name=label, showlegend=legend,
                          marker=dict(color=color, size=11, symbol="diamond", line=dict(color="#333", width=1)))
               for label, px, py, color, legend in points]

    def draw(ax):
        ax.plot(*base, ":", color="#bbb", linewidth=1)
        for name, lx, ly, color in lines:
            ax.plot(lx, ly, color=color, linewidth=2, label=name, drawstyle="default" if roc else "steps-pre")
        for label, px, py, color, legend in points:
            ax.plot([px], [py], "D", color=color, markeredgecolor="#333", markersize=8, label=label if legend else None)
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.05)

    axis_titles = ("false positive rate", "true positive rate (recall)") if roc else ("recall", "precision")
    title = (f"ROC ({level}s): {counts['virus']} virus, {counts['others']} others" if roc
             else f"Precision-recall ({level}s): dotted line = share of virus ({prevalence:.2f})")
    return traces, draw, axis_titles, title


def _curve_figure(ev, level: str, kind: str, caveat: str) -> Figure:
    parts = _curve_parts(ev, level, kind)
    name = "ROC" if kind == "roc" else "Precision-recall"
    if isinstance(parts, str):
        return empty_figure(parts, titled(f"{name} ({level}s)", caveat))
    traces, draw_on, (xt, yt), title = parts
    fig = go.Figure(traces)
    fig.update_xaxes(title=xt, range=[-0.01, 1.01])
    fig.update_yaxes(title=yt, range=[-0.01, 1.05])

    def draw(mfig):
        ax = mfig.add_subplot()
        draw_on(ax)
        style(ax, xt, yt, legend=True)

    return Figure(fig, draw, titled(title, caveat), height=540)


def roc_curve(ev, level: str = "sequence", caveat: str = "") -> Figure:
    """ROC curves of this tool and, per sequence, every other tool with scores; each tool's own calls as a
    diamond (this tool: at the run's threshold)."""
    return _curve_figure(ev, level, "roc", caveat)


def pr_curve(ev, level: str = "sequence", caveat: str = "") -> Figure:
    """Precision-recall curves (average precision in the legend), drawn as steps (the area average precision
    sums), each tool's own calls as a diamond and the share of virus records (no skill) dotted."""
    return _curve_figure(ev, level, "pr", caveat)


def overview(ev, level: str = "sequence", caveat: str = "") -> Figure:
    """ROC and precision-recall side by side."""
    title = titled(f"{level.capitalize()}s: AUROC {_fmt(ev.scores(level).auroc)}, AUPRC {_fmt(ev.scores(level).auprc)}",
                   caveat)
    parts = [_curve_parts(ev, level, kind) for kind in ("roc", "pr")]
    if any(isinstance(p, str) for p in parts):
        return empty_figure("; ".join(p for p in parts if isinstance(p, str)), title)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("ROC", "precision-recall"), horizontal_spacing=0.12)
    for col, (traces, _, (xt, yt), _) in enumerate(parts, 1):
        for trace in traces:
            trace.showlegend = trace.showlegend is not False and col == 1
            fig.add_trace(trace, row=1, col=col)
        fig.update_xaxes(title=xt, range=[-0.01, 1.01], row=1, col=col)
        fig.update_yaxes(title=yt, range=[-0.01, 1.05], row=1, col=col)

    def draw(mfig):
        for ax, (_, draw_on, (xt, yt), _) in zip(mfig.subplots(1, 2), parts):
            draw_on(ax)
            style(ax, xt, yt)
        mfig.axes[0].legend(fontsize=7, frameon=False, loc="lower right")

    return Figure(fig, draw, title)


def metrics_by_length(ev, threshold=None, level: str = "sequence", caveat: str = "") -> Figure:
    """Per length bin: precision, recall and F1 at ``threshold`` (default: the run's) and AUROC, as grouped
    bars, each bin labelled with its virus (v) and others (o) records and those without a score."""
    table = ev.by_length(threshold=threshold, level=level)
    t = ev.threshold if threshold is None else threshold
    title = titled(f"Metrics by sequence length ({level}s, threshold {t:g})", caveat)
    if table["records"].sum() == 0:
        return empty_figure("no labelled records", title)
    bins = table.assign(bin=[f"{b} ({v}v/{o}o" + (f", {u} unscored)" if u else ")") for b, v, o, u in
                             zip(table["length_bin"], table["virus"], table["others"], table["unscored"])])
    metrics = [("precision", "precision"), ("recall", "recall"), ("f1", "f1"), ("auroc", "AUROC")]
    fig = grouped_bars(bins.astype({m: float for m, _ in metrics}), "bin", metrics, title, "value", ylim=(0, 1.15),
                       labels=_labels)
    return fig.update_xaxes(title="sequence length (v: virus, o: others)", type="category")


def score_distributions(ev, level: str = "sequence", bins: int = 40, caveat: str = "") -> Figure:
    """Scores of virus and of others records (percent of each label), the threshold dashed; records without a
    score counted in the title."""
    from ...evaluation import LABELS

    sc = ev.scores(level)
    title = f"Score distributions by label ({level}s)"
    if not len(sc.table):
        return empty_figure("no labelled records", titled(title, caveat))
    parts, unscored = [], []
    for label in LABELS:
        part = sc.table[sc.table["label"] == label]
        values = part["score"].dropna().to_numpy(dtype=float)
        unscored.append(f"{len(part) - len(values)} {label}")
        parts.append((f"{label} (n={len(values):,})", values, CALL_COLORS[label]))
    title = titled(f"{title}; without a score: {', '.join(unscored)}", caveat)
    fig = go.Figure([go.Histogram(x=v, name=name, xbins=dict(start=0.0, end=1.0 + 1e-9, size=1.0 / bins),
                                  histnorm="percent", marker_color=color, opacity=0.6) for name, v, color in parts])
    threshold_line(fig, ev.threshold)
    fig.update_layout(barmode="overlay")
    xlabel = "score (P(virus))" if level == "chunk" else "score (mean chunk P(virus))"
    fig.update_xaxes(title=xlabel, range=[0, 1])
    fig.update_yaxes(title="% of each label")

    def draw(mfig):
        ax = mfig.add_subplot()
        for name, v, color in parts:
            if len(v):
                ax.hist(v, bins=np.linspace(0, 1, bins + 1), weights=np.full(len(v), 100.0 / len(v)), color=color,
                        alpha=0.6, label=name)
        mpl_threshold_line(ax, ev.threshold)
        ax.set_xlim(0, 1)
        style(ax, xlabel, "% of each label", legend=True)

    return Figure(fig, draw, title)


def comparison_bars(ev, caveat: str = "") -> Figure:
    """AUROC, AUPRC and the precision, recall and F1 of each tool's own calls, one group of bars per tool."""
    table = ev.comparison()
    metrics = [(m, m) for m in ("auroc", "auprc", "precision", "recall", "f1")]
    return grouped_bars(table.astype({m: float for m, _ in metrics}), "tool", metrics,
                        titled("Tools on the same labelled sequences (n/a: the tool gives no score)", caveat), "value",
                        ylim=(0, 1.15), labels=_labels)
