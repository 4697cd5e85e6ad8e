"""``predict``: one streaming pipeline from FASTA to calls, on the CPU or 1..N GPUs.

:class:`PredictSettings` holds every setting of a run (the CLI and the Python API fill it in). ``gpus > 1``
on one machine launches ``torchrun --standalone --nproc-per-node N`` on this same command; on a cluster, run
``torchrun --nnodes ... -m virnucpro_kernel predict ...`` yourself. Each rank loads the models once, claims
work units (``distributed``), runs them through its device's ``engine.FramePipeline`` and hands each finished
unit to a writer thread that stores it atomically (``units``); rank 0 then merges them into the outputs
(``outputs``).

Before anything is written, rank 0 checks the output folder (``rundir``: refused when it holds anything,
unless ``resume`` or ``force``), the whole input (alphabet, duplicate IDs, its SHA-256: one pass, which runs
while the models load) and the models. Only then does it take the folder's lock.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .distributed import DEFAULT_UNIT_RECORDS, Coordinator, iter_units, now_stamp, rank_info
from .errors import InputError, VirNucProError
from .fasta import RecordValidator, empty_records_warning, iter_record_blocks, open_input, scan
from .frames import FRAME_LABELS, check_chunk_size
from .outputs import OutputWriter
from .rundir import RunLock, check_out_folder, clear_run, confirm_out_folder
from .units import check_resume, prepare_work_dir, read_unit, unit_ids, unit_path, write_unit

log = logging.getLogger("virnucpro")
CHILD_ENV = "VIRNUCPRO_LAUNCHED"
SCAN_ENV = "VIRNUCPRO_INPUT_SCAN"


@dataclass
class PredictSettings:
    """Every setting of a ``predict`` run (see ``virnucpro predict --help``)."""

    input: str
    chunk_size: int
    out: str
    profile: str = "auto"
    gpus: int | None = None
    threshold: float = 0.5
    esm: str | None = None
    dnabert: str | None = None
    classifier: str | None = None
    dtype: str | None = None
    token_budget: int | None = None
    attention: str = "auto"
    packing: bool = True
    compile: bool | None = None  # None: when it pays off (see compile_pays_off)
    dedup: bool = True
    gelu_epilogue: bool | None = None
    save_features: bool = False
    resume: bool = False
    force: bool = False
    unit_records: int | None = None
    threads: int | None = None
    log_dir: str | None = None
    quiet: bool = False

    def check(self) -> "PredictSettings":
        """Refuse settings that cannot work, with one line each (nothing is read or written yet)."""
        check_chunk_size(self.chunk_size)
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) \
                or not 0.0 <= self.threshold <= 1.0:
            raise VirNucProError(f"--threshold must be a number between 0 and 1, not {self.threshold!r}")
        for name in ("token_budget", "unit_records", "threads"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise VirNucProError(f"--{name.replace('_', '-')} must be a whole number of 1 or more, not {value!r}")
        if self.gpus is not None and (isinstance(self.gpus, bool) or not isinstance(self.gpus, int) or self.gpus < 0):
            raise VirNucProError(f"--gpus must be 0 (CPU) or more, not {self.gpus!r}")
        if self.dtype not in (None, "bf16", "fp16", "fp32"):
            raise VirNucProError(f"--dtype must be bf16, fp16 or fp32, not {self.dtype!r}")
        if self.resume and self.force:
            raise VirNucProError("--resume and --force exclude each other (continue the run in --out, or start over)")
        return self

    def to_argv(self) -> list[str]:
        """The ``virnucpro predict`` arguments that give these settings (for the processes torchrun starts)."""
        argv = ["predict", str(self.input), "--chunk-size", str(self.chunk_size), "--out", str(self.out),
                "--profile", self.profile, "--threshold", repr(float(self.threshold)), "--attention", self.attention]
        for name in ("gpus", "esm", "dnabert", "classifier", "dtype", "token_budget", "unit_records", "threads",
                     "log_dir"):
            value = getattr(self, name)
            if value is not None:
                argv += [f"--{name.replace('_', '-')}", str(value)]
        flags = {"save_features": self.save_features, "resume": self.resume, "force": self.force,
                 "quiet": self.quiet, "no_packing": not self.packing, "compile": self.compile is True,
                 "no_compile": self.compile is False,
                 "no_dedup": not self.dedup, "no_gelu_epilogue": self.gelu_epilogue is False}
        return argv + [f"--{k.replace('_', '-')}" for k, on in flags.items() if on]


# --------------------------------------------------------------------------------------------- input


def check_input_file(path) -> None:
    """predict reads its input more than once (check, compute, viral.fa): it must be a regular file."""
    p = Path(path)
    if p.exists() and not p.is_dir() and not p.is_file():  # a pipe would block here and be read only once
        raise InputError(path, "not a regular file (predict reads its input more than once: save it to a file)")
    open_input(path).close()  # missing, a folder, unreadable: the usual one-line errors


def scan_input(path) -> dict:
    """Validate the whole input and take its SHA-256 in the same pass (bad input: one-line error)."""
    p = Path(path)
    summary = scan(path)
    return {"path": str(p.resolve()), "size": summary.size, "mtime_ns": p.stat().st_mtime_ns,
            "sha256": summary.sha256, "records": summary.records, "empty_records": summary.empty_records,
            "empty_ids": list(summary.empty_ids), "bases": summary.bases}


def input_warnings(path, summary: dict) -> list[str]:
    """What the input scan found that a user must hear of (said in the log and kept in run.json)."""
    if summary.get("empty_records"):
        return [empty_records_warning(path, summary["empty_records"], summary.get("empty_ids") or [])]
    return []


# Compiling the encoder layers costs seconds before the first batch and saves time on every batch after. Measured
# on one H200 as whole runs (reports/h200/predict.json, compile_policy; random weights of the real shapes):
# compiling saves 1.7-2.3 us per ESM-2 token and costs about 7 s with a warm compiler cache, 18 s with an empty
# one. Break-even: about 3M tokens per GPU (warm cache) and 10M (empty cache, a fresh machine). At 5.5M tokens
# (65,536 reads): eager 80.4 s, compiled 75.1 s warm and 88.7 s cold; at 0.34M: eager 17.9 s, compiled 24.6 s
# warm. The cache's state cannot be known beforehand, so the rule sits between the two break-evens: either way
# a wrong choice costs about a tenth of the run, never more.
COMPILE_MIN_TOKENS_PER_GPU = 5_000_000
ESM_TOKENS_PER_INPUT_BYTE = 0.5  # measured: 150-bp reads 0.51 (the benchmark workload), assembled contigs 0.34
GZIP_EXPANSION = 4.0  # FASTA compresses about 4-fold


def estimated_esm_tokens(path) -> float:
    """ESM-2 tokens a FASTA file will give, estimated from its size alone (read before the input scan ends)."""
    import gzip

    with open_input(path) as fh:  # the reader's own plain-or-gzip decision
        gz = isinstance(fh, gzip.GzipFile)
    return Path(path).stat().st_size * (GZIP_EXPANSION if gz else 1.0) * ESM_TOKENS_PER_INPUT_BYTE


def compile_pays_off(path, processes: int) -> bool:
    """Whether compiling the encoders saves time on this input, shared over ``processes`` GPUs.

    The same input with the same number of processes always gets the same answer (``--resume`` too)."""
    return estimated_esm_tokens(path) / max(processes, 1) >= COMPILE_MIN_TOKENS_PER_GPU


def _timed(fn, *args):
    t0 = time.perf_counter()
    return fn(*args), time.perf_counter() - t0


def _warm_start(device: str, compile: bool) -> dict:
    """Create the GPU context (and import the compiler) ahead of the models; returns the seconds each took."""
    import torch

    out = {}
    t0 = time.perf_counter()
    torch.cuda.set_device(torch.device(device))
    torch.empty(1, device=device)
    torch.cuda.synchronize(device)
    out["cuda_context_s"] = time.perf_counter() - t0
    if compile:
        t0 = time.perf_counter()
        import torch._dynamo  # noqa: F401
        import torch._inductor.compile_fx  # noqa: F401

        out["compiler_import_s"] = time.perf_counter() - t0
    return out


def _scan_from_launcher(path) -> dict | None:
    """The launcher's scan of this input, when it is of this very file (same size and modification time)."""
    text = os.environ.get(SCAN_ENV)
    if not text:
        return None
    try:
        scan = json.loads(text)
        st = Path(path).stat()
    except (ValueError, OSError):
        return None
    if scan.get("path") == str(Path(path).resolve()) and scan.get("size") == st.st_size \
            and scan.get("mtime_ns") == st.st_mtime_ns:
        return scan
    return None


