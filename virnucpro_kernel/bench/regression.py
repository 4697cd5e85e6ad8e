"""Regression tracking: compare a benchmark result with a baseline, noise-aware.

Tracked figures, where both result and baseline have them: each stage's time (``cpu_seconds`` for work on the
CPU, else ``seconds``, lower is better) and ``tokens_per_s`` (higher is better), and ``relative_error`` (lower
is better; one figure, or one per key).

The rule (``compare``; one implementation for ``virnucpro benchmark --compare-to`` and for the history tables
of notebook 04, ``reports.regression_table``):

* **Figures.** The **median** of a stage's repetitions (per call when a repetition runs the work several
  times, ``loops``). A run's **spread** is ``(max - min) / median`` of its repetitions. For CPU time (and CPU
  time over the probe's):

  - work timed in several fresh processes (``processes``, ``timing.time_in_processes``; the prepare suite: 3
    processes of 5 repetitions) has for figure the **median of the processes' medians** and for spread the
    **range of the processes' medians** over their median. On a shared or virtual machine the CPU time of the
    same work moves from one process to the next (memory layout, the allocator's state, what other work left
    in the caches) by more than the repetitions within one process show: measured on a 2-core VM, the
    reference stage's 75-ms calls, 5-15% between processes whose own repetitions agreed within 5%. Repetitions
    of one process that scatter widely (one in three far off is common there) move neither figure;
  - work timed in one process with at least ``IQR_MIN_REPETITIONS`` (5) repetitions: the interquartile range
    over the median (the whole range would let one far-off repetition make a band no real slowdown crosses).

  Whole runs of the command (``reports/cpu/regression_check.sh``) check the rule end to end.
* **Short calls on the CPU.** Work on the CPU whose single call takes under ``MIN_CALL_CPU_S`` (10 ms) of CPU
  time is ``too short to compare``, however many calls a repetition loops over: the time of such short calls
  moves between two processes of the same code by more than the threshold (measured: 1.2-ms calls, 48% between
  runs whose own interquartile ranges were under 10%), which no repetition within one process shows.
* **Gate.** A stage is judged only when both sides have at least ``MIN_REPETITIONS`` (3) repetitions, a
  recorded spread, timed repetitions of at least ``MIN_TIMED_S`` (10 ms: median times ``loops``) and the
  same work per call. Otherwise its figures are listed with the verdict ``too few repetitions``, ``too short to
  compare`` or ``not comparable`` (older result files without a repetition count, different work per
  repetition) and a reason, and never count as a regression.
* **floor** = ``REL_FLOOR + ABS_FLOOR_S / shortest timed repetition``: 2% for the drift one run's spread
  cannot show, and 1 ms of timer jitter (clock granularity, scheduling) relative to the shorter side's timed
  repetition.
* **GPU work** (and stages without CPU time): slowdown = ``seconds_current / seconds_baseline - 1`` (for
  tokens/s ``tokens_per_s_baseline / tokens_per_s_current - 1``, so a stage's figures agree); noise =
  ``max(spread_baseline, spread_current) + floor``; ``REGRESSION`` when slowdown > ``max(threshold, noise)``
  (threshold 10%).
* **Work on the CPU** (stages with ``cpu_seconds_all`` and ``probe_cpu_seconds_all``, ``timing.time_repeated``)
  is judged on the CPU time of the benchmark process, which, unlike the wall clock, does not count the time the
  process waited for a core (its wall-clock ``seconds`` and ``tokens_per_s`` are listed as ``not judged``).
  On a shared or virtual machine even CPU time drifts between runs with the machine's state (clock speed, other
  work on the caches and on the other half of a core), by more than one run's spread shows; a fixed piece of
  work timed just before each repetition (``timing.machine_probe``) measures that state. A ``REGRESSION`` must
  show twice:

  - relative to the machine, beyond the noise: slowdown = ``(cpu / probe)_current / (cpu / probe)_baseline -
    1`` (the figures of ``cpu / probe`` repetition by repetition) > ``max(threshold, max(spread_baseline,
    spread_current) + floor)``, the spreads being those of ``cpu / probe`` (the noisier run's; the sum of both
    would let one loaded run hide any slowdown), and
  - in the CPU time itself: slowdown = ``cpu_current / cpu_baseline - 1`` > ``threshold``. Its own spread
    (``noise_pct``, listed) is no bound: it counts the machine's drift, which the first test removes. Measured
    with a core kept busy: one process of three ran 40% slower while the probe beside it slowed as much, so
    the CPU time's spread hid a planted 30% slowdown that the probe-relative figure showed (+34% against a
    band of 7%).

  A machine that got slower slows the probe too, so it does not pass the first test; a probe that happened
  to run fast does not pass the second. ``better`` is the same with the speed-ups. A host stage with CPU time
  in one run only (an older file) is ``not comparable``.
* Relative errors are not timings (one deterministic figure per run, no repetitions): worse by x is the
  relative increase, ``REGRESSION`` when it exceeds the threshold, and differences under
  ``REL_ERROR_ABS_TOL`` (fp32 rounding level) never count.

``--compare-to`` prints the same rule under its table (``rule_text``) and exits 1 only on a ``REGRESSION``.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Iterable

from .schema import json_safe, validate_result

DEFAULT_THRESHOLD = 0.10
MIN_REPETITIONS = 3
REL_FLOOR = 0.02
ABS_FLOOR_S = 0.001
MIN_TIMED_S = 0.010
REL_ERROR_ABS_TOL = 1e-6
IQR_MIN_REPETITIONS = 5
MIN_CALL_CPU_S = 0.010
JUDGED = ("ok", "better", "REGRESSION")
TOO_SHORT = "too short to compare"
TOO_FEW = "too few repetitions"
NOT_COMPARABLE = "not comparable"
NOT_JUDGED = "not judged"
VERDICTS = JUDGED + (TOO_SHORT, TOO_FEW, NOT_COMPARABLE, NOT_JUDGED)


def rule_text(threshold: float = DEFAULT_THRESHOLD) -> str:
    """The verdict rule, a few lines of markdown (printed under every comparison table)."""
    t = f"{100 * threshold:.0f}%"
    return "\n".join([
        f"Rule (threshold {t}):",
        "- compared: medians of the repetitions; spread = (max - min) / median of a run's repetitions; CPU time "
        "timed in several processes: median and range / median of the processes' medians (in one process, with "
        f">= {IQR_MIN_REPETITIONS} repetitions: interquartile range / median); floor = {100 * REL_FLOOR:.0f}% + "
        f"{1000 * ABS_FLOOR_S:g} ms / shortest timed repetition",
        "- slowdown = current / baseline time per unit of work - 1",
        f"- GPU work: REGRESSION when slowdown > max({t}, max(spread baseline, spread current) + floor)",
        f"- work on the CPU: judged on the CPU time of the process (wall-clock figures listed, not judged); "
        f"REGRESSION when the slowdown relative to a fixed machine probe timed before each repetition > max({t}, "
        f"max(spread baseline, spread current) + floor), the spreads being those of CPU time / probe, and the "
        f"CPU time itself is slower by more than {t} (its own spread, listed, counts the machine's drift, which the "
        "probe removes)",
        "- better: the same with the speed-up",
        f"- judged only with >= {MIN_REPETITIONS} repetitions on each side, timed repetitions >= "
        f"{1000 * MIN_TIMED_S:g} ms and, on the CPU, calls >= {1000 * MIN_CALL_CPU_S:g} ms of CPU time; other "
        "figures are listed with the reason",
        f"- relative errors: REGRESSION when up by more than {t} and by more than {REL_ERROR_ABS_TOL:g}",
    ])


# ---------------------------------------------------------------------------------------------- stages
def repetitions(stage: dict) -> int | None:
    """Repetitions behind a stage's figures: ``repetitions``, else the length of ``seconds_all``; None when the
    result does not say (older files)."""
    n = stage.get("repetitions")
    if n is None and isinstance(stage.get("seconds_all"), list) and stage["seconds_all"]:
        n = len(stage["seconds_all"])
    return int(n) if n is not None else None


def _list(stage: dict, key: str) -> list | None:
    value = stage.get(key)
    return value if isinstance(value, list) and value else None


def has_cpu_time(stage: dict) -> bool:
    """Whether a stage recorded, for each repetition, the CPU time and that of the machine probe before it."""
    cpu, probe = _list(stage, "cpu_seconds_all"), _list(stage, "probe_cpu_seconds_all")
    return cpu is not None and probe is not None and len(cpu) == len(probe) and all(p > 0 for p in probe)


def normalized(stage: dict) -> list[float]:
    """CPU time per call of each repetition over the probe's CPU time per call just before it."""
    return [c / p for c, p in zip(stage["cpu_seconds_all"], stage["probe_cpu_seconds_all"])]


