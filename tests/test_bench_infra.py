"""Benchmark infrastructure: workloads, timing, GPU monitor, result schema, regression check.

Fast and CPU-only, except the tests marked for CUDA, which run where a GPU is visible."""

from __future__ import annotations

import json
import math
import re
import time

import pytest
import torch

from conftest import ROOT
from virnucpro_kernel.bench import host, monitor, regression, schema, timing, workloads
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
    assert t["clock"] == "wall" and t["repetitions"] == 4 and len(t["seconds_all"]) == 4 and t["loops"] == 1
    assert len(t["cpu_seconds_all"]) == 4 and all(c >= 0 for c in t["cpu_seconds_all"])
    assert 0.004 <= t["seconds_min"] <= t["seconds"] <= t["seconds_max"] < 1.0
    assert t["spread"] == pytest.approx((t["seconds_max"] - t["seconds_min"]) / t["seconds"])
    json.dumps(t)
    with pytest.raises(ValueError):
        timing.time_repeated(work, repetitions=1, device="cpu", clock="events")
    with pytest.raises(ValueError):
        timing.time_repeated(work, repetitions=0, device="cpu")


class FakeClock:
    """Stands in for ``time`` in ``bench.timing``: each call of ``work`` takes ``step`` seconds, of the wall
    clock and of CPU time alike."""

    def __init__(self, step):
        self.now, self.step, self.calls = 0.0, step, 0

    def perf_counter(self):
        return self.now

    process_time = perf_counter

    def work(self):
        self.calls += 1
        self.now += self.step


def test_time_repeated_loops_short_calls(monkeypatch):
    clock = FakeClock(0.001)
    monkeypatch.setattr(host, "time", clock)
    t = timing.time_repeated(clock.work, repetitions=3, warmup=1, device="cpu", min_seconds=0.05)
    # calibration: 1 call (1 ms) -> 60 calls (60 ms >= 50 ms); then 3 repetitions of 60 calls
    assert t["loops"] == 60 and clock.calls == 1 + 1 + 60 + 3 * 60
    assert t["seconds"] == pytest.approx(0.001) and t["seconds_all"] == pytest.approx([0.001] * 3)
    assert t["cpu_seconds"] == pytest.approx(0.001) and len(t["cpu_seconds_all"]) == 3
    entry = schema.stage_entry(t, tokens=150, sequences=1)
    assert entry["loops"] == 60 and entry["repetitions"] == 3 and entry["cpu_seconds_all"] == t["cpu_seconds_all"]
    assert entry["tokens_per_s"] == pytest.approx(150_000)
    assert regression.timed_seconds(entry) == pytest.approx(0.06)
    # with a probe: a block of probe calls (at least probe_seconds) before each repetition
    clock = FakeClock(0.001)
    monkeypatch.setattr(host, "time", clock)
    probed = []

    def probe():
        probed.append(clock.now)
        clock.now += 0.004

    t = timing.time_repeated(clock.work, repetitions=3, warmup=0, device="cpu", min_seconds=0.05, probe=probe,
                             probe_seconds=0.02)
    assert t["probe_cpu_seconds_all"] == pytest.approx([0.004] * 3) and t["probe"] == "probe"
    k = (len(probed) - 1) // 4  # calibration: 1 call, then k; then k before each of the 3 repetitions
    assert len(probed) == 1 + 4 * k and k * 0.004 >= 0.02 and t["seconds"] == pytest.approx(0.001)
    with pytest.raises(ValueError, match="host work"):
        timing.time_repeated(clock.work, device="cuda:0" if torch.cuda.is_available() else "meta", probe=probe)
    assert isinstance(timing.machine_probe(), int) and timing.PROBE_ID == "machine_probe v1"
    # a call already longer than min_seconds runs once per repetition
    slow = FakeClock(0.2)
    monkeypatch.setattr(host, "time", slow)
    assert timing.time_repeated(slow.work, repetitions=3, warmup=0, device="cpu", min_seconds=0.05)["loops"] == 1
    once = schema.stage_entry({"seconds": 1.0})  # a bare time: one repetition of one call
    assert once["loops"] == 1 and once["repetitions"] == 1 and "cpu_seconds" not in once


