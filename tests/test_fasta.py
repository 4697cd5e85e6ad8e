"""Reading FASTA: plain and gzip input, streaming blocks, validation, bad input named in one line."""

import gzip
import hashlib
import os
import threading

import numpy as np
import pytest

from conftest import EXAMPLES, GOLDEN
from virnucpro_kernel import fasta
from virnucpro_kernel.errors import InputError, VirNucProError
from virnucpro_kernel.frames import prepare, prepare_reference


def test_duplicate_id_found_among_ids_of_many_lengths(tmp_path):
    records = "".join(f">{'y' * (i % 30)}{i}\nACGTACGT\n" for i in range(200))
    assert "'yyyyy5'" in _err(tmp_path, records + ">yyyyy5\nACGT\n")


def test_gzip_input_and_small_blocks_give_same_output(tmp_path):
    src = EXAMPLES / "viralverify_test.fa"
    gz = tmp_path / "in.fa.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    prepare(src, 300, tmp_path / "a")
    prepare(gz, 300, tmp_path / "b", block_bytes=1000)
    for name in ("chunks.fa", "identified_nucleotide.fa", "identified_protein.faa"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_record_block_concat_and_take_keep_records():
    blocks = list(fasta.iter_raw_blocks(EXAMPLES / "jaeger_test_contigs.fa", block_bytes=50_000))
    assert len(blocks) > 1
    whole = fasta.RecordBlock.concat(blocks)
    assert whole.ids() == [i for b in blocks for i in b.ids()]
    assert whole.record_index.tolist() == list(range(len(whole)))
    sub = whole.take(slice(2, 5))
    assert sub.sequence(0) == whole.sequence(2)


def test_read_fasta_pairs_small_file(tmp_path):
    path = tmp_path / "x.fa"
    path.write_text(">a desc here\nacgt\n\nTTGG\r\n>b\n>c x\nNNNA\n")
    assert fasta.read_fasta_pairs(path) == [("a", "acgtTTGG"), ("b", ""), ("c", "NNNA")]
    (tmp_path / "empty.fa").write_text("")
    (tmp_path / "blank.fa").write_text("\n \n")
    assert fasta.read_fasta_pairs(tmp_path / "empty.fa") == fasta.read_fasta_pairs(tmp_path / "blank.fa") == []


@pytest.mark.parametrize("path", [*sorted(EXAMPLES.glob("*.fa")), *sorted(GOLDEN.glob("*.fa*")),
                                  *sorted(GOLDEN.glob("edge/*/in/*"))], ids=lambda p: p.name)
def test_read_fasta_pairs_agrees_with_biopython(path):
    """Records as the original reads them (Biopython, text mode: CR, LF and CRLF all end lines)."""
    from Bio import SeqIO

    assert fasta.read_fasta_pairs(path) == [(r.id, str(r.seq)) for r in SeqIO.parse(path, "fasta")]


EDGE = GOLDEN / "edge"


def _prepared(src, out, cs=300, **kw):
    prepare(src, cs, out, **kw)
    return {name: (out / name).read_bytes() for name in ("chunks.fa", "identified_nucleotide.fa",
                                                         "identified_protein.faa")}


@pytest.mark.parametrize("block_bytes", [fasta.DEFAULT_BLOCK_BYTES, 97])
def test_bare_carriage_returns_end_lines(tmp_path, block_bytes):
    """Old Mac line endings: a bare CR ends a line, as Python's text mode (and so Biopython) reads it."""
    lf = EXAMPLES / "jaeger_test_contigs.fa"
    lines = []  # sequences wrapped at 70 columns
    for line in lf.read_bytes().splitlines():
        lines += [line] if line.startswith(b">") else [line[i:i + 70] for i in range(0, len(line), 70)]
    cr = tmp_path / "cr.fa"
    cr.write_bytes(b"".join(line + b"\r" for line in lines))
    mixed = tmp_path / "mixed.fa"  # CR, LF and CRLF in one file
    mixed.write_bytes(b"".join(line + (b"\r", b"\n", b"\r\n")[i % 3] for i, line in enumerate(lines)))
    expected = _prepared(lf, tmp_path / "lf")
    assert _prepared(cr, tmp_path / "cr", block_bytes=block_bytes) == expected
    assert _prepared(mixed, tmp_path / "mixed", block_bytes=block_bytes) == expected
    assert fasta.read_fasta_pairs(cr) == fasta.read_fasta_pairs(lf)


def test_utf8_byte_order_mark_is_skipped(tmp_path):
    src = EXAMPLES / "viralverify_test.fa"
    bom = tmp_path / "bom.fa"
    bom.write_bytes(b"\xef\xbb\xbf" + src.read_bytes())
    gz = tmp_path / "bom.fa.gz"
    gz.write_bytes(gzip.compress(bom.read_bytes()))
    expected = _prepared(src, tmp_path / "plain")
    assert _prepared(bom, tmp_path / "bom") == expected
    assert _prepared(gz, tmp_path / "gz") == expected
    assert fasta.read_fasta_pairs(bom) == fasta.read_fasta_pairs(src)
    blank_bom = tmp_path / "blank_bom.fa"
    blank_bom.write_bytes(b"\xef\xbb\xbf\n\n>x\nACGTACGT\n")
    assert fasta.read_fasta_pairs(blank_bom) == [("x", "ACGTACGT")]



def test_scan_validates_and_hashes_the_file_as_stored(tmp_path):
    src = EXAMPLES / "jaeger_test_contigs.fa"
    raw = b">empty\n" + src.read_bytes() + b">empty2\n\n>last\nACGTN\n"
    plain = tmp_path / "in.fa"
    plain.write_bytes(raw)
    gz = tmp_path / "in.fa.gz"  # two gzip members
    gz.write_bytes(gzip.compress(raw[:100_000]) + gzip.compress(raw[100_000:]))
    pairs = fasta.read_fasta_pairs(plain)
    for path in (plain, gz):
        summary = fasta.scan(path, block_bytes=10_000)
        data = path.read_bytes()
        assert summary == fasta.InputSummary(
            path=str(path), records=len(pairs), empty_records=2, bases=sum(len(q) for _, q in pairs),
            size=len(data), sha256=hashlib.sha256(data).hexdigest(), empty_ids=("empty", "empty2"))


def test_scan_reads_the_input_once(tmp_path):
    """A named pipe can be read only once: scan validates and hashes it all the same."""
    data = gzip.compress((EXAMPLES / "viralverify_test.fa").read_bytes())
    fifo = tmp_path / "in.fa.gz"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_bytes, args=(data,))
    writer.start()
    summary = fasta.scan(fifo)
    writer.join()
    assert (summary.sha256, summary.size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert summary.records == 5


def test_scan_names_file_and_record_of_bad_input(tmp_path):
    p = tmp_path / "dup.fa"
    p.write_text(">a\nACGT\n>b\nACGT\n>a\nACGT\n")
    with pytest.raises(InputError, match=f"^{p}: record 'a': duplicate record ID"):
        fasta.scan(p)


def test_streaming_readers_hash_every_byte_read(tmp_path):
    src = EXAMPLES / "viralverify_test.fa"
    gz = tmp_path / "in.fa.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    for path in (src, gz):
        h1, h2 = hashlib.sha256(), hashlib.md5()
        list(fasta.iter_raw_blocks(path, 4096, hasher=h1))
        list(fasta.iter_record_blocks(path, hasher=h2))
        assert h1.hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()
        assert h2.hexdigest() == hashlib.md5(path.read_bytes()).hexdigest()


def test_open_input_closes_the_file_under_gzip(tmp_path):
    gz = tmp_path / "in.fa.gz"
    gz.write_bytes(gzip.compress(b">a\nACGT\n"))
    for hasher in (None, hashlib.sha256()):
        stream = fasta.open_input(gz, hasher)
        raw = stream.fileobj
        stream.close()
        assert raw.closed


# ---------------------------------------------------------------------------------------------- bad input


def _err(tmp_path, content, name="in.fa", cs=300, mode="w"):
    p = tmp_path / name
    if mode == "wb":
        p.write_bytes(content)
    else:
        p.write_text(content)
    out = tmp_path / "out"
    with pytest.raises(VirNucProError) as exc:
        prepare(p, cs, out)
    assert not out.exists(), "nothing may be left in --out"
    assert not list(tmp_path.glob(".out.tmp-*")), "no temporary folder may be left"
    return str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        prepare(tmp_path / "nope.fa", 300, tmp_path / "out")


def test_unreadable_file(tmp_path):
    import os
    if os.geteuid() == 0:
        d = tmp_path / "dir.fa"
        d.mkdir()
        with pytest.raises(InputError, match="directory"):
            prepare(d, 300, tmp_path / "out")
    else:
        p = tmp_path / "x.fa"
        p.write_text(">a\nACGT\n")
        p.chmod(0)
        with pytest.raises(InputError, match="cannot read"):
            prepare(p, 300, tmp_path / "out")


def test_empty_and_blank_files(tmp_path):
    assert "empty file" in _err(tmp_path, "")
    assert "no FASTA records" in _err(tmp_path, "\n\n  \n", name="blank.fa")


def test_not_fasta(tmp_path):
    assert "FASTQ" in _err(tmp_path, "@r1\nACGT\n+\nIIII\n")
    assert "GenBank" in _err(tmp_path, "LOCUS       X 100 bp DNA\n", name="g.gb")
    assert "binary" in _err(tmp_path, b"\x00\x01\x02\xff" * 100, mode="wb", name="b.fa")
    assert "does not start with '>'" in _err(tmp_path, "hello world\n", name="t.fa")


def test_protein_given_as_nucleotides_names_the_record(tmp_path):
    msg = _err(tmp_path, ">ok\nACGTACGT\n>prot1 a protein\nMKVLAAGIVGLLLAQEEPTRKLW\n")
    assert "prot1" in msg and "nucleotide" in msg


def test_nine_percent_ambiguity_is_fine_ten_is_not(tmp_path):
    ok = tmp_path / "ok.fa"
    ok.write_text(">a\n" + "ACGTACGTA" * 10 + "EEEEEEEEE" + "\n")  # 9/99 letters not IUPAC
    prepare(ok, 300, tmp_path / "o1")
    assert "'b'" in _err(tmp_path, ">b\n" + "ACGTACGTA" + "E" + "\n")  # 10%


def test_duplicate_ids_within_and_across_blocks(tmp_path):
    assert "dup" in _err(tmp_path, ">dup x\nACGT\n>other\nACGT\n>dup y\nACGTT\n")
    p = tmp_path / "big.fa"
    p.write_text("".join(f">r{i}\n{'ACGT' * 30}\n" for i in range(3000)) + ">r7\nACGT\n")
    with pytest.raises(InputError, match="'r7'.*duplicate"):
        prepare(p, 300, tmp_path / "o", block_bytes=2048)


def test_seen_ids_find_repeats_across_blocks(tmp_path):
    p = tmp_path / "ids.fa"
    p.write_text("".join(f">r{i}\nACGT\n" for i in range(5000)))
    seen = fasta.SeenIds()
    blocks = list(fasta.iter_raw_blocks(p, block_bytes=1000))
    assert len(blocks) > 20
    for block in blocks:
        assert seen.add(block) is None
    assert len(seen) == 5000 and len(seen.levels) <= 13
    for block in blocks[::7]:
        assert seen.add(block) == 0  # every ID is a repeat now: the block's first record is named


def _thue_morse_ids(n=2048):
    """Two different IDs with the same polynomial hash modulo 2^64 for any odd base (a Thue-Morse string
    and its complement: their hashes differ by a product of 11 factors 1 - B^(2^k), divisible by 2^66)."""
    t = [0]
    while len(t) < n:
        t += [1 - x for x in t]
    return "".join("AB"[x] for x in t), "".join("BA"[x] for x in t)


@pytest.mark.parametrize("between", [0, 3000])
def test_ids_whose_hashes_collide_are_not_duplicates(tmp_path, between):
    a, b = _thue_morse_ids()
    p = tmp_path / "in.fa"
    p.write_text(f">{a}\nACGTAAACCC\n" + "".join(f">x{i}\nACGT\n" for i in range(between)) + f">{b}\nACGTAAA\n")
    stats = prepare(p, 300, tmp_path / "ok", block_bytes=4096)
    assert stats.records == between + 2
    blocks = list(fasta.iter_raw_blocks(p, block_bytes=4096))
    h = np.concatenate([fasta.id_hashes(block)[0] for block in blocks])
    assert a != b and h[0] == h[-1]  # a real collision of the 64-bit hash
    assert _err(tmp_path, p.read_text() + f">{b} again\nACGT\n", name="dup.fa").endswith(
        "duplicate record ID (outputs would collide)")


@pytest.fixture
def one_hash_for_all(monkeypatch):
    """Every ID hashes to the same value: the exact comparison decides alone."""
    real = fasta.id_hashes

    def constant(block):
        h, text = real(block)
        return np.full_like(h, 0x5EED), text

    monkeypatch.setattr(fasta, "id_hashes", constant)


def test_exact_check_when_every_hash_collides(tmp_path, one_hash_for_all):
    p = tmp_path / "in.fa"
    p.write_text("".join(f">id{i} d\nACGTACGT\n" for i in range(400)))
    stats = prepare(p, 300, tmp_path / "ok", block_bytes=512)
    assert stats.records == 400
    assert "'id7'" in _err(tmp_path, p.read_text() + ">id7\nACGT\n", name="across.fa")
    assert "'id399'" in _err(tmp_path, p.read_text() + ">z\nAC\n>id399\nACGT\n", name="across2.fa")
    assert "'b'" in _err(tmp_path, ">a\nACGT\n>b\nACGT\n>c\nACGT\n>b\nACGT\n", name="within.fa")
    assert "''" in _err(tmp_path, ">\nACGT\n>x\nACGT\n> \nACGT\n", name="empty_ids.fa")


def test_exact_check_reads_ids_back_from_disk(tmp_path, one_hash_for_all, monkeypatch):
    """IDs past the in-memory part of the spool are on disk, read back in small pieces: an ID split between
    two pieces is still found."""
    monkeypatch.setattr(fasta.SeenIds, "SPOOL_BYTES", 100)
    monkeypatch.setattr(fasta.SeenIds, "READ_BYTES", 7)
    p = tmp_path / "in.fa"
    p.write_text("".join(f">read_{i}\nACGTACGT\n" for i in range(300)))
    assert prepare(p, 300, tmp_path / "ok", block_bytes=256).records == 300
    for i in (0, 1, 77, 150, 298):
        assert f"'read_{i}'" in _err(tmp_path, p.read_text() + f">read_{i}\nACGT\n", name=f"d{i}.fa")


def test_blanks_after_the_header_marker_are_not_part_of_the_id(tmp_path):
    """``> NC_1 desc`` has the ID ``NC_1``, as Biopython (and so the original) reads it."""
    src = tmp_path / "sp.fa"
    src.write_text("> NC_1 desc\nATGAAACCCGGGTTTAAACCC\n>\tNC_2\nATGAAACCCGGGTTTAAAGGG\n")
    prepare(src, 300, tmp_path / "out")
    chunks, nucs, prots = prepare_reference(src, 300)
    assert [i for i, _ in chunks] == ["NC_1_chunk_1", "NC_2_chunk_1"]
    assert fasta.read_fasta_pairs(tmp_path / "out" / "identified_protein.faa") == prots


def test_a_record_much_larger_than_a_block_reads_in_linear_time(tmp_path):
    import time

    src = tmp_path / "big.fa"
    src.write_text(">big\n" + "ACGT" * 2_000_000 + "\n>small\nACGTACGT\n")
    t0 = time.perf_counter()
    # ~8,000 reads of one 8 MB record: re-joining and re-searching what was read before at each read (quadratic)
    # would move and scan ~32 GB here
    blocks = list(fasta.iter_raw_blocks(src, block_bytes=1024))
    assert time.perf_counter() - t0 < 5
    whole = fasta.RecordBlock.concat(blocks)
    assert whole.ids() == ["big", "small"] and whole.seq_len.tolist() == [8_000_000, 8]