def _rel_range(samples) -> float | None:
    med = statistics.median(samples)
    return None if med <= 0 else (max(samples) - min(samples)) / med


def _rel_iqr(samples) -> float | None:
    """Interquartile range over the median (quartiles interpolated as ``statistics.quantiles``' inclusive
    method), from ``IQR_MIN_REPETITIONS`` repetitions; below that, the whole range."""
    if len(samples) < IQR_MIN_REPETITIONS:
        return _rel_range(samples)
    med = statistics.median(samples)
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return None if med <= 0 else (q3 - q1) / med


def process_medians(stage: dict, samples: list[float]) -> list[float] | None:
    """The median of each process's repetitions, for a stage timed in several processes
    (``repetitions_per_process``, ``timing.time_in_processes``) with ``samples`` one per repetition in process
    order; None for a stage timed in one process."""
    counts = stage.get("repetitions_per_process")
    if not isinstance(counts, list) or len(counts) < 2 or sum(counts) != len(samples) or min(counts) < 1:
        return None
    bounds = [sum(counts[:k]) for k in range(len(counts) + 1)]
    return [statistics.median(samples[a:b]) for a, b in zip(bounds, bounds[1:])]


def cpu_figure(samples: list[float], stage: dict) -> float:
    """The figure of CPU-time samples (one per repetition): the median of the processes' medians when the stage
    was timed in several processes, else the median."""
    medians = process_medians(stage, samples)
    return statistics.median(medians if medians else samples)


