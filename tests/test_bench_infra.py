"""Benchmark infrastructure: workloads, timing, GPU monitor, result schema, regression check.

Fast and CPU-only, except the tests marked for CUDA, which run where a GPU is visible."""

from __future__ import annotations

import json
import math
import re
import time

import pytest
import torch

from virnucpro_kernel.bench import monitor, regression, schema, timing, workloads
from virnucpro_kernel.errors import VirNucProError
from virnucpro_kernel.fasta import read_fasta_pairs

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _read_fa(path):
    text = path.read_text()
    headers = re.findall(r"^>(.*)$", text, flags=re.M)
    seqs = [line for line in text.splitlines() if line and not line.startswith(">")]
    return headers, seqs


_RC = str.maketrans("ACGTN", "TGCAN")


# ------------------------------------------------------------------------------------------- workloads
@pytest.mark.parametrize("name,n", [("tiny", 10), ("small", 100), ("medium", 1000)])
def test_workload_counts_and_format(tmp_path, name, n):
    info = workloads.write_workload(name, tmp_path / f"{name}.fa")
    headers, seqs = _read_fa(tmp_path / f"{name}.fa")
    assert headers == [f"read_{i}" for i in range(n)]
    assert len(seqs) == n and all(len(s) == 150 for s in seqs)
    assert set("".join(seqs)) <= set("ACGTN")
    assert info["reads"] == n and info["bases"] == 150 * n and info["read_length"] == 150
    assert info["seed"] == workloads.get_preset(name)["seed"]
    assert not (tmp_path / f"{name}.fa.tmp").exists()


def test_preset_sizes_are_the_documented_ones():
    sizes = {name: workloads.get_preset(name)["reads"] for name in workloads.preset_names()}
    assert sizes == {"tiny": 10, "small": 100, "medium": 1000, "large": 10_000, "xl": 1_000_000}
    seeds = [workloads.get_preset(n)["seed"] for n in sizes]
    assert len(set(seeds)) == len(seeds)
    with pytest.raises(VirNucProError, match="unknown data size"):
        workloads.get_preset("huge")


def test_workload_is_deterministic_and_independent_of_chunking(tmp_path):
    a = workloads.write_workload("small", tmp_path / "a.fa")
    b = workloads.write_workload("small", tmp_path / "b.fa")
    c = workloads.write_workload("small", tmp_path / "c.fa", chunk_reads=7)
    data = (tmp_path / "a.fa").read_bytes()
    assert data == (tmp_path / "b.fa").read_bytes() == (tmp_path / "c.fa").read_bytes()
    assert a["sha256"] == b["sha256"] == c["sha256"]
    # other seeds give other reads
    assert workloads.write_workload("tiny", tmp_path / "t.fa")["sha256"] != a["sha256"]


@pytest.mark.parametrize("name", ["tiny", "small", "medium", "large"])
def test_workload_matches_committed_checksum(tmp_path, name):
    info = workloads.write_workload(name, tmp_path / "w.fa")
    assert info["committed_sha256_match"] is True, (name, info["sha256"])
    assert workloads.write_workload(name, tmp_path / "w100.fa", read_length=100)["committed_sha256_match"] is None


def test_reads_are_windows_of_the_shipped_genomes_on_both_strands(tmp_path):
    genomes = [seq for path in workloads.genome_files() for _, seq in read_fasta_pairs(path)]
    info = workloads.write_workload("medium", tmp_path / "m.fa")
    _, seqs = _read_fa(tmp_path / "m.fa")
    forward = [any(s in g for g in genomes) for s in seqs[:200]]
    reverse = [any(s.translate(_RC)[::-1] in g for g in genomes) for s in seqs[:200]]
    assert all(f or r for f, r in zip(forward, reverse))
    assert 400 <= info["reverse_complemented"] <= 600  # about half of 1,000
    assert 0 < sum(reverse) < 200 and 0 < sum(forward) < 200


def test_xl_is_streamed_in_blocks():
    blocks = workloads.iter_read_blocks("xl", chunk_reads=1000)
    first, reads, reverse = next(blocks)
    assert first == 0 and reads.shape == (1000, 150) and reverse.shape == (1000,)
    second, _, _ = next(blocks)
    assert second == 1000
    blocks.close()


