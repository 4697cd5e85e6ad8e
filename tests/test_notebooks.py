"""Notebooks, parameter sets, figures and report rendering.

The notebooks themselves run under nbval (``make test``: ``pytest --nbval-lax notebooks``); here: what must hold
of the committed files (no outputs, one parameters cell equal to ``params/<nb>/demo.yaml``), the figure
functions and their PNG converter on small inputs, the tables and checks the notebooks assert, the report
index, and one papermill run of two tiny notebooks through the whole rendering path.
"""

from __future__ import annotations

import ast
import struct
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import yaml

from virnucpro_kernel import plots, reports
from virnucpro_kernel.bench import schema

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_CELL_LINES = 15


def parameters_cell(nb) -> nbformat.NotebookNode:
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{len(cells)} cells tagged 'parameters'"
    return cells[0]


def cell_values(source: str) -> dict:
    """Names assigned in a parameters cell and their literal values."""
    values = {}
    for node in ast.parse(source).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, f"not a plain assignment: {ast.unparse(node)}"
        values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC
    return struct.unpack(">II", data[16:24])


# ----------------------------------------------------------------------------------------- notebooks
def test_the_four_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == ["01_predict", "02_scaling", "03_equivalence", "04_regression"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {i + 1} has outputs"
            assert cell.execution_count is None, f"cell {i + 1} has an execution count"
    assert nb.metadata.kernelspec.name == "virnucpro"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_equals_demo_set(path):
    nb = nbformat.read(path, as_version=4)
    values = cell_values(parameters_cell(nb).source)
    demo = yaml.safe_load((ROOT / "params" / path.stem / "demo.yaml").read_text())
    assert values == demo


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_parameter_set_names_the_cells_parameters(path):
    names = set(cell_values(parameters_cell(nbformat.read(path, as_version=4)).source))
    sets = sorted(p.stem for p in (ROOT / "params" / path.stem).glob("*.yaml"))
    assert {"demo", "h200"} <= set(sets)
    for name in sets:
        data = reports.load_params(path.stem, name, ROOT)
        assert set(data) == names, f"params/{path.stem}/{name}.yaml: {sorted(set(data) ^ names)}"
    h200 = reports.load_params(path.stem, "h200", ROOT)
    for key in ("out", "results_dir"):
        if key in h200:
            assert str(h200[key]).startswith("reports/h200"), f"h200 reads reports/h200/, not {h200[key]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_cells_are_short_and_start_with_setup(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "plots.setup_notebook()" in code[1].source  # the renderer is set before any figure
    for cell in code:
        assert len(cell.source.splitlines()) <= MAX_CELL_LINES, cell.source


def test_repo_root_found_from_the_notebooks_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT / "notebooks")
    assert reports.repo_root() == ROOT
    assert reports.repo_path("reports/demo") == ROOT / "reports" / "demo"
    assert reports.repo_path(tmp_path) == tmp_path


def test_missing_parameter_set_is_named():
    with pytest.raises(FileNotFoundError, match="nosuchset"):
        reports.load_params("01_predict", "nosuchset", ROOT)


# ----------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def prediction_dir(tmp_path_factory):
    """A predict output folder written by ``outputs.write_outputs`` from made-up scores (no models)."""
    from virnucpro_kernel.outputs import write_outputs

    out = tmp_path_factory.mktemp("pred")
    rng = np.random.default_rng(0)
    records = pd.DataFrame({"record_index": [0, 1, 2], "sequence_id": ["virA", "no_frame", "hostB"],
                            "length": [1200, 250, 900], "chunks": [4, 1, 3]})
    rows = []
    for rec, sid, chunks, bias in ((0, "virA", 4, 0.8), (2, "hostB", 3, 0.2)):
        for chunk in range(1, chunks + 1):
            if (rec, chunk) == (0, 2):
                continue  # a chunk without a kept frame
            for frame in ("F1", "R2") if chunk != 3 else ("F3",):
                p = float(np.clip(bias + rng.normal(0, 0.1), 0.01, 0.99))
                rows.append((rec, sid, chunk, frame, 1 - p, p))
    frames = pd.DataFrame(rows, columns=["record_index", "sequence_id", "chunk", "frame", "p_others", "p_virus"])
    seqs = {"virA": "ACGT" * 300, "no_frame": "ACGT" * 62 + "AC", "hostB": "ACGT" * 225}
    fasta = out / "input.fa"
    fasta.write_text("".join(f">{k} description of {k}\n{v}\n" for k, v in seqs.items()))
    write_outputs(out, frames, records, threshold=0.5, records_iter=((k, f"{k} description of {k}", v)
                                                                       for k, v in seqs.items()),
                  run_info={"parameters": {"chunk_size": 300, "threshold": 0.5}, "counts": {"frames": len(frames)},
                            "profile": {"name": "demo", "warnings": ["demo profile: not meaningful"]}})
    return out


