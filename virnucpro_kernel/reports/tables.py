"""The tables the report pages show, built from runs (:class:`virnucpro_kernel.api.Run`), evaluations and
benchmark result JSON, and the checks each notebook asserts.

Every function takes what the notebook has (a ``Run`` or None, a result dict or None, a table or None) and
returns a pandas DataFrame, or None where there is nothing to show; the display and figure functions say so
instead of failing, so a page about results that do not exist yet still renders.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from .paths import display_path, repo_path

# Why a page's figures are pipeline checks, not results (see ``caveats``).
CAVEATS = {
    "demo profile": "the demo profile's encoders are small random-weight networks and its classifier was trained on "
                    "a few genomes: its scores and calls are not biological",
    "CPU": "measured on the CPU: these timings show that the pipeline runs, they are not GPU performance, and no "
           "hours-per-sample projection is made from them",
}
_PROFILE = re.compile(r"^(\w+) profile:")


# ------------------------------------------------------------------------------------ provenance
def profile_of(obj) -> str | None:
    """The model profile a run or benchmark result was made with (``real``, ``demo``, ``random``), when
    recorded: ``run.json``'s profile, else the profile a result's warnings or notes name."""
    info = getattr(obj, "info", obj)
    if not isinstance(info, dict):
        return None
    profile = info.get("profile")
    if isinstance(profile, dict):
        return profile.get("name")
    if isinstance(profile, str):
        return profile
    for text in [*(info.get("warnings") or []), *(info.get("notes") or [])]:
        found = _PROFILE.match(str(text)) or re.search(r"weights: (\w+) profile", str(text))
        if found:
            return found.group(1)
    return None


def caveats(obj) -> list[str]:
    """Why the figures of ``obj`` (a Run, a result, a list of results or ``(file, result)`` pairs) are pipeline
    checks: ``demo profile`` (not biological), ``CPU`` (benchmark timings, not GPU performance). A run's scores
    on the CPU are still its scores: ``CPU`` applies to benchmark results only."""
    items = obj if isinstance(obj, list) else [obj]
    found = []
    for item in items:
        item = item[-1] if isinstance(item, tuple) else item
        info = getattr(item, "info", item)
        if not isinstance(info, dict) or not info:
            continue
        if profile_of(info) == "demo":
            found.append("demo profile")
        if "suite" in info and not (info.get("hardware") or {}).get("n_gpus"):
            found.append("CPU")
    return list(dict.fromkeys(found))


def caveat(obj) -> str:
    """A short label for figure titles, ``pipeline check (demo profile, CPU)``; empty when none applies."""
    found = caveats(obj)
    return f"pipeline check ({', '.join(found)})" if found else ""


def warnings_of(obj) -> list[str]:
    """The warnings recorded with a Run, a result or a list of results (``(file, result)`` pairs too)."""
    items = obj if isinstance(obj, list) else [obj]
    found = []
    for item in items:
        item = item[-1] if isinstance(item, tuple) else item
        info = getattr(item, "info", item)
        if isinstance(info, dict):
            found += list(info.get("warnings") or [])
            if isinstance(info.get("profile"), dict):
                found += list(info["profile"].get("warnings") or [])
    return list(dict.fromkeys(str(w) for w in found))


def _commit(info: dict) -> str:
    commit = info.get("git_commit")
    if not commit:
        return "not recorded"
    return str(commit)[:12] + (" (uncommitted changes)" if info.get("git_dirty") else "")


def _hardware(info: dict) -> str:
    hw = info.get("hardware") or {}
    if "n_gpus" in hw:  # a benchmark result
        gpus = f"{hw['n_gpus']} x {hw.get('gpu_name')}" if hw.get("n_gpus") else "no GPU"
        return f"{gpus}; CPU {hw.get('cpu')} ({hw.get('cpu_count')} threads)"
    engine, params = info.get("engine") or {}, info.get("parameters") or {}
    return f"{engine.get('device') or hw.get('device')}; {params.get('gpus', 0)} GPU(s), " \
           f"{params.get('world_size', 1)} process(es)"


def _versions(info: dict) -> str:
    hw = info.get("hardware") or {}
    versions = info.get("versions") or {"python": hw.get("python"), "torch": hw.get("torch"), "cuda": hw.get("cuda")}
    own = info.get("virnucpro_version")
    pairs = ([("virnucpro-kernel", own)] if own else []) + list(versions.items())
    return ", ".join(f"{k} {v}" for k, v in pairs if v)


def _facts(info: dict) -> dict:
    """What a run.json or a result records about where it was made, fact by fact."""
    if "suite" in info:
        wl = info.get("workload") or {}
        facts = {"suite": info.get("suite"), "commit": _commit(info), "made (UTC)": info.get("timestamp"),
                 "command": info.get("command"), "hardware": _hardware(info), "versions": _versions(info),
                 "profile": profile_of(info) or "not recorded",
                 "workload": f"{wl.get('name', '–')}: {wl.get('reads', '–')} reads, "
                             f"{wl.get('frames', '–')} frames, {wl.get('tokens', '–')} ESM-2 tokens",
                 "notes": "; ".join(info.get("notes") or []) or None}
    else:
        params, inp, prof = info.get("parameters") or {}, info.get("input") or {}, info.get("profile") or {}
        shown = ("chunk_size", "threshold", "gpus", "world_size", "dtype", "attention", "compile", "packing", "dedup")
        facts = {"commit": _commit(info) if info.get("git_commit") else "not recorded in run.json",
                 "command": info.get("command"),
                 "input": f"{display_path(inp.get('path'))} (SHA-256 {str(inp.get('sha256', ''))[:16]}…)",
                 "hardware": _hardware(info), "versions": _versions(info),
                 "parameters": ", ".join(f"{k} {params[k]}" for k in shown if k in params), "profile": prof.get("name"),
                 **{f"{part} model": (prof.get(part) or {}).get("source") for part in ("dnabert", "esm", "classifier")}}
    return {k: display_path(v) if isinstance(v, str) and v.startswith("/") else v
            for k, v in facts.items() if v is not None}


def provenance(obj) -> pd.DataFrame | None:
    """Where results were made, as recorded with them (commit, time, command, hardware, versions, parameters,
    profile, input or workload). A Run or a result: one row per fact. A list of results (or ``(file, result)``
    pairs): one row per result, one column per fact."""
    if isinstance(obj, list):
        rows = [_facts(getattr(i, "info", i)) for i in (i[-1] if isinstance(i, tuple) else i for i in obj)]
        return pd.DataFrame(rows).astype(object) if rows else None
    info = getattr(obj, "info", obj)
    if not isinstance(info, dict) or not info:
        return None
    return pd.DataFrame(list(_facts(info).items()), columns=["", "value"]).astype(object)


def provenance_line(obj) -> str:
    """One line: what, which commit, when, on what, which profile."""
    info = getattr(obj, "info", obj)
    if not isinstance(info, dict) or not info:
        return ""
    if "suite" in info:
        return (f"{info.get('suite')} result: commit {_commit(info)}, {info.get('timestamp')}, {_hardware(info)}, "
                f"profile {profile_of(info) or 'not recorded'}")
    return (f"prediction: {_hardware(info)}, profile {profile_of(info)}, "
            f"virnucpro-kernel {info.get('virnucpro_version')}")


# ------------------------------------------------------------------------------------------ runs
def read_run(out, required: bool = True):
    """``vk.load_run(out)``; None when ``out`` holds no finished run and the results are not ``required``."""
    from ..api import load_run
    from ..errors import VirNucProError

    try:
        return load_run(repo_path(out))
    except VirNucProError:
        if required:
            raise
        return None


def calls_at(run, threshold: float) -> pd.DataFrame | None:
    """The per-sequence table at ``threshold``: ``sequences.tsv`` at the run's own threshold, else
    ``Run.call(threshold)`` (from the per-frame scores; nothing recomputed, nothing written)."""
    if run is None:
        return None
    return run.sequences if float(threshold) == run.threshold else run.call(float(threshold))


def run_table(run, calls: pd.DataFrame | None = None, threshold: float | None = None) -> pd.DataFrame | None:
    """How much and how fast: counts and timings of ``run.json``, the calls at the run's threshold and at the
    page's (when it differs)."""
    if run is None:
        return None
    info = run.info
    c, t, o = info.get("counts") or {}, info.get("timings") or {}, info.get("outputs") or {}
    rows = [("records", o.get("records")), ("frames", c.get("frames")), ("ESM-2 tokens", c.get("esm_tokens")),
            ("models loaded in (s)", t.get("load_models_s")), ("compute (s)", t.get("compute_s")),
            ("frames/s", t.get("frames_per_s")), ("ESM-2 tokens/s", t.get("esm_tokens_per_s")),
            (f"calls at the run's threshold {run.threshold:g}",
             ", ".join(f"{k} {v}" for k, v in (o.get("calls") or {}).items()))]
    if calls is not None and threshold is not None and float(threshold) != run.threshold:
        counts = calls["call"].value_counts()
        rows.append((f"calls at this page's threshold {threshold:g}",
                     ", ".join(f"{k} {int(counts.get(k, 0))}" for k in ("virus", "others", "no_frames"))))
    return pd.DataFrame(rows, columns=["", "value"]).astype({"value": object})


