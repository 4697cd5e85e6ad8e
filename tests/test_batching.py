"""Token-budget packing and the way back to input order."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from virnucpro_kernel.batching import pack_by_tokens, pack_tokens, scatter_rows


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 300), max_size=200), st.integers(1, 1000), st.none() | st.integers(1, 20))
def test_pack_by_tokens_covers_everything_within_budget(lengths, budget, max_sequences):
    batches = pack_by_tokens(lengths, budget, max_sequences=max_sequences)
    seen = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    lengths = np.asarray(lengths)
    previous_max = np.inf
    for batch in batches:
        assert len(batch) >= 1
        assert lengths[batch].sum() <= budget or len(batch) == 1  # only a lone long sequence may exceed
        if max_sequences:
            assert len(batch) <= max_sequences
        assert lengths[batch].max() <= previous_max  # largest first
        previous_max = lengths[batch].min()


def test_pack_by_tokens_examples():
    assert pack_by_tokens([], 10) == []
    batches = pack_by_tokens([3, 9, 4, 12, 1], 10)
    assert [b.tolist() for b in batches] == [[3], [1], [2, 0, 4]]
    # ties keep input order
    assert [b.tolist() for b in pack_by_tokens([5, 5, 5, 5], 10)] == [[0, 1], [2, 3]]
    with pytest.raises(ValueError):
        pack_by_tokens([1, 2], 0)
    with pytest.raises(ValueError):
        pack_by_tokens([1, -2], 10)


def test_pack_by_tokens_is_fast_on_a_window_of_frames():
    import time

    lengths = np.random.default_rng(0).integers(30, 170, size=50_000)
    t0 = time.perf_counter()
    batches = pack_by_tokens(lengths, 65536)
    assert time.perf_counter() - t0 < 1.0
    assert sum(len(b) for b in batches) == len(lengths)


@given(st.lists(st.lists(st.integers(0, 32), min_size=1, max_size=20), min_size=1, max_size=30), st.randoms())
def test_pack_tokens_layout(tokens, rnd):
    indices = list(range(len(tokens)))
    rnd.shuffle(indices)
    packed = pack_tokens(tokens, indices)
    assert packed.cu_seqlens.dtype == np.int32 and packed.input_ids.dtype == np.int64
    assert packed.num_sequences == len(tokens)
    assert packed.num_tokens == sum(len(t) for t in tokens)
    assert packed.max_seqlen == max(len(t) for t in tokens)
    for slot, i in enumerate(indices):
        a, b = packed.cu_seqlens[slot], packed.cu_seqlens[slot + 1]
        assert packed.input_ids[a:b].tolist() == tokens[i]
    ids, cu, max_seqlen = packed.to("cpu")
    assert ids.dtype == torch.int64 and cu.dtype == torch.int32 and max_seqlen == packed.max_seqlen


@given(st.lists(st.integers(1, 50), min_size=1, max_size=60), st.integers(1, 120))
def test_scatter_rows_restores_input_order(lengths, budget):
    batches = pack_by_tokens(lengths, budget)
    # each "result" row is its own input index, so input order means rows 0, 1, 2, ...
    chunks = [np.stack([np.full(3, i) for i in b]) for b in batches]
    out = scatter_rows(chunks, batches, len(lengths))
    assert out[:, 0].tolist() == list(range(len(lengths)))
    out_t = scatter_rows([torch.from_numpy(c).float() for c in chunks], batches, len(lengths))
    assert out_t[:, 0].tolist() == list(range(len(lengths)))


def test_scatter_rows_rejects_incomplete_cover():
    with pytest.raises(ValueError):
        scatter_rows([np.zeros((1, 2))], [np.array([0])], 2)
    with pytest.raises(ValueError):
        scatter_rows([np.zeros((2, 2))], [np.array([0, 0])], 2)
