"""``virnucpro benchmark``: every suite measures the optimized path beside a reference (or peer) in one run.

Suites (``--suite``):

* ``prepare``: vectorized chunking + six-frame translation + writing against the per-codon reference path,
  on the workload's reads (the reference on a subsample): bases/s and their ratio.
* ``encoders``: ESM-2 3B and DNABERT-S packed forward against transformers' padded ``EsmModel`` (when
  installed), MFU against a bf16 matrix product measured in the same run, bf16-vs-fp32 error
  (``bench.encoders``).
* ``engine``: ``predict``'s pipeline end to end on one device, beside the ESM-2-only throughput of the same
  build on the same batches (everything else should hide behind it) and the reference path (fp32, one
  DNABERT-S sequence per call, padded fp32 ESM-2 in batches of 4,096 tokens) on a subsample.
* ``scaling``: ``virnucpro predict`` on 1, 2, 4... GPUs (one process per GPU under torchrun), the smaller
  counts on a subsample of ``--per-gpu-reads`` reads per GPU; scaling efficiency = rate(N) / (N * rate(1)).
* ``equivalence``: the optimized path against the reference path (fp32, reference attention, no packing,
  no compile), and each optimization switched on alone: relative errors of the features per model and call
  agreement per frame and per chunk; per-frame errors in ``equivalence_errors.parquet``.

Weights: random weights of the real shapes on a GPU (same compute as the real ones), the demo profile on
a CPU. Workloads: committed, seeded presets of 150-bp reads (``bench.workloads``).

Repetitions (what ``--compare-to`` can judge: ``bench.regression`` needs 3 per stage). ``prepare``: both
stages in 3 fresh processes one after the other, 5 repetitions in each (one process of 3 with ``--quick``;
``timing.time_in_processes``: the time of host work moves from one process to the next by more than within
one), each timed repetition lasting at least 0.25 s of CPU time by running the work several times when one
call is shorter (``loops``), so the small workloads are not lost in the timer's jitter; wall-clock and CPU
time are both recorded, and before each repetition the CPU time of a fixed probe lasting half as long
(``timing.machine_probe``: the machine's speed at that moment). ``engine``:
every stage 3 times, the reference included; ``encoders``: 3 timed passes per stage. The stages of
``equivalence`` and ``scaling`` are timed once, as by-products of runs made for other figures: their results
say so and the regression check lists them without judging them. The test hook
``VIRNUCPRO_BENCH_TEST_SLOWDOWN`` (``timing.planted_slowdown``) slows the timed stages on purpose.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import VirNucProError
from . import regression, schema
from .host import prepare_reference_work, prepare_vectorized_work
from .timing import (TEST_SLOWDOWN_ENV, LeakCheck, host_peak_rss_gb, machine_probe, measure_matmul_ceiling,
                     memory_stage, planted_slowdown, slowed, time_in_processes, time_repeated)
from .workloads import write_workload

log = logging.getLogger("virnucpro")

SUITES = ("prepare", "encoders", "engine", "equivalence", "scaling", "predict")
PUBLISHED_SAMPLE = {"esm_tokens": 42.75e6, "frames": 794_577}
REFERENCE_ESM_BATCH_TOKENS = 4096
HOST_PROCESSES = 3
TIMED_ONCE = "timed once (a by-product of this suite's runs): listed, not judged, by the regression check"


class Context:
    def __init__(self, args):
        self.args = args
        self.cuda = torch.cuda.is_available()
        self.device = "cuda:0" if self.cuda else "cpu"
        self.profile_name = args.profile or ("random" if self.cuda else "demo")
        self.chunk_size = args.chunk_size
        self.out = Path(args.out)
        self.work = self.out / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        # prepare (cheap, host-bound): 3 fresh processes of 5 repetitions of at least 0.25 s each (one process
        # of 3 with --quick): the drift between processes is the noise band of CPU time (bench.regression);
        # the GPU suites: 3 repetitions, the least the regression check judges
        self.repetitions = regression.MIN_REPETITIONS if args.quick else 5
        self.host_processes = 1 if args.quick else HOST_PROCESSES
        self.min_seconds = 0.25
        self.gpu_repetitions = regression.MIN_REPETITIONS
        self.command = "virnucpro " + shlex.join(getattr(args, "argv", None) or sys.argv[1:])
        self._workload = None

    def workload(self) -> tuple[Path, dict]:
        if self._workload is None:
            path = self.work / f"reads_{self.args.data_size}.fa"
            info = write_workload(self.args.data_size, path)
            cap = getattr(self.args, "max_reads", None)
            if cap and cap < info["reads"]:
                path = subsample_reads(path, cap, self.work / f"reads_{self.args.data_size}_first{cap}.fa")
                info.update(reads=cap, bases=cap * info["read_length"], subsample=f"first {cap} reads",
                            sha256=hashlib.sha256(path.read_bytes()).hexdigest())
            info.update(frame_stats(path, self.chunk_size))
            info.pop("path", None)
            self._workload = (path, info)
        return self._workload

    def profile(self):
        from ..models.profiles import resolve_profile

        return resolve_profile(self.profile_name, self.chunk_size)

    def options(self, **kw):
        from ..engine import EngineOptions, default_dtype

        base = dict(chunk_size=self.chunk_size, device=self.device, dtype=default_dtype(self.device),
                    compile=self.cuda)
        base.update(kw)
        return EngineOptions(**base)


def _planted(result: dict, stage: str) -> float:
    """The test hook's slowdown for ``stage`` (``timing.planted_slowdown``), with a warning in ``result`` when
    there is one."""
    fraction = planted_slowdown(stage)
    if fraction:
        result["warnings"].append(f"test hook {TEST_SLOWDOWN_ENV}: stage {stage} slowed by {100 * fraction:g}% "
                                  "on purpose; not a measurement of the code")
    return fraction


def _with_probe(kw: dict) -> dict:
    """Timing keywords of work on the CPU: beside the machine probe, for half a repetition before each."""
    kw.setdefault("probe", machine_probe)
    kw.setdefault("probe_seconds", max(0.1, kw.get("min_seconds", 0.0) / 2))
    return kw


def timed_stage(result: dict, stage: str, fn, **kw) -> dict:
    """``time_repeated(fn, **kw)`` for ``stage``; work on the CPU is timed beside the machine probe (what the
    regression check judges it by). Through the test hook: when ``VIRNUCPRO_BENCH_TEST_SLOWDOWN`` plants a
    slowdown in this stage, ``fn`` is slowed accordingly and the result gets a warning saying so."""
    host = torch.device(kw.get("device") or "cpu").type == "cpu"
    fraction = _planted(result, stage)
    if fraction:
        fn = slowed(fn, fraction, clock="cpu" if host else "wall")  # the clock the stage is judged on
    return time_repeated(fn, **(_with_probe(kw) if host else kw))


def frame_stats(path, chunk_size) -> dict:
    """Frames and ESM-2 tokens of a FASTA file (the workload's size in the units that cost GPU time)."""
    from ..fasta import iter_record_blocks
    from ..frames import chunk_block, frames_of_chunks

    frames = tokens = chunks = 0
    for block in iter_record_blocks(path):
        c = chunk_block(block, chunk_size)
        f = frames_of_chunks(block, c)
        chunks += len(c)
        frames += len(f)
        tokens += int(np.diff(f.prot_off).sum()) + 2 * len(f)
    return {"chunks": chunks, "frames": frames, "tokens": tokens, "esm_tokens": tokens}


def subsample_reads(path: Path, n: int, dst: Path) -> Path:
    """The first ``n`` records of a two-line FASTA file."""
    with open(path) as src, open(dst, "w") as out:
        for i, line in enumerate(src):
            if i >= 2 * n:
                break
            out.write(line)
    return dst


# ------------------------------------------------------------------------------------------ prepare


def timed_host_stage(result: dict, stage: str, build, args: tuple, ctx: Context) -> dict:
    """Host work ``build(*args)`` timed as the prepare suite times it: ``ctx.repetitions`` repetitions of at
    least ``ctx.min_seconds`` of CPU time beside the machine probe, in ``ctx.host_processes`` fresh processes
    (``timing.time_in_processes``; in this process when 1)."""
    kw = dict(repetitions=ctx.repetitions, warmup=1, device="cpu", min_seconds=ctx.min_seconds)
    if ctx.host_processes <= 1:
        return timed_stage(result, stage, build(*args), **kw)
    return time_in_processes(build, args, ctx.host_processes, plant=_planted(result, stage), **_with_probe(kw))


def suite_prepare(ctx: Context) -> dict:
    path, workload = ctx.workload()
    result = schema.new_result("prepare", ctx.command, workload=workload)
    bases = workload["bases"]
    tmp = Path(tempfile.mkdtemp(dir=ctx.work))
    timing = timed_host_stage(result, "prepare_vectorized", prepare_vectorized_work,
                              (str(path), ctx.chunk_size, str(tmp / "vec")), ctx)
    vec = schema.stage_entry(timing, tokens=bases, sequences=workload["reads"], path="optimized")
    vec["unit"] = "bases"
    result["stages"]["prepare_vectorized"] = vec
    if not ctx.args.no_reference:
        n_ref = min(workload["reads"], 5000 if ctx.args.quick else 20000)
        sub = subsample_reads(path, n_ref, tmp / "ref.fa")
        sub_bases = sum(len(line) - 1 for i, line in enumerate(open(sub)) if i % 2 == 1)
        t_ref = timed_host_stage(result, "prepare_reference", prepare_reference_work,
                                 (str(sub), ctx.chunk_size, str(tmp)), ctx)
        ref = schema.stage_entry(t_ref, tokens=sub_bases, sequences=n_ref, path="reference")
        ref["unit"] = "bases"
        ref["subsample_reads"] = n_ref
        result["stages"]["prepare_reference"] = ref
        result["ratios"] = {"prepare_vectorized_vs_reference": vec["tokens_per_s"] / ref["tokens_per_s"]}
    result["summary"] = {"vectorized_mbp_per_s": vec["tokens_per_s"] / 1e6}
    if "prepare_reference" in result["stages"]:
        result["summary"]["reference_mbp_per_s"] = result["stages"]["prepare_reference"]["tokens_per_s"] / 1e6
    print(f"prepare: vectorized {vec['tokens_per_s'] / 1e6:.1f} Mbp/s"
          + (f", reference {result['summary']['reference_mbp_per_s']:.2f} Mbp/s, ratio "
             f"{result['ratios']['prepare_vectorized_vs_reference']:.1f}x" if "ratios" in result else ""))
    return result


# ------------------------------------------------------------------------------------------ encoders


def suite_encoders(ctx: Context) -> dict:
    from .encoders import run_encoder_benchmark

    raw = run_encoder_benchmark(ctx.device, quick=ctx.args.quick, repeats=ctx.gpu_repetitions)
    result = schema.new_result("encoders", ctx.command, workload={
        "name": "mixed lengths: 3,000 proteins uniform in 30-166 residues",
        "reads": 0, "frames": raw.get("workload", {}).get("sequences"), "tokens": raw.get("workload", {}).get("tokens")})
    for name, st in raw.items():
        if not isinstance(st, dict) or "tokens_per_s" not in st:
            continue
        entry = dict(st)
        entry.setdefault("repetitions", ctx.gpu_repetitions)  # timed passes per stage (bench.encoders)
        entry.setdefault("n_gpus", 1 if ctx.cuda else 0)
        entry.setdefault("path", "peer" if "transformers" in name else ("reference" if "fp32" in name else "optimized"))
        result["stages"][name] = entry
    result["ratios"] = raw.get("ratios", {})
    result["relative_error"] = raw.get("relative_error", {})
    for key in ("ceiling_tflops", "workload", "notes", "kernel_time", "skipped_routes"):
        if key in raw:
            result[key] = raw[key]
    return result


# ------------------------------------------------------------------------------------------ engine


def _prepared_units(pipeline, path, unit_records=4096):
    from ..distributed import iter_units
    from ..fasta import RecordValidator

    return [pipeline.prepare(u, r) for u, r in iter_units(path, unit_records, RecordValidator(path))]


def _run_stream(pipeline, path, unit_records=4096):
    """The predict loop without the files: prefetch thread preparing units while the device runs them."""
    from ..distributed import iter_units
    from ..engine import Prefetcher
    from ..fasta import RecordValidator

    def produce():
        for u, r in iter_units(path, unit_records, RecordValidator(path)):
            yield pipeline.prepare(u, r)

    results = [pipeline.run(p) for p in Prefetcher(produce)]
    return results


def reference_features(profile, path, chunk_size, device, max_frames=None):
    """The reference path: fp32, DNABERT-S one sequence per forward, ESM-2 padded (reference attention) in
    length-sorted batches of at most 4,096 tokens, as the original runs them. Returns (features, tokens)."""
    from ..batching import pack_by_tokens, pack_tokens
    from ..models.esm2 import tokenize as esm_tokenize
    from ..fasta import iter_record_blocks
    from ..frames import chunk_block, frames_of_chunks

    dnabert, esm, _ = profile.load(device=device, dtype=torch.float32, attention="reference", compile=False)
    nucs, prots = [], []
    for block in iter_record_blocks(path):
        f = frames_of_chunks(block, chunk_block(block, chunk_size))
        nucs += f.nucleotides()
        prots += f.proteins()
        if max_frames and len(nucs) >= max_frames:
            break
    if max_frames:
        nucs, prots = nucs[:max_frames], prots[:max_frames]
    dna_tok = dnabert.tokenize(nucs)
    esm_tok = esm_tokenize(prots)

    def run():
        d = [dnabert.forward_packed(*pack_tokens(dna_tok, [i]).to(device)) for i in range(len(dna_tok))]
        batches = pack_by_tokens([len(t) for t in esm_tok], REFERENCE_ESM_BATCH_TOKENS)
        e = torch.empty(len(esm_tok), esm.config.hidden_size, device=device)
        for b in batches:
            e[torch.as_tensor(b, device=device)] = esm.forward_packed(*pack_tokens(esm_tok, b).to(device))
        return torch.cat([torch.cat(d), e], dim=1)

    return run, sum(len(t) for t in esm_tok), len(esm_tok)


def suite_engine(ctx: Context) -> dict:
    from ..engine import FramePipeline
    from .monitor import GPUMonitor

    path, workload = ctx.workload()
    result = schema.new_result("engine", ctx.command, workload=workload)
    profile = ctx.profile()
    leak = LeakCheck(ctx.device).start()
    pipeline = FramePipeline(profile, ctx.options())
    warm = pipeline.warmup() if ctx.cuda else 0.0
    ceiling = measure_matmul_ceiling(ctx.device) if ctx.cuda else None
    flops = pipeline.esm.flops_per_token + pipeline.dnabert.flops_per_token * 0.7  # ~0.7 DNABERT tokens / ESM token
    tokens, frames = workload["tokens"], workload["frames"]
    log_dir = ctx.out / "logs"
    with GPUMonitor(log_dir) as monitor, memory_stage(ctx.device) as mem:
        t = timed_stage(result, "end_to_end", lambda: _run_stream(pipeline, path),
                        repetitions=ctx.gpu_repetitions, warmup=0, device=ctx.device, clock="wall")
    result["gpu_monitor"] = monitor.summary()
    e2e = schema.stage_entry(t, tokens=tokens, sequences=frames, n_gpus=1, path="optimized", memory=mem,
                             flops_per_token=flops, ceiling_tflops=ceiling)
    result["stages"]["end_to_end"] = e2e
    # ESM-2 alone on the same batches, already prepared and on the host: the ceiling the pipeline should reach
    prepared = _prepared_units(pipeline, path)
    esm_batches = [b for p in prepared for b in p.esm_batches]

    def esm_only():
        for _, ids, cu, m in esm_batches:
            pipeline.esm.forward_packed(ids.to(pipeline.device, non_blocking=True),
                                        cu.to(pipeline.device, non_blocking=True), m)

    with memory_stage(ctx.device) as mem2:
        t2 = timed_stage(result, "esm2_only", esm_only, repetitions=ctx.gpu_repetitions, warmup=1,
                         device=ctx.device, clock="wall")
    result["stages"]["esm2_only"] = schema.stage_entry(t2, tokens=tokens, sequences=frames, path="optimized",
                                                       memory=mem2, flops_per_token=pipeline.esm.flops_per_token,
                                                       ceiling_tflops=ceiling)
    ratios = {"end_to_end_vs_esm2_only": e2e["tokens_per_s"] / result["stages"]["esm2_only"]["tokens_per_s"]}
    del pipeline, prepared, esm_batches, esm_only
    if not ctx.args.no_reference:
        n_ref = min(frames, 300 if ctx.args.quick else (2000 if ctx.cuda else 400))
        run, ref_tokens, ref_frames = reference_features(profile, path, ctx.chunk_size, ctx.device, max_frames=n_ref)
        with memory_stage(ctx.device) as mem3:
            t3 = timed_stage(result, "reference_fp32", run, repetitions=ctx.gpu_repetitions, warmup=0,
                             device=ctx.device, clock="wall")
        ref = schema.stage_entry(t3, tokens=ref_tokens, sequences=ref_frames, path="reference", memory=mem3,
                                 flops_per_token=flops, ceiling_tflops=ceiling)
        ref["subsample_frames"] = ref_frames
        result["stages"]["reference_fp32"] = ref
        ratios["end_to_end_vs_reference"] = e2e["tokens_per_s"] / ref["tokens_per_s"]
        del run
    result["ratios"] = ratios
    if ctx.cuda:
        torch.cuda.empty_cache()
    leak.stop()
    result["memory"] = {**leak.as_dict(), "host_peak_rss_gb": host_peak_rss_gb()}
    result["summary"] = {"warmup_s": warm, **_projection(e2e["tokens_per_s"], 1)}
    return result


def _projection(tokens_per_s, n_gpus) -> dict:
    if not tokens_per_s:
        return {}
    minutes = PUBLISHED_SAMPLE["esm_tokens"] / tokens_per_s / 60
    return {f"published_sample_minutes_{n_gpus}gpu": minutes}


# ------------------------------------------------------------------------------------------ scaling


def suite_scaling(ctx: Context) -> dict:
    path, workload = ctx.workload()
    counts = [int(c) for c in (ctx.args.gpu_counts or ("1" if not ctx.cuda else str(torch.cuda.device_count()))).split(",")]
    available = torch.cuda.device_count() if ctx.cuda else os.cpu_count() or 1
    if max(counts) > available:
        raise VirNucProError(f"--gpu-counts {max(counts)}: only {available} {'GPUs' if ctx.cuda else 'CPUs'} here")
    per_gpu = ctx.args.per_gpu_reads or (65536 if ctx.cuda else workload["reads"])
    previous = ctx.out / "scaling.json"
    result = schema.new_result("scaling", ctx.command, workload=workload)
    if previous.exists():  # results accumulate per GPU count across calls (same commit and workload)
        old = json.loads(previous.read_text())
        if old.get("git_commit") == result["git_commit"] and old.get("workload", {}).get("sha256") == workload.get("sha256"):
            result["stages"].update({k: v for k, v in old.get("stages", {}).items()
                                     if v.get("n_gpus") not in counts})
            result["gpu_monitor"] = old.get("gpu_monitor")
    unit_records = 1024 if ctx.cuda else 4
    for n in counts:
        reads = min(workload["reads"], n * per_gpu) if n < max(counts) else workload["reads"]
        src = path if reads == workload["reads"] else subsample_reads(path, reads, ctx.work / f"reads_{n}gpu.fa")
        run_dir = ctx.work / f"run_{n}"
        cmd = [sys.executable, "-m", "virnucpro_kernel", "predict", str(src), "--chunk-size", str(ctx.chunk_size),
               "--out", str(run_dir), "--profile", ctx.profile_name, "--quiet", "--force",
               "--unit-records", str(unit_records),
               "--log-dir", str(ctx.out / "logs" / f"{n}gpu")]
        env = dict(os.environ)
        if ctx.cuda:
            cmd += ["--gpus", str(n), "--compile"]  # every count compiled (predict compiles only large inputs)
            chosen = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()] or \
                [str(i) for i in range(available)]
            env["CUDA_VISIBLE_DEVICES"] = ",".join(chosen[:n])  # the first n of the GPUs the user made visible
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
                   *cmd[1:], "--gpus", "0"]
        log.info("scaling: %d %s on %d reads: %s", n, "GPU(s)" if ctx.cuda else "process(es)", reads, " ".join(cmd))
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise VirNucProError(f"scaling run on {n} GPU(s) failed: {proc.stderr.strip().splitlines()[-1:]}")
        run = json.loads((run_dir / "run.json").read_text())
        seconds = run["timings"]["compute_s"]
        stage = schema.stage_entry({"seconds": seconds}, tokens=run["counts"]["esm_tokens"],
                                   sequences=run["counts"]["frames"], n_gpus=n, path="optimized",
                                   flops_per_token=5.66e9 if ctx.profile_name == "random" else None,
                                   ceiling_tflops=790.0 if ctx.cuda else None)
        stage.update(reads=reads, wall_seconds=wall, load_models_s=run["timings"]["load_models_s"],
                     warmup_s=run["timings"].get("warmup_s"), esm_tokens=run["counts"]["esm_tokens"],
                     notes=TIMED_ONCE)
        if run.get("gpu_monitor"):
            stage["gpu_busy_fraction"] = run["gpu_monitor"].get("busy_fraction")
            stage["gpu_log"] = run["gpu_monitor"].get("log")
            result["gpu_monitor"] = run["gpu_monitor"]
        result["stages"][f"engine_{n}gpu"] = stage
        print(f"scaling: {n} {'GPU' if ctx.cuda else 'process'}(s): {stage['tokens_per_s']:,.0f} ESM-2 tok/s over "
              f"{reads} reads ({seconds:.1f} s compute, {wall:.1f} s wall)")
        _scaling_summary(result, ctx, per_gpu)
        schema.write_result(result, ctx.out)  # partial results survive a later failure
    return result