def sequences_table(calls: pd.DataFrame | None) -> pd.DataFrame | None:
    """The per-sequence table, best score first."""
    if calls is None:
        return None
    return calls.sort_values("score", ascending=False, na_position="last", kind="stable")


def viral_hits(run, calls: pd.DataFrame | None) -> pd.DataFrame | None:
    """The records ``calls`` calls virus, best score first, with their FASTA description from ``viral.fa``
    (``Run.viral_records()``; it holds the calls at the run's threshold, so a record called at another
    threshold only may have no description)."""
    if run is None or calls is None:
        return None
    viral = run.viral_records()
    described = dict(zip(viral["sequence_id"], viral["description"]))
    hits = calls[calls["call"] == "virus"].copy()
    hits.insert(1, "description", [described.get(sid, "") for sid in hits["sequence_id"]])
    hits.insert(2, "in viral.fa", hits["sequence_id"].isin(list(described)).to_numpy())
    return hits.sort_values("score", ascending=False, kind="stable")[
        ["sequence_id", "description", "in viral.fa", "length", "chunks", "chunks_with_frames", "score",
         "viral_chunk_fraction"]]


def _input_records(path) -> pd.DataFrame:
    from ..fasta import iter_record_blocks

    ids, lengths = [], []
    for block in iter_record_blocks(path):
        ids += block.ids()
        lengths += [int(x) for x in block.lengths]
    return pd.DataFrame({"sequence_id": ids, "length": lengths})


