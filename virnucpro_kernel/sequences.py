"""FASTA -> records -> chunks -> six frames, exactly as the original VirNucPro (reference doc sections 1-2).

Two paths share one behaviour:

* the vectorized path (:func:`iter_record_blocks`, :func:`chunk_block`, :func:`frames_of_chunks`) works on
  whole blocks of records as NumPy byte arrays: a record block is parsed, chunked, translated in six frames
  and written back out without a Python loop per record, codon or output line;
* the reference path (:func:`chunk_sequence_reference`, :func:`frames_reference`, :func:`prepare_reference`)
  is the original's algorithm written plainly, one codon at a time, reading FASTA with Biopython. Tests
  hold the two against each other and against the original's golden files.

Input is streamed in blocks cut at record boundaries, so memory stays flat however large the input is
(a single record larger than a block makes that block larger, nothing else).
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import InputError, VirNucProError

CHUNK_SIZES = (300, 500)
FRAME_LABELS = ("F1", "F2", "F3", "R1", "R2", "R3")
DEFAULT_BLOCK_BYTES = 1 << 20
NUCLEOTIDE_IUPAC = b"ACGTUNRYKMSWBDHVacgtunrykmswbdhv"
MAX_NON_NUCLEOTIDE_FRACTION = 0.10

_BASES = "TCAG"
_AMINO = "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"
GENETIC_CODE = {a + b + c: _AMINO[16 * i + 4 * j + k]
                for i, a in enumerate(_BASES) for j, b in enumerate(_BASES) for k, c in enumerate(_BASES)}
_COMPLEMENT = str.maketrans("ACGT", "TGCA")

# Lookup tables over bytes (the vectorized path).
_UPPER = np.arange(256, dtype=np.uint8)
_UPPER[ord("a"):ord("z") + 1] -= 32
_COMP = np.arange(256, dtype=np.uint8)
for _a, _b in zip(b"ACGT", b"TGCA"):
    _COMP[_a] = _b
_IUPAC = np.zeros(256, dtype=bool)
_IUPAC[np.frombuffer(NUCLEOTIDE_IUPAC, dtype=np.uint8)] = True
_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[[9, 10, 11, 12, 13, 32]] = True
_WHITESPACE_NO_NL = _WHITESPACE.copy()
_WHITESPACE_NO_NL[10] = False
_COMP_UPPER = _COMP[_UPPER]

# Tables for ``bytes.translate``, which maps bytes in one C pass (several times faster than NumPy fancy indexing).
_UPPER_TAB = _UPPER.tobytes()
_COMP_UPPER_TAB = _COMP_UPPER.tobytes()

# Every sequence byte gets a code: 0-3 for A, C, G, T (either case), 4 for another IUPAC nucleotide letter,
# 5 for anything else (the alphabet check counts those). The codon at a position is indexed
# c0*36 + c1*6 + c2 (< 216, one byte). For each index: flags for the codon read forward (bits 0-7: stop,
# 8-15: not a real codon) and for the reverse-complement codon read backwards from position +2 (bits 16-23,
# 24-31), as 8-bit counters that wrapping prefix sums add up exactly over any frame (a frame has at most 166
# codons); and the amino acid of each reading (0 for no real codon), as translate tables.
_CODE = np.full(256, 5, dtype=np.uint8)
_CODE[_IUPAC] = 4
for _i, _b in enumerate(b"ACGT"):
    _CODE[_b] = _CODE[_b + 32] = _i
_CODE_TAB = _CODE.tobytes()
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

# Fixed-width window copies (see _put) may overrun a segment by up to _PAD - 1 bytes; sources read through
# windows carry _SRC_PAD = 3 * _PAD bytes on each side (codons are read with a step of 3).
_PAD = 32
_SRC_PAD = 3 * _PAD


# --------------------------------------------------------------------------------------------------
# Reading and validating FASTA
# --------------------------------------------------------------------------------------------------


def open_input(path, digest=None) -> io.BufferedIOBase:
    """Open a plain or gzip-compressed file for binary reading, with a clear error if that fails. With
    ``digest`` (a hashlib object), every byte of the file as stored is fed to it as it is read."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a directory, not a FASTA file")
    try:
        handle = open(path, "rb")
        magic = handle.peek(2)[:2] if hasattr(handle, "peek") else b""
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    if digest is not None:
        handle = io.BufferedReader(_Hashing(handle, digest))
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=handle, mode="rb")
    return handle


