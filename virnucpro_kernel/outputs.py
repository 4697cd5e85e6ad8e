"""Output files of ``predict``: the original's two tables, per-sequence calls, FASTA, parquet, run.json.

What goes in (made by the engine):

- ``frames``: one row per kept frame, in input order (record, chunk, then F1 F2 F3 R1 R2 R3), columns
  ``record_index`` (int64), ``sequence_id`` (str), ``chunk`` (int32, 1-based), ``frame`` (``F1``..``R3``),
  ``p_others`` and ``p_virus`` (float32). Optional ``features``: float32 array (n_frames, D).
- ``records``: one row per input record of length > 0, in input order: ``record_index``, ``sequence_id``,
  ``length``, ``chunks`` (number of chunks cut, kept frames or not).

What comes out (README, "Outputs of predict"; docs/interface.md):

- ``prediction_results.txt``: header ``Sequence_ID	Prediction	score1	score2``, one row per frame in input
  order; ``Prediction`` is the argmax label (``virus`` only when P(virus) > P(others): a tie goes to index 0,
  ``others``, as ``torch.max`` does); scores written as ``str(numpy.float32(x))`` writes them.
- ``prediction_results_highestscore.csv`` (tab-separated despite its name): header ``Modified_ID	Is_Virus``,
  one row per chunk ID, sorted as plain strings (``x_chunk_10`` before ``x_chunk_2``), ``True``/``False``.
  The original groups by the chunk ID string, so two records with the same ID share their chunk rows; so
  does this. The original compares the maxima after reading the scores back from its text file; the
  shortest round-trip decimal of a float32 is monotone in the value, so comparing the float32 values gives
  the same answer.
- ``sequences.tsv``: per input record: ``sequence_id, length, chunks, chunks_with_frames, frames, score,
  viral_chunk_fraction, call, profile`` (see ``calls.sequence_calls``; ``profile`` names the models: ``real``,
  ``demo`` or ``random``); scores in float64, written with Python's ``repr`` (round-trips exactly), empty when
  there is no frame.
- ``viral.fa``: records called ``virus``, header as in the input, sequence wrapped at 60 letters a line; in a
  demo run each header ends with `` [demo profile: not biologically meaningful]``.
- ``frames.parquet``: per-frame table (see :func:`write_frames_parquet`).
- ``run.json``: what the caller passes, plus output counts; numpy values made plain JSON.

Every file is written through :func:`atomic_path`: a temporary file in the same directory, then
``os.replace``, so a killed run never leaves a half-written output under the final name.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import heapq
import os
import secrets
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

PREDICTION_RESULTS = "prediction_results.txt"
HIGHESTSCORE = "prediction_results_highestscore.csv"
SEQUENCES_TSV = "sequences.tsv"
VIRAL_FASTA = "viral.fa"
FRAMES_PARQUET = "frames.parquet"
RUN_JSON = "run.json"

from .errors import VirNucProError
from .calls import (FRAME_COLUMNS, SEQUENCE_COLUMNS, _check_frames, _chunk_ids, _chunk_maxima, _frame_ids,
                    _large_strings, _text, header_mark, sequence_calls, with_profile)

FASTA_LINE_WIDTH = 60




_VIRUS, _OTHERS = _text("virus"), _text("others")
_TRUE_LINE, _FALSE_LINE = _text("True\n"), _text("False\n")
_ROWS_PER_BLOCK = 1 << 20  # frames formatted and written at a time: bounds memory on large runs


# --------------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success flush it to disk and ``os.replace`` it onto
    ``path``; on an exception remove it. For writers that want a file name (pyarrow, pandas)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # O_EXCL with mode 0o666: the umask applies as for a normal open(), unlike tempfile's 0o600.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs):
    """``open(path, mode)`` that only appears under ``path`` once the block finished without error."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open writes whole files; mode {mode!r} is not a write mode")
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
        kwargs.setdefault("newline", "\n")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


