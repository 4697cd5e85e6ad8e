"""Output files of predict: exact contents on hand-made tables, the original's rules, round trips, atomicity."""

import json
import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from virnucpro_kernel import calls as calls_mod
from virnucpro_kernel import outputs
from virnucpro_kernel.calls import FRAME_COLUMNS, FRAME_NAMES, chunk_table, sequence_calls
from virnucpro_kernel.outputs import (
    OutputWriter,
    format_float32,
    read_frames_parquet,
    write_frames_parquet,
    write_highestscore,
    write_outputs,
    write_prediction_results,
    write_run_json,
    write_sequences_tsv,
    write_viral_fasta,
)


def make_frames(rows):
    """rows: (record_index, sequence_id, chunk, frame, p_others, p_virus)."""
    record, sid, chunk, frame, po, pv = zip(*rows) if rows else ([],) * 6
    return pd.DataFrame({
        "record_index": np.array(record, dtype=np.int64),
        "sequence_id": pd.Series(list(sid), dtype="str"),
        "chunk": np.array(chunk, dtype=np.int32),
        "frame": pd.Series(list(frame), dtype="str"),
        "p_others": np.array(po, dtype=np.float32),
        "p_virus": np.array(pv, dtype=np.float32),
    })


def make_records(rows):
    """rows: (record_index, sequence_id, length, chunks)."""
    record, sid, length, chunks = zip(*rows)
    return pd.DataFrame({
        "record_index": np.array(record, dtype=np.int64),
        "sequence_id": pd.Series(list(sid), dtype="str"),
        "length": np.array(length, dtype=np.int64),
        "chunks": np.array(chunks, dtype=np.int32),
    })


# Record "x" has 10 chunks (frames in chunks 2 and 10), record 1 ("empty") none, record 2 ("y") one chunk.
FRAMES = make_frames([
    (0, "x", 2, "F1", 0.25, 0.75),
    (0, "x", 2, "R2", 0.9999999, 1e-07),
    (0, "x", 10, "F3", 5.9604645e-08, 0.99999994),
    (0, "x", 10, "R1", 0.5, 0.5),  # a tie: argmax says others
    (2, "y", 1, "F2", 1.0, 0.0),
    (2, "y", 1, "R3", 0.99997, 3e-05),
])
RECORDS = make_records([(0, "x", 4600, 10), (1, "empty", 120, 1), (2, "y", 300, 1)])


def read(path):
    with open(path, "rb") as f:
        return f.read().decode()


# ---------------------------------------------------------------------------------------------------
# The original's two files
# ---------------------------------------------------------------------------------------------------

def test_prediction_results_exact(tmp_path):
    write_prediction_results(FRAMES, tmp_path / "p.txt")
    assert read(tmp_path / "p.txt") == (
        "Sequence_ID\tPrediction\tscore1\tscore2\n"
        "x_chunk_2F1\tvirus\t0.25\t0.75\n"
        "x_chunk_2R2\tothers\t0.9999999\t1e-07\n"
        "x_chunk_10F3\tvirus\t5.9604645e-08\t0.99999994\n"
        "x_chunk_10R1\tothers\t0.5\t0.5\n"
        "y_chunk_1F2\tothers\t1.0\t0.0\n"
        "y_chunk_1R3\tothers\t0.99997\t3e-05\n"
    )


