"""Figures of the notebooks and reports.

Each figure function takes the package's tables (``outputs`` files read back, ``reports`` tables built from
benchmark results) and returns a plotly ``Figure``; given ``None`` or an empty table it returns a figure that
says what is missing instead of failing, so a report on results that do not exist yet still renders.

Two ways out of a figure:

- HTML pages: interactive plotly, plotly.js embedded once per page (:func:`setup_notebook` displays it, the
  ``virnucpro`` renderer then emits each figure as a ``<div>`` without it);
- markdown pages: a PNG drawn by :func:`to_matplotlib` / :func:`to_png`, a small converter of the trace types
  used here (scatter, bar, histogram, box; shapes, annotations, subplots, secondary y axes) to matplotlib.
  It needs no browser, unlike plotly's own image export (kaleido drives Chrome).

The ``virnucpro`` renderer puts both, plus plotly's own JSON for JupyterLab, in one display bundle; the
HTML exporter picks ``text/html``, the markdown exporter ``image/png`` (see ``reports``).
"""

from __future__ import annotations

import base64
import html
import io
import json
import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.io.base_renderers import MimetypeRenderer
from plotly.subplots import make_subplots

CALL_COLORS = {"virus": "#d62728", "others": "#1f77b4", "no_frames": "#b0b0b0"}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
TEMPLATE = "plotly_white"
RENDERER = "virnucpro"
PNG_DPI = 100
PNG_SCALE = 1.5
DEFAULT_SIZE = (900, 480)


# ----------------------------------------------------------------------------------------------- helpers
def _layout(fig: go.Figure, title: str, height: int | None = None, **kwargs) -> go.Figure:
    fig.update_layout(title=title, template=TEMPLATE, height=height or DEFAULT_SIZE[1],
                      margin=dict(l=70, r=30, t=70, b=60), **kwargs)
    return fig


def _is_empty(data) -> bool:
    return data is None or (isinstance(data, (pd.DataFrame, pd.Series, list, tuple, dict)) and len(data) == 0)


