"""Calls (``calls``): per-frame scores -> per-chunk maxima -> per-sequence calls, and calling a run again."""

import numpy as np
import pandas as pd
import pytest

from test_outputs import FRAMES, RECORDS, make_frames, make_records
from virnucpro_kernel import calls as calls_mod
from virnucpro_kernel.calls import recall, sequence_calls
from virnucpro_kernel.errors import VirNucProError


def test_sequence_calls_hand_made():
    calls = sequence_calls(FRAMES, RECORDS, threshold=0.5)
    assert list(calls.columns) == list(calls_mod.SEQUENCE_COLUMNS[:-1])
    assert list(calls_mod.with_profile(calls, "demo").columns) == list(calls_mod.SEQUENCE_COLUMNS)
    assert calls["sequence_id"].tolist() == ["x", "empty", "y"]
    assert calls["chunks"].tolist() == [10, 1, 1]
    assert calls["chunks_with_frames"].tolist() == [2, 0, 1]
    assert calls["frames"].tolist() == [4, 0, 2]
    # x: chunk 2 scores max(0.75, 1e-7) = 0.75, chunk 10 scores max(0.99999994, 0.5); mean over the 2 chunks.
    assert calls["score"][0] == (0.75 + float(np.float32(0.99999994))) / 2
    assert calls["viral_chunk_fraction"][0] == 0.5  # chunk 10 is viral, chunk 2 not
    assert np.isnan(calls["score"][1]) and np.isnan(calls["viral_chunk_fraction"][1])
    assert calls["score"][2] == float(np.float32(3e-05))
    assert calls["viral_chunk_fraction"][2] == 0.0
    assert calls["call"].tolist() == ["virus", "no_frames", "others"]


def test_sequence_calls_threshold_equality_and_mean_of_chunk_maxima():
    frames = make_frames([
        (0, "eq", 1, "F1", 0.75, 0.25),
        (0, "eq", 1, "R1", 0.5, 0.5),   # chunk 1 score: 0.5 (its highest P(virus))
        (0, "eq", 3, "F2", 0.5, 0.5),   # chunk 3 score: 0.5
        (1, "below", 1, "F1", 0.25, 0.75),
        (1, "below", 2, "F1", 0.75, 0.25),
        (1, "below", 2, "F2", 0.7578125, 0.2421875),  # chunk scores 0.75, 0.25: mean 0.5, but the next chunk
        (1, "below", 3, "R3", 0.53125, 0.46875),       # brings the mean of 3 chunk maxima below 0.5
    ])
    records = make_records([(0, "eq", 1500, 3), (1, "below", 1500, 3)])
    calls = sequence_calls(frames, records, threshold=0.5)
    assert calls["score"].tolist() == [0.5, (0.75 + 0.25 + 0.46875) / 3]
    assert calls["call"].tolist() == ["virus", "others"]  # score == threshold is virus
    # eq: chunk 1 is not viral (0.5 < 0.75), chunk 3 is (a tie counts as viral); below: chunk 1 only.
    assert calls["viral_chunk_fraction"].tolist() == [0.5, 1 / 3]
    assert calls["chunks_with_frames"].tolist() == [2, 3]
    assert sequence_calls(frames, records, threshold=0.75)["call"].tolist() == ["others", "others"]
    assert sequence_calls(frames, records, threshold=0.0)["call"].tolist() == ["virus", "virus"]


def test_recall_at_another_threshold_from_the_frames_alone():
    seqs = calls_mod.with_profile(sequence_calls(FRAMES, RECORDS, 0.5), "demo")
    frames = FRAMES.assign(record_index=FRAMES["record_index"] + 1000)  # run.json indexes count empty records
    for t in (0.0, 0.5, 0.8, 1.0):
        again = recall(frames, seqs, t)
        expected = calls_mod.with_profile(sequence_calls(FRAMES, RECORDS, t), "demo")
        pd.testing.assert_frame_equal(again, expected)
    assert recall(frames, seqs, 0.9)["call"].tolist() == ["others", "no_frames", "others"]
    assert recall(frames, seqs, 0.8)["call"].tolist() == ["virus", "no_frames", "others"]
    with pytest.raises(VirNucProError, match="between 0 and 1"):
        recall(frames, seqs, 1.5)
    with pytest.raises(VirNucProError, match="does not list"):
        recall(make_frames([(0, "zz", 1, "F1", 0.5, 0.5)]), seqs, 0.5)


def test_sequence_calls_match_a_plain_pandas_groupby():
    rng = np.random.default_rng(5)
    rows, records = [], []
    for record in range(300):
        n_chunks = int(rng.integers(1, 9))
        records.append((record * 2, f"r{record}", n_chunks * 300, n_chunks))  # record_index with gaps
        for chunk in range(1, n_chunks + 1):
            for frame in sorted(rng.choice(6, int(rng.integers(0, 7)), replace=False)):
                pv = np.float32(rng.random())
                rows.append((record * 2, f"r{record}", chunk, calls_mod.FRAME_NAMES[frame], np.float32(1) - pv, pv))
    frames, records = make_frames(rows), make_records(records)
    calls = sequence_calls(frames, records, threshold=0.6)

    per_chunk = frames.groupby(["record_index", "chunk"]).agg(
        pv=("p_virus", "max"), po=("p_others", "max"), n=("frame", "size"))
    per_chunk["viral"] = per_chunk["pv"] >= per_chunk["po"]
    per_chunk["pv"] = per_chunk["pv"].astype(np.float64)
    per_record = per_chunk.groupby(level="record_index").agg(
        score=("pv", "mean"), fraction=("viral", "mean"), chunks=("pv", "size"), frames=("n", "sum"))
    expected = records[["record_index"]].join(per_record, on="record_index")
    np.testing.assert_allclose(calls["score"], expected["score"], rtol=1e-12)
    np.testing.assert_allclose(calls["viral_chunk_fraction"], expected["fraction"], rtol=1e-12)
    assert calls["chunks_with_frames"].tolist() == expected["chunks"].fillna(0).astype(int).tolist()
    assert calls["frames"].tolist() == expected["frames"].fillna(0).astype(int).tolist()
    want = np.where(expected["score"].isna(), "no_frames", np.where(expected["score"] >= 0.6, "virus", "others"))
    assert calls["call"].tolist() == want.tolist()

    shuffled = frames.sample(frac=1, random_state=1)  # order of the frames does not change the calls
    pd.testing.assert_frame_equal(sequence_calls(shuffled, records, 0.6), calls)


def test_sequence_calls_refuse_inconsistent_tables():
    with pytest.raises(ValueError, match="record_index 5"):
        sequence_calls(make_frames([(5, "x", 1, "F1", 0.5, 0.5)]), RECORDS)
    with pytest.raises(ValueError, match="chunk 11"):
        sequence_calls(make_frames([(0, "x", 11, "F1", 0.5, 0.5)]), RECORDS)
    with pytest.raises(ValueError, match="do not match"):
        sequence_calls(make_frames([(0, "not_x", 1, "F1", 0.5, 0.5)]), RECORDS)
    with pytest.raises(ValueError, match="threshold"):
        sequence_calls(FRAMES, RECORDS, threshold=float("nan"))


def test_sequence_calls_without_frames():
    calls = sequence_calls(make_frames([]), RECORDS)
    assert calls["call"].tolist() == ["no_frames"] * 3
    assert calls["frames"].tolist() == [0, 0, 0]
