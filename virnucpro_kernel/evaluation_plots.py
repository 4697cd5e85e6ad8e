"""Figures of an :class:`~virnucpro_kernel.evaluation.Evaluation` (plotly).

Each function takes an ``Evaluation`` and returns a ``go.Figure``; where there is nothing to draw (one class
absent, no other tool) it returns a figure that says so. Only scatter, bar and histogram traces are used, so
the report's PNG converter (``plots.to_matplotlib``) draws them too.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .evaluation import LEVELS, OTHERS, THIS_TOOL, VIRUS, Evaluation
from .plots import CALL_COLORS, PALETTE, TEMPLATE, empty_figure

MAX_POINTS = 4000  # curve points drawn per tool (curves of millions of reads are thinned evenly)


def _layout(fig: go.Figure, title: str, height: int = 480, **kwargs) -> go.Figure:
    fig.update_layout(title=title, template=TEMPLATE, height=height, margin=dict(l=70, r=30, t=70, b=60), **kwargs)
    return fig


def _thin(curve: pd.DataFrame) -> pd.DataFrame:
    if len(curve) <= MAX_POINTS:
        return curve
    keep = np.unique(np.linspace(0, len(curve) - 1, MAX_POINTS).round().astype(int))
    return curve.iloc[keep]


def _fmt(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _threshold_text(t) -> str:
    return "" if t is None or not np.isfinite(t) else f"{t:.3g}"


def _tools(ev: Evaluation, level: str):
    """(name, Scores, operating point, has_score) for this tool, then each other tool (sequence level only)."""
    own = ev.scores(level)
    yield THIS_TOOL, own, own.at(ev.threshold), True
    if level == "sequence":
        for name, peer in ev.peers.items():
            yield name, peer.scores, peer.operating_point(), peer.has_score


def _check_level(level: str) -> None:
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")


def roc_curve(ev: Evaluation, level: str = "sequence") -> go.Figure:
    """ROC curves of this tool and, per sequence, every other tool with scores; each tool's own calls as a
    marker (this tool: at the run's threshold; tools with calls only: their single operating point)."""
    _check_level(level)
    title = f"ROC ({level}s)"
    counts = ev.scores(level).counts()
    if not counts["virus"] or not counts["others"]:
        return empty_figure("ROC needs both virus and others records", title)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", showlegend=False,
                             line=dict(color="#bbb", dash="dot", width=1), hoverinfo="skip"))
    for (name, sc, point, has_score), color in zip(_tools(ev, level), PALETTE * 3):
        if has_score:
            c = _thin(sc.curve)
            fig.add_trace(go.Scatter(x=c["fpr"], y=c["tpr"], mode="lines", name=f"{name} (AUROC {_fmt(sc.auroc)})",
                                     line=dict(color=color, width=2, shape="linear"), legendgroup=name,
                                     customdata=[_threshold_text(t) for t in c["threshold"]],
                                     hovertemplate=f"{name}<br>FPR %{{x:.3f}}<br>TPR %{{y:.3f}}<br>"
                                                   "threshold %{customdata}<extra></extra>"))
        label = f"{name}: own calls" if point.threshold is None else f"{name} at {point.threshold:g}"
        fig.add_trace(go.Scatter(x=[point.fpr], y=[point.recall], mode="markers", name=label, legendgroup=name,
                                 showlegend=not has_score or name == THIS_TOOL,
                                 marker=dict(color=color, size=11, symbol="diamond", line=dict(color="#333", width=1))))
    fig.update_xaxes(title="false positive rate (others called virus)", range=[-0.01, 1.01])
    fig.update_yaxes(title="true positive rate (recall)", range=[-0.01, 1.01], scaleanchor="x", scaleratio=1)
    return _layout(fig, f"{title}: {counts['virus']} virus, {counts['others']} others", height=560)


def pr_curve(ev: Evaluation, level: str = "sequence") -> go.Figure:
    """Precision-recall curves (average precision in the legend), each tool's own calls as a marker, and the
    share of virus records (a classifier without skill) dotted. Curves are drawn as steps that rise to each
    point's precision before moving right, the area that average precision sums."""
    _check_level(level)
    title = f"Precision-recall ({level}s)"
    counts = ev.scores(level).counts()
    if not counts["virus"]:
        return empty_figure("precision-recall needs virus records", title)
    prevalence = counts["virus"] / counts["records"]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[prevalence, prevalence], mode="lines", showlegend=False, hoverinfo="skip",
                             line=dict(color="#bbb", dash="dot", width=1)))
    for (name, sc, point, has_score), color in zip(_tools(ev, level), PALETTE * 3):
        if has_score:
            c = _thin(sc.curve.iloc[1:])  # the +inf point has no precision
            fig.add_trace(go.Scatter(x=c["recall"], y=c["precision"], mode="lines", legendgroup=name,
                                     name=f"{name} (AP {_fmt(sc.auprc)})", line=dict(color=color, width=2, shape="vh"),
                                     customdata=[_threshold_text(t) for t in c["threshold"]],
                                     hovertemplate=f"{name}<br>recall %{{x:.3f}}<br>precision %{{y:.3f}}<br>"
                                                   "threshold %{customdata}<extra></extra>"))
        if not math.isnan(point.precision):
            label = f"{name}: own calls" if point.threshold is None else f"{name} at {point.threshold:g}"
            fig.add_trace(go.Scatter(x=[point.recall], y=[point.precision], mode="markers", name=label,
                                     legendgroup=name, showlegend=not has_score or name == THIS_TOOL,
                                     marker=dict(color=color, size=11, symbol="diamond",
                                                 line=dict(color="#333", width=1))))
    fig.update_xaxes(title="recall", range=[-0.01, 1.01])
    fig.update_yaxes(title="precision", range=[-0.01, 1.05])
    return _layout(fig, f"{title}: dotted line = share of virus ({prevalence:.2f})", height=520)


