"""Timing, memory and MFU helpers for benchmarks.

- ``time_repeated``: warm-up, then repetitions timed with CUDA events (GPU) or ``perf_counter`` after
  synchronising every GPU (wall clock, for work spread over devices or host-bound pipelines); median and spread.
  With ``min_seconds``, a call shorter than that is run several times (``loops``) per timed repetition, so that
  each repetition lasts at least ``min_seconds`` and the timer's jitter stays small beside it; every figure is
  then per call.
- ``time_in_processes``: the same for host work, in several fresh processes one after the other, so that a
  comparison sees how much the time moves from one process to the next (``merge_processes`` joins them).
- ``machine_probe``: a fixed piece of host work (interpreter and NumPy) timed beside each repetition of a host
  stage, so that a comparison can tell a slower machine (the probe slows too) from slower code.
- ``planted_slowdown`` / ``slowed``: the test hook that plants a known slowdown in a stage (environment variable
  ``VIRNUCPRO_BENCH_TEST_SLOWDOWN``), to check that the regression check catches it.
- ``memory_stage``: peak allocated and reserved GPU memory of a block of work and their ratio.
- ``LeakCheck``: GPU memory still allocated after a run, flagged when more than 100 MB above the level before.
- ``host_peak_rss_gb`` / ``host_rss_gb``: host memory.
- ``measure_matmul_ceiling`` and ``mfu``: model FLOP utilisation against a measured dense bf16 ceiling.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import statistics
import sys
import time
from typing import Any, Callable

import torch

from ..errors import VirNucProError

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


def summarize_seconds(samples: list[float]) -> dict:
    """Median, min, max, all and relative spread ``(max - min) / median`` of repetition times."""
    if not samples:
        raise ValueError("no timing samples")
    med = statistics.median(samples)
    lo, hi = min(samples), max(samples)
    return {
        "seconds": med,
        "seconds_min": lo,
        "seconds_max": hi,
        "seconds_all": list(samples),
        "spread": (hi - lo) / med if med > 0 else 0.0,
    }


MAX_LOOPS = 100_000


# ------------------------------------------------------------------------------------------ machine probe
PROBE_ID = "machine_probe v1"
_PROBE_STATE: dict = {}


def machine_probe() -> int:
    """A fixed piece of host work, a few milliseconds: codon lookups in a dict over a 6 kb sequence and a join
    (interpreter work, like the reference path), then a cast, a cumulative sum and a gather over a 1 MB array
    (memory-bound NumPy, like the vectorized path). It never changes (``PROBE_ID`` names its version): timed
    beside a stage in both runs of a comparison, its change is the change of the machine's speed."""
    import numpy as np

    if not _PROBE_STATE:
        rng = np.random.default_rng(20240229)
        _PROBE_STATE["seq"] = rng.choice(np.frombuffer(b"ACGT", dtype=np.uint8), 6000).tobytes().decode()
        _PROBE_STATE["codons"] = {a + b + c: i for i, (a, b, c) in enumerate(
            (a, b, c) for a in "ACGT" for b in "ACGT" for c in "ACGT")}
        _PROBE_STATE["array"] = rng.integers(0, 255, 1 << 20, dtype=np.uint8)
    seq, codons, arr = _PROBE_STATE["seq"], _PROBE_STATE["codons"], _PROBE_STATE["array"]
    text = ",".join(str(codons[seq[k:k + 3]]) for k in range(0, len(seq) - 2, 3))
    wide = arr.astype(np.int32)
    total = np.cumsum(wide)
    return len(text) + int(np.take(wide, total % wide.size)[-1])


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
    if repetitions < 1:
        raise ValueError("repetitions must be >= 1")
    dev = _as_device(device)
    on_cuda = dev.type == "cuda"
    if clock == "auto":
        clock = "events" if on_cuda else "wall"
    if clock not in ("events", "wall"):
        raise ValueError(f"unknown clock {clock!r}")
    if clock == "events" and not on_cuda:
        raise ValueError("CUDA events need a CUDA device")
    host = not on_cuda
    if probe is not None and dev.type != "cpu":
        raise ValueError("a machine probe times host work: use it with device='cpu'")

    def block(work: Callable[[], Any], loops: int) -> tuple[float, float | None]:
        """Seconds of ``loops`` calls of ``work`` back to back: (clock, process CPU time or None)."""
        if clock == "events":
            with torch.cuda.device(dev):
                torch.cuda.synchronize(dev)
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(loops):
                    work()
                end.record()
                end.synchronize()
                return start.elapsed_time(end) / 1000.0, None
        _sync_all_gpus()
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(loops):
            work()
        _sync_all_gpus()
        t1, c1 = time.perf_counter(), time.process_time()
        return t1 - t0, (c1 - c0 if host else None)

    def calibrate(work: Callable[[], Any], target: float) -> int:
        """Calls of ``work`` per block so that a block lasts at least ``target`` (CPU time on the host)."""
        loops = 1
        wall, cpu = block(work, 1)
        elapsed = cpu if host else wall
        while elapsed < target and loops < MAX_LOOPS:
            want = math.ceil(loops * 1.2 * target / max(elapsed, 1e-9))
            loops = min(MAX_LOOPS, max(2 * loops, want))
            wall, cpu = block(work, loops)
            elapsed = cpu if host else wall
        return loops

    for _ in range(max(0, warmup)):
        fn()
    loops = calibrate(fn, min_seconds) if min_seconds > 0 else 1
    probe_loops = calibrate(probe, probe_seconds) if probe is not None else 0
    walls, cpus, probes = [], [], []
    for _ in range(repetitions):
        gc.collect()
        if probe is not None:
            probes.append(block(probe, probe_loops)[1] / probe_loops)
        wall, cpu = block(fn, loops)
        walls.append(wall / loops)
        if cpu is not None:
            cpus.append(cpu / loops)
    out = summarize_seconds(walls)
    if cpus:
        out.update(cpu_seconds=statistics.median(cpus), cpu_seconds_all=cpus)
    if probes:
        out.update(probe=PROBE_ID if probe is machine_probe else getattr(probe, "__name__", "probe"),
                   probe_cpu_seconds_all=probes)
    out.update(repetitions=repetitions, loops=loops, warmup=warmup, clock=clock)
    return out