# ---------------------------------------------------------------------------------------------- timing
def test_time_repeated_on_cpu():
    calls = []

    def work():
        calls.append(1)
        time.sleep(0.005)

    t = timing.time_repeated(work, repetitions=4, warmup=2, device="cpu")
    assert len(calls) == 6
    assert t["clock"] == "wall" and t["repetitions"] == 4 and len(t["seconds_all"]) == 4
    assert 0.004 <= t["seconds_min"] <= t["seconds"] <= t["seconds_max"] < 1.0
    assert t["spread"] == pytest.approx((t["seconds_max"] - t["seconds_min"]) / t["seconds"])
    json.dumps(t)
    with pytest.raises(ValueError):
        timing.time_repeated(work, repetitions=1, device="cpu", clock="events")
    with pytest.raises(ValueError):
        timing.time_repeated(work, repetitions=0, device="cpu")


def test_summarize_seconds_median_and_spread():
    s = timing.summarize_seconds([3.0, 1.0, 2.0, 10.0, 2.5])
    assert s["seconds"] == 2.5 and s["seconds_min"] == 1.0 and s["seconds_max"] == 10.0
    assert s["spread"] == pytest.approx(9.0 / 2.5)


def test_memory_stage_and_leak_check_on_cpu():
    with timing.memory_stage("cpu") as mem:
        _ = [0] * 1000
    assert mem["peak_allocated_gb"] is None and mem["peak_reserved_gb"] is None and mem["ratio"] is None
    assert mem["host_peak_rss_gb"] > 0
    with timing.LeakCheck("cpu") as lc:
        pass
    assert lc.leak_mb is None and lc.flagged is False
    assert set(lc.as_dict()) >= {"leak_mb", "leak_flagged"}


def test_leak_check_threshold():
    lc = timing.LeakCheck("cpu")
    lc.before_bytes, lc.after_bytes = 1 * timing.MB, 151 * timing.MB
    assert lc.leak_mb == pytest.approx(150.0) and lc.flagged
    lc.after_bytes = 51 * timing.MB
    assert not lc.flagged
    lc.after_bytes = 101 * timing.MB  # exactly 100 MB more: not over the line
    assert not lc.flagged


def test_host_rss():
    assert 0 < timing.host_peak_rss_gb() < 1024
    rss = timing.host_rss_gb()
    assert rss is None or 0 < rss <= timing.host_peak_rss_gb(include_children=True) + 0.1


def test_mfu_and_flops():
    assert timing.ESM2_3B_FLOPS_PER_TOKEN == pytest.approx(5.66e9, rel=1e-3)
    assert timing.transformer_flops_per_token(2560, 36) == timing.ESM2_3B_FLOPS_PER_TOKEN
    # anchors: 80,959 tok/s against a 790 TFLOP/s ceiling is 58% MFU
    assert timing.mfu(80_959, timing.ESM2_3B_FLOPS_PER_TOKEN, 790) == pytest.approx(0.58, abs=0.005)
    assert timing.mfu(None, 1e9, 790) is None and timing.mfu(1000, 1e9, None) is None
    assert timing.mfu(1000, 1e9, 0) is None


def test_matmul_ceiling_on_cpu():
    if not torch.cuda.is_available():
        assert timing.measure_matmul_ceiling() is None
    assert timing.measure_matmul_ceiling("cpu") is None
    tflops = timing.measure_matmul_ceiling("cpu", n=128, dtype=torch.float32, repetitions=3, warmup=1,
                                           on_cpu=True)
    assert 1e-5 < tflops < 100


# --------------------------------------------------------------------------------------------- monitor
class FakeBackend:
    """Two GPUs: gpu 0 cycles through utilisations, gpu 1 reports no power."""

    name = "fake"
    devices = [("0", "Fake GPU A"), ("1", "Fake GPU B")]
    utils = [0.0, 100.0, 60.0, 20.0]

    def __init__(self):
        self.k = 0
        self.closed = False

    def sample(self):
        u = self.utils[self.k % len(self.utils)]
        self.k += 1
        return [{"gpu": "0", "util_pct": u, "mem_used_gb": 1.0 + self.k, "sm_clock_mhz": 1980.0, "power_w": 300.0},
                {"gpu": "1", "util_pct": 50.0, "mem_used_gb": 2.0, "sm_clock_mhz": None, "power_w": None}]

    def close(self):
        self.closed = True


