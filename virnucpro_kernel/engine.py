"""One device's pipeline: records -> chunks -> frames -> token batches -> encoders -> features -> scores.

:class:`FramePipeline` holds the three models on one device for the whole run (persistent models). Its
CPU half (:meth:`FramePipeline.prepare`: chunking, six-frame translation, tokenization, packing into
token-budgeted batches, pinning) runs ahead in a worker thread (:class:`Prefetcher`) while its GPU half
(:meth:`FramePipeline.run`) copies each batch to the GPU on a side stream, one batch ahead of the compute,
runs DNABERT-S, ESM-2 and the classifier, and brings back only pooled features and scores.

A batch that runs out of GPU memory is split in two and retried (and the log says so).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from .batching import PackedBatch, pack_by_tokens, pack_tokens
from .fasta import RecordBlock
from .frames import FrameBlock, chunk_block, frames_of_chunks
from .models.esm2 import tokenize as esm_tokenize

log = logging.getLogger("virnucpro")

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
DEFAULT_TOKEN_BUDGET = {"cuda": 65536, "cpu": 8192}


@dataclass
class EngineOptions:
    """How one device runs. Every optimization can be switched off alone (equivalence, benchmarks)."""

    chunk_size: int
    device: str = "cpu"
    dtype: str = "fp32"
    token_budget: int | None = None
    attention: str = "auto"
    packing: bool = True
    compile: bool = False
    save_features: bool = False

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def budget(self) -> int:
        return self.token_budget or DEFAULT_TOKEN_BUDGET["cuda" if self.device.startswith("cuda") else "cpu"]

    @property
    def attention_setting(self) -> str:
        # --no-packing: every batch padded to its longest sequence for attention (length-sorted batches)
        return "sdpa-padded" if not self.packing and self.attention == "auto" else self.attention


def default_dtype(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


@dataclass
class PreparedUnit:
    """CPU work done for one work unit: its records, frames and packed batches (pinned on GPU runs)."""

    unit: int
    records: RecordBlock
    chunks_per_record: np.ndarray
    frames: FrameBlock
    batches: list  # of (indices, dna PackedBatch tensors, esm PackedBatch tensors)
    esm_tokens: int
    dna_tokens: int
    prepare_seconds: float


@dataclass
class UnitResult:
    unit: int
    records: RecordBlock
    chunks_per_record: np.ndarray
    frames: FrameBlock
    probs: np.ndarray  # (n_frames, 2) float32, or (n, 0) without a classifier
    features: np.ndarray | None
    esm_tokens: int
    dna_tokens: int
    seconds: float = 0.0
    oom_splits: int = 0


def _tensors(batch: PackedBatch, pin: bool):
    ids = torch.from_numpy(batch.input_ids)
    cu = torch.from_numpy(batch.cu_seqlens)
    if pin:
        ids, cu = ids.pin_memory(), cu.pin_memory()
    return ids, cu, batch.max_seqlen


class FramePipeline:
    """DNABERT-S + ESM-2 + classifier on one device, loaded once."""

    def __init__(self, profile, options: EngineOptions):
        self.options = options
        self.device = torch.device(options.device)
        self.profile = profile
        t0 = time.perf_counter()
        self.dnabert, self.esm, self.classifier = profile.load(
            device=self.device, dtype=options.torch_dtype, attention=options.attention_setting,
            compile=options.compile)
        self.load_seconds = time.perf_counter() - t0
        self.pin = self.device.type == "cuda"
        self.copy_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self.oom_splits = 0
        log.info("models on %s (%s): DNABERT-S attention %s, ESM-2 attention %s, loaded in %.1f s",
                 self.device, options.dtype, self.dnabert.attention_path, self.esm.attention_path, self.load_seconds)

    @property
    def feature_size(self) -> int:
        return self.dnabert.config.hidden_size + self.esm.config.hidden_size

    def describe(self) -> dict:
        return {"device": str(self.device), "dtype": self.options.dtype, "token_budget": self.options.budget,
                "packing": self.options.packing, "compile": self.options.compile,
                "attention": {"dnabert": self.dnabert.attention_path, "esm": self.esm.attention_path},
                "load_seconds": round(self.load_seconds, 3)}

    @torch.inference_mode()
    def warmup(self, sizes=(48, 160)) -> float:
        """Run small synthetic batches of two sizes through both encoders (compiles what is compiled)."""
        t0 = time.perf_counter()
        rng = np.random.default_rng(0)
        for n in sizes:
            lengths = rng.integers(30, 167, size=n)
            proteins = ["".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), size=k)) for k in lengths]
            dna = ["".join(rng.choice(list("ACGT"), size=3 * k + 1)) for k in lengths]
            idx = np.arange(n)
            d = _tensors(pack_tokens(self.dnabert.tokenize(dna), idx), self.pin)
            e = _tensors(pack_tokens(esm_tokenize(proteins), idx), self.pin)
            self._forward(_move(d, self.device), _move(e, self.device))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - t0

    # ------------------------------------------------------------------------------------ CPU half

    def prepare(self, unit: int, records: RecordBlock) -> PreparedUnit:
        t0 = time.perf_counter()
        chunks = chunk_block(records, self.options.chunk_size)
        frames = frames_of_chunks(records, chunks)
        chunks_per_record = np.bincount(chunks.record, minlength=len(records)).astype(np.int32)
        batches, esm_tokens, dna_tokens = [], 0, 0
        if len(frames):
            dna = self.dnabert.tokenize(frames.nucleotides())
            esm = esm_tokenize(frames.proteins())
            esm_len = np.diff(frames.prot_off) + 2
            dna_len = np.fromiter((len(t) for t in dna), dtype=np.int64, count=len(dna))
            esm_tokens, dna_tokens = int(esm_len.sum()), int(dna_len.sum())
            for idx in pack_by_tokens(np.maximum(esm_len, dna_len), self.options.budget):
                batches.append((idx, _tensors(pack_tokens(dna, idx), self.pin), _tensors(pack_tokens(esm, idx), self.pin)))
        return PreparedUnit(unit, records, chunks_per_record, frames, batches, esm_tokens, dna_tokens,
                            time.perf_counter() - t0)

    # ------------------------------------------------------------------------------------ GPU half

    def _to_device(self, packed):
        ids, cu, max_len = packed
        if self.copy_stream is None:
            return ids, cu, max_len
        with torch.cuda.stream(self.copy_stream):
            return ids.to(self.device, non_blocking=True), cu.to(self.device, non_blocking=True), max_len

    def _forward(self, dna, esm) -> torch.Tensor:
        """Features [B, D] (float32) of one batch already on the device."""
        return torch.cat([self.dnabert.forward_packed(*dna), self.esm.forward_packed(*esm)], dim=1)

    def _forward_with_split(self, dna_cpu, esm_cpu, dna, esm) -> torch.Tensor:
        try:
            return self._forward(dna, esm)
        except torch.cuda.OutOfMemoryError:
            n = dna_cpu[1].numel() - 1
            if n <= 1:
                raise
            torch.cuda.empty_cache()
            self.oom_splits += 1
            log.warning("a batch of %d frames (%d ESM-2 tokens) ran out of GPU memory: split in two and retried",
                        n, int(esm_cpu[1][-1]))
            parts = []
            for half in (slice(0, n // 2), slice(n // 2, n)):
                d, e = _sub_batch(dna_cpu, half), _sub_batch(esm_cpu, half)
                parts.append(self._forward_with_split(d, e, _move(d, self.device), _move(e, self.device)))
            return torch.cat(parts)

    @torch.inference_mode()
    def run(self, prepared: PreparedUnit) -> UnitResult:
        """Run a prepared unit. Each batch is classified as soon as its features exist, so the device holds
        one batch of features at a time; only scores (and, with ``save_features``, features) come back."""
        t0 = time.perf_counter()
        n = len(prepared.frames)
        keep_features = self.options.save_features or self.classifier is None
        probs_parts, feature_parts, order = [], [], []
        batches = prepared.batches
        pending = self._to_device(batches[0][1]) + self._to_device(batches[0][2]) if batches else None
        splits_before = self.oom_splits
        for i, (idx, dna_cpu, esm_cpu) in enumerate(batches):
            dna, esm = pending[:3], pending[3:]
            if self.copy_stream is not None:
                torch.cuda.current_stream(self.device).wait_stream(self.copy_stream)
                for t in (*dna[:2], *esm[:2]):
                    t.record_stream(torch.cuda.current_stream(self.device))
            if i + 1 < len(batches):  # next batch's copy overlaps this batch's compute
                pending = self._to_device(batches[i + 1][1]) + self._to_device(batches[i + 1][2])
            feats = self._forward_with_split(dna_cpu, esm_cpu, dna, esm)
            if self.classifier is not None:
                probs_parts.append(self.classifier.predict_proba(feats).float())
            if keep_features:
                feature_parts.append(feats.to("cpu"))
            order.append(idx)
        if n:
            inverse = np.empty(n, dtype=np.int64)
            inverse[np.concatenate(order)] = np.arange(n)
            probs = (torch.cat(probs_parts)[torch.from_numpy(inverse).to(self.device)].cpu().numpy()
                     if probs_parts else np.zeros((n, 0), dtype=np.float32))
            features = torch.cat(feature_parts)[torch.from_numpy(inverse)].numpy() if keep_features else None
        else:
            probs = np.zeros((0, 2 if self.classifier is not None else 0), dtype=np.float32)
            features = None
        return UnitResult(prepared.unit, prepared.records, prepared.chunks_per_record, prepared.frames, probs,
                          features, prepared.esm_tokens, prepared.dna_tokens, time.perf_counter() - t0,
                          self.oom_splits - splits_before)


def _sub_batch(packed, sl: slice):
    ids, cu, _ = packed
    cu_np = cu.numpy() if isinstance(cu, torch.Tensor) else cu
    a, b = int(cu_np[sl.start]), int(cu_np[sl.stop])
    new_cu = torch.from_numpy((cu_np[sl.start:sl.stop + 1] - a).astype(np.int32))
    lengths = np.diff(new_cu.numpy())
    return ids[a:b], new_cu, int(lengths.max())


def _move(packed, device):
    ids, cu, m = packed
    return ids.to(device), cu.to(device), m


class Prefetcher:
    """Runs ``produce()`` (a generator of prepared units) in a worker thread, ``depth`` units ahead."""

    _END = object()

    def __init__(self, produce, depth: int = 2):
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._work, args=(produce,), daemon=True, name="virnucpro-prefetch")
        self.thread.start()

    def _work(self, produce):
        try:
            for item in produce():
                while not self.stop.is_set():
                    try:
                        self.queue.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if self.stop.is_set():
                    return
        except BaseException as exc:  # re-raised in the consumer
            self.error = exc
        finally:
            self.queue.put(self._END)

    def __iter__(self):
        while True:
            item = self.queue.get()
            if item is self._END:
                if self.error is not None:
                    raise self.error
                return
            yield item

    def close(self):
        self.stop.set()
        try:
            while True:
                self.queue.get_nowait()
        except queue.Empty:
            pass
