"""``virnucpro predict``: one streaming pipeline from FASTA to calls, on the CPU or 1..N GPUs.

``--gpus N`` (N > 1) on one machine launches ``torchrun --standalone --nproc-per-node N`` on this same
command; on a cluster, run ``torchrun --nnodes ... -m virnucpro_kernel predict ...`` yourself. Each rank
loads the models once, claims work units (``distributed``), runs them through its device's
``engine.FramePipeline`` and writes each finished unit atomically; rank 0 then merges them into the
outputs (``outputs``).
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from . import __version__
from .distributed import (DEFAULT_UNIT_RECORDS, Coordinator, check_resume, input_identity, iter_units, now_stamp,
                          prepare_work_dir, rank_info, read_unit, unit_ids, unit_path, write_unit)
from .errors import VirNucProError
from .fasta import RecordValidator, iter_raw_blocks, iter_record_blocks
from .frames import FRAME_LABELS, check_chunk_size
from .outputs import OutputWriter

log = logging.getLogger("virnucpro")
CHILD_ENV = "VIRNUCPRO_LAUNCHED"


def scan_input(path) -> dict:
    """Validate the whole input before anything is written (bad input: one-line error, nothing in --out)."""
    validator = RecordValidator(path)
    bases = 0
    for block in iter_raw_blocks(path):
        block = validator.check(block)
        bases += int(block.seq_len.sum())
    if validator.empty_records:
        warnings.warn(f"{path}: skipped {validator.empty_records} record(s) of length 0", stacklevel=2)
    return {"records": validator.records, "empty_records": validator.empty_records, "bases": bases}


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def predict_from_args(args) -> int:
    check_chunk_size(args.chunk_size)
    if not 0.0 <= args.threshold <= 1.0:
        raise VirNucProError(f"--threshold must be between 0 and 1, not {args.threshold}")
    info = rank_info()
    visible = _visible_gpus()
    gpus = visible if args.gpus is None else args.gpus
    if gpus < 0:
        raise VirNucProError("--gpus must be 0 (CPU) or more")
    if gpus > visible:
        raise VirNucProError(f"--gpus {gpus}: only {visible} GPU(s) visible")
    if not info.distributed and gpus > 1 and not os.environ.get(CHILD_ENV):
        return launch_torchrun(args, gpus)
    return run(args, gpus)


def _resumed_unit_records(out: Path, resume: bool) -> int | None:
    """With --resume and no --unit-records: the interrupted run's unit size."""
    import json

    manifest = out / ".work" / "manifest.json"
    if resume and manifest.is_file():
        return json.loads(manifest.read_text()).get("unit_records")
    return None


def check_input_file(path) -> None:
    """predict reads its input more than once (check, compute, viral.fa): it must be a regular file."""
    from .errors import InputError
    from .fasta import open_input

    p = Path(path)
    if p.exists() and not p.is_dir() and not p.is_file():  # a pipe would block here and be read only once
        raise InputError(path, "not a regular file (predict reads its input more than once: save it to a file)")
    open_input(path).close()  # missing, a folder, unreadable: the usual one-line errors


def check_models(args) -> None:
    """What would stop every rank at start-up, checked once before torchrun starts them."""
    import importlib.util

    from .models.profiles import resolve_profile

    if args.attention == "flash" and importlib.util.find_spec("flash_attn") is None:
        raise VirNucProError("--attention flash needs the flash-attn package, which is not installed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        profile = resolve_profile(args.profile, args.chunk_size, esm=args.esm, dnabert=args.dnabert,
                                  classifier=args.classifier)
    profile.check()


def launch_torchrun(args, gpus: int) -> int:
    """Check the input and models, then start one process per GPU on this machine with torchrun."""
    check_input_file(args.input)
    scan_input(args.input)
    check_models(args)
    argv = list(getattr(args, "argv", None) or sys.argv[1:])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpus}",
           "-m", "virnucpro_kernel", *argv]
    env = dict(os.environ, **{CHILD_ENV: "1"})
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // gpus)))
    log.info("launching %d processes: %s", gpus, " ".join(cmd[1:]))
    proc = subprocess.run(cmd, env=env)
    if proc.returncode:
        raise VirNucProError(f"{gpus}-GPU run failed (torchrun exit status {proc.returncode}); see the log above "
                             f"and in {args.log_dir or Path(args.out) / 'logs'}")
    return 0


def _setup_logging(log_dir: Path, stamp: str, rank: int) -> Path:
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"predict_{stamp}.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(f"%(asctime)s rank{rank} %(levelname)s %(message)s"))
    root = logging.getLogger("virnucpro")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return path


