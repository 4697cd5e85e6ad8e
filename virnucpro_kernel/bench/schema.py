"""Benchmark result files: the JSON schema, validation, construction and the markdown rendering.

A result is one JSON object per suite (``<suite>.json``) with a markdown twin (``<suite>.md``) for people.
``RESULT_SCHEMA`` is the contract; ``validate_result`` checks it with ``jsonschema`` when importable, else
with a small built-in validator of the same schema (the keywords used here only).

What the regression check (``bench.regression``) needs of a stage: ``seconds`` (median of the repetitions, per
call; of several processes, the median of their medians), ``repetitions``, ``seconds_all`` (each repetition's
seconds per call; ``seconds_min`` and ``seconds_max`` are their extremes), ``loops`` (calls per timed
repetition, 1 when absent) and, for work timed on the CPU, ``cpu_seconds`` / ``cpu_seconds_all`` (CPU time of
the process per call) with ``probe`` and ``probe_cpu_seconds_all`` (CPU time of a fixed piece of work timed
before each repetition: the machine's speed), the figures judged there; for work timed in several processes
(``timing.time_in_processes``), ``processes`` and ``repetitions_per_process`` (the repetitions of each ``*_all``
list, in process order) and ``loops_all``. Older files with neither ``repetitions`` nor ``seconds_all`` still
validate; their stages are listed as not comparable.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import warnings
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
SUITES = ("prepare", "encoders", "engine", "scaling", "equivalence", "predict", "all")
PATHS = ("optimized", "reference", "peer")

_NUM0 = {"type": "number", "minimum": 0}
_NUM0_OR_NULL = {"type": ["number", "null"], "minimum": 0}
_INT0 = {"type": "integer", "minimum": 0}
_INT0_OR_NULL = {"type": ["integer", "null"], "minimum": 0}
_FRACTION = {"type": "number", "minimum": 0, "maximum": 1}
_NAMED = {"type": "object", "additionalProperties": _NUM0_OR_NULL}

STAGE_SCHEMA: dict = {
    "type": "object",
    "required": ["tokens_per_s", "sequences_per_s", "mfu", "seconds", "peak_memory_gb"],
    "properties": {
        "tokens_per_s": _NUM0_OR_NULL,
        "sequences_per_s": _NUM0_OR_NULL,
        "mfu": _NUM0_OR_NULL,
        "seconds": _NUM0,
        "seconds_min": _NUM0,
        "seconds_max": _NUM0,
        "seconds_all": {"type": "array", "items": _NUM0},
        "repetitions": {"type": "integer", "minimum": 1},
        "loops": {"type": "integer", "minimum": 1},
        "cpu_seconds": _NUM0,
        "cpu_seconds_all": {"type": "array", "items": _NUM0},
        "probe": {"type": "string"},
        "probe_cpu_seconds_all": {"type": "array", "items": _NUM0},
        "processes": {"type": "integer", "minimum": 1},
        "repetitions_per_process": {"type": "array", "items": {"type": "integer", "minimum": 1}},
        "loops_all": {"type": "array", "items": {"type": "integer", "minimum": 1}},
        "tokens": _INT0_OR_NULL,
        "sequences": _INT0_OR_NULL,
        "peak_memory_gb": _NUM0_OR_NULL,
        "reserved_memory_gb": _NUM0_OR_NULL,
        "memory_ratio": _NUM0_OR_NULL,
        "n_gpus": _INT0,
        "path": {"enum": list(PATHS)},
        "notes": {"type": "string"},
    },
}

RESULT_SCHEMA: dict = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "virnucpro benchmark result",
    "type": "object",
    "required": ["schema_version", "suite", "git_commit", "timestamp", "command", "hardware", "workload",
                 "stages"],
    "properties": {
        "schema_version": {"type": "integer", "minimum": 1},
        "suite": {"enum": list(SUITES)},
        "git_commit": {"type": "string", "minLength": 1},
        "git_dirty": {"type": ["boolean", "null"]},
        "timestamp": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}"},
        "command": {"type": "string"},
        "hardware": {
            "type": "object",
            "required": ["gpu_name", "n_gpus", "cpu", "cpu_count"],
            "properties": {
                "gpu_name": {"type": ["string", "null"]},
                "n_gpus": _INT0,
                "gpu_memory_gb": _NUM0_OR_NULL,
                "cpu": {"type": "string"},
                "cpu_count": _INT0_OR_NULL,
                "torch": {"type": ["string", "null"]},
                "cuda": {"type": ["string", "null"]},
                "python": {"type": "string"},
                "platform": {"type": "string"},
            },
        },
        "workload": {
            "type": "object",
            "required": ["reads", "frames", "tokens"],
            "properties": {
                "name": {"type": "string"},
                "reads": _INT0,
                "frames": _INT0_OR_NULL,
                "tokens": _INT0_OR_NULL,
                "read_length": _INT0,
                "bases": _INT0,
                "seed": {"type": "integer"},
                "sha256": {"type": "string"},
            },
        },
        "stages": {"type": "object", "additionalProperties": STAGE_SCHEMA},
        "ratios": _NAMED,
        "scaling_efficiency": {
            "type": "object",
            "propertyNames": {"pattern": r"^[1-9][0-9]*$"},
            "additionalProperties": _NUM0_OR_NULL,
        },
        "relative_error": {"anyOf": [_NUM0_OR_NULL, _NAMED]},
        "call_agreement": {"anyOf": [_FRACTION, {"type": "null"},
                                     {"type": "object", "additionalProperties": _FRACTION}]},
        "gpu_monitor": {
            "type": ["object", "null"],
            "required": ["available"],
            "properties": {"available": {"type": "boolean"}, "log": {"type": ["string", "null"]},
                           "samples": _INT0, "busy_fraction": _NUM0_OR_NULL,
                           "per_gpu": {"type": "object", "additionalProperties": {"type": "object"}}},
        },
        "memory": {
            "type": "object",
            "required": ["host_peak_rss_gb", "leak_mb", "leak_flagged"],
            "properties": {"host_peak_rss_gb": _NUM0_OR_NULL, "leak_mb": {"type": ["number", "null"]},
                           "leak_flagged": {"type": "boolean"}},
        },
        "comparison": {"type": ["object", "null"]},
        "warnings": {"type": "array", "items": {"type": "string"}},
    },
}


# ------------------------------------------------------------------------------------------- validation
class ResultSchemaError(ValueError):
    """A result that does not match ``RESULT_SCHEMA``; ``errors`` lists every problem."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("invalid benchmark result: " + "; ".join(errors))


