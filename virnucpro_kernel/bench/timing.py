"""Timing, memory and MFU helpers for benchmarks.

- ``time_repeated``: warm-up, then repetitions timed with CUDA events (GPU) or ``perf_counter`` after
  synchronising every GPU (wall clock, for work spread over devices or host-bound pipelines); median and spread.
  With ``min_seconds``, a call shorter than that is run several times (``loops``) per timed repetition, so that
  each repetition lasts at least ``min_seconds`` and the timer's jitter stays small beside it; every figure is
  then per call.
- From ``bench.host`` (no torch there): ``time_in_processes`` (host work timed in several fresh processes one
  after the other, so that a comparison sees how much the time moves from one process to the next),
  ``machine_probe`` (a fixed piece of host work timed beside each repetition of a host stage, so that a
  comparison can tell a slower machine from slower code), ``planted_slowdown`` / ``slowed`` (the test hook,
  ``VIRNUCPRO_BENCH_TEST_SLOWDOWN``), ``summarize_seconds``.
- ``memory_stage``: peak allocated and reserved GPU memory of a block of work and their ratio.
- ``LeakCheck``: GPU memory still allocated after a run, flagged when more than 100 MB above the level before.
- ``host_peak_rss_gb`` / ``host_rss_gb``: host memory.
- ``measure_matmul_ceiling`` and ``mfu``: model FLOP utilisation against a measured dense bf16 ceiling.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from typing import Any, Callable

import torch

from .host import (MAX_LOOPS, PROBE_ID, TEST_SLOWDOWN_ENV, machine_probe, merge_processes, planted_slowdown,
                   slowed, summarize_seconds, time_blocks, time_in_processes, wall_block)

__all__ = ["MAX_LOOPS", "PROBE_ID", "TEST_SLOWDOWN_ENV", "machine_probe", "merge_processes", "planted_slowdown",
           "slowed", "summarize_seconds", "time_in_processes", "time_repeated", "memory_stage", "LeakCheck",
           "host_peak_rss_gb", "host_rss_gb", "measure_matmul_ceiling", "mfu", "transformer_flops_per_token"]

GB = 1024 ** 3
MB = 1024 ** 2

# Forward FLOPs per token (2 * multiply-adds of the linear layers): 24 h^2 L for ESM-2 3B (5.66 GFLOP).
ESM2_3B_FLOPS_PER_TOKEN = 24 * 2560 ** 2 * 36  # ~5.66 GFLOP
DNABERT_S_FLOPS_PER_TOKEN = 0.23e9  # measured figure of the anchors page (~100 tokens per 500-bp frame)


def transformer_flops_per_token(hidden: int, layers: int, ffn: int | None = None, seq_len: int = 0) -> float:
    """Forward FLOPs per token of a standard transformer encoder.

    Linears: 2 * (4 h^2 attention projections + 2 h ffn) per layer; attention scores and weighted values add
    4 * seq_len * h per layer (0 by default, as in the anchors' 24 h^2 L for ESM-2 3B).
    """
    ffn = 4 * hidden if ffn is None else ffn
    return float(layers * (2 * (4 * hidden * hidden + 2 * hidden * ffn) + 4 * seq_len * hidden))


def _as_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _sync_all_gpus() -> None:
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            torch.cuda.synchronize(i)


def time_repeated(fn: Callable[[], Any], repetitions: int = 5, warmup: int = 1, device=None,
                  clock: str = "auto", min_seconds: float = 0.0, probe: Callable[[], Any] | None = None,
                  probe_seconds: float = 0.1) -> dict:
    """Run ``fn`` ``warmup`` times untimed, then ``repetitions`` times timed.

    ``clock``: ``"events"`` (CUDA events on the current stream of ``device``; GPU time between launch of the
    first and completion of the last kernel, host gaps included), ``"wall"`` (``perf_counter`` with every GPU
    synchronised before and after: use for multi-GPU or host-bound work), ``"auto"`` (events on CUDA, wall
    on CPU).

    Work on the CPU (``device`` is the CPU) is also timed by the CPU time of this process
    (``time.process_time``: user and system time of all its threads): ``cpu_seconds`` (median) and
    ``cpu_seconds_all``. Unlike the wall clock it does not count the time the process waited for a core, so it
    is the figure the regression check judges host stages on (``bench.regression``). With ``probe`` (on the CPU
    only; ``machine_probe``), a block of probe calls lasting at least ``probe_seconds`` of CPU time runs just
    before each timed repetition: ``probe_cpu_seconds_all`` (CPU time per probe call, one per repetition).

    ``min_seconds``: the shortest timed repetition (CPU time on the CPU, the clock's time elsewhere). When one
    call is shorter, each repetition runs ``fn`` ``loops`` times back to back (``loops`` calibrated after the
    warm-up, growing until one block lasts ``min_seconds``, at most ``MAX_LOOPS``), and every figure is divided
    by ``loops``: seconds per call. 0 (the default): one call per repetition. A garbage collection runs before
    each timed repetition (untimed), so that one repetition does not pay for the garbage of the others.

    Returns ``dict(seconds=median, seconds_min, seconds_max, seconds_all, spread, repetitions, loops, warmup,
    clock)`` (plus ``cpu_seconds``, ``cpu_seconds_all`` on the CPU, ``probe``, ``probe_cpu_seconds_all`` with a
    probe) with every time per call, all JSON-serialisable (capture fn's output in a closure if it is needed).
    """
    dev = _as_device(device)
    on_cuda = dev.type == "cuda"
    if clock == "auto":
        clock = "events" if on_cuda else "wall"
    if clock not in ("events", "wall"):
        raise ValueError(f"unknown clock {clock!r}")
    if clock == "events" and not on_cuda:
        raise ValueError("CUDA events need a CUDA device")
    if probe is not None and dev.type != "cpu":
        raise ValueError("a machine probe times host work: use it with device='cpu'")

    def events(work: Callable[[], Any], loops: int) -> tuple[float, None]:
        """GPU seconds of ``loops`` calls of ``work`` back to back, between two CUDA events."""
        with torch.cuda.device(dev):
            torch.cuda.synchronize(dev)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(loops):
                work()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000.0, None

    block = events if clock == "events" else wall_block(_sync_all_gpus if torch.cuda.is_available() else None,
                                                         cpu=not on_cuda)
    return time_blocks(fn, block, repetitions=repetitions, warmup=warmup, min_seconds=min_seconds, probe=probe,
                       probe_seconds=probe_seconds, host=not on_cuda, clock=clock)


# ------------------------------------------------------------------------------------------------ memory
class MemoryStage(dict):
    """Filled when the ``memory_stage`` block exits: ``peak_allocated_gb``, ``peak_reserved_gb``, ``ratio``
    (allocated / reserved: low means fragmentation or an oversized cache), ``start_allocated_gb``,
    ``host_peak_rss_gb``, ``device``. GPU figures are None on CPU."""


@contextlib.contextmanager
def memory_stage(device=None):
    """Record the peak GPU memory of the enclosed work (peak stats are reset on entry)."""
    dev = _as_device(device)
    stage = MemoryStage(device=str(dev), peak_allocated_gb=None, peak_reserved_gb=None, ratio=None,
                        start_allocated_gb=None, host_peak_rss_gb=None)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        stage["start_allocated_gb"] = torch.cuda.memory_allocated(dev) / GB
    try:
        yield stage
    finally:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            alloc = torch.cuda.max_memory_allocated(dev)
            reserved = torch.cuda.max_memory_reserved(dev)
            stage["peak_allocated_gb"] = alloc / GB
            stage["peak_reserved_gb"] = reserved / GB
            stage["ratio"] = alloc / reserved if reserved else None
        stage["host_peak_rss_gb"] = host_peak_rss_gb()


class LeakCheck:
    """GPU memory still allocated after a run: ``with LeakCheck(dev) as lc: run()`` then ``lc.leak_mb``,
    ``lc.flagged`` (more than ``threshold_mb`` above the level before). On CPU, ``leak_mb`` is None and nothing
    is flagged; ``host_rss_delta_mb`` is reported everywhere as information (allocators keep freed memory,
    so it is not a leak signal)."""

    def __init__(self, device=None, threshold_mb: float = 100.0):
        self.device = _as_device(device)
        self.threshold_mb = float(threshold_mb)
        self.before_bytes: int | None = None
        self.after_bytes: int | None = None
        self._rss_before: float | None = None
        self.host_rss_delta_mb: float | None = None

    def _allocated(self) -> int | None:
        if self.device.type != "cuda":
            return None
        gc.collect()
        torch.cuda.synchronize(self.device)
        return torch.cuda.memory_allocated(self.device)

    def start(self) -> "LeakCheck":
        self.before_bytes = self._allocated()
        self._rss_before = host_rss_gb()
        return self

    def stop(self) -> "LeakCheck":
        self.after_bytes = self._allocated()
        rss = host_rss_gb()
        if rss is not None and self._rss_before is not None:
            self.host_rss_delta_mb = (rss - self._rss_before) * GB / MB
        return self

    __enter__ = start

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def leak_mb(self) -> float | None:
        if self.before_bytes is None or self.after_bytes is None:
            return None
        return (self.after_bytes - self.before_bytes) / MB

    @property
    def flagged(self) -> bool:
        leak = self.leak_mb
        return leak is not None and leak > self.threshold_mb

    def as_dict(self) -> dict:
        return {"leak_mb": self.leak_mb, "leak_flagged": self.flagged, "leak_threshold_mb": self.threshold_mb,
                "host_rss_delta_mb": self.host_rss_delta_mb}


def host_peak_rss_gb(include_children: bool = False) -> float | None:
    """Peak resident set size of this process (optionally plus the largest finished child) in GiB."""
    try:
        import resource
    except ImportError:  # not on Linux/macOS
        try:
            import psutil
            info = psutil.Process().memory_info()
            return getattr(info, "peak_wset", info.rss) / GB
        except Exception:
            return None
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit
    if include_children:
        peak += resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * unit
    return peak / GB


def host_rss_gb() -> float | None:
    """Current resident set size of this process in GiB (psutil; None when unavailable)."""
    try:
        import psutil
        return psutil.Process().memory_info().rss / GB
    except Exception:
        return None


# --------------------------------------------------------------------------------------------------- MFU
def measure_matmul_ceiling(device=None, n: int = 8192, dtype: torch.dtype = torch.bfloat16,
                           repetitions: int = 10, warmup: int = 3, on_cpu: bool = False) -> float | None:
    """Dense matrix-product throughput in TFLOP/s (median over repetitions of an n^3 product).

    The MFU denominator. On CPU it returns None unless ``on_cpu=True`` (then pick a small ``n`` and fp32)."""
    dev = _as_device(device)
    if dev.type != "cuda" and not on_cpu:
        return None
    gen = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(n, n, device=dev, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=dev, dtype=dtype, generator=gen)
    out = torch.empty(n, n, device=dev, dtype=dtype)
    timing = time_repeated(lambda: torch.matmul(a, b, out=out), repetitions=repetitions, warmup=warmup,
                           device=dev)
    del a, b, out
    return 2.0 * n ** 3 / timing["seconds"] / 1e12


def mfu(tokens_per_s: float | None, flops_per_token: float | None, ceiling_tflops: float | None) -> float | None:
    """Model FLOP utilisation: ``tokens_per_s * flops_per_token / (ceiling_tflops * 1e12)``; None when any
    input is missing or the ceiling is not positive."""
    if tokens_per_s is None or flops_per_token is None or not ceiling_tflops or ceiling_tflops <= 0:
        return None
    return float(tokens_per_s) * float(flops_per_token) / (float(ceiling_tflops) * 1e12)