# --------------------------------------------------------------------------------------------------
# Float formatting: str(numpy.float32(x)), vectorized
# --------------------------------------------------------------------------------------------------

def format_float32(values) -> pa.LargeStringArray:
    """Each value as ``str(numpy.float32(x))`` writes it, as an Arrow large_string array.

    Arrow's float32 -> string cast gives the same shortest round-trip digits as numpy (both pick the
    shortest decimal that reads back to the same float32, the closest one on ties) but lays them out
    differently; the layout is fixed up here for the ranges where that is simple:

    - ``1e-4 <= |x| < 1e6`` (numpy: positional): Arrow is positional too; integers get ``.0`` appended;
    - ``0 < |x| < 1e-4`` (numpy: scientific): see :func:`_numpy_scientific`;
    - zero: ``0.0`` / ``-0.0``.

    Everything else (``|x| >= 1e6``, nan, inf: never a probability) goes through ``str`` one by one.
    ``tests/test_outputs.py`` holds this against ``str(numpy.float32(x))`` on random bit patterns.
    """
    a = np.ascontiguousarray(values, dtype=np.float32).ravel()
    out = pc.cast(pa.array(a), pa.large_string())
    if a.size == 0:
        return out
    with np.errstate(invalid="ignore"):  # nan compares False everywhere: it takes the slow path
        mag = np.abs(a.astype(np.float64))
        positional = (mag >= 1e-4) & (mag < 1e6)
        scientific = (mag < 1e-4) & (mag > 0)
        zero = mag == 0
        integral = positional & (a == np.floor(a))
    slow = ~(positional | scientific | zero)  # nan, inf, |x| >= 1e6

    fixes = []  # (mask, new text for the masked values, in order)
    if integral.any():
        fixes.append((integral, pc.binary_join_element_wise(out.filter(integral), _text(".0"), _text(""))))
    if scientific.any():
        fixes.append((scientific, _numpy_scientific(out.filter(scientific))))
    if zero.any():
        fixes.append((zero, pa.array(np.where(np.signbit(a[zero]), "-0.0", "0.0"), type=pa.large_string())))
    if slow.any():
        fixes.append((slow, pa.array([str(v) for v in a[slow]], type=pa.large_string())))
    if not fixes:
        return out
    fixed = np.zeros(a.size, dtype=bool)
    where = np.zeros(a.size, dtype=np.int64)
    start = 0
    for mask, text in fixes:  # the masks do not overlap
        fixed |= mask
        where[mask] = np.arange(start, start + len(text))
        start += len(text)
    replacement = pa.concat_arrays([text for _, text in fixes])
    return pc.if_else(pa.array(fixed), replacement.take(pa.array(where)), out)


def _numpy_scientific(text: pa.Array) -> pa.Array:
    """Arrow's text of values 0 < |x| < 1e-4 in numpy's scientific layout.

    Arrow writes ``5.9604645e-8`` below 1e-6, where numpy pads the exponent to two digits
    (``5.9604645e-08``), and positional ``0.0000123`` / ``0.000001`` above, where numpy writes ``1.23e-05``
    / ``1e-06``. The exponent of a positional text is read from its count of zeros, not from the value:
    the shortest digits can round up across a power of ten (float32(1e-4) < 1e-4 is ``0.0001`` in Arrow,
    ``1e-04`` in numpy).
    """
    # One-digit exponents: float32 goes down to e-45, so "e-6".."e-9" never start a two-digit exponent.
    for digit in "6789":
        text = pc.replace_substring(text, f"e-{digit}", f"e-0{digit}")
    parts = pc.extract_regex(text, r"^(?P<sign>-?)0\.(?P<zeros>0{3,5})(?P<lead>[1-9])(?P<rest>\d*)$")
    positional = pc.is_valid(parts).to_numpy(zero_copy_only=False)
    if not positional.any():
        return text
    parts = parts.filter(positional)
    sign, zeros, lead, rest = (parts.field(name) for name in ("sign", "zeros", "lead", "rest"))
    exponent = pa.array(["e-04", "e-05", "e-06"], type=pa.large_string()).take(
        pc.subtract(pc.utf8_length(zeros), 3))
    dot = pc.if_else(pc.greater(pc.utf8_length(rest), 0), _text("."), _text(""))
    return _scatter(text, positional, pc.binary_join_element_wise(sign, lead, dot, rest, exponent, _text("")))


