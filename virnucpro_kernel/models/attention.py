"""Attention over packed batches: the ONE place that picks how it is computed.

A packed batch lays B sequences end to end: ``q, k, v`` are ``[T, H, D]`` and ``cu_seqlens`` (int32,
``[B+1]``) says where each sequence starts. Every path computes, for each sequence on its own,

    out = softmax(q k^T / sqrt(D) + bias) v,    bias[h, i, j] = -slope[h] * |i - j|  (ALiBi) or 0,

with ``i, j`` positions inside the sequence. The paths, fastest first:

    "flash-attn"        flash_attn.flash_attn_varlen_func (optional package; ALiBi via alibi_slopes)
    "varlen-cudnn"      cuDNN's fused attention on cu_seqlens (aten::_cudnn_attention_forward); chosen only
                        by name (a benchmark row), not by "auto"
    "varlen-flash"      PyTorch's own flash kernel on cu_seqlens: torch.nn.attention.varlen.varlen_attn,
                        else torch.ops.aten._flash_attention_forward (ALiBi only where the build allows)
    "flex"              FlexAttention: document mask (+ ALiBi score_mod), compiled on CUDA
    "sdpa-blockmask"    SDPA over groups of whole sequences with a block-diagonal mask (+ ALiBi bias)
    "sdpa-padded"       sequences scattered to a padded [B, H, L, D] batch, SDPA with mask/bias
    "reference-padded"  padded batch, explicit fp32 softmax(q k^T * scale + bias) v: the reference

``choose_attention(attention, device, dtype, ...)`` maps the user's setting to a path:

    "auto"       CUDA fp16/bf16: the first of flash-attn, varlen-flash, flex (flex not with ALiBi) that
                 is installed AND agrees with the reference on a small probe (run once per
                 device/dtype/shape); else sdpa-padded. (PyTorch 2.11's own flash kernel refuses
                 alibi_slopes, so DNABERT-S runs sdpa-padded there unless flash-attn is installed.)
                 CUDA fp32 and CPU: sdpa-padded (on the CPU it beats the block-diagonal mask several
                 times over: batches are length-sorted, so padding is small, and CPU SDPA is slow
                 with per-head float masks).
    "flash"      flash-attn (error if not installed)
    "varlen"     the PyTorch packed path: varlen-flash on CUDA fp16/bf16 (flex when ALiBi is needed and
                 this build's flash kernel takes no alibi_slopes), sdpa-blockmask elsewhere
    "reference"  reference-padded
    or any path name above, to force it (tests, benchmarks).

``PackedAttention(path, cu_seqlens, max_seqlen, ...)`` is built once per batch (masks, index maps,
block masks) and then called once per layer: ``out = attn(q, k, v)``.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math

import torch
import torch.nn.functional as F

from ..errors import VirNucProError

__all__ = ["PATHS", "SETTINGS", "choose_attention", "available_paths", "PackedAttention", "packed_attention"]

PATHS = ("flash-attn", "varlen-flash", "varlen-cudnn", "flex", "sdpa-blockmask", "sdpa-padded", "reference-padded")
SETTINGS = ("auto", "flash", "varlen", "reference")

_HALF = (torch.float16, torch.bfloat16)
log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# What this machine and this torch build can do (every optional API is looked up, never assumed)
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _flash_attn_varlen_func():
    if importlib.util.find_spec("flash_attn") is None:
        return None
    try:
        from flash_attn import flash_attn_varlen_func
    except Exception:  # a broken build (ABI mismatch) is as good as absent
        return None
    return flash_attn_varlen_func


@functools.lru_cache(maxsize=None)
def _torch_varlen_attn():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except Exception:
        return None
    return varlen_attn


@functools.lru_cache(maxsize=None)
def _aten_flash_args() -> frozenset:
    """Argument names of aten::_flash_attention_forward in this build (empty if it has none)."""
    op = getattr(torch.ops.aten, "_flash_attention_forward", None)
    try:
        return frozenset(a.name for a in op.default._schema.arguments)
    except Exception:
        return frozenset()


@functools.lru_cache(maxsize=None)
def _flex():
    try:
        from torch.nn.attention.flex_attention import BlockMask, flex_attention
    except Exception:
        return None
    return flex_attention, BlockMask


@functools.lru_cache(maxsize=None)
def _compiled_flex():
    flex_attention, _ = _flex()
    return torch.compile(flex_attention, dynamic=None)


def _triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def available_paths(device, dtype, alibi: bool = False) -> list[str]:
    """Paths this build can run for ``device``/``dtype`` (without probing them), fastest first."""
    device = torch.device(device)
    cuda_half = device.type == "cuda" and dtype in _HALF
    paths = []
    if cuda_half and _flash_attn_varlen_func() is not None:
        paths.append("flash-attn")
    if cuda_half and "query" in _aten_flash_args():
        if not alibi or "alibi_slopes" in _aten_flash_args():
            paths.append("varlen-flash")
    if cuda_half and not alibi and getattr(torch.ops.aten, "_cudnn_attention_forward", None) is not None:
        paths.append("varlen-cudnn")
    if _flex() is not None and (device.type != "cuda" or _triton_available()):
        paths.append("flex")
    paths += ["sdpa-blockmask", "sdpa-padded", "reference-padded"]
    return paths


def choose_attention(attention="auto", device="cpu", dtype=torch.float32, *, num_heads=4, head_dim=64,
                     alibi_slopes=None) -> str:
    """The path for the user's ``attention`` setting (see the module docstring)."""
    device = torch.device(device)
    alibi = alibi_slopes is not None
    avail = available_paths(device, dtype, alibi)
    if attention in PATHS:
        if attention not in avail:
            raise VirNucProError(f"attention path '{attention}' is not available for {device.type} {dtype} "
                                 f"with this torch {torch.__version__} (available: {', '.join(avail)})")
        return attention
    if attention == "reference":
        return "reference-padded"
    if attention == "flash":
        if "flash-attn" not in avail:
            raise VirNucProError("attention='flash' needs the flash-attn package and a CUDA device in fp16/bf16; "
                                 "use attention='auto' or 'varlen'")
        return "flash-attn"
    slopes = None if alibi_slopes is None else tuple(float(s) for s in torch.as_tensor(alibi_slopes).tolist())
    if attention == "varlen":
        if device.type == "cuda" and dtype in _HALF:
            # PyTorch's flash build may refuse alibi_slopes ("does not support alibi"): probe it.
            if "varlen-flash" in avail and (not alibi or _probe("varlen-flash", str(device), dtype, num_heads,
                                                                  head_dim, slopes)):
                return "varlen-flash"
            if "flex" in avail and _probe("flex", str(device), dtype, num_heads, head_dim, slopes):
                return "flex"  # (flex needs head_dim >= 16 under Inductor)
        return "sdpa-blockmask" if device.type != "cuda" else "sdpa-padded"
    if attention != "auto":
        raise VirNucProError(f"unknown attention setting '{attention}' (choose from {', '.join(SETTINGS + PATHS)})")
    if device.type != "cuda" or dtype not in _HALF:
        return "sdpa-padded"
    # With ALiBi, flex is not tried: on an H200 (torch 2.11) DNABERT-S frames of ~66 tokens ran at 1.11M tok/s
    # through sdpa-padded and 1.02M through flex (eager layers), and sdpa-padded needs no compilation.
    for path in ("flash-attn", "varlen-flash") + (() if alibi else ("flex",)):
        if path in avail and _probe(path, str(device), dtype, num_heads, head_dim, slopes):
            return path
    return "sdpa-padded"