class _Background:
    """``fn()`` in a thread; :meth:`result` re-raises its error in the caller. (No ``warnings.catch_warnings``
    in here: it changes process-wide state and is not safe beside another thread.)"""

    def __init__(self, fn):
        self._result, self._error = None, None

        def work():
            try:
                self._result = fn()
            except BaseException as exc:  # re-raised in result()
                self._error = exc

        self._thread = threading.Thread(target=work, daemon=True, name="virnucpro-scan")
        self._thread.start()

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result


# --------------------------------------------------------------------------------------------- models


def resolve_models(settings: PredictSettings):
    """The run's profile, checked (classifier readable, its features and chunk size matching)."""
    from .models.profiles import resolve_profile

    profile = resolve_profile(settings.profile, settings.chunk_size, esm=settings.esm, dnabert=settings.dnabert,
                              classifier=settings.classifier)
    if settings.attention == "flash":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is None:
            raise VirNucProError("--attention flash needs the flash-attn package, which is not installed")
    profile.check()
    return profile


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_threads(local_processes: int) -> int:
    """CPU threads per process: ``OMP_NUM_THREADS`` when set, else this process's CPUs over the processes of
    this machine."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, local_processes))


# --------------------------------------------------------------------------------------------- entry


def predict(settings: PredictSettings) -> int:
    """Run ``predict`` (launching one process per GPU when ``gpus > 1`` outside torchrun). 0 on success."""
    settings.check()
    info = rank_info()
    visible = _visible_gpus()
    gpus = visible if settings.gpus is None else settings.gpus
    if gpus > visible:
        raise VirNucProError(f"--gpus {gpus}: only {visible} GPU(s) visible")
    if not info.distributed and gpus > 1 and not os.environ.get(CHILD_ENV):
        return launch_torchrun(settings, gpus)
    return run(settings, gpus)


def launch_torchrun(settings: PredictSettings, gpus: int) -> int:
    """Check the folder, the input and the models, then start one process per GPU on this machine."""
    check_input_file(settings.input)
    mode = check_out_folder(Path(settings.out), resume=settings.resume, force=settings.force)
    if mode == "finished":
        print(f"{settings.out} holds a finished run: nothing to resume")
        return 0
    scan = scan_input(settings.input)
    resolve_models(settings)
    child = dataclasses.replace(settings, gpus=gpus, threads=settings.threads or default_threads(gpus))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpus}",
           "-m", "virnucpro_kernel", *child.to_argv()]
    env = dict(os.environ, **{CHILD_ENV: "1", SCAN_ENV: json.dumps(scan)})
    env.setdefault("OMP_NUM_THREADS", str(child.threads))
    log.info("launching %d processes: %s", gpus, " ".join(cmd[1:]))
    proc = subprocess.run(cmd, env=env)
    if proc.returncode:
        raise VirNucProError(f"{gpus}-GPU run failed (torchrun exit status {proc.returncode}); see the log above "
                             f"and in {settings.log_dir or Path(settings.out) / 'logs'}")
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


def _process_start() -> float:
    """When this process started (epoch seconds): the start of the time before the first batch."""
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # noqa: BLE001 - psutil missing or unsupported: count from here
        return time.time()


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


class UnitWriter:
    """Stores finished units on a thread of its own, so the device goes on with the next unit meanwhile."""

    def __init__(self, work: Path):
        self.work = work
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="virnucpro-write")
        self.pending: list = []

    def submit(self, result, max_pending: int = 2) -> None:
        for f in [f for f in self.pending if f.done()]:
            f.result()  # a failed write stops the run here
        self.pending = [f for f in self.pending if not f.done()]
        while len(self.pending) >= max_pending:  # bounded host memory when the disk is slow
            self.pending.pop(0).result()
        self.pending.append(self.pool.submit(write_unit, self.work, result))

    def drain(self) -> None:
        try:
            for f in self.pending:
                f.result()
        finally:
            self.pool.shutdown(wait=True)


def run(settings: PredictSettings, gpus: int) -> int:
    """One rank of a run (the only one without torchrun)."""
    import torch

    from .engine import EngineOptions, FramePipeline, default_dtype

    t_process = _process_start()
    t_run = time.time()
    info = rank_info()
    device = f"cuda:{info.local_rank}" if gpus > 0 else "cpu"
    check_input_file(settings.input)
    compile_layers = device.startswith("cuda") and (
        settings.compile if settings.compile is not None else compile_pays_off(settings.input, info.world_size))
    # the GPU context and the compiler's modules take seconds to set up: start them now, beside the checks and
    # the input scan
    ready = _Background(lambda: _warm_start(device, compile_layers)) if device.startswith("cuda") else None
    if device.startswith("cuda") and settings.compile is None and not compile_layers and info.is_main:
        log.info("layers not compiled: about %.1fM ESM-2 tokens per GPU, too few to repay compiling (from %.0fM; "
                 "--compile compiles anyway)", estimated_esm_tokens(settings.input) / 1e6 / info.world_size,
                 COMPILE_MIN_TOKENS_PER_GPU / 1e6)
    out = Path(settings.out)
    mode = None
    if info.is_main:  # rank 0 decides; the others follow (they must not look at a folder rank 0 may lock)
        mode = check_out_folder(out, resume=settings.resume, force=settings.force)
        if mode == "finished" and not info.distributed:
            print(f"{out} holds a finished run: nothing to resume")
            return 0
    scan = None
    if info.is_main:
        scan = _scan_from_launcher(settings.input)
        scan = _Background(lambda: _timed(scan_input, settings.input)) if scan is None else (scan, 0.0)
    if device.startswith("cuda"):
        torch.cuda.set_device(info.local_rank)
    threads = settings.threads or default_threads(info.local_world_size)
    torch.set_num_threads(threads)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        profile = resolve_models(settings)
    if info.is_main:
        for w in caught:
            if not issubclass(w.category, ResourceWarning):  # a file another thread dropped: not the user's
                warnings.warn(str(w.message), stacklevel=1)
    options = EngineOptions(chunk_size=settings.chunk_size, device=device,
                            dtype=settings.dtype or default_dtype(device), token_budget=settings.token_budget,
                            attention=settings.attention, packing=settings.packing,
                            compile=compile_layers, save_features=settings.save_features,
                            dedup=settings.dedup, gelu_epilogue=settings.gelu_epilogue)
    unit_records = settings.unit_records or _resumed_unit_records(out, mode) or DEFAULT_UNIT_RECORDS
    manifest = {"input": None, "chunk_size": settings.chunk_size, "unit_records": unit_records,
                "profile": profile.describe(), "dtype": options.dtype, "save_features": settings.save_features,
                "dedup": settings.dedup}
    if info.is_main and mode == "resume":  # the settings now, the input's SHA-256 once the scan is done
        check_resume(out, {k: v for k, v in manifest.items() if k != "input"})
    # models load before anything is written (and while rank 0's input scan runs)
    startup = {"python_and_imports_s": t_run - t_process}
    if ready is not None:
        startup.update(ready.result())
    pipeline = FramePipeline(profile, options)
    if isinstance(scan, _Background):  # rank 0's own scan
        summary, startup["input_scan_s"] = scan.result()
    else:  # the launcher's scan (rank 0), or none (the other ranks)
        summary, startup["input_scan_s"] = scan if scan else (None, 0.0)
    startup["load_models_s"] = pipeline.load_seconds
    if info.is_main:
        manifest["input"] = {k: summary[k] for k in ("path", "size", "sha256")}
        if mode == "resume":
            check_resume(out, manifest)
    coord = Coordinator(info, "nccl" if device.startswith("cuda") else "gloo",
                        os.environ.get("TORCHELASTIC_RUN_ID", "local"))
    mode = coord.share("mode", mode)
    if mode == "finished":
        coord.close()
        if info.is_main:
            print(f"{out} holds a finished run: nothing to resume")
        return 0
    lock = None
    try:
        notes = []
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            lock = RunLock(out).acquire()
            confirm_out_folder(out, mode, resume=settings.resume, force=settings.force)
            if mode == "force":
                removed = clear_run(out)
                if removed:
                    notes.append(f"--force: removed {', '.join(removed)} from {out}")
            kept = prepare_work_dir(out, manifest, resume=mode == "resume")
            if kept:
                notes.append(f"resuming: {kept} finished unit(s) kept")
        stamp = coord.share("stamp", now_stamp() if info.is_main else None)
        coord.barrier()
        log_dir = Path(settings.log_dir) if settings.log_dir else out / "logs"
        log_path = _setup_logging(log_dir, stamp, info.rank)
        log.info("%s", pipeline.summary, extra={"file_only": True})  # said on the console before the log file was open
        for note in notes:
            log.info("%s", note)
        if info.is_main:
            for w in input_warnings(settings.input, summary):
                log.warning("%s", w)
        work = out / ".work"
        return _compute_and_merge(settings, info, gpus, pipeline, options, profile, coord, summary, manifest,
                                  unit_records, work, log_dir, log_path, t_process, startup)
    finally:
        if lock is not None:
            lock.release()


def _resumed_unit_records(out: Path, mode) -> int | None:
    """When resuming without --unit-records: the interrupted run's unit size."""
    manifest = out / ".work" / "manifest.json"
    if mode == "resume" and manifest.is_file():
        try:
            return json.loads(manifest.read_text()).get("unit_records")
        except ValueError:
            return None
    return None