def _scaling_summary(result, ctx, per_gpu):
    by_n = {v["n_gpus"]: v for v in result["stages"].values()}
    if 1 in by_n:
        base = by_n[1]["tokens_per_s"]
        result["scaling_efficiency"] = {str(n): v["tokens_per_s"] / (n * base) for n, v in sorted(by_n.items())}
    result["summary"] = {k: v for n, st in sorted(by_n.items()) for k, v in _projection(st["tokens_per_s"], n).items()}
    result["notes"] = ["MFU counts ESM-2 FLOPs only (5.66 GFLOP/token) against 790 TFLOP/s per GPU"
                       if ctx.cuda else "CPU processes: scaling of the process topology, not of GPUs",
                       f"smaller GPU counts run on the first {per_gpu} reads per GPU; the largest on the whole workload"]


# ------------------------------------------------------------------------------------------ equivalence


def _features_and_probs(profile, path, options):
    from ..engine import FramePipeline

    pipeline = FramePipeline(profile, options)
    results = _run_stream(pipeline, path)
    feats = np.concatenate([r.features for r in results if r.features is not None])
    probs = np.concatenate([r.probs for r in results])
    frames = [(r.records.record_index[r.frames.record], r.frames.chunk) for r in results if len(r.frames)]
    chunk_key = np.concatenate([rec * 100000 + ch for rec, ch in frames])
    return feats, probs, chunk_key, pipeline.dnabert.config.hidden_size


