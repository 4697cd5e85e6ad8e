"""Figures of benchmark results: scaling, GPU monitoring, stages, hours per sample (``tables``), equivalence
(``tables.switch_table``, ``tables.equivalence_errors``) and the history of results (``history``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .. import tables
from ..figure import (PALETTE, Figure, colors, empty_figure, grouped_bars, is_empty, mpl_threshold_line, style,
                      threshold_line, titled)


def _caveat(table) -> str:
    return table.attrs.get("caveat", "") if isinstance(table, pd.DataFrame) else ""


def _unit(table: pd.DataFrame) -> str:
    return str(table.attrs.get("unit", "GPUs"))


def throughput_vs_gpus(table: pd.DataFrame | None) -> Figure:
    """ESM-2 tokens/s (with the linear ideal from the smallest count, dashed) and MFU against the number of
    GPUs, one line per label (``tables.scaling_table``)."""
    title = titled("Throughput and MFU against GPUs", _caveat(table))
    if is_empty(table) or table["tokens_per_s"].notna().sum() == 0:
        return empty_figure("no throughput measured", title)
    with_mfu = bool(table["mfu"].notna().any())
    if not with_mfu:
        title = titled("Throughput against the process count (MFU not measured)", _caveat(table))
    groups = []
    for label, g in table.groupby("label", sort=False):
        g = g.sort_values("n_gpus")
        first = g.iloc[0]
        ideal = first["tokens_per_s"] / first["n_gpus"] * g["n_gpus"] if len(g) > 1 and first["n_gpus"] > 0 else None
        groups.append((label, g, ideal))
    fig = make_subplots(rows=1, cols=2 if with_mfu else 1, horizontal_spacing=0.12,
                        subplot_titles=("ESM-2 tokens/s", "MFU (%)") if with_mfu else None)
    for (label, g, ideal), color in zip(groups, colors(len(groups))):
        fig.add_trace(go.Scatter(x=g["n_gpus"], y=g["tokens_per_s"], mode="lines+markers", name=label,
                                 legendgroup=label, line=dict(color=color)), row=1, col=1)
        if ideal is not None:
            fig.add_trace(go.Scatter(x=g["n_gpus"], y=ideal, mode="lines", name=f"{label}: linear", legendgroup=label,
                                     line=dict(color=color, dash="dash", width=1)), row=1, col=1)
        if with_mfu:
            fig.add_trace(go.Scatter(x=g["n_gpus"], y=100 * g["mfu"], mode="lines+markers", name=label,
                                     legendgroup=label, showlegend=False, line=dict(color=color)), row=1, col=2)
    ticks = sorted(table["n_gpus"].unique())
    fig.update_xaxes(title=_unit(table), tickmode="array", tickvals=ticks)
    fig.update_yaxes(rangemode="tozero")

    def draw(mfig):
        axes = mfig.subplots(1, 2 if with_mfu else 1, squeeze=False).ravel()
        for (label, g, ideal), color in zip(groups, colors(len(groups))):
            axes[0].plot(g["n_gpus"], g["tokens_per_s"], "o-", color=color, label=label)
            if ideal is not None:
                axes[0].plot(g["n_gpus"], ideal, "--", color=color, linewidth=1, label=f"{label}: linear")
            if with_mfu:
                axes[1].plot(g["n_gpus"], 100 * g["mfu"], "o-", color=color)
        for ax, what in zip(axes, ("ESM-2 tokens/s", "MFU (%)")):
            ax.set_xticks(ticks)
            ax.set_ylim(bottom=0)
            style(ax, _unit(table), what)
        axes[0].legend(fontsize=7, frameon=False, loc="lower right")

    return Figure(fig, draw, title)


def scaling_efficiency(table: pd.DataFrame | None) -> Figure:
    """Scaling efficiency (rate on N / (N x the per-GPU rate of the smallest count)) per count, 100% dashed."""
    title = titled("Scaling efficiency (100% = linear)", _caveat(table))
    if is_empty(table) or table["efficiency"].notna().sum() == 0:
        return empty_figure("no scaling efficiency measured", title)
    groups = [(label, g.dropna(subset=["efficiency"]).sort_values("n_gpus"))
              for label, g in table.groupby("label", sort=False)]
    counts = [str(n) for n in sorted(table["n_gpus"].unique())]
    top = max(110.0, float(100 * table["efficiency"].max()) + 10)
    fig = go.Figure([go.Bar(x=[str(n) for n in g["n_gpus"]], y=100 * g["efficiency"], name=label, marker_color=color,
                            text=[f"{100 * e:.1f}%" for e in g["efficiency"]], textposition="outside")
                     for (label, g), color in zip(groups, colors(len(groups)))])
    threshold_line(fig, 100.0, axis="y")
    fig.update_yaxes(title="efficiency (%)", range=[0, top])
    fig.update_xaxes(title=_unit(table), type="category", categoryorder="array", categoryarray=counts)
    fig.update_layout(barmode="group")

    def draw(mfig):
        ax = mfig.add_subplot()
        width = 0.8 / len(groups)
        for i, ((label, g), color) in enumerate(zip(groups, colors(len(groups)))):
            x = np.array([counts.index(str(n)) for n in g["n_gpus"]]) + (i - (len(groups) - 1) / 2) * width
            bars = ax.bar(x, 100 * g["efficiency"], width, color=color, label=label)
            ax.bar_label(bars, [f"{100 * e:.1f}%" for e in g["efficiency"]], fontsize=8)
        mpl_threshold_line(ax, 100.0, axis="y")
        ax.set_xticks(range(len(counts)), counts)
        ax.set_ylim(0, top)
        style(ax, _unit(table), "efficiency (%)", legend=len(groups) > 1)

    return Figure(fig, draw, title)


def gpu_timeline(log: pd.DataFrame | None, message: str = "no GPU monitoring log") -> Figure:
    """GPU utilisation and memory over a run, one line per GPU (``tables.gpu_log``)."""
    title = "GPU utilisation and memory over time"
    if is_empty(log):
        return empty_figure(message, title)
    gpus = list(log.groupby("gpu", sort=True))
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1,
                        subplot_titles=("utilisation (%)", "memory used (GiB)"))
    for (gpu, g), color in zip(gpus, colors(len(gpus))):
        for row, column in ((1, "util_pct"), (2, "mem_used_gb")):
            fig.add_trace(go.Scatter(x=g["elapsed_s"], y=g[column], mode="lines", name=f"GPU {gpu}", legendgroup=gpu,
                                     showlegend=row == 1, line=dict(color=color, width=1.5)), row=row, col=1)
    fig.update_xaxes(title="seconds since the monitor started", row=2, col=1)
    fig.update_yaxes(range=[0, 105], row=1, col=1)

    def draw(mfig):
        axes = mfig.subplots(2, 1, sharex=True)
        for (gpu, g), color in zip(gpus, colors(len(gpus))):
            axes[0].plot(g["elapsed_s"], g["util_pct"], color=color, linewidth=1.2, label=f"GPU {gpu}")
            axes[1].plot(g["elapsed_s"], g["mem_used_gb"], color=color, linewidth=1.2)
        axes[0].set_ylim(0, 105)
        style(axes[0], "", "utilisation (%)", legend=True)
        style(axes[1], "seconds since the monitor started", "memory used (GiB)")

    return Figure(fig, draw, title, height=560)


def gpu_summary(table: pd.DataFrame | None) -> Figure:
    """Per GPU of the monitored run: mean, median and largest utilisation, and the largest memory used, from
    the summary stored in the result (``tables.gpu_summary``)."""
    title = titled("GPU utilisation and memory per GPU (monitor summary in the result)", _caveat(table))
    if is_empty(table):
        return empty_figure("no GPU monitor summary in the result", title)
    if table.attrs.get("seconds"):
        title += f", over {table.attrs['seconds']:.0f} s"
    gpus = [f"GPU {g}" for g in table["gpu"]]
    util = [("mean", "util_mean"), ("median", "util_p50"), ("max", "util_max")]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12, subplot_titles=("utilisation (%)", "memory (GiB)"))
    for (name, col), color in zip(util, PALETTE):
        fig.add_trace(go.Bar(x=gpus, y=table[col], name=name, marker_color=color), row=1, col=1)
    fig.add_trace(go.Bar(x=gpus, y=table["mem_max_gb"], name="largest memory used", marker_color=PALETTE[4]),
                  row=1, col=2)
    fig.update_layout(barmode="group")
    fig.update_yaxes(range=[0, 105], row=1, col=1)

    def draw(mfig):
        ax, bx = mfig.subplots(1, 2)
        x, width = np.arange(len(gpus)), 0.8 / len(util)
        for i, ((name, col), color) in enumerate(zip(util, PALETTE)):
            ax.bar(x + (i - 1) * width, table[col].astype(float), width, color=color, label=name)
        bx.bar(x, table["mem_max_gb"].astype(float), 0.6, color=PALETTE[4], label="largest memory used")
        for axis in (ax, bx):
            axis.set_xticks(x, gpus)
        ax.set_ylim(0, 105)
        style(ax, "", "utilisation (%)")
        ax.legend(fontsize=7, frameon=False, loc="lower left")
        style(bx, "", "memory (GiB)")

    return Figure(fig, draw, title)


def stage_times(table: pd.DataFrame | None) -> Figure:
    """Median seconds per stage with the range of its repetitions (``tables.stage_table``)."""
    title = titled("Time per stage", _caveat(table))
    if is_empty(table):
        return empty_figure("no stage timed", title)
    paths = table["path"].fillna("–")
    lo = (table["seconds"] - table["seconds_min"].fillna(table["seconds"])).clip(lower=0)
    hi = (table["seconds_max"].fillna(table["seconds"]) - table["seconds"]).clip(lower=0)
    kinds = list(dict.fromkeys(paths))
    fig = go.Figure([go.Bar(x=table["seconds"][paths == p], y=table["stage"][paths == p], orientation="h",
                            name=f"{p} path", marker_color=color,
                            error_x=dict(type="data", array=hi[paths == p], arrayminus=lo[paths == p], symmetric=False))
                     for p, color in zip(kinds, colors(len(kinds)))])
    fig.update_yaxes(autorange="reversed", categoryorder="array", categoryarray=list(table["stage"]))
    fig.update_xaxes(title="seconds (median of repetitions; bars: min-max)", rangemode="tozero")
    height = 180 + 34 * len(table)

    def draw(mfig):
        ax = mfig.add_subplot()
        y = np.arange(len(table))
        for p, color in zip(kinds, colors(len(kinds))):
            sel = (paths == p).to_numpy()
            ax.barh(y[sel], table["seconds"][sel], xerr=[lo[sel], hi[sel]], color=color, label=f"{p} path", capsize=3)
        ax.set_yticks(y, table["stage"])
        ax.invert_yaxis()
        style(ax, "seconds (median of repetitions; bars: min-max)", legend=True)

    return Figure(fig, draw, title, height=height)


def run_phases(phases: pd.DataFrame | None) -> Figure:
    """Where each run's wall time went (``tables.run_phases``), one stacked bar per run."""
    title = titled("Wall time of each run, by phase", _caveat(phases))
    if is_empty(phases):
        return empty_figure("no wall time per phase in this result", title)
    parts = [c for c in phases.columns if c not in ("stage", "n_gpus", "wall")]
    fig = go.Figure([go.Bar(y=phases["stage"], x=phases[part], name=part, orientation="h", marker_color=color)
                     for part, color in zip(parts, PALETTE)])
    fig.update_layout(barmode="stack")
    fig.update_xaxes(title="seconds")
    fig.update_yaxes(autorange="reversed")

    def draw(mfig):
        ax = mfig.add_subplot()
        left = np.zeros(len(phases))
        for part, color in zip(parts, PALETTE):
            ax.barh(phases["stage"], phases[part], left=left, color=color, label=part)
            left += phases[part].to_numpy(dtype=float)
        ax.invert_yaxis()
        style(ax, "seconds", legend=True)

    return Figure(fig, draw, title, height=180 + 34 * len(phases))