def _cpu_spread(samples: list[float], stage: dict) -> float | None:
    medians = process_medians(stage, samples)
    return _rel_range(medians) if medians else _rel_iqr(samples)


def spread(stage: dict, clock: str = "wall") -> float | None:
    """Relative range of a stage's repetitions, ``(max - min) / median``, on ``clock``: ``"cpu"`` (CPU time),
    ``"probe"`` (CPU time over the machine probe's, ``normalized``) or ``"wall"`` (``seconds_all`` when
    recorded, else ``seconds_min``/``seconds_max`` around ``seconds``); None when the result lacks them. On the
    CPU clocks: for a stage timed in several processes, the relative range of the processes' medians (the
    drift from one process to the next); else, with at least ``IQR_MIN_REPETITIONS`` repetitions, their
    interquartile range over the median."""
    if clock == "cpu":
        return _cpu_spread(stage["cpu_seconds_all"], stage) if _list(stage, "cpu_seconds_all") else None
    if clock == "probe":
        return _cpu_spread(normalized(stage), stage) if has_cpu_time(stage) else None
    samples = _list(stage, "seconds_all")
    if samples and len(samples) >= 2:
        return _rel_range(samples)
    med, lo, hi = stage.get("seconds"), stage.get("seconds_min"), stage.get("seconds_max")
    if samples and (lo is None or hi is None):
        lo = hi = samples[0]
    if med is None or lo is None or hi is None or med <= 0:
        return None
    return max(0.0, (hi - lo) / med)