def checks_table(rows: list[tuple[str, bool | None, str]], title: str = "checks") -> pd.DataFrame:
    """Each check as ``(what, passed, detail)`` (``passed`` None: skipped) -> a table; raises
    ``AssertionError`` naming every failed check."""
    failed = [f"{what} ({detail})" if detail else what for what, passed, detail in rows if passed is False]
    if failed:
        raise AssertionError(f"{len(failed)} of {len(rows)} {title} failed: " + "; ".join(failed))
    table = pd.DataFrame(rows, columns=["check", "passed", "detail"])
    table["passed"] = table["passed"].map({True: "yes", False: "NO", None: "skipped"})
    return table


def check_prediction(run, calls: pd.DataFrame | None, threshold: float, input=None) -> pd.DataFrame:
    """What the prediction page relies on: one row per input record, in input order; scores are
    probabilities; each call follows from its score at ``threshold``; frames, ``run.json`` and ``viral.fa``
    agree."""
    if run is None or calls is None:
        return checks_table([("prediction present", None, "no results to check")])
    seqs, frames, rows = calls, run.frames, []
    if input is not None and repo_path(input).is_file():
        records = _input_records(repo_path(input))
        same = len(records) == len(seqs) and all((records[c].to_numpy() == seqs[c].to_numpy()).all()
                                                 for c in ("sequence_id", "length"))
        rows.append(("every input record has one row, in input order", bool(same),
                     f"{len(records)} records in the input, {len(seqs)} rows"))
    else:
        rows.append(("every input record has one row", None, f"input {input} not available here"))
    scores = seqs["score"].dropna()
    rows.append(("record scores lie in [0, 1]", bool(scores.between(0, 1).all()),
                 f"{scores.min():.4g}..{scores.max():.4g}" if len(scores) else "no score"))
    expected = np.where(seqs["chunks_with_frames"] == 0, "no_frames",
                        np.where(seqs["score"] >= threshold, "virus", "others"))
    bad = int((expected != seqs["call"].to_numpy()).sum())
    rows.append((f"calls follow the scores at threshold {threshold:g}", bad == 0, f"{bad} disagree"))
    dev = float(np.abs(frames["p_virus"].astype(np.float64) + frames["p_others"] - 1).max()) if len(frames) else 0.0
    rows.append(("P(virus) + P(others) = 1 per frame", dev < 1e-3, f"largest deviation {dev:.2e}"))
    rows.append(("frames per record add up to frames.parquet", int(seqs["frames"].sum()) == len(frames),
                 f"{int(seqs['frames'].sum())} vs {len(frames)}"))
    counted = (run.info.get("counts") or {}).get("frames")
    rows.append(("run.json counts the same frames", counted == len(frames), f"{counted} vs {len(frames)}"))
    viral, called = set(run.viral_records()["sequence_id"]), set(run.sequences.query("call == 'virus'")["sequence_id"])
    rows.append((f"viral.fa holds the records called virus at the run's threshold {run.threshold:g}",
                 viral == called, f"{len(viral)} records, {len(called)} calls"))
    return checks_table(rows, "prediction checks")