def hours_projection(projection: pd.DataFrame | None, sample_esm_tokens: float) -> Figure:
    """Hours per sample against GPUs (``tables.project_hours``, GPU results only): the projection dashed,
    measured counts as points."""
    title = f"Projected hours per sample of {sample_esm_tokens / 1e6:,.2f}M ESM-2 tokens"
    if is_empty(projection):
        return empty_figure("no projection: hours per sample are projected from GPU results only", title)
    measured = projection[projection["measured"]]
    fig = go.Figure([go.Scatter(x=projection["n_gpus"], y=projection["hours"], mode="lines", name="projected",
                                line=dict(color=PALETTE[0], dash="dash")),
                     go.Scatter(x=measured["n_gpus"], y=measured["hours"], mode="markers", name="measured",
                                marker=dict(size=10, color=PALETTE[3]))])
    fig.update_xaxes(title="GPUs", tickmode="array", tickvals=list(projection["n_gpus"]))
    fig.update_yaxes(title="hours per sample", rangemode="tozero")

    def draw(mfig):
        ax = mfig.add_subplot()
        ax.plot(projection["n_gpus"], projection["hours"], "--", color=PALETTE[0], label="projected")
        ax.plot(measured["n_gpus"], measured["hours"], "o", color=PALETTE[3], markersize=8, label="measured")
        ax.set_xticks(list(projection["n_gpus"]))
        ax.set_ylim(bottom=0)
        style(ax, "GPUs", "hours per sample", legend=True)

    return Figure(fig, draw, title)


