"""Regression tracking: compare a benchmark result with a baseline, noise-aware.

Tracked figures, where both result and baseline have them: each stage's ``tokens_per_s`` (higher is better)
and ``seconds`` (lower is better), and ``relative_error`` (lower is better; one figure, or one per key).

Noise rule. Each side's spread is the relative range of its repetitions, ``(seconds_max - seconds_min) /
seconds`` (median), the same for a stage's seconds and tokens/s; the noise of a comparison is the two spreads
combined in quadrature, ``sqrt(spread_baseline^2 + spread_current^2)``. A figure is a ``REGRESSION`` when it
got worse by more than ``threshold`` (10%) *and* by more than the noise; ``better`` when it improved by more
than both; ``ok`` otherwise. "Worse by x" is the relative change in the bad direction: tokens/s down x, or
seconds / relative error up x. Relative errors have no repetitions: their noise is 0, but differences under
``REL_ERROR_ABS_TOL`` (fp32 rounding level) never count.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

from .schema import json_safe, validate_result

DEFAULT_THRESHOLD = 0.10
REL_ERROR_ABS_TOL = 1e-6
VERDICTS = ("ok", "better", "REGRESSION")


def spread(stage: dict) -> float:
    """Relative range of a stage's repetitions, ``(max - min) / median``; 0 without min/max."""
    med, lo, hi = stage.get("seconds"), stage.get("seconds_min"), stage.get("seconds_max")
    if not med or lo is None or hi is None or med <= 0:
        return 0.0
    return max(0.0, (hi - lo) / med)


def _row(figure: str, stage: str | None, metric: str, base, cur, higher_is_better: bool, noise: float,
         threshold: float, abs_tol: float = 0.0) -> dict | None:
    if base is None or cur is None:
        return None
    base, cur = float(base), float(cur)
    if not (math.isfinite(base) and math.isfinite(cur)):
        return None
    if base == 0:
        change = 0.0 if cur == 0 else math.copysign(math.inf, cur)
    else:
        change = (cur - base) / abs(base)
    worse = -change if higher_is_better else change
    if abs(cur - base) <= abs_tol:
        verdict = "ok"
    elif worse > threshold and worse > noise:
        verdict = "REGRESSION"
    elif -worse > threshold and -worse > noise:
        verdict = "better"
    else:
        verdict = "ok"
    return {"figure": figure, "stage": stage, "metric": metric, "baseline": base, "current": cur,
            "change_pct": 100.0 * change if math.isfinite(change) else None, "noise_pct": 100.0 * noise,
            "higher_is_better": higher_is_better, "verdict": verdict}


def _flat(value, prefix: str) -> dict:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {f"{prefix}.{k}": v for k, v in value.items() if v is not None}
    return {prefix: value}


def compare(result: dict, baseline: dict, threshold: float = DEFAULT_THRESHOLD) -> list[dict]:
    """Rows ``dict(figure, stage, metric, baseline, current, change_pct, noise_pct, higher_is_better,
    verdict)`` for every tracked figure present on both sides, in the result's stage order."""
    rows: list[dict] = []
    base_stages = baseline.get("stages", {}) or {}
    for name, cur in (result.get("stages", {}) or {}).items():
        base = base_stages.get(name)
        if base is None:
            continue
        noise = math.hypot(spread(base), spread(cur))
        for metric, higher in (("tokens_per_s", True), ("seconds", False)):
            row = _row(f"{name}.{metric}", name, metric, base.get(metric), cur.get(metric), higher, noise,
                       threshold)
            if row:
                rows.append(row)
    base_err = _flat(baseline.get("relative_error"), "relative_error")
    for figure, cur in _flat(result.get("relative_error"), "relative_error").items():
        row = _row(figure, None, "relative_error", base_err.get(figure), cur, False, 0.0, threshold,
                   REL_ERROR_ABS_TOL)
        if row:
            rows.append(row)
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
    if metric == "seconds":
        return f"{value:.4g}"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.4g}"


def format_table(rows: list[dict], threshold: float = DEFAULT_THRESHOLD, notes: Iterable[str] = ()) -> str:
    """Markdown table of figure, baseline, current, change, noise and verdict, with a one-line verdict
    summary, ready to paste as a review comment."""
    lines = ["| figure | baseline | current | change | noise (±) | verdict |", "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        change = "–" if r["change_pct"] is None else f"{r['change_pct']:+.1f}%"
        verdict = "**REGRESSION**" if r["verdict"] == "REGRESSION" else r["verdict"]
        lines.append(f"| {r['figure']} | {_num(r['baseline'], r['metric'])} | {_num(r['current'], r['metric'])} "
                     f"| {change} | {r['noise_pct']:.1f}% | {verdict} |")
    n_bad = sum(r["verdict"] == "REGRESSION" for r in rows)
    rule = f"threshold {100 * threshold:.0f}%, beyond the spread of repetitions"
    if not rows:
        summary = "No figure in common with the baseline: nothing compared."
    elif n_bad:
        summary = f"**{n_bad} regression{'s' if n_bad > 1 else ''}** in {len(rows)} figures ({rule})."
    else:
        summary = f"No regression in {len(rows)} figures ({rule})."
    out = lines + ["", summary]
    notes = list(notes)
    if notes:
        out += [""] + [f"- note: {n}" for n in notes]
    return "\n".join(out) + "\n"


def comparison_record(rows: list[dict], baseline_path, threshold: float = DEFAULT_THRESHOLD,
                      notes: Iterable[str] = ()) -> dict:
    """What a result stores under ``comparison``."""
    notes = list(notes)
    return {"baseline": str(baseline_path), "threshold": threshold, "regression": has_regression(rows),
            "rows": rows, "notes": notes, "table": format_table(rows, threshold, notes)}


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


HISTORY_FIGURES = ("tokens_per_s", "sequences_per_s", "seconds", "mfu", "peak_memory_gb", "reserved_memory_gb")
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