# ---------------------------------------------------------------------------------- benchmark results
def load_result(results_dir, suite: str, required: bool = True) -> dict | None:
    """``results_dir/<suite>.json`` (validated by ``bench.schema``); None when missing and not ``required``."""
    from ..bench.schema import load_result as _load

    path = repo_path(results_dir) / f"{suite}.json"
    if not path.is_file():
        if required:
            raise FileNotFoundError(f"no benchmark result at {display_path(path)}")
        return None
    return _load(path)


def _unit(result: dict) -> str:
    return "GPUs" if (result.get("hardware") or {}).get("n_gpus") else "CPU processes"


def _titled(df: pd.DataFrame, result: dict) -> pd.DataFrame:
    """``df`` with what its figures need to say: the unit of its GPU counts and its caveat."""
    df.attrs.update(unit=_unit(result), caveat=caveat(result))
    return df


_GPU_SUFFIX = re.compile(r"[_@ -]*(\d+)\s*(gpus?|procs?|processes)?$", re.IGNORECASE)


def scaling_table(result: dict | None) -> pd.DataFrame | None:
    """Throughput per GPU count: ``label`` (the stage without its count), ``n_gpus``, ``tokens_per_s``,
    ``sequences_per_s`` (frames/s), ``mfu``, ``seconds``, ``efficiency`` (rate(N) / (N x the per-GPU rate of the
    smallest count); the result's own ``scaling_efficiency`` where it has one label)."""
    if not result or not result.get("stages"):
        return None
    rows = [{"label": _GPU_SUFFIX.sub("", name) or name, "stage": name, "n_gpus": int(st["n_gpus"]),
             "tokens_per_s": st.get("tokens_per_s"), "sequences_per_s": st.get("sequences_per_s"), "mfu": st.get("mfu"),
             "seconds": st.get("seconds"), "wall_seconds": st.get("wall_seconds"), "reads": st.get("reads"),
             "gpu_busy_fraction": st.get("gpu_busy_fraction")}
            for name, st in result["stages"].items() if st.get("n_gpus") is not None]
    if not rows:
        return None
    df = pd.DataFrame(rows).sort_values(["label", "n_gpus"], kind="stable").reset_index(drop=True)
    given = result.get("scaling_efficiency") or {}
    eff = []
    for _, r in df.iterrows():
        base = df[(df["label"] == r["label"]) & (df["n_gpus"] > 0)].sort_values("n_gpus").head(1)
        if str(r["n_gpus"]) in given and df["label"].nunique() == 1:
            eff.append(given[str(r["n_gpus"])])
        elif len(base) and base["tokens_per_s"].iloc[0] and r["n_gpus"] > 0 and r["tokens_per_s"] is not None:
            eff.append(r["tokens_per_s"] / (r["n_gpus"] * base["tokens_per_s"].iloc[0] / base["n_gpus"].iloc[0]))
        else:
            eff.append(None)
    df["efficiency"] = pd.array(eff, dtype="Float64").astype(float)
    return _titled(df, result)