# ------------------------------------------------------------------------------------- fresh processes
def _timed_child(build: Callable[..., Callable[[], Any]], args: tuple, plant: float, kw: dict) -> dict:
    """In a fresh process: ``time_repeated`` of the work ``build(*args)`` returns, slowed by ``plant`` (the
    test hook, on CPU time)."""
    return time_repeated(slowed(build(*args), plant, clock="cpu"), **kw)


def time_in_processes(build: Callable[..., Callable[[], Any]], args: tuple = (), processes: int = 3,
                      plant: float = 0.0, **kw) -> dict:
    """``time_repeated(build(*args), device="cpu", **kw)`` in ``processes`` fresh Python processes, one after
    the other, merged by ``merge_processes``.

    Why: on a shared or virtual machine, the CPU time of the same host work moves from one process to the
    next (memory layout, the allocator's state, the caches other work left: 5-15% on a 2-core VM for 75-ms
    calls) by more than the repetitions within one process show. Timing in several processes measures that
    drift, in the same run, and the regression check takes its noise band from it (``bench.regression``).
    ``build`` must be a module-level function (it is sent to the processes by reference) that returns the
    work to time; ``plant``: the test hook's slowdown (``planted_slowdown``), applied in each process. The
    processes start with ``spawn``, so nothing of this process's state (allocator, caches of the work) is
    inherited; each pays its own imports, warm-up and calibration, untimed."""
    import concurrent.futures
    import multiprocessing

    if processes < 1:
        raise ValueError("processes must be >= 1")
    kw = dict(kw, device="cpu")
    parts = []
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context, max_tasks_per_child=1) as pool:
        for _ in range(processes):  # one at a time: two processes timed together would share the cores
            parts.append(pool.submit(_timed_child, build, tuple(args), plant, kw).result())
    return merge_processes(parts)