def _sniff(path, head: bytes) -> None:
    """Reject input that is not FASTA, naming what it looks like."""
    if b"\x00" in head:
        raise InputError(path, "not a FASTA file (binary data)")
    text = head.lstrip()
    if not text:
        return
    if text.startswith(b">"):
        return
    if text.startswith(b"@"):
        raise InputError(path, "not a FASTA file (looks like FASTQ; convert it to FASTA first)")
    if text.startswith(b"LOCUS") or text.startswith(b"ID   "):
        raise InputError(path, "not a FASTA file (looks like GenBank/EMBL; export it as FASTA first)")
    try:
        first = text.split(b"\n", 1)[0][:40].decode("ascii")
    except UnicodeDecodeError:
        raise InputError(path, "not a FASTA file (binary data)") from None
    raise InputError(path, f"not a FASTA file (first line does not start with '>': {first!r})")


@dataclass
class RecordBlock:
    """Consecutive FASTA records as segments of byte buffers (no copy for the common 2-line layout).

    Record i's header (without ``>``) is ``hbuf[hdr_start[i]:hdr_start[i] + hdr_len[i]]``, its ID the first
    ``id_len[i]`` bytes of it, its sequence as read (case kept, line breaks removed)
    ``sbuf[seq_start[i]:seq_start[i] + seq_len[i]]``; ``record_index[i]`` is its 0-based input position.
    ``codes`` caches the byte codes of ``sbuf`` (see :func:`_codes`), shared by validation and translation.
    """

    hbuf: np.ndarray
    hdr_start: np.ndarray
    hdr_len: np.ndarray
    id_len: np.ndarray
    sbuf: np.ndarray
    seq_start: np.ndarray
    seq_len: np.ndarray
    record_index: np.ndarray
    codes: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.seq_len)

    @property
    def lengths(self) -> np.ndarray:
        return self.seq_len

    def ids(self) -> list[str]:
        raw = self.hbuf.tobytes()
        return [raw[s:s + n].decode("utf-8", "replace") for s, n in zip(self.hdr_start.tolist(), self.id_len.tolist())]

    def descriptions(self) -> list[str]:
        raw = self.hbuf.tobytes()
        return [raw[s:s + n].decode("utf-8", "replace") for s, n in zip(self.hdr_start.tolist(), self.hdr_len.tolist())]

    def sequence(self, i: int) -> str:
        s = int(self.seq_start[i])
        return self.sbuf[s:s + int(self.seq_len[i])].tobytes().decode("ascii", "replace")

    def take(self, idx) -> "RecordBlock":
        """The records at positions ``idx`` (an index array, a boolean mask or a slice); buffers are shared."""
        return RecordBlock(self.hbuf, self.hdr_start[idx], self.hdr_len[idx], self.id_len[idx], self.sbuf,
                           self.seq_start[idx], self.seq_len[idx], self.record_index[idx], self.codes)

    @staticmethod
    def concat(blocks: list["RecordBlock"]) -> "RecordBlock":
        """One block holding the records of ``blocks`` in order (buffers are concatenated)."""
        if len(blocks) == 1:
            return blocks[0]
        h_shift = _offsets(np.array([len(b.hbuf) for b in blocks]))
        shared = all(b.sbuf is b.hbuf for b in blocks)
        s_shift = h_shift if shared else _offsets(np.array([len(b.sbuf) for b in blocks]))
        cat = lambda name: np.concatenate([getattr(b, name) for b in blocks])  # noqa: E731
        hbuf = cat("hbuf")
        return RecordBlock(
            hbuf=hbuf, hdr_start=np.concatenate([b.hdr_start + h_shift[i] for i, b in enumerate(blocks)]),
            hdr_len=cat("hdr_len"), id_len=cat("id_len"), sbuf=hbuf if shared else cat("sbuf"),
            seq_start=np.concatenate([b.seq_start + s_shift[i] for i, b in enumerate(blocks)]),
            seq_len=cat("seq_len"), record_index=cat("record_index"))


