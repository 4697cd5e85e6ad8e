"""Records -> chunks -> six frames -> the original's three files, with the original's quirks (README,
"Behaviour kept from the original").

Two paths share one behaviour:

* the vectorized path (:func:`chunk_block`, :func:`frames_of_chunks`, :func:`prepare`) works on whole
  :class:`~virnucpro_kernel.fasta.RecordBlock` s as NumPy byte arrays: a block is chunked, translated in six
  frames and written out without a Python loop per record, codon or output line;
* the reference path (:func:`chunk_sequence_reference`, :func:`frames_reference`, :func:`prepare_reference`)
  is the original's algorithm written plainly, one codon at a time, reading FASTA with Biopython. Tests
  hold the two against each other and against the original's golden files.

Reading, validating and writing FASTA is :mod:`virnucpro_kernel.fasta`'s job.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import VirNucProError
from .fasta import (DEFAULT_BLOCK_BYTES, PAD, SRC_PAD, RecordBlock, RecordValidator, empty_records_warning,
                    entry_headers, fasta_text, gather, iter_record_blocks, nucleotide_codes, offsets, open_input,
                    padded)

CHUNK_SIZES = (300, 500)
FRAME_LABELS = ("F1", "F2", "F3", "R1", "R2", "R3")

_BASES = "TCAG"
_AMINO = "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"
GENETIC_CODE = {a + b + c: _AMINO[16 * i + 4 * j + k]
                for i, a in enumerate(_BASES) for j, b in enumerate(_BASES) for k, c in enumerate(_BASES)}
_COMPLEMENT = str.maketrans("ACGT", "TGCA")

# Tables for ``bytes.translate``, which maps bytes in one C pass (several times faster than NumPy fancy
# indexing): upper case, and complement of the upper case.
_UPPER = np.arange(256, dtype=np.uint8)
_UPPER[ord("a"):ord("z") + 1] -= 32
_COMP = np.arange(256, dtype=np.uint8)
for _a, _b in zip(b"ACGT", b"TGCA"):
    _COMP[_a] = _b
_UPPER_TAB = _UPPER.tobytes()
_COMP_UPPER_TAB = _COMP[_UPPER].tobytes()

# Sequence bytes are read through their nucleotide codes (:func:`fasta.nucleotide_codes`: 0-3 for A, C, G, T,
# 4 for another IUPAC letter, 5 for anything else). The codon at a position is indexed c0*36 + c1*6 + c2
# (< 216, one byte). For each index: flags for the codon read forward (bits 0-7: stop, 8-15: not a real
# codon) and for the reverse-complement codon read backwards from position +2 (bits 16-23, 24-31), as 8-bit
# counters that wrapping prefix sums add up exactly over any frame (a frame has at most 166 codons); and the
# amino acid of each reading (0 for no real codon), as translate tables.
_FLAGS = np.zeros(216, dtype=np.uint32)
_AA_F = np.zeros(256, dtype=np.uint8)
_AA_R = np.zeros(256, dtype=np.uint8)
for _x in range(216):
    _c = (_x // 36, _x // 6 % 6, _x % 6)
    for _strand, _codon in ((0, _c), (1, tuple(3 - b if b < 4 else 4 for b in _c[::-1]))):
        if max(_codon) >= 4:
            _FLAGS[_x] |= np.uint32(1 << (8 + 16 * _strand))
        else:
            _aa = GENETIC_CODE["".join("ACGT"[b] for b in _codon)]
            (_AA_R if _strand else _AA_F)[_x] = ord(_aa)
            if _aa == "*":
                _FLAGS[_x] |= np.uint32(1 << (16 * _strand))
_AA_F_TAB = _AA_F.tobytes()
_AA_R_TAB = _AA_R.tobytes()

_CHUNK_TAG = b"_chunk_"
# The original writes chunks.fa through Biopython (60 letters per line) and the identified files itself (one
# sequence per line).
CHUNKS_FA_WIDTH = 60
_LABELS = np.frombuffer("".join(FRAME_LABELS).encode(), dtype=np.uint8).reshape(6, 2)


# --------------------------------------------------------------------------------------------------
# Chunking and six-frame translation (vectorized)
# --------------------------------------------------------------------------------------------------


def check_chunk_size(chunk_size) -> int:
    if int(chunk_size) not in CHUNK_SIZES:
        raise VirNucProError(f"--chunk-size must be 300 or 500 (the published models' sizes), not {chunk_size}")
    return int(chunk_size)


def chunk_layout(lengths: np.ndarray, chunk_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The original's chunks of sequences of the given lengths.

    A sequence of length ``L`` has ``n = ceil(L / cs)`` chunks of ``cs`` bases (none if ``L = 0``), the last
    one cut at the sequence end. The overlap ``R = n * cs - L`` is spread as if over ``n`` gaps, not ``n - 1``:
    with ``q = R // n`` and ``m = R - q * (n - 1)``, chunk ``k`` starts ``q + 1`` bases earlier than
    ``k * cs`` for each of the first ``m`` chunks before it and ``q`` for each other one.
    Returns ``(record, k, start, length)`` per chunk: the record's position in ``lengths``, the chunk's
    0-based number, its start within the record and its length.
    """
    L = np.asarray(lengths, dtype=np.int64)
    cs = int(chunk_size)
    n = -(-L // cs)
    total = int(n.sum())
    rec = np.repeat(np.arange(len(L), dtype=np.int64), n)
    k = np.arange(total, dtype=np.int64) - np.repeat(offsets(n)[:-1], n)
    nn = n[rec]
    R = nn * cs - L[rec]
    q = R // nn
    m = R - q * (nn - 1)
    shifted = np.where(k <= m, k * (q + 1), m * (q + 1) + (k - m) * q)
    start = k * cs - shifted
    length = np.minimum(start + cs, L[rec]) - start
    return rec, k, start, length


@dataclass
class ChunkBlock:
    """Chunks of a RecordBlock: ``record`` indexes its records, ``k`` is 0-based, ``start`` is in ``sbuf``."""

    record: np.ndarray
    k: np.ndarray
    start: np.ndarray
    length: np.ndarray

    def __len__(self) -> int:
        return len(self.length)


def chunk_block(block: RecordBlock, chunk_size: int) -> ChunkBlock:
    rec, k, start, length = chunk_layout(block.seq_len, chunk_size)
    return ChunkBlock(record=rec, k=k, start=block.seq_start[rec] + start, length=length)


@dataclass
class FrameBlock:
    """The stop-free frames of a block of chunks, in output order (record, chunk, F1 F2 F3 R1 R2 R3).

    ``record`` indexes the RecordBlock's records, ``chunk`` is 1-based, ``frame`` 0..5 indexes FRAME_LABELS;
    nucleotide and protein sequences are concatenated upper-case bytes with offsets.
    """

    record: np.ndarray
    chunk: np.ndarray
    frame: np.ndarray
    nuc: np.ndarray
    nuc_off: np.ndarray
    prot: np.ndarray
    prot_off: np.ndarray

    def __len__(self) -> int:
        return len(self.record)

    def nucleotides(self) -> list[str]:
        raw = self.nuc.tobytes().decode("ascii", "replace")
        o = self.nuc_off.tolist()
        return [raw[o[i]:o[i + 1]] for i in range(len(self))]

    def proteins(self) -> list[str]:
        raw = self.prot.tobytes().decode("ascii")
        o = self.prot_off.tolist()
        return [raw[o[i]:o[i + 1]] for i in range(len(self))]


@dataclass
class _FramePlan:
    """Where the kept frames of a block of chunks lie in the block's buffers (output order).

    ``kept`` is ``6 * chunk + frame`` (frame 0..5 indexes FRAME_LABELS). A frame's nucleotides are ``nuc_len``
    bases of ``sbuf`` from ``nuc_start``, read upwards, or downwards and complemented where ``rev``; its
    codons are ``n_cod`` entries of ``idx`` (the codon index of every ``sbuf`` position, at offset
    ``SRC_PAD``) from ``cod_start`` with a step of 3 (-3 where ``rev``), of which ``n_skip`` are not one of
    the 64 codons and give no amino acid.
    """

    kept: np.ndarray
    rev: np.ndarray
    nuc_start: np.ndarray
    nuc_len: np.ndarray
    cod_start: np.ndarray
    n_cod: np.ndarray
    n_skip: np.ndarray
    idx: np.ndarray

    @property
    def prot_len(self) -> np.ndarray:
        return self.n_cod - self.n_skip


_FRAME_SHIFT = np.array([0, 1, 2, 0, 1, 2])
_FRAME_REV = np.array([False, False, False, True, True, True])


def _plan_frames(block: RecordBlock, chunks: ChunkBlock) -> _FramePlan:
    """Find every chunk's frames with a non-empty, stop-free protein, without translating them.

    Every position of the sequence buffer gets one codon index (over the nucleotide codes), from which a
    lookup table gives, for the codon read forward and for the reverse-complement codon ending there, whether
    it is a stop and whether it is a real codon. Prefix sums of those flags, laid out phase by phase, give each
    frame's stop and skipped-codon counts without touching codons one by one.
    """
    T = len(block.sbuf)
    codes = nucleotide_codes(block)
    P = SRC_PAD
    idx = np.zeros(P + T + P, dtype=np.uint8)
    body = idx[P:]
    n = len(body)
    np.multiply(codes[:n], 36, out=body)
    body += codes[1:n + 1] * np.uint8(6)
    body += codes[2:n + 2]
    rows = T // 3 + 1
    cum = np.empty(3 * rows + 1, dtype=np.uint32)  # flags, phase after phase, then their prefix sums in place
    cum[0] = 0
    np.take(_FLAGS, body[:3 * rows].reshape(rows, 3).T, out=cum[1:].reshape(3, rows), mode="clip")  # unbuffered
    np.cumsum(cum[1:], dtype=np.uint32, out=cum[1:])

    s = chunks.start[:, None]
    L = chunks.length[:, None]
    ncod = np.maximum((L - _FRAME_SHIFT) // 3, 0)
    end = s + L - _FRAME_SHIFT
    low = np.where(_FRAME_REV, end - 3 * ncod, s + _FRAME_SHIFT)  # lowest codon start of each frame
    base = low % 3 * rows + low // 3
    d = cum[base + ncod] - cum[base]
    d[:, 3:] >>= np.uint32(16)  # reverse frames: the reverse-complement counters
    n_skip = d >> np.uint32(8)
    n_skip &= np.uint32(0xFF)
    keep = (ncod > n_skip) & (d & np.uint32(0xFF) == 0)
    kept = np.flatnonzero(keep)

    rev = kept % 6 >= 3
    ncod, n_skip, low, end = (x.ravel()[kept] for x in (ncod, n_skip, low, end))
    n_skip = n_skip.astype(np.int64)
    return _FramePlan(kept=kept, rev=rev, nuc_start=np.where(rev, end - 1, low),
                      nuc_len=np.minimum(1 + 3 * (ncod - n_skip), chunks.length[kept // 6] - kept % 3),
                      cod_start=np.where(rev, low + 3 * (ncod - 1), low), n_cod=ncod, n_skip=n_skip, idx=idx)


def _codon_positions(plan: _FramePlan, sel) -> np.ndarray:
    """Positions (in ``plan.idx``) of every codon of the frames ``sel``, frame after frame, in reading order."""
    n = plan.n_cod[sel]
    step = np.where(plan.rev[sel], -3, 3)
    within = np.arange(int(n.sum()), dtype=np.int64) - np.repeat(offsets(n)[:-1], n)
    return np.repeat(plan.cod_start[sel] + SRC_PAD, n) + np.repeat(step, n) * within


def _proteins_with_skips(plan: _FramePlan, sel) -> np.ndarray:
    """Proteins of the frames ``sel``, concatenated: each codon translated, codons that are not real dropped."""
    pos = _codon_positions(plan, sel)
    codon = plan.idx[pos]
    aa = np.where(np.repeat(plan.rev[sel], plan.n_cod[sel]), _AA_R[codon], _AA_F[codon])
    return aa[aa != 0]


def frames_of_chunks(block: RecordBlock, chunks: ChunkBlock) -> FrameBlock:
    """Translate every chunk in six frames and keep the frames with a non-empty, stop-free protein.

    The frames are found by :func:`_plan_frames`; only the kept ones are then translated.
    """
    plan = _plan_frames(block, chunks)
    buf = block.sbuf
    T = len(buf)
    raw = buf.tobytes()
    both = np.frombuffer(raw.translate(_UPPER_TAB) + raw.translate(_COMP_UPPER_TAB), dtype=np.uint8)
    nuc = gather(both, np.where(plan.rev, T + plan.nuc_start, plan.nuc_start), plan.nuc_len, reverse=plan.rev)
    chunk_of_frame = plan.kept // 6
    return FrameBlock(record=chunks.record[chunk_of_frame], chunk=(chunks.k[chunk_of_frame] + 1).astype(np.int32),
                      frame=(plan.kept % 6).astype(np.int8), nuc=nuc, nuc_off=offsets(plan.nuc_len),
                      prot=_proteins_with_skips(plan, slice(None)), prot_off=offsets(plan.prot_len))


# --------------------------------------------------------------------------------------------------
# The three files
# --------------------------------------------------------------------------------------------------


def _write_block(block: RecordBlock, chunks: ChunkBlock, f_chunks, f_nuc, f_prot) -> int:
    """Append a block's chunks and kept frames to the three files; return the number of kept frames."""
    P = SRC_PAD
    src = padded(block.sbuf)
    f_chunks.write(fasta_text(entry_headers(block, chunks.record, chunks.k + 1, _CHUNK_TAG), chunks.length,
                              [(slice(None), src, P + chunks.start, 1, None)], width=CHUNKS_FA_WIDTH))
    plan = _plan_frames(block, chunks)
    if not len(plan.kept):
        return 0
    chunk_of_frame = plan.kept // 6
    headers = entry_headers(block, chunks.record[chunk_of_frame], chunks.k[chunk_of_frame] + 1, _CHUNK_TAG,
                            _LABELS[plan.kept % 6])
    fwd, rev = np.flatnonzero(~plan.rev), np.flatnonzero(plan.rev)
    f_nuc.write(fasta_text(headers, plan.nuc_len, [(fwd, src, P + plan.nuc_start[fwd], 1, _UPPER_TAB),
                                                   (rev, src, P + plan.nuc_start[rev], -1, _COMP_UPPER_TAB)]))
    skips = plan.n_skip > 0
    fwd, rev, some = np.flatnonzero(~plan.rev & ~skips), np.flatnonzero(plan.rev & ~skips), np.flatnonzero(skips)
    parts = [(fwd, plan.idx, P + plan.cod_start[fwd], 3, _AA_F_TAB),
             (rev, plan.idx, P + plan.cod_start[rev], -3, _AA_R_TAB)]
    if len(some):
        prot = np.concatenate((_proteins_with_skips(plan, some), np.zeros(PAD, dtype=np.uint8)))
        parts.append((some, prot, offsets(plan.prot_len[some])[:-1], 1, None))
    f_prot.write(fasta_text(headers, plan.prot_len, parts))
    return len(plan.kept)


@dataclass
class PrepareStats:
    records: int = 0
    empty_records: int = 0
    bases: int = 0
    chunks: int = 0
    frames: int = 0
    seconds: float = 0.0

    @property
    def mbp_per_s(self) -> float:
        return self.bases / 1e6 / self.seconds if self.seconds else float("nan")


def prepare(input_path, chunk_size: int, out_dir, block_bytes: int = DEFAULT_BLOCK_BYTES) -> PrepareStats:
    """Write ``chunks.fa``, ``identified_nucleotide.fa`` and ``identified_protein.faa`` into ``out_dir``.

    Files are written into a temporary folder beside ``out_dir`` and moved into place at the end, so a
    failed or killed run leaves nothing half-written in ``out_dir``.
    """
    chunk_size = check_chunk_size(chunk_size)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes a private folder; the output folder follows the umask
    stats = PrepareStats()
    t0 = time.perf_counter()
    try:
        validator = RecordValidator(input_path)
        with open(tmp / "chunks.fa", "wb") as f_chunks, open(tmp / "identified_nucleotide.fa", "wb") as f_nuc, \
                open(tmp / "identified_protein.faa", "wb") as f_prot:
            for block in iter_record_blocks(input_path, block_bytes, validator):
                chunks = chunk_block(block, chunk_size)
                stats.frames += _write_block(block, chunks, f_chunks, f_nuc, f_prot)
                stats.bases += int(block.seq_len.sum())
                stats.chunks += len(chunks.length)
        stats.records = validator.records
        stats.empty_records = validator.empty_records
        empty_ids = list(validator.empty_ids)
        stats.seconds = time.perf_counter() - t0
        if out_dir.exists():
            for name in ("chunks.fa", "identified_nucleotide.fa", "identified_protein.faa"):
                os.replace(tmp / name, out_dir / name)
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if stats.empty_records:
        warnings.warn(empty_records_warning(input_path, stats.empty_records, empty_ids), stacklevel=2)
    if stats.frames == 0:
        warnings.warn(f"{input_path}: no chunk has a stop-free frame; the identified files are empty", stacklevel=2)
    return stats


# --------------------------------------------------------------------------------------------------
# Reference path: the original algorithm, one codon at a time
# --------------------------------------------------------------------------------------------------


def chunk_sequence_reference(seq: str, chunk_size: int) -> list[str]:
    """The original's chunking of one sequence, written plainly (see :func:`chunk_layout`)."""
    L = len(seq)
    if L == 0:
        return []
    n = -(-L // chunk_size)
    R = n * chunk_size - L
    q = R // n
    m = R - q * (n - 1)
    shifts = [q + 1] * m + [q] * max(0, n - 1 - m) + [0]
    chunks, start = [], 0
    for k in range(n):
        if k:
            start = k * chunk_size - sum(shifts[:k])
        chunks.append(seq[start:start + chunk_size])
    return chunks


def translate_reference(seq: str) -> str:
    """Frame-0 translation of ``seq``; codons outside the 64 standard ones are skipped (the original's quirk)."""
    return "".join(GENETIC_CODE[seq[i:i + 3]] for i in range(0, len(seq) - 2, 3) if seq[i:i + 3] in GENETIC_CODE)


def reverse_complement_reference(seq: str) -> str:
    return seq.translate(_COMPLEMENT)[::-1]


def frames_reference(chunk: str) -> list[tuple[str, str, str]]:
    """``(label, nucleotide, protein)`` for each kept frame of one chunk, in F1 F2 F3 R1 R2 R3 order."""
    S = chunk.upper()
    out = []
    for strand, s in (("F", S), ("R", reverse_complement_reference(S))):
        for f in range(3):
            protein = translate_reference(s[f:])
            if protein and "*" not in protein:
                out.append((f"{strand}{f + 1}", s[f:f + 1 + 3 * len(protein)], protein))
    return out


def prepare_reference(input_path, chunk_size: int) -> tuple[list, list, list]:
    """The original's outputs as lists of ``(id, sequence)``: chunks, identified nucleotides, proteins.

    Reads FASTA with Biopython as the original does (plain or gzip).
    """
    from Bio import SeqIO

    chunks, nucs, prots = [], [], []
    with open_input(input_path) as raw, io.TextIOWrapper(raw, encoding="ascii", errors="replace") as handle:
        for record in SeqIO.parse(handle, "fasta"):
            for k, chunk in enumerate(chunk_sequence_reference(str(record.seq), chunk_size)):
                cid = f"{record.id}_chunk_{k + 1}"
                chunks.append((cid, chunk))
                for label, nuc, prot in frames_reference(chunk):
                    nucs.append((cid + label, nuc))
                    prots.append((cid + label, prot))
    return chunks, nucs, prots