def test_monitor_without_gpu_reports_unavailable(tmp_path):
    backend, reason = monitor.open_backend()
    if backend is not None:
        backend.close()
        pytest.skip("a GPU is visible here")
    assert reason
    with monitor.GPUMonitor(tmp_path / "logs", interval_s=0.01) as mon:
        time.sleep(0.05)
    s = mon.summary()
    assert s["available"] is False and s["reason"] and s["log"] is None and s["samples"] == 0
    assert s["per_gpu"] == {} and s["busy_fraction"] is None
    assert not (tmp_path / "logs").exists()
    json.dumps(s)


def test_monitor_logs_and_summarises(tmp_path):
    fake = FakeBackend()
    with monitor.GPUMonitor(tmp_path / "logs", interval_s=0.01, backend=fake) as mon:
        time.sleep(0.15)
    assert fake.closed
    s = mon.summary()
    assert s["available"] and s["backend"] == "fake" and s["samples"] >= 5
    log = tmp_path / "logs" / s["log"].split("/")[-1]
    assert re.fullmatch(r"gpu_metrics_\d{8}-\d{6}\.log", log.name)
    df = monitor.read_gpu_log(log)
    assert list(df.columns) == list(monitor.COLUMNS)
    assert len(df) == 2 * s["samples"]
    g0 = df[df.gpu == "0"]
    assert s["per_gpu"]["0"]["util_mean"] == pytest.approx(g0.util_pct.mean())
    assert s["per_gpu"]["0"]["busy_fraction"] == pytest.approx((g0.util_pct >= 50).mean())
    assert s["per_gpu"]["0"]["mem_max_gb"] == pytest.approx(g0.mem_used_gb.max())
    assert s["per_gpu"]["0"]["name"] == "Fake GPU A" and s["per_gpu"]["0"]["power_mean_w"] == 300.0
    assert s["per_gpu"]["1"]["power_mean_w"] is None and s["per_gpu"]["1"]["busy_fraction"] == 1.0
    assert df[df.gpu == "1"].power_w.isna().all()
    assert s["busy_fraction"] == pytest.approx((df.util_pct >= 50).mean())
    assert monitor.summarize_log(log)["0"]["util_p50"] == s["per_gpu"]["0"]["util_p50"]
    json.dumps(s)


def test_monitor_survives_a_failing_backend(tmp_path):
    class Broken(FakeBackend):
        def sample(self):
            raise RuntimeError("driver went away")

    with monitor.GPUMonitor(tmp_path, interval_s=0.01, backend=Broken()) as mon:
        time.sleep(0.05)
    s = mon.summary()
    assert s["errors"] >= 2 and s["samples"] == 0 and s["per_gpu"]["0"]["util_mean"] is None


# ---------------------------------------------------------------------------------------------- schema
def _result(tokens_per_s=1000.0, seconds=1.0, lo=0.99, hi=1.01, suite="encoders", rel_err=6.7e-3):
    res = schema.new_result(suite, ["virnucpro", "benchmark", "--suite", suite],
                            hardware={"gpu_name": "NVIDIA H200", "n_gpus": 1, "cpu": "x", "cpu_count": 16},
                            workload={"name": "small", "reads": 100, "frames": 160, "tokens": 8400})
    for name in ("esm2", "dnabert"):
        res["stages"][name] = {"tokens_per_s": tokens_per_s, "sequences_per_s": tokens_per_s / 50, "mfu": 0.5,
                               "seconds": seconds, "seconds_min": lo, "seconds_max": hi, "peak_memory_gb": 10.0,
                               "reserved_memory_gb": 12.0, "n_gpus": 1, "path": "optimized"}
    res["relative_error"] = rel_err
    res["call_agreement"] = 0.999
    res["memory"] = {"host_peak_rss_gb": 1.5, "leak_mb": 3.0, "leak_flagged": False}
    return res


VALIDATORS = [pytest.param(False, id="builtin"),
              pytest.param(True, id="jsonschema",
                           marks=pytest.mark.skipif(__import__("importlib").util.find_spec("jsonschema") is None,
                                                    reason="jsonschema not installed"))]