def fake_result(suite="scaling", tokens_per_s=(1000.0, 1900.0, 3600.0), counts=(1, 2, 4), spread=0.0,
                timestamp="2026-01-01T00:00:00Z", commit="a" * 40, mfu=0.5):
    result = schema.new_result(suite, "virnucpro benchmark", hardware={
        "gpu_name": "NVIDIA H200", "n_gpus": max(counts), "cpu": "x", "cpu_count": 2}, workload={
        "name": "tiny", "reads": 10, "frames": 14, "tokens": 719})
    result.update(timestamp=timestamp, git_commit=commit)
    for n, tps in zip(counts, tokens_per_s):
        seconds = 719 / tps
        result["stages"][f"engine_{n}gpu"] = {
            "tokens_per_s": tps, "sequences_per_s": tps / 50, "mfu": mfu, "seconds": seconds,
            "seconds_min": seconds * (1 - spread), "seconds_max": seconds * (1 + spread), "repetitions": 3,
            "peak_memory_gb": 1.0,
            "n_gpus": n, "path": "optimized", "wall_seconds": seconds + 3, "load_models_s": 1.0, "warmup_s": 0.5}
    result["scaling_efficiency"] = {str(n): t / (n * tokens_per_s[0]) for n, t in zip(counts, tokens_per_s)}
    result["warnings"] = ["random profile: meaningless calls"]
    return schema.validate_result(schema.json_safe(result))


def gpu_log_frame():
    t = np.arange(0, 5, 0.5)
    rows = [{"timestamp": pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(seconds=s), "elapsed_s": s, "gpu": g,
             "util_pct": 90.0 - 10 * int(g), "mem_used_gb": 20.0 + s, "sm_clock_mhz": 1900.0, "power_w": 500.0}
            for s in t for g in ("0", "1")]
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------- prediction
def test_prediction_tables_and_checks(prediction_dir):
    pred = reports.load_prediction(prediction_dir)
    assert pred.chunk_size == 300 and pred.threshold == 0.5
    assert pred.warnings == ["demo profile: not meaningful"]
    table = reports.check_prediction(pred, prediction_dir / "input.fa")
    assert (table["passed"] == "yes").all(), table
    hits = reports.viral_hits(pred)
    assert list(hits["sequence_id"]) == ["virA"] and hits["description"].iloc[0] == "description of virA"
    assert list(reports.sequences_table(pred)["sequence_id"]) == ["virA", "hostB", "no_frame"]
    assert list(pred.sequences["call"]) == ["virus", "no_frames", "others"]
    assert "records" in set(reports.run_table(pred)[""])


def test_prediction_check_fails_on_a_missing_record(prediction_dir, tmp_path):
    pred = reports.load_prediction(prediction_dir)
    pred.sequences = pred.sequences.iloc[:2]
    with pytest.raises(AssertionError, match="every input record has one row"):
        reports.check_prediction(pred, prediction_dir / "input.fa")


def test_missing_prediction_is_empty_or_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="run.json"):
        reports.load_prediction(tmp_path / "nothing")
    pred = reports.load_prediction(tmp_path / "nothing", required=False)
    assert pred.empty and len(pred.frames) == 0
    assert (reports.check_prediction(pred)["passed"] == "skipped").all()
    for fig in (plots.score_histogram(pred.frames, pred.sequences), plots.calls_per_record(pred.sequences),
                plots.chunk_track(pred.frames, pred.sequences, pred.chunk_size)):
        assert len(fig.data) == 0 and fig.layout.annotations  # a message instead of a figure


