"""Calls: per-frame scores -> per-chunk maxima -> per-sequence calls, at any threshold.

The classifier gives each frame ``[P(others), P(virus)]``. A chunk's score is its highest frame P(virus); the
original's ``Is_Virus`` for a chunk is ``max P(virus) >= max P(others)`` over its frames. A sequence's
``score`` is the mean of its chunk scores (over the chunks that have frames); its ``call`` is ``virus`` at
``score >= threshold``, ``others`` below, ``no_frames`` when no chunk has a frame. The score does not depend
on the threshold, so a finished run is called again at another threshold from its ``frames.parquet`` alone
(:func:`recall`, and :func:`write_calls` behind ``virnucpro call``).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .errors import VirNucProError

FRAME_COLUMNS = ("record_index", "sequence_id", "chunk", "frame", "p_others", "p_virus")
SEQUENCE_COLUMNS = (
    "sequence_id", "length", "chunks", "chunks_with_frames", "frames", "score", "viral_chunk_fraction", "call",
    "profile",
)
FRAME_NAMES = ("F1", "F2", "F3", "R1", "R2", "R3")
PROFILES = ("real", "demo", "random")
DEMO_HEADER_MARK = " [demo profile: not biologically meaningful]"


def header_mark(profile: str) -> str:
    """What ``viral.fa`` headers end with in a run of ``profile``: a demo run says so where users read it."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, not {profile!r}")
    return DEMO_HEADER_MARK if profile == "demo" else ""


def with_profile(calls: pd.DataFrame, profile: str) -> pd.DataFrame:
    """``calls`` with the last column ``profile`` (the models' profile, the same on every row)."""
    header_mark(profile)
    calls = calls.copy()
    calls["profile"] = pd.Series([profile] * len(calls), dtype="str", index=calls.index)
    return calls


def _text(s: str) -> pa.Scalar:
    """An Arrow large_string scalar (Arrow string kernels want one string type throughout)."""
    return pa.scalar(s, pa.large_string())


def _check_frames(frames: pd.DataFrame) -> None:
    missing = [c for c in FRAME_COLUMNS if c not in frames.columns]
    if missing:
        raise ValueError(f"frames table lacks column(s) {', '.join(missing)}")
    bad = ~frames["frame"].isin(FRAME_NAMES)
    if bad.any():  # the original cuts the frame name off the frame ID by its length: two characters
        raise ValueError(f"frame name {frames['frame'][bad].iloc[0]!r} is not one of {', '.join(FRAME_NAMES)}")