@pytest.mark.parametrize("use_jsonschema", VALIDATORS)
def test_good_result_validates(use_jsonschema):
    res = _result()
    res["scaling_efficiency"] = {"1": 1.0, "2": 0.99, "4": 0.98}
    res["ratios"] = {"esm2_speedup_vs_reference": 18.8}
    res["relative_error"] = {"esm2": 6.7e-3, "scores": 1e-5}
    res["call_agreement"] = {"chunks": 0.9987}
    res["gpu_monitor"] = {"available": False, "log": None, "samples": 0, "busy_fraction": None, "per_gpu": {}}
    assert schema.result_errors(res, use_jsonschema) == []
    assert schema.validate_result(res, use_jsonschema) is res


BAD = {
    "missing suite": lambda r: r.pop("suite"),
    "missing git_commit": lambda r: r.pop("git_commit"),
    "missing hardware.gpu_name": lambda r: r["hardware"].pop("gpu_name"),
    "missing workload.tokens": lambda r: r["workload"].pop("tokens"),
    "missing stage tokens_per_s": lambda r: r["stages"]["esm2"].pop("tokens_per_s"),
    "missing stage seconds": lambda r: r["stages"]["esm2"].pop("seconds"),
    "string tokens_per_s": lambda r: r["stages"]["esm2"].__setitem__("tokens_per_s", "fast"),
    "bool seconds": lambda r: r["stages"]["esm2"].__setitem__("seconds", True),
    "negative seconds": lambda r: r["stages"]["esm2"].__setitem__("seconds", -1.0),
    "n_gpus string": lambda r: r["hardware"].__setitem__("n_gpus", "one"),
    "reads float": lambda r: r["workload"].__setitem__("reads", 10.5),
    "unknown suite": lambda r: r.__setitem__("suite", "everything"),
    "unknown path": lambda r: r["stages"]["esm2"].__setitem__("path", "fast"),
    "bad timestamp": lambda r: r.__setitem__("timestamp", "yesterday"),
    "scaling key": lambda r: r.__setitem__("scaling_efficiency", {"two": 0.9}),
    "agreement over 1": lambda r: r.__setitem__("call_agreement", 1.5),
    "relative_error string": lambda r: r.__setitem__("relative_error", "small"),
    "leak_flagged missing": lambda r: r["memory"].pop("leak_flagged"),
    "stages list": lambda r: r.__setitem__("stages", []),
    "warnings not strings": lambda r: r.__setitem__("warnings", [1]),
}


@pytest.mark.parametrize("use_jsonschema", VALIDATORS)
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_result_is_rejected(case, use_jsonschema):
    res = _result()
    BAD[case](res)
    assert schema.result_errors(res, use_jsonschema), case
    with pytest.raises(schema.ResultSchemaError):
        schema.validate_result(res, use_jsonschema)


def test_new_result_identity():
    res = schema.new_result("engine", "virnucpro benchmark --suite engine", workload={"reads": 10})
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", res["timestamp"])
    assert isinstance(res["git_commit"], str) and (res["git_commit"] == "unknown"
                                                   or re.fullmatch(r"[0-9a-f]{40}", res["git_commit"]))
    hw = res["hardware"]
    assert {"gpu_name", "n_gpus", "cpu", "cpu_count", "torch", "python"} <= set(hw)
    assert hw["n_gpus"] == torch.cuda.device_count()
    assert res["workload"] == {"reads": 10, "frames": None, "tokens": None}
    schema.validate_result(res)
    with pytest.raises(ValueError):
        schema.new_result("fastest", "x", workload={"reads": 1})


def test_stage_entry_and_write_result(tmp_path):
    t = timing.summarize_seconds([2.0, 2.2, 1.9])
    res = _result()
    res["stages"]["esm2"] = schema.stage_entry(t, tokens=84_000, sequences=1000, n_gpus=2,
                                               flops_per_token=5.66e9, ceiling_tflops=790.0,
                                               memory={"peak_allocated_gb": 30.0, "peak_reserved_gb": 40.0,
                                                       "ratio": 0.75})
    st = res["stages"]["esm2"]
    assert st["tokens_per_s"] == pytest.approx(42_000) and st["sequences_per_s"] == pytest.approx(500)
    assert st["mfu"] == pytest.approx(42_000 * 5.66e9 / (2 * 790e12))
    assert st["peak_memory_gb"] == 30.0 and st["memory_ratio"] == 0.75
    res["ratios"] = {"nan_ratio": float("nan")}
    json_path, md_path = schema.write_result(res, tmp_path / "out")
    assert json_path.name == "encoders.json" and md_path.name == "encoders.md"
    back = json.loads(json_path.read_text())
    assert back["ratios"]["nan_ratio"] is None
    schema.validate_result(back)
    md = md_path.read_text()
    for text in ("# Benchmark `encoders`", "| esm2 | optimized | 2 |", "42,000", "NVIDIA H200", "virnucpro benchmark"):
        assert text in md
    bad = _result()
    bad["stages"]["esm2"]["seconds"] = "slow"
    with pytest.raises(schema.ResultSchemaError):
        schema.write_result(bad, tmp_path / "bad")
    assert not (tmp_path / "bad" / "encoders.json").exists()