def test_prediction_results_matches_str_of_float32(tmp_path):
    rng = np.random.default_rng(7)
    n = 3000
    logits = rng.normal(0, 12, n).astype(np.float32)
    p_virus = (1 / (1 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
    frames = make_frames([
        (i // 12, f"seq{i // 12}", (i % 12) // 6 + 1, calls_mod.FRAME_NAMES[i % 6], 1 - pv, pv)
        for i, pv in enumerate(p_virus)
    ])
    write_prediction_results(frames, tmp_path / "p.txt")
    expected = ["Sequence_ID\tPrediction\tscore1\tscore2"] + [
        f"{r.sequence_id}_chunk_{r.chunk}{r.frame}\t{'virus' if r.p_virus > r.p_others else 'others'}"
        f"\t{str(np.float32(r.p_others))}\t{str(np.float32(r.p_virus))}"
        for r in frames.itertuples()
    ]
    assert read(tmp_path / "p.txt") == "\n".join(expected) + "\n"


def test_empty_frames_write_headers_only(tmp_path):
    frames = make_frames([])
    write_prediction_results(frames, tmp_path / "p.txt")
    write_highestscore(frames, tmp_path / "h.csv")
    assert read(tmp_path / "p.txt") == "Sequence_ID\tPrediction\tscore1\tscore2\n"
    assert read(tmp_path / "h.csv") == "Modified_ID\tIs_Virus\n"


def test_highestscore_exact(tmp_path):
    write_highestscore(FRAMES, tmp_path / "h.csv")
    # x_chunk_10 sorts before x_chunk_2 as strings; a tie of the maxima (0.99999994 vs 0.5: no tie here,
    # but see the next test) counts as virus.
    assert read(tmp_path / "h.csv") == (
        "Modified_ID\tIs_Virus\n"
        "x_chunk_10\tTrue\n"
        "x_chunk_2\tFalse\n"
        "y_chunk_1\tFalse\n"
    )


def test_highestscore_rule_tie_and_maxima_from_different_frames(tmp_path):
    frames = make_frames([
        (0, "a", 1, "F1", 0.5, 0.5),  # tie of the maxima: >= gives True
        (0, "a", 2, "F1", 0.9, 0.1),  # maxima come from different frames:
        (0, "a", 2, "R1", 0.2, 0.8),  # max P(virus) 0.8 < max P(others) 0.9
        (1, "b", 1, "F2", 0.6, 0.4),
        (1, "b", 1, "F3", 0.4, 0.6),  # 0.6 >= 0.6
    ])
    write_highestscore(frames, tmp_path / "h.csv")
    assert read(tmp_path / "h.csv") == "Modified_ID\tIs_Virus\na_chunk_1\tTrue\na_chunk_2\tFalse\nb_chunk_1\tTrue\n"


def test_highestscore_merges_records_with_the_same_id_as_the_original():
    # Two input records both named "d": the original groups by the chunk ID string, so their chunks merge.
    frames = make_frames([
        (0, "d", 1, "F1", 0.7, 0.3),
        (1, "c", 1, "F1", 0.6, 0.4),
        (2, "d", 1, "F1", 0.2, 0.8),
    ])
    table = chunk_table(frames)
    assert table["Modified_ID"].tolist() == ["c_chunk_1", "d_chunk_1"]
    assert table["Is_Virus"].tolist() == [False, True]
    assert table["max_p_others"].tolist() == [np.float32(0.6), np.float32(0.7)]


def test_highestscore_skips_nan_like_pandas_max(tmp_path):
    # The original reads "nan" back from its text file as NaN, and pandas max skips it.
    frames = make_frames([(0, "n", 1, "F1", np.nan, np.nan), (0, "n", 1, "F2", 0.4, 0.6)])
    write_highestscore(frames, tmp_path / "h.csv")
    assert read(tmp_path / "h.csv") == "Modified_ID\tIs_Virus\nn_chunk_1\tTrue\n"


def test_highestscore_matches_the_original_pandas_code(tmp_path):
    """Run the original's own steps (read prediction_results.txt back, groupby, to_csv) on random frames."""
    rng = np.random.default_rng(3)
    rows = []
    for record in range(60):
        sid = rng.choice(["k", "k_1", "K", "ab", "a_b", "é", "z"]) + str(rng.integers(0, 3))  # repeats on purpose
        for chunk in range(1, rng.integers(1, 13)):
            for frame in rng.choice(calls_mod.FRAME_NAMES, rng.integers(1, 7), replace=False):
                pv = np.float32(rng.choice([rng.random(), 0.5, 1.0, 0.0, 1e-9]))
                rows.append((record, sid, chunk, frame, np.float32(1) - pv, pv))
    frames = make_frames(rows)
    write_prediction_results(frames, tmp_path / "prediction_results.txt")
    write_highestscore(frames, tmp_path / "ours.csv")

    df = pd.read_csv(tmp_path / "prediction_results.txt", sep="\t")
    df["Modified_ID"] = df["Sequence_ID"].str[:-2]

    def determine_virus(group):
        return pd.Series({"Is_Virus": group["score2"].max() >= group["score1"].max()})

    df = df.groupby("Modified_ID", group_keys=False)[["score1", "score2"]].apply(determine_virus).reset_index()
    df.to_csv(tmp_path / "original.csv", sep="\t", index=False)
    assert read(tmp_path / "ours.csv") == read(tmp_path / "original.csv")


def test_bad_frame_name_is_refused(tmp_path):
    frames = make_frames([(0, "a", 1, "F4", 0.5, 0.5)])
    with pytest.raises(ValueError, match="F4"):
        write_prediction_results(frames, tmp_path / "p.txt")
    assert not (tmp_path / "p.txt").exists()


# ---------------------------------------------------------------------------------------------------
# Float formatting
# ---------------------------------------------------------------------------------------------------

SPECIAL = [0.0, -0.0, 1.0, 0.5, 5.9604645e-08, 1e-45, 1e-4, 1e-5, 1e-6, 1e-7, 9.9e-7, 0.00012345, 0.99999994,
           1.0000001, 123456.7, 999999.94, 1e6, 1234567.5, 3.4028235e38, np.inf, -np.inf, np.nan, -1e-5, -0.25]


def assert_formats_like_numpy(values):
    values = np.asarray(values, dtype=np.float32)
    assert format_float32(values).to_pylist() == [str(v) for v in values]


def test_float_format_special_values():
    assert_formats_like_numpy(SPECIAL)
    assert format_float32(np.array([5.9604645e-08, 1.0, 0.0], dtype=np.float32)).to_pylist() == [
        "5.9604645e-08", "1.0", "0.0"]


def test_float_format_random_bit_patterns():
    bits = np.random.default_rng(11).integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    assert_formats_like_numpy(bits.view(np.float32))


def test_float_format_probabilities_across_magnitudes():
    rng = np.random.default_rng(12)
    p = (10.0 ** rng.uniform(-45, 0, 200_000)).astype(np.float32)  # every decade down to subnormals
    assert_formats_like_numpy(np.concatenate([p, 1 - p, rng.random(50_000, dtype=np.float32)]))


def test_float_format_every_float32_around_decade_boundaries():
    for edge in (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1.0, 1e6):
        center = int(np.float32(edge).view(np.uint32))
        assert_formats_like_numpy(np.arange(center - 3000, center + 3000, dtype=np.uint32).view(np.float32))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), min_size=1, max_size=40))