def test_prediction_figures(prediction_dir):
    pred = reports.load_prediction(prediction_dir)
    hist = plots.score_histogram(pred.frames, pred.sequences, 0.5)
    assert [t.type for t in hist.data] == ["histogram"] * 3
    calls = plots.calls_per_record(pred.sequences)
    assert sum(np.sum(t.x) for t in calls.data) == pred.sequences["chunks"].sum()  # every chunk counted once
    track = plots.chunk_track(pred.frames, pred.sequences, 300, 0.5)
    visible = [t for t in track.data if t.visible]
    assert len(visible) == 3 and len(track.layout.updatemenus[0].buttons) == 3
    line = [t for t in visible if t.mode == "lines+markers"][0]
    assert np.isnan(np.asarray(line.y, dtype=float)).tolist() == [False, True, False, False]  # virA's chunk 2: a gap
    host = [t for t in track.data[3:6] if t.mode == "lines+markers"][0]  # second by score: hostB, not no_frame
    assert len(host.x) == 3 and np.nanmax(np.asarray(host.y, dtype=float)) < 0.5
    positions = plots.chunk_positions(pred.sequences, 300)
    assert list(positions[positions["sequence_id"] == "virA"]["start"]) == [0, 300, 600, 900]


# ----------------------------------------------------------------------------------------- benchmarks
def test_scaling_table_projection_and_checks():
    result = fake_result()
    table = reports.scaling_table(result)
    assert list(table["n_gpus"]) == [1, 2, 4] and set(table["label"]) == {"engine"}
    assert table["efficiency"].tolist() == pytest.approx([1.0, 0.95, 0.9])
    proj = reports.project_hours(table, sample_esm_tokens=3.6e6, max_gpus=8)
    assert list(proj["n_gpus"]) == list(range(1, 9))
    assert proj.loc[proj["n_gpus"] == 1, "hours"].item() == pytest.approx(1.0)  # 3.6M tokens at 1000 tok/s
    assert proj.loc[proj["n_gpus"] == 8, "tokens_per_s"].item() == pytest.approx(1000 * 8 * 0.9)
    assert proj["measured"].tolist() == [True, True, False, True] + [False] * 4
    assert (reports.check_scaling(table)["passed"] == "yes").all()
    bad = table.assign(efficiency=[1.0, 1.5, 0.9])
    with pytest.raises(AssertionError, match="scaling efficiency"):
        reports.check_scaling(bad)


def test_stage_phases_and_gpu_log(tmp_path):
    result = fake_result()
    stages = reports.stage_table(result)
    assert list(stages["stage"]) == ["engine_1gpu", "engine_2gpu", "engine_4gpu"]
    phases = reports.run_phases(result)
    assert phases["start-up, I/O, merge"].tolist() == pytest.approx([1.5] * 3)
    log, why = reports.gpu_log(result, tmp_path)
    assert log is None and "no GPU monitoring log" in why
    gpu_log_frame().assign(timestamp=lambda d: d["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.000+00:00")).to_csv(
        tmp_path / "gpu_metrics_x.log", sep="\t", index=False)
    result["gpu_monitor"] = {"available": True, "log": "/elsewhere/logs/gpu_metrics_x.log"}
    log, where = reports.gpu_log(result, tmp_path)
    assert len(log) == 20 and where.endswith("gpu_metrics_x.log")