def _scatter(out: pa.Array, mask: np.ndarray, values: pa.Array) -> pa.Array:
    """``out`` with its elements under ``mask`` replaced, in order, by ``values``."""
    where = np.zeros(len(out), dtype=np.int64)
    where[mask] = np.arange(len(values))
    return pc.if_else(pa.array(mask), values.take(pa.array(where)), out)


# --------------------------------------------------------------------------------------------------
# Frame and chunk IDs
# --------------------------------------------------------------------------------------------------









def _write_lines(f, lines: pa.Array) -> None:
    """Write a large_string array whose elements each end in a newline, straight from its data buffer."""
    if lines.null_count:
        raise ValueError("cannot write a null line")
    if len(lines) == 0:
        return
    _, offsets, data = lines.buffers()
    bounds = np.frombuffer(offsets, dtype=np.int64)[lines.offset : lines.offset + len(lines) + 1]
    f.write(memoryview(data)[int(bounds[0]) : int(bounds[-1])])


def _blocks(n: int, size: int = _ROWS_PER_BLOCK) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


# --------------------------------------------------------------------------------------------------
# The original's two tables
# --------------------------------------------------------------------------------------------------

def write_prediction_results(frames: pd.DataFrame, path: str | os.PathLike) -> None:
    """The original's ``prediction_results.txt``: one row per frame, in the order of ``frames``."""
    _check_frames(frames)
    with atomic_open(path, "wb") as f:
        f.write(PREDICTION_HEADER)
        _write_prediction_rows(f, frames)


PREDICTION_HEADER = b"Sequence_ID\tPrediction\tscore1\tscore2\n"
HIGHESTSCORE_HEADER = b"Modified_ID\tIs_Virus\n"


def _write_prediction_rows(f, frames: pd.DataFrame) -> None:
    for rows in _blocks(len(frames)):
        block = frames.iloc[rows]
        p_others = np.asarray(block["p_others"], dtype=np.float32)
        p_virus = np.asarray(block["p_virus"], dtype=np.float32)
        label = pc.if_else(pa.array(p_virus > p_others), _VIRUS, _OTHERS)
        lines = pc.binary_join_element_wise(
            _frame_ids(block), label, format_float32(p_others), format_float32(p_virus), _text("\t")
        )
        _write_lines(f, pc.binary_join_element_wise(lines, _text("\n"), _text("")))








def write_highestscore(frames: pd.DataFrame, path: str | os.PathLike) -> None:
    """The original's ``prediction_results_highestscore.csv`` (tab-separated): ``Modified_ID	Is_Virus``."""
    with atomic_open(path, "wb") as f:
        f.write(HIGHESTSCORE_HEADER)
        _write_lines(f, _highestscore_lines(frames))


def _highestscore_lines(frames: pd.DataFrame) -> pa.Array:
    """``{Modified_ID}\\t{True|False}\\n`` per chunk ID, sorted by chunk ID."""
    ids, max_others, max_virus = _chunk_maxima(frames)
    verdict = pc.if_else(pa.array(max_virus >= max_others), _TRUE_LINE, _FALSE_LINE)
    return pc.binary_join_element_wise(ids, verdict, _text("\t"))


# --------------------------------------------------------------------------------------------------
# Per-sequence calls
# --------------------------------------------------------------------------------------------------