def _offsets(lengths: np.ndarray) -> np.ndarray:
    off = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=off[1:])
    return off


def _count_per_record(mask: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``mask[s:s+n].sum()`` for every segment: one ``np.add.reduceat`` pass, no full-size prefix sum.

    ``mask`` must extend at least one element past the last segment; entries for empty segments are garbage.
    """
    if not len(starts):
        return np.zeros(0, dtype=np.int64)
    bounds = np.empty(2 * len(starts), dtype=np.int64)
    bounds[0::2] = starts
    bounds[1::2] = starts + lengths
    return np.add.reduceat(mask.view(np.uint8), bounds, dtype=np.int32)[0::2]


def _codes(block: RecordBlock) -> np.ndarray:
    """Codes (see ``_CODE``) of ``block.sbuf`` followed by ``_SRC_PAD + 8`` bytes of code 5, kept on the block."""
    if block.codes is None:
        raw = block.sbuf.tobytes() + bytes(_SRC_PAD + 8)
        block.codes = np.frombuffer(raw.translate(_CODE_TAB), dtype=np.uint8)
    return block.codes


def gather(src: np.ndarray, starts, lengths, reverse=None) -> np.ndarray:
    """Concatenate the segments ``src[s:s+n]`` (read backwards, from ``s`` down, where ``reverse``) in order.

    One vectorized pass: an index array built from per-segment steps, then one ``take``.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    keep = lengths > 0
    starts = np.asarray(starts, dtype=np.int64)[keep]
    lengths = lengths[keep]
    total = int(lengths.sum())
    if total == 0:
        return src[:0].copy()
    itype = np.int32 if len(src) < 2**31 - 1 else np.int64
    ends = np.cumsum(lengths)
    if reverse is None:
        step = np.ones(total, dtype=itype)
        last = starts + lengths - 1
    else:
        d = np.where(np.asarray(reverse)[keep], -1, 1)
        step = np.repeat(d.astype(itype), lengths)
        last = starts + (lengths - 1) * d
    step[0] = starts[0]
    step[ends[:-1]] = starts[1:] - last[:-1]
    np.cumsum(step, out=step)
    return np.take(src, step)


def _parse_block(data: bytes, first_index: int) -> RecordBlock:
    """Parse bytes holding whole records (starting at '>') into a RecordBlock."""
    a = np.frombuffer(data, dtype=np.uint8)
    n = len(a)
    # line breaks and other whitespace are all bytes <= 32: one cheap comparison finds both
    low = np.flatnonzero(a <= 32)
    low_byte = a[low]
    newline = low[low_byte == 10]
    line_start = np.concatenate(([0], newline + 1))
    line_end = np.append(newline, n)
    inside = line_start < n
    line_start, line_end = line_start[inside], line_end[inside]
    hdr_line = np.flatnonzero(a[line_start] == ord(">"))
    hdr_start = line_start[hdr_line] + 1
    hdr_end = line_end[hdr_line]
    hdr_end = hdr_end - ((hdr_end > hdr_start) & (a[hdr_end - 1] == 13))  # a trailing '\r'
    # "> id desc": like Biopython, the ID is the first word after any blanks that follow '>'
    lead = np.flatnonzero((hdr_start < hdr_end) & np.isin(a[np.minimum(hdr_start, n - 1)], (9, 32)))
    for i in lead.tolist():  # rare: a plain loop
        while hdr_start[i] < hdr_end[i] and a[hdr_start[i]] in (9, 32):
            hdr_start[i] += 1
    ws_pos = low[_WHITESPACE_NO_NL[low_byte]]
    # the ID ends at the header's first whitespace
    ws_ext = np.append(ws_pos, n)
    id_len = np.minimum(ws_ext[np.searchsorted(ws_ext, hdr_start)], hdr_end) - hdr_start
    seq_lines = np.diff(np.append(hdr_line, len(line_start))) - 1
    # whitespace other than line breaks outside header lines?
    in_hdr_line = np.searchsorted(line_start[hdr_line], ws_pos, side="right") - 1
    ws_in_seq = bool(np.any((in_hdr_line < 0) | (ws_pos > line_end[hdr_line][np.maximum(in_hdr_line, 0)])))
    record_index = first_index + np.arange(len(hdr_line), dtype=np.int64)
    if not ws_in_seq and np.all(seq_lines <= 1):
        # the common layout, one sequence line per record: sequences stay where they are
        one = seq_lines == 1
        nxt = np.minimum(hdr_line + 1, len(line_start) - 1)
        seq_start = np.where(one, line_start[nxt], hdr_end)
        seq_len = np.where(one, line_end[nxt] - seq_start, 0)
        return RecordBlock(a, hdr_start, hdr_end - hdr_start, id_len, a, seq_start, seq_len, record_index)
    # general layout: wrapped lines, '\r\n', blanks: copy the sequence bytes together
    mark = np.zeros(n + 2, dtype=np.int32)
    np.add.at(mark, line_start[hdr_line], 1)
    np.add.at(mark, line_end[hdr_line] + 1, -1)
    seq_mask = (np.cumsum(mark[:n]) == 0) & ~_WHITESPACE[a]
    starts = np.zeros(n, dtype=np.int64)
    starts[line_start[hdr_line]] = 1
    rec_of_byte = np.cumsum(starts) - 1
    seq_len = np.bincount(rec_of_byte[seq_mask], minlength=len(hdr_line)).astype(np.int64)
    return RecordBlock(a, hdr_start, hdr_end - hdr_start, id_len, a[seq_mask], _offsets(seq_len)[:-1], seq_len,
                       record_index)


class _Hashing(io.RawIOBase):
    def __init__(self, fh, digest):
        self.fh, self.digest = fh, digest

    def readable(self):
        return True

    def readinto(self, b):
        n = self.fh.readinto(b)
        if n:
            self.digest.update(memoryview(b)[:n])
        return n

    def close(self):
        try:
            for block in iter(lambda: self.fh.read(1 << 20), b""):  # the rest of the file counts too
                self.digest.update(block)
        finally:
            self.fh.close()
            super().close()


def iter_raw_blocks(path, block_bytes: int = DEFAULT_BLOCK_BYTES, digest=None) -> Iterator[RecordBlock]:
    """Stream ``path`` as RecordBlocks of about ``block_bytes`` input bytes each, cut at record boundaries.

    Raises InputError for unreadable, empty or non-FASTA input. Records are not validated here.
    """
    handle = open_input(path, digest)
    index = 0
    try:
        pieces: list[bytes] = []  # read but not parsed yet: the start of a record whose end is not seen
        first = True
        while True:
            try:
                data = handle.read(block_bytes)
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                raise InputError(path, f"cannot read: {exc}") from None
            if first:
                if not data:
                    raise InputError(path, "empty file")
                data = data.lstrip()
                if not data:  # only whitespace so far
                    rest = handle.read()
                    data = rest.lstrip()
                    if not data:
                        raise InputError(path, "no FASTA records (the file holds only blank lines)")
                _sniff(path, data[:4096])
                first = False
            if not data:  # end of input: the rest is whole records
                part = b"".join(pieces)
                if part:
                    block = _parse_block(part, index)
                    index += len(block)
                    yield block
                break
            # only the new bytes are searched for a record start, so a record of any size is read in linear time
            cut = data.rfind(b"\n>") + 1
            if cut <= 0 and pieces and pieces[-1].endswith(b"\n") and data.startswith(b">"):
                cut = 0  # a record starts right at this read
            elif cut <= 0:
                pieces.append(data)
                continue
            part = b"".join(pieces) + data[:cut]
            pieces = [data[cut:]]
            if part:
                block = _parse_block(part, index)
                index += len(block)
                yield block
    finally:
        handle.close()
    if index == 0:
        raise InputError(path, "no FASTA records")


class CompactIdSet:
    """A set of 64-bit ID hashes in sorted NumPy arrays (about 8 bytes per ID, not ~100 for a Python set).

    Levels of geometrically growing size are merged like a log-structured tree, so adding N hashes costs
    O(N log N) in all and a membership query O(log^2 N). A fixed 16 MiB map of the hashes' top 24 bits
    answers most queries for absent hashes at once, so only the few that hit it are searched in the levels.
    """

    MAP_BITS = 24

    def __init__(self):
        self.levels: list[np.ndarray] = []
        self.seen = np.zeros(1 << self.MAP_BITS, dtype=bool)  # pages are only allocated once touched

    def __len__(self):
        return sum(len(x) for x in self.levels)

    def _top(self, h: np.ndarray) -> np.ndarray:
        return (np.asarray(h, dtype=np.uint64) >> np.uint64(64 - self.MAP_BITS)).astype(np.intp)

    def contains(self, h: np.ndarray) -> np.ndarray:
        h = np.asarray(h, dtype=np.uint64)
        found = np.zeros(len(h), dtype=bool)
        maybe = np.flatnonzero(self.seen[self._top(h)])
        if len(maybe):
            q = h[maybe]
            hit = np.zeros(len(q), dtype=bool)
            for level in self.levels:
                pos = np.minimum(np.searchsorted(level, q), len(level) - 1)
                hit |= level[pos] == q
            found[maybe] = hit
        return found

    def add(self, h: np.ndarray) -> None:
        new = np.sort(h)
        self.seen[self._top(new)] = True
        while self.levels and len(self.levels[-1]) <= len(new):
            new = np.sort(np.concatenate([self.levels.pop(), new]), kind="mergesort")
        self.levels.append(new)


def hash_ids(block: RecordBlock) -> np.ndarray:
    """A 64-bit polynomial hash of every record ID in the block (vectorized; collisions ~ N^2 / 2^65).

    IDs of a few distinct lengths (the usual case) are hashed as rows of a 2-D window view of the header
    buffer, one length at a time; otherwise all ID bytes are gathered and summed with one prefix sum.
    """
    lens = block.id_len
    powers = _powers(int(lens.max()) if len(lens) else 0)
    groups = _groups(lens)
    with np.errstate(over="ignore"):
        if len(groups) <= 8:
            h = np.zeros(len(lens), dtype=np.uint64)
            for n, sel in groups:
                if n:
                    ids = _windows(block.hbuf, n)[0][block.hdr_start[sel]]
                    h[sel] = ((ids + np.uint64(1)) * powers[:n]).sum(axis=1, dtype=np.uint64)
        else:
            off = _offsets(lens)
            ids = gather(block.hbuf, block.hdr_start, lens).astype(np.uint64)
            pos_in_id = np.arange(len(ids), dtype=np.int64) - np.repeat(off[:-1], lens)
            cum = np.concatenate(([np.uint64(0)],
                                  np.cumsum((ids + np.uint64(1)) * powers[pos_in_id], dtype=np.uint64)))
            h = cum[off[1:]] - cum[off[:-1]]
        h = (h ^ (lens.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))) * np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(31)
    return h