def test_equivalence_tables_and_checks():
    result = fake_result("equivalence", tokens_per_s=(1000.0,), counts=(1,))
    result["relative_error"] = {"dnabert": 1e-7, "esm2": 2e-7}
    result["call_agreement"] = 1.0
    result["switches"] = {"optimized": {"options": {"dtype": "bf16"}, "relative_error": {"dnabert": 1e-3, "esm2": 5e-3},
                                        "call_agreement_frame": 0.999, "call_agreement_chunk": 1.0},
                          "packing_only": {"relative_error": {"dnabert": 1e-7, "esm2": 0.0},
                                           "call_agreement_frame": 1.0, "call_agreement_chunk": 1.0}}
    switches = reports.switch_table(result)
    assert list(switches["configuration"]) == ["optimized", "packing_only"]
    assert {"relative_error.dnabert", "relative_error.esm2"} <= set(switches.columns)
    errors = pd.DataFrame({"variant": ["optimized"] * 4, "model": ["dnabert", "dnabert", "esm2", "esm2"],
                           "frame_index": [0, 1, 0, 1], "relative_error": [1e-3, 2e-3, 0.0, 5e-3]})
    summary = reports.error_summary(errors, result)
    assert summary["max"].tolist() == [2e-3, 5e-3]
    assert (reports.check_equivalence(errors, switches, 0.01, 0.99)["passed"] == "yes").all()
    with pytest.raises(AssertionError, match="relative errors <= 0.0001"):
        reports.check_equivalence(errors, switches, max_relative_error=1e-4)
    with pytest.raises(AssertionError, match="finite"):
        reports.check_equivalence(errors.assign(relative_error=[np.nan, 0, 0, 0]), switches)
    assert reports.error_summary(None, result)["relative_error"].tolist() == [1e-7, 2e-7]
    only_top = reports.switch_table({"relative_error": 0.1, "call_agreement": {"frame": 0.9}})
    assert only_top["call_agreement_frame"][0] == 0.9 and only_top["relative_error.all"][0] == 0.1


def test_regression_history_flags_a_slowdown(tmp_path):
    base = fake_result(tokens_per_s=(1000.0,), counts=(1,), timestamp="2026-01-01T00:00:00Z", commit="1" * 40)
    same = fake_result(tokens_per_s=(1020.0,), counts=(1,), timestamp="2026-01-02T00:00:00Z", commit="2" * 40)
    slow = fake_result(tokens_per_s=(600.0,), counts=(1,), timestamp="2026-01-03T00:00:00Z", commit="3" * 40)
    for i, r in enumerate((base, same, slow)):
        schema.write_result(r, tmp_path / f"run{i}")
    (tmp_path / "run0" / "run.json").write_text("{}")  # not a result: skipped
    files = reports.history_files([tmp_path, tmp_path / "missing"])
    results = reports.load_results(files + files)  # the same result twice counts once
    assert len(results) == 3
    history = reports.history_table(files)
    assert set(history["series"]) >= {"scaling/engine_1gpu [1x NVIDIA H200]"}
    assert set(history["metric"]) >= {"tokens_per_s", "seconds", "scaling_efficiency"}
    comparisons = reports.regression_table(results, threshold=0.10)
    flagged = reports.regressions(comparisons)
    assert set(flagged["metric"]) == {"tokens_per_s", "seconds"}
    assert (flagged["commit"] == "3" * 12).all() and (flagged["baseline_commit"] == "2" * 12).all()
    assert (reports.check_history(history, comparisons)["passed"] == "yes").all()
    fig = plots.regression_trends(history, "tokens_per_s", comparisons)
    assert any(t.name == "regression (>10%)" and len(t.x) == 1 for t in fig.data)
    assert png_size(plots.to_png(fig))[0] > 0
    with pytest.raises(AssertionError, match="history present"):
        reports.check_history(history.iloc[:0], comparisons.iloc[:0])


def test_committed_results_outside_git_is_empty(tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "notebooks").mkdir()
    assert reports.committed_results(tmp_path / "reports", root=tmp_path, cache=tmp_path / "cache") == []


