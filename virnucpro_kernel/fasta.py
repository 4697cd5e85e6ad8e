"""The one FASTA reader and writer: plain or gzip input, streamed as blocks of records, validated.

* :func:`open_input` opens plain or gzip-compressed input with one-line errors; :func:`iter_raw_blocks`
  streams it as :class:`RecordBlock` s, NumPy byte buffers cut at record boundaries, so memory stays flat
  however large the input is (a single record larger than a block makes that block larger, nothing else).
  Input that is not FASTA is named for what it looks like (FASTQ, GenBank, binary). Both can hash every
  byte they read, so a single pass also identifies the input.
* :class:`RecordValidator` checks records as they stream past (nucleotide alphabet, duplicate IDs exactly,
  empty records); :func:`iter_record_blocks` streams validated records; :func:`scan` validates a whole
  input and returns its :class:`InputSummary` (counts, size, SHA-256) from one read of the file.
* :func:`entry_headers` and :func:`fasta_text` write FASTA text for whole blocks of entries without a Python
  loop per record or output line.
* :func:`read_fasta_pairs` reads a small file as ``(id, sequence)`` pairs.

Records are read as the original VirNucPro reads them, through Biopython in text mode: CR, LF and CRLF all
end a line; a record's ID is the first word of its header; its sequence is its lines joined, whitespace
removed. A UTF-8 byte-order mark at the start of the input is skipped.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import InputError

DEFAULT_BLOCK_BYTES = 1 << 20
NUCLEOTIDE_IUPAC = b"ACGTUNRYKMSWBDHVacgtunrykmswbdhv"
MAX_NON_NUCLEOTIDE_FRACTION = 0.10

_IUPAC = np.zeros(256, dtype=bool)
_IUPAC[np.frombuffer(NUCLEOTIDE_IUPAC, dtype=np.uint8)] = True
_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[[9, 10, 11, 12, 13, 32]] = True
_WHITESPACE_NO_NL = _WHITESPACE.copy()
_WHITESPACE_NO_NL[10] = False

# Every sequence byte gets a nucleotide code: 0-3 for A, C, G, T (either case), 4 for another IUPAC
# nucleotide letter, 5 for anything else (the alphabet check counts those; codons are read over them).
_CODE = np.full(256, 5, dtype=np.uint8)
_CODE[_IUPAC] = 4
for _i, _b in enumerate(b"ACGT"):
    _CODE[_b] = _CODE[_b + 32] = _i
_CODE_TAB = _CODE.tobytes()

# Fixed-width window copies (see _put) may overrun a segment by up to PAD - 1 bytes; sources read through
# windows carry SRC_PAD = 3 * PAD bytes on each side (codons are read with a step of 3).
PAD = 32
SRC_PAD = 3 * PAD


# --------------------------------------------------------------------------------------------------
# Reading and validating FASTA
# --------------------------------------------------------------------------------------------------


def open_input(path, hasher=None) -> io.BufferedIOBase:
    """Open a plain or gzip-compressed file for binary reading, with a clear error if that fails.

    ``hasher`` (a ``hashlib`` object, or anything with ``update``) is given every byte read from the file as
    it is stored (the compressed bytes of a gzip file), so a reader that reads to the end hashes the file in
    the same pass.
    """
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
    if hasher is not None:
        handle = io.BufferedReader(_Hashing(handle, hasher))
    if magic == b"\x1f\x8b":
        stream = gzip.GzipFile(fileobj=handle, mode="rb")
        stream.myfileobj = handle  # closed with the GzipFile (it closes only files it opened itself)
        return stream
    return handle


class _Hashing(io.RawIOBase):
    """A binary stream that passes every byte it reads from ``raw`` to ``hasher.update``."""

    def __init__(self, raw, hasher):
        self.raw, self.hasher = raw, hasher

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.raw.readinto(buffer)
        if n:
            self.hasher.update(memoryview(buffer)[:n])
        return n

    def close(self) -> None:
        if not self.closed:
            self.raw.close()
        super().close()


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
        first = text.splitlines()[0][:40].decode("ascii")
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
        return [x.decode("utf-8", "replace") for x in self.id_bytes()]

    def id_bytes(self) -> list[bytes]:
        raw = self.hbuf.tobytes()
        return [raw[s:s + n] for s, n in zip(self.hdr_start.tolist(), self.id_len.tolist())]

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
        h_shift = offsets(np.array([len(b.hbuf) for b in blocks]))
        shared = all(b.sbuf is b.hbuf for b in blocks)
        s_shift = h_shift if shared else offsets(np.array([len(b.sbuf) for b in blocks]))
        cat = lambda name: np.concatenate([getattr(b, name) for b in blocks])  # noqa: E731
        hbuf = cat("hbuf")
        return RecordBlock(
            hbuf=hbuf, hdr_start=np.concatenate([b.hdr_start + h_shift[i] for i, b in enumerate(blocks)]),
            hdr_len=cat("hdr_len"), id_len=cat("id_len"), sbuf=hbuf if shared else cat("sbuf"),
            seq_start=np.concatenate([b.seq_start + s_shift[i] for i, b in enumerate(blocks)]),
            seq_len=cat("seq_len"), record_index=cat("record_index"))


def offsets(lengths: np.ndarray) -> np.ndarray:
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


def nucleotide_codes(block: RecordBlock) -> np.ndarray:
    """Codes (see ``_CODE``) of ``block.sbuf`` followed by ``SRC_PAD + 8`` bytes of code 5, kept on the block."""
    if block.codes is None:
        raw = block.sbuf.tobytes() + bytes(SRC_PAD + 8)
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
    eol = low_byte == 10
    cr = np.flatnonzero(low_byte == 13)
    if len(cr):  # a CR not followed by LF ends a line too (old Mac files), as Python's text mode reads lines
        eol[cr[a[np.minimum(low[cr] + 1, n - 1)] != 10]] = True
    newline = low[eol]
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
    ws_pos = low[_WHITESPACE_NO_NL[low_byte] & ~eol]
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
    return RecordBlock(a, hdr_start, hdr_end - hdr_start, id_len, a[seq_mask], offsets(seq_len)[:-1], seq_len,
                       record_index)


def _read(handle, path, size: int = -1) -> bytes:
    try:
        return handle.read(size)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(path, f"cannot read: {exc}") from None


def iter_raw_blocks(path, block_bytes: int = DEFAULT_BLOCK_BYTES, *, hasher=None, allow_empty: bool = False
                    ) -> Iterator[RecordBlock]:
    """Stream ``path`` as RecordBlocks of about ``block_bytes`` input bytes each, cut at record boundaries.

    Raises InputError for unreadable, empty or non-FASTA input (an empty or blank file yields nothing if
    ``allow_empty``). Records are not validated here. ``hasher`` is updated with every byte of the file as
    stored (see :func:`open_input`): once the blocks are exhausted, it has hashed the whole file.
    """
    handle = open_input(path, hasher)
    index = 0
    try:
        data = _read(handle, path, block_bytes)
        if not data and not allow_empty:
            raise InputError(path, "empty file")
        if data.startswith(codecs.BOM_UTF8):  # a UTF-8 byte-order mark, as some editors write: not content
            data = data[len(codecs.BOM_UTF8):]
        data = data.lstrip()
        while not data:  # only blank lines so far
            more = _read(handle, path, block_bytes)
            if not more:
                if allow_empty:
                    return
                raise InputError(path, "no FASTA records (the file holds only blank lines)")
            data = more.lstrip()
        _sniff(path, data[:4096])
        pieces: list[bytes] = []  # read but not parsed yet: the start of a record whose end is not seen
        while data:
            # only the new bytes are searched for a record start, so a record of any size is read in linear time
            cut = data.rfind(b"\n>") + 1
            cut = max(cut, data.rfind(b"\r>", cut) + 1)  # a line ended by a bare CR (searched after the LF only)
            if cut <= 0 and pieces and pieces[-1].endswith((b"\n", b"\r")) and data.startswith(b">"):
                cut = 0  # a record starts right at this read
            elif cut <= 0:
                pieces.append(data)
                data = _read(handle, path, block_bytes)
                continue
            part = b"".join(pieces) + data[:cut]
            pieces = [data[cut:]]
            if part:
                block = _parse_block(part, index)
                index += len(block)
                yield block
            data = _read(handle, path, block_bytes)
        part = b"".join(pieces)  # end of input: the rest is whole records
        if part:
            block = _parse_block(part, index)
            index += len(block)
            yield block
    finally:
        handle.close()
    if index == 0:
        raise InputError(path, "no FASTA records")


class SeenIds:
    """The record IDs read so far, for an exact duplicate check at 8 bytes of memory per ID.

    Each ID's 64-bit hash goes into sorted NumPy arrays: levels of geometrically growing size merged like a
    log-structured tree (adding N hashes costs O(N log N) in all, a lookup O(log^2 N)), behind a 16 MiB map of
    the hashes' top 24 bits that answers most lookups of new hashes at once. The IDs themselves are appended,
    one per line, to a temporary file (held in memory up to ``SPOOL_BYTES``, then on disk). Only an ID whose
    hash is already there, which means a repeated ID or (about N^2 / 2^65 of the time) a hash collision, is
    compared byte for byte: with the IDs of its block, and by a search of that file.
    """

    MAP_BITS = 24
    SPOOL_BYTES = 64 << 20
    READ_BYTES = 16 << 20  # the spool file is searched in pieces of this size

    def __init__(self):
        self.levels: list[np.ndarray] = []
        self.seen = np.zeros(1 << self.MAP_BITS, dtype=bool)  # pages are only allocated once touched
        self.spool = tempfile.SpooledTemporaryFile(max_size=self.SPOOL_BYTES)
        self.spool.write(b"\n")  # every ID in it has a line break on each side

    def __len__(self):
        return sum(len(x) for x in self.levels)

    def close(self) -> None:
        self.spool.close()

    def add(self, block: RecordBlock) -> int | None:
        """Add the IDs of a block, unless one of them was read before (in an earlier block or earlier in this
        one): then add nothing and return the position of the first such record in the block."""
        h, text = id_hashes(block)
        hs = np.sort(h)
        if len(hs) and ((hs[1:] == hs[:-1]).any() or self._has_hash(hs).any()):
            repeat = self._first_repeat(block, h)
            if repeat is not None:
                return repeat
        self._add_hashes(hs)
        self.spool.seek(0, io.SEEK_END)
        self.spool.write(text)
        return None

    def _first_repeat(self, block: RecordBlock, h: np.ndarray) -> int | None:
        """The first record of the block whose ID was read before, compared byte for byte; None if there is
        none (its hash matched another ID's only)."""
        before = self._has_hash(h)
        order = np.argsort(h, kind="stable")
        same = np.zeros(len(h), dtype=bool)  # shares its hash with another record of this block
        eq = h[order[1:]] == h[order[:-1]]
        same[order[1:]] |= eq
        same[order[:-1]] |= eq
        suspects = np.flatnonzero(before | same)
        ids = block.take(suspects).id_bytes()
        in_spool = self._spooled({x for x, b in zip(ids, before[suspects]) if b})
        here = set()
        for i, x in zip(suspects.tolist(), ids):
            if x in here or x in in_spool:
                return i
            here.add(x)
        return None

    def _spooled(self, ids: set[bytes]) -> set[bytes]:
        """Those of ``ids`` that are in the spool file (one pass over it, in pieces)."""
        if not ids:
            return set()
        found: set[bytes] = set()
        keep = max(len(x) for x in ids) + 1  # a line split between two pieces is found in the joined tail
        self.spool.seek(0)
        tail = b""
        while piece := self.spool.read(self.READ_BYTES):
            buf = tail + piece
            found.update(x for x in ids - found if b"\n" + x + b"\n" in buf)
            tail = buf[-keep:]
        return found

    def _top(self, h: np.ndarray) -> np.ndarray:
        return (np.asarray(h, dtype=np.uint64) >> np.uint64(64 - self.MAP_BITS)).astype(np.intp)

    def _has_hash(self, h: np.ndarray) -> np.ndarray:
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

    def _add_hashes(self, new: np.ndarray) -> None:
        """Add sorted hashes."""
        self.seen[self._top(new)] = True
        while self.levels and len(self.levels[-1]) <= len(new):
            new = np.sort(np.concatenate([self.levels.pop(), new]), kind="mergesort")
        self.levels.append(new)


def id_hashes(block: RecordBlock) -> tuple[np.ndarray, bytes]:
    """A 64-bit hash of every record ID in the block (a polynomial hash, then mixed; vectorized), and the IDs
    as text, each followed by a line break (grouped by length, not in input order).

    IDs of a few distinct lengths (the usual case) are read as rows of a 2-D window view of the header
    buffer, one length at a time; otherwise all ID bytes are gathered and summed with one prefix sum.
    """
    lens = block.id_len
    powers = _powers(int(lens.max()) if len(lens) else 0)
    groups = _groups(lens)
    with np.errstate(over="ignore"):
        if len(groups) <= 8:
            h = np.zeros(len(lens), dtype=np.uint64)
            text = []
            for n, sel in groups:
                if not n:
                    text.append(b"\n" * len(h[sel]))
                    continue
                ids = _windows(block.hbuf, n)[0][block.hdr_start[sel]]
                h[sel] = ((ids + np.uint64(1)) * powers[:n]).sum(axis=1, dtype=np.uint64)
                lines = np.empty((len(ids), n + 1), dtype=np.uint8)
                lines[:, :n] = ids
                lines[:, n] = 10
                text.append(lines.tobytes())
            text = b"".join(text)
        else:
            off = offsets(lens)
            ids = gather(block.hbuf, block.hdr_start, lens)
            pos_in_id = np.arange(len(ids), dtype=np.int64) - np.repeat(off[:-1], lens)
            cum = np.concatenate(([np.uint64(0)],
                                  np.cumsum((ids + np.uint64(1)) * powers[pos_in_id], dtype=np.uint64)))
            h = cum[off[1:]] - cum[off[:-1]]
            text = np.insert(ids, off[1:], 10).tobytes()
        h = (h ^ (lens.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))) * np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(31)
    return h, text


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