def stage_table(result: dict | None) -> pd.DataFrame | None:
    """One row per stage: timing (median, min, max of the repetitions), throughput, MFU, memory."""
    if not result or not result.get("stages"):
        return None
    keys = ("path", "n_gpus", "seconds", "seconds_min", "seconds_max", "repetitions", "tokens_per_s",
            "sequences_per_s", "mfu", "peak_memory_gb")
    df = pd.DataFrame([{"stage": name, **{k: st.get(k) for k in keys}} for name, st in result["stages"].items()])
    return _titled(df, result)


def run_phases(result: dict | None) -> pd.DataFrame | None:
    """Where each run's wall time went: loading models, warm-up, compute and the rest (start-up, reading,
    merging, writing), in seconds."""
    rows = []
    for name, st in ((result or {}).get("stages") or {}).items():
        if st.get("wall_seconds") is None:
            continue
        load, warm, compute = st.get("load_models_s") or 0.0, st.get("warmup_s") or 0.0, st.get("seconds") or 0.0
        rows.append({"stage": name, "n_gpus": st.get("n_gpus"), "load models": load, "warm-up": warm,
                     "compute": compute, "start-up, I/O, merge": max(0.0, st["wall_seconds"] - load - warm - compute),
                     "wall": st["wall_seconds"]})
    return _titled(pd.DataFrame(rows), result) if rows else None


def project_hours(table: pd.DataFrame | None, sample_esm_tokens: float, max_gpus: int = 8) -> pd.DataFrame | None:
    """Hours per sample of ``sample_esm_tokens`` ESM-2 tokens on 1..``max_gpus`` GPUs, from GPU results only
    (None for CPU timings). Measured counts use their rate; others the per-GPU rate of the smallest count times
    N times the efficiency of the nearest measured count at or below N."""
    if table is None or len(table) == 0 or table.attrs.get("unit") != "GPUs":
        return None
    label = table["label"].value_counts().index[0]
    g = table[(table["label"] == label) & table["tokens_per_s"].notna() & (table["n_gpus"] > 0)].sort_values("n_gpus")
    if g.empty:
        return None
    per_gpu = float(g["tokens_per_s"].iloc[0]) / int(g["n_gpus"].iloc[0])
    measured = {int(n): float(r) for n, r in zip(g["n_gpus"], g["tokens_per_s"])}
    eff_at = {n: r / (n * per_gpu) for n, r in measured.items()}
    rows = []
    for n in range(1, max(max_gpus, max(measured)) + 1):
        eff = eff_at.get(n, eff_at[max([m for m in eff_at if m <= n], default=min(eff_at))])
        rate = measured.get(n, per_gpu * n * eff)
        rows.append({"n_gpus": n, "tokens_per_s": rate, "efficiency": eff, "hours": sample_esm_tokens / rate / 3600,
                     "minutes": sample_esm_tokens / rate / 60, "measured": n in measured})
    out = pd.DataFrame(rows)
    out.attrs.update(table.attrs)
    return out


def gpu_log(result: dict | None, results_dir) -> tuple[pd.DataFrame | None, str]:
    """The GPU monitoring log a result names, read (``bench.monitor.read_gpu_log``) from where it says or by its
    name under ``results_dir`` and ``results_dir/logs``; ``(None, why)`` when there is none."""
    from ..bench.monitor import read_gpu_log

    if not result:
        return None, "no result"
    mon = result.get("gpu_monitor") or {}
    logs = [st.get("gpu_log") for st in (result.get("stages") or {}).values() if st.get("gpu_log")]
    name = mon.get("log") or (logs[-1] if logs else None)
    if not name:
        return None, f"no GPU monitoring log: {mon.get('reason') or 'the result names none'}"
    base = repo_path(results_dir)
    for path in (repo_path(name), base / Path(name).name, base / "logs" / Path(name).name):
        if path.is_file():
            return read_gpu_log(path), display_path(path)
    return None, f"GPU monitoring log {display_path(repo_path(name))} is not here"