def stage_time(stage: dict, cpu: bool = False) -> float | None:
    """The time per call of a stage: CPU time with ``cpu`` (``cpu_figure``: the median, or the median of the
    processes' medians), else ``seconds``."""
    if cpu:
        if stage.get("cpu_seconds") is not None:
            return _finite(stage["cpu_seconds"])
        samples = _list(stage, "cpu_seconds_all")
        return cpu_figure(samples, stage) if samples else None
    return _finite(stage.get("seconds"))


def timed_seconds(stage: dict, cpu: bool = False) -> float | None:
    """Length of one timed repetition: the median time per call times ``loops`` (calls per repetition, 1 when
    not recorded)."""
    seconds = stage_time(stage, cpu)
    return None if seconds is None else seconds * int(stage.get("loops") or 1)


def _side(in_base: bool, in_cur: bool) -> str:
    """Which side a problem is on: 'both runs', 'the baseline' or 'the current run'."""
    if in_base and in_cur:
        return "both runs"
    return "the baseline" if in_base else "the current run"


def stage_noise(base: dict, cur: dict, cpu: bool = False) -> tuple[dict | None, str | None, str]:
    """The gate of the rule (repetitions, clocks, work per call, spread, length of a timed repetition) and the
    noise bands: ``({"noise": ..., "noise_probe": ...}, None, "")`` when the stage can be judged (``noise``: of
    the time judged, ``noise_probe``: of the probe-normalised CPU time, with ``cpu`` only), else ``(None,
    verdict, reason)``."""
    n_base, n_cur = repetitions(base), repetitions(cur)
    if n_base is None or n_cur is None:
        return None, NOT_COMPARABLE, (f"no repetition count in {_side(n_base is None, n_cur is None)} "
                                      "(older result file)")
    if n_base < MIN_REPETITIONS or n_cur < MIN_REPETITIONS:
        return None, TOO_FEW, f"{n_base} / {n_cur} repetitions (baseline / current), {MIN_REPETITIONS} needed"
    if not cpu and (has_cpu_time(base) or has_cpu_time(cur)):
        return None, NOT_COMPARABLE, (f"work on the CPU with CPU time and machine probe in "
                                      f"{_side(has_cpu_time(base), has_cpu_time(cur))} only (older result file): "
                                      "its wall clock would count the machine's load")
    split = [s for s in (base, cur) if s.get("repetitions_per_process") is not None
             and sum(s["repetitions_per_process"]) != len(s.get("cpu_seconds_all") or [])]
    if split:
        return None, NOT_COMPARABLE, (f"repetitions_per_process does not add up to the CPU times recorded in "
                                      f"{_side(base in split, cur in split)}")
    if cpu and base.get("probe") != cur.get("probe"):
        return None, NOT_COMPARABLE, f"different machine probes: {base.get('probe')} vs {cur.get('probe')}"
    if base.get("tokens") != cur.get("tokens"):
        return None, NOT_COMPARABLE, (f"different work per call: {base.get('tokens')} vs {cur.get('tokens')} "
                                      f"{cur.get('unit') or 'tokens'} (baseline / current)")
    clock = "cpu" if cpu else "wall"
    s_base, s_cur = spread(base, clock), spread(cur, clock)
    if s_base is None or s_cur is None:
        return None, NOT_COMPARABLE, f"no spread of repetitions in {_side(s_base is None, s_cur is None)}"
    t_base, t_cur = timed_seconds(base, cpu) or 0.0, timed_seconds(cur, cpu) or 0.0
    if t_base < MIN_TIMED_S or t_cur < MIN_TIMED_S:
        return None, TOO_SHORT, (f"timed repetition {1000 * min(t_base, t_cur):.3g} ms in "
                                 f"{_side(t_base < MIN_TIMED_S, t_cur < MIN_TIMED_S)}, "
                                 f"under {1000 * MIN_TIMED_S:g} ms")
    if cpu:
        call = min(stage_time(base, True) or 0.0, stage_time(cur, True) or 0.0)
        if call < MIN_CALL_CPU_S:
            return None, TOO_SHORT, (f"one call takes {1000 * call:.3g} ms of CPU time, under "
                                     f"{1000 * MIN_CALL_CPU_S:g} ms: so short a call's time changes from one "
                                     "process to the next by more than the threshold; compare a larger "
                                     "--data-size")
    floor = REL_FLOOR + ABS_FLOOR_S / min(t_base, t_cur)
    if not cpu:
        return {"noise": max(s_base, s_cur) + floor, "noise_probe": None}, None, ""
    return {"noise": max(s_base, s_cur) + floor,
            "noise_probe": max(spread(base, "probe"), spread(cur, "probe")) + floor}, None, ""