EMPTY_IDS_KEPT = 10


def empty_records_warning(path, count: int, ids) -> str:
    """What a run says of the length-0 records it skipped (they have no chunks, so no row in any output)."""
    named = ", ".join(ids[:EMPTY_IDS_KEPT]) + (", ..." if count > len(ids[:EMPTY_IDS_KEPT]) else "")
    return f"{path}: skipped {count} record(s) of length 0 ({named}); they are in no output file"


class RecordValidator:
    """Checks records as they stream past: nucleotide alphabet, duplicate IDs, empty records."""

    def __init__(self, path):
        self.path = path
        self.ids = SeenIds()
        self.empty_records = 0
        self.empty_ids: list[str] = []  # the first EMPTY_IDS_KEPT of them, to name in warnings
        self.records = 0

    def check(self, block: RecordBlock) -> RecordBlock:
        """Validate a block; return it without its length-0 records (counted in ``empty_records``)."""
        lengths = block.seq_len
        self.records += len(block)
        # alphabet: 10% or more non-IUPAC letters means protein (or garbage) given as nucleotides
        n_bad = _count_per_record(nucleotide_codes(block) == 5, block.seq_start, lengths)
        wrong = np.flatnonzero((lengths > 0) & (n_bad >= MAX_NON_NUCLEOTIDE_FRACTION * lengths))
        if len(wrong):
            i = int(wrong[0])
            raise InputError(self.path, f"{n_bad[i] / lengths[i]:.0%} of its letters are not nucleotide IUPAC "
                             "codes (protein given as nucleotides?)", record=block.take([i]).ids()[0])
        repeat = self.ids.add(block)
        if repeat is not None:
            raise InputError(self.path, "duplicate record ID (outputs would collide)",
                             record=block.take([repeat]).ids()[0])
        empty = lengths == 0
        if empty.any():
            self.empty_records += int(empty.sum())
            room = EMPTY_IDS_KEPT - len(self.empty_ids)
            if room > 0:
                self.empty_ids += block.take(np.flatnonzero(empty)[:room]).ids()
            block = block.take(~empty)
        return block


