"""One device's pipeline: records -> chunks -> frames -> token batches -> encoders -> features -> scores.

:class:`FramePipeline` holds the three models on one device for the whole run (persistent models). Its
CPU half (:meth:`FramePipeline.prepare`: chunking, six-frame translation, finding each encoder's distinct
inputs, tokenization, packing into token-budgeted batches, pinning) runs ahead in a worker thread
(:class:`Prefetcher`) while its GPU half (:meth:`FramePipeline.run`) copies each batch to the GPU on a side
stream, one batch ahead of the compute, runs DNABERT-S and ESM-2, gives every frame its features and runs the
classifier, and brings back only scores (and features when asked).

Identical inputs are embedded once: frames of a unit with the same protein share one ESM-2 run, frames with
the same DNA one DNABERT-S run (exact comparison of the sequences; reads with PCR or optical duplicates gain
the most). ``EngineOptions(dedup=False)`` runs every frame.

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
    dedup: bool = True  # identical proteins (ESM-2) and DNA (DNABERT-S) of a unit's frames embedded once
    gelu_epilogue: bool | None = None  # ESM-2 FFN bias + GELU in the cuBLAS epilogue (None: on CUDA fp16/bf16)

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


BLOCK_FRAMES = 32768  # frames whose features are on the device at once (32,768 x 3,328 x 4 B = 436 MB)


@dataclass
class BlockBatches:
    """Up to ``BLOCK_FRAMES`` consecutive frames of a unit, made ready for the device: each encoder's distinct
    inputs (``codes``: each frame's row among them) packed into token-budgeted batches of
    ``(indices, ids, cu_seqlens, max_seqlen)`` (pinned on GPU runs)."""

    start: int
    stop: int
    dna_codes: torch.Tensor  # int64, pinned on GPU runs
    esm_codes: torch.Tensor
    dna_batches: list
    esm_batches: list
    n_dna: int
    n_esm: int


@dataclass
class PreparedUnit:
    """CPU work done for one work unit: its records, frames and packed batches."""

    unit: int
    records: RecordBlock
    chunks_per_record: np.ndarray
    frames: FrameBlock
    blocks: list  # of BlockBatches
    esm_tokens: int  # of all frames (what the unit asks for)
    dna_tokens: int
    esm_tokens_computed: int  # of the distinct proteins actually run
    dna_tokens_computed: int
    prepare_seconds: float

    @property
    def esm_batches(self) -> list:
        return [b for blk in self.blocks for b in blk.esm_batches]


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
    esm_tokens_computed: int = 0
    dna_tokens_computed: int = 0
    done: object = None  # a CUDA event: the scores and features are in host memory once it has passed

    def wait(self) -> "UnitResult":
        """Wait until the device has written this unit's scores (and features) to host memory."""
        if self.done is not None:
            self.done.synchronize()
            self.done = None
        return self


def _tensors(batch: PackedBatch, pin: bool):
    idx = torch.from_numpy(batch.indices)
    ids = torch.from_numpy(batch.input_ids)
    cu = torch.from_numpy(batch.cu_seqlens)
    if pin:
        idx, ids, cu = idx.pin_memory(), ids.pin_memory(), cu.pin_memory()
    return idx, ids, cu, batch.max_seqlen


def _distinct(items: list, dedup: bool) -> tuple[np.ndarray, list]:
    """``(codes, distinct items)``: ``items[i] == distinct[codes[i]]`` (exact comparison of the strings)."""
    if not dedup:
        return np.arange(len(items), dtype=np.int64), items
    first: dict = {}
    codes = np.fromiter((first.setdefault(s, len(first)) for s in items), dtype=np.int64, count=len(items))
    return codes, list(first)


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
        self.esm.gelu_epilogue = options.gelu_epilogue
        self.load_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        self.attention = {"dnabert": self.dnabert.attention_path, "esm": self.esm.attention_path}
        self.attention_seconds = time.perf_counter() - t1
        self.pin = self.device.type == "cuda"
        self.copy_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self.oom_splits = 0
        self.summary = (
            f"models on {self.device} ({options.dtype}, layers {'compiled' if options.compile else 'not compiled'}): "
            f"DNABERT-S attention {self.attention['dnabert']}, ESM-2 attention {self.attention['esm']}, FFN GELU "
            f"{'in the fc1 epilogue' if self.esm.uses_gelu_epilogue else 'exact'}; loaded in "
            f"{self.load_seconds:.1f} s, attention paths chosen in {self.attention_seconds:.1f} s")
        log.info("%s", self.summary)

    @property
    def feature_size(self) -> int:
        return self.dnabert.config.hidden_size + self.esm.config.hidden_size

    def describe(self) -> dict:
        return {"device": str(self.device), "dtype": self.options.dtype, "token_budget": self.options.budget,
                "packing": self.options.packing, "compile": self.options.compile, "dedup": self.options.dedup,
                "esm_gelu_epilogue": self.esm.uses_gelu_epilogue, "attention": dict(self.attention),
                "load_seconds": round(self.load_seconds, 3)}

    @torch.inference_mode()
    def warmup(self, sizes=(160,)) -> float:
        """Run small synthetic batches through both encoders (compiles what is compiled)."""
        t0 = time.perf_counter()
        rng = np.random.default_rng(0)
        for n in sizes:
            lengths = rng.integers(30, 167, size=n)
            proteins = ["".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), size=k)) for k in lengths]
            dna = ["".join(rng.choice(list("ACGT"), size=3 * k + 1)) for k in lengths]
            idx = np.arange(n)
            for model, tokens in ((self.dnabert, self.dnabert.tokenize(dna)), (self.esm, esm_tokenize(proteins))):
                _, ids, cu, m = _tensors(pack_tokens(tokens, idx), self.pin)
                model.forward_packed(ids.to(self.device), cu.to(self.device), m)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - t0

    # ------------------------------------------------------------------------------------ CPU half

    def prepare(self, unit: int, records: RecordBlock) -> PreparedUnit:
        t0 = time.perf_counter()
        chunks = chunk_block(records, self.options.chunk_size)
        frames = frames_of_chunks(records, chunks)
        chunks_per_record = np.bincount(chunks.record, minlength=len(records)).astype(np.int32)
        blocks = []
        counts = dict(esm=0, dna=0, esm_c=0, dna_c=0)
        if len(frames):
            proteins, dnas = frames.proteins(), frames.nucleotides()
            for start in range(0, len(frames), BLOCK_FRAMES):
                stop = min(start + BLOCK_FRAMES, len(frames))
                dna_codes, dna_distinct = _distinct(dnas[start:stop], self.options.dedup)
                esm_codes, esm_distinct = _distinct(proteins[start:stop], self.options.dedup)
                dna_tok = self.dnabert.tokenize(dna_distinct)
                esm_tok = esm_tokenize(esm_distinct)
                dna_len = np.fromiter((len(t) for t in dna_tok), dtype=np.int64, count=len(dna_tok))
                esm_len = np.fromiter((len(t) for t in esm_tok), dtype=np.int64, count=len(esm_tok))
                counts["dna"] += int(dna_len[dna_codes].sum())
                counts["esm"] += int(esm_len[esm_codes].sum())
                counts["dna_c"] += int(dna_len.sum())
                counts["esm_c"] += int(esm_len.sum())
                batches = {name: [_tensors(pack_tokens(tok, idx), self.pin)
                                  for idx in pack_by_tokens(lengths, self.options.budget)]
                           for name, tok, lengths in (("dna", dna_tok, dna_len), ("esm", esm_tok, esm_len))}
                codes = [torch.from_numpy(c) for c in (dna_codes, esm_codes)]
                if self.pin:
                    codes = [c.pin_memory() for c in codes]
                blocks.append(BlockBatches(start, stop, codes[0], codes[1], batches["dna"], batches["esm"],
                                          len(dna_tok), len(esm_tok)))
        return PreparedUnit(unit, records, chunks_per_record, frames, blocks, counts["esm"], counts["dna"],
                            counts["esm_c"], counts["dna_c"], time.perf_counter() - t0)

    # ------------------------------------------------------------------------------------ GPU half

    def _to_device(self, packed):
        idx, ids, cu, max_len = packed
        if self.copy_stream is None:
            return idx, ids, cu, max_len
        with torch.cuda.stream(self.copy_stream):
            return (idx.to(self.device, non_blocking=True), ids.to(self.device, non_blocking=True),
                    cu.to(self.device, non_blocking=True), max_len)

    def _forward(self, model, ids, cu, max_len) -> torch.Tensor:
        """Pooled features [B, hidden] (float32) of one packed batch already on the device."""
        return model.forward_packed(ids, cu, max_len)

    def _forward_with_split(self, model, cpu, dev) -> torch.Tensor:
        try:
            return self._forward(model, *dev[1:])
        except torch.cuda.OutOfMemoryError:
            n = cpu[2].numel() - 1
            if n <= 1:
                raise
            torch.cuda.empty_cache()
            self.oom_splits += 1
            log.warning("a batch of %d sequences (%d tokens) ran out of GPU memory: split in two and retried",
                        n, int(cpu[2][-1]))
            parts = []
            for half in (slice(0, n // 2), slice(n // 2, n)):
                sub = _sub_batch(cpu, half)
                parts.append(self._forward_with_split(model, sub, _move(sub, self.device)))
            return torch.cat(parts)

    def _embed_block(self, block: BlockBatches) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of the block's distinct DNA and proteins, ``[n_dna, 768]`` and ``[n_esm, 2560]`` (float32,
        on the device). The next batch's copy to the device overlaps this batch's compute."""
        jobs = [(self.dnabert, b) for b in block.dna_batches] + [(self.esm, b) for b in block.esm_batches]
        out = {id(self.dnabert): torch.empty(block.n_dna, self.dnabert.config.hidden_size, device=self.device),
               id(self.esm): torch.empty(block.n_esm, self.esm.config.hidden_size, device=self.device)}
        pending = self._to_device(jobs[0][1]) if jobs else None
        current = torch.cuda.current_stream(self.device) if self.copy_stream is not None else None
        for i, (model, cpu) in enumerate(jobs):
            dev = pending
            if current is not None:
                current.wait_stream(self.copy_stream)
                for t in dev[:3]:
                    t.record_stream(current)
            if i + 1 < len(jobs):
                pending = self._to_device(jobs[i + 1][1])
            out[id(model)][dev[0]] = self._forward_with_split(model, cpu, dev)
        return out[id(self.dnabert)], out[id(self.esm)]

    @torch.inference_mode()
    def run(self, prepared: PreparedUnit, wait: bool = True) -> UnitResult:
        """Run a prepared unit, block by block: embed the distinct inputs, give each frame its rows, classify.
        Only scores (and, with ``save_features``, features) come back to the host, into pinned buffers. With
        ``wait=False`` nothing waits for the device: it goes on with the next unit while the caller (the unit
        writer) calls :meth:`UnitResult.wait` for this one."""
        t0 = time.perf_counter()
        n = len(prepared.frames)
        keep_features = self.options.save_features or self.classifier is None
        splits_before = self.oom_splits
        n_probs = 2 if self.classifier is not None else 0
        probs = torch.zeros(n, n_probs, dtype=torch.float32, pin_memory=self.pin)
        features = torch.empty(n, self.feature_size, dtype=torch.float32, pin_memory=self.pin) \
            if keep_features and n else None
        for block in prepared.blocks:
            dna, esm = self._embed_block(block)
            codes = [c.to(self.device, non_blocking=True) for c in (block.dna_codes, block.esm_codes)]
            feats = torch.cat([dna[codes[0]], esm[codes[1]]], dim=1)
            rows = slice(block.start, block.stop)
            if self.classifier is not None:
                probs[rows].copy_(self.classifier.predict_proba(feats).float(), non_blocking=True)
            if features is not None:
                features[rows].copy_(feats, non_blocking=True)
        done = None
        if self.device.type == "cuda":
            done = torch.cuda.Event()
            done.record(torch.cuda.current_stream(self.device))
        result = UnitResult(prepared.unit, prepared.records, prepared.chunks_per_record, prepared.frames,
                            probs.numpy(), None if features is None else features.numpy(), prepared.esm_tokens,
                            prepared.dna_tokens, 0.0, self.oom_splits - splits_before, prepared.esm_tokens_computed,
                            prepared.dna_tokens_computed, done)
        if wait:
            result.wait()
        result.seconds = time.perf_counter() - t0
        return result


def _sub_batch(packed, sl: slice):
    idx, ids, cu, _ = packed
    cu_np = cu.numpy()
    a, b = int(cu_np[sl.start]), int(cu_np[sl.stop])
    new_cu = torch.from_numpy((cu_np[sl.start:sl.stop + 1] - a).astype(np.int32))
    lengths = np.diff(new_cu.numpy())
    return idx[sl], ids[a:b], new_cu, int(lengths.max())


def _move(packed, device):
    idx, ids, cu, m = packed
    return idx.to(device), ids.to(device), cu.to(device), m


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