class Progress:
    """Rank 0's progress bar: units, frames/s, tokens/s and ETA over all ranks."""

    def __init__(self, total_units: int | None, enabled: bool):
        self.t0 = time.perf_counter()
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total_units, unit="unit", desc="predict", file=sys.stderr, dynamic_ncols=True)

    def update(self, units_done: int, frames: int, tokens: int):
        if self.bar is None:
            return
        dt = max(time.perf_counter() - self.t0, 1e-9)
        self.bar.n = units_done
        self.bar.set_postfix_str(f"{frames / dt:,.0f} frames/s, {tokens / dt:,.0f} ESM-2 tok/s", refresh=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def run(args, gpus: int) -> int:
    import torch

    from .engine import EngineOptions, FramePipeline, Prefetcher, default_dtype
    from .models.profiles import resolve_profile

    info = rank_info()
    t_start = time.perf_counter()
    out = Path(args.out)
    check_input_file(args.input)
    # rank 0 checks the whole input before anything is written (the other ranks are stopped by torchrun if it fails)
    summary = scan_input(args.input) if info.is_main else None
    device = f"cuda:{info.local_rank}" if gpus > 0 else "cpu"
    if device.startswith("cuda"):
        torch.cuda.set_device(info.local_rank)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, info.local_world_size)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        profile = resolve_profile(args.profile, args.chunk_size, esm=args.esm, dnabert=args.dnabert,
                                  classifier=args.classifier)
    run_warnings = list(profile.warnings)
    if info.is_main:
        for w in caught:
            warnings.warn(str(w.message), stacklevel=1)
    options = EngineOptions(chunk_size=args.chunk_size, device=device, dtype=args.dtype or default_dtype(device),
                            token_budget=args.token_budget, attention=args.attention, packing=not args.no_packing,
                            compile=device.startswith("cuda") and not args.no_compile,
                            save_features=args.save_features)
    unit_records = args.unit_records or _resumed_unit_records(out, args.resume) or DEFAULT_UNIT_RECORDS
    manifest = {"input": input_identity(args.input), "chunk_size": args.chunk_size, "unit_records": unit_records,
                "profile": profile.describe(), "dtype": options.dtype, "save_features": args.save_features}
    if args.resume:
        check_resume(out, manifest)
    # models load before anything is written: a bad checkpoint or setting leaves --out untouched
    pipeline = FramePipeline(profile, options)
    coord = Coordinator(info, "nccl" if device.startswith("cuda") else "gloo",
                        os.environ.get("TORCHELASTIC_RUN_ID", "local"))
    stamp = coord.share("stamp", now_stamp() if info.is_main else None)
    log_dir = Path(args.log_dir) if args.log_dir else out / "logs"
    log_path = _setup_logging(log_dir, stamp, info.rank)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        work, kept = prepare_work_dir(out, manifest, args.resume)
        if kept:
            log.info("resuming: %d finished unit(s) kept", kept)
    coord.barrier()
    work = out / ".work"

    # first batches compile (GPU) and load the tokenizer: keep that out of the measured compute time
    warmup_s = pipeline.warmup() if device.startswith("cuda") else pipeline.warmup(sizes=(4,))
    coord.barrier()  # every rank ready: the compute time starts here
    monitor = None
    if device.startswith("cuda") and info.local_rank == 0:
        from .bench.monitor import GPUMonitor

        node = int(os.environ.get("GROUP_RANK", 0))  # one GPU log per machine, in its own folder past the first
        monitor = GPUMonitor(log_dir if node == 0 else log_dir / f"node{node}")
        monitor.start()
    total_units = -(-summary["records"] // unit_records) if summary else None
    progress = Progress(total_units, info.is_main and not args.quiet)
    n_units = 0
    own = {"units": 0, "frames": 0, "esm_tokens": 0, "dna_tokens": 0, "gpu_seconds": 0.0, "oom_splits": 0}

    def produce():
        nonlocal n_units
        validator = RecordValidator(args.input)
        target = coord.claim()
        for unit, records in iter_units(args.input, unit_records, validator):
            n_units = unit + 1
            if unit < target:
                continue
            if unit_path(work, unit).exists():  # finished before a kill: --resume keeps it
                coord.add("units_done", 1)
                target = coord.claim()
                continue
            yield pipeline.prepare(unit, records)
            target = coord.claim()

    t_compute = time.perf_counter()
    prefetch = Prefetcher(produce, depth=2)
    try:
        for prepared in prefetch:
            result = pipeline.run(prepared)
            write_unit(work, result)
            own["units"] += 1
            own["frames"] += len(result.frames)
            own["esm_tokens"] += result.esm_tokens
            own["dna_tokens"] += result.dna_tokens
            own["gpu_seconds"] += result.seconds
            own["oom_splits"] += result.oom_splits
            done = coord.add("units_done", 1)
            frames = coord.add("frames", len(result.frames))
            tokens = coord.add("esm_tokens", result.esm_tokens)
            progress.update(done, frames, tokens)
            log.info("unit %d: %d records, %d frames, %d ESM-2 tokens in %.2f s", result.unit, len(result.records),
                     len(result.frames), result.esm_tokens, result.seconds)
    finally:
        prefetch.close()
        progress.close()
    log.info("rank %d done: %s", info.rank, own)
    coord.barrier()  # every rank finished its units: the compute time ends here
    t_compute_end = time.perf_counter()
    gpu_summary = None
    if monitor is not None:
        monitor.stop()
        gpu_summary = monitor.summary()
        for idx, g in (gpu_summary.get("per_gpu") or {}).items():
            log.info("GPU %s busy (utilisation >= 50%%) in %.1f%% of samples, mean utilisation %.1f%%, "
                     "memory max %.1f GB; log %s", idx, 100 * (g.get("busy_fraction") or 0),
                     g.get("util_mean") or 0, g.get("mem_max_gb") or 0, gpu_summary.get("log"))
    if not info.is_main:
        coord.close()
        return 0

    t_merge = time.perf_counter()
    compute_s = t_compute_end - t_compute
    run_info = {
        "virnucpro_version": __version__, "command": "virnucpro predict", "argv": getattr(args, "argv", None),
        "input": manifest["input"], "input_summary": summary,
        "parameters": {"chunk_size": args.chunk_size, "threshold": args.threshold, "gpus": gpus,
                       "world_size": info.world_size, "dtype": options.dtype, "token_budget": options.budget,
                       "attention": args.attention, "packing": options.packing, "compile": options.compile,
                       "unit_records": unit_records, "save_features": args.save_features, "resume": args.resume},
        "profile": profile.describe(), "engine": pipeline.describe(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "cuda": torch.version.cuda, "numpy": np.__version__},
        "hardware": {"device": torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor()
                     or platform.machine(), "gpus": gpus, "world_size": info.world_size},
        "gpu_monitor": gpu_summary, "logs": {"run": str(log_path)},
        "warnings": run_warnings,
    }
    records_iter = ((rid, desc, block.sequence(i)) for block in iter_record_blocks(args.input)
                    for i, (rid, desc) in enumerate(zip(block.ids(), block.descriptions())))
    writer = OutputWriter(out, threshold=args.threshold, records_iter=records_iter)
    counts = {"esm_tokens": 0, "dna_tokens": 0}
    try:
        for frames_df, records_df, features, unit_counts in iter_unit_tables(work, n_units, args.save_features):
            writer.add(frames_df, records_df, features)
            for k in counts:
                counts[k] += unit_counts[k]
        total_frames = writer.counts["frames"]
        run_info["counts"] = {"units": n_units, "records": writer.counts["records"], "frames": total_frames,
                              "esm_tokens": counts["esm_tokens"], "dnabert_tokens": counts["dna_tokens"]}
        run_info["timings"] = {
            "load_models_s": pipeline.load_seconds, "warmup_s": warmup_s, "compute_s": compute_s,
            "frames_per_s": total_frames / compute_s if compute_s else None,
            "esm_tokens_per_s": counts["esm_tokens"] / compute_s if compute_s else None,
            "merge_s": time.perf_counter() - t_merge, "rank0": own}
        outputs = writer.close(run_info)
    except BaseException:
        writer.abort()
        raise
    shutil.rmtree(work, ignore_errors=True)
    coord.close()
    n_virus = outputs["calls"]["virus"]
    msg = (f"{outputs['records']} sequences, {total_frames} frames: {n_virus} called virus "
           f"(threshold {args.threshold}); {total_frames / max(compute_s, 1e-9):,.0f} frames/s; "
           f"wrote {out}/ in {time.perf_counter() - t_start:.1f} s (merge {time.perf_counter() - t_merge:.1f} s)")
    log.info(msg)
    print(msg)
    for w in run_warnings:
        print(f"warning: {w}")
    return 0


def iter_unit_tables(work: Path, n_units: int, with_features: bool):
    """The finished units in input order, as (frames, records, features, token counts) for ``outputs``."""
    import pandas as pd

    for u in range(n_units):
        path = unit_path(work, u)
        if not path.exists():
            raise VirNucProError(f"work unit {u} is missing in {work} (a rank failed?); rerun with --resume")
        unit = read_unit(path)
        ids = np.array(unit_ids(unit), dtype=object)
        records = pd.DataFrame({"record_index": unit["record_index"], "sequence_id": ids,
                                "length": unit["length"], "chunks": unit["chunks"]})
        pos = np.searchsorted(unit["record_index"], unit["frame_record"])
        probs = unit["probs"]
        frames = pd.DataFrame({
            "record_index": unit["frame_record"], "sequence_id": ids[pos],
            "chunk": unit["frame_chunk"].astype(np.int32),
            "frame": np.asarray(FRAME_LABELS, dtype=object)[unit["frame_code"]],
            "p_others": probs[:, 0].astype(np.float32), "p_virus": probs[:, 1].astype(np.float32)})
        features = unit.get("features") if with_features and len(frames) else None
        yield frames, records, features, {"esm_tokens": int(unit["counts"][0]), "dna_tokens": int(unit["counts"][1])}