def iter_record_blocks(path, block_bytes: int = DEFAULT_BLOCK_BYTES, validator: RecordValidator | None = None,
                       hasher=None) -> Iterator[RecordBlock]:
    """Stream validated records (length-0 records removed, counted on the validator); ``hasher`` as for
    :func:`iter_raw_blocks`."""
    validator = validator or RecordValidator(path)
    for block in iter_raw_blocks(path, block_bytes, hasher=hasher):
        block = validator.check(block)
        if len(block):
            yield block


@dataclass(frozen=True)
class InputSummary:
    """An input file, validated, and its identity: the size and SHA-256 of its bytes as stored on disk (the
    compressed bytes of a gzip file)."""

    path: str
    records: int  # empty ones included
    empty_records: int
    bases: int
    size: int
    sha256: str
    empty_ids: tuple = ()  # the first few length-0 records' IDs


class _Counting:
    """A hash that also counts the bytes it is given."""

    def __init__(self, hasher):
        self.hasher, self.size = hasher, 0

    def update(self, data) -> None:
        self.hasher.update(data)
        self.size += memoryview(data).nbytes


def scan(path, block_bytes: int = DEFAULT_BLOCK_BYTES) -> InputSummary:
    """Validate the whole input as :class:`RecordValidator` does (alphabet, duplicate IDs, empty records) and
    hash it, in one streaming pass: the file is read once. Bad input raises InputError naming the file and
    the record."""
    digest = _Counting(hashlib.sha256())
    validator = RecordValidator(path)
    bases = 0
    try:
        for block in iter_raw_blocks(path, block_bytes, hasher=digest):
            bases += int(validator.check(block).seq_len.sum())
    finally:
        validator.ids.close()
    return InputSummary(path=str(path), records=validator.records, empty_records=validator.empty_records,
                        bases=bases, size=digest.size, sha256=digest.hasher.hexdigest(),
                        empty_ids=tuple(validator.empty_ids))