def metrics_by_length(ev: Evaluation, threshold=None, level: str = "sequence") -> go.Figure:
    """Per length bin: precision, recall and F1 at ``threshold`` (default: the run's) and AUROC, as grouped
    bars, each bin labelled with its virus (v) and others (o) records and those without a score."""
    _check_level(level)
    table = ev.by_length(threshold=threshold, level=level)
    t = ev.threshold if threshold is None else threshold
    title = f"Metrics by sequence length ({level}s, threshold {t:g})"
    if table["records"].sum() == 0:
        return empty_figure("no labelled records", title)
    ticks = [f"{b} ({v}v/{o}o" + (f", {u} unscored)" if u else ")")
             for b, v, o, u in zip(table["length_bin"], table["virus"], table["others"], table["unscored"])]
    fig = go.Figure()
    for metric, color in zip(("precision", "recall", "f1", "auroc"), PALETTE):
        values = table[metric].to_numpy(dtype=float)
        fig.add_trace(go.Bar(x=ticks, y=np.nan_to_num(values, nan=0.0),
                             name=metric.upper() if metric == "auroc" else metric, marker_color=color,
                             text=["n/a" if math.isnan(v) else f"{v:.2f}" for v in values], textposition="outside"))
    fig.update_layout(barmode="group")
    fig.update_yaxes(title="value", range=[0, 1.15])
    fig.update_xaxes(title="sequence length (v: virus, o: others)", type="category")
    return _layout(fig, title)


def score_distributions(ev: Evaluation, level: str = "sequence", bins: int = 40) -> go.Figure:
    """Scores of virus and of others records (percent of each label), the threshold dashed; records without
    a score are counted in the title."""
    _check_level(level)
    sc = ev.scores(level)
    title = f"Score distributions by label ({level}s)"
    if not len(sc.table):
        return empty_figure("no labelled records", title)
    xbins = dict(start=0.0, end=1.0 + 1e-9, size=1.0 / bins)
    fig = go.Figure()
    unscored = []
    for label in (VIRUS, OTHERS):
        part = sc.table[sc.table["label"] == label]
        values = part["score"].dropna().to_numpy(dtype=float)
        unscored.append(f"{len(part) - len(values)} {label}")
        fig.add_trace(go.Histogram(x=values, name=f"{label} (n={len(values):,})", xbins=xbins, histnorm="percent",
                                   marker_color=CALL_COLORS[label], opacity=0.6))
    fig.add_vline(ev.threshold, line=dict(color="#444", dash="dash", width=1.5))
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title="score (P(virus))" if level == "chunk" else "score (mean chunk P(virus))", range=[0, 1])
    fig.update_yaxes(title="% of each label")
    return _layout(fig, f"{title}; without a score: {', '.join(unscored)}")


def comparison_bars(ev: Evaluation) -> go.Figure:
    """AUROC, AUPRC and the F1 of each tool's own calls, one group of bars per tool."""
    table = ev.comparison()
    title = "Tools on the same labelled sequences"
    fig = go.Figure()
    for metric, color in zip(("auroc", "auprc", "precision", "recall", "f1"), PALETTE):
        values = table[metric].to_numpy(dtype=float)
        fig.add_trace(go.Bar(x=table["tool"], y=np.nan_to_num(values, nan=0.0), name=metric, marker_color=color,
                             text=["n/a" if math.isnan(v) else f"{v:.2f}" for v in values], textposition="outside"))
    fig.update_layout(barmode="group")
    fig.update_yaxes(range=[0, 1.15], title="value")
    return _layout(fig, title + " (n/a: the tool gives no score)")


def overview(ev: Evaluation) -> go.Figure:
    """ROC and PR curves side by side (sequences), for a compact report."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("ROC", "precision-recall"), horizontal_spacing=0.12)
    for src, col in ((roc_curve(ev), 1), (pr_curve(ev), 2)):
        for trace in src.data:
            trace.showlegend = trace.showlegend is not False and col == 1
            fig.add_trace(trace, row=1, col=col)
    fig.update_xaxes(title="false positive rate", range=[-0.01, 1.01], row=1, col=1)
    fig.update_yaxes(title="true positive rate", range=[-0.01, 1.01], row=1, col=1)
    fig.update_xaxes(title="recall", range=[-0.01, 1.01], row=1, col=2)
    fig.update_yaxes(title="precision", range=[-0.01, 1.05], row=1, col=2)
    return _layout(fig, f"Sequences: AUROC {_fmt(ev.auroc)}, AUPRC {_fmt(ev.auprc)}")