def gpu_summary(result: dict | None) -> pd.DataFrame | None:
    """Per GPU, the monitor's summary stored in the result (``gpu_monitor.per_gpu``): utilisation (mean,
    median, max), share of busy samples, memory, power and SM clock over the monitored run."""
    per_gpu = ((result or {}).get("gpu_monitor") or {}).get("per_gpu") or {}
    if not per_gpu:
        return None
    keys = ("name", "samples", "util_mean", "util_p50", "util_max", "busy_fraction", "mem_max_gb", "power_mean_w",
            "sm_clock_mean_mhz")
    df = pd.DataFrame([{"gpu": str(gpu), **{k: s.get(k) for k in keys}} for gpu, s in sorted(per_gpu.items())])
    df.attrs["seconds"] = result["gpu_monitor"].get("seconds")
    return _titled(df, result)


def check_scaling(table: pd.DataFrame | None) -> pd.DataFrame:
    """The scaling page's assertions: positive, finite throughput; efficiency in (0, 1.2]; MFU in (0, 1]."""
    if table is None or len(table) == 0:
        return checks_table([("scaling results present", None, "no results to check")])
    tps = table["tokens_per_s"].astype(float)
    eff = table["efficiency"].dropna().astype(float)
    mfu = table["mfu"].dropna().astype(float)
    rows = [("throughput is positive and finite", bool((np.isfinite(tps) & (tps > 0)).all()),
             f"{tps.min():,.0f}..{tps.max():,.0f} tokens/s"),
            ("scaling efficiency in (0, 1.2]", bool(((eff > 0) & (eff <= 1.2)).all()) if len(eff) else None,
             ", ".join(f"{n}: {e:.3f}" for n, e in zip(table.loc[eff.index, "n_gpus"], eff)) or "none measured"),
            ("MFU in (0, 1]", bool(((mfu > 0) & (mfu <= 1)).all()) if len(mfu) else None,
             f"{mfu.min():.1%}..{mfu.max():.1%}" if len(mfu) else "not measured (CPU or no FLOP count)")]
    return checks_table(rows, "scaling checks")


# ---------------------------------------------------------------------------------------- equivalence
def equivalence_errors(results_dir) -> pd.DataFrame | None:
    """Per-frame relative errors beside an equivalence result (``equivalence_errors.parquet``: ``model,
    frame_index, relative_error`` and, with several configurations, ``variant``)."""
    path = repo_path(results_dir) / "equivalence_errors.parquet"
    return pd.read_parquet(path) if path.is_file() else None


def error_summary(errors: pd.DataFrame | None, result: dict | None = None) -> pd.DataFrame | None:
    """Per model (and configuration): frames, median, 99th percentile and largest relative error; without
    per-frame errors, the result's one figure per model."""
    if errors is not None and len(errors):
        keys = [k for k in ("variant", "model") if k in errors]
        g = errors.groupby(keys, sort=False)["relative_error"]
        return g.agg(frames="size", median="median", p99=lambda s: s.quantile(0.99), max="max").reset_index()
    summary = (result or {}).get("relative_error")
    if isinstance(summary, dict):
        return pd.DataFrame({"model": list(summary), "relative_error": list(summary.values())})
    return None


def switch_table(result: dict | None) -> pd.DataFrame | None:
    """One row per configuration measured against the reference (the optimized path, then each optimization
    alone): its options, relative error per model and call agreement per frame and per chunk."""
    if not result:
        return None
    switches = result.get("switches") or {}
    if not switches:  # only the top-level figures
        if result.get("relative_error") is None:
            return None
        agreement = result.get("call_agreement")
        switches = {"optimized": {"relative_error": result.get("relative_error"),
                                  "call_agreement_frame": agreement.get("frame") if isinstance(agreement, dict)
                                  else agreement, "call_agreement_chunk": result.get("call_agreement_chunk")}}
    rows = []
    for name, sw in switches.items():
        row = {"configuration": name, "options": ", ".join(f"{k}={v}" for k, v in (sw.get("options") or {}).items()
                                                          if k != "save_features")}
        errs = sw.get("relative_error")
        row.update({f"relative_error.{m}": v for m, v in (errs.items() if isinstance(errs, dict) else [("all", errs)])})
        row.update(call_agreement_frame=sw.get("call_agreement_frame"),
                   call_agreement_chunk=sw.get("call_agreement_chunk"), seconds=sw.get("seconds"))
        rows.append(row)
    return _titled(pd.DataFrame(rows), result)