def test_float_format_property(values):
    assert_formats_like_numpy(values)


# ---------------------------------------------------------------------------------------------------
# sequences.tsv
# ---------------------------------------------------------------------------------------------------

def test_sequences_tsv_exact(tmp_path):
    write_sequences_tsv(calls_mod.with_profile(sequence_calls(FRAMES, RECORDS, 0.5), "real"), tmp_path / "s.tsv")
    score_x = repr((0.75 + float(np.float32(0.99999994))) / 2)
    assert read(tmp_path / "s.tsv") == (
        "sequence_id\tlength\tchunks\tchunks_with_frames\tframes\tscore\tviral_chunk_fraction\tcall\tprofile\n"
        f"x\t4600\t10\t2\t4\t{score_x}\t0.5\tvirus\treal\n"
        "empty\t120\t1\t0\t0\t\t\tno_frames\treal\n"
        f"y\t300\t1\t1\t2\t{float(np.float32(3e-05))!r}\t0.0\tothers\treal\n"
    )
    with pytest.raises(ValueError, match="profile"):
        calls_mod.with_profile(sequence_calls(FRAMES, RECORDS, 0.5), "toy")


# ---------------------------------------------------------------------------------------------------
# viral.fa
# ---------------------------------------------------------------------------------------------------

def records_iter():
    yield "x", "x some description", "ACGT" * 1150  # 4600 bp
    yield "gap", "gap zero-length record", ""        # not in records/calls: skipped
    yield "empty", "empty", "A" * 120
    yield "y", "y", "acgt" * 75


def test_viral_fasta_writes_virus_calls_wrapped_at_60(tmp_path):
    calls = sequence_calls(FRAMES, RECORDS, 0.5)
    assert write_viral_fasta(records_iter(), calls, tmp_path / "v.fa") == 1
    seq = "ACGT" * 1150
    lines = [seq[i:i + 60] for i in range(0, len(seq), 60)]
    assert read(tmp_path / "v.fa") == ">x some description\n" + "\n".join(lines) + "\n"
    assert all(len(line) == 60 for line in lines[:-1]) and len(lines[-1]) == 4600 % 60

    calls = sequence_calls(FRAMES, RECORDS, 0.0)  # y (lower case kept) is viral too now
    write_viral_fasta(records_iter(), calls, tmp_path / "v.fa")
    assert read(tmp_path / "v.fa").endswith(">y\n" + ("acgt" * 15 + "\n") * 5)