# ------------------------------------------------------------------------------------------------ rows
def _finite(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _change(base: float, cur: float) -> float | None:
    if base == 0:
        return 0.0 if cur == 0 else None
    return (cur - base) / abs(base)


def _judge(worse: float | None, better: float | None, bound: float) -> str:
    if worse is not None and worse > bound:
        return "REGRESSION"
    if better is not None and better > bound:
        return "better"
    return "ok"


def _ratio_minus_one(num: float, den: float) -> float | None:
    if den > 0:
        return num / den - 1.0
    return None if num == 0 else math.inf


def _row(figure, stage, metric, base, cur, higher_is_better, verdict, reason, noise, threshold, worse,
         reps=(None, None)) -> dict:
    change = _change(base, cur)
    return {"figure": figure, "stage": stage, "metric": metric, "baseline": base, "current": cur,
            "change_pct": None if change is None else 100.0 * change,
            "worse_pct": None if worse is None or not math.isfinite(worse) else 100.0 * worse,
            "noise_pct": None if noise is None else 100.0 * noise,
            "bound_pct": None if noise is None else 100.0 * max(threshold, noise),
            "repetitions_baseline": reps[0], "repetitions_current": reps[1], "machine_pct": None,
            "probe_worse_pct": None, "probe_noise_pct": None,
            "higher_is_better": higher_is_better, "verdict": verdict, "reason": reason}


def _both_ways(b: float, c: float, higher: bool) -> tuple[float | None, float | None]:
    """(slowdown, speed-up) from a baseline and a current figure."""
    if higher:
        return _ratio_minus_one(b, c), _ratio_minus_one(c, b)
    return _ratio_minus_one(c, b), _ratio_minus_one(b, c)


def _stage_rows(name: str, base: dict, cur: dict, threshold: float) -> list[dict]:
    cpu = has_cpu_time(base) and has_cpu_time(cur)
    bands, gate, reason = stage_noise(base, cur, cpu)
    reps = (repetitions(base), repetitions(cur))
    figures = [("cpu_seconds", False, stage_time(base, True), stage_time(cur, True))] if cpu else []
    figures += [(metric, higher, _finite(base.get(metric)), _finite(cur.get(metric)))
                for metric, higher in (("tokens_per_s", True), ("seconds", False))]
    rows = []
    for metric, higher, b, c in figures:
        if b is None or c is None:
            continue
        worse, better = _both_ways(b, c, higher)  # time per unit of work, current over baseline, minus 1
        verdict, why = gate, reason
        if cpu and metric != "cpu_seconds":
            verdict, why = NOT_JUDGED, f"wall clock, which counts waiting for a core: see {name}.cpu_seconds"
        elif verdict is None:  # CPU time itself: beyond the threshold; its spread counts the machine's drift
            verdict = _judge(worse, better, threshold if metric == "cpu_seconds" else max(threshold, bands["noise"]))
        judged = verdict in JUDGED
        row = _row(f"{name}.{metric}", name, metric, b, c, higher, verdict, why,
                   bands["noise"] if judged else None, threshold, worse, reps)
        if metric == "cpu_seconds":
            probes = [cpu_figure(s["probe_cpu_seconds_all"], s) for s in (base, cur)]
            row["machine_pct"] = 100.0 * (probes[1] / probes[0] - 1.0)  # the probe's change: the machine's
            p_worse, p_better = _both_ways(cpu_figure(normalized(base), base), cpu_figure(normalized(cur), cur),
                                           False)
            row["probe_worse_pct"] = None if p_worse is None or not math.isfinite(p_worse) else 100.0 * p_worse
            if judged:
                row["probe_noise_pct"] = 100.0 * bands["noise_probe"]
                row["bound_pct"] = 100.0 * max(threshold, bands["noise_probe"])  # the bound of the figure judged
                probe_verdict = _judge(p_worse, p_better, max(threshold, bands["noise_probe"]))
                if probe_verdict != verdict:  # a change must show both in CPU time and against the machine
                    row["verdict"] = "ok"
        rows.append(row)
    return rows


def _flat(value, prefix: str) -> dict:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {f"{prefix}.{k}": v for k, v in value.items() if v is not None}
    return {prefix: value}


def compare(result: dict, baseline: dict, threshold: float = DEFAULT_THRESHOLD) -> list[dict]:
    """Rows ``dict(figure, stage, metric, baseline, current, change_pct, worse_pct, noise_pct, bound_pct,
    repetitions_baseline, repetitions_current, machine_pct, probe_worse_pct, probe_noise_pct,
    higher_is_better, verdict, reason)`` for every tracked figure present on both sides, in the result's stage
    order (the rule: module docstring). ``change_pct``: the change of the figure; ``worse_pct``: the slowdown
    (for relative errors, the increase); ``noise_pct`` and ``bound_pct = max(threshold, noise)``: its band;
    for CPU time also ``machine_pct`` (the machine probe's change), ``probe_worse_pct`` (the slowdown relative
    to the probe) and ``probe_noise_pct`` (its band); ``reason``: why a figure was not judged (empty when it
    was)."""
    rows: list[dict] = []
    base_stages = baseline.get("stages", {}) or {}
    for name, cur in (result.get("stages", {}) or {}).items():
        base = base_stages.get(name)
        if isinstance(base, dict) and isinstance(cur, dict):
            rows += _stage_rows(name, base, cur, threshold)
    base_err = _flat(baseline.get("relative_error"), "relative_error")
    for figure, cur in _flat(result.get("relative_error"), "relative_error").items():
        b, c = _finite(base_err.get(figure)), _finite(cur)
        if b is None or c is None:
            continue
        change = _change(b, c)
        worse = math.inf if change is None else change
        if abs(c - b) <= REL_ERROR_ABS_TOL:
            verdict = "ok"
        else:
            verdict = _judge(worse, -worse, threshold)
        rows.append(_row(figure, None, "relative_error", b, c, False, verdict, "", 0.0, threshold, worse))
    return rows


def has_regression(rows: Iterable[dict]) -> bool:
    return any(r["verdict"] == "REGRESSION" for r in rows)


def comparability_warnings(result: dict, baseline: dict) -> list[str]:
    """Differences that make a comparison questionable (other workload, other hardware, other suite)."""
    notes = []
    if result.get("suite") != baseline.get("suite"):
        notes.append(f"suite differs: {baseline.get('suite')} (baseline) vs {result.get('suite')}")
    for section, keys in (("workload", ("name", "reads", "read_length", "frames", "tokens", "sha256")),
                          ("hardware", ("gpu_name", "n_gpus"))):
        a, b = baseline.get(section, {}) or {}, result.get(section, {}) or {}
        for key in keys:
            if key in a and key in b and a[key] != b[key]:
                notes.append(f"{section} {key} differs: {a[key]} (baseline) vs {b[key]}")
    shared = set(result.get("stages", {}) or {}) & set(baseline.get("stages", {}) or {})
    missing = sorted(set(baseline.get("stages", {}) or {}) - shared)
    if missing:
        notes.append("stages of the baseline missing from this run: " + ", ".join(missing))
    return notes


def _num(value, metric: str) -> str:
    if value is None:
        return "–"
    if metric == "relative_error":
        return f"{value:.3g}"
    if metric in ("seconds", "cpu_seconds"):
        return f"{value:.4g}"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.4g}"