# ------------------------------------------------------------------------------------------ equivalence
def error_distribution(errors: pd.DataFrame | None, result: dict | None = None) -> Figure:
    """Relative error of each configuration against the reference path, per model: the distribution over frames
    (``tables.equivalence_errors``) as boxes on a log axis; without it, the result's one figure per model."""
    title = titled("Relative error against the reference path (fp32, unpacked)", tables.caveat(result))
    if is_empty(errors):
        summary = {k: v for k, v in ((result or {}).get("relative_error") or {}).items() if isinstance(v, (int, float))}
        if not summary:
            return empty_figure("no relative error measured", title)
        errors = pd.DataFrame({"model": list(summary), "relative_error": list(summary.values())})
        title += ", per model"
    else:
        title += ", per frame"
    positive = errors["relative_error"][errors["relative_error"] > 0]
    floor = float(positive.min()) / 2 if len(positive) else 1e-12  # a zero cannot sit on a log axis
    variants = list(dict.fromkeys(errors["variant"].astype(str))) if "variant" in errors else ["all"]
    models = list(dict.fromkeys(errors["model"]))
    values = {(m, v): np.maximum(g["relative_error"].to_numpy(dtype=np.float64), floor)
              for (m, v), g in errors.assign(variant=errors.get("variant", "all")).astype({"variant": str})
              .groupby(["model", "variant"], sort=False)}
    fig = go.Figure([go.Box(x=[v for v in variants for _ in values.get((m, v), [])],
                            y=np.concatenate([values.get((m, v), []) for v in variants]), name=m, marker_color=color,
                            boxpoints="outliers") for m, color in zip(models, colors(len(models)))])
    zeros = int((errors["relative_error"] == 0).sum())
    ylabel = "relative error" + (f" (0 drawn at {floor:.1e})" if zeros else "")
    fig.update_yaxes(type="log", title=ylabel)
    fig.update_layout(boxmode="group")

    def draw(mfig):
        ax = mfig.add_subplot()
        width = 0.8 / len(models)
        for i, (m, color) in enumerate(zip(models, colors(len(models)))):
            present = [j for j, v in enumerate(variants) if (m, v) in values]
            parts = ax.boxplot([values[(m, variants[j])] for j in present], widths=width * 0.9, patch_artist=True,
                               positions=np.array(present) + (i - (len(models) - 1) / 2) * width, manage_ticks=False,
                               flierprops=dict(markersize=3))
            for box in parts["boxes"]:
                box.set(facecolor=color, alpha=0.6)
            ax.plot([], [], "s", color=color, label=m)
        ax.set_xticks(range(len(variants)), variants, rotation=20 if len(variants) > 3 else 0, fontsize=8)
        ax.set_yscale("log")
        style(ax, "", ylabel, legend=True)

    return Figure(fig, draw, title)


