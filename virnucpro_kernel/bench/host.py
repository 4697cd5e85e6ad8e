"""Timing work on the CPU, without torch (so that the fresh processes ``time_in_processes`` starts begin in a
fraction of a second); ``bench.timing`` re-exports all of it and adds the GPU clocks.

- ``time_blocks`` / ``wall_block``: the repetition loop (warm-up, calibrated ``loops``, probe) and its timer.
- ``time_in_processes``: host work timed in several fresh processes one after the other, so that a comparison
  sees how much the time moves from one process to the next (``merge_processes`` joins them).
- ``machine_probe``: a fixed piece of host work timed beside each repetition of a host stage, so that a
  comparison can tell a slower machine (the probe slows too) from slower code.
- ``planted_slowdown`` / ``slowed``: the test hook that plants a known slowdown in a stage (environment variable
  ``VIRNUCPRO_BENCH_TEST_SLOWDOWN``), to check that the regression check catches it.
- ``prepare_vectorized_work`` / ``prepare_reference_work``: the prepare suite's work, built in each process.
"""

from __future__ import annotations

import gc
import importlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import VirNucProError


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


# ------------------------------------------------------------------------------------------ timed blocks
Block = Callable[[Callable[[], Any], int], "tuple[float, float | None]"]


def wall_block(sync: Callable[[], None] | None = None, cpu: bool = True) -> Block:
    """A timer of ``loops`` calls of a work back to back: (``perf_counter`` seconds, process CPU time seconds
    or None without ``cpu``), with ``sync`` (waiting for every GPU) before and after."""
    def block(work: Callable[[], Any], loops: int) -> tuple[float, float | None]:
        if sync is not None:
            sync()
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(loops):
            work()
        if sync is not None:
            sync()
        t1, c1 = time.perf_counter(), time.process_time()
        return t1 - t0, (c1 - c0 if cpu else None)

    return block


def time_blocks(fn: Callable[[], Any], block: Block, *, repetitions: int = 5, warmup: int = 1,
                min_seconds: float = 0.0, probe: Callable[[], Any] | None = None, probe_seconds: float = 0.1,
                host: bool = True, clock: str = "wall") -> dict:
    """The repetition loop of ``timing.time_repeated`` (its docstring says what each argument does) with
    ``block`` as the timer (``wall_block``, or CUDA events): warm-up, calibration of ``loops`` (on CPU time
    when ``host``), a garbage collection and the probe block before each timed repetition."""
    if repetitions < 1:
        raise ValueError("repetitions must be >= 1")

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
    probe_block = wall_block() if probe is not None else None
    walls, cpus, probes = [], [], []
    for _ in range(repetitions):
        gc.collect()
        if probe_block is not None:
            probes.append(probe_block(probe, probe_loops)[1] / probe_loops)
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
def _name(fn: Callable) -> str:
    """``module:qualified.name`` of a module-level function (how a fresh process finds it)."""
    name = f"{fn.__module__}:{fn.__qualname__}"
    if "<" in name or fn.__module__ == "__main__":
        raise ValueError(f"{name}: a fresh process can only find a function defined at a module's top level")
    return name


def _resolve(name: str) -> Callable:
    module, _, path = name.partition(":")
    obj: Any = importlib.import_module(module)
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def time_in_processes(build: Callable[..., Callable[[], Any]], args: tuple = (), processes: int = 3,
                      plant: float = 0.0, **kw) -> dict:
    """``timing.time_repeated(build(*args), device="cpu", **kw)`` in ``processes`` fresh Python processes, one
    after the other, merged by ``merge_processes``.

    Why: on a shared or virtual machine, the CPU time of the same host work moves from one process to the
    next (memory layout, the allocator's state, the caches other work left: 5-15% on a 2-core VM for 75-ms
    calls) by more than the repetitions within one process show. Timing in several processes measures that
    drift, in the same run, and the regression check takes its noise band from it (``bench.regression``).

    ``build`` (and ``probe``, when given) must be module-level functions of an importable module: each process
    (``python -c``, this interpreter, this ``sys.path``) imports them by name, calls ``build(*args)`` for the
    work and times it; ``args`` and the other keywords must be JSON values. Nothing of this process's state
    (allocator, caches, the calling script) is inherited, so it works the same from a script, a notebook or
    the command line; each process pays its own imports, warm-up and calibration, untimed. ``plant``: the
    test hook's slowdown (``planted_slowdown``), applied in each process."""
    if processes < 1:
        raise ValueError("processes must be >= 1")
    kw = {k: v for k, v in kw.items() if k not in ("device", "clock")}  # the CPU, on the wall clock and CPU time
    probe = kw.pop("probe", None)
    request = json.dumps({"build": _name(build), "args": list(args), "plant": plant,
                          "probe": _name(probe) if probe is not None else None, "kw": kw})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    command = [sys.executable, "-c", "from virnucpro_kernel.bench.host import _child; _child()"]
    parts = []
    for _ in range(processes):  # one at a time: two processes timed together would share the cores
        done = subprocess.run(command, input=request, capture_output=True, text=True, env=env)
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"timing {_name(build)} in a fresh process failed (exit status {done.returncode}): "
                               + (done.stderr.strip().splitlines() or ["no message"])[-1])
        parts.append(json.loads(lines[-1]))
    return merge_processes(parts)


def _child() -> None:
    """A fresh process of ``time_in_processes``: the request (JSON) on standard input, the timing (JSON) as the
    last line of standard output."""
    request = json.loads(sys.stdin.read())
    work = slowed(_resolve(request["build"])(*request["args"]), request["plant"], clock="cpu")
    probe = _resolve(request["probe"]) if request["probe"] else None
    print(json.dumps(time_blocks(work, wall_block(), probe=probe, **request["kw"])))


def merge_processes(parts: list[dict]) -> dict:
    """One timing from ``time_blocks`` outputs of several processes: every repetition, in process order
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
        out.update(probe=parts[0]["probe"],
                   probe_cpu_seconds_all=[s for p in parts for s in p["probe_cpu_seconds_all"]])
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


# ------------------------------------------------------------------------------- the prepare suite's work
def prepare_vectorized_work(path: str, chunk_size: int, out_dir: str) -> Callable[[], Any]:
    """The vectorized stage's work: ``frames.prepare`` of the workload into ``out_dir``."""
    from ..frames import prepare

    return lambda: prepare(Path(path), chunk_size, Path(out_dir))


def prepare_reference_work(path: str, chunk_size: int, out_dir: str) -> Callable[[], Any]:
    """The reference stage's work: ``frames.prepare_reference`` of ``path`` and writing its three FASTA files
    into ``out_dir``, as the original does."""
    from ..frames import prepare_reference

    def reference():
        chunks, nucs, prots = prepare_reference(Path(path), chunk_size)
        for name, rows in (("c.fa", chunks), ("n.fa", nucs), ("p.faa", prots)):
            with open(Path(out_dir) / name, "w") as fh:
                fh.writelines(f">{i}\n{s}\n" for i, s in rows)

    return reference