def _reps(r: dict) -> str:
    if r["metric"] == "relative_error":
        return "–"
    show = ["?" if n is None else str(n) for n in (r.get("repetitions_baseline"), r.get("repetitions_current"))]
    return " / ".join(show)


def format_table(rows: list[dict], threshold: float = DEFAULT_THRESHOLD, notes: Iterable[str] = ()) -> str:
    """Markdown table of figure, baseline, current, change, noise, repetitions (baseline / current) and
    verdict (with the reason when a figure is not judged), a one-line summary and the rule, ready to paste as
    a review comment."""
    lines = ["| figure | baseline | current | change | noise (±) | repetitions | verdict |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        change = "–" if r["change_pct"] is None else f"{r['change_pct']:+.1f}%"
        noise = "–" if r["noise_pct"] is None else f"{r['noise_pct']:.1f}%"
        if r.get("machine_pct") is not None and r.get("probe_worse_pct") is not None:
            change += f"; machine {r['machine_pct']:+.1f}%, relative to it {r['probe_worse_pct']:+.1f}%"
            if r.get("probe_noise_pct") is not None:
                noise = f"relative to the machine {r['probe_noise_pct']:.1f}% (CPU time alone {noise})"
        verdict = "**REGRESSION**" if r["verdict"] == "REGRESSION" else r["verdict"]
        if r.get("reason"):
            verdict += f": {r['reason']}"
        lines.append(f"| {r['figure']} | {_num(r['baseline'], r['metric'])} | {_num(r['current'], r['metric'])} "
                     f"| {change} | {noise} | {_reps(r)} | {verdict.replace('|', '/')} |")
    n_bad = sum(r["verdict"] == "REGRESSION" for r in rows)
    judged = sum(r["verdict"] in JUDGED for r in rows)
    left_out = len(rows) - judged
    rest = f"; {left_out} not judged (reasons in the table)" if left_out else ""
    if not rows:
        summary = "No figure in common with the baseline: nothing compared."
    elif not judged:
        summary = f"No figure judged: all {len(rows)} left out (reasons in the table)."
    elif n_bad:
        summary = f"**{n_bad} regression{'s' if n_bad > 1 else ''}** in {judged} judged figures{rest}."
    else:
        summary = f"No regression in {judged} judged figures{rest}."
    bounds = [r["probe_noise_pct"] if r.get("probe_noise_pct") is not None else r["noise_pct"] for r in rows
              if r["verdict"] in JUDGED and r["noise_pct"] is not None]
    if bounds and max(bounds) > 200 * threshold:
        summary += (f" Noise bands reach {max(bounds):.0f}%: a slowdown smaller than that cannot be told from the "
                    "machine's noise here; repeat both runs on a quieter machine to see one.")
    out = lines + ["", summary, "", rule_text(threshold)]
    notes = list(notes)
    if notes:
        out += [""] + [f"- note: {n}" for n in notes]
    return "\n".join(out) + "\n"


def comparison_record(rows: list[dict], baseline_path, threshold: float = DEFAULT_THRESHOLD,
                      notes: Iterable[str] = ()) -> dict:
    """What a result stores under ``comparison``."""
    notes = list(notes)
    return {"baseline": str(baseline_path), "threshold": threshold, "regression": has_regression(rows),
            "rule": {"threshold": threshold, "min_repetitions": MIN_REPETITIONS, "rel_floor": REL_FLOOR,
                     "abs_floor_s": ABS_FLOOR_S, "min_timed_s": MIN_TIMED_S,
                     "rel_error_abs_tol": REL_ERROR_ABS_TOL, "text": rule_text(threshold)},
            "judged": sum(r["verdict"] in JUDGED for r in rows),
            "rows": rows, "notes": notes, "table": format_table(rows, threshold, notes)}


def check_against_baseline(result: dict, baseline_path, threshold: float = DEFAULT_THRESHOLD, out=print) -> int:
    """What ``virnucpro benchmark --compare-to BASELINE`` does with a finished result: compare it with the
    baseline file, print the table (with the rule), store the record under ``result["comparison"]`` and return
    the exit status, 1 on a ``REGRESSION``, else 0."""
    baseline = load_baseline(baseline_path)
    rows = compare(result, baseline, threshold)
    notes = comparability_warnings(result, baseline)
    record = comparison_record(rows, baseline_path, threshold, notes)
    out(record["table"])
    result["comparison"] = record
    return int(record["regression"])


# ----------------------------------------------------------------------------------------------- files
def save_baseline(result: dict, path) -> Path:
    """Write ``result`` (validated, without its own ``comparison``) as a baseline JSON file."""
    data = json_safe({k: v for k, v in result.items() if k != "comparison"})
    validate_result(data)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def load_baseline(path) -> dict:
    with open(path, encoding="utf-8") as fh:
        return validate_result(json.load(fh))


HISTORY_FIGURES = ("tokens_per_s", "sequences_per_s", "seconds", "cpu_seconds", "mfu", "peak_memory_gb",
                   "reserved_memory_gb")
HISTORY_COLUMNS = ["file", "suite", "timestamp", "git_commit", "gpu_name", "n_gpus", "workload", "reads",
                   "tokens", "stage", "path", "figure", "value", "seconds_min", "seconds_max"]


def _result_files(paths_or_dir) -> list[Path]:
    items = [paths_or_dir] if isinstance(paths_or_dir, (str, Path)) else list(paths_or_dir)
    files: list[Path] = []
    for item in map(Path, items):
        files += sorted(item.rglob("*.json")) if item.is_dir() else [item]
    return files


def read_result_file(path) -> dict | None:
    """A benchmark result read from ``path``; None for unreadable JSON or JSON that is not a result."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "suite" not in data or not isinstance(data.get("stages"), dict):
        return None
    return data


def load_history(paths_or_dir):
    """Benchmark results as a long pandas DataFrame: one row per result file, stage and figure (plus
    ``relative_error*``, ``call_agreement*`` and ``scaling_efficiency.<n>`` rows with no stage), sorted by
    time. JSON files that are not results (no ``suite``/``stages``) are skipped."""
    import pandas as pd

    rows = []
    for path in _result_files(paths_or_dir):
        data = read_result_file(path)
        if data is None:
            continue
        hw, wl = data.get("hardware", {}) or {}, data.get("workload", {}) or {}
        common = {"file": str(path), "suite": data.get("suite"), "timestamp": data.get("timestamp"),
                  "git_commit": data.get("git_commit"), "gpu_name": hw.get("gpu_name"),
                  "n_gpus": hw.get("n_gpus"), "workload": wl.get("name"), "reads": wl.get("reads"),
                  "tokens": wl.get("tokens")}
        for stage, st in data["stages"].items():
            for figure in HISTORY_FIGURES:
                if st.get(figure) is not None:
                    rows.append({**common, "stage": stage, "path": st.get("path"), "figure": figure,
                                 "value": float(st[figure]), "seconds_min": st.get("seconds_min"),
                                 "seconds_max": st.get("seconds_max")})
        extra = {**_flat(data.get("relative_error"), "relative_error"),
                 **_flat(data.get("call_agreement"), "call_agreement"),
                 **_flat(data.get("scaling_efficiency") or None, "scaling_efficiency")}
        for figure, value in extra.items():
            rows.append({**common, "stage": None, "path": None, "figure": figure, "value": float(value),
                         "seconds_min": None, "seconds_max": None})
    df = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True, errors="coerce")
    return df.sort_values(["timestamp", "file", "stage", "figure"], na_position="first").reset_index(drop=True)
