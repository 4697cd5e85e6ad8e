"""Token-budget packing: sequences of token ids -> packed batches -> results back in input order.

The encoders take *packed* batches: the token ids of several sequences laid end to end in one flat
array, with ``cu_seqlens`` (cumulative lengths, ``[0, l0, l0+l1, ...]``) saying where each sequence
starts and ends. There is no padding, so no compute is spent on it.

    lengths = [len(t) for t in tokens]
    for batch in pack_by_tokens(lengths, token_budget=16384):   # lists of input indices
        packed = pack_tokens(tokens, batch)                     # input_ids, cu_seqlens, max_seqlen
        pooled = model.forward_packed(*packed.to("cuda"))       # [B, hidden], rows in ``batch`` order
    result = scatter_rows(pooled_per_batch, batches, n)         # [N, hidden], rows in input order

Everything here is NumPy; torch is imported only by ``PackedBatch.to``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["pack_by_tokens", "pack_tokens", "PackedBatch", "scatter_rows"]


def pack_by_tokens(lengths, token_budget: int, max_sequences: int | None = None) -> list[np.ndarray]:
    """Group sequence indices into batches of at most ``token_budget`` tokens, largest first.

    Sequences are sorted by length, longest first (ties keep input order), and cut into consecutive
    runs whose total length fits the budget; so each batch holds sequences of similar length (cheap
    to pad for the padded fallback paths) and only the last batch is much below the budget. A
    sequence longer than the budget gets a batch of its own. ``max_sequences`` optionally caps the
    number of sequences per batch. Returns a list of int64 index arrays into ``lengths``.
    """
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if token_budget < 1:
        raise ValueError(f"token_budget must be at least 1, got {token_budget}")
    if max_sequences is not None and max_sequences < 1:
        raise ValueError(f"max_sequences must be at least 1, got {max_sequences}")
    if lengths.size == 0:
        return []
    if (lengths < 0).any():
        raise ValueError("sequence lengths must not be negative")
    order = np.argsort(-lengths, kind="stable")
    sorted_lengths = lengths[order].tolist()
    cap = max_sequences or len(sorted_lengths)

    starts = [0]
    total = 0
    count = 0
    for i, n in enumerate(sorted_lengths):
        if count and (total + n > token_budget or count >= cap):
            starts.append(i)
            total, count = 0, 0
        total += n
        count += 1
    starts.append(len(sorted_lengths))
    return [order[a:b] for a, b in zip(starts[:-1], starts[1:])]


@dataclass
class PackedBatch:
    """One packed batch: ``input_ids[cu_seqlens[i]:cu_seqlens[i+1]]`` are the tokens of ``indices[i]``."""

    indices: np.ndarray  # int64 [B], positions of these sequences in the input
    input_ids: np.ndarray  # int64 [T], all tokens end to end
    cu_seqlens: np.ndarray  # int32 [B+1], 0 then cumulative lengths
    max_seqlen: int

    @property
    def num_tokens(self) -> int:
        return int(self.cu_seqlens[-1])

    @property
    def num_sequences(self) -> int:
        return len(self.indices)

    def to(self, device="cpu"):
        """``(input_ids LongTensor[T], cu_seqlens IntTensor[B+1], max_seqlen)`` on ``device``, ready for
        ``forward_packed``."""
        import torch

        non_blocking = str(device).startswith("cuda")
        ids = torch.from_numpy(self.input_ids)
        cu = torch.from_numpy(self.cu_seqlens)
        if non_blocking:
            ids, cu = ids.pin_memory(), cu.pin_memory()
        return (
            ids.to(device, non_blocking=non_blocking),
            cu.to(device, non_blocking=non_blocking),
            self.max_seqlen,
        )


def pack_tokens(tokens: Sequence, indices) -> PackedBatch:
    """Lay the token arrays ``tokens[i] for i in indices`` end to end."""
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    parts = [np.asarray(tokens[i], dtype=np.int64).reshape(-1) for i in indices.tolist()]
    lengths = np.fromiter((p.size for p in parts), dtype=np.int64, count=len(parts))
    cu_seqlens = np.zeros(len(parts) + 1, dtype=np.int32)
    np.cumsum(lengths, out=cu_seqlens[1:])
    input_ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return PackedBatch(indices, input_ids, cu_seqlens, int(lengths.max()) if parts else 0)


def scatter_rows(chunks: Sequence, batches: Sequence, n: int | None = None):
    """Put the rows of ``chunks[k]`` (one row per index of ``batches[k]``) back in input order.

    Works on NumPy arrays and torch tensors alike (the result has the type, dtype and device of the
    first chunk). ``n`` defaults to the total number of rows; every input position must be covered.
    """
    if len(chunks) != len(batches):
        raise ValueError(f"{len(chunks)} result chunks for {len(batches)} batches")
    parts = [np.asarray(b, dtype=np.int64).reshape(-1) for b in batches]
    index = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    n = index.size if n is None else n
    if index.size != n or (n and (np.bincount(index, minlength=n) != 1).any()):
        raise ValueError("batches must cover every input position exactly once")
    if not chunks:
        raise ValueError("no result chunks to scatter")
    first = chunks[0]
    if isinstance(first, np.ndarray):
        rows = np.concatenate(chunks, axis=0)
        out = np.empty_like(rows)
        out[index] = rows
        return out
    import torch

    rows = torch.cat(list(chunks), dim=0)
    out = torch.empty_like(rows)
    out[torch.from_numpy(index).to(rows.device)] = rows
    return out