# ------------------------------------------------------------------------------------------ regression
def _verdicts(rows):
    return {r["figure"]: r["verdict"] for r in rows}


def test_planted_slowdown_is_flagged():
    base = _result()
    slow = _result(tokens_per_s=800.0, seconds=1.25, lo=1.24, hi=1.26)  # 20% fewer tokens per second
    rows = regression.compare(slow, base)
    v = _verdicts(rows)
    assert v["esm2.tokens_per_s"] == "REGRESSION" and v["esm2.seconds"] == "REGRESSION"
    assert regression.has_regression(rows)
    row = next(r for r in rows if r["figure"] == "esm2.tokens_per_s")
    assert row["change_pct"] == pytest.approx(-20.0) and row["noise_pct"] < 3
    table = regression.format_table(rows)
    assert table.startswith("| figure | baseline | current | change | noise (±) | verdict |")
    assert "**REGRESSION**" in table and "-20.0%" in table and "**4 regressions**" in table


def test_planted_slowdown_in_seconds_alone_is_flagged():
    base = _result()
    slow = _result(seconds=1.2, lo=1.19, hi=1.21)
    for st in slow["stages"].values():
        st["tokens_per_s"] = None  # a stage that reports time only
    v = _verdicts(regression.compare(slow, base))
    assert v == {"esm2.seconds": "REGRESSION", "dnabert.seconds": "REGRESSION", "relative_error": "ok"}


def test_equal_figures_pass():
    rows = regression.compare(_result(), _result())
    assert len(rows) == 5 and set(_verdicts(rows).values()) == {"ok"}
    assert not regression.has_regression(rows)
    assert "No regression in 5 figures" in regression.format_table(rows)


def test_small_slowdown_under_threshold_passes():
    rows = regression.compare(_result(tokens_per_s=920.0, seconds=1 / 0.92, lo=1.08, hi=1.09), _result())
    assert not regression.has_regression(rows)


def test_slowdown_inside_wide_spread_is_not_flagged():
    base = _result(lo=0.7, hi=1.3)  # repetitions spread over 60% of the median
    slow = _result(tokens_per_s=800.0, seconds=1.25, lo=0.9, hi=1.6)
    rows = regression.compare(slow, base)
    assert not regression.has_regression(rows)
    row = next(r for r in rows if r["figure"] == "esm2.seconds")
    assert row["noise_pct"] == pytest.approx(100 * math.hypot(0.6, 0.7 / 1.25))
    # the same slowdown with tight repetitions is flagged
    assert regression.has_regression(regression.compare(_result(tokens_per_s=800.0, seconds=1.25, lo=1.2, hi=1.3),
                                                        _result(lo=0.98, hi=1.02)))


def test_improvement_is_better():
    v = _verdicts(regression.compare(_result(tokens_per_s=1300.0, seconds=0.77, lo=0.76, hi=0.78), _result()))
    assert v["esm2.tokens_per_s"] == "better" and v["esm2.seconds"] == "better"


def test_relative_error_is_tracked():
    v = _verdicts(regression.compare(_result(rel_err=8e-3), _result(rel_err=6.7e-3)))
    assert v["relative_error"] == "REGRESSION"
    v = _verdicts(regression.compare(_result(rel_err={"esm2": 5e-8}), _result(rel_err={"esm2": 1e-8})))
    assert v["relative_error.esm2"] == "ok"  # under the fp32 rounding level
    v = _verdicts(regression.compare(_result(rel_err={"esm2": 5e-3}), _result(rel_err={"esm2": 6.7e-3})))
    assert v["relative_error.esm2"] == "better"