def call_agreement(switches: pd.DataFrame | None) -> Figure:
    """Share of calls that agree with the reference path, per frame and per chunk, for each configuration
    (``tables.switch_table``)."""
    title = titled("Call agreement with the reference path", _caveat(switches))
    cols = [] if is_empty(switches) else [c for c in ("call_agreement_frame", "call_agreement_chunk") if c in switches]
    if not cols or switches[cols].notna().sum().sum() == 0:
        return empty_figure("no call agreement measured", title)
    table = switches.assign(**{c: 100 * switches[c].astype(float) for c in cols})
    low = float(np.nanmin(table[cols].to_numpy(dtype=np.float64)))
    return grouped_bars(table, "configuration", [(c, c.rsplit("_", 1)[-1]) for c in cols], title, "agreement (%)",
                         ylim=(max(0.0, min(low - 2.0, 95.0)), 101),
                         labels=lambda s: [f"{v:.2f}%" if pd.notna(v) else "" for v in s])


def switch_errors(switches: pd.DataFrame | None) -> Figure:
    """Relative error per model for each configuration (``tables.switch_table``'s ``relative_error.*``)."""
    title = titled("Relative error per optimization switch", _caveat(switches))
    cols = [] if is_empty(switches) else [c for c in switches.columns if c.startswith("relative_error.")]
    if not cols or switches[cols].notna().sum().sum() == 0:
        return empty_figure("no per-switch errors measured", title)
    table = switches.assign(**{c: switches[c].astype(float).clip(lower=1e-12) for c in cols})
    return grouped_bars(table, "configuration", [(c, c.split(".", 1)[1]) for c in cols], title, "relative error",
                        log=True)