def _compare(ref, var, d_hidden):
    f_ref, p_ref, key = ref[0], ref[1], ref[2]
    f_var, p_var = var[0], var[1]

    def rel(a, b):
        return float(np.linalg.norm(a.astype(np.float64) - b) / max(np.linalg.norm(b.astype(np.float64)), 1e-30))

    per_frame = {
        "dnabert": np.linalg.norm(f_var[:, :d_hidden] - f_ref[:, :d_hidden], axis=1)
        / np.maximum(np.linalg.norm(f_ref[:, :d_hidden], axis=1), 1e-30),
        "esm2": np.linalg.norm(f_var[:, d_hidden:] - f_ref[:, d_hidden:], axis=1)
        / np.maximum(np.linalg.norm(f_ref[:, d_hidden:], axis=1), 1e-30)}
    agree_frame = float(np.mean(p_var.argmax(1) == p_ref.argmax(1)))

    def chunk_calls(p):
        order = np.argsort(key, kind="stable")
        k = key[order]
        starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        return np.maximum.reduceat(p[order, 1], starts) >= np.maximum.reduceat(p[order, 0], starts)

    agree_chunk = float(np.mean(chunk_calls(p_var) == chunk_calls(p_ref)))
    return ({"dnabert": rel(f_var[:, :d_hidden], f_ref[:, :d_hidden]), "esm2": rel(f_var[:, d_hidden:], f_ref[:, d_hidden:]),
             "features": rel(f_var, f_ref), "probs": rel(p_var, p_ref)}, agree_frame, agree_chunk, per_frame)