def test_comparability_notes():
    base, cur = _result(), _result()
    cur["workload"]["reads"] = 1000
    del cur["stages"]["dnabert"]
    notes = regression.comparability_warnings(cur, base)
    assert any("reads differs" in n for n in notes) and any("dnabert" in n for n in notes)
    rows = regression.compare(cur, base)
    record = regression.comparison_record(rows, "base.json", notes=notes)
    assert record["regression"] is False and "note: workload reads differs" in record["table"]
    cur["comparison"] = record
    schema.validate_result(cur)


def test_save_load_baseline_and_history(tmp_path):
    base = _result()
    base["timestamp"] = "2026-01-01T00:00:00Z"
    base["comparison"] = {"baseline": "older.json"}
    path = regression.save_baseline(base, tmp_path / "hist" / "baseline.json")
    loaded = regression.load_baseline(path)
    assert "comparison" not in loaded
    assert not regression.has_regression(regression.compare(_result(), loaded))

    later = _result(tokens_per_s=1100.0)
    later["timestamp"], later["git_commit"] = "2026-02-01T00:00:00Z", "b" * 40
    later["scaling_efficiency"] = {"1": 1.0, "2": 0.97}
    schema.write_result(later, tmp_path / "hist" / "run2")
    (tmp_path / "hist" / "run.json").write_text(json.dumps({"not": "a result"}))
    df = regression.load_history(tmp_path / "hist")
    assert set(df.file.unique()) == {str(path), str(tmp_path / "hist" / "run2" / "encoders.json")}
    assert list(df.timestamp.drop_duplicates()) == sorted(df.timestamp.unique())
    tps = df[(df.stage == "esm2") & (df.figure == "tokens_per_s")]
    assert list(tps.value) == [1000.0, 1100.0] and list(tps.git_commit)[1] == "b" * 40
    assert set(df[df.stage.isna()].figure) >= {"relative_error", "call_agreement", "scaling_efficiency.2"}
    assert regression.load_history([]).empty


# ------------------------------------------------------------------------------------------------ CUDA
@cuda
def test_cuda_timing_memory_and_leak():
    dev = torch.device("cuda", 0)
    a = torch.randn(2048, 2048, device=dev)
    for clock in ("events", "wall"):
        t = timing.time_repeated(lambda: a @ a, repetitions=5, warmup=2, device=dev, clock=clock)
        assert t["clock"] == clock and 0 < t["seconds_min"] <= t["seconds"] <= t["seconds_max"] < 1
    with timing.memory_stage(dev) as mem:
        x = torch.empty(256 * timing.MB, dtype=torch.uint8, device=dev)
        del x
    assert mem["peak_allocated_gb"] >= 0.25 and mem["peak_reserved_gb"] >= mem["peak_allocated_gb"]
    assert 0 < mem["ratio"] <= 1
    keep = []
    with timing.LeakCheck(dev) as lc:
        keep.append(torch.empty(200 * timing.MB, dtype=torch.uint8, device=dev))
    assert lc.flagged and lc.leak_mb == pytest.approx(200, abs=5)
    with timing.LeakCheck(dev) as lc:
        y = torch.empty(200 * timing.MB, dtype=torch.uint8, device=dev)
        del y
    assert not lc.flagged
    assert timing.measure_matmul_ceiling(dev, n=4096, repetitions=5) > 10


@cuda
@pytest.mark.parametrize("backend", [None, "pynvml"])
def test_cuda_monitor(tmp_path, backend):
    dev = torch.device("cuda", 0)
    a = torch.randn(4096, 4096, device=dev, dtype=torch.bfloat16)
    with monitor.GPUMonitor(tmp_path, interval_s=0.1, backend=backend) as mon:
        end = time.time() + 1.0
        while time.time() < end:
            for _ in range(50):
                a @ a
            torch.cuda.synchronize()
    s = mon.summary()
    assert s["available"], s["reason"]
    assert s["samples"] >= 5 and s["per_gpu"]
    df = monitor.read_gpu_log(s["log"])
    assert len(df) == s["samples"] * len(s["per_gpu"])
    g = next(iter(s["per_gpu"].values()))
    assert g["mem_max_gb"] > 0 and g["util_max"] > 0 and g["power_mean_w"] > 0 and g["sm_clock_mean_mhz"] > 0
