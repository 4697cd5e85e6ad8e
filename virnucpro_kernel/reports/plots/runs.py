"""Figures of a prediction: a Run (``vk.predict``, ``vk.load_run``) and its per-sequence calls at a threshold
(``tables.calls_at``)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .. import tables
from ..figure import (CALL_COLORS, PALETTE, Figure, empty_figure, is_empty, mpl_threshold_line, style,
                      threshold_line, titled)

PNG_RECORDS = 6  # records drawn in the PNG of chunk_track (the HTML page has a menu of all of them)


def score_histogram(run, calls: pd.DataFrame | None, threshold: float, bins: int = 50) -> Figure:
    """Distribution of P(virus) per frame, per chunk (its best frame) and per record (mean chunk score), as
    percentages of each, with the threshold dashed."""
    title = titled(f"Distribution of P(virus) (threshold {threshold:g}, dashed)", tables.caveat(run))
    if run is None or is_empty(run.frames):
        return empty_figure("no frames: nothing was scored", title)
    frames = run.frames
    series = [("frames", frames["p_virus"]), ("chunks (best frame)",
                                              frames.groupby(["record_index", "chunk"], sort=False)["p_virus"].max()),
              ("records (mean chunk score)", calls["score"].dropna())]
    series = [(f"{name} (n={len(v):,})", np.asarray(v, dtype=np.float64)) for name, v in series]
    edges = np.linspace(0.0, 1.0, bins + 1)
    fig = go.Figure([go.Histogram(x=v, name=name, xbins=dict(start=0.0, end=1.0 + 1e-9, size=1.0 / bins),
                                  histnorm="percent", marker_color=color, opacity=0.6)
                     for (name, v), color in zip(series, PALETTE)])
    threshold_line(fig, threshold)
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title="P(virus)", range=[0, 1])
    fig.update_yaxes(title="% of each")

    def draw(mfig):
        ax = mfig.add_subplot()
        for (name, v), color in zip(series, PALETTE):
            if len(v):
                ax.hist(np.clip(v, 0, 1), bins=edges, weights=np.full(len(v), 100.0 / len(v)), color=color,
                        alpha=0.6, label=name)
        mpl_threshold_line(ax, threshold)
        ax.set_xlim(0, 1)
        style(ax, "P(virus)", "% of each", legend=True)

    return Figure(fig, draw, title)


def calls_per_record(run, calls: pd.DataFrame | None, max_records: int = 40) -> Figure:
    """Per record, its chunks split into called viral, not viral and without a kept frame; records sorted by
    score (best first), the ``max_records`` best shown."""
    title = titled("Chunks per record and their calls", tables.caveat(run))
    if is_empty(calls):
        return empty_figure("no records", title)
    df = calls.sort_values("score", ascending=False, na_position="last", kind="stable").head(max_records)
    if len(calls) > len(df):
        title += f" (best {len(df)} of {len(calls)} by score)"
    with_frames = df["chunks_with_frames"].to_numpy(dtype=np.int64)
    viral = np.rint(df["viral_chunk_fraction"].fillna(0).to_numpy() * with_frames).astype(np.int64)
    parts = [("viral chunks", viral, CALL_COLORS["virus"]),
             ("other chunks", with_frames - viral, CALL_COLORS["others"]),
             ("chunks without a frame", df["chunks"].to_numpy(dtype=np.int64) - with_frames, CALL_COLORS["no_frames"])]
    labels = [f"{sid} [{call}]" for sid, call in zip(df["sequence_id"], df["call"])]
    fig = go.Figure([go.Bar(y=labels, x=counts, name=name, orientation="h", marker_color=color,
                            hovertemplate="%{y}: %{x} " + name + "<extra></extra>") for name, counts, color in parts])
    fig.update_layout(barmode="stack")
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title="chunks")
    height = 160 + 26 * len(df)

    def draw(mfig):
        ax = mfig.add_subplot()
        left = np.zeros(len(df))
        for name, counts, color in parts:
            ax.barh(labels, counts, left=left, color=color, label=name)
            left += counts
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=7)
        style(ax, "chunks", legend=True)

    return Figure(fig, draw, title, height=height)


def _frame_rows(frames: pd.DataFrame, sequences: pd.DataFrame) -> np.ndarray:
    """The row of ``sequences`` each frame belongs to, matched by ID and, for repeated IDs, by order."""
    seqs = pd.DataFrame({"sequence_id": sequences["sequence_id"].to_numpy(), "row": np.arange(len(sequences))})
    seqs["occurrence"] = seqs.groupby("sequence_id").cumcount()
    recs = frames[["record_index", "sequence_id"]].drop_duplicates("record_index").sort_values("record_index")
    recs = recs.assign(occurrence=recs.groupby("sequence_id").cumcount()).merge(seqs, on=["sequence_id", "occurrence"],
                                                                                how="left")
    return frames["record_index"].map(dict(zip(recs["record_index"], recs["row"]))).fillna(-1).to_numpy(np.int64)


def chunk_positions(sequences: pd.DataFrame, chunk_size: int) -> pd.DataFrame:
    """Where each chunk lies in its record (the original's chunking): ``row``, ``sequence_id``, ``chunk``
    (1-based), ``start``, ``length`` and ``mid_kb``."""
    from ...frames import chunk_layout

    rec, k, start, length = chunk_layout(sequences["length"].to_numpy(dtype=np.int64), chunk_size)
    return pd.DataFrame({"row": rec, "sequence_id": sequences["sequence_id"].to_numpy()[rec], "chunk": k + 1,
                         "start": start, "length": length, "mid_kb": (start + length / 2) / 1000.0})


def chunk_track(run, calls: pd.DataFrame | None, threshold: float, max_records: int = 30) -> Figure:
    """P(virus) along each record, chunk by chunk: the chunk's score (its best frame) as a line, broken where a
    chunk kept no frame, and every frame as a point (forward and reverse apart). HTML: one record at a time,
    picked from a menu (records by score, best first); PNG: the best few records side by side."""
    title = titled("P(virus) along the record", tables.caveat(run))
    if run is None or is_empty(run.frames) or is_empty(calls):
        return empty_figure("no frames: nothing to draw", title)
    seqs = calls.reset_index(drop=True)
    chunks = chunk_positions(seqs, run.chunk_size)
    order = list(seqs.sort_values("score", ascending=False, na_position="last", kind="stable").index[:max_records])
    frames = run.frames.assign(row=_frame_rows(run.frames, seqs))
    tracks = []
    for row in order:
        rec, pos = seqs.loc[row], chunks[chunks["row"] == row]
        f = frames[frames["row"] == row].merge(pos[["chunk", "mid_kb"]], on="chunk", how="left")
        line = pos["chunk"].map(f.groupby("chunk")["p_virus"].max()).to_numpy(dtype=np.float64)  # NaN: a gap
        score = "no frame" if pd.isna(rec["score"]) else f"score {rec['score']:.3f}"
        tracks.append((f"{rec['sequence_id']} ({rec['length']:,} bp, {score}, call {rec['call']})", f, pos, line))
    strands = (("F", "#1f77b4", "circle", "o"), ("R", "#2ca02c", "diamond", "D"))
    fig, buttons = go.Figure(), []
    for i, (label, f, pos, line) in enumerate(tracks):
        for strand, color, symbol, _ in strands:
            g = f[f["frame"].str.startswith(strand)]
            fig.add_trace(go.Scatter(x=g["mid_kb"], y=g["p_virus"], mode="markers", visible=i == 0,
                                     name=f"frames {strand}1-{strand}3", text=g["frame"],
                                     marker=dict(size=6, color=color, symbol=symbol, opacity=0.5)))
        fig.add_trace(go.Scatter(x=pos["mid_kb"], y=line, mode="lines+markers", name="chunk score (best frame)",
                                 line=dict(color=CALL_COLORS["virus"], width=1.5), marker=dict(size=4),
                                 connectgaps=False, visible=i == 0))
        mask = [j // 3 == i for j in range(3 * len(tracks))]
        buttons.append(dict(label=label.split(" (")[0], method="update",
                            args=[{"visible": mask}, {"title": f"{title}: {label}"}]))
    threshold_line(fig, threshold, axis="y")
    fig.update_yaxes(title="P(virus)", range=[-0.02, 1.02])
    fig.update_xaxes(title="position in the record (kb, chunk midpoints)")
    if len(buttons) > 1:
        fig.update_layout(updatemenus=[dict(buttons=buttons, direction="down", x=1.0, xanchor="right", y=1.02,
                                            yanchor="bottom")])
    fig.update_layout(legend=dict(orientation="h", y=-0.2))
    shown = tracks[:PNG_RECORDS]
    rows = math.ceil(len(shown) / 2)

    def draw(mfig):
        axes = mfig.subplots(rows, 2 if len(shown) > 1 else 1, squeeze=False, sharey=True).ravel()
        for ax, (label, f, pos, line) in zip(axes, shown):
            for strand, color, _, marker in strands:
                g = f[f["frame"].str.startswith(strand)]
                ax.scatter(g["mid_kb"], g["p_virus"], s=8, color=color, marker=marker, alpha=0.5,
                           label=f"frames {strand}1-{strand}3")
            ax.plot(pos["mid_kb"], line, color=CALL_COLORS["virus"], linewidth=1.2, label="chunk score")
            mpl_threshold_line(ax, threshold, axis="y")
            ax.set_ylim(-0.02, 1.02)
            style(ax, "kb", "P(virus)", title=label)
        for ax in axes[len(shown):]:
            ax.set_axis_off()
        axes[0].legend(fontsize=7, frameon=False, loc="lower left")

    png_title = f"{title}" + (f" (the {len(shown)} best of {len(tracks)} records)" if len(tracks) > len(shown) else "")
    out = Figure(fig, draw, png_title, png_height=110 + 230 * rows)
    return out.update_layout(title=f"{title}: {tracks[0][0]}", margin=dict(t=110))