def read_sequences_tsv(path) -> pd.DataFrame:
    """``sequences.tsv`` with IDs kept as written (``NA`` stays a name) and empty scores as NaN."""
    return pd.read_csv(path, sep="\t", dtype={"sequence_id": str, "call": str, "profile": str},
                       keep_default_na=False, na_values={"score": [""], "viral_chunk_fraction": [""]})


def write_sequences_tsv(calls: pd.DataFrame, path: str | os.PathLike) -> None:
    """``sequences.tsv``: the columns of :func:`sequence_calls`, tab-separated, NaN written empty."""
    missing = [c for c in SEQUENCE_COLUMNS if c not in calls.columns]
    if missing:
        raise ValueError(f"calls table lacks column(s) {', '.join(missing)}")
    with atomic_open(path, "w") as f:
        calls.loc[:, list(SEQUENCE_COLUMNS)].to_csv(f, sep="\t", index=False, na_rep="", lineterminator="\n")


def write_viral_fasta(
    records_iter: Iterable[tuple[str, str, str]], calls: pd.DataFrame, path: str | os.PathLike, mark: str = ""
) -> int:
    """``viral.fa``: the records whose call is ``virus``, header as in the input (``>`` + description),
    sequence as in the input (case kept) wrapped at 60 letters a line. Returns the number written.

    ``records_iter`` yields ``(sequence_id, description, sequence)`` in input order. Records with an empty
    sequence are skipped (they have no row in ``calls``); every other record is matched to the next row of
    ``calls``, and its ID and length must agree with that row.
    """
    records_iter = iter(records_iter)
    with atomic_open(path, "w") as f:
        written = _write_viral_records(f, records_iter, calls, mark)
        for sequence_id, _, sequence in records_iter:
            if len(sequence):
                raise ValueError(f"record {sequence_id!r} has no row in the calls table")
    return written


def _write_viral_records(f, records_iter: Iterator[tuple[str, str, str]], calls: pd.DataFrame, mark: str = "") -> int:
    """Consume the records of ``calls`` (and the empty ones among them) from ``records_iter``; write the viral ones."""
    ids = calls["sequence_id"].tolist()
    lengths = np.asarray(calls["length"], dtype=np.int64)
    is_virus = (calls["call"] == "virus").to_numpy()
    written = 0
    for row in range(len(ids)):
        for sequence_id, description, sequence in records_iter:
            if len(sequence):
                break
        else:
            raise ValueError(f"the records ended after {row} of the {len(ids)} rows of the calls table")
        if sequence_id != ids[row] or len(sequence) != lengths[row]:
            raise ValueError(
                f"record {sequence_id!r} (length {len(sequence)}) does not match row {row} of the calls "
                f"table ({ids[row]!r}, length {lengths[row]})"
            )
        if is_virus[row]:
            f.write(f">{description}{mark}\n")
            for start in range(0, len(sequence), FASTA_LINE_WIDTH):
                f.write(sequence[start : start + FASTA_LINE_WIDTH])
                f.write("\n")
            written += 1
    return written


# --------------------------------------------------------------------------------------------------
# frames.parquet
# --------------------------------------------------------------------------------------------------

