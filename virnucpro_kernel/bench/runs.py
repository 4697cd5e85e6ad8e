"""``virnucpro benchmark --suite predict``: whole ``virnucpro predict`` runs, as a user starts them.

* ``cold`` and ``warm``: the same input twice, each in a new process, the first with an empty compiler cache
  (a fresh machine), the second with the cache the first left. From each run's ``run.json``: the time from
  process start to the first batch, from the last batch to the written outputs, the compute time and rate.
  The two runs' output files must be byte-identical (the same batches give the same bits in any process).
  ``projection``: the fork's published 1M-read sample (42.75M ESM-2 tokens) at the warm run's rate plus its
  overhead, extrapolated from this measured run (say so: it is not a run of that sample).
* ``compile_policy`` (GPU): ``predict`` compiles the encoder layers only when the input repays it
  (``prediction.compile_pays_off``). The workload is run once more without compiling, and its first 4,096 reads
  both ways (compiled with the cache the runs above left: the best case for compiling); each input's wall
  times say whether the rule picked the faster way.
* ``dedup``: the first 16,384 reads with 20% of them replaced by exact copies of other reads of the same work unit,
  once as ``predict`` runs by default (identical frames embedded once) and once with ``--no-dedup``: the rate
  counted in input frames, the calls (identical) and the largest score difference.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import VirNucProError
from ..prediction import COMPILE_MIN_TOKENS_PER_GPU
from . import schema

SAMPLE_ESM_TOKENS = 42.75e6
DEDUP_READS = 16384  # the dedup pair runs on the first reads of the workload
COMPILE_SMALL_READS = 4096  # the small input of the compile-policy check
COMPARED = ("prediction_results.txt", "prediction_results_highestscore.csv", "sequences.tsv", "viral.fa")


def _predict(ctx, src: Path, name: str, extra=(), env=None, compile: bool = True) -> dict:
    run_dir = ctx.work / name
    cmd = [sys.executable, "-m", "virnucpro_kernel", "predict", str(src), "--chunk-size", str(ctx.chunk_size),
           "--out", str(run_dir), "--profile", ctx.profile_name, "--quiet", "--force",
           "--log-dir", str(ctx.out / "logs" / name), *extra]
    # compiled as in the committed results, whatever the workload's size (predict compiles only large inputs)
    cmd += (["--compile"] if compile else ["--no-compile"]) if ctx.cuda else ["--gpus", "0"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=dict(os.environ, **(env or {})), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise VirNucProError(f"predict run {name} failed: {proc.stderr.strip().splitlines()[-1:]}")
    run = json.loads((run_dir / "run.json").read_text())
    t, c = run["timings"], run["counts"]
    stage = schema.stage_entry({"seconds": t["compute_s"]}, tokens=c["esm_tokens"], sequences=c["frames"],
                               n_gpus=1 if ctx.cuda else 0, path="optimized")
    stage.update(wall_seconds=wall, before_first_batch_s=t.get("before_first_batch_s"),
                 after_last_batch_s=t.get("after_last_batch_s"), load_models_s=t.get("load_models_s"),
                 warmup_s=t.get("warmup_s"), frames_per_s=t.get("frames_per_s"),
                 esm_tokens_computed=(c.get("rank0") or {}).get("esm_tokens_computed"), startup=t.get("startup"))
    stage["overhead_s"] = (stage["before_first_batch_s"] or 0) + (stage["after_last_batch_s"] or 0)
    stage["compiled"] = (run.get("parameters") or {}).get("compile")
    if run.get("gpu_monitor"):
        stage["gpu_busy_fraction"] = run["gpu_monitor"].get("busy_fraction")
    return stage, run_dir


def _same_files(a: Path, b: Path) -> dict:
    return {name: filecmp.cmp(a / name, b / name, shallow=False) for name in COMPARED}


def picked_faster(compiles: bool, eager_s: float, cold_s: float | None, warm_s: float) -> bool:
    """Whether compiling (``compiles``) or not was the faster choice for one input: compiled runs are judged by
    the cold cache of a fresh machine where it was measured, else by the warm one."""
    compiled_s = cold_s if cold_s is not None else warm_s
    return compiles == (compiled_s < eager_s)


def _compile_policy(ctx, path: Path, workload: dict, env: dict, result: dict, compiled_warm: dict) -> list[dict]:
    """Each input's wall time compiled and not, and whether ``predict``'s rule picked the faster way."""
    from ..prediction import compile_pays_off, estimated_esm_tokens
    from .suites import subsample_reads

    rows = []
    inputs = [("workload", path, workload["reads"], result["stages"]["predict_cold"], compiled_warm)]
    if workload["reads"] > COMPILE_SMALL_READS:
        small = subsample_reads(path, COMPILE_SMALL_READS, ctx.work / "reads_compile_small.fa")
        compiled, d = _predict(ctx, small, "small_compiled", env=env)
        shutil.rmtree(d, ignore_errors=True)
        result["stages"]["predict_small_compiled"] = compiled
        inputs.insert(0, ("small", small, COMPILE_SMALL_READS, None, compiled))
    for label, src, reads, cold, warm in inputs:
        eager, d = _predict(ctx, src, f"{label}_eager", env=env, compile=False)
        shutil.rmtree(d, ignore_errors=True)
        result["stages"][f"predict_{label}_eager"] = eager
        auto = compile_pays_off(src, 1)
        rows.append({"input": label, "reads": reads, "esm_tokens": eager["tokens"],
                     "estimated_esm_tokens": estimated_esm_tokens(src), "auto_compiles": auto,
                     "eager_wall_s": eager["wall_seconds"],
                     "compiled_cold_wall_s": cold["wall_seconds"] if cold else None,
                     "compiled_warm_wall_s": warm["wall_seconds"],
                     "auto_picked_faster": picked_faster(auto, eager["wall_seconds"], cold and cold["wall_seconds"],
                                                         warm["wall_seconds"])})
    return rows


def suite_predict(ctx) -> dict:
    from .workloads import write_with_duplicates

    path, workload = ctx.workload()
    result = schema.new_result("predict", ctx.command, workload=workload)
    cache = ctx.work / "compiler-cache"
    shutil.rmtree(cache, ignore_errors=True)
    env = {"TORCHINDUCTOR_CACHE_DIR": str(cache), "TRITON_CACHE_DIR": str(cache / "triton")}
    cold, cold_dir = _predict(ctx, path, "cold", env=env)
    warm, warm_dir = _predict(ctx, path, "warm", env=env)
    result["stages"]["predict_cold"] = cold
    result["stages"]["predict_warm"] = warm
    same = _same_files(cold_dir, warm_dir)
    rate = warm["tokens_per_s"]
    result["summary"] = {
        "before_first_batch_s_warm": warm["before_first_batch_s"], "after_last_batch_s_warm": warm["after_last_batch_s"],
        "overhead_s_warm": warm["overhead_s"], "overhead_s_cold": cold["overhead_s"],
        "published_sample_minutes_1gpu": (SAMPLE_ESM_TOKENS / rate + warm["overhead_s"]) / 60 if rate else None,
        "cold_and_warm_outputs_identical": all(same.values())}
    result["identical_files"] = same

    from .suites import subsample_reads

    if ctx.cuda:
        result["compile_policy"] = _compile_policy(ctx, path, workload, env, result, warm)
    dup_src = path if workload["reads"] <= DEDUP_READS else subsample_reads(path, DEDUP_READS,
                                                                             ctx.work / "reads_dedup_src.fa")
    dup_path = ctx.work / "reads_dup20.fa"
    dup_info = write_with_duplicates(dup_src, dup_path, fraction=0.2, window=4096)
    on, on_dir = _predict(ctx, dup_path, "dedup", env=env)
    off, off_dir = _predict(ctx, dup_path, "no_dedup", extra=["--no-dedup"], env=env)
    result["stages"]["predict_dup20_dedup"] = on
    result["stages"]["predict_dup20_no_dedup"] = off
    a = pd.read_csv(on_dir / "sequences.tsv", sep="\t")
    b = pd.read_csv(off_dir / "sequences.tsv", sep="\t")
    fa = pd.read_csv(on_dir / "prediction_results.txt", sep="\t")
    fb = pd.read_csv(off_dir / "prediction_results.txt", sep="\t")
    result["dedup"] = {
        **dup_info, "speedup_input_frames": on["frames_per_s"] / off["frames_per_s"],
        "esm_tokens_computed_fraction": (on["esm_tokens_computed"] or 0) / max(on["tokens"] or 1, 1),
        "sequence_calls_identical": bool((a["call"] == b["call"]).all()),
        "frame_calls_identical": bool((fa["Prediction"] == fb["Prediction"]).all()),
        "max_score_difference": float(np.max(np.abs(fa["score2"].to_numpy() - fb["score2"].to_numpy()))
                                      if len(fa) else 0.0),
        "files_identical": _same_files(on_dir, off_dir)}
    result["ratios"] = {"dedup_speedup_input_frames": result["dedup"]["speedup_input_frames"]}
    result["notes"] = [
        "cold: empty compiler cache (a fresh machine); warm: the cache the cold run left",
        "published_sample_minutes_1gpu: extrapolated from the warm run (its rate and its overhead), not a run of "
        "that sample",
        f"dedup workload: {dup_info['duplicated']} of {dup_info['reads']} reads replaced by copies of reads of the "
        f"same {dup_info['window']}-read work unit"]
    if "compile_policy" in result:
        result["notes"].append(
            "compile_policy: wall seconds of whole runs (process start to exit), compiled and not; the rule compiles "
            f"from {COMPILE_MIN_TOKENS_PER_GPU / 1e6:g}M estimated ESM-2 tokens per GPU; on the small input the "
            "compiled run had the cache of the runs before it (the best case for compiling)")
    print(f"predict: warm {rate:,.0f} ESM-2 tok/s; overhead cold {cold['overhead_s']:.1f} s, warm "
          f"{warm['overhead_s']:.1f} s (before the first batch {warm['before_first_batch_s']:.1f} s, after the last "
          f"{warm['after_last_batch_s']:.1f} s); cold and warm outputs identical: {all(same.values())}; dedup "
          f"speed-up {result['dedup']['speedup_input_frames']:.2f}x, calls identical "
          f"{result['dedup']['sequence_calls_identical']}, max score difference "
          f"{result['dedup']['max_score_difference']:.2e}")
    for d in (cold_dir, warm_dir, on_dir, off_dir):
        shutil.rmtree(d, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    return result
