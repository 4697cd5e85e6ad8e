"""``reports.tables`` and ``reports.history``: the tables the pages show and the checks the notebooks assert."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reports_fixtures import DEMO_WARNING, fake_result, gpu_log_frame, write_run
from virnucpro_kernel.bench import schema
from virnucpro_kernel.errors import VirNucProError
from virnucpro_kernel.reports import history, tables


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("run"))


# ------------------------------------------------------------------------------------------ runs
def test_prediction_tables_and_checks(run):
    calls = tables.calls_at(run, 0.5)
    assert calls is run.sequences  # the run's own threshold: sequences.tsv as written
    assert list(calls["call"]) == ["virus", "no_frames", "others"]
    assert (tables.check_prediction(run, calls, 0.5, run.out / "input.fa")["passed"] == "yes").all()
    hits = tables.viral_hits(run, calls)
    assert list(hits["sequence_id"]) == ["virA"] and hits["description"].iloc[0] == "virA description of virA"
    assert list(tables.sequences_table(calls)["sequence_id"]) == ["virA", "hostB", "no_frame"]
    facts = tables.run_table(run, calls, 0.5)
    assert "calls at the run's threshold 0.5" in set(facts[""]) and len(facts) == 8


def test_another_threshold_calls_again_without_writing(run):
    strict = tables.calls_at(run, 0.95)
    assert list(strict["call"]) == ["others", "no_frames", "others"]
    assert (tables.check_prediction(run, strict, 0.95)["passed"] != "NO").all()
    assert tables.viral_hits(run, strict).empty
    loose = tables.calls_at(run, 0.0)
    hits = tables.viral_hits(run, loose)
    assert list(hits["sequence_id"]) == ["virA", "hostB"] and list(hits["in viral.fa"]) == [True, False]
    assert "calls at this page's threshold 0" in set(tables.run_table(run, loose, 0.0)[""])
    assert list(run.sequences["call"]) == ["virus", "no_frames", "others"]  # nothing written


def test_prediction_check_fails_on_a_missing_record(run):
    with pytest.raises(AssertionError, match="every input record has one row"):
        tables.check_prediction(run, run.sequences.iloc[:2], 0.5, run.out / "input.fa")


def test_missing_run_is_none_or_an_error(tmp_path):
    with pytest.raises(VirNucProError, match="no finished run"):
        tables.read_run(tmp_path / "nothing")
    assert tables.read_run(tmp_path / "nothing", required=False) is None
    assert tables.calls_at(None, 0.5) is None and tables.run_table(None) is None and tables.provenance(None) is None
    assert (tables.check_prediction(None, None, 0.5)["passed"] == "skipped").all()


def test_provenance_caveats_and_warnings(run):
    facts = dict(zip(*tables.provenance(run).T.values))
    assert facts["commit"] == "not recorded in run.json" and facts["profile"] == "demo"
    assert facts["input"].startswith(str(run.out / "input.fa")) and "SHA-256 abababab" in facts["input"]
    assert tables.caveats(run) == ["demo profile"] and tables.caveat(run) == "pipeline check (demo profile)"
    assert tables.warnings_of(run) == [DEMO_WARNING]
    gpu = fake_result()
    assert tables.caveats(gpu) == [] and tables.profile_of(gpu) == "random"
    cpu = fake_result(counts=(1,), tokens_per_s=(10.0,), gpu_name=None)
    cpu["warnings"] = ["demo profile: tiny"]
    assert tables.caveats(cpu) == ["demo profile", "CPU"]
    assert tables.caveats([("f", cpu), gpu]) == ["demo profile", "CPU"]
    both = tables.provenance([gpu, cpu])
    assert list(both["suite"]) == ["scaling", "scaling"] and both["commit"].iloc[0] == "a" * 12
    assert "4 x NVIDIA H200" in both["hardware"].iloc[0] and both["hardware"].iloc[1].startswith("no GPU")
    assert tables.provenance_line(gpu).startswith("scaling result: commit aaaaaaaaaaaa, 2026-01-01T00:00:00Z")


def test_checks_table_names_every_failed_check():
    table = tables.checks_table([("one", True, ""), ("two", None, "skipped here")])
    assert table["passed"].tolist() == ["yes", "skipped"]
    with pytest.raises(AssertionError, match=r"2 of 3 checks failed: a \(x\); b"):
        tables.checks_table([("a", False, "x"), ("b", False, ""), ("c", True, "")])


# ------------------------------------------------------------------------------------------ benchmarks
def test_scaling_table_projection_and_checks():
    table = tables.scaling_table(fake_result())
    assert list(table["n_gpus"]) == [1, 2, 4] and set(table["label"]) == {"engine"}
    assert table["efficiency"].tolist() == pytest.approx([1.0, 0.95, 0.9])
    assert table.attrs == {"unit": "GPUs", "caveat": ""}
    proj = tables.project_hours(table, sample_esm_tokens=3.6e6, max_gpus=8)
    assert list(proj["n_gpus"]) == list(range(1, 9))
    assert proj.loc[proj["n_gpus"] == 1, "hours"].item() == pytest.approx(1.0)  # 3.6M tokens at 1000 tok/s
    assert proj.loc[proj["n_gpus"] == 8, "tokens_per_s"].item() == pytest.approx(1000 * 8 * 0.9)
    assert proj["measured"].tolist() == [True, True, False, True] + [False] * 4
    assert (tables.check_scaling(table)["passed"] == "yes").all()
    with pytest.raises(AssertionError, match="scaling efficiency"):
        tables.check_scaling(table.assign(efficiency=[1.0, 1.5, 0.9]))


def test_no_hours_per_sample_from_cpu_timings():
    cpu = tables.scaling_table(fake_result(counts=(1,), tokens_per_s=(700.0,), gpu_name=None))
    assert cpu.attrs["unit"] == "CPU processes" and "CPU" in cpu.attrs["caveat"]
    assert tables.project_hours(cpu, 42.75e6) is None


def test_stages_phases_gpu_summary_and_log(tmp_path):
    result = fake_result()
    assert list(tables.stage_table(result)["stage"]) == ["engine_1gpu", "engine_2gpu", "engine_4gpu"]
    assert tables.run_phases(result)["start-up, I/O, merge"].tolist() == pytest.approx([1.5] * 3)
    log, why = tables.gpu_log(result, tmp_path)
    assert log is None and "no GPU monitoring log" in why
    assert tables.gpu_summary(result) is None
    result["gpu_monitor"] = {"available": True, "log": "reports/x/logs/gpu_metrics_x.log", "seconds": 62.0,
                             "per_gpu": {"1": {"name": "H200", "util_mean": 90.0, "mem_max_gb": 15.5},
                                         "0": {"name": "H200", "util_mean": 97.0, "mem_max_gb": 15.4}}}
    summary = tables.gpu_summary(result)
    assert list(summary["gpu"]) == ["0", "1"] and summary.attrs["seconds"] == 62.0
    log, why = tables.gpu_log(result, tmp_path)
    assert log is None and why == "GPU monitoring log reports/x/logs/gpu_metrics_x.log is not here"
    (tmp_path / "logs").mkdir()
    gpu_log_frame().assign(timestamp=lambda d: d["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.000+00:00")).to_csv(
        tmp_path / "logs" / "gpu_metrics_x.log", sep="\t", index=False)
    log, where = tables.gpu_log(result, tmp_path)
    assert len(log) == 20 and where.endswith("logs/gpu_metrics_x.log")


def test_equivalence_tables_and_checks():
    result = fake_result("equivalence", tokens_per_s=(1000.0,), counts=(1,))
    result["relative_error"] = {"dnabert": 1e-7, "esm2": 2e-7}
    result["call_agreement"] = 1.0
    result["switches"] = {"optimized": {"options": {"dtype": "bf16"}, "relative_error": {"dnabert": 1e-3, "esm2": 5e-3},
                                        "call_agreement_frame": 0.999, "call_agreement_chunk": 1.0},
                          "packing_only": {"relative_error": {"dnabert": 1e-7, "esm2": 0.0},
                                           "call_agreement_frame": 1.0, "call_agreement_chunk": 1.0}}
    switches = tables.switch_table(result)
    assert list(switches["configuration"]) == ["optimized", "packing_only"]
    assert {"relative_error.dnabert", "relative_error.esm2"} <= set(switches.columns)
    errors = pd.DataFrame({"variant": ["optimized"] * 4, "model": ["dnabert", "dnabert", "esm2", "esm2"],
                           "frame_index": [0, 1, 0, 1], "relative_error": [1e-3, 2e-3, 0.0, 5e-3]})
    assert tables.error_summary(errors, result)["max"].tolist() == [2e-3, 5e-3]
    assert (tables.check_equivalence(errors, switches, 0.01, 0.99)["passed"] == "yes").all()
    with pytest.raises(AssertionError, match="relative errors <= 0.0001"):
        tables.check_equivalence(errors, switches, max_relative_error=1e-4)
    with pytest.raises(AssertionError, match="finite"):
        tables.check_equivalence(errors.assign(relative_error=[np.nan, 0, 0, 0]), switches)
    assert tables.error_summary(None, result)["relative_error"].tolist() == [1e-7, 2e-7]
    only_top = tables.switch_table({"relative_error": 0.1, "call_agreement": {"frame": 0.9}})
    assert only_top["call_agreement_frame"][0] == 0.9 and only_top["relative_error.all"][0] == 0.1


# ------------------------------------------------------------------------------------------ history
def test_regression_history_flags_a_slowdown(tmp_path):
    base = fake_result(tokens_per_s=(1000.0,), counts=(1,), timestamp="2026-01-01T00:00:00Z", commit="1" * 40)
    same = fake_result(tokens_per_s=(1020.0,), counts=(1,), timestamp="2026-01-02T00:00:00Z", commit="2" * 40)
    slow = fake_result(tokens_per_s=(600.0,), counts=(1,), timestamp="2026-01-03T00:00:00Z", commit="3" * 40)
    for i, r in enumerate((base, same, slow)):
        schema.write_result(r, tmp_path / f"run{i}")
    (tmp_path / "run0" / "run.json").write_text("{}")  # not a result: skipped
    files = history.history_files([tmp_path, tmp_path / "missing"])
    results = history.load_results(files + files)  # the same result twice counts once
    assert len(results) == 3
    trends = history.history_table(files)
    assert "scaling/engine_1gpu [1x NVIDIA H200]" in set(trends["series"])
    comparisons = history.regression_table(results, threshold=0.10)
    flagged = history.regressions(comparisons)
    assert set(flagged["metric"]) == {"tokens_per_s", "seconds"}
    assert (flagged["commit"] == "3" * 12).all() and (flagged["baseline_commit"] == "2" * 12).all()
    assert (history.check_history(trends, comparisons)["passed"] == "yes").all()
    with pytest.raises(AssertionError, match="history present"):
        history.check_history(trends.iloc[:0], comparisons.iloc[:0])
    assert (history.check_history(trends.iloc[:0], comparisons.iloc[:0], required=False)["passed"] == "skipped").all()


def test_committed_results_outside_git_is_empty(tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "notebooks").mkdir()
    assert history.committed_results(tmp_path / "reports", root=tmp_path, cache=tmp_path / "cache") == []


def test_committed_results_reads_every_version(tmp_path):
    import subprocess

    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "notebooks").mkdir()

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    git("init", "-q")
    for i, tps in enumerate((1000.0, 500.0)):
        schema.write_result(fake_result(tokens_per_s=(tps,), counts=(1,), timestamp=f"2026-01-0{i + 1}T00:00:00Z"),
                            tmp_path / "res")
        git("add", "res")
        git("commit", "-q", "-m", f"result {i}")
    (tmp_path / "res" / "page.md").write_text("a page rendered from the results")
    git("add", "res")
    git("commit", "-q", "-m", "a page, the results unchanged")  # no new version of the results
    files = history.committed_results("res", root=tmp_path, cache=tmp_path / "cache")
    assert len(files) == 2 and all(f.is_relative_to(tmp_path / "cache") for f in files)
    assert len(history.load_results(files)) == 2


# ------------------------------------------------------------------------------------------ evaluation
def test_evaluation_tables_and_checks(run):
    from virnucpro_kernel import evaluate

    labels = pd.DataFrame({"sequence_id": ["virA", "no_frame", "hostB"], "label": ["virus", "virus", "others"]})
    ev = evaluate(run, labels)
    targets = tables.precision_targets(ev, [0.5, 1.0])
    assert list(targets["level"]) == ["sequence", "sequence", "chunk", "chunk"]
    seq = targets[targets["level"] == "sequence"]
    assert seq["reached"].all() and (seq["precision"] >= seq["target_precision"]).all()
    assert (tables.check_evaluation(ev)["passed"] == "yes").all()


def test_compile_policy_says_whether_the_rule_picked_the_faster_way():
    from virnucpro_kernel.bench.runs import picked_faster
    from virnucpro_kernel.reports import speed

    assert picked_faster(False, eager_s=30.0, cold_s=None, warm_s=36.0)  # small input, compiling slower: right
    assert not picked_faster(True, eager_s=30.0, cold_s=None, warm_s=36.0)
    assert picked_faster(True, eager_s=80.0, cold_s=70.0, warm_s=60.0)  # large input, compiling pays even cold
    assert not picked_faster(True, eager_s=80.0, cold_s=85.0, warm_s=60.0)  # a fresh machine loses: judged cold
    assert speed.compile_policy(None) is None and speed.compile_policy(fake_result()) is None
    result = fake_result()
    result["compile_policy"] = [{"input": "small", "reads": 4096, "esm_tokens": 400000,
                                 "estimated_esm_tokens": 334000.4, "auto_compiles": False, "eager_wall_s": 30.0,
                                 "compiled_cold_wall_s": None, "compiled_warm_wall_s": 36.0,
                                 "auto_picked_faster": True}]
    table = speed.compile_policy(result)
    assert table.loc[0, "estimated_esm_tokens"] == 334000 and bool(table.loc[0, "auto_picked_faster"])