def suite_equivalence(ctx: Context) -> dict:
    import pandas as pd

    path, workload = ctx.workload()
    result = schema.new_result("equivalence", ctx.command, workload=workload)
    profile = ctx.profile()
    from ..engine import default_dtype

    fast_dtype = default_dtype(ctx.device)
    reference = dict(dtype="fp32", attention="reference", packing=False, compile=False, save_features=True)
    variants = {
        "optimized": dict(dtype=fast_dtype, attention="auto", packing=True, compile=ctx.cuda, save_features=True),
        # fp32, attention over packed batches with the default kernel / the varlen kernel instead of the
        # explicit padded reference (the token-wise layers run on the unpadded tokens in every variant)
        "packed_attention_only": {**reference, "attention": "auto", "packing": True},
        "varlen_attention_only": {**reference, "attention": "varlen", "packing": True},
    }
    if ctx.cuda:
        variants["bf16_only"] = {**reference, "dtype": "bf16"}
        variants["compile_only"] = {**reference, "compile": True}
    t0 = time.perf_counter()
    ref = _features_and_probs(profile, path, ctx.options(**reference))
    t_ref = time.perf_counter() - t0
    result["stages"]["reference_fp32"] = schema.stage_entry({"seconds": t_ref}, tokens=workload["tokens"],
                                                            sequences=workload["frames"], path="reference")
    result["stages"]["reference_fp32"]["notes"] = TIMED_ONCE
    switches, rows = {}, []
    for name, opts in variants.items():
        t0 = time.perf_counter()
        var = _features_and_probs(profile, path, ctx.options(**opts))
        dt = time.perf_counter() - t0
        errors, agree_f, agree_c, per_frame = _compare(ref, var, ref[3])
        switches[name] = {"options": opts, "relative_error": errors, "call_agreement_frame": agree_f,
                          "call_agreement_chunk": agree_c, "seconds": dt}
        result["stages"][name] = schema.stage_entry({"seconds": dt}, tokens=workload["tokens"],
                                                    sequences=workload["frames"], path="optimized")
        result["stages"][name]["notes"] = TIMED_ONCE
        for model, errs in per_frame.items():
            rows.append(pd.DataFrame({"variant": name, "model": model, "frame_index": np.arange(len(errs)),
                                      "relative_error": errs}))
        print(f"equivalence {name}: features rel. error {errors['features']:.2e} (DNABERT-S {errors['dnabert']:.2e}, "
              f"ESM-2 {errors['esm2']:.2e}); calls agree on {agree_f:.2%} of frames, {agree_c:.2%} of chunks")
    opt = switches["optimized"]
    result["relative_error"] = opt["relative_error"]
    result["call_agreement"] = opt["call_agreement_frame"]
    result["call_agreement_chunk"] = opt["call_agreement_chunk"]
    result["switches"] = switches
    result["ratios"] = {"optimized_vs_reference_speed": t_ref / opt["seconds"]}
    ctx.out.mkdir(parents=True, exist_ok=True)
    pd.concat(rows).to_parquet(ctx.out / "equivalence_errors.parquet", index=False)
    result["notes"] = [f"reference: fp32, reference attention, padded, no compile; optimized: {fast_dtype}, "
                       "auto attention, packed" + (", compiled" if ctx.cuda else ""),
                       f"weights: {ctx.profile_name} profile"]
    return result