def test_planted_slowdown_hook(monkeypatch):
    monkeypatch.delenv(timing.TEST_SLOWDOWN_ENV, raising=False)
    assert timing.planted_slowdown("prepare_vectorized") == 0.0
    monkeypatch.setenv(timing.TEST_SLOWDOWN_ENV, "0.3")
    assert timing.planted_slowdown("prepare_vectorized") == 0.3 and timing.planted_slowdown("esm2_only") == 0.3
    monkeypatch.setenv(timing.TEST_SLOWDOWN_ENV, "prepare_reference=0.5, end_to_end=0.25")
    assert timing.planted_slowdown("prepare_reference") == 0.5 and timing.planted_slowdown("end_to_end") == 0.25
    assert timing.planted_slowdown("prepare_vectorized") == 0.0
    for bad in ("fast", "-0.1", "prepare_vectorized=x"):
        monkeypatch.setenv(timing.TEST_SLOWDOWN_ENV, bad)
        with pytest.raises(VirNucProError, match=timing.TEST_SLOWDOWN_ENV):
            timing.planted_slowdown("prepare_vectorized")
    clock = FakeClock(0.01)
    monkeypatch.setattr(host, "time", clock)
    slowed = timing.slowed(clock.work, 0.3)
    def perf_counter():  # each reading advances the clock a little, so the spin after a call ends
        clock.now += 0.0001
        return clock.now

    clock.perf_counter = perf_counter
    clock.process_time = perf_counter
    t = timing.time_repeated(slowed, repetitions=3, warmup=0, device="cpu")
    assert t["seconds"] == pytest.approx(0.013, abs=0.0005)  # 10 ms of work + 30% planted
    assert timing.slowed(clock.work, 0.0) == clock.work
    # work on the CPU: the plant is 30% more CPU time, whatever the call waited for (here 10 ms of CPU time in
    # 25 ms of wall clock)
    waited = FakeClock(0.01)
    waited.cpu = 0.0

    def work():
        waited.now += 0.025
        waited.cpu += 0.01

    def spin_cpu():
        waited.cpu += 0.0001
        waited.now += 0.0001
        return waited.cpu

    waited.process_time = spin_cpu
    monkeypatch.setattr(host, "time", waited)
    planted = timing.slowed(work, 0.3, clock="cpu")
    c0 = waited.cpu
    planted()
    assert waited.cpu - c0 == pytest.approx(0.013, abs=0.0005)  # not 0.01 + 0.3 * 0.025


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
def _samples(seconds, spread, reps):
    """``reps`` repetition times with median ``seconds`` and relative range ``spread``."""
    if reps == 1:
        return [seconds]
    return [seconds * (1 - spread / 2)] + [seconds] * (reps - 2) + [seconds * (1 + spread / 2)]


def _cpu_samples(cpu, spread, reps):
    """``reps`` CPU times with median ``cpu``: from 5 repetitions, quartiles (inclusive method) at
    ``cpu * (1 -/+ spread / 2)`` and extremes twice as far; below 5, range ``spread``."""
    if reps < 5:
        return _samples(cpu, spread, reps)
    return ([cpu * (1 - spread), cpu * (1 - spread / 2)] + [cpu] * (reps - 4)
            + [cpu * (1 + spread / 2), cpu * (1 + spread)])


def _result(tokens_per_s=1000.0, seconds=1.0, lo=0.99, hi=1.01, suite="encoders", rel_err=6.7e-3, reps=5):
    res = schema.new_result(suite, ["virnucpro", "benchmark", "--suite", suite],
                            hardware={"gpu_name": "NVIDIA H200", "n_gpus": 1, "cpu": "x", "cpu_count": 16},
                            workload={"name": "small", "reads": 100, "frames": 160, "tokens": 8400})
    for name in ("esm2", "dnabert"):
        res["stages"][name] = {"tokens_per_s": tokens_per_s, "sequences_per_s": tokens_per_s / 50, "mfu": 0.5,
                               "seconds": seconds, "seconds_min": lo, "seconds_max": hi,
                               "seconds_all": ([lo] + [seconds] * (reps - 2) + [hi])[-reps:], "repetitions": reps,
                               "tokens": 1000, "peak_memory_gb": 10.0, "reserved_memory_gb": 12.0, "n_gpus": 1,
                               "path": "optimized"}
    res["relative_error"] = rel_err
    res["call_agreement"] = 0.999
    res["memory"] = {"host_peak_rss_gb": 1.5, "leak_mb": 3.0, "leak_flagged": False}
    return res


def _run(seconds=1.0, spread=0.0, reps=5, cpu=None, cpu_spread=0.0, loops=1, tokens=150_000, probe=0.01,
         stage="prepare_vectorized", suite="prepare"):
    """A result with one stage timed ``reps`` times (median ``seconds``, range ``spread``), with CPU times
    (median ``cpu``; ``cpu_spread``: their interquartile range over the median from 5 repetitions, their range
    below) and a steady machine probe (``probe`` seconds per call) when ``cpu`` is given, as the prepare suite
    writes them."""
    res = schema.new_result(suite, ["virnucpro", "benchmark", "--suite", suite],
                            hardware={"gpu_name": None, "n_gpus": 0, "cpu": "x", "cpu_count": 2},
                            workload={"name": "medium", "reads": 1000, "frames": 1600, "tokens": 84_000})
    timing_ = timing.summarize_seconds(_samples(seconds, spread, reps))
    timing_.update(repetitions=reps, loops=loops)
    if cpu is not None:
        timing_.update(cpu_seconds_all=_cpu_samples(cpu, cpu_spread, reps), probe=timing.PROBE_ID,
                       probe_cpu_seconds_all=[probe] * reps)
    res["stages"][stage] = schema.stage_entry(timing_, tokens=tokens, sequences=1000, path="optimized")
    return schema.validate_result(res)