# ----------------------------------------------------------------------------------------- figures
def all_figures(prediction_dir) -> dict[str, go.Figure]:
    pred = reports.load_prediction(prediction_dir)
    result = fake_result()
    table = reports.scaling_table(result)
    errors = pd.DataFrame({"variant": ["a", "a", "b", "b"], "model": ["dnabert", "esm2"] * 2,
                           "frame_index": [0, 0, 1, 1], "relative_error": [1e-3, 0.0, 2e-3, 3e-3]})
    switches = pd.DataFrame({"configuration": ["optimized", "packing_only"], "relative_error.esm2": [1e-3, 1e-7],
                             "call_agreement_frame": [0.99, 1.0], "call_agreement_chunk": [1.0, 1.0]})
    return {
        "score_histogram": plots.score_histogram(pred.frames, pred.sequences),
        "calls_per_record": plots.calls_per_record(pred.sequences),
        "chunk_track": plots.chunk_track(pred.frames, pred.sequences, 300),
        "throughput_vs_gpus": plots.throughput_vs_gpus(table),
        "throughput_no_mfu": plots.throughput_vs_gpus(table.assign(mfu=np.nan)),
        "scaling_efficiency": plots.scaling_efficiency(table),
        "gpu_timeline": plots.gpu_timeline(gpu_log_frame()),
        "stage_times": plots.stage_times(reports.stage_table(result)),
        "run_phases": plots.run_phases(reports.run_phases(result)),
        "hours_projection": plots.hours_projection(reports.project_hours(table), 42.75e6),
        "error_distribution": plots.error_distribution(errors),
        "error_bars": plots.error_distribution(None, {"relative_error": {"dnabert": 1e-7, "esm2": 2e-7}}),
        "call_agreement": plots.call_agreement(switches),
        "switch_errors": plots.switch_errors(switches),
    }


def test_figures_have_data_and_render_to_png(prediction_dir, tmp_path):
    for name, fig in all_figures(prediction_dir).items():
        assert isinstance(fig, go.Figure) and len(fig.data) > 0, name
        path = tmp_path / f"{name}.png"
        data = plots.to_png(fig, path)
        width, height = png_size(path.read_bytes())
        assert path.read_bytes() == data and width >= 600 and height >= 200, name


def test_empty_inputs_give_a_message_figure():
    for fig in (plots.throughput_vs_gpus(None), plots.scaling_efficiency(None), plots.gpu_timeline(None, "why"),
                plots.stage_times(None), plots.hours_projection(None), plots.error_distribution(None),
                plots.call_agreement(None), plots.switch_errors(None), plots.regression_trends(None),
                plots.run_phases(None)):
        assert len(fig.data) == 0 and fig.layout.annotations[0].text
        assert png_size(plots.to_png(fig))[0] > 0


def test_png_converter_draws_what_the_figure_holds():
    """The matplotlib twin has the figure's bars, lines, boxes, shapes and texts."""
    fig = go.Figure([go.Bar(x=["a", "b"], y=[1, 2], name="bars"), go.Scatter(x=[0, 1], y=[2, 3], name="line"),
                     go.Box(y=[1, 2, 3, 4], name="box")])
    fig.add_hline(1.5)
    fig.add_annotation(text="hello <b>there</b>", x=0.5, y=0.9, xref="paper", yref="paper", showarrow=False)
    fig.update_layout(title="A <i>title</i>", yaxis_type="log")
    mfig = plots.to_matplotlib(fig)
    ax = mfig.axes[0]
    assert len(ax.patches) >= 2 and ax.get_yscale() == "log"
    texts = [t.get_text() for t in mfig.texts] + [mfig._suptitle.get_text()]
    assert "hello there" in texts and "A title" in texts
    assert len(ax.lines) >= 2  # the scatter line and the hline (plus box whiskers)
    hidden = go.Figure([go.Scatter(y=[1, 2], visible=False), go.Scatter(y=[3, 4])])
    assert len(plots.to_matplotlib(hidden).axes[0].lines) == 1
    with pytest.raises(ValueError, match="heatmap"):
        plots.to_matplotlib(go.Figure(go.Heatmap(z=[[1, 2]])))