def _compute_and_merge(settings, info, gpus, pipeline, options, profile, coord, summary, manifest, unit_records,
                       work, log_dir, log_path, t_process, startup) -> int:
    import torch

    from .engine import Prefetcher

    device = options.device
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
    progress = Progress(total_units, info.is_main and not settings.quiet)
    n_units = 0
    own = {"units": 0, "frames": 0, "esm_tokens": 0, "dna_tokens": 0, "esm_tokens_computed": 0,
           "dna_tokens_computed": 0, "gpu_seconds": 0.0, "oom_splits": 0}

    def produce():
        nonlocal n_units
        validator = RecordValidator(settings.input)
        target = coord.claim()
        for unit, records in iter_units(settings.input, unit_records, validator):
            n_units = unit + 1
            if unit < target:
                continue
            if unit_path(work, unit).exists():  # finished before a kill: --resume keeps it
                coord.add("units_done", 1)
                target = coord.claim()
                continue
            yield pipeline.prepare(unit, records)
            target = coord.claim()

    t_compute_wall = time.time()
    t_compute = time.perf_counter()
    prefetch = Prefetcher(produce, depth=2)
    writer = UnitWriter(work)
    try:
        for prepared in prefetch:
            result = pipeline.run(prepared, wait=False)  # the writer thread waits for the device
            writer.submit(result)
            for key in ("esm_tokens", "dna_tokens", "esm_tokens_computed", "dna_tokens_computed"):
                own[key] += getattr(result, key)
            own["units"] += 1
            own["frames"] += len(result.frames)
            own["gpu_seconds"] += result.seconds
            own["oom_splits"] += result.oom_splits
            done = coord.add("units_done", 1)
            frames = coord.add("frames", len(result.frames))
            tokens = coord.add("esm_tokens", result.esm_tokens)
            progress.update(done, frames, tokens)
            log.info("unit %d: %d records, %d frames, %d ESM-2 tokens (%d computed) launched in %.2f s", result.unit,
                     len(result.records), len(result.frames), result.esm_tokens, result.esm_tokens_computed,
                     result.seconds)
    finally:
        prefetch.close()
        progress.close()
        writer.drain()
    log.info("rank %d done: %d units, %d frames, %d ESM-2 tokens (%d computed), %d DNABERT-S tokens (%d computed), "
             "%.1f s on the device, %d batches split after running out of memory", info.rank, own["units"],
             own["frames"], own["esm_tokens"], own["esm_tokens_computed"], own["dna_tokens"],
             own["dna_tokens_computed"], own["gpu_seconds"], own["oom_splits"])
    coord.barrier()  # every rank finished its units: the compute time ends here
    t_compute_end = time.perf_counter()
    t_last_batch = time.time()
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

    out = Path(settings.out)
    t_merge = time.perf_counter()
    compute_s = t_compute_end - t_compute
    run_info = {
        "virnucpro_version": __version__, **_code_commit(), "command": "virnucpro predict",
        "argv": settings.to_argv(),
        "input": manifest["input"], "input_summary": {k: summary[k] for k in ("records", "empty_records", "bases")},
        "parameters": {"chunk_size": settings.chunk_size, "threshold": settings.threshold, "gpus": gpus,
                       "world_size": info.world_size, "dtype": options.dtype, "token_budget": options.budget,
                       "attention": settings.attention, "packing": options.packing, "compile": options.compile,
                       "dedup": options.dedup, "unit_records": unit_records, "save_features": settings.save_features,
                       "resume": settings.resume, "force": settings.force, "threads": torch.get_num_threads()},
        "profile": profile.describe(), "engine": pipeline.describe(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "cuda": torch.version.cuda, "numpy": np.__version__},
        "hardware": {"device": torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor()
                     or platform.machine(), "gpus": gpus, "world_size": info.world_size},
        "gpu_monitor": gpu_summary, "logs": {"run": str(log_path)},
        "warnings": list(profile.warnings) + input_warnings(settings.input, summary),
    }
    writer = OutputWriter(out, threshold=settings.threshold, profile=profile.name,
                          records_iter=iter_records(settings.input))
    counts = {"esm_tokens": 0, "dna_tokens": 0}
    try:
        for frames_df, records_df, features, unit_counts in iter_unit_tables(work, n_units, settings.save_features):
            writer.add(frames_df, records_df, features)
            for k in counts:
                counts[k] += unit_counts[k]
        total_frames = writer.counts["frames"]
        run_info["counts"] = {"units": n_units, "records": writer.counts["records"], "frames": total_frames,
                              "esm_tokens": counts["esm_tokens"], "dnabert_tokens": counts["dna_tokens"],
                              "rank0": own}
        merge_s = time.perf_counter() - t_merge
        run_info["timings"] = {
            "load_models_s": pipeline.load_seconds, "warmup_s": warmup_s, "compute_s": compute_s,
            "frames_per_s": total_frames / compute_s if compute_s else None,
            "esm_tokens_per_s": counts["esm_tokens"] / compute_s if compute_s else None,
            "merge_s": merge_s,
            "before_first_batch_s": t_compute_wall - t_process,
            "startup": {**startup, "warmup_s": warmup_s},
            "after_last_batch_s": time.time() - t_last_batch,  # up to run.json, written next
        }
        outputs = writer.close(run_info)
    except BaseException:
        writer.abort()
        raise
    shutil.rmtree(work, ignore_errors=True)
    coord.close()
    n_virus = outputs["calls"]["virus"]
    t = run_info["timings"]
    msg = (f"{outputs['records']} sequences, {total_frames} frames: {n_virus} called virus "
           f"(threshold {settings.threshold}); {total_frames / max(compute_s, 1e-9):,.0f} frames/s; wrote {out}/ "
           f"(compute {compute_s:.1f} s; before the first batch {t['before_first_batch_s']:.1f} s, after the last "
           f"{t['after_last_batch_s']:.1f} s)")
    log.info(msg, extra={"file_only": True})  # the console gets it once, on stdout
    print(msg)
    for w in profile.warnings:
        print(f"warning: {w}")
    return 0


def _code_commit() -> dict:
    """The git commit of the code that made the run (``git_dirty``: with uncommitted changes); None when the
    package is not a git checkout."""
    from .bench.schema import git_commit

    commit, dirty = git_commit()
    return {"git_commit": None if commit == "unknown" else commit, "git_dirty": dirty}


def iter_records(path):
    """``(id, description, sequence)`` of every record with a sequence, in input order (for ``viral.fa``)."""
    for block in iter_record_blocks(path):
        for i, (rid, desc) in enumerate(zip(block.ids(), block.descriptions())):
            yield rid, desc, block.sequence(i)


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