def test_good_result_validates():
    res = _result()
    res["scaling_efficiency"] = {"1": 1.0, "2": 0.99, "4": 0.98}
    res["ratios"] = {"esm2_speedup_vs_reference": 18.8}
    res["relative_error"] = {"esm2": 6.7e-3, "scores": 1e-5}
    res["call_agreement"] = {"chunks": 0.9987}
    res["gpu_monitor"] = {"available": False, "log": None, "samples": 0, "busy_fraction": None, "per_gpu": {}}
    assert schema.result_errors(res) == []
    assert schema.validate_result(res) is res


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
    "zero repetitions": lambda r: r["stages"]["esm2"].__setitem__("repetitions", 0),
    "zero loops": lambda r: r["stages"]["esm2"].__setitem__("loops", 0),
    "negative cpu time": lambda r: r["stages"]["esm2"].__setitem__("cpu_seconds_all", [1.0, -1.0]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_result_is_rejected(case):
    res = _result()
    BAD[case](res)
    assert schema.result_errors(res), case
    with pytest.raises(schema.ResultSchemaError):
        schema.validate_result(res)


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
    assert row["change_pct"] == pytest.approx(-20.0) and row["worse_pct"] == pytest.approx(25.0)
    assert row["noise_pct"] == pytest.approx(100 * (0.02 + regression.REL_FLOOR + 0.001 / 1.0))  # max(2%, 1.6%)
    table = regression.format_table(rows)
    assert table.startswith("| figure | baseline | current | change | noise (±) | repetitions | verdict |")
    assert "**REGRESSION**" in table and "-20.0%" in table and "**4 regressions** in 5 judged figures" in table
    assert "| 5 / 5 |" in table and "Rule (threshold 10%):" in table


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
    assert "No regression in 5 judged figures" in regression.format_table(rows)


@pytest.mark.parametrize("slowdown,verdict", [(0.09, "ok"), (0.11, "REGRESSION")])
def test_threshold_is_ten_percent_with_zero_spread(slowdown, verdict):
    """Zero spread and long repetitions: the noise is the floor (about 2%), so the 10% threshold decides."""
    base, cur = _run(seconds=1.0), _run(seconds=1.0 + slowdown)
    rows = regression.compare(cur, base)
    assert _verdicts(rows) == {"prepare_vectorized.tokens_per_s": verdict, "prepare_vectorized.seconds": verdict}
    assert all(r["noise_pct"] == pytest.approx(100 * (regression.REL_FLOOR + 0.001)) for r in rows)
    assert all(r["bound_pct"] == pytest.approx(10.0) for r in rows)
    assert regression.DEFAULT_THRESHOLD == 0.10


def _cli_compare(monkeypatch, tmp_path, baseline: dict, current: dict):
    """``virnucpro benchmark --suite prepare --compare-to BASE`` with the suite's measurement replaced by
    ``current``: the command's exit status, its output and the result it wrote."""
    from virnucpro_kernel import cli
    from virnucpro_kernel.bench import suites

    monkeypatch.setitem(suites.RUNNERS, "prepare", lambda ctx: json.loads(json.dumps(current)))
    base_path = tmp_path / "baseline.json"
    regression.save_baseline(baseline, base_path)
    out = tmp_path / "out"
    status = cli.main(["benchmark", "--suite", "prepare", "--data-size", "tiny", "--out", str(out),
                       "--compare-to", str(base_path)])
    return status, json.loads((out / "prepare.json").read_text())


@pytest.mark.parametrize("slowdown,status", [(0.09, 0), (0.11, 1)])
@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_compare_to_exit_status_at_9_and_11_percent(monkeypatch, tmp_path, capsys, slowdown, status, clock):
    """The command a user runs: 9% slower passes, 11% slower exits 1 (zero spread, 10% threshold)."""
    if clock == "cpu":  # a host stage: judged on CPU time; its wall clock moves the other way and is not judged
        base, cur = _run(seconds=1.0, cpu=1.0), _run(seconds=0.8, cpu=1.0 + slowdown)
    else:
        base, cur = _run(seconds=1.0), _run(seconds=1.0 + slowdown)
    got, written = _cli_compare(monkeypatch, tmp_path, base, cur)
    printed = capsys.readouterr().out
    assert got == status
    assert written["comparison"]["regression"] is bool(status)
    assert ("**REGRESSION**" in printed) is bool(status)
    figure = "prepare_vectorized.cpu_seconds" if clock == "cpu" else "prepare_vectorized.seconds"
    row = next(r for r in written["comparison"]["rows"] if r["figure"] == figure)
    assert row["change_pct"] == pytest.approx(100 * slowdown)
    assert row["verdict"] == ("REGRESSION" if status else "ok")
    assert "Rule (threshold 10%):" in printed and "REGRESSION when slowdown > max(10%, max(spread" in printed
    assert written["comparison"]["rule"]["threshold"] == 0.10
    assert written["comparison"]["rule"]["min_repetitions"] == 3


def test_noise_is_the_larger_of_both_runs_spreads():
    for base, cur in ((_run(spread=0.3), _run(seconds=1.25)), (_run(), _run(seconds=1.25, spread=0.3))):
        rows = regression.compare(cur, base)
        assert _verdicts(rows)["prepare_vectorized.seconds"] == "ok"  # 25% slower, inside 30% + floors
        assert rows[0]["noise_pct"] == pytest.approx(100 * (0.3 + regression.REL_FLOOR + 0.001), rel=0.02)
    assert "Noise bands reach 32%" in regression.format_table(rows)
    rows = regression.compare(_run(seconds=1.25, spread=0.1), _run(spread=0.2))
    assert rows[0]["noise_pct"] == pytest.approx(100 * (0.2 + regression.REL_FLOOR + 0.001), rel=0.01)
    assert _verdicts(rows)["prepare_vectorized.seconds"] == "REGRESSION"  # 25% > 22.1%
    assert _verdicts(regression.compare(_run(seconds=1.25, spread=0.24), _run(spread=0.05)))[
        "prepare_vectorized.seconds"] == "ok"  # 25% < 26.1%


def test_identical_medians_with_realistic_spread_never_flag():
    """Back-to-back runs of one commit: same median, different repetitions (a slow outlier, a fast one, a
    noisy run beside a quiet one); neither a regression nor an improvement, whatever the spread."""
    rng = __import__("random").Random(7)
    for _ in range(300):
        reps_b, reps_c = rng.choice([3, 5, 7]), rng.choice([3, 5, 7])
        med = rng.uniform(0.02, 5.0)

        def run(reps):
            lo, hi = med * (1 - rng.uniform(0.0, 0.4)), med * (1 + rng.uniform(0.0, 1.5))
            half = (reps - 3) // 2
            samples = ([lo] + [rng.uniform(lo, med) for _ in range(half)] + [med]
                       + [rng.uniform(med, hi) for _ in range(half)] + [hi])
            rng.shuffle(samples)
            res = _run(seconds=med, reps=reps, cpu=med)
            st = res["stages"]["prepare_vectorized"]
            st.update(seconds_all=samples, seconds_min=lo, seconds_max=hi, cpu_seconds_all=samples[::-1])
            return res

        base, cur = run(reps_b), run(reps_c)
        for rows in (regression.compare(cur, base), regression.compare(cur, base, threshold=0.0)):
            assert {r["verdict"] for r in rows if r["metric"] == "cpu_seconds"} == {"ok"}, rows
        for st in (base, cur):
            del st["stages"]["prepare_vectorized"]["cpu_seconds_all"]  # judged on the wall clock
        assert {r["verdict"] for r in regression.compare(cur, base, threshold=0.0)} == {"ok"}


def test_too_short_to_compare():
    base, cur = _run(seconds=0.004), _run(seconds=0.008)  # twice as slow, but a timed repetition is 4-8 ms
    rows = regression.compare(cur, base)
    assert set(_verdicts(rows).values()) == {"too short to compare"} and not regression.has_regression(rows)
    assert rows[0]["reason"] == "timed repetition 4 ms in both runs, under 10 ms" and rows[0]["noise_pct"] is None
    assert "No figure judged: all 2 left out" in regression.format_table(rows)
    table = regression.format_table(regression.compare(_run(seconds=0.02), base))  # one side too short
    assert "too short to compare: timed repetition 4 ms in the baseline, under 10 ms" in table
    # the same calls timed 10 at a time (loops): 40 ms repetitions, judged
    rows = regression.compare(_run(seconds=0.008, loops=10), _run(seconds=0.004, loops=10))
    assert set(_verdicts(rows).values()) == {"REGRESSION"}
    assert rows[0]["noise_pct"] == pytest.approx(100 * (regression.REL_FLOOR + 0.001 / 0.04))


@pytest.mark.parametrize("reps_base,reps_cur", [(1, 5), (5, 1), (2, 2), (1, 1)])
def test_too_few_repetitions(reps_base, reps_cur):
    rows = regression.compare(_run(seconds=3.0, reps=reps_cur), _run(seconds=1.0, reps=reps_base))
    assert set(_verdicts(rows).values()) == {"too few repetitions"} and not regression.has_regression(rows)
    assert rows[0]["reason"] == f"{reps_base} / {reps_cur} repetitions (baseline / current), 3 needed"
    assert rows[0]["noise_pct"] is None and f"| {reps_base} / {reps_cur} |" in regression.format_table(rows)
    # three on each side is enough
    assert regression.has_regression(regression.compare(_run(seconds=3.0, reps=3), _run(seconds=1.0, reps=3)))


def test_older_results_without_repetitions_are_not_comparable():
    base, cur = _result(), _result(tokens_per_s=500.0, seconds=2.0, lo=1.99, hi=2.01)
    for st in base["stages"].values():
        del st["repetitions"], st["seconds_all"]  # a result written before repetitions were recorded
    rows = regression.compare(cur, base)
    stage_rows = [r for r in rows if r["stage"]]
    assert {r["verdict"] for r in stage_rows} == {"not comparable"} and not regression.has_regression(rows)
    assert all(r["reason"] == "no repetition count in the baseline (older result file)" for r in stage_rows)
    # committed results read as they are: what they lack is listed, nothing is flagged
    for path in sorted((ROOT / "reports").glob("*/*.json")):
        old = regression.load_baseline(path)
        rows = regression.compare(old, old)
        assert not regression.has_regression(rows)
        assert {r["verdict"] for r in rows} <= {"ok", "too few repetitions", "not comparable"}
        for r in rows:
            assert r["verdict"] == "ok" or r["reason"]


def test_host_stages_are_judged_on_cpu_time_against_the_machine_probe():
    base = _run(seconds=1.0, spread=0.05, cpu=0.9, cpu_spread=0.05)
    busy = _run(seconds=1.6, spread=0.05, cpu=0.92, cpu_spread=0.05)  # waited for a core, did the same work
    v = _verdicts(regression.compare(busy, base))
    assert v == {"prepare_vectorized.cpu_seconds": "ok", "prepare_vectorized.tokens_per_s": "not judged",
                 "prepare_vectorized.seconds": "not judged"}
    slower = _run(seconds=1.0, spread=0.05, cpu=1.2, cpu_spread=0.05)  # 33% more work, wall clock unchanged
    rows = regression.compare(slower, base)
    assert _verdicts(rows)["prepare_vectorized.cpu_seconds"] == "REGRESSION"
    floor = regression.REL_FLOOR + 0.001 / 0.9
    assert rows[0]["noise_pct"] == pytest.approx(100 * (0.05 + floor), rel=1e-6)  # the larger spread
    assert rows[0]["probe_noise_pct"] == pytest.approx(100 * (0.05 + floor), rel=1e-6)  # the larger one
    assert rows[0]["machine_pct"] == pytest.approx(0.0) and rows[0]["probe_worse_pct"] == pytest.approx(100 / 3)
    assert rows[0]["worse_pct"] == pytest.approx(100 / 3)
    # the machine itself 40% slower (the probe too): the same code, not a regression
    drift = _run(seconds=1.4, spread=0.05, cpu=1.26, cpu_spread=0.05, probe=0.014)
    rows = regression.compare(drift, base)
    assert _verdicts(rows)["prepare_vectorized.cpu_seconds"] == "ok"
    assert rows[0]["change_pct"] == pytest.approx(40.0) and rows[0]["machine_pct"] == pytest.approx(40.0)
    assert rows[0]["probe_worse_pct"] == pytest.approx(0.0, abs=1e-9)
    assert "+40.0%; machine +40.0%, relative to it +0.0%" in regression.format_table(rows)
    # 30% more work on a machine 40% slower: still a regression
    both = _run(seconds=1.8, spread=0.05, cpu=1.26 * 1.3, cpu_spread=0.05, probe=0.014)
    assert _verdicts(regression.compare(both, base))["prepare_vectorized.cpu_seconds"] == "REGRESSION"
    # a probe that ran twice as fast while the CPU time stayed: not a regression of the code either
    fast_probe = _run(seconds=1.0, spread=0.05, cpu=0.92, cpu_spread=0.05, probe=0.005)
    assert _verdicts(regression.compare(fast_probe, base))["prepare_vectorized.cpu_seconds"] == "ok"
    # CPU time on one side only (a baseline written before it was recorded): not comparable, not the wall clock
    old = _run(seconds=1.0, spread=0.05)
    rows = regression.compare(busy, old)
    assert set(_verdicts(rows).values()) == {"not comparable"} and "older result file" in rows[0]["reason"]
    other_probe = _run(seconds=1.0, spread=0.05, cpu=0.9, cpu_spread=0.05)
    other_probe["stages"]["prepare_vectorized"]["probe"] = "machine_probe v0"
    assert _verdicts(regression.compare(busy, other_probe))["prepare_vectorized.cpu_seconds"] == "not comparable"


def test_cpu_time_band_is_the_larger_spread():
    """A steady probe: CPU time over the probe's spreads as much as CPU time; the band is the larger spread."""
    base = _run(seconds=1.0, cpu=1.0, cpu_spread=0.12)
    rows = regression.compare(_run(seconds=1.0, cpu=1.13, cpu_spread=0.24), base)  # 13% < 24 + 2.1%
    assert _verdicts(rows)["prepare_vectorized.cpu_seconds"] == "ok"
    assert rows[0]["noise_pct"] == pytest.approx(100 * (0.24 + regression.REL_FLOOR + 0.001 / 1.0))
    assert rows[0]["probe_noise_pct"] == pytest.approx(rows[0]["noise_pct"]) == pytest.approx(rows[0]["bound_pct"])
    assert "relative to the machine 26.1% (CPU time alone 26.1%)" in regression.format_table(rows)
    rows = regression.compare(_run(seconds=1.0, cpu=1.3, cpu_spread=0.24), base)  # 30% > 26.1%: not 12 + 24 + 2.1%
    assert _verdicts(rows)["prepare_vectorized.cpu_seconds"] == "REGRESSION"


def test_one_far_off_repetition_does_not_hide_a_slowdown():
    """On a shared machine one repetition in five is often far off; the band is the interquartile range, so a
    30% slowdown still shows (the whole range, 60% here, would have hidden it), and the far-off repetition alone
    flags nothing."""
    base = _run(seconds=1.0, cpu=0.5)
    base["stages"]["prepare_vectorized"]["cpu_seconds_all"] = [0.5, 0.5, 0.5, 0.5, 0.8]
    assert regression.spread(base["stages"]["prepare_vectorized"], "cpu") == 0.0
    slower = _run(seconds=1.0, cpu=0.65)
    rows = regression.compare(slower, base)
    assert _verdicts(rows)["prepare_vectorized.cpu_seconds"] == "REGRESSION"
    assert rows[0]["noise_pct"] == pytest.approx(100 * (regression.REL_FLOOR + 0.001 / 0.5))
    assert _verdicts(regression.compare(base, _run(seconds=1.0, cpu=0.5)))["prepare_vectorized.cpu_seconds"] == "ok"
    three = _run(seconds=1.0, cpu=0.5, reps=3)
    three["stages"]["prepare_vectorized"]["cpu_seconds_all"] = [0.5, 0.5, 0.8]
    assert regression.spread(three["stages"]["prepare_vectorized"], "cpu") == pytest.approx(0.6)  # the range


def _in_processes(run: dict, per_process: list[list[float]], probe: float | list[float] = 0.01) -> dict:
    """``run`` with its stage timed in several processes (CPU times: one list per process; ``probe``: the probe's
    time, one for all or one per process), merged by ``timing.merge_processes`` as ``timing.time_in_processes``
    merges them."""
    st = run["stages"]["prepare_vectorized"]
    probes = probe if isinstance(probe, list) else [probe] * len(per_process)
    parts = [dict(seconds_all=list(cpus), cpu_seconds_all=list(cpus), probe=timing.PROBE_ID,
                  probe_cpu_seconds_all=[p] * len(cpus), repetitions=len(cpus), loops=st["loops"], warmup=1,
                  clock="wall") for cpus, p in zip(per_process, probes)]
    run["stages"]["prepare_vectorized"] = schema.stage_entry(timing.merge_processes(parts), tokens=st["tokens"],
                                                             sequences=st["sequences"], path="optimized")
    return schema.validate_result(run)


def test_several_processes_the_band_is_the_drift_between_them():
    """Timed in 3 processes of 5 repetitions: the figure is the median of the processes' medians and the band
    their range, so one process whose repetitions scatter widely neither hides a 30% slowdown nor raises a
    false alarm; drift between processes widens the band. Expected values by hand."""
    base = _in_processes(_run(seconds=1.0, cpu=0.1, reps=15), [[0.10, 0.10, 0.10, 0.10, 0.10],
                                                               [0.10, 0.16, 0.16, 0.16, 0.10],  # median 0.16
                                                               [0.102, 0.102, 0.102, 0.102, 0.102]])
    st = base["stages"]["prepare_vectorized"]
    assert regression.process_medians(st, st["cpu_seconds_all"]) == [0.10, 0.16, 0.102]
    assert st["cpu_seconds"] == 0.102 and regression.stage_time(st, cpu=True) == 0.102
    assert regression.spread(st, "cpu") == pytest.approx(0.06 / 0.102)  # the range of the medians
    quiet = [[0.10] * 5, [0.101] * 5, [0.099] * 5]
    base = _in_processes(_run(seconds=1.0, cpu=0.1, reps=15), quiet)
    assert regression.spread(base["stages"]["prepare_vectorized"], "cpu") == pytest.approx(0.02)
    noisy = [[0.13, 0.26, 0.13, 0.26, 0.13], [0.13] * 5, [0.131] * 5]  # every other repetition of one far off
    rows = regression.compare(_in_processes(_run(seconds=1.0, cpu=0.13, reps=15), noisy), base)
    assert _verdicts(rows)["prepare_vectorized.cpu_seconds"] == "REGRESSION"  # 30% > 10%, band 2% + floor
    assert rows[0]["worse_pct"] == pytest.approx(30.0) and rows[0]["probe_worse_pct"] == pytest.approx(30.0)
    assert rows[0]["noise_pct"] == pytest.approx(100 * (0.02 + regression.REL_FLOOR + 0.001 / 0.1))  # the larger
    same = [[0.10, 0.2, 0.10, 0.2, 0.10], [0.104] * 5, [0.098] * 5]
    rows = regression.compare(_in_processes(_run(seconds=1.0, cpu=0.1, reps=15), same), base)
    assert _verdicts(rows)["prepare_vectorized.cpu_seconds"] == "ok"  # medians 0.10, 0.104, 0.098: +0%
    drifting = [[0.12] * 5, [0.09] * 5, [0.10] * 5]  # processes 30% apart: band 30% + floor
    rows = regression.compare(_in_processes(_run(seconds=1.0, cpu=0.12, reps=15), [[0.12] * 5, [0.15] * 5,
                                                                                    [0.12] * 5]),
                              _in_processes(_run(seconds=1.0, cpu=0.1, reps=15), drifting))
    assert rows[0]["worse_pct"] == pytest.approx(20.0) and _verdicts(rows)["prepare_vectorized.cpu_seconds"] == "ok"
    assert rows[0]["noise_pct"] == pytest.approx(100 * (0.3 + regression.REL_FLOOR + 0.001 / 0.1))
    broken = _in_processes(_run(seconds=1.0, cpu=0.1, reps=15), quiet)
    broken["stages"]["prepare_vectorized"]["repetitions_per_process"] = [5, 5, 4]
    rows = regression.compare(broken, base)
    assert _verdicts(rows)["prepare_vectorized.cpu_seconds"] == "not comparable"
    assert rows[0]["reason"] == "repetitions_per_process does not add up to the CPU times recorded in the current run"


def test_a_process_slowed_by_the_machine_hides_nothing():
    """Measured with a core kept busy: one process of three ran 40% slower and the probe beside it as much.
    The CPU time's own spread (40%) is listed but is no bound; relative to the probe the planted 30% shows
    beyond its band, and the same loaded process in unchanged code flags nothing."""
    base = _in_processes(_run(seconds=1.0, cpu=0.075, reps=15), [[0.0745] * 5, [0.0735] * 5, [0.0813] * 5],
                         probe=[0.0121, 0.0122, 0.0135])
    planted = _in_processes(_run(seconds=1.0, cpu=0.098, reps=15), [[0.0979] * 5, [0.0967] * 5, [0.1354] * 5],
                            probe=[0.0118, 0.0120, 0.0163])
    rows = regression.compare(planted, base)
    assert _verdicts(rows)["prepare_vectorized.cpu_seconds"] == "REGRESSION"
    row = rows[0]
    assert row["worse_pct"] == pytest.approx(100 * (0.0979 / 0.0745 - 1))  # +31%: under its own spread
    assert row["noise_pct"] > row["worse_pct"]  # the CPU time's own spread (43%) is listed, not a bound
    assert row["bound_pct"] == pytest.approx(max(10.0, row["probe_noise_pct"]))
    assert row["probe_worse_pct"] > 30 > row["bound_pct"]  # relative to the machine: +33% against 10%
    assert "relative to the machine" in regression.format_table(rows)
    unchanged = _in_processes(_run(seconds=1.0, cpu=0.075, reps=15), [[0.0725] * 5, [0.0824] * 5, [0.0797] * 5],
                              probe=[0.0120, 0.0121, 0.0130])
    rows = regression.compare(unchanged, base)
    assert _verdicts(rows)["prepare_vectorized.cpu_seconds"] == "ok" and not regression.has_regression(rows)
    # relative to the machine 30% slower, but the CPU time itself under the threshold: the probe ran fast
    fast_probe = _in_processes(_run(seconds=1.0, cpu=0.075, reps=15), [[0.0760] * 5, [0.0755] * 5, [0.0765] * 5],
                               probe=[0.0094] * 3)
    rows = regression.compare(fast_probe, base)
    assert rows[0]["probe_worse_pct"] > 25 and _verdicts(rows)["prepare_vectorized.cpu_seconds"] == "ok"


def test_merge_processes_keeps_every_repetition_in_process_order():
    parts = [dict(seconds_all=[1.0, 3.0, 2.0], cpu_seconds_all=[0.9, 2.9, 1.9], probe="machine_probe v1",
                  probe_cpu_seconds_all=[0.1, 0.1, 0.1], repetitions=3, loops=4, warmup=1, clock="wall"),
             dict(seconds_all=[5.0, 5.0, 6.0], cpu_seconds_all=[4.9, 4.9, 5.9], probe="machine_probe v1",
                  probe_cpu_seconds_all=[0.2, 0.2, 0.2], repetitions=3, loops=2, warmup=1, clock="wall"),
             dict(seconds_all=[4.0, 4.0, 4.0], cpu_seconds_all=[3.9, 3.9, 3.9], probe="machine_probe v1",
                  probe_cpu_seconds_all=[0.3, 0.3, 0.3], repetitions=3, loops=3, warmup=1, clock="wall")]
    m = timing.merge_processes(parts)
    assert m["seconds_all"] == [1.0, 3.0, 2.0, 5.0, 5.0, 6.0, 4.0, 4.0, 4.0]
    assert m["seconds"] == 4.0 and m["cpu_seconds"] == 3.9  # medians 2, 5, 4 (CPU: 1.9, 4.9, 3.9)
    assert m["seconds_min"] == 1.0 and m["seconds_max"] == 6.0
    assert m["probe_cpu_seconds_all"] == [0.1] * 3 + [0.2] * 3 + [0.3] * 3
    assert (m["repetitions"], m["processes"], m["repetitions_per_process"]) == (9, 3, [3, 3, 3])
    assert (m["loops"], m["loops_all"]) == (2, [4, 2, 3])
    entry = schema.stage_entry(m, tokens=100, sequences=10)
    assert entry["processes"] == 3 and entry["repetitions_per_process"] == [3, 3, 3]
    assert entry["cpu_seconds"] == 3.9 and entry["tokens_per_s"] == 25.0


def _pid_work(path: str):
    """Work that appends its process's id to ``path`` at each call (module level: fresh processes import it)."""
    import os as _os

    def work():
        with open(path, "a") as fh:
            fh.write(f"{_os.getpid()}\n")
    return work


def _failing_work(message: str):
    raise ValueError(message)


def test_time_in_processes_runs_each_part_in_a_fresh_process(tmp_path):
    log = tmp_path / "pids"
    t = timing.time_in_processes(_pid_work, (str(log),), processes=2, repetitions=3, warmup=1,
                                 probe=timing.machine_probe, probe_seconds=0.001)
    pids = log.read_text().split()
    assert len(set(pids)) == 2 and str(__import__("os").getpid()) not in pids
    assert (t["processes"], t["repetitions_per_process"], t["repetitions"]) == (2, [3, 3], 6)
    assert len(t["cpu_seconds_all"]) == len(t["probe_cpu_seconds_all"]) == len(t["seconds_all"]) == 6
    per_process = [pids.count(p) for p in dict.fromkeys(pids)]  # warm-up + 3 repetitions, in order
    assert per_process == [4, 4] and t["probe"] == timing.PROBE_ID
    with pytest.raises(ValueError):
        timing.time_in_processes(_pid_work, (str(log),), processes=0)
    with pytest.raises(RuntimeError, match="in a fresh process failed .*ValueError: no such reads"):
        timing.time_in_processes(_failing_work, ("no such reads",), processes=1)
    with pytest.raises(ValueError, match="module's top level"):
        timing.time_in_processes(lambda: _pid_work, processes=1)


_CLOCK = FakeClock(0.01)


def _clock_work():
    return _CLOCK.work


def test_each_fresh_process_applies_the_planted_slowdown(monkeypatch, capsys):
    """What one fresh process does (``host._child``), run here on a fake clock: the test hook's plant makes
    each call's CPU time 100% longer."""
    def reading():  # each reading advances the clock a little, so the plant's spin ends
        _CLOCK.now += 0.0001
        return _CLOCK.now

    monkeypatch.setattr(_CLOCK, "perf_counter", reading, raising=False)
    monkeypatch.setattr(_CLOCK, "process_time", reading, raising=False)
    monkeypatch.setattr(host, "time", _CLOCK)
    cpu = {}
    for plant in (0.0, 1.0):
        request = {"build": host._name(_clock_work), "args": [], "plant": plant, "probe": None,
                   "kw": {"repetitions": 3, "warmup": 0}}
        monkeypatch.setattr("sys.stdin", __import__("io").StringIO(json.dumps(request)))
        host._child()
        cpu[plant] = json.loads(capsys.readouterr().out.splitlines()[-1])["cpu_seconds"]
    assert cpu[0.0] == pytest.approx(0.0102, abs=0.0005)  # 10 ms of work and two clock readings
    assert cpu[1.0] == pytest.approx(0.0204, abs=0.001)


def test_cpu_calls_under_ten_milliseconds_are_too_short_to_compare():
    """A 5-ms call timed 200 at a time (1-s repetitions): still too short, whatever the loops."""
    base = _run(seconds=0.005, cpu=0.005, loops=200)
    rows = regression.compare(_run(seconds=0.01, cpu=0.01, loops=200), base)
    assert _verdicts(rows)["prepare_vectorized.cpu_seconds"] == "too short to compare"
    assert "one call takes 5 ms of CPU time, under 10 ms" in rows[0]["reason"] and not regression.has_regression(rows)
    rows = regression.compare(_run(seconds=0.013, cpu=0.013, loops=100), _run(seconds=0.01, cpu=0.01, loops=100))
    assert _verdicts(rows)["prepare_vectorized.cpu_seconds"] == "REGRESSION"


def test_different_work_per_call_is_not_comparable():
    rows = regression.compare(_run(seconds=4.0, tokens=600_000), _run(seconds=1.0))
    assert set(_verdicts(rows).values()) == {"not comparable"}
    assert "different work per call: 150000 vs 600000" in rows[0]["reason"]


def test_improvement_is_better():
    v = _verdicts(regression.compare(_result(tokens_per_s=1300.0, seconds=0.77, lo=0.76, hi=0.78), _result()))
    assert v["esm2.tokens_per_s"] == "better" and v["esm2.seconds"] == "better"
    v = _verdicts(regression.compare(_run(seconds=0.92), _run()))  # 8.7% faster: inside the threshold
    assert v["prepare_vectorized.seconds"] == "ok"


def test_relative_error_is_tracked():
    v = _verdicts(regression.compare(_result(rel_err=8e-3), _result(rel_err=6.7e-3)))
    assert v["relative_error"] == "REGRESSION"
    v = _verdicts(regression.compare(_result(rel_err={"esm2": 5e-8}), _result(rel_err={"esm2": 1e-8})))
    assert v["relative_error.esm2"] == "ok"  # under the fp32 rounding level
    v = _verdicts(regression.compare(_result(rel_err={"esm2": 5e-3}), _result(rel_err={"esm2": 6.7e-3})))
    assert v["relative_error.esm2"] == "better"
    v = _verdicts(regression.compare(_result(rel_err=7.3e-3), _result(rel_err=6.7e-3)))
    assert v["relative_error"] == "ok"  # 9% up


def test_history_tables_use_the_same_rule(tmp_path):
    """Notebook 04: back-to-back runs of one commit show no regression; a planted one is flagged; both
    verdicts are those of ``regression.compare``."""
    import pandas as pd

    from virnucpro_kernel.reports import history as reports

    runs = [_run(seconds=1.0, spread=0.25, cpu=0.5, cpu_spread=0.08),
            _run(seconds=1.6, spread=0.10, cpu=0.52, cpu_spread=0.12),  # same commit on a busier machine
            _run(seconds=1.3, spread=0.05, cpu=0.70, cpu_spread=0.04)]  # 35% more CPU time: a regression
    for k, r in enumerate(runs):
        r["timestamp"], r["git_commit"] = f"2026-01-0{k + 1}T00:00:00Z", str(k + 1) * 40
        schema.write_result(r, tmp_path / f"run{k}")
    files = reports.history_files([tmp_path])
    results = reports.load_results(files)
    table = reports.regression_table(results)
    assert list(table.verdict) == ["ok", "not judged", "not judged", "REGRESSION", "not judged", "not judged"]
    expected = regression.compare(runs[1], runs[0]) + regression.compare(runs[2], runs[1])
    assert list(table.verdict) == [r["verdict"] for r in expected]
    assert list(table.noise_pct.fillna(-1)) == [-1 if r["noise_pct"] is None else r["noise_pct"] for r in expected]
    flagged = reports.regressions(table)
    assert list(flagged.metric) == ["cpu_seconds"] and list(flagged.commit) == ["3" * 12]
    checks = reports.check_history(reports.history_table(files), table)
    assert (checks["passed"] == "yes").all()
    assert "2 judged" in " ".join(checks["detail"])
    assert isinstance(table.timestamp.iloc[0], pd.Timestamp)
    with pytest.raises(AssertionError, match="say why"):
        reports.check_history(reports.history_table(files), table.assign(reason=""))


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