def test_renderer_bundle_has_html_png_and_plotly_json():
    fig = go.Figure(go.Scatter(y=[1, 3, 2]), layout={"title": "t"})
    bundle = plots.ReportRenderer().to_mimebundle(fig.to_dict())
    assert "Plotly.newPlot" in bundle["text/html"] and "<script" in bundle["text/html"]
    assert len(bundle["text/html"]) < 100_000  # plotly.js is not repeated in every figure
    assert png_size(__import__("base64").b64decode(bundle["image/png"]))[0] > 0
    assert bundle["application/vnd.plotly.v1+json"]["data"][0]["type"] == "scatter"
    js = plots.plotlyjs_bundle()
    assert len(js["text/html"]) > 1_000_000 and js["text/markdown"] == ""


# ----------------------------------------------------------------------------------------- tables
def test_markdown_and_html_tables():
    df = pd.DataFrame({"name": ["a|b", "c"], "n": [1234567, 2], "x": [0.000012345, np.nan], "ok": [True, False]})
    md = reports.markdown_table(df)
    lines = md.splitlines()
    assert lines[0] == "| name | n | x | ok |" and lines[1] == "|---|---:|---:|---|"
    assert lines[2] == "| a\\|b | 1,234,567 | 1.234e-05 | yes |" and lines[3] == "| c | 2 | – | no |"
    assert "1 of 2 rows shown" in reports.markdown_table(df, max_rows=1)
    shares = reports.markdown_table(pd.DataFrame({"mfu": [0.55], "efficiency": [1.0], "ratio": [0.5]}))
    assert shares.splitlines()[2] == "| 55.00% | 100.0% | 0.5 |"
    page = reports.html_table(df, "caption")
    assert page.count("<tr>") == 3 and 'data-sort="1234567.0"' in page and "addEventListener" in page
    assert "a|b" in page and "<caption" in page


def test_checks_table_names_every_failed_check():
    table = reports.checks_table([("one", True, ""), ("two", None, "skipped here")])
    assert table["passed"].tolist() == ["yes", "skipped"]
    with pytest.raises(AssertionError, match=r"2 of 3 checks failed: a \(x\); b"):
        reports.checks_table([("a", False, "x"), ("b", False, ""), ("c", True, "")])


def test_display_bundles_for_html_and_markdown(monkeypatch):
    shown = []
    monkeypatch.setattr(reports, "_display", lambda bundle, metadata=None: shown.append((bundle, metadata)))
    reports.show_warnings([("a.json", {"warnings": ["w1"]}), ("b.json", {"warnings": ["w1", "w2"]})], "history")
    bundle, metadata = shown[-1]
    assert metadata == {"virnucpro": {"warnings": ["w1", "w2"]}}
    assert bundle["text/markdown"].startswith("> **Warning (history):** w1") and "fff4ce" in bundle["text/html"]
    reports.show_warnings(None)
    assert len(shown) == 1  # nothing shown without warnings
    reports.show_table(pd.DataFrame({"a": [1]}), "cap")
    assert shown[-1][0]["text/markdown"].startswith("**cap**") and "<table" in shown[-1][0]["text/html"]
    reports.show_table(None, "cap")
    assert shown[-1][0]["text/markdown"] == "_cap: no data_\n"


def test_run_warnings_from_results_and_runs():
    assert reports.run_warnings({"warnings": ["w1"], "profile": {"warnings": ["w1", "w2"]}}) == ["w1", "w2"]
    assert reports.run_warnings(None) == []


# ----------------------------------------------------------------------------------------- rendering
def test_index_lists_pages_parameters_warnings_and_provenance(tmp_path):
    (tmp_path / "html").mkdir()
    for name in ("01_a.md", "html/01_a.html", "01_a.ipynb"):
        (tmp_path / name).write_text("x")
    ok = reports.NotebookReport("01_a", "First notebook", {"input": "x.fa", "gpus": 0}, seconds=1.25,
                                ipynb=str(tmp_path / "01_a.ipynb"), html=str(tmp_path / "html/01_a.html"),
                                markdown=str(tmp_path / "01_a.md"), warnings=["demo profile: beware"])
    bad = reports.NotebookReport("02_b", "Second", {}, status="failed",
                                 error="notebooks/02_b.ipynb cell 4: ValueError: boom")
    info = reports.provenance(ROOT)
    assert info["git_commit"] and info["versions"]["plotly"] and info["versions"]["virnucpro-kernel"]
    html_path, md_path = reports.write_index(tmp_path, "demo", [ok, bad], info)
    page, md = html_path.read_text(), md_path.read_text()
    assert 'href="html/01_a.html"' in page and 'href="01_a.md"' in page and "First notebook" in page
    assert "demo profile: beware" in page and "ValueError: boom" in page and info["git_commit"] in page
    assert "[markdown](01_a.md)" in md and "| failed |" in md and "input: x.fa" in md
    assert "> **Warning:** demo profile: beware" in md and "> **Failed:** notebooks/02_b.ipynb cell 4" in md