# --------------------------------------------------------------------------------------------------
# Writing FASTA without a Python loop per record
# --------------------------------------------------------------------------------------------------


def _windows(src: np.ndarray, width: int, step: int = 1, lines: int | None = None, line_step: int = 0
             ) -> tuple[np.ndarray, int]:
    """A view ``V`` with ``V[k, t] = src[k + shift + step * t]`` for every ``k`` it has, and ``shift``; with
    ``lines``, ``V[k, j, t] = src[k + shift + line_step * j + step * t]`` (``line_step`` of the sign of ``step``).

    Row ``s - shift`` is the ``width`` elements (``lines`` times) read from ``src[s]`` with the given steps;
    only rows whose elements all lie inside ``src`` exist (so fancy indexing is bounds-checked).
    """
    dims, steps = ((width,), (step,)) if lines is None else ((lines, width), (line_step, step))
    span = sum(abs(st) * (d - 1) for d, st in zip(dims, steps))
    shift = span if step < 0 else 0
    e = src.strides[0]
    view = np.lib.stride_tricks.as_strided(src[shift:], shape=(max(len(src) - span, 0), *dims),
                                           strides=(e, *(st * e for st in steps)))
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
    to ``min(room_i, PAD - 1)`` bytes longer than its segment: ``room_i`` bytes after segment i must be
    written later (or be spare). ``src`` must be readable that far past each segment (before it if step < 0).
    """
    if not len(length):
        return
    lmax = int(length.max())
    q = min(int(room.min()) + 1, PAD)
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
class Headers:
    """Header lines of FASTA entries: ``width`` per entry and, per distinct width, ``(width, selection, rows)``
    with the lines as rows of a 2-D array (see :func:`entry_headers`)."""

    width: np.ndarray
    classes: list


_POW10 = 10 ** np.arange(1, 19, dtype=np.int64)


def entry_headers(block: RecordBlock, record: np.ndarray, number: np.ndarray, tag: bytes,
                  suffix: np.ndarray | None = None) -> Headers:
    """The header lines ``>{id}{tag}{number}{suffix}\\n`` of entries derived from the block's records.

    ``record`` indexes the block's records, ``number`` is a non-negative integer per entry, ``suffix`` (if
    given) a 2-D byte array with one row per entry. Entries are grouped by (ID length, digits of ``number``);
    each group's lines are built column block by column block: '>', the IDs as window rows of the header
    buffer, the tag, the digits, the suffix, '\\n'.
    """
    id_len = block.id_len[record]
    digits = np.searchsorted(_POW10, number, side="right") + 1
    tag_row = np.frombuffer(tag, dtype=np.uint8)
    t = len(tag_row)
    x = 0 if suffix is None else suffix.shape[1]
    classes = []
    for key, sel in _groups(id_len * 32 + digits):
        i, d = key // 32, key % 32
        w = 1 + i + t + d + x + 1
        kk = number[sel]
        rows = np.empty((len(kk), w), dtype=np.uint8)
        rows[:, 0] = 62
        if i:
            ids, _ = _windows(block.hbuf, i)
            rows[:, 1:1 + i] = ids[block.hdr_start[record[sel]]]
        rows[:, 1 + i:1 + i + t] = tag_row
        for j in range(i + t + d, i + t, -1):
            rows[:, j] = kk % 10 + 48
            kk = kk // 10
        if x:
            rows[:, 1 + i + t + d:-1] = suffix[sel]
        rows[:, -1] = 10
        classes.append((w, sel, rows))
    return Headers(width=id_len + digits + (2 + t + x), classes=classes)


def fasta_text(headers: Headers, seq_len: np.ndarray, parts, width: int | None = None) -> np.ndarray:
    """FASTA text, ``{header line}{sequence}\\n`` per entry, as a uint8 array. With ``width``, sequences are
    wrapped in lines of ``width`` letters, the last one shorter, as Biopython writes FASTA.

    ``parts`` are ``(selection, src, start, step, table)``: where the sequences of the selected entries come
    from (see :func:`_put`). Sequences are copied first, with the header lines and line breaks after them
    as the room that lets their copies overrun.
    """
    n = len(seq_len)
    w = width or 0
    full = np.zeros(n, dtype=np.int64) if width is None else np.maximum((seq_len - 1) // w, 0)  # all lines but the last
    off = offsets(headers.width + seq_len + full + 1)
    total = int(off[-1])
    out = np.empty(total + PAD, dtype=np.uint8)
    seq_pos = off[:-1] + headers.width
    room = np.empty(n, dtype=np.int64)
    room[:-1] = headers.width[1:] + 1
    room[-1:] = PAD
    for sel, src, start, step, table in parts:
        f = full[sel]
        if f.any():
            entry = np.arange(n)[sel]
            for lines, g in _groups(f):
                if lines:
                    _put_lines(out, seq_pos[entry[g]], lines, w, src, start[g], step, table)
        _put(out, seq_pos[sel] + f * (w + 1), seq_len[sel] - f * w, room[sel], src, start + f * (step * w), step,
             table)
    for hw, sel, rows in headers.classes:
        _windows(out, hw)[0][off[:-1][sel]] = rows
    out[off[1:] - 1] = 10
    return out[:total]


def _put_lines(out: np.ndarray, pos, lines: int, width: int, src: np.ndarray, start, step: int, table: bytes | None):
    """``lines`` lines of ``width`` letters, each followed by a line break, at each ``out[pos_i]``: the letters
    ``src[start_i + step * t]`` for ``t < lines * width`` (mapped through ``table`` if given)."""
    rows_src, shift = _windows(src, width, step, lines, step * width)
    first = start - shift
    if first.min() < 0:
        raise ValueError("window source lacks padding")
    rows = rows_src[first]
    if table is not None:
        rows = np.frombuffer(rows.tobytes().translate(table), dtype=np.uint8).reshape(rows.shape)
    _windows(out, width, 1, lines, width + 1)[0][pos] = rows
    _windows(out[width:], lines, width + 1)[0][pos] = 10


def padded(a: np.ndarray) -> np.ndarray:
    """``a`` with ``SRC_PAD`` zero bytes on each side."""
    out = np.zeros(len(a) + 2 * SRC_PAD, dtype=np.uint8)
    out[SRC_PAD:SRC_PAD + len(a)] = a
    return out


def read_fasta_records(path) -> list[tuple[str, str, str]]:
    """``(id, description, sequence)`` of every record of a small FASTA file, in input order (the description is
    the header line without ``>``)."""
    records = []
    for block in iter_raw_blocks(path, allow_empty=True):
        records += zip(block.ids(), block.descriptions(), [block.sequence(i) for i in range(len(block))])
    return records


def read_fasta_pairs(path) -> list[tuple[str, str]]:
    """``(id, sequence)`` of every record of a small FASTA file, in input order (an empty file has none).

    Records are read by this module's reader (no validation; empty records included), as Biopython reads them.
    """
    pairs = []
    for block in iter_raw_blocks(path, allow_empty=True):
        pairs += zip(block.ids(), [block.sequence(i) for i in range(len(block))])
    return pairs