_POW_CACHE = np.array([1], dtype=np.uint64)


def _powers(n: int) -> np.ndarray:
    global _POW_CACHE
    if len(_POW_CACHE) <= n:
        m = max(n + 1, 2 * len(_POW_CACHE), 256)
        with np.errstate(over="ignore"):
            base = np.full(m, np.uint64(1099511628211), dtype=np.uint64)
            base[0] = 1
            _POW_CACHE = np.cumprod(base, dtype=np.uint64)
    return _POW_CACHE


class RecordValidator:
    """Checks records as they stream past: nucleotide alphabet, duplicate IDs, empty records."""

    def __init__(self, path):
        self.path = path
        self.ids = CompactIdSet()
        self.empty_records = 0
        self.records = 0

    def check(self, block: RecordBlock) -> RecordBlock:
        """Validate a block; return it without its length-0 records (counted in ``empty_records``)."""
        lengths = block.seq_len
        self.records += len(block)
        # alphabet: 10% or more non-IUPAC letters means protein (or garbage) given as nucleotides
        n_bad = _count_per_record(_codes(block) == 5, block.seq_start, lengths)
        wrong = np.flatnonzero((lengths > 0) & (n_bad >= MAX_NON_NUCLEOTIDE_FRACTION * lengths))
        if len(wrong):
            i = int(wrong[0])
            raise InputError(self.path, f"{n_bad[i] / lengths[i]:.0%} of its letters are not nucleotide IUPAC "
                             "codes (protein given as nucleotides?)", record=block.take([i]).ids()[0])
        # duplicate IDs: sorted hashes make both the in-block check and the set lookups cheap
        h = np.sort(hash_ids(block))
        if len(h) and ((h[1:] == h[:-1]).any() or self.ids.contains(h).any()):
            h = hash_ids(block)  # a duplicate: name the first repeated record in input order
            dup = self.ids.contains(h)
            order = np.argsort(h, kind="stable")
            dup[order[1:]] |= h[order[1:]] == h[order[:-1]]
            rid = block.take([int(np.flatnonzero(dup)[0])]).ids()[0]
            raise InputError(self.path, "duplicate record ID (outputs would collide)", record=rid)
        self.ids.add(h)
        empty = lengths == 0
        if empty.any():
            self.empty_records += int(empty.sum())
            block = block.take(~empty)
        return block