def test_execution_error_names_notebook_cell_and_error(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# t"),
                                         nbformat.v4.new_code_cell("a = 1"),
                                         nbformat.v4.new_code_cell("a = 2"),
                                         nbformat.v4.new_code_cell("assert a == 3, 'a is not 3'")])
    nb.cells[2].metadata["tags"] = ["injected-parameters"]
    executed = tmp_path / "x.ipynb"
    nbformat.write(nb, executed)

    class Failure(Exception):
        cell_index, ename, evalue, source = 3, "AssertionError", "a is\nnot 3", "assert a == 3, 'a is not 3'"

    line = reports.execution_error(Failure(), executed, Path("notebooks/02_scaling.ipynb"))
    assert line == "notebooks/02_scaling.ipynb cell 3 [assert a == 3, 'a is not 3']: AssertionError: a is not 3"


@pytest.mark.slow
def test_report_renders_pages_and_fails_on_a_failing_cell(tmp_path, capsys):
    """papermill + nbconvert end to end on two tiny notebooks in a scratch repository."""
    (tmp_path / "pyproject.toml").write_text("")
    for stem, code in (("01_ok", "fig = plots.empty_figure('hello', 'a title')\nfig"),
                       ("02_fail", "x = 1\nassert x == 2, 'x is not 2'")):
        nb = nbformat.v4.new_notebook(cells=[
            nbformat.v4.new_markdown_cell(f"# Notebook {stem}"),
            nbformat.v4.new_code_cell("marker_param = 0", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell("from virnucpro_kernel import plots, reports\nplots.setup_notebook()"),
            nbformat.v4.new_code_cell(code),
            nbformat.v4.new_code_cell("reports.show_warnings(['demo profile: beware'])"),
            nbformat.v4.new_code_cell("reports.show_table(__import__('pandas').DataFrame({'a': [1, 2]}), 'tbl')")])
        nb.metadata["kernelspec"] = {"name": "virnucpro", "display_name": "Python (virnucpro)", "language": "python"}
        (tmp_path / "notebooks").mkdir(exist_ok=True)
        nbformat.write(nb, tmp_path / "notebooks" / f"{stem}.ipynb")
        (tmp_path / "params" / stem).mkdir(parents=True)
        (tmp_path / "params" / stem / "demo.yaml").write_text("marker_param: 7\n")
    out = tmp_path / "reports" / "demo"
    built = reports.build_reports("demo", out, root=tmp_path, log=lambda *_: None)
    assert [r.status for r in built] == ["ok", "failed"]
    assert built[1].error == "notebooks/02_fail.ipynb cell 4 [x = 1]: AssertionError: x is not 2"
    html = (out / "html" / "01_ok.html").read_text()
    assert html.count("Plotly.newPlot") == 1 and "window.Plotly" in html and "require.min.js" not in html
    assert "marker_param" not in html  # input hidden
    md = (out / "01_ok.md").read_text()
    pngs = list((out / "01_ok_files").glob("*.png"))
    assert len(pngs) == 1 and f"({pngs[0].parent.name}/{pngs[0].name})" in md
    assert "| a |" in md and "> **Warning:** demo profile: beware" in md and "<script" not in md
    assert "demo profile: beware" in (out / "index.html").read_text()
    # the command: exit status 2, one line per failed notebook
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        status = reports.main(["--params", "demo", "--only", "02_fail"])
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and err == ["virnucpro: error: report: notebooks/02_fail.ipynb cell 4 [x = 1]: AssertionError: x is not 2"]