def test_viral_fasta_refuses_records_that_do_not_match_and_keeps_the_old_file(tmp_path):
    calls = sequence_calls(FRAMES, RECORDS, 0.5)
    (tmp_path / "v.fa").write_text("old\n")
    wrong = [("x", "x", "A" * 4600), ("y", "y", "A" * 300)]  # "empty" is missing
    with pytest.raises(ValueError, match="does not match"):
        write_viral_fasta(iter(wrong), calls, tmp_path / "v.fa")
    with pytest.raises(ValueError, match="ended after 1"):
        write_viral_fasta(iter(wrong[:1]), calls, tmp_path / "v.fa")
    assert read(tmp_path / "v.fa") == "old\n"
    assert os.listdir(tmp_path) == ["v.fa"]


# ---------------------------------------------------------------------------------------------------
# frames.parquet
# ---------------------------------------------------------------------------------------------------

def test_parquet_round_trip_without_features(tmp_path):
    write_frames_parquet(FRAMES, tmp_path / "f.parquet")
    frames, features = read_frames_parquet(tmp_path / "f.parquet")
    assert features is None
    pd.testing.assert_frame_equal(frames[list(calls_mod.FRAME_COLUMNS)], FRAMES)
    assert frames["frame_id"].tolist()[:3] == ["x_chunk_2F1", "x_chunk_2R2", "x_chunk_10F3"]
    assert frames["chunk_id"].tolist()[-1] == "y_chunk_1"


def test_parquet_round_trip_with_features(tmp_path):
    features = np.random.default_rng(0).standard_normal((len(FRAMES), 3328)).astype(np.float32)
    write_frames_parquet(FRAMES, tmp_path / "f.parquet", features)
    frames, back = read_frames_parquet(tmp_path / "f.parquet")
    pd.testing.assert_frame_equal(frames[list(calls_mod.FRAME_COLUMNS)], FRAMES)
    assert back.dtype == np.float32 and back.shape == features.shape
    assert np.array_equal(back, features)


def test_parquet_empty_and_bad_features(tmp_path):
    empty = make_frames([])
    write_frames_parquet(empty, tmp_path / "e.parquet", np.zeros((0, 4), dtype=np.float32))
    frames, features = read_frames_parquet(tmp_path / "e.parquet")
    assert len(frames) == 0 and features.shape == (0, 4)
    with pytest.raises(ValueError, match="shape"):
        write_frames_parquet(FRAMES, tmp_path / "f.parquet", np.zeros((2, 4), dtype=np.float32))
    assert not (tmp_path / "f.parquet").exists()


# ---------------------------------------------------------------------------------------------------
# run.json, atomic writes, write_outputs
# ---------------------------------------------------------------------------------------------------

def test_run_json_converts_numpy_values(tmp_path):
    write_run_json(tmp_path / "run.json", {
        "seconds": np.float32(1.5), "frames": np.int64(7), "ok": np.bool_(True), "shape": np.array([2, 3]),
        "nan": float("nan"), "path": tmp_path, "tags": ("a", "b"),
    })
    text = read(tmp_path / "run.json")
    assert text.endswith("}\n") and "\n  " in text
    assert json.loads(text) == {"seconds": 1.5, "frames": 7, "ok": True, "shape": [2, 3], "nan": None,
                                "path": str(tmp_path), "tags": ["a", "b"]}
    with pytest.raises(TypeError, match="object"):
        write_run_json(tmp_path / "bad.json", {"x": object()})
    assert sorted(os.listdir(tmp_path)) == ["run.json"]


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "t.txt"
    with outputs.atomic_open(target) as f:
        f.write("first\n")
        assert not target.exists()  # nothing under the final name until the block ends
    with pytest.raises(RuntimeError):
        with outputs.atomic_open(target) as f:
            f.write("half of the sec")
            raise RuntimeError("killed")
    assert read(target) == "first\n"
    assert os.listdir(tmp_path) == ["t.txt"]


def test_atomic_write_respects_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with outputs.atomic_open(tmp_path / "t.txt") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert (tmp_path / "t.txt").stat().st_mode & 0o777 == 0o644