# ------------------------------------------------------------------------------------------- regression
def regression_trends(history: pd.DataFrame | None, metrics, flagged: pd.DataFrame | None = None,
                      caveat: str = "") -> Figure:
    """Benchmark figures over time, one panel per metric, one line per suite, stage and hardware
    (``history.history_table``); comparisons flagged as regressions (``history.regression_table``) as red
    crosses."""
    title = titled("History of " + ", ".join(metrics), caveat)
    df = None if is_empty(history) else history[history["metric"].isin(metrics)]
    if is_empty(df):
        return empty_figure(f"no history of {', '.join(metrics)}", title)
    panels = [m for m in metrics if (df["metric"] == m).any()]
    bad = flagged[flagged["verdict"] == "REGRESSION"] if not is_empty(flagged) else None
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, subplot_titles=panels, vertical_spacing=0.08)
    series = sorted(df["series"].unique())
    palette = dict(zip(series, colors(len(series))))
    values = {m: df.loc[df["metric"] == m, "value"].astype(float) for m in panels}
    log = {m: bool((v > 0).all() and v.max() > 100 * v.min()) for m, v in values.items()}  # orders of magnitude
    for row, metric in enumerate(panels, 1):
        for name, g in df[df["metric"] == metric].groupby("series", sort=True):
            g = g.sort_values("timestamp")
            fig.add_trace(go.Scatter(x=g["timestamp"], y=g["value"], mode="lines+markers", name=name, legendgroup=name,
                                     showlegend=row == 1, line=dict(color=palette[name])), row=row, col=1)
        if bad is not None and (bad["metric"] == metric).any():
            b = bad[bad["metric"] == metric]
            fig.add_trace(go.Scatter(x=b["timestamp"], y=b["current"], mode="markers", name="regression",
                                     marker=dict(symbol="x", size=13, color="#d62728")), row=row, col=1)
        fig.update_yaxes(type="log" if log[metric] else None, row=row, col=1)
    fig.update_layout(legend=dict(orientation="h", y=-0.15))
    height = 160 + 230 * len(panels)

    def draw(mfig):
        import matplotlib.dates as mdates

        axes = mfig.subplots(len(panels), 1, sharex=True, squeeze=False).ravel()
        for ax, metric in zip(axes, panels):
            for name, g in df[df["metric"] == metric].groupby("series", sort=True):
                g = g.sort_values("timestamp")
                ax.plot(g["timestamp"].dt.tz_localize(None), g["value"], "o-", color=palette[name], label=name,
                        markersize=4)
            if bad is not None and (bad["metric"] == metric).any():
                b = bad[bad["metric"] == metric]
                ax.plot(b["timestamp"].dt.tz_localize(None), b["current"], "x", color="#d62728", markersize=10,
                        label="regression")
            if log[metric]:
                ax.set_yscale("log")
            style(ax, "", metric)
        axes[-1].set_xlabel("time of the run (UTC)")
        locator = mdates.AutoDateLocator()
        axes[-1].xaxis.set_major_locator(locator)
        axes[-1].xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        handles = {label: h for ax in axes for h, label in zip(*ax.get_legend_handles_labels())}
        mfig.legend(handles.values(), handles.keys(), loc="outside lower center", fontsize=7, frameon=False, ncols=2)

    return Figure(fig, draw, title, height=height, png_height=height + 8 * (len(series) + 1))