def iter_record_blocks(path, block_bytes: int = DEFAULT_BLOCK_BYTES, validator: RecordValidator | None = None
                       ) -> Iterator[RecordBlock]:
    """Stream validated records (length-0 records removed, counted on the validator)."""
    validator = validator or RecordValidator(path)
    for block in iter_raw_blocks(path, block_bytes):
        block = validator.check(block)
        if len(block):
            yield block


# --------------------------------------------------------------------------------------------------
# Chunking and six-frame translation (vectorized)
# --------------------------------------------------------------------------------------------------


def chunk_layout(lengths: np.ndarray, chunk_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The original's chunks of sequences of the given lengths.

    Returns ``(record, k, start, length)`` per chunk: the record's position in ``lengths``, the chunk's
    0-based number, its start within the record and its length. Reference doc section 1.
    """
    L = np.asarray(lengths, dtype=np.int64)
    cs = int(chunk_size)
    n = -(-L // cs)
    total = int(n.sum())
    rec = np.repeat(np.arange(len(L), dtype=np.int64), n)
    k = np.arange(total, dtype=np.int64) - np.repeat(_offsets(n)[:-1], n)
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
    ``_SRC_PAD``) from ``cod_start`` with a step of 3 (-3 where ``rev``), of which ``n_skip`` are not one of
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

    Every position of the sequence buffer gets one codon index (over the codes of ``_CODE``), from which a
    lookup table gives, for the codon read forward and for the reverse-complement codon ending there, whether
    it is a stop and whether it is a real codon. Prefix sums of those flags, laid out phase by phase, give each
    frame's stop and skipped-codon counts without touching codons one by one.
    """
    T = len(block.sbuf)
    codes = _codes(block)
    P = _SRC_PAD
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
    within = np.arange(int(n.sum()), dtype=np.int64) - np.repeat(_offsets(n)[:-1], n)
    return np.repeat(plan.cod_start[sel] + _SRC_PAD, n) + np.repeat(step, n) * within


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
                      frame=(plan.kept % 6).astype(np.int8), nuc=nuc, nuc_off=_offsets(plan.nuc_len),
                      prot=_proteins_with_skips(plan, slice(None)), prot_off=_offsets(plan.prot_len))