def write_frames_parquet(frames: pd.DataFrame, path: str | os.PathLike, features: np.ndarray | None = None) -> None:
    """``frames.parquet``: columns ``record_index`` (int64), ``sequence_id``, ``chunk`` (int32), ``frame``,
    ``frame_id``, ``chunk_id`` (strings), ``p_others``, ``p_virus`` (float32), in input order; with
    ``features``, one more column ``features`` of type ``fixed_size_list<float32>[D]``: one column instead of
    D (3,328) keeps the file's metadata small and reads back as one contiguous (n, D) array without copies
    per column. D is also stored in the schema metadata (``virnucpro.features_dim``)."""
    table = _frames_table(frames, features)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def _frames_table(frames: pd.DataFrame, features: np.ndarray | None) -> pa.Table:
    _check_frames(frames)
    n = len(frames)
    chunk_ids = _chunk_ids(frames)
    columns = {
        "record_index": pa.array(np.asarray(frames["record_index"], dtype=np.int64)),
        "sequence_id": _large_strings(frames["sequence_id"]).cast(pa.string()),
        "chunk": pa.array(np.asarray(frames["chunk"], dtype=np.int32)),
        "frame": _large_strings(frames["frame"]).cast(pa.string()),
        "frame_id": _frame_ids(frames, chunk_ids).cast(pa.string()),
        "chunk_id": chunk_ids.cast(pa.string()),
        "p_others": pa.array(np.asarray(frames["p_others"], dtype=np.float32)),
        "p_virus": pa.array(np.asarray(frames["p_virus"], dtype=np.float32)),
    }
    metadata = {b"virnucpro.table": b"frames"}
    if features is not None:
        features = _check_features(features, n)
        dim = features.shape[1]
        columns["features"] = pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1)), dim)
        metadata[b"virnucpro.features_dim"] = str(dim).encode()
    return pa.table(columns).replace_schema_metadata(metadata)


def _check_features(features: np.ndarray, n_frames: int) -> np.ndarray:
    features = np.ascontiguousarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[0] != n_frames:
        raise ValueError(f"features must have shape ({n_frames}, D), one row per frame, not {features.shape}")
    return features


def frames_file(out: str | os.PathLike) -> Path:
    """The ``frames.parquet`` of the run in ``out``; for a folder written by ``virnucpro call --out``, the one of
    the run it was called from (named in its ``run.json``). A missing file: one line naming both folders."""
    out = Path(out)
    own = out / FRAMES_PARQUET
    if own.is_file():
        return own
    try:
        source = json.loads((out / RUN_JSON).read_text(encoding="utf-8")).get("called_from")
    except (OSError, ValueError):
        source = None
    if source and (Path(source) / FRAMES_PARQUET).is_file():
        return Path(source) / FRAMES_PARQUET
    where = f" nor in {source}, the run it was called from" if source else ""
    raise VirNucProError(f"{out}: no {FRAMES_PARQUET} here{where} (the per-frame scores of a finished run)")