def merge_processes(parts: list[dict]) -> dict:
    """One timing from ``time_repeated`` outputs of several processes: every repetition, in process order
    (``seconds_all``, ``cpu_seconds_all``, ``probe_cpu_seconds_all``), with ``processes`` and
    ``repetitions_per_process`` to tell them apart. ``cpu_seconds`` (and the wall clock's ``seconds``) is the
    median of the processes' medians; ``loops`` the fewest calls per repetition of any process (``loops_all``:
    each process's)."""
    if not parts:
        raise ValueError("no timings to merge")

    def middle(key: str) -> float:
        return statistics.median(statistics.median(p[key]) for p in parts)

    out = summarize_seconds([s for p in parts for s in p["seconds_all"]])
    out["seconds"] = middle("seconds_all")
    if all(p.get("cpu_seconds_all") for p in parts):
        out.update(cpu_seconds=middle("cpu_seconds_all"),
                   cpu_seconds_all=[s for p in parts for s in p["cpu_seconds_all"]])
    if all(p.get("probe_cpu_seconds_all") for p in parts):
        out.update(probe=parts[0]["probe"], probe_cpu_seconds_all=[s for p in parts for s in p["probe_cpu_seconds_all"]])
    out.update(repetitions=sum(p["repetitions"] for p in parts), loops=min(p["loops"] for p in parts),
               loops_all=[p["loops"] for p in parts], warmup=parts[0]["warmup"], clock=parts[0]["clock"],
               processes=len(parts), repetitions_per_process=[p["repetitions"] for p in parts])
    return out


# -------------------------------------------------------------------------------------------- test hook
TEST_SLOWDOWN_ENV = "VIRNUCPRO_BENCH_TEST_SLOWDOWN"


def planted_slowdown(stage: str) -> float:
    """The slowdown planted in ``stage`` by the test hook, as a fraction (0.3: each call 30% longer); 0 when
    the hook is off.

    Test hook only: ``VIRNUCPRO_BENCH_TEST_SLOWDOWN=0.3`` slows every stage the benchmark times through it,
    ``VIRNUCPRO_BENCH_TEST_SLOWDOWN=prepare_vectorized=0.3,prepare_reference=0.5`` only the named ones. It
    exists to check, end to end, that ``virnucpro benchmark --compare-to`` catches a known slowdown; a result
    made with it carries a warning saying so."""
    spec = os.environ.get(TEST_SLOWDOWN_ENV, "").strip()
    if not spec:
        return 0.0
    found = 0.0
    for item in spec.split(","):
        name, sep, value = item.strip().rpartition("=")
        try:
            fraction = float(value)
        except ValueError:
            fraction = math.nan
        if not (fraction >= 0 and math.isfinite(fraction)):
            raise VirNucProError(f"{TEST_SLOWDOWN_ENV}={spec!r}: expected a fraction >= 0 such as 0.3, or "
                                 "stage=fraction pairs separated by commas")
        if not sep or name.strip() in (stage, "*"):
            found = fraction
    return found


def slowed(fn: Callable[[], Any], fraction: float, clock: str = "wall") -> Callable[[], Any]:
    """``fn`` made ``fraction`` slower on ``clock``: after each call, the CPU spins for ``fraction`` times the
    call's own duration (so the planted slowdown is relative, whatever the speed of the machine). ``"cpu"``
    measures the call and the spin in this process's CPU time (work on the CPU, judged on CPU time: the plant is
    then ``fraction`` more work, as slower code would be, not a share of the time the call waited for a core or
    the disk); ``"wall"`` on the wall clock (GPU work). For the test hook."""
    if not fraction:
        return fn
    reading = "process_time" if clock == "cpu" else "perf_counter"

    def now() -> float:
        return getattr(time, reading)()

    def run():
        t0 = now()
        out = fn()
        end = now()
        end += fraction * (end - t0)
        while now() < end:  # the clock is read every 500 steps of plain arithmetic: the plant is computation,
            x = 0           # not a storm of clock system calls (reading CPU time is one)
            for i in range(500):
                x += i
        return out

    return run


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
