"""What DNABERT-S and ESM-2 share: the packed-batch encoder shell around each model's layers.

An :class:`Encoder` holds a model's weights on one device and runs *packed* batches (token ids of several
sequences end to end, ``cu_seqlens`` marking where each starts; see ``batching``): it picks the attention path
once per device and dtype (``attention.choose_attention``), freezes and optionally compiles its layers, counts
FLOPs, and pools each sequence's last hidden states into one vector (:func:`pool_segments`, deterministic: the
same batch gives the same bits every time, whatever ran before).

Compilation is regional: each layer class's named methods (e.g. ``ESM2Layer.attention_inputs``) are compiled
once and shared by every layer of the model, with only the token dimension dynamic.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..batching import pack_by_tokens, pack_tokens, scatter_rows
from .attention import choose_attention

__all__ = ["Encoder", "pool_segments", "packed_positions", "compile_methods", "mark_tokens_dynamic"]

_COMPILED: dict = {}


def mark_tokens_dynamic(t: torch.Tensor) -> torch.Tensor:
    """Tell torch.compile that dim 0 (the tokens of a packed batch) changes from batch to batch."""
    torch._dynamo.maybe_mark_dynamic(t, 0)
    return t


def _compile_options() -> dict:
    # Inductor's deterministic mode: no on-device benchmarking of reduction configs, so a kernel's numerics do
    # not depend on timing noise (the same batch gives the same bits in every process, cold cache or warm).
    from torch._inductor import config

    return {"deterministic": True} if hasattr(config, "deterministic") else {}


def compile_methods(cls: type, names: tuple[str, ...]) -> dict:
    """``{name: torch.compile(cls.name)}``, made once per class and shared by all its instances."""
    key = (cls, names)
    if key not in _COMPILED:
        options = _compile_options()
        _COMPILED[key] = {n: torch.compile(getattr(cls, n), options=options or None) for n in names}
    return _COMPILED[key]


def packed_positions(cu_seqlens: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(lengths [B], seq_id [T], pos [T])`` of a packed batch: each token's sequence and position in it."""
    cu = cu_seqlens.long()
    lengths = cu[1:] - cu[:-1]
    seq_id = torch.repeat_interleave(torch.arange(lengths.numel(), device=cu.device), lengths, output_size=total)
    pos = torch.arange(total, device=cu.device) - cu[:-1][seq_id]
    return lengths, seq_id, pos


def pool_segments(x: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int, start: int,
                  count: torch.Tensor) -> torch.Tensor:
    """``[B, H]`` float32: for each packed sequence b, the mean of ``x`` over its tokens ``start ..
    start + count[b] - 1`` (zeros where ``count[b]`` is 0).

    Gathered into a padded ``[B, L, H]`` view and reduced by one batched fp32 matrix product: a fixed order of
    summation, unlike an atomic ``index_add_``, so the result is deterministic."""
    B = cu_seqlens.numel() - 1
    width = max(int(max_seqlen) - start, 1)
    offs = torch.arange(width, device=x.device)
    idx = (cu_seqlens[:-1, None].long() + start + offs[None, :]).clamp_(max=max(x.shape[0] - 1, 0))
    count = count.long()
    w = (offs[None, :] < count[:, None]).float() / count.clamp(min=1)[:, None].float()  # [B, L]
    if x.shape[0] == 0:
        return torch.zeros(B, x.shape[-1], device=x.device)
    return torch.bmm(w[:, None, :], x[idx].float()).squeeze(1)


class Encoder(nn.Module):
    """Base of the packed encoders. Subclasses define ``config``, ``layers``, ``tokenize``, ``forward_packed``,
    ``flops_per_token`` and ``COMPILED`` (the layer class and the names of its methods to compile)."""

    COMPILED: tuple[type, tuple[str, ...]] | None = None

    def __init__(self, config, attention: str = "auto", compile: bool = False):
        super().__init__()
        self.config = config
        self.attention = attention
        self.compile = compile
        self._paths: dict = {}
        self._methods: dict = {}

    def _setup(self):
        """Freeze the weights and pick the (compiled or plain) layer methods."""
        for p in self.parameters():
            p.requires_grad_(False)
        cls, names = self.COMPILED
        compiled = compile_methods(cls, names) if self.compile else {}
        self._methods = {n: compiled.get(n, getattr(cls, n)) for n in names}
        return self

    def _dynamic(self, t: torch.Tensor) -> torch.Tensor:
        return mark_tokens_dynamic(t) if self.compile else t

    # -- properties ------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def _alibi(self):
        return None

    @property
    def attention_path(self) -> str:
        """The attention path this model runs with on its current device and dtype."""
        key = (str(self.device), self.dtype)
        if key not in self._paths:
            slopes = self._alibi()
            self._paths[key] = choose_attention(self.attention, self.device, self.dtype,
                                                num_heads=self.config.num_heads, head_dim=self.config.head_dim,
                                                alibi_slopes=None if slopes is None else slopes.cpu())
        return self._paths[key]

    def attention_flops_per_token(self, seq_len: float) -> float:
        """Attention's ``4 h n L`` FLOPs per token for sequences of n tokens (not in ``flops_per_token``)."""
        return 4.0 * self.config.hidden_size * seq_len * self.config.num_layers

    # -- embedding lists of sequences --------------------------------------------------------------

    def embed(self, sequences, token_budget: int = 8192) -> torch.Tensor:
        """Mean embeddings ``[N, hidden]`` float32 on the CPU, rows in input order."""
        tokens = self.tokenize(sequences)
        if not len(tokens):
            return torch.zeros(0, self.config.hidden_size)
        batches = pack_by_tokens([len(t) for t in tokens], token_budget)
        chunks = [self.forward_packed(*pack_tokens(tokens, b).to(self.device)).cpu() for b in batches]
        return scatter_rows(chunks, batches, len(tokens))
