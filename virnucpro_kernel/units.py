"""Work-unit files: one finished unit of a ``predict`` run, stored atomically, read back for the merge.

A unit's file ``OUT/.work/units/unit_NNNNNNNN.npz`` holds its records (input index, ID, length, chunks), its
frames (record, chunk, frame code), their probabilities, token counts and, with ``--save-features``, the
features. It is written to a temporary name, flushed to disk and renamed, so it exists only complete.
``OUT/.work/manifest.json`` records what the units were made from (input SHA-256, chunk size, unit size,
models, precision); ``--resume`` continues only a run with the same manifest, keeps the readable unit files
and recomputes the rest (a file that cannot be read back, e.g. cut short by a full disk, is removed with a
warning and computed again).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np

from .errors import VirNucProError

WORK_DIR = ".work"
UNIT_KEYS = ("record_index", "length", "chunks", "ids", "id_len", "frame_record", "frame_chunk", "frame_code",
             "probs", "counts")


def unit_path(work: Path, unit: int) -> Path:
    return work / "units" / f"unit_{unit:08d}.npz"


def write_unit(work: Path, result) -> Path:
    """Store a finished unit (an ``engine.UnitResult``) atomically: the file exists only complete."""
    from .fasta import gather

    result.wait()
    recs = result.records
    ids = gather(recs.hbuf, recs.hdr_start, recs.id_len)
    frames = result.frames
    arrays = dict(
        record_index=recs.record_index, length=recs.seq_len, chunks=result.chunks_per_record,
        ids=ids, id_len=recs.id_len,
        frame_record=recs.record_index[frames.record] if len(frames) else np.zeros(0, np.int64),
        frame_chunk=frames.chunk, frame_code=frames.frame, probs=result.probs,
        counts=np.array([result.esm_tokens, result.dna_tokens], dtype=np.int64),
    )
    if result.features is not None:
        arrays["features"] = result.features
    dst = unit_path(work, result.unit)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dst)  # the unit's name appears only on a complete file
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dst


def read_unit(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def readable(path: Path) -> bool:
    """Whether a unit file reads back whole (every array present, the zip's checksums right)."""
    try:
        with zipfile.ZipFile(path) as zf:
            if zf.testzip() is not None:
                return False
        unit = read_unit(path)
    except Exception:  # noqa: BLE001 - any failure to read means: compute it again
        return False
    return all(k in unit for k in UNIT_KEYS)


def unit_ids(unit: dict) -> list[str]:
    raw = unit["ids"].tobytes()
    off = np.concatenate(([0], np.cumsum(unit["id_len"]))).tolist()
    return [raw[off[i]:off[i + 1]].decode("utf-8", "replace") for i in range(len(off) - 1)]


def check_resume(out: Path, manifest: dict) -> None:
    """Refuse to resume work made from another input, chunk size, unit size, models or precision."""
    old = out / WORK_DIR / "manifest.json"
    if not old.is_file():
        return
    try:
        previous = json.loads(old.read_text())
    except ValueError:
        raise VirNucProError(f"cannot resume in {out}: {old} is not readable (use --force to start over)") from None
    diffs = []
    for key, value in manifest.items():
        old_value = previous.get(key)
        if key == "input" and isinstance(value, dict) and isinstance(old_value, dict):
            if (value.get("sha256"), value.get("size")) != (old_value.get("sha256"), old_value.get("size")):
                diffs.append("the input (its SHA-256)")  # the content counts, not where the file is now
        elif old_value != value:
            diffs.append(key.replace("_", " "))
    if diffs:
        raise VirNucProError(f"cannot resume in {out}: {', '.join(diffs)} not as in the interrupted run "
                             "(use --force to start over)")


def prepare_work_dir(out: Path, manifest: dict, resume: bool) -> int:
    """Create ``OUT/.work`` (or keep an interrupted run's, with ``resume``). Returns the finished units kept."""
    work = out / WORK_DIR
    # temporary files of a writer that was killed: never complete, never needed
    for stale in [*out.glob(".*.tmp"), *out.glob(".chunk-runs-*"), *(work / "units").glob(".*.tmp")]:
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    if resume and (work / "manifest.json").is_file():
        check_resume(out, manifest)
        kept = 0
        for path in sorted((work / "units").glob("unit_*.npz")):
            if readable(path):
                kept += 1
            else:
                warnings.warn(f"{path}: unreadable (cut short?): removed, its unit is computed again", stacklevel=2)
                path.unlink()
        return kept
    if work.exists():
        shutil.rmtree(work)
    (work / "units").mkdir(parents=True)
    tmp = work / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, work / "manifest.json")
    return 0