# --------------------------------------------------------------------------------------------------
# Writing FASTA without a Python loop per record
# --------------------------------------------------------------------------------------------------


def _windows(src: np.ndarray, width: int, step: int = 1) -> tuple[np.ndarray, int]:
    """A view ``V`` with ``V[k, t] = src[k + shift + step * t]`` for every ``k`` it has, and ``shift``.

    Row ``s - shift`` is the ``width`` elements read from ``src[s]`` with the given step; only rows whose
    elements all lie inside ``src`` exist (so fancy indexing is bounds-checked).
    """
    span = abs(step) * (width - 1)
    shift = span if step < 0 else 0
    view = np.lib.stride_tricks.as_strided(src[shift:], shape=(max(len(src) - span, 0), width),
                                           strides=(src.strides[0], step * src.strides[0]))
    return view, shift


def _groups(key: np.ndarray) -> list[tuple[int, np.ndarray | slice]]:
    """``(value, selection)`` for each distinct value of ``key`` (a plain slice when there is only one)."""
    if not len(key):
        return []
    if (key == key[0]).all():
        return [(int(key[0]), slice(None))]
    order = np.argsort(key)
    sk = key[order]
    cut = [0, *(np.flatnonzero(sk[1:] != sk[:-1]) + 1).tolist(), len(key)]
    return [(int(sk[a]), order[a:b]) for a, b in zip(cut[:-1], cut[1:])]


