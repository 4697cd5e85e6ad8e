"""``reports.plots`` and ``reports.figure``: every figure drawn twice (plotly and matplotlib) from the same data."""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd
import pytest

from reports_fixtures import fake_result, gpu_log_frame, png_size, write_run
from virnucpro_kernel.reports import figure, history, plots, tables


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def evaluation(run):
    from virnucpro_kernel import evaluate

    labels = pd.DataFrame({"sequence_id": ["virA", "no_frame", "hostB"], "label": ["virus", "virus", "others"]})
    return evaluate(run, labels)


def all_figures(run, ev, tmp_path) -> dict:
    result = fake_result()
    result["gpu_monitor"] = {"per_gpu": {"0": {"name": "H200", "util_mean": 97.0, "util_p50": 100.0,
                                               "util_max": 100.0, "mem_max_gb": 15.4}}}
    table = tables.scaling_table(result)
    errors = pd.DataFrame({"variant": ["a", "a", "b", "b"], "model": ["dnabert", "esm2"] * 2,
                           "frame_index": [0, 0, 1, 1], "relative_error": [1e-3, 0.0, 2e-3, 3e-3]})
    switches = pd.DataFrame({"configuration": ["optimized", "packing_only"], "relative_error.esm2": [1e-3, 1e-7],
                             "call_agreement_frame": [0.99, 1.0], "call_agreement_chunk": [1.0, 1.0]})
    old = fake_result(tokens_per_s=(1000.0,), counts=(1,), timestamp="2026-01-01T00:00:00Z")
    new = fake_result(tokens_per_s=(500.0,), counts=(1,), timestamp="2026-01-02T00:00:00Z")
    from virnucpro_kernel.bench import schema

    for i, r in enumerate((old, new)):
        schema.write_result(r, tmp_path / f"h{i}")
    files = history.history_files([tmp_path])
    comparisons = history.regression_table(history.load_results(files))
    calls = run.sequences
    return {
        "score_histogram": plots.score_histogram(run, calls, 0.5),
        "calls_per_record": plots.calls_per_record(run, calls),
        "chunk_track": plots.chunk_track(run, calls, 0.5),
        "throughput_vs_gpus": plots.throughput_vs_gpus(table),
        "throughput_no_mfu": plots.throughput_vs_gpus(table.assign(mfu=np.nan)),
        "scaling_efficiency": plots.scaling_efficiency(table),
        "gpu_timeline": plots.gpu_timeline(gpu_log_frame()),
        "gpu_summary": plots.gpu_summary(tables.gpu_summary(result)),
        "stage_times": plots.stage_times(tables.stage_table(result)),
        "run_phases": plots.run_phases(tables.run_phases(result)),
        "hours_projection": plots.hours_projection(tables.project_hours(table, 42.75e6), 42.75e6),
        "error_distribution": plots.error_distribution(errors),
        "error_bars": plots.error_distribution(None, {"relative_error": {"dnabert": 1e-7, "esm2": 2e-7}}),
        "call_agreement": plots.call_agreement(switches),
        "switch_errors": plots.switch_errors(switches),
        "regression_trends": plots.regression_trends(history.history_table(files), ["tokens_per_s", "seconds"],
                                                     comparisons),
        "roc": plots.roc_curve(ev),
        "pr_chunks": plots.pr_curve(ev, "chunk"),
        "overview": plots.overview(ev, "sequence", "pipeline check (demo profile)"),
        "by_length": plots.metrics_by_length(ev),
        "scores": plots.score_distributions(ev, "chunk"),
        "comparison": plots.comparison_bars(ev),
    }


def test_every_figure_is_drawn_by_both_libraries(run, evaluation, tmp_path):
    for name, fig in all_figures(run, evaluation, tmp_path).items():
        assert isinstance(fig, figure.Figure) and len(fig.data) > 0, name
        mfig = fig.to_matplotlib()
        assert mfig.axes and any(ax.has_data() for ax in mfig.axes), name
        path = tmp_path / f"{name}.png"
        data = fig.to_png(path)
        width, height = png_size(path.read_bytes())
        assert path.read_bytes() == data and width >= 600 and height >= 200, name


def test_same_figure_same_bytes(run):
    first = plots.score_histogram(run, run.sequences, 0.5)
    again = plots.score_histogram(run, run.sequences, 0.5)
    assert first.to_png() == again.to_png()
    assert first.to_div() == again.to_div()  # the div's ID comes from the content


def test_bundle_has_html_png_and_plotly_json(run):
    fig = plots.calls_per_record(run, run.sequences)
    bundle = fig._repr_mimebundle_()
    assert "Plotly.newPlot" in bundle["text/html"] and len(bundle["text/html"]) < 100_000  # no plotly.js
    assert png_size(base64.b64decode(bundle["image/png"]))[0] > 0
    assert bundle["application/vnd.plotly.v1+json"]["data"][0]["type"] == "bar"
    assert bundle["text/plain"] == "<figure: [pipeline check (demo profile)] Chunks per record and their calls>"


def test_pipeline_checks_say_so_in_their_titles(run):
    cpu = tables.scaling_table(fake_result(counts=(1,), tokens_per_s=(700.0,), gpu_name=None))
    assert plots.throughput_vs_gpus(cpu).layout.title.text.startswith("[pipeline check (CPU)]")
    assert plots.score_histogram(run, run.sequences, 0.5).layout.title.text.startswith(
        "[pipeline check (demo profile)]")
    assert not plots.throughput_vs_gpus(tables.scaling_table(fake_result())).layout.title.text.startswith("[")


def test_chunk_track_draws_gaps_and_one_record_at_a_time(run):
    track = plots.chunk_track(run, run.sequences, 0.5)
    visible = [t for t in track.data if t.visible]
    assert len(visible) == 3 and len(track.layout.updatemenus[0].buttons) == 3
    line = [t for t in visible if t.mode == "lines+markers"][0]
    assert np.isnan(np.asarray(line.y, dtype=float)).tolist() == [False, True, False, False]  # virA's chunk 2
    host = [t for t in track.data[3:6] if t.mode == "lines+markers"][0]  # second by score: hostB, not no_frame
    assert len(host.x) == 3 and np.nanmax(np.asarray(host.y, dtype=float)) < 0.5
    positions = plots.chunk_positions(run.sequences, 300)
    assert list(positions[positions["sequence_id"] == "virA"]["start"]) == [0, 300, 600, 900]
    calls = plots.calls_per_record(run, run.sequences)
    assert sum(np.sum(t.x) for t in calls.data) == run.sequences["chunks"].sum()  # every chunk counted once


def test_empty_inputs_give_a_message_figure():
    for fig in (plots.score_histogram(None, None, 0.5), plots.calls_per_record(None, None),
                plots.chunk_track(None, None, 0.5), plots.throughput_vs_gpus(None), plots.scaling_efficiency(None),
                plots.gpu_timeline(None, "why"), plots.gpu_summary(None), plots.stage_times(None),
                plots.hours_projection(None, 1e6), plots.error_distribution(None), plots.call_agreement(None),
                plots.switch_errors(None), plots.regression_trends(None, ["seconds"]), plots.run_phases(None)):
        assert len(fig.data) == 0 and fig.layout.annotations[0].text
        mfig = fig.to_matplotlib()
        assert fig.layout.annotations[0].text in [t.get_text() for ax in mfig.axes for t in ax.texts]
        assert png_size(fig.to_png())[0] > 0