def _large_strings(column) -> pa.Array:
    arr = pa.array(column, from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.cast(pa.large_string())


def _chunk_ids(frames: pd.DataFrame) -> pa.Array:
    """``{sequence_id}_chunk_{chunk}``: the original's ``Modified_ID``."""
    chunk = pa.array(np.asarray(frames["chunk"], dtype=np.int64)).cast(pa.large_string())
    return pc.binary_join_element_wise(_large_strings(frames["sequence_id"]), _text("_chunk_"), chunk, _text(""))


def _frame_ids(frames: pd.DataFrame, chunk_ids: pa.Array | None = None) -> pa.Array:
    """``{sequence_id}_chunk_{chunk}{frame}``: the original's ``Sequence_ID``."""
    if chunk_ids is None:
        chunk_ids = _chunk_ids(frames)
    return pc.binary_join_element_wise(chunk_ids, _large_strings(frames["frame"]), _text(""))


def chunk_table(frames: pd.DataFrame) -> pd.DataFrame:
    """The original's ``prediction_results_highestscore`` as a table: one row per chunk ID (``Modified_ID``),
    sorted as strings, with ``max_p_others``, ``max_p_virus`` (float32) and ``Is_Virus`` = max P(virus) >=
    max P(others). NaN scores are skipped in the maxima, as pandas ``max`` does in the original."""
    ids, max_others, max_virus = _chunk_maxima(frames)
    return pd.DataFrame({
        "Modified_ID": pd.Series(ids.to_pylist(), dtype="str"),
        "max_p_others": max_others,
        "max_p_virus": max_virus,
        "Is_Virus": max_virus >= max_others,
    })


def _chunk_maxima(frames: pd.DataFrame) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """(sorted distinct chunk IDs, max P(others), max P(virus)) per chunk ID."""
    _check_frames(frames)
    p_others = np.asarray(frames["p_others"], dtype=np.float32)
    p_virus = np.asarray(frames["p_virus"], dtype=np.float32)
    ids = _chunk_ids(frames)
    if len(ids) == 0:
        return ids, p_others, p_virus
    # Frames of a chunk are adjacent in input order: reduce the runs first, then sort the (fewer) chunk IDs.
    # The sort also merges runs that share an ID (records with the same ID), as the original's groupby does.
    run = _run_starts_strings(ids)
    ids = ids.take(pa.array(run))
    run_others = np.fmax.reduceat(p_others, run)
    run_virus = np.fmax.reduceat(p_virus, run)
    order = pc.sort_indices(ids).to_numpy()  # byte order of UTF-8 = code point order = Python's str order
    ids = ids.take(pa.array(order))
    group = _run_starts_strings(ids)
    return (
        ids.take(pa.array(group)),
        np.fmax.reduceat(run_others[order], group),
        np.fmax.reduceat(run_virus[order], group),
    )


def _run_starts_strings(ids: pa.Array) -> np.ndarray:
    """Start index of each run of equal adjacent strings (ids has at least one element)."""
    if len(ids) == 1:
        return np.zeros(1, dtype=np.int64)
    differs = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_numpy(zero_copy_only=False)
    return np.concatenate(([0], np.flatnonzero(differs) + 1)).astype(np.int64)


def sequence_calls(frames: pd.DataFrame, records: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
    """One row per input record (in the order of ``records``) for ``sequences.tsv``.

    A chunk's score is its highest frame P(virus); ``score`` is the mean of the chunk scores over the
    record's chunks that have frames; ``viral_chunk_fraction`` is the share of those chunks with
    max P(virus) >= max P(others) (the original's ``Is_Virus``, taken per record and chunk); ``call`` is
    ``virus`` when ``score >= threshold``, ``others`` below it, ``no_frames`` when no chunk has a frame
    (``score`` and ``viral_chunk_fraction`` NaN then). Scores are float64 means of the float32
    probabilities, and ``threshold`` is compared against those float64 values.
    """
    missing = [c for c in ("record_index", "sequence_id", "length", "chunks") if c not in records.columns]
    if missing:
        raise ValueError(f"records table lacks column(s) {', '.join(missing)}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.number)) or math.isnan(threshold):
        raise ValueError(f"threshold must be a number, not {threshold!r}")
    record_index = np.asarray(records["record_index"], dtype=np.int64)
    if (np.diff(record_index) <= 0).any():
        raise ValueError("records must be in input order, with distinct record_index values")
    n_records = len(records)
    record_chunks = np.asarray(records["chunks"], dtype=np.int64)

    chunks = _chunk_scores(frames)
    pos = np.searchsorted(record_index, chunks["record_index"])  # each chunk's row in records
    known = pos < n_records
    known[known] = record_index[pos[known]] == chunks["record_index"][known]
    if not known.all():
        raise ValueError(
            f"frames refer to record_index {chunks['record_index'][~known][0]}, which is not in the records table"
        )
    bad = (chunks["chunk"] < 1) | (chunks["chunk"] > record_chunks[pos])
    bad |= ~pc.equal(chunks["sequence_id"], _large_strings(records["sequence_id"]).take(pa.array(pos))).to_numpy(
        zero_copy_only=False)
    if bad.any():
        i = np.flatnonzero(bad)[0]
        raise ValueError(
            f"frames of {chunks['sequence_id'][i].as_py()!r} (record_index {chunks['record_index'][i]}, chunk "
            f"{chunks['chunk'][i]}) do not match the records table: {records['sequence_id'].iloc[pos[i]]!r} "
            f"with {record_chunks[pos[i]]} chunk(s)"
        )

    chunks_with_frames = np.bincount(pos, minlength=n_records)
    frame_counts = np.bincount(pos, weights=chunks["frames"], minlength=n_records).astype(np.int64)
    score_sum = np.bincount(pos, weights=chunks["max_p_virus"].astype(np.float64), minlength=n_records)
    viral_chunks = np.bincount(pos, weights=chunks["is_virus"], minlength=n_records)
    has_frames = chunks_with_frames > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.where(has_frames, score_sum / chunks_with_frames, np.nan)
        fraction = np.where(has_frames, viral_chunks / chunks_with_frames, np.nan)
    call = np.where(has_frames, np.where(score >= threshold, "virus", "others"), "no_frames")
    return pd.DataFrame({
        "sequence_id": pd.Series(np.asarray(records["sequence_id"], dtype=object), dtype="str"),
        "length": np.asarray(records["length"], dtype=np.int64),
        "chunks": record_chunks,
        "chunks_with_frames": chunks_with_frames.astype(np.int64),
        "frames": frame_counts,
        "score": score,
        "viral_chunk_fraction": fraction,
        "call": pd.Series(call, dtype="str"),
    })


def _chunk_scores(frames: pd.DataFrame) -> dict:
    """Per (record_index, chunk) with frames, sorted: the record's index, sequence ID (Arrow), chunk number,
    number of frames, max P(virus), and Is_Virus (max P(virus) >= max P(others), NaN skipped)."""
    _check_frames(frames)
    record = np.asarray(frames["record_index"], dtype=np.int64)
    chunk = np.asarray(frames["chunk"], dtype=np.int64)
    p_others = np.asarray(frames["p_others"], dtype=np.float32)
    p_virus = np.asarray(frames["p_virus"], dtype=np.float32)
    order = None
    if not _sorted_pairs(record, chunk):  # input order is sorted already; anything else is sorted here
        order = np.lexsort((chunk, record))
        record, chunk, p_others, p_virus = record[order], chunk[order], p_others[order], p_virus[order]
    if len(record) == 0:
        starts = np.zeros(0, dtype=np.int64)
        max_virus = max_others = np.zeros(0, dtype=np.float32)
    else:
        starts = _run_starts_pairs(record, chunk)
        max_virus = np.fmax.reduceat(p_virus, starts)
        max_others = np.fmax.reduceat(p_others, starts)
    first_frame = starts if order is None else order[starts]
    return {
        "record_index": record[starts],
        "sequence_id": _large_strings(frames["sequence_id"]).take(pa.array(first_frame)),
        "chunk": chunk[starts],
        "frames": np.diff(np.append(starts, len(record))),
        "max_p_virus": max_virus,
        "is_virus": max_virus >= max_others,
    }


def _sorted_pairs(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether (a, b) pairs are in non-decreasing lexicographic order."""
    if len(a) < 2:
        return True
    da = np.diff(a)
    return bool(((da > 0) | ((da == 0) & (np.diff(b) >= 0))).all())


def _run_starts_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    change = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return np.concatenate(([0], np.flatnonzero(change) + 1)).astype(np.int64)


# --------------------------------------------------------------------------------------------------
# Calling a finished run again
# --------------------------------------------------------------------------------------------------

def recall(frames: pd.DataFrame, sequences: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """A run's per-sequence table (``sequences.tsv``) at another ``threshold``, from its per-frame scores."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.number)) \
            or not 0.0 <= float(threshold) <= 1.0:
        raise VirNucProError(f"threshold must be a number between 0 and 1, not {threshold!r}")
    row = pd.Series(np.arange(len(sequences), dtype=np.int64), index=sequences["sequence_id"].astype(str))
    records = pd.DataFrame({"record_index": row.to_numpy(), "sequence_id": sequences["sequence_id"].astype(str),
                            "length": sequences["length"], "chunks": sequences["chunks"]})
    frames = frames.assign(record_index=row.reindex(frames["sequence_id"].astype(str)).to_numpy())
    if frames["record_index"].isna().any():
        raise VirNucProError("frames.parquet names sequences that sequences.tsv does not list")
    frames["record_index"] = frames["record_index"].astype(np.int64)
    calls = sequence_calls(frames, records, float(threshold))
    profile = str(sequences["profile"].iloc[0]) if "profile" in sequences and len(sequences) else "real"
    return with_profile(calls, profile)


def write_calls(run_dir: Path, *, threshold: float, out: Path | None = None) -> Path:
    """``sequences.tsv`` and ``viral.fa`` of the finished run in ``run_dir`` at ``threshold`` (``virnucpro call``),
    written into ``run_dir`` under its lock, or into ``out`` (a new or empty folder) with a copy of ``run.json``.
    The input is read again for ``viral.fa`` and must still have the SHA-256 recorded in ``run.json``. Returns
    the folder written."""
    from .fasta import scan
    from .outputs import (RUN_JSON, SEQUENCES_TSV, VIRAL_FASTA, frames_file, read_frames_parquet,
                          read_sequences_tsv, write_run_json, write_sequences_tsv, write_viral_fasta)
    from .prediction import iter_records
    from .rundir import RunLock, folder_state

    run_dir = Path(run_dir)
    if not (run_dir / RUN_JSON).is_file():
        raise VirNucProError(f"{run_dir}: no finished run (no run.json)")
    info = json.loads((run_dir / RUN_JSON).read_text())
    source = info.get("input") or {}
    path = Path(source.get("path", ""))
    if not path.is_file():
        raise VirNucProError(f"{run_dir}: its input {path} is gone; viral.fa needs the sequences (put the file "
                             "back where run.json says)")
    if "sha256" not in source:
        raise VirNucProError(f"{run_dir}: run.json records no SHA-256 of the input (a run of an older version)")
    sequences = read_sequences_tsv(run_dir / SEQUENCES_TSV)
    frames_path = frames_file(run_dir)
    frames, _ = read_frames_parquet(frames_path)
    calls = recall(frames, sequences, threshold)
    target = run_dir if out is None else Path(out)
    if out is not None:
        state = folder_state(target)
        if not state.empty:
            raise VirNucProError(f"--out {target} already holds files; give a new or empty folder")
        target.mkdir(parents=True, exist_ok=True)
    with RunLock(target, command="call"):
        if scan(path).sha256 != source["sha256"]:
            raise VirNucProError(f"{path}: the input changed since the run (its SHA-256 is not the one in "
                                 f"{run_dir / RUN_JSON}); viral.fa would not match the calls")
        profile = str(calls["profile"].iloc[0]) if len(calls) else info["profile"]["name"]
        write_sequences_tsv(calls, target / SEQUENCES_TSV)
        n_viral = write_viral_fasta(iter_records(path), calls, target / VIRAL_FASTA, header_mark(profile))
        counts = calls["call"].value_counts()
        info.setdefault("outputs", {})
        info["outputs"].update(threshold=float(threshold), viral_fasta_records=n_viral,
                               calls={k: int(counts.get(k, 0)) for k in ("virus", "others", "no_frames")})
        info.setdefault("calls", []).append({"threshold": float(threshold), "written_to": str(target),
                                             "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
        if out is not None:
            info["called_from"] = str(frames_path.parent.resolve())  # where frames.parquet is
        write_run_json(target / RUN_JSON, info)
    return target