def _put(out: np.ndarray, pos, length, room, src: np.ndarray, start, step: int = 1, table: bytes | None = None):
    """``out[pos_i + t] = src[start_i + step * t]`` for ``t < length_i`` (mapped through ``table`` if given).

    Segments move as rows of fixed-width window views, one fancy-indexing copy per width (memcpy speed,
    instead of an index per byte). So that segments of similar lengths share a width, a row may be copied up
    to ``min(room_i, _PAD - 1)`` bytes longer than its segment: ``room_i`` bytes after segment i must be
    written later (or be spare). ``src`` must be readable that far past each segment (before it if step < 0).
    """
    if not len(length):
        return
    lmax = int(length.max())
    q = min(int(room.min()) + 1, _PAD)
    width = lmax - (lmax - length) // q * q  # from length_i up to length_i + q - 1
    for w, sel in _groups(width):
        if w == 0:
            continue
        rows_src, shift = _windows(src, w, step)
        first = start[sel] - shift
        if first.min() < 0:  # a negative row index would silently wrap around
            raise ValueError("window source lacks padding")
        rows = rows_src[first]
        if table is not None:
            rows = np.frombuffer(rows.tobytes().translate(table), dtype=np.uint8).reshape(rows.shape)
        _windows(out, w)[0][pos[sel]] = rows


@dataclass
class _Headers:
    """Header lines ``>{id}_chunk_{k}{label}\\n`` of FASTA entries: ``width`` per entry and, per distinct
    width, ``(width, selection, rows)`` with the lines as rows of a 2-D array."""

    width: np.ndarray
    classes: list


_POW10 = 10 ** np.arange(1, 19, dtype=np.int64)
_TAG = np.frombuffer(b"_chunk_", dtype=np.uint8)
_LABELS = np.frombuffer("".join(FRAME_LABELS).encode(), dtype=np.uint8).reshape(6, 2)


def _headers(block: RecordBlock, record: np.ndarray, k: np.ndarray, frame: np.ndarray | None = None) -> _Headers:
    """The header lines for entries (record, 1-based chunk number ``k``, frame label if ``frame`` is given).

    Entries are grouped by (ID length, digits of ``k``); each group's lines are built column block by column
    block: '>', the IDs as window rows of the header buffer, '_chunk_', digits, label, '\\n'.
    """
    id_len = block.id_len[record]
    digits = np.searchsorted(_POW10, k, side="right") + 1
    label = 0 if frame is None else 2
    classes = []
    for key, sel in _groups(id_len * 32 + digits):
        i, d = key // 32, key % 32
        w = i + d + 9 + label
        kk = k[sel]
        rows = np.empty((len(kk), w), dtype=np.uint8)
        rows[:, 0] = 62
        if i:
            ids, _ = _windows(block.hbuf, i)
            rows[:, 1:1 + i] = ids[block.hdr_start[record[sel]]]
        rows[:, 1 + i:8 + i] = _TAG
        for j in range(7 + i + d, 7 + i, -1):
            rows[:, j] = kk % 10 + 48
            kk = kk // 10
        if label:
            rows[:, 8 + i + d:10 + i + d] = _LABELS[frame[sel]]
        rows[:, -1] = 10
        classes.append((w, sel, rows))
    return _Headers(width=id_len + digits + (9 + label), classes=classes)


def _fasta(headers: _Headers, seq_len: np.ndarray, parts) -> np.ndarray:
    """FASTA text, one ``{header line}{sequence}\\n`` per entry, as a uint8 array.

    ``parts`` are ``(selection, src, start, step, table)``: where the sequences of the selected entries come
    from (see :func:`_put`). Sequences are copied first, with the header lines and line breaks after them
    as the room that lets their copies overrun.
    """
    n = len(seq_len)
    off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(headers.width + seq_len + 1, out=off[1:])
    total = int(off[-1])
    out = np.empty(total + _PAD, dtype=np.uint8)
    seq_pos = off[:-1] + headers.width
    room = np.empty(n, dtype=np.int64)
    room[:-1] = headers.width[1:] + 1
    room[-1:] = _PAD
    for sel, src, start, step, table in parts:
        _put(out, seq_pos[sel], seq_len[sel], room[sel], src, start, step, table)
    for w, sel, rows in headers.classes:
        _windows(out, w)[0][off[:-1][sel]] = rows
    out[seq_pos + seq_len] = 10
    return out[:total]