def check_equivalence(errors: pd.DataFrame | None, switches: pd.DataFrame | None, max_relative_error=None,
                      min_call_agreement=None) -> pd.DataFrame:
    """The equivalence page's assertions: errors finite and non-negative, agreements within [0, 1], and the
    parameter set's bounds."""
    if switches is None or len(switches) == 0:
        return checks_table([("equivalence results present", None, "no results to check")])
    rows = []
    if errors is not None and len(errors):
        e = errors["relative_error"].astype(float)
        rows.append(("per-frame errors finite and >= 0", bool((np.isfinite(e) & (e >= 0)).all()),
                     f"{len(e)} values, largest {e.max():.3e}"))
    errs = switches[[c for c in switches if c.startswith("relative_error.")]].astype(float).to_numpy()
    rows.append(("summary errors finite and >= 0", bool(np.all(np.isfinite(errs) & (errs >= 0))),
                 f"largest {np.nanmax(errs):.3e}" if errs.size else "none"))
    agree = switches[["call_agreement_frame", "call_agreement_chunk"]].astype(float).to_numpy()
    present = agree[~np.isnan(agree)]
    rows.append(("call agreements within [0, 1]", bool(((present >= 0) & (present <= 1)).all()),
                 f"lowest {present.min():.4f}" if present.size else "none"))
    if max_relative_error is not None:
        worst = float(np.nanmax(errs)) if errs.size else float("nan")
        rows.append((f"relative errors <= {max_relative_error:g}", bool(worst <= max_relative_error),
                     f"largest {worst:.3e}"))
    if min_call_agreement is not None and present.size:
        rows.append((f"call agreement >= {min_call_agreement:g}", bool(present.min() >= min_call_agreement),
                     f"lowest {present.min():.4f}"))
    return checks_table(rows, "equivalence checks")


# ----------------------------------------------------------------------------------------- evaluation
def precision_targets(ev, targets) -> pd.DataFrame:
    """Per level (sequences, chunks) and target precision: the lowest threshold that reaches it
    (``Evaluation.threshold_for``) and the precision, recall and F1 there; ``reached`` no when none does."""
    from ..evaluation import LEVELS

    rows = []
    for level in LEVELS:
        for target in targets:
            t = ev.threshold_for(precision=float(target), level=level)
            p = ev.at(t, level=level) if t is not None else None
            rows.append({"level": level, "target_precision": float(target), "reached": t is not None, "threshold": t,
                         "precision": p.precision if p else None, "recall": p.recall if p else None,
                         "f1": p.f1 if p else None, "called_virus": p.tp + p.fp if p else None})
    return pd.DataFrame(rows)


def check_evaluation(ev) -> pd.DataFrame:
    """The evaluation page's assertions: every run record is evaluated or counted as unlabelled, the metrics
    are shares, the confusion table adds up."""
    c, point = ev.counts, ev.at()
    metrics = ev.summary()[["auroc", "auprc", "precision", "recall", "f1"]].astype(float).to_numpy()
    present = metrics[~np.isnan(metrics)]
    rows = [("every run record evaluated or counted as unlabelled",
             c["evaluated"] + c["unlabelled"] == c["run_records"],
             f"{c['evaluated']} evaluated + {c['unlabelled']} unlabelled of {c['run_records']}"),
            ("the confusion table counts every evaluated record", point.n == c["evaluated"], f"{point.n} records"),
            ("metrics within [0, 1]", bool(((present >= 0) & (present <= 1)).all()), f"{present.size} values")]
    return checks_table(rows, "evaluation checks")

