"""Work-unit files (``units``): atomic, read back whole or not at all, and the resume manifest check."""

import json

import numpy as np
import pytest

from virnucpro_kernel.errors import VirNucProError
from virnucpro_kernel.units import check_resume, prepare_work_dir, readable, unit_path

MANIFEST = {"input": {"path": "/a/in.fa", "size": 10, "sha256": "ab" * 32}, "chunk_size": 300, "unit_records": 2,
            "profile": {"name": "demo"}, "dtype": "fp32", "save_features": False, "dedup": True}


def _unit(path, **arrays):
    path.parent.mkdir(parents=True, exist_ok=True)
    base = {k: np.zeros(1) for k in ("record_index", "length", "chunks", "ids", "id_len", "frame_record",
                                      "frame_chunk", "frame_code", "probs", "counts")}
    base.update(arrays)
    with open(path, "wb") as fh:
        np.savez(fh, **base)


def test_unit_files_read_back_whole_or_count_as_missing(tmp_path):
    good, cut, partial = (unit_path(tmp_path, u) for u in (0, 1, 2))
    _unit(good)
    _unit(cut)
    cut.write_bytes(cut.read_bytes()[:-40])
    partial.parent.mkdir(parents=True, exist_ok=True)
    with open(partial, "wb") as fh:
        np.savez(fh, probs=np.zeros((2, 2)))  # a file of another layout
    assert readable(good) and not readable(cut) and not readable(partial)
    assert not readable(tmp_path / "units" / "absent.npz")


def test_resume_keeps_readable_units_and_removes_the_rest(tmp_path):
    out = tmp_path
    work = out / ".work"
    (work / "units").mkdir(parents=True)
    (work / "manifest.json").write_text(json.dumps(MANIFEST))
    _unit(unit_path(work, 0))
    _unit(unit_path(work, 1))
    unit_path(work, 1).write_bytes(b"PK\x03\x04 cut short")
    (work / "units" / ".unit_00000002.npz.123.tmp").write_bytes(b"a writer killed midway")
    with pytest.warns(UserWarning, match="unreadable"):
        assert prepare_work_dir(out, MANIFEST, resume=True) == 1
    assert sorted(p.name for p in (work / "units").iterdir()) == ["unit_00000000.npz"]


def test_resume_compares_content_not_place(tmp_path):
    (tmp_path / ".work").mkdir()
    (tmp_path / ".work" / "manifest.json").write_text(json.dumps(MANIFEST))
    moved = {**MANIFEST, "input": {**MANIFEST["input"], "path": "/elsewhere/in.fa"}}
    check_resume(tmp_path, moved)  # the same bytes somewhere else: fine
    edited = {**MANIFEST, "input": {**MANIFEST["input"], "sha256": "cd" * 32}}
    with pytest.raises(VirNucProError, match="SHA-256"):
        check_resume(tmp_path, edited)
    with pytest.raises(VirNucProError, match="chunk size, dtype"):
        check_resume(tmp_path, {**MANIFEST, "chunk_size": 500, "dtype": "bf16"})


def test_a_fresh_start_removes_old_units(tmp_path):
    work = tmp_path / ".work"
    _unit(unit_path(work, 15))
    assert prepare_work_dir(tmp_path, MANIFEST, resume=False) == 0
    assert list((work / "units").iterdir()) == []
    assert json.loads((work / "manifest.json").read_text()) == MANIFEST


def test_a_unit_write_that_fails_midway_leaves_no_unit_file(tmp_path, monkeypatch):
    """A disk that fills up while a unit is written: no ``unit_*.npz`` appears (a resume would keep it), and
    no temporary file stays behind; the same unit written again is whole."""
    import virnucpro_kernel.units as units
    from conftest import EXAMPLES
    from virnucpro_kernel.engine import EngineOptions, FramePipeline
    from virnucpro_kernel.fasta import RecordBlock, iter_record_blocks
    from virnucpro_kernel.models.profiles import resolve_profile

    pipe = FramePipeline(resolve_profile("demo", 300), EngineOptions(chunk_size=300))
    records = RecordBlock.concat(list(iter_record_blocks(EXAMPLES / "refseq_viral_frames_298bp.fa")))
    result = pipe.run(pipe.prepare(3, records))
    real_savez = np.savez

    def savez_then_disk_full(fh, **arrays):
        real_savez(fh, **arrays)
        fh.truncate(fh.tell() // 2)  # half the file on disk
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(units.np, "savez", savez_then_disk_full)
    with pytest.raises(OSError, match="No space"):
        units.write_unit(tmp_path, result)
    assert not unit_path(tmp_path, 3).exists()
    assert list((tmp_path / "units").iterdir()) == []
    monkeypatch.setattr(units.np, "savez", real_savez)
    written = units.write_unit(tmp_path, result)
    assert written == unit_path(tmp_path, 3) and readable(written)
    np.testing.assert_array_equal(units.read_unit(written)["probs"], result.probs)