def suite_predict(ctx: Context) -> dict:
    from .runs import suite_predict as run

    return run(ctx)


RUNNERS = {"prepare": suite_prepare, "encoders": suite_encoders, "engine": suite_engine,
           "equivalence": suite_equivalence, "scaling": suite_scaling, "predict": suite_predict}


def benchmark_from_args(args) -> int:
    ctx = Context(args)
    suites = SUITES if args.suite == "all" else (args.suite,)
    status = 0
    for suite in suites:
        result = RUNNERS[suite](ctx)
        if getattr(ctx, "profile_name", None) in ("demo", "random"):
            from ..models.profiles import DEMO_WARNING, RANDOM_WARNING

            result["warnings"].append(DEMO_WARNING if ctx.profile_name == "demo" else RANDOM_WARNING)
        if args.compare_to:
            baseline_path = Path(args.compare_to)
            if baseline_path.is_dir():
                baseline_path = baseline_path / f"{suite}.json"
            if baseline_path.exists():
                status = max(status, regression.check_against_baseline(result, baseline_path))
            else:
                print(f"no baseline for suite {suite} at {baseline_path}: nothing to compare")
        json_path, md_path = schema.write_result(result, ctx.out)
        print(f"wrote {json_path} and {md_path}")
        if args.save_baseline:
            dst = Path(args.save_baseline)
            if args.suite == "all" or dst.suffix != ".json":
                dst.mkdir(parents=True, exist_ok=True)
                dst = dst / f"{suite}.json"
            regression.save_baseline(result, dst)
            print(f"saved baseline {dst}")
    return status