def _padded(a: np.ndarray) -> np.ndarray:
    """``a`` with ``_SRC_PAD`` zero bytes on each side."""
    out = np.zeros(len(a) + 2 * _SRC_PAD, dtype=np.uint8)
    out[_SRC_PAD:_SRC_PAD + len(a)] = a
    return out


def _write_block(block: RecordBlock, chunks: ChunkBlock, f_chunks, f_nuc, f_prot) -> int:
    """Append a block's chunks and kept frames to the three files; return the number of kept frames."""
    P = _SRC_PAD
    src = _padded(block.sbuf)
    f_chunks.write(_fasta(_headers(block, chunks.record, chunks.k + 1), chunks.length,
                          [(slice(None), src, P + chunks.start, 1, None)]))
    plan = _plan_frames(block, chunks)
    if not len(plan.kept):
        return 0
    chunk_of_frame = plan.kept // 6
    headers = _headers(block, chunks.record[chunk_of_frame], chunks.k[chunk_of_frame] + 1, plan.kept % 6)
    fwd, rev = np.flatnonzero(~plan.rev), np.flatnonzero(plan.rev)
    f_nuc.write(_fasta(headers, plan.nuc_len, [(fwd, src, P + plan.nuc_start[fwd], 1, _UPPER_TAB),
                                                (rev, src, P + plan.nuc_start[rev], -1, _COMP_UPPER_TAB)]))
    skips = plan.n_skip > 0
    fwd, rev, some = np.flatnonzero(~plan.rev & ~skips), np.flatnonzero(plan.rev & ~skips), np.flatnonzero(skips)
    parts = [(fwd, plan.idx, P + plan.cod_start[fwd], 3, _AA_F_TAB),
             (rev, plan.idx, P + plan.cod_start[rev], -3, _AA_R_TAB)]
    if len(some):
        prot = np.concatenate((_proteins_with_skips(plan, some), np.zeros(_PAD, dtype=np.uint8)))
        parts.append((some, prot, _offsets(plan.prot_len[some])[:-1], 1, None))
    f_prot.write(_fasta(headers, plan.prot_len, parts))
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


def check_chunk_size(chunk_size) -> int:
    if int(chunk_size) not in CHUNK_SIZES:
        raise VirNucProError(f"--chunk-size must be 300 or 500 (the published models' sizes), not {chunk_size}")
    return int(chunk_size)


def prepare(input_path, chunk_size: int, out_dir, block_bytes: int = DEFAULT_BLOCK_BYTES) -> PrepareStats:
    """Write ``chunks.fa``, ``identified_nucleotide.fa`` and ``identified_protein.faa`` into ``out_dir``.

    Files are written into a temporary folder beside ``out_dir`` and moved into place at the end, so a
    failed or killed run leaves nothing half-written in ``out_dir``.
    """
    chunk_size = check_chunk_size(chunk_size)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
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
        warnings.warn(f"{input_path}: skipped {stats.empty_records} record(s) of length 0", stacklevel=2)
    if stats.frames == 0:
        warnings.warn(f"{input_path}: no chunk has a stop-free frame; the identified files are empty", stacklevel=2)
    return stats


# --------------------------------------------------------------------------------------------------
# Reference path: the original algorithm, one codon at a time
# --------------------------------------------------------------------------------------------------


def chunk_sequence_reference(seq: str, chunk_size: int) -> list[str]:
    """The original's chunking of one sequence (reference doc section 1), written as the doc states it."""
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


def read_fasta_pairs(path) -> list[tuple[str, str]]:
    """``(id, sequence)`` of every record of a (small) FASTA file, read with Biopython."""
    from Bio.SeqIO.FastaIO import SimpleFastaParser

    with open_input(path) as raw, io.TextIOWrapper(raw, encoding="ascii", errors="replace") as handle:
        return [(title.split(None, 1)[0] if title.strip() else "", seq) for title, seq in SimpleFastaParser(handle)]