def empty_figure(message: str, title: str = "") -> go.Figure:
    """A figure holding only ``message``: what a report shows where its data is missing."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=15, color="#666"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title, height=260)


def _threshold_line(fig: go.Figure, value: float, axis: str = "x", **kwargs) -> None:
    add = fig.add_vline if axis == "x" else fig.add_hline
    add(value, line=dict(color="#444", dash="dash", width=1.5), **kwargs)


# ------------------------------------------------------------------------------------------- prediction
def score_histogram(frames: pd.DataFrame | None, sequences: pd.DataFrame | None = None,
                    threshold: float = 0.5, bins: int = 50) -> go.Figure:
    """Distribution of P(virus): per frame, per chunk (its best frame, the original's call) and per record
    (``sequences.tsv`` score), as percentages of each, with the calling threshold."""
    title = "Distribution of P(virus)"
    if _is_empty(frames):
        return empty_figure("no frames: nothing was scored", title)
    size = 1.0 / bins
    xbins = dict(start=0.0, end=1.0 + 1e-9, size=size)
    chunk_max = frames.groupby(["record_index", "chunk"], sort=False)["p_virus"].max()
    series = [("frames", frames["p_virus"]), ("chunks (best frame)", chunk_max)]
    if not _is_empty(sequences):
        series.append(("records (mean chunk score)", sequences["score"].dropna()))
    fig = go.Figure()
    for (name, values), color in zip(series, PALETTE):
        values = np.asarray(values, dtype=np.float64)
        fig.add_trace(go.Histogram(x=values, name=f"{name} (n={len(values):,})", xbins=xbins, histnorm="percent",
                                   marker_color=color, opacity=0.6))
    _threshold_line(fig, threshold)
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title="P(virus)", range=[0, 1])
    fig.update_yaxes(title="% of each")
    return _layout(fig, f"{title} (threshold {threshold:g}, dashed)")


def calls_per_record(sequences: pd.DataFrame | None, max_records: int = 40) -> go.Figure:
    """Per input record, its chunks split into called viral, not viral and without a kept frame; records
    sorted by score (best first), the ``max_records`` best shown."""
    title = "Chunks per record and their calls"
    if _is_empty(sequences):
        return empty_figure("no records", title)
    df = sequences.sort_values("score", ascending=False, na_position="last", kind="stable").head(max_records)
    with_frames = df["chunks_with_frames"].to_numpy(dtype=np.int64)
    viral = np.rint(df["viral_chunk_fraction"].fillna(0).to_numpy() * with_frames).astype(np.int64)
    parts = [("viral chunks", viral, CALL_COLORS["virus"]),
             ("other chunks", with_frames - viral, CALL_COLORS["others"]),
             ("chunks without a frame", df["chunks"].to_numpy(dtype=np.int64) - with_frames, CALL_COLORS["no_frames"])]
    labels = [f"{sid} [{call}]" for sid, call in zip(df["sequence_id"], df["call"])]
    hover = [f"score {s:.3f}" if pd.notna(s) else "no frame" for s in df["score"]]
    fig = go.Figure()
    for name, counts, color in parts:
        fig.add_trace(go.Bar(y=labels, x=counts, name=name, orientation="h", marker_color=color,
                             customdata=hover, hovertemplate="%{y}: %{x} " + name + " (%{customdata})<extra></extra>"))
    fig.update_layout(barmode="stack")
    fig.update_yaxes(autorange="reversed", title="")
    fig.update_xaxes(title="chunks")
    if len(sequences) > len(df):
        title += f" (best {len(df)} of {len(sequences)} by score)"
    return _layout(fig, title, height=160 + 26 * len(df))


def chunk_positions(sequences: pd.DataFrame, chunk_size: int) -> pd.DataFrame:
    """Where each chunk lies in its record (the original's chunking): ``sequence_id, chunk`` (1-based),
    ``start``, ``length`` and ``mid_kb``, for every record of ``sequences``."""
    from .frames import chunk_layout

    rec, k, start, length = chunk_layout(sequences["length"].to_numpy(dtype=np.int64), chunk_size)
    return pd.DataFrame({"row": rec, "sequence_id": sequences["sequence_id"].to_numpy()[rec], "chunk": k + 1,
                         "start": start, "length": length, "mid_kb": (start + length / 2) / 1000.0})


def _frame_rows(frames: pd.DataFrame, sequences: pd.DataFrame) -> np.ndarray:
    """The row of ``sequences`` (``sequences.tsv``, no record index) each frame belongs to: records are matched
    by ID and, for repeated IDs, by order of appearance (records without frames have a row but no frame)."""
    seqs = pd.DataFrame({"sequence_id": sequences["sequence_id"].to_numpy(), "row": np.arange(len(sequences))})
    seqs["occurrence"] = seqs.groupby("sequence_id").cumcount()
    recs = frames[["record_index", "sequence_id"]].drop_duplicates("record_index").sort_values("record_index")
    recs = recs.assign(occurrence=recs.groupby("sequence_id").cumcount())
    recs = recs.merge(seqs, on=["sequence_id", "occurrence"], how="left")
    rows = frames["record_index"].map(dict(zip(recs["record_index"], recs["row"])))
    return rows.fillna(-1).to_numpy(dtype=np.int64)


def chunk_track(frames: pd.DataFrame | None, sequences: pd.DataFrame | None, chunk_size: int,
                threshold: float = 0.5, max_records: int = 30) -> go.Figure:
    """P(virus) along each record, chunk by chunk: the chunk's score (its best frame) as a line, broken where
    a chunk kept no frame, and every frame as a point (forward and reverse frames apart). One record at a
    time, picked from a menu; records ordered by score, the best shown first."""
    title = "P(virus) along the record"
    if _is_empty(frames) or _is_empty(sequences):
        return empty_figure("no frames: nothing to draw", title)
    seqs = sequences.reset_index(drop=True)
    chunks = chunk_positions(seqs, chunk_size)
    order = seqs.sort_values("score", ascending=False, na_position="last", kind="stable").index[:max_records]
    frames = frames.assign(row=_frame_rows(frames, seqs))
    fig = go.Figure()
    buttons, per_record = [], 3
    for i, row in enumerate(order):
        rec = seqs.loc[row]
        pos = chunks[chunks["row"] == row]
        f = frames[frames["row"] == row].merge(pos[["chunk", "mid_kb"]], on="chunk", how="left")
        best = f.groupby("chunk")["p_virus"].max()
        line_y = pos["chunk"].map(best).to_numpy(dtype=np.float64)  # NaN where no frame: a gap
        visible = i == 0
        for strand, color, symbol in (("F", "#1f77b4", "circle"), ("R", "#2ca02c", "diamond")):
            g = f[f["frame"].str.startswith(strand)]
            fig.add_trace(go.Scatter(x=g["mid_kb"], y=g["p_virus"], mode="markers", visible=visible,
                                     name=f"frames {strand}1-{strand}3", marker=dict(size=6, color=color,
                                                                                     symbol=symbol, opacity=0.5),
                                     customdata=np.stack([g["chunk"], g["frame"]], axis=-1) if len(g) else None,
                                     hovertemplate="chunk %{customdata[0]} %{customdata[1]}: %{y:.3f}<extra></extra>"))
        fig.add_trace(go.Scatter(x=pos["mid_kb"], y=line_y, mode="lines+markers", name="chunk score (best frame)",
                                 line=dict(color=CALL_COLORS["virus"], width=1.5), marker=dict(size=4),
                                 connectgaps=False, visible=visible, customdata=pos["chunk"],
                                 hovertemplate="chunk %{customdata} at %{x:.2f} kb: %{y:.3f}<extra></extra>"))
        score = "no frame" if pd.isna(rec["score"]) else f"score {rec['score']:.3f}"
        label_title = f"{title}: {rec['sequence_id']} ({rec['length']:,} bp, {score}, call {rec['call']})"
        mask = [False] * (per_record * len(order))
        mask[per_record * i: per_record * (i + 1)] = [True] * per_record
        buttons.append(dict(label=f"{rec['sequence_id']} [{rec['call']}]", method="update",
                            args=[{"visible": mask}, {"title": label_title}]))
    _threshold_line(fig, threshold, axis="y")
    fig.update_yaxes(title="P(virus)", range=[-0.02, 1.02])
    fig.update_xaxes(title="position in the record (kb, chunk midpoints)")
    if len(buttons) > 1:
        fig.update_layout(updatemenus=[dict(buttons=buttons, direction="down", x=1.0, xanchor="right", y=1.02,
                                            yanchor="bottom", showactive=True)])
    fig = _layout(fig, buttons[0]["args"][1]["title"], legend=dict(orientation="h", y=-0.2))
    return fig.update_layout(margin=dict(t=110))


# ------------------------------------------------------------------------------------------- benchmarks
def _unit(table: pd.DataFrame) -> str:
    """What the GPU count counts: GPUs, or processes for a CPU run (``reports.scaling_table``'s
    ``attrs["unit"]``)."""
    return str(table.attrs.get("unit", "GPUs"))


def throughput_vs_gpus(table: pd.DataFrame | None) -> go.Figure:
    """Tokens/s (with the ideal: the 1-GPU rate times N, dashed) and MFU against the number of GPUs, one line
    per label (``reports.scaling_table``: columns ``label, n_gpus, tokens_per_s, mfu``)."""
    title = "Throughput and MFU against GPUs"
    if _is_empty(table) or table["tokens_per_s"].notna().sum() == 0:
        return empty_figure("no throughput measured", title)
    with_mfu = table["mfu"].notna().any()
    if with_mfu:
        fig = make_subplots(rows=1, cols=2, subplot_titles=("ESM-2 tokens/s", "MFU (%)"), horizontal_spacing=0.12)
    else:
        fig = go.Figure()
        title = "Throughput against GPUs (MFU not measured)"
    cell = dict(row=1, col=1) if with_mfu else {}
    for (label, g), color in zip(table.groupby("label", sort=False), PALETTE * 3):
        g = g.sort_values("n_gpus")
        fig.add_trace(go.Scatter(x=g["n_gpus"], y=g["tokens_per_s"], mode="lines+markers", name=label,
                                 legendgroup=label, line=dict(color=color)), **cell)
        one = g.loc[g["n_gpus"] == g["n_gpus"].min()].iloc[0]
        if len(g) > 1 and one["tokens_per_s"] and one["n_gpus"] > 0:
            ideal = one["tokens_per_s"] / one["n_gpus"] * g["n_gpus"]
            fig.add_trace(go.Scatter(x=g["n_gpus"], y=ideal, mode="lines", name=f"{label}: linear", legendgroup=label,
                                     line=dict(color=color, dash="dash", width=1)), **cell)
        if with_mfu and g["mfu"].notna().any():
            fig.add_trace(go.Scatter(x=g["n_gpus"], y=100 * g["mfu"], mode="lines+markers", name=label,
                                     legendgroup=label, showlegend=False, line=dict(color=color)), row=1, col=2)
    fig.update_xaxes(title=_unit(table), tickmode="array", tickvals=sorted(table["n_gpus"].unique()))
    fig.update_yaxes(rangemode="tozero")
    if not with_mfu:
        fig.update_yaxes(title="ESM-2 tokens/s")
    return _layout(fig, title)


def scaling_efficiency(table: pd.DataFrame | None) -> go.Figure:
    """Scaling efficiency (throughput on N GPUs / (N x throughput on 1)) per GPU count, with 100% marked."""
    title = "Scaling efficiency"
    if _is_empty(table) or table["efficiency"].notna().sum() == 0:
        return empty_figure("no scaling efficiency measured", title)
    fig = go.Figure()
    for (label, g), color in zip(table.groupby("label", sort=False), PALETTE * 3):
        g = g.dropna(subset=["efficiency"]).sort_values("n_gpus")
        fig.add_trace(go.Bar(x=[str(n) for n in g["n_gpus"]], y=100 * g["efficiency"],
                             name=label, marker_color=color, text=[f"{100 * e:.1f}%" for e in g["efficiency"]],
                             textposition="outside"))
    _threshold_line(fig, 100.0, axis="y")
    top = max(110.0, float(100 * table["efficiency"].max()) + 10)
    fig.update_yaxes(title="efficiency (%)", range=[0, top])
    fig.update_xaxes(title=_unit(table), type="category")
    fig.update_layout(barmode="group")
    return _layout(fig, title + " (100% = linear)")


def gpu_timeline(log: pd.DataFrame | None, message: str = "no GPU monitoring log") -> go.Figure:
    """GPU utilisation and memory over the run, one line per GPU (``monitor.read_gpu_log``)."""
    title = "GPU utilisation and memory over time"
    if _is_empty(log):
        return empty_figure(message, title)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1,
                        subplot_titles=("utilisation (%)", "memory used (GiB)"))
    for (gpu, g), color in zip(log.groupby("gpu", sort=True), PALETTE * 13):
        for row, column in ((1, "util_pct"), (2, "mem_used_gb")):
            fig.add_trace(go.Scatter(x=g["elapsed_s"], y=g[column], mode="lines", name=f"GPU {gpu}",
                                     legendgroup=str(gpu), showlegend=row == 1, line=dict(color=color, width=1.5)),
                          row=row, col=1)
    fig.update_xaxes(title="seconds since the monitor started", row=2, col=1)
    fig.update_yaxes(range=[0, 105], row=1, col=1)
    fig.update_yaxes(rangemode="tozero", row=2, col=1)
    return _layout(fig, title, height=560)


def stage_times(table: pd.DataFrame | None) -> go.Figure:
    """Median seconds per stage with the range of repetitions (``reports.stage_table``)."""
    title = "Time per stage"
    if _is_empty(table):
        return empty_figure("no stage timed", title)
    fig = go.Figure()
    paths = table["path"].fillna("–")
    for (path, g), color in zip(table.groupby(paths, sort=False), PALETTE):
        lo = (g["seconds"] - g["seconds_min"].fillna(g["seconds"])).clip(lower=0)
        hi = (g["seconds_max"].fillna(g["seconds"]) - g["seconds"]).clip(lower=0)
        fig.add_trace(go.Bar(x=g["seconds"], y=g["stage"], orientation="h", name=f"{path} path", marker_color=color,
                             error_x=dict(type="data", array=hi, arrayminus=lo, symmetric=False),
                             hovertemplate="%{y}: %{x:.4g} s<extra>" + str(path) + "</extra>"))
    fig.update_layout(barmode="stack", showlegend=True)
    fig.update_yaxes(autorange="reversed", categoryorder="array", categoryarray=list(table["stage"]))
    fig.update_xaxes(title="seconds (median of repetitions; bars: min-max)", rangemode="tozero")
    return _layout(fig, title, height=180 + 34 * len(table))


def run_phases(phases: pd.DataFrame | None) -> go.Figure:
    """Where each run's wall time went (``reports.run_phases``: loading models, warm-up, compute, the rest),
    one stacked bar per run."""
    title = "Wall time of each run, by phase"
    if _is_empty(phases):
        return empty_figure("no wall time per phase in this result", title)
    parts = [c for c in phases.columns if c not in ("stage", "n_gpus", "wall")]
    fig = go.Figure()
    for part, color in zip(parts, PALETTE):
        fig.add_trace(go.Bar(y=phases["stage"], x=phases[part], name=part, orientation="h", marker_color=color,
                             hovertemplate="%{y}: %{x:.2f} s " + part + "<extra></extra>"))
    fig.update_layout(barmode="stack")
    fig.update_xaxes(title="seconds")
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, title, height=180 + 34 * len(phases))


def hours_projection(projection: pd.DataFrame | None, sample_esm_tokens: float | None = None) -> go.Figure:
    """Hours per sample against GPUs: the projection as a dashed line, measured GPU counts as points
    (``reports.project_hours``)."""
    title = "Projected hours per sample"
    if sample_esm_tokens:
        title += f" ({sample_esm_tokens / 1e6:,.2f}M ESM-2 tokens)"
    if _is_empty(projection) or projection["hours"].notna().sum() == 0:
        return empty_figure("no throughput to project from", title)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=projection["n_gpus"], y=projection["hours"], mode="lines", name="projected",
                             line=dict(color=PALETTE[0], dash="dash")))
    measured = projection[projection["measured"]]
    fig.add_trace(go.Scatter(x=measured["n_gpus"], y=measured["hours"], mode="markers", name="measured",
                             marker=dict(size=10, color=PALETTE[3])))
    fig.update_xaxes(title=_unit(projection), tickmode="array", tickvals=list(projection["n_gpus"]))
    fig.update_yaxes(title="hours per sample", rangemode="tozero")
    return _layout(fig, title)


# ------------------------------------------------------------------------------------------ equivalence
def error_distribution(errors: pd.DataFrame | None, result: dict | None = None) -> go.Figure:
    """Relative error of the optimized path against the reference, per model: the distribution over frames
    (``equivalence_errors.parquet``: ``model, relative_error`` and, with several configurations, ``variant``)
    as boxes on a log axis, one group per configuration; without it, the result's one figure per model
    (``relative_error``) as bars. ``result`` may also be that ``relative_error`` dict itself."""
    title = "Relative error against the reference path (fp32, unpacked)"
    if not _is_empty(errors):
        positive = errors["relative_error"][errors["relative_error"] > 0]
        floor = float(positive.min()) / 2 if len(positive) else 1e-12  # zero errors cannot sit on a log axis
        fig = go.Figure()
        for (model, g), color in zip(errors.groupby("model", sort=False), PALETTE * 3):
            values = np.maximum(g["relative_error"].to_numpy(dtype=np.float64), floor)
            x = g["variant"].astype(str) if "variant" in g else None
            fig.add_trace(go.Box(x=x, y=values, name=model, marker_color=color, boxpoints="outliers"))
        zeros = int((errors["relative_error"] == 0).sum())
        fig.update_yaxes(type="log", title="relative error per frame" + (f" (0 drawn at {floor:.1e})" if zeros else ""))
        fig.update_layout(boxmode="group")
        return _layout(fig, title + ", per frame")
    summary = result.get("relative_error", result) if isinstance(result, dict) else None
    summary = {k: v for k, v in (summary or {}).items() if isinstance(v, (int, float))} if isinstance(summary, dict) \
        else {}
    if not summary:
        return empty_figure("no relative error measured", title)
    fig = go.Figure(go.Bar(x=list(summary), y=[max(v, 1e-12) for v in summary.values()],
                           marker_color=PALETTE[0], text=[f"{v:.2e}" for v in summary.values()],
                           textposition="outside"))
    fig.update_yaxes(type="log", title="relative error")
    return _layout(fig, title + ", per model")


def call_agreement(table: pd.DataFrame | None) -> go.Figure:
    """Share of calls that agree with the reference path, per frame and per chunk, for each configuration
    (``reports.switch_table``: columns ``configuration, call_agreement_frame, call_agreement_chunk``)."""
    title = "Call agreement with the reference path"
    cols = [c for c in ("call_agreement_frame", "call_agreement_chunk") if not _is_empty(table) and c in table]
    if _is_empty(table) or not cols or table[cols].notna().sum().sum() == 0:
        return empty_figure("no call agreement measured", title)
    fig = go.Figure()
    for col, color in zip(cols, PALETTE):
        values = 100 * table[col]
        fig.add_trace(go.Bar(x=table["configuration"], y=values, name=col.rsplit("_", 1)[-1], marker_color=color,
                             text=[f"{v:.2f}%" if pd.notna(v) else "" for v in values], textposition="outside"))
    low = float(np.nanmin(100 * table[cols].to_numpy(dtype=np.float64)))
    fig.update_yaxes(title="agreement (%)", range=[max(0.0, min(low - 2.0, 95.0)), 101])
    fig.update_layout(barmode="group")
    return _layout(fig, title)


def switch_errors(table: pd.DataFrame | None) -> go.Figure:
    """Relative error per model for each configuration (``reports.switch_table``'s ``relative_error.*``)."""
    title = "Relative error per optimization switch"
    cols = [] if _is_empty(table) else [c for c in table.columns if c.startswith("relative_error.")]
    if not cols or table[cols].notna().sum().sum() == 0:
        return empty_figure("no per-switch errors measured", title)
    fig = go.Figure()
    for col, color in zip(cols, PALETTE * 3):
        values = table[col].astype(float)
        fig.add_trace(go.Bar(x=table["configuration"], y=values.clip(lower=1e-12), name=col.split(".", 1)[1],
                             marker_color=color))
    fig.update_yaxes(type="log", title="relative error")
    fig.update_layout(barmode="group")
    return _layout(fig, title)


# ------------------------------------------------------------------------------------------- regression
def regression_trends(history: pd.DataFrame | None, figure: str = "tokens_per_s",
                      flagged: pd.DataFrame | None = None) -> go.Figure:
    """One benchmark figure over time (``regression.load_history`` rows with this ``figure``), one line per
    suite, stage and hardware; comparisons flagged as regressions (``reports.regression_table`` rows, columns
    ``timestamp, series, current``) marked with a red cross."""
    title = f"History of {figure}"
    df = None if _is_empty(history) else history[history["figure"] == figure]
    if _is_empty(df):
        return empty_figure(f"no history of {figure}", title)
    fig = go.Figure()
    for (series, g), color in zip(df.groupby("series", sort=True), PALETTE * 10):
        g = g.sort_values("timestamp")
        fig.add_trace(go.Scatter(x=g["timestamp"], y=g["value"], mode="lines+markers", name=series,
                                 line=dict(color=color), customdata=g["git_commit"].str[:10],
                                 hovertemplate="%{x}: %{y:.4g} (commit %{customdata})<extra>" + series + "</extra>"))
    if not _is_empty(flagged):
        bad = flagged[(flagged["metric"] == figure) & (flagged["verdict"] == "REGRESSION")]
        if len(bad):
            fig.add_trace(go.Scatter(x=bad["timestamp"], y=bad["current"], mode="markers", name="regression (>10%)",
                                     marker=dict(symbol="x", size=13, color="#d62728", line=dict(width=2))))
    fig.update_xaxes(title="time of the run (UTC)")
    fig.update_yaxes(title=figure, rangemode="tozero" if figure != "relative_error" else None,
                     type="log" if figure.startswith("relative_error") else None)
    return _layout(fig, title, legend=dict(orientation="h", y=-0.25))


# ------------------------------------------------------------------------------- matplotlib conversion
_DASH = {"dash": "--", "dot": ":", "dashdot": "-.", "longdash": "--", "longdashdot": "-.", "solid": "-"}
_SYMBOL = {"circle": "o", "square": "s", "diamond": "D", "x": "x", "cross": "P", "triangle-up": "^",
           "triangle-down": "v", "star": "*", "line-ns-open": "|", "line-ew-open": "_"}
_MARGIN_PX = dict(left=75, right=20, bottom=58, top=58)  # around the plotting area, in pixels at PNG_DPI
_LEGEND_PX = 230
_CHAR_PX = 6.3  # width of a tick-label character at 8 pt, with room to spare


def _plain_text(text) -> str:
    if not text:
        return ""
    text = re.sub(r"<br\s*/?>", "\n", str(text))
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def _values(v) -> np.ndarray | None:
    if v is None:
        return None
    if isinstance(v, dict) and "bdata" in v:  # plotly's typed-array encoding
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
    return np.asarray(v)


def _looks_like_dates(values: np.ndarray) -> bool:
    if np.issubdtype(values.dtype, np.datetime64):
        return True
    if values.dtype == object and len(values):
        first = next((x for x in values if x is not None), None)
        if isinstance(first, (pd.Timestamp, np.datetime64)) or hasattr(first, "isoformat"):
            return True
        if isinstance(first, str) and re.match(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2})?", first):
            return True
    return False


def _is_categorical(values: np.ndarray) -> bool:
    return values.dtype.kind in "OUS" and not _looks_like_dates(values)


def _to_dates(values: np.ndarray) -> np.ndarray:
    ts = pd.to_datetime(pd.Series(values), utc=True, errors="coerce")
    return ts.dt.tz_convert(None).to_numpy()


def _color(value, default):
    if value is None or isinstance(value, (list, tuple, np.ndarray)):
        return default
    value = str(value)
    m = re.match(r"rgba?\(([^)]+)\)", value)
    if m:
        parts = [float(p) for p in m.group(1).split(",")]
        rgb = [p / 255 for p in parts[:3]]
        return tuple(rgb + ([parts[3]] if len(parts) > 3 else []))
    return value


class _AxisMap:
    """Plotly axis names (``x``, ``x2``, ``y3``...) -> matplotlib Axes, with category positions per axis."""

    def __init__(self, mfig, fig: go.Figure, legend: bool, size: tuple[int, int], label_chars: int = 0,
                 x_labels: list[str] = ()):
        self.mfig, self.fig = mfig, fig
        self.layout = fig.layout.to_plotly_json()
        w, h = size
        left_px = max(_MARGIN_PX["left"], 30 + _CHAR_PX * min(label_chars, 29))
        right_px = _MARGIN_PX["right"] + (_LEGEND_PX if legend else 0)
        # x category labels that do not fit side by side are slanted, and the bottom margin makes room for them
        self.slant_x = sum(min(len(s), 28) + 2 for s in x_labels) * _CHAR_PX > 0.9 * (w - left_px - right_px)
        bottom_px = _MARGIN_PX["bottom"] + (0.5 * _CHAR_PX * max(min(len(s), 28) for s in x_labels)
                                            if self.slant_x else 0)
        left, right = left_px / w, right_px / w
        bottom, top = bottom_px / h, _MARGIN_PX["top"] / h
        self.area = (left, bottom, max(0.2, 1 - left - right), max(0.2, 1 - bottom - top))
        self.axes: dict[tuple[str, str], object] = {}
        self.categories: dict[str, dict] = {}
        self.date_axes: set[str] = set()

    def axis_layout(self, name: str) -> dict:
        key = name[0] + "axis" + name[1:]
        return self.layout.get(key, {}) or {}

    def get(self, xname: str, yname: str):
        key = (xname, yname)
        if key in self.axes:
            return self.axes[key]
        ylay = self.axis_layout(yname)
        overlay = ylay.get("overlaying")
        if overlay and overlay != yname:
            base = self.get(xname, overlay)
            ax = base.twinx()
        else:
            x0, x1 = self.axis_layout(xname).get("domain", [0, 1])
            y0, y1 = ylay.get("domain", [0, 1])
            L, B, W, H = self.area
            ax = self.mfig.add_axes([L + x0 * W, B + y0 * H, max((x1 - x0) * W, 0.01), max((y1 - y0) * H, 0.01)])
            ax.grid(True, color="#e6e6e6", linewidth=0.8)
            ax.set_axisbelow(True)
            for side in ("top", "right"):
                ax.spines[side].set_visible(False)
        self.axes[key] = ax
        return ax

    def positions(self, axis: str, values: np.ndarray) -> np.ndarray:
        """Numeric positions of category values on ``axis`` (first appearance order, as plotly)."""
        cats = self.categories.setdefault(axis, {})
        for v in values:
            cats.setdefault(str(v), len(cats))
        return np.array([cats[str(v)] for v in values], dtype=np.float64)

    def coords(self, axis: str, values) -> np.ndarray | None:
        values = _values(values)
        if values is None:
            return None
        if _looks_like_dates(values):
            self.date_axes.add(axis)
            return _to_dates(values)
        if _is_categorical(values):
            return self.positions(axis, values)
        return values.astype(np.float64)

    def any_ax(self, name: str):
        for (x, y), ax in self.axes.items():
            if name in (x, y):
                return ax
        return None


def _trace_axes(trace) -> tuple[str, str]:
    return getattr(trace, "xaxis", None) or "x", getattr(trace, "yaxis", None) or "y"


def _visible(trace) -> bool:
    return trace.visible in (None, True)


def _legend_entries(fig: go.Figure) -> int:
    return sum(1 for t in fig.data if _visible(t) and t.name and t.showlegend is not False)


def _draw_scatter(amap: _AxisMap, trace, color) -> None:
    xn, yn = _trace_axes(trace)
    ax = amap.get(xn, yn)
    x, y = amap.coords(xn, trace.x), amap.coords(yn, trace.y)
    if y is None:
        return
    if x is None:
        x = np.arange(len(y), dtype=np.float64)
    mode = trace.mode or ("lines+markers" if len(y) < 20 else "lines")
    line, marker = trace.line, trace.marker
    color = _color(line.color if "lines" in mode else marker.color, None) or _color(marker.color, None) or color
    label = trace.name if trace.showlegend is not False else None
    alpha = trace.opacity if trace.opacity is not None else (marker.opacity if "lines" not in mode and
                                                             isinstance(marker.opacity, (int, float)) else None)
    kw = dict(color=color, alpha=alpha, label=label)
    if "lines" in mode:
        kw.update(linestyle=_DASH.get(line.dash or "solid", "-"), linewidth=(line.width or 2) * 0.75)
    else:
        kw.update(linestyle="none")
    if "markers" in mode:
        symbol = marker.symbol if isinstance(marker.symbol, str) else "circle"
        kw.update(marker=_SYMBOL.get(symbol, "o"), markersize=max(2.0, (marker.size if isinstance(
            marker.size, (int, float)) else 6) * 0.8))
        if symbol == "x":
            kw.update(markeredgewidth=2)
    err = trace.error_y
    if err is not None and err.array is not None and err.visible is not False:
        up = _values(err.array).astype(float)
        down = _values(err.arrayminus).astype(float) if err.arrayminus is not None else up
        ax.errorbar(x, y, yerr=[down, up], capsize=3, **kw)
    else:
        ax.plot(x, y, **kw)
    if trace.fill in ("tozeroy",):
        ax.fill_between(x, 0, y, color=color, alpha=0.2)


def _draw_bars(amap: _AxisMap, traces: list, barmode: str) -> None:
    """Bar traces sharing one pair of axes, grouped, stacked or overlaid as the layout says."""
    n = len(traces)
    stack: dict[tuple, tuple] = {}
    for i, (trace, color) in enumerate(traces):
        xn, yn = _trace_axes(trace)
        ax = amap.get(xn, yn)
        horizontal = trace.orientation == "h"
        cat_axis, val_axis = (yn, xn) if horizontal else (xn, yn)
        cats = _values(trace.y if horizontal else trace.x)
        vals = _values(trace.x if horizontal else trace.y)
        if vals is None:
            continue
        vals = vals.astype(np.float64)
        if cats is None:
            pos = np.arange(len(vals), dtype=np.float64)
        elif _is_categorical(cats):
            pos = amap.positions(cat_axis, cats)
        else:
            pos = cats.astype(np.float64)
        width = 0.8
        if barmode == "group" and n > 1:
            width = 0.8 / n
            pos = pos - 0.4 + width * (i + 0.5)
        base = np.zeros(len(vals))
        if barmode in ("stack", "relative"):
            key = (xn, yn)
            prev = stack.get(key)
            lookup = {} if prev is None else dict(zip(prev[0], prev[1]))
            base = np.array([lookup.get(p, 0.0) for p in pos])
            totals = dict(lookup)
            for p, b, v in zip(pos, base, np.nan_to_num(vals)):
                totals[p] = b + v
            stack[key] = (np.array(list(totals)), np.array(list(totals.values())))
        mc = trace.marker.color
        colors = [_color(c, color) for c in mc] if isinstance(mc, (list, tuple, np.ndarray)) else _color(mc, color)
        alpha = trace.opacity if trace.opacity is not None else (0.7 if barmode == "overlay" and n > 1 else None)
        err_trace = trace.error_x if horizontal else trace.error_y
        err = None
        if err_trace is not None and err_trace.array is not None and err_trace.visible is not False:
            up = _values(err_trace.array).astype(float)
            down = _values(err_trace.arrayminus).astype(float) if err_trace.arrayminus is not None else up
            err = [down, up]
        label = trace.name if trace.showlegend is not False else None
        if horizontal:
            ax.barh(pos, vals, height=width, left=base, color=colors, alpha=alpha, label=label,
                    xerr=err, capsize=3 if err else 0)
        else:
            ax.bar(pos, vals, width=width, bottom=base, color=colors, alpha=alpha, label=label,
                   yerr=err, capsize=3 if err else 0)
        if trace.text is not None and trace.textposition == "outside":
            for p, v, b, t in zip(pos, vals, base, trace.text):
                if t and np.isfinite(v):
                    if horizontal:
                        ax.annotate(str(t), (b + v, p), xytext=(3, 0), textcoords="offset points", va="center",
                                    fontsize=7)
                    else:
                        ax.annotate(str(t), (p, b + v), xytext=(0, 2), textcoords="offset points", ha="center",
                                    fontsize=7)


def _draw_histogram(amap: _AxisMap, trace, color, overlay: bool) -> None:
    xn, yn = _trace_axes(trace)
    ax = amap.get(xn, yn)
    values = _values(trace.x)
    if values is None:
        return
    values = values.astype(np.float64)
    values = values[np.isfinite(values)]
    xb = trace.xbins
    if xb is not None and xb.size:
        start = xb.start if xb.start is not None else values.min(initial=0.0)
        end = xb.end if xb.end is not None else values.max(initial=1.0)
        bins = np.arange(start, end + xb.size * 0.5, xb.size)
    elif trace.nbinsx:
        bins = int(trace.nbinsx)
    else:
        bins = "auto"
    norm = trace.histnorm or ""
    weights = None
    if len(values) and norm in ("percent", "probability"):
        weights = np.full(len(values), (100.0 if norm == "percent" else 1.0) / len(values))
    alpha = trace.opacity if trace.opacity is not None else (0.6 if overlay else None)
    ax.hist(values, bins=bins, weights=weights, density=norm == "probability density", color=_color(
        trace.marker.color, color), alpha=alpha, label=trace.name if trace.showlegend is not False else None,
        histtype="stepfilled", edgecolor="white", linewidth=0.3)


def _draw_boxes(amap: _AxisMap, traces: list, boxmode: str) -> None:
    """Box traces: one box per trace placed by its name, or, for a vertical box with ``x``, one box per
    category of ``x`` (side by side per trace when ``boxmode`` is ``group``)."""
    n = len(traces)
    for i, (trace, color) in enumerate(traces):
        xn, yn = _trace_axes(trace)
        ax = amap.get(xn, yn)
        horizontal = trace.orientation == "h" or (trace.y is None and trace.x is not None)
        values = _values(trace.x if horizontal else trace.y)
        if values is None:
            continue
        values = values.astype(np.float64)
        cats = None if horizontal else _values(trace.x)
        if cats is not None and len(cats) == len(values):
            labels = pd.unique(cats.astype(str))
            groups = [values[cats.astype(str) == c] for c in labels]
            pos = amap.positions(xn, labels)
            width = 0.8 / n if boxmode == "group" and n > 1 else 0.5
            if boxmode == "group" and n > 1:
                pos = pos - 0.4 + width * (i + 0.5)
        else:
            groups = [values]
            pos = amap.positions(yn if horizontal else xn, [trace.name or f"trace {i}"])
            width = 0.5
        groups = [g[np.isfinite(g)] for g in groups]
        c = _color(trace.marker.color, color)
        box = ax.boxplot(groups, positions=pos, widths=width * 0.9,
                         orientation="horizontal" if horizontal else "vertical", patch_artist=True,
                         showfliers=trace.boxpoints is not False, manage_ticks=False,
                         boxprops=dict(facecolor=c, alpha=0.5, edgecolor=c), medianprops=dict(color=c, linewidth=2),
                         whiskerprops=dict(color=c), capprops=dict(color=c),
                         flierprops=dict(marker="o", markersize=3, markerfacecolor=c, markeredgecolor=c, alpha=0.6))
        if trace.name and trace.showlegend is not False and cats is not None:
            box["boxes"][0].set_label(trace.name)


def _style_axes(amap: _AxisMap) -> None:
    import matplotlib.dates as mdates
    from matplotlib.ticker import FuncFormatter

    for (xn, yn), ax in amap.axes.items():
        for name, which in ((xn, "x"), (yn, "y")):
            lay = amap.axis_layout(name)
            if lay.get("visible") is False:
                (ax.xaxis if which == "x" else ax.yaxis).set_visible(False)
                ax.spines["bottom" if which == "x" else "left"].set_visible(False)
                ax.grid(False)
                continue
            title = (lay.get("title") or {}).get("text")
            if title:
                (ax.set_xlabel if which == "x" else ax.set_ylabel)(_plain_text(title), fontsize=9)
            log = lay.get("type") == "log"
            if log:
                (ax.set_xscale if which == "x" else ax.set_yscale)("log")
            rng = lay.get("range")
            if rng and None not in rng:
                lo, hi = (10 ** rng[0], 10 ** rng[1]) if log else rng
                (ax.set_xlim if which == "x" else ax.set_ylim)(lo, hi)
            elif lay.get("rangemode") == "tozero" and not log:
                if which == "y":
                    ax.set_ylim(bottom=min(0, ax.get_ylim()[0]))
                else:
                    ax.set_xlim(left=min(0, ax.get_xlim()[0]))
            if lay.get("autorange") == "reversed":
                (ax.invert_xaxis if which == "x" else ax.invert_yaxis)()
            cats = amap.categories.get(name)
            if cats:
                setter = ax.set_xticks if which == "x" else ax.set_yticks
                labels = [c if len(c) <= 28 else c[:26] + "…" for c in cats]
                slanted = which == "x" and amap.slant_x
                setter(list(cats.values()), labels, fontsize=8, rotation=30 if slanted else 0,
                       ha="right" if slanted else ("center" if which == "x" else "right"))
            elif lay.get("tickvals") is not None and lay.get("tickmode") == "array":
                (ax.set_xticks if which == "x" else ax.set_yticks)(list(lay["tickvals"]))
            if name in amap.date_axes and which == "x":
                ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
            if lay.get("ticksuffix"):
                suffix = lay["ticksuffix"]
                (ax.xaxis if which == "x" else ax.yaxis).set_major_formatter(FuncFormatter(
                    lambda v, _p, s=suffix: f"{v:g}{s}"))
        ax.tick_params(which="both", labelsize=8)
        for name, which in ((xn, "x"), (yn, "y")):
            cats = amap.categories.get(name)
            if cats and len(cats) < 3 and not amap.axis_layout(name).get("range"):  # a lone bar: not axis-wide
                lo, hi = -1.5 + 0.5 * len(cats), len(cats) + 0.5 - 0.5 * len(cats)
                (ax.set_xlim if which == "x" else ax.set_ylim)((lo, hi) if not (
                    which == "y" and amap.axis_layout(name).get("autorange") == "reversed") else (hi, lo))
        # make_subplots with shared x axes: only the bottom row keeps its tick labels
        if amap.axis_layout(xn).get("matches") or amap.axis_layout(xn).get("showticklabels") is False:
            ax.tick_params(labelbottom=False)


def _coordinate(amap: _AxisMap, default, ref: str | None, which: str, values: list):
    """Transform and values of one coordinate of a shape: data, axes fraction (``x domain``) or paper
    (a fraction of the plotting area, turned into a fraction of the figure)."""
    if ref and ref.endswith(" domain"):
        target = amap.any_ax(ref.split()[0]) or default
        return target.transAxes, values, target
    if ref in (None, "paper"):
        return amap.mfig.transFigure, [_paper(amap, v, v)[0 if which == "x" else 1] for v in values], None
    target = amap.any_ax(ref) or default
    return target.transData, values, target


def _paper(amap: _AxisMap, x: float, y: float) -> tuple[float, float]:
    L, B, W, H = amap.area
    return L + x * W, B + y * H


def _draw_shapes(amap: _AxisMap) -> None:
    from matplotlib import transforms
    from matplotlib.lines import Line2D

    default = next(iter(amap.axes.values()), None)
    for shape in amap.layout.get("shapes", []) or []:
        if shape.get("type", "line") != "line" or default is None:
            continue
        tx, xs, axx = _coordinate(amap, default, shape.get("xref"), "x", [shape.get("x0"), shape.get("x1")])
        ty, ys, axy = _coordinate(amap, default, shape.get("yref"), "y", [shape.get("y0"), shape.get("y1")])
        ax = axx or axy or default
        line = shape.get("line", {}) or {}
        ax.add_line(Line2D(xs, ys, transform=transforms.blended_transform_factory(tx, ty),
                           color=_color(line.get("color"), "#444"),
                           linestyle=_DASH.get(line.get("dash") or "solid", "-"),
                           linewidth=(line.get("width") or 2) * 0.75, zorder=5))


def _draw_annotations(amap: _AxisMap) -> None:
    default = next(iter(amap.axes.values()), None)
    for note in amap.layout.get("annotations", []) or []:
        text = _plain_text(note.get("text"))
        if not text:
            continue
        size = ((note.get("font") or {}).get("size") or 12) * 0.75
        color = (note.get("font") or {}).get("color") or "#333"
        xref, yref = note.get("xref", "paper"), note.get("yref", "paper")
        if xref == "paper" and yref == "paper" or default is None:
            x, y = _paper(amap, note.get("x", 0.5), note.get("y", 0.5))
            va = {"bottom": "bottom", "top": "top"}.get(note.get("yanchor"), "center")
            amap.mfig.text(x, y, text, ha="center", va=va, fontsize=size, color=color)
        else:
            ax = amap.any_ax(xref.split()[0]) or default
            ax.annotate(text, (note.get("x", 0), note.get("y", 0)), fontsize=size, color=color,
                        xycoords="axes fraction" if xref.endswith("domain") else "data")


def _x_labels(fig: go.Figure) -> list[str]:
    """Category labels on the x axis (vertical bars and boxes), to decide whether they must be slanted."""
    labels: dict[str, None] = {}
    for trace in fig.data:
        if not _visible(trace) or trace.type not in ("bar", "box") or trace.orientation == "h":
            continue
        values = _values(trace.x)
        if values is None and trace.type == "box":
            values = np.asarray([trace.name or ""])
        if values is not None and _is_categorical(values):
            labels.update(dict.fromkeys(str(v) for v in values))
    return list(labels)


def _y_label_chars(fig: go.Figure) -> int:
    """Length of the longest category label on a y axis (horizontal bars and boxes), to size the margin."""
    longest = 0
    for trace in fig.data:
        if not _visible(trace) or trace.type not in ("bar", "box") or trace.orientation != "h":
            continue
        values = _values(trace.y) if trace.type == "bar" else np.asarray([trace.name or ""])
        if values is not None and _is_categorical(values):
            longest = max(longest, max((len(str(v)) for v in values), default=0))
    return longest


def to_matplotlib(fig: go.Figure | dict, width: int | None = None, height: int | None = None):
    """The figure drawn with matplotlib (a ``matplotlib.figure.Figure`` on the Agg canvas, no pyplot state).

    Supported: scatter (lines, markers, error bars), bar (vertical/horizontal; group, stack, overlay; error
    bars), histogram (xbins, nbinsx, histnorm), box (one box per trace, placed by name); subplots and
    overlaying y axes; log, reversed, ranged, categorical and date axes; line shapes (``add_hline``,
    ``add_vline``) and text annotations (subplot titles, messages). Traces hidden behind a menu are left out
    (only what plotly shows first is drawn). Other trace types raise ``ValueError``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not isinstance(fig, go.Figure):
        fig = go.Figure(fig)
    w = width or fig.layout.width or DEFAULT_SIZE[0]
    h = height or fig.layout.height or DEFAULT_SIZE[1]
    mfig = Figure(figsize=(w / PNG_DPI, h / PNG_DPI), dpi=PNG_DPI)
    FigureCanvasAgg(mfig)
    n_legend = _legend_entries(fig)
    show_legend = fig.layout.showlegend if fig.layout.showlegend is not None else n_legend > 1
    amap = _AxisMap(mfig, fig, legend=bool(show_legend and n_legend), size=(w, h),
                    label_chars=_y_label_chars(fig), x_labels=_x_labels(fig))
    barmode = fig.layout.barmode or "group"
    traces = [(t, PALETTE[i % len(PALETTE)]) for i, t in enumerate(fig.data) if _visible(t)]
    bars: dict[tuple, list] = {}
    boxes: list = []
    n_hist = sum(1 for t, _ in traces if t.type == "histogram")
    for trace, color in traces:
        kind = trace.type
        if kind in ("scatter", "scattergl"):
            _draw_scatter(amap, trace, color)
        elif kind == "bar":
            bars.setdefault(_trace_axes(trace), []).append((trace, color))
        elif kind == "histogram":
            _draw_histogram(amap, trace, color, overlay=fig.layout.barmode == "overlay" or n_hist > 1)
        elif kind == "box":
            boxes.append((trace, color))
        else:
            raise ValueError(f"cannot draw a plotly {kind!r} trace with matplotlib")
    for group in bars.values():
        _draw_bars(amap, group, barmode)
    _draw_boxes(amap, boxes, fig.layout.boxmode or "overlay")
    for key, lay in amap.layout.items():  # subplots without traces still get their (empty) axes
        anchor = (lay or {}).get("anchor") if re.fullmatch(r"xaxis\d*", key) else None
        if anchor and anchor.startswith("y"):
            amap.get("x" + key[5:], anchor)
    if not amap.axes:  # a figure without traces (a message): one bare plotting area
        amap.get("x", "y")
    _style_axes(amap)
    _draw_shapes(amap)
    _draw_annotations(amap)
    title = fig.layout.title.text if fig.layout.title else None
    if title:
        mfig.suptitle(_plain_text(title), x=amap.area[0], ha="left", y=1 - 8 / h, va="top", fontsize=11)
    if show_legend and n_legend:
        handles, labels, seen = [], [], set()
        for ax in amap.axes.values():
            for hnd, lab in zip(*ax.get_legend_handles_labels()):
                if lab and not lab.startswith("_") and lab not in seen:
                    seen.add(lab)
                    handles.append(hnd)
                    labels.append(lab)
        if handles:
            L, B, W, H = amap.area
            mfig.legend(handles, [lab if len(lab) <= 36 else lab[:34] + "…" for lab in labels], loc="upper left",
                        bbox_to_anchor=(L + W + 0.01, B + H), fontsize=7, frameon=False)
    return mfig


def to_png(fig: go.Figure | dict, path=None, width: int | None = None, height: int | None = None,
           scale: float = PNG_SCALE) -> bytes:
    """PNG bytes of the figure drawn by :func:`to_matplotlib`; written to ``path`` as well when given."""
    mfig = to_matplotlib(fig, width, height)
    buf = io.BytesIO()
    mfig.savefig(buf, format="png", dpi=PNG_DPI * scale)
    data = buf.getvalue()
    if path is not None:
        with open(path, "wb") as fh:
            fh.write(data)
    return data


# ----------------------------------------------------------------------------------- notebook renderer
def plotlyjs_bundle() -> dict:
    """Display bundle that loads plotly.js inline (offline), once per page. The script hides an AMD
    ``define`` while plotly.js loads (nbconvert's page loads require.js), so it always sets
    ``window.Plotly``. ``text/markdown`` is empty: markdown pages get nothing."""
    from plotly.offline import get_plotlyjs

    script = ("<script type=\"text/javascript\">window.PlotlyConfig = {MathJaxConfig: 'local'};"
              "window.__vnpDefine = window.define; window.define = undefined;</script>\n"
              f"<script type=\"text/javascript\">{get_plotlyjs()}</script>\n"
              "<script type=\"text/javascript\">window.define = window.__vnpDefine;</script>")
    return {"text/html": script, "text/markdown": "", "text/plain": ""}


class ReportRenderer(MimetypeRenderer):
    """plotly renderer of the notebooks: ``text/html`` (the figure's div, plotly.js not included: see
    :func:`setup_notebook`), ``image/png`` (matplotlib, for markdown) and plotly's JSON (JupyterLab)."""

    def __init__(self, png: bool = True, config: dict | None = None):
        self.png = png
        self.config = {"displaylogo": False, "responsive": True, **(config or {})}

    def to_mimebundle(self, fig_dict):
        fig_json = pio.to_json(fig_dict, validate=False)
        div = pio.to_html(fig_dict, config=self.config, include_plotlyjs=False, include_mathjax=False,
                          full_html=False, default_width="100%",
                          default_height=(fig_dict.get("layout", {}) or {}).get("height") or DEFAULT_SIZE[1],
                          validate=False)
        title = _plain_text(((fig_dict.get("layout") or {}).get("title") or {}).get("text")) or "figure"
        bundle = {"text/html": div,
                  "application/vnd.plotly.v1+json": {**json.loads(fig_json), "config": self.config},
                  "text/plain": f"<{title}>"}
        if self.png:
            bundle["image/png"] = base64.b64encode(to_png(go.Figure(fig_dict, skip_invalid=True))).decode("ascii")
        return bundle


def setup_notebook(png: bool = True) -> None:
    """Make ``virnucpro`` the default plotly renderer and load plotly.js into the page (call once, in the
    first code cell). A figure left as a cell's last value then shows interactively in JupyterLab and in
    the HTML report, and as a PNG in the markdown report."""
    from IPython.display import display

    pio.renderers[RENDERER] = ReportRenderer(png=png)
    pio.renderers.default = RENDERER
    display(plotlyjs_bundle(), raw=True)
