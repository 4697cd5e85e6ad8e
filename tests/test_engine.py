"""One device's pipeline (``engine``): identical frames embedded once, OOM split, waiting for the device."""

import numpy as np
import pytest

from conftest import EXAMPLES
from virnucpro_kernel.engine import EngineOptions, FramePipeline, _distinct
from virnucpro_kernel.fasta import RecordBlock, iter_record_blocks
from virnucpro_kernel.models.profiles import resolve_profile


@pytest.fixture(scope="module")
def demo_profile():
    return resolve_profile("demo", 300)


def _records(text, tmp_path):
    path = tmp_path / "in.fa"
    path.write_text(text)
    return RecordBlock.concat(list(iter_record_blocks(path)))


def test_distinct_is_exact():
    codes, distinct = _distinct(["AB", "C", "AB", "ab", "C", "AB"], dedup=True)
    assert distinct == ["AB", "C", "ab"] and codes.tolist() == [0, 1, 0, 2, 1, 0]
    codes, distinct = _distinct(["AB", "AB"], dedup=False)
    assert distinct == ["AB", "AB"] and codes.tolist() == [0, 1]


def test_duplicate_reads_are_embedded_once_with_the_same_results(demo_profile, tmp_path):
    """Three copies of a read and one other: the copies' frames are computed once; every frame gets the scores and
    features it gets without deduplication."""
    reads = [line for line in (EXAMPLES / "refseq_viral_frames_298bp.fa").read_text().splitlines()]
    seqs = [reads[i] for i in range(1, len(reads), 2)][:2]
    text = "".join(f">r{i}\n{s}\n" for i, s in enumerate([seqs[0], seqs[1], seqs[0], seqs[0]]))
    records = _records(text, tmp_path)
    runs = {}
    for dedup in (True, False):
        pipe = FramePipeline(demo_profile, EngineOptions(chunk_size=300, dedup=dedup, save_features=True))
        prepared = pipe.prepare(0, records)
        runs[dedup] = (prepared, pipe.run(prepared))
    (p_on, r_on), (p_off, r_off) = runs[True], runs[False]
    assert r_on.esm_tokens == r_off.esm_tokens == p_off.esm_tokens_computed, "the same frames are asked for"
    frames_of = np.bincount(r_on.frames.record, minlength=4)
    assert frames_of[0] == frames_of[2] == frames_of[3]
    esm_len = np.diff(r_on.frames.prot_off) + 2
    expected_computed = int(esm_len[r_on.frames.record <= 1].sum())  # reads 0 and 1; 2 and 3 are copies of 0
    assert p_on.esm_tokens_computed == expected_computed < p_off.esm_tokens_computed
    np.testing.assert_allclose(r_on.probs, r_off.probs, rtol=0, atol=1e-6)
    np.testing.assert_allclose(r_on.features, r_off.features, rtol=1e-5, atol=1e-6)
    rec = r_on.frames.record
    np.testing.assert_array_equal(r_on.features[rec == 2], r_on.features[rec == 0])  # copies: the same rows


def test_oom_batches_are_split_and_retried(caplog):
    """A batch that runs out of GPU memory is split in two and retried (the OOM is injected: no GPU here)."""
    import torch

    
    pipe = FramePipeline(resolve_profile("demo", 300), EngineOptions(chunk_size=300))
    records = RecordBlock.concat(list(iter_record_blocks(EXAMPLES / "refseq_viral_frames_298bp.fa")))
    prepared = pipe.prepare(0, records)
    assert len(prepared.frames) > 2
    expected = pipe.run(prepared).probs
    real_forward = pipe._forward

    def limited(model, ids, cu, max_len):
        if cu.numel() - 1 > 1:
            raise torch.cuda.OutOfMemoryError("injected")
        return real_forward(model, ids, cu, max_len)

    pipe._forward = limited
    with caplog.at_level("WARNING", logger="virnucpro"):
        got = pipe.run(prepared)
    assert got.oom_splits >= 1
    assert "ran out of GPU memory" in caplog.text
    np.testing.assert_allclose(got.probs, expected, atol=1e-5)