@functools.lru_cache(maxsize=None)
def _probe(path, device, dtype, num_heads, head_dim, slopes) -> bool:
    """Run ``path`` once on a small packed batch and hold it against the reference path."""
    try:
        g = torch.Generator(device=device).manual_seed(0)
        lengths = [37, 1, 130, 64, 5]
        total = sum(lengths)
        q, k, v = (torch.randn(total, num_heads, head_dim, device=device, generator=g).to(dtype) for _ in range(3))
        cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)
        s = None if slopes is None else torch.tensor(slopes, dtype=torch.float32, device=device)
        got = PackedAttention(path, cu, max(lengths), num_heads, s)(q, k, v).float()
        ref = PackedAttention("reference-padded", cu, max(lengths), num_heads, s)(q, k, v).float()
        err = ((got - ref).norm() / ref.norm()).item()
        if not err < 2e-2:
            log.warning("attention path %s disagrees with the reference on %s %s (relative error %.2e): not used",
                        path, device, dtype, err)
        return bool(err < 2e-2)
    except Exception as exc:
        log.info("attention path %s is not usable on %s %s (%d heads of %d): %s: %s", path, device, dtype,
                 num_heads, head_dim, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return False


# ---------------------------------------------------------------------------------------------
# The paths
# ---------------------------------------------------------------------------------------------


def _doc_mask_mod(doc):
    def mask_mod(b, h, q_idx, kv_idx):
        return doc[q_idx] == doc[kv_idx]

    return mask_mod


def _alibi_score_mod(slopes, pos):
    def score_mod(score, b, h, q_idx, kv_idx):
        return score - slopes[h] * (pos[q_idx] - pos[kv_idx]).abs()

    return score_mod


class PackedAttention:
    """Attention for one packed batch; build once, call once per layer with ``q, k, v [T, H, D]``.

    ``total_tokens`` (T, when the caller knows it) spares a device-to-host sync on the GPU."""

    def __init__(self, path: str, cu_seqlens: torch.Tensor, max_seqlen: int, num_heads: int,
                 alibi_slopes: torch.Tensor | None = None, block_tokens: int = 512, total_tokens: int | None = None):
        if path not in PATHS:
            raise ValueError(f"unknown attention path '{path}'")
        self.path = path
        self.cu_seqlens = cu_seqlens.to(torch.int32)
        self.max_seqlen = int(max_seqlen)
        self.num_heads = num_heads
        device = cu_seqlens.device
        self.slopes = None if alibi_slopes is None else alibi_slopes.to(device=device, dtype=torch.float32)
        self.batch = cu_seqlens.numel() - 1
        self.block_tokens = block_tokens
        if path in ("flash-attn", "varlen-flash", "varlen-cudnn"):
            return
        # Per-token sequence id and position inside the sequence, without a host sync.
        cu = self.cu_seqlens.long()
        lengths = cu[1:] - cu[:-1]
        self.seq_id = torch.repeat_interleave(torch.arange(self.batch, device=device), lengths,
                                              output_size=total_tokens)  # known total: no host sync
        self.pos = torch.arange(self.seq_id.numel(), device=device) - cu[:-1][self.seq_id]
        if path in ("sdpa-padded", "reference-padded"):
            L = self.max_seqlen
            self.flat = self.seq_id * L + self.pos  # where each token goes in the padded [B*L] layout
            self.valid = torch.arange(L, device=device)[None, :] < lengths[:, None]  # [B, L]
            self.bias = None
            if self.slopes is not None:
                rel = torch.arange(L, device=device)
                self.bias = -self.slopes[:, None, None] * (rel[None, :, None] - rel[None, None, :]).abs()  # [H, L, L]
            self._masks = {}
        elif path == "flex":
            self._flex_mask = None
        elif path == "sdpa-blockmask":
            # Groups of consecutive whole sequences of at most block_tokens tokens (one longer sequence
            # forms its own group): the block-diagonal mask stays [Tg, Tg] rather than [T, T].
            bounds = self.cu_seqlens.tolist()
            self.groups, s = [], 0
            for i in range(self.batch):
                if i > s and bounds[i + 1] - bounds[s] > block_tokens:
                    self.groups.append((bounds[s], bounds[i]))
                    s = i
            if self.batch:
                self.groups.append((bounds[s], bounds[self.batch]))
            self._masks = {}

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return getattr(self, "_" + self.path.replace("-", "_"))(q, k, v)

    # -- packed, no masks at all -------------------------------------------------------------

    def _flash_attn(self, q, k, v):
        return _flash_attn_varlen_func()(q, k, v, self.cu_seqlens, self.cu_seqlens, self.max_seqlen, self.max_seqlen,
                                         dropout_p=0.0, causal=False, alibi_slopes=self.slopes)

    def _varlen_cudnn(self, q, k, v):
        return torch.ops.aten._cudnn_attention_forward(q, k, v, None, self.cu_seqlens, self.cu_seqlens, self.max_seqlen,
                                                       self.max_seqlen, False, 0.0, False, False)[0]

    def _varlen_flash(self, q, k, v):
        varlen = _torch_varlen_attn()
        if self.slopes is None and varlen is not None:
            return varlen(q, k, v, self.cu_seqlens, self.cu_seqlens, self.max_seqlen, self.max_seqlen)
        extra = {} if self.slopes is None else {"alibi_slopes": self.slopes}
        out = torch.ops.aten._flash_attention_forward(q, k, v, self.cu_seqlens, self.cu_seqlens, self.max_seqlen,
                                                      self.max_seqlen, 0.0, False, False, **extra)
        return out[0]

    # -- FlexAttention -----------------------------------------------------------------------

    def _flex(self, q, k, v):
        flex_attention, BlockMask = _flex()
        T, H, D = q.shape
        block = 128
        Tp = -(-T // block) * block
        if self._flex_mask is None:
            # Pad to whole blocks; padding tokens form one extra document and are dropped at the end.
            doc = torch.full((Tp,), self.batch, dtype=torch.int32, device=q.device)
            doc[:T] = self.seq_id.to(torch.int32)
            pos = torch.zeros(Tp, dtype=torch.int32, device=q.device)
            pos[:T] = self.pos.to(torch.int32)
            # Block-level sparsity straight from the document layout (no [T, T] mask is built):
            # block pair (i, j) is touched when their document ranges overlap, and is full when both
            # blocks lie inside one and the same document.
            first, last = doc[0::block], doc[block - 1::block]
            touch = (first[None, :] <= last[:, None]) & (last[None, :] >= first[:, None])
            single = first == last
            full = single[:, None] & single[None, :] & (first[:, None] == first[None, :])
            partial = touch & ~full

            def blocks(m):
                num = m.sum(-1).to(torch.int32)[None, None]
                idx = torch.argsort((~m).to(torch.int8), dim=-1, stable=True).to(torch.int32)[None, None]
                return num, idx

            kv_num, kv_idx = blocks(partial)
            full_num, full_idx = blocks(full)
            mask_mod = _doc_mask_mod(doc)
            self._flex_mask = BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block,
                                                       mask_mod=mask_mod)
            self._flex_score = None if self.slopes is None else _alibi_score_mod(self.slopes, pos)

        def heads_first(x):
            return F.pad(x, (0, 0, 0, 0, 0, Tp - T)).transpose(0, 1).unsqueeze(0)

        fn = _compiled_flex() if q.device.type == "cuda" else flex_attention
        out = fn(heads_first(q), heads_first(k), heads_first(v), score_mod=self._flex_score,
                 block_mask=self._flex_mask)
        return out[0].transpose(0, 1)[:T]

    # -- SDPA on groups of whole sequences, block-diagonal mask --------------------------------

    def _sdpa_blockmask(self, q, k, v):
        if not self.groups:
            return torch.empty_like(q)
        outs = []
        for a, b in self.groups:
            key = (a, q.dtype)
            if key not in self._masks:
                sid, pos = self.seq_id[a:b], self.pos[a:b]
                same = sid[:, None] == sid[None, :]
                if self.slopes is None:
                    mask = same
                else:
                    bias = -self.slopes[:, None, None] * (pos[:, None] - pos[None, :]).abs()
                    mask = bias.masked_fill(~same, float("-inf")).to(q.dtype)
                self._masks[key] = mask
            qs, ks, vs = (x[a:b].transpose(0, 1).unsqueeze(0) for x in (q, k, v))
            outs.append(F.scaled_dot_product_attention(qs, ks, vs, attn_mask=self._masks[key])[0].transpose(0, 1))
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    # -- padded batch: SDPA, or the explicit reference -----------------------------------------

    def _pad(self, x):
        T, H, D = x.shape
        out = x.new_zeros(self.batch * self.max_seqlen, H, D)
        out.index_copy_(0, self.flat, x)
        return out.view(self.batch, self.max_seqlen, H, D).transpose(1, 2)  # [B, H, L, D]

    def _unpad(self, y):
        B, H, L, D = y.shape
        return y.transpose(1, 2).reshape(B * L, H, D).index_select(0, self.flat)

    def _padded_mask(self, dtype):
        if dtype not in self._masks:
            keep = self.valid[:, None, None, :]  # [B, 1, 1, L]: padding keys are never attended
            if self.bias is None:
                self._masks[dtype] = keep
            else:
                self._masks[dtype] = self.bias[None].masked_fill(~keep, float("-inf")).to(dtype)  # [B, H, L, L]
        return self._masks[dtype]

    def _sdpa_padded(self, q, k, v):
        mask = self._padded_mask(q.dtype)
        out = F.scaled_dot_product_attention(self._pad(q), self._pad(k), self._pad(v), attn_mask=mask)
        return self._unpad(out)

    def _reference_padded(self, q, k, v):
        qp, kp, vp = (self._pad(x).float() for x in (q, k, v))
        scores = qp @ kp.transpose(-1, -2) / math.sqrt(q.shape[-1])  # [B, H, L, L]
        if self.bias is not None:
            scores = scores + self.bias
        scores = scores.masked_fill(~self.valid[:, None, None, :], float("-inf"))
        return self._unpad(torch.softmax(scores, dim=-1) @ vp).to(q.dtype)


def packed_attention(q, k, v, cu_seqlens, max_seqlen, *, alibi_slopes=None, path="reference-padded"):
    """One-off convenience: ``PackedAttention(path, ...)(q, k, v)``."""
    return PackedAttention(path, cu_seqlens, max_seqlen, q.shape[1], alibi_slopes)(q, k, v)