def result_errors(obj: Any) -> list[str]:
    """Every way ``obj`` breaks ``RESULT_SCHEMA`` (empty when valid), by the ``jsonschema`` package. Where it is not
    installed (a bare GPU machine) nothing is checked and a warning says so: the results are checked again when
    they are read here."""
    try:
        import jsonschema
    except ImportError:
        warnings.warn("jsonschema is not installed: benchmark result not checked against its schema", stacklevel=2)
        return []
    validator = jsonschema.Draft7Validator(RESULT_SCHEMA)
    return [f"$.{'.'.join(map(str, e.absolute_path))}: {e.message}" if e.absolute_path else f"$: {e.message}"
            for e in validator.iter_errors(obj)]


def validate_result(obj: Any) -> dict:
    """Return ``obj`` when it matches the schema, else raise ``ResultSchemaError`` listing every problem."""
    errors = result_errors(obj)
    if errors:
        raise ResultSchemaError(errors)
    return obj


# ------------------------------------------------------------------------------------------ construction
def git_commit(repo_dir=None) -> tuple[str, bool | None]:
    """``(HEAD commit, working tree has changes)``; ``VIRNUCPRO_GIT_COMMIT`` when set (a copy of a committed tree
    run elsewhere: the commit it was copied from, clean); ``("unknown", None)`` outside git."""
    cwd = Path(repo_dir) if repo_dir else Path(__file__).resolve().parent
    given = os.environ.get("VIRNUCPRO_GIT_COMMIT")
    if given:  # said explicitly: a copy of that commit run elsewhere (whatever .git the copy may carry)
        return given, False
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0 or not head.stdout.strip():
            return "unknown", None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, timeout=10)
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
        return head.stdout.strip(), dirty
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def collect_hardware() -> dict:
    """GPU name and count (as torch sees them), CPU model and count, torch/CUDA/Python versions."""
    hw: dict = {"gpu_name": None, "n_gpus": 0, "gpu_memory_gb": None, "cpu": _cpu_model(),
                "cpu_count": os.cpu_count(), "torch": None, "cuda": None,
                "python": platform.python_version(), "platform": platform.platform()}
    try:
        import torch
    except ImportError:
        return hw
    hw["torch"] = torch.__version__
    hw["cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        names = sorted({torch.cuda.get_device_name(i) for i in range(n)})
        hw["n_gpus"] = n
        hw["gpu_name"] = " + ".join(names)
        hw["gpu_memory_gb"] = torch.cuda.get_device_properties(0).total_memory / 1024 ** 3
    return hw


def utc_timestamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_result(suite: str, command, hardware: dict | None = None, workload: dict | None = None) -> dict:
    """A result skeleton: identity (suite, commit, time, command), hardware (collected when None), workload,
    empty ``stages`` and ``warnings``. ``command`` may be a string or an argv list."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r} (choose from {', '.join(SUITES)})")
    if not isinstance(command, str):
        command = shlex.join(str(c) for c in command)
    commit, dirty = git_commit()
    workload = dict(workload or {})
    workload.setdefault("reads", 0)
    workload.setdefault("frames", None)
    workload.setdefault("tokens", None)
    return {
        "schema_version": SCHEMA_VERSION,
        "suite": suite,
        "git_commit": commit,
        "git_dirty": dirty,
        "timestamp": utc_timestamp(),
        "command": command,
        "hardware": dict(hardware) if hardware is not None else collect_hardware(),
        "workload": workload,
        "stages": {},
        "warnings": [],
    }


def stage_entry(timing: dict, tokens: int | None = None, sequences: int | None = None, *, n_gpus: int = 1,
                path: str = "optimized", memory: dict | None = None, flops_per_token: float | None = None,
                ceiling_tflops: float | None = None) -> dict:
    """One ``stages`` entry from ``timing.time_repeated`` output, the work done per call and a
    ``timing.memory_stage`` record. MFU uses the per-GPU ceiling times ``n_gpus``. A bare ``{"seconds": s}``
    is one repetition of one call."""
    from .timing import mfu

    seconds = float(timing["seconds"])
    tps = tokens / seconds if tokens is not None and seconds > 0 else None
    sps = sequences / seconds if sequences is not None and seconds > 0 else None
    memory = memory or {}
    ceiling = ceiling_tflops * max(n_gpus, 1) if ceiling_tflops else None
    entry = {
        "tokens_per_s": tps,
        "sequences_per_s": sps,
        "mfu": mfu(tps, flops_per_token, ceiling),
        "seconds": seconds,
        "seconds_min": float(timing.get("seconds_min", seconds)),
        "seconds_max": float(timing.get("seconds_max", seconds)),
        "seconds_all": [float(s) for s in timing.get("seconds_all", [seconds])],
        "repetitions": int(timing.get("repetitions", len(timing.get("seconds_all", [seconds])))),
        "loops": int(timing.get("loops", 1)),
        "tokens": tokens,
        "sequences": sequences,
        "peak_memory_gb": memory.get("peak_allocated_gb"),
        "reserved_memory_gb": memory.get("peak_reserved_gb"),
        "memory_ratio": memory.get("ratio"),
        "n_gpus": int(n_gpus),
        "path": path,
    }
    if timing.get("cpu_seconds_all"):
        entry["cpu_seconds"] = float(timing.get("cpu_seconds", statistics.median(timing["cpu_seconds_all"])))
        entry["cpu_seconds_all"] = [float(s) for s in timing["cpu_seconds_all"]]
    if timing.get("probe_cpu_seconds_all"):
        entry["probe"] = str(timing.get("probe") or "probe")
        entry["probe_cpu_seconds_all"] = [float(s) for s in timing["probe_cpu_seconds_all"]]
    if timing.get("processes"):
        entry["processes"] = int(timing["processes"])
        entry["repetitions_per_process"] = [int(n) for n in timing["repetitions_per_process"]]
        entry["loops_all"] = [int(n) for n in timing["loops_all"]]
    return entry


# ---------------------------------------------------------------------------------------------- writing
def json_safe(value):
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy / torch scalars, arrays
        return json_safe(value.tolist())
    return value


def write_result(obj: dict, out_dir) -> tuple[Path, Path]:
    """Validate ``obj`` and write ``out_dir/<suite>.json`` and ``out_dir/<suite>.md``."""
    obj = json_safe(obj)
    validate_result(obj)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{obj['suite']}.json"
    md_path = out_dir / f"{obj['suite']}.md"
    json_path.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(obj), encoding="utf-8")
    return json_path, md_path


def load_result(path) -> dict:
    with open(path, encoding="utf-8") as fh:
        return validate_result(json.load(fh))


# -------------------------------------------------------------------------------------------- markdown
def _fmt(value, kind: str = "g") -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "int":
        return f"{value:,.0f}"
    if kind == "s":
        return f"{value:.4g}"
    if kind == "gb":
        return f"{value:.2f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return lines + [""]


def render_markdown(obj: dict) -> str:
    """The result for people: identity, workload, hardware, stages, ratios, scaling, equivalence, memory,
    GPU monitoring, regression comparison and warnings."""
    hw, wl = obj.get("hardware", {}), obj.get("workload", {})
    commit = obj.get("git_commit", "unknown") + (" (uncommitted changes)" if obj.get("git_dirty") else "")
    out = [f"# Benchmark `{obj.get('suite')}`", "",
           f"- commit: `{commit}`", f"- time (UTC): {obj.get('timestamp')}",
           f"- hardware: {hw.get('n_gpus', 0)} x {hw.get('gpu_name') or 'no GPU'}; CPU {hw.get('cpu')} "
           f"({hw.get('cpu_count')} threads); torch {hw.get('torch')}, CUDA {hw.get('cuda')}, "
           f"Python {hw.get('python')}",
           "", "```", obj.get("command", ""), "```", "", "## Workload", ""]
    out += _table(["field", "value"], [[k, _fmt(v, "int") if isinstance(v, int) and not isinstance(v, bool)
                                        else _fmt(v)] for k, v in wl.items()])
    stages = obj.get("stages", {})
    if stages:
        out += ["## Stages", ""]
        rows = []
        for name, st in stages.items():
            spread = (f"{_fmt(st.get('seconds_min'), 's')}–{_fmt(st.get('seconds_max'), 's')}"
                      if st.get("seconds_min") is not None else "–")
            reps = _fmt(st.get("repetitions") or (len(st["seconds_all"]) if st.get("seconds_all") else None))
            if (st.get("loops") or 1) > 1:
                reps += f" x {st['loops']} calls"
            rows.append([name, st.get("path", "–"), _fmt(st.get("n_gpus")), _fmt(st.get("seconds"), "s"), spread,
                         reps,
                         _fmt(st.get("tokens_per_s"), "int"), _fmt(st.get("sequences_per_s"), "int"),
                         _fmt(st.get("mfu"), "pct"), _fmt(st.get("peak_memory_gb"), "gb"),
                         _fmt(st.get("reserved_memory_gb"), "gb"), _fmt(st.get("memory_ratio"), "pct")])
        out += _table(["stage", "path", "GPUs", "seconds (median)", "min–max", "repetitions", "tokens/s",
                       "sequences/s", "MFU", "peak alloc GB", "reserved GB", "alloc/reserved"], rows)
    if obj.get("ratios"):
        out += ["## Ratios", ""] + _table(["ratio", "value"],
                                          [[k, _fmt(v)] for k, v in obj["ratios"].items()])
    if obj.get("scaling_efficiency"):
        out += ["## Scaling efficiency", ""] + _table(
            ["GPUs", "efficiency"], [[k, _fmt(v, "pct")] for k, v in obj["scaling_efficiency"].items()])
    for key, title in (("relative_error", "Relative error"), ("call_agreement", "Call agreement")):
        if key in obj and obj[key] is not None:
            val = obj[key]
            items = val.items() if isinstance(val, dict) else [(key, val)]
            kind = "pct" if key == "call_agreement" else "g"
            out += [f"## {title}", ""] + _table(["figure", "value"], [[k, _fmt(v, kind)] for k, v in items])
    mem = obj.get("memory")
    if mem:
        out += ["## Memory", "", f"- host peak RSS: {_fmt(mem.get('host_peak_rss_gb'), 'gb')} GB",
                f"- GPU memory left allocated after the run: {_fmt(mem.get('leak_mb'))} MB"
                + (" **(flagged: over 100 MB)**" if mem.get("leak_flagged") else ""), ""]
    mon = obj.get("gpu_monitor")
    if mon:
        out += ["## GPU monitoring", ""]
        if not mon.get("available"):
            out += [f"Not available: {mon.get('reason') or 'no GPU'}.", ""]
        else:
            out += [f"{mon.get('samples')} samples every {mon.get('interval_s')} s ({mon.get('backend')}), "
                    f"log `{mon.get('log')}`; busy (utilisation >= {_fmt(mon.get('busy_util_pct'))}%): "
                    f"{_fmt(mon.get('busy_fraction'), 'pct')} of samples.", ""]
            out += _table(["GPU", "name", "util mean %", "util p50 %", "busy", "mem max GB", "power mean W",
                           "SM clock MHz"],
                          [[i, g.get("name") or "", _fmt(g.get("util_mean")), _fmt(g.get("util_p50")),
                            _fmt(g.get("busy_fraction"), "pct"), _fmt(g.get("mem_max_gb"), "gb"),
                            _fmt(g.get("power_mean_w")), _fmt(g.get("sm_clock_mean_mhz"))]
                           for i, g in mon.get("per_gpu", {}).items()])
    comp = obj.get("comparison")
    if comp and comp.get("table"):
        out += ["## Comparison with baseline", "", f"Baseline: `{comp.get('baseline')}`", "", comp["table"], ""]
    if obj.get("warnings"):
        out += ["## Warnings", ""] + [f"- {w}" for w in obj["warnings"]] + [""]
    return "\n".join(out).rstrip() + "\n"