def run_benchmark(*, suite: str, out, data_size: str = "tiny", gpu_counts=None, compare_to=None, save_baseline=None,
                  no_reference: bool = False, quick: bool = False, profile=None, per_gpu_reads=None, max_reads=None,
                  chunk_size: int = 300) -> int:
    """The typed entry point (``api.benchmark``): the suites with these settings; 1 on a regression, else 0."""
    import argparse

    if suite not in (*SUITES, "all"):
        raise VirNucProError(f"--suite must be one of {', '.join(SUITES)} or all, not {suite!r}")
    argv = ["--suite", suite, "--data-size", data_size, "--out", str(out), "--chunk-size", str(chunk_size)]
    for flag, value in (("--gpu-counts", gpu_counts), ("--compare-to", compare_to), ("--save-baseline", save_baseline),
                        ("--profile", profile), ("--per-gpu-reads", per_gpu_reads), ("--max-reads", max_reads)):
        if value is not None:
            argv += [flag, str(value)]
    argv += ["--no-reference"] * bool(no_reference) + ["--quick"] * bool(quick)
    args = argparse.Namespace(suite=suite, data_size=data_size, gpu_counts=gpu_counts, out=str(out),
                              compare_to=None if compare_to is None else str(compare_to),
                              save_baseline=None if save_baseline is None else str(save_baseline),
                              no_reference=no_reference, quick=quick, profile=profile, per_gpu_reads=per_gpu_reads,
                              max_reads=max_reads, chunk_size=chunk_size, argv=["benchmark", *argv])
    return benchmark_from_args(args)