def read_frames_parquet(path: str | os.PathLike) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Read ``frames.parquet`` back: (frames with the columns listed in :func:`write_frames_parquet`,
    features as a float32 (n, D) array, or None when the file has none)."""
    table = pq.read_table(path)
    features = None
    if "features" in table.column_names:
        column = table.column("features")
        dim = column.type.list_size
        flat = [chunk.flatten().to_numpy(zero_copy_only=False) for chunk in column.chunks]
        values = np.concatenate(flat) if flat else np.empty(0, dtype=np.float32)
        features = values.astype(np.float32, copy=False).reshape(len(column), dim)
        table = table.drop_columns(["features"])
    frames = table.to_pandas()
    return frames, features


# --------------------------------------------------------------------------------------------------
# run.json
# --------------------------------------------------------------------------------------------------

def plain(value, *, strict: bool = True):
    """``value`` as plain JSON types: dicts (keys as strings), lists (tuples; sets sorted), numpy scalars and
    arrays, paths as strings, dates in ISO form; NaN and infinities as null. Anything else: with ``strict``
    (``run.json``: it holds only what the run meant to write) a TypeError; without (tables of results, as in
    ``evaluation.json``) pandas' missing values as null and the rest as its ``str``."""
    if isinstance(value, dict):
        return {str(k): plain(v, strict=strict) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [plain(v, strict=strict) for v in items]
    if isinstance(value, np.ndarray):
        return plain(value.tolist(), strict=strict)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if not strict and (value is pd.NA or value is pd.NaT):
        return None
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if strict:
        raise TypeError(f"run.json cannot hold a value of type {type(value).__name__}: {value!r}")
    return str(value)


def write_run_json(path: str | os.PathLike, info: dict) -> None:
    """``run.json``: ``info`` as indented JSON (numpy values made plain, NaN/inf written as null)."""
    text = json.dumps(plain(info), indent=2, allow_nan=False) + "\n"
    with atomic_open(path, "w") as f:
        f.write(text)


# --------------------------------------------------------------------------------------------------
# Everything at once
# --------------------------------------------------------------------------------------------------

def write_outputs(
    out_dir: str | os.PathLike,
    frames: pd.DataFrame,
    records: pd.DataFrame,
    *,
    threshold: float,
    profile: str,
    records_iter: Iterable[tuple[str, str, str]] | None = None,
    features: np.ndarray | None = None,
    run_info: dict | None = None,
) -> pd.DataFrame:
    """Write every output of ``predict`` from whole tables into ``out_dir`` (an :class:`OutputWriter` given one
    part) and return the per-sequence calls. The tables are checked before anything is written. ``viral.fa``
    needs ``records_iter`` and is skipped without it; ``run.json`` is written last."""
    calls = with_profile(sequence_calls(frames, records, threshold), profile)
    if features is not None:
        _check_features(features, len(frames))
    writer = OutputWriter(out_dir, threshold=threshold, profile=profile, records_iter=records_iter)
    try:
        writer.add(frames, records, features)
    except BaseException:
        writer.abort()
        raise
    writer.close(run_info)
    return calls


# --------------------------------------------------------------------------------------------------
# Unit by unit: the same files with one work unit in memory at a time
# --------------------------------------------------------------------------------------------------

class OutputWriter:
    """Writes the files of :func:`write_outputs` from consecutive parts of the input (``predict``'s work units),
    holding one part in memory at a time. Parts must hold whole records, in input order, and record IDs must be
    distinct across parts (the input validation guarantees both), so every chunk ID is in one part.

    The highest-score table is sorted by chunk ID over the whole input: each part's rows are sorted and
    collected into sorted runs on disk (``run_rows`` rows each), merged at :meth:`close`. The result is
    byte-identical to :func:`write_outputs` on the concatenated tables (a test holds them together).

        writer = OutputWriter(out_dir, threshold=0.5, profile="real", records_iter=records)
        for frames, records, features in parts:
            writer.add(frames, records, features)
        writer.close(run_info)
    """

    def __init__(self, out_dir, *, threshold: float, profile: str, records_iter=None, run_rows: int = 1 << 20):
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.threshold = threshold
        self.profile = profile
        self.mark = header_mark(profile)
        self.records_iter = iter(records_iter) if records_iter is not None else None
        self.run_rows = run_rows
        self._stack = contextlib.ExitStack()
        self._tmp = {name: self._stack.enter_context(atomic_path(self.out / name))
                     for name in (PREDICTION_RESULTS, HIGHESTSCORE, SEQUENCES_TSV, FRAMES_PARQUET)
                     + ((VIRAL_FASTA,) if records_iter is not None else ())}
        self._pred = self._stack.enter_context(open(self._tmp[PREDICTION_RESULTS], "wb"))
        self._pred.write(PREDICTION_HEADER)
        self._seqs = self._stack.enter_context(open(self._tmp[SEQUENCES_TSV], "w", newline="", encoding="utf-8"))
        self._viral = (self._stack.enter_context(open(self._tmp[VIRAL_FASTA], "w", encoding="utf-8"))
                       if records_iter is not None else None)
        self._runs_dir = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix=".chunk-runs-",
                                                                                     dir=self.out)))
        self._runs: list[Path] = []
        self._pending: list[pa.Array] = []
        self._pending_rows = 0
        self._parquet = None
        self._schema = None
        self._first = True
        self.counts = {"records": 0, "frames": 0, "chunks_with_frames": 0, "viral_fasta_records": 0,
                       "calls": {"virus": 0, "others": 0, "no_frames": 0}}
        self.features_saved = False

    def add(self, frames: pd.DataFrame, records: pd.DataFrame, features: np.ndarray | None = None) -> pd.DataFrame:
        """Write one part; returns its per-sequence calls."""
        calls = with_profile(sequence_calls(frames, records, self.threshold), self.profile)
        _write_prediction_rows(self._pred, frames)
        calls.loc[:, list(SEQUENCE_COLUMNS)].to_csv(self._seqs, sep="\t", index=False, na_rep="",
                                                     lineterminator="\n", header=self._first)
        self._first = False
        if self._viral is not None:
            self.counts["viral_fasta_records"] += _write_viral_records(self._viral, self.records_iter, calls,
                                                                       self.mark)
        if len(frames):
            lines = _highestscore_lines(frames)
            self._pending.append(lines)
            self._pending_rows += len(lines)
            if self._pending_rows >= self.run_rows:
                self._spill()
            table = _frames_table(frames, features)
            if self._parquet is None:
                self._schema = table.schema
                self._parquet = pq.ParquetWriter(self._tmp[FRAMES_PARQUET], table.schema, compression="zstd")
            self._parquet.write_table(table.cast(self._schema))
            self.features_saved |= features is not None
        self.counts["records"] += len(calls)
        self.counts["frames"] += len(frames)
        self.counts["chunks_with_frames"] += int(calls["chunks_with_frames"].sum())
        for name, k in calls["call"].value_counts().items():
            self.counts["calls"][name] += int(k)
        return calls

    def _spill(self):
        """Sort the pending chunk rows and write them as one sorted run."""
        if not self._pending:
            return
        lines = pa.concat_arrays(self._pending)
        ids = pc.replace_substring_regex(lines, r"\t(True|False)\n$", "")  # sort by the chunk ID
        lines = lines.take(pc.sort_indices(ids))
        path = self._runs_dir / f"run_{len(self._runs):06d}.txt"
        with open(path, "wb") as f:
            _write_lines(f, lines)
        self._runs.append(path)
        self._pending, self._pending_rows = [], 0

    def close(self, run_info: dict | None = None) -> dict:
        """Finish every file, move them into place and write ``run.json`` last. Returns the counts."""
        try:
            if self._viral is not None:
                for sequence_id, _, sequence in self.records_iter:
                    if len(sequence):
                        raise ValueError(f"record {sequence_id!r} has no row in the calls table")
            self._spill()
            with open(self._tmp[HIGHESTSCORE], "wb") as f:
                f.write(HIGHESTSCORE_HEADER)
                handles = [self._stack.enter_context(open(p, "rb")) for p in self._runs]
                f.writelines(heapq.merge(*handles, key=lambda line: line.rsplit(b"\t", 1)[0]))
            if self._parquet is None:  # no frame at all: an empty table
                pq.write_table(_frames_table(pd.DataFrame({c: [] for c in FRAME_COLUMNS}), None),
                               self._tmp[FRAMES_PARQUET], compression="zstd")
            else:
                self._parquet.close()
        except BaseException as exc:
            self._stack.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._stack.close()  # closes the files and moves them into place
        files = [PREDICTION_RESULTS, HIGHESTSCORE, SEQUENCES_TSV] + ([VIRAL_FASTA] if self._viral else []) + \
            [FRAMES_PARQUET, RUN_JSON]
        info = dict(run_info or {})
        info.setdefault("outputs", {"files": files, "threshold": self.threshold, **self.counts,
                                    "viral_fasta_records": self.counts["viral_fasta_records"]
                                    if self._viral is not None else None,
                                    "features_saved": self.features_saved})
        write_run_json(self.out / RUN_JSON, info)
        return info["outputs"]

    def abort(self):
        """Remove every temporary file; nothing is moved into place."""
        err = RuntimeError("aborted")
        self._stack.__exit__(type(err), err, None)