def test_write_outputs_writes_every_file_and_no_temp_files(tmp_path):
    out = tmp_path / "run"
    features = np.ones((len(FRAMES), 3), dtype=np.float32)
    calls = write_outputs(out, FRAMES, RECORDS, threshold=0.5, profile="demo", records_iter=records_iter(),
                          features=features, run_info={"profile": "demo", "seconds": np.float64(2.0)})
    assert set(calls["profile"]) == {"demo"}
    assert read(out / "viral.fa").startswith(">x some description [demo profile: not biologically meaningful]\n")
    assert sorted(os.listdir(out)) == sorted([
        "prediction_results.txt", "prediction_results_highestscore.csv", "sequences.tsv", "viral.fa",
        "frames.parquet", "run.json"])
    assert calls["call"].tolist() == ["virus", "no_frames", "others"]
    info = json.loads(read(out / "run.json"))
    assert info["profile"] == "demo" and info["seconds"] == 2.0
    assert info["outputs"]["calls"] == {"virus": 1, "others": 1, "no_frames": 1}
    assert info["outputs"]["frames"] == 6 and info["outputs"]["features_saved"] is True
    assert np.array_equal(read_frames_parquet(out / "frames.parquet")[1], features)


def test_write_outputs_validates_before_writing(tmp_path):
    with pytest.raises(ValueError):
        write_outputs(tmp_path, make_frames([(9, "q", 1, "F1", 0.5, 0.5)]), RECORDS, threshold=0.5, profile="real")
    with pytest.raises(ValueError, match="one row per frame"):
        write_outputs(tmp_path, FRAMES, RECORDS, threshold=0.5, profile="real",
                      features=np.zeros((2, 3), dtype=np.float32))
    assert os.listdir(tmp_path) == []


def _random_tables(seed=7, n_records=60):
    rng = np.random.default_rng(seed)
    rec_rows, frame_rows = [], []
    for r in range(n_records):
        rid = f"rec{rng.integers(0, 10**6)}_{r}"
        n_chunks = int(rng.integers(1, 14))
        rec_rows.append((r, rid, int(n_chunks * 300 - rng.integers(0, 200)), n_chunks))
        if rng.random() < 0.15:
            continue  # a record without frames
        for c in range(1, n_chunks + 1):
            for fr in FRAME_NAMES:
                if rng.random() < 0.4:
                    p = np.float32(rng.random())
                    frame_rows.append((r, rid, c, fr, np.float32(1) - p, p))
    records = pd.DataFrame(rec_rows, columns=["record_index", "sequence_id", "length", "chunks"])
    frames = pd.DataFrame(frame_rows, columns=list(FRAME_COLUMNS))
    frames["chunk"] = frames["chunk"].astype(np.int32)
    for c in ("p_others", "p_virus"):
        frames[c] = frames[c].astype(np.float32)
    return frames, records


def test_unit_by_unit_writer_equals_whole_table_writer(tmp_path):
    frames, records = _random_tables()
    features = np.random.default_rng(1).random((len(frames), 5), dtype=np.float32)
    seqs = {rid: "ACGT" * (n // 4) + "A" * (n % 4) for rid, n in zip(records["sequence_id"], records["length"])}
    records_iter = lambda: ((rid, f"{rid} desc", seqs[rid]) for rid in records["sequence_id"])  # noqa: E731
    write_outputs(tmp_path / "whole", frames, records, threshold=0.5, profile="demo", records_iter=records_iter(),
                  features=features, run_info={"x": 1})
    writer = OutputWriter(tmp_path / "parts", threshold=0.5, profile="demo", records_iter=records_iter(), run_rows=37)
    bounds = [0, 5, 6, 23, 40, 60]
    for a, b in zip(bounds[:-1], bounds[1:]):
        part = records.iloc[a:b]
        sel = frames["record_index"].isin(part["record_index"]).to_numpy()
        writer.add(frames[sel].reset_index(drop=True), part.reset_index(drop=True), features[sel])
    summary = writer.close({"x": 1})
    for name in ("prediction_results.txt", "prediction_results_highestscore.csv", "sequences.tsv", "viral.fa"):
        assert (tmp_path / "parts" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    a, fa = read_frames_parquet(tmp_path / "whole" / "frames.parquet")
    b, fb = read_frames_parquet(tmp_path / "parts" / "frames.parquet")
    pd.testing.assert_frame_equal(a, b)
    np.testing.assert_array_equal(fa, fb)
    whole = json.loads((tmp_path / "whole" / "run.json").read_text())["outputs"]
    assert summary["calls"] == whole["calls"] and summary["frames"] == whole["frames"]
    assert not [p for p in (tmp_path / "parts").iterdir() if p.name.startswith(".")], "no temporary files left"


def test_unit_by_unit_writer_abort_leaves_nothing(tmp_path):
    frames, records = _random_tables(n_records=5)
    writer = OutputWriter(tmp_path / "o", threshold=0.5, profile="real")
    writer.add(frames, records)
    writer.abort()
    assert list((tmp_path / "o").iterdir()) == []
