"""FASTA -> chunks -> frames: the vectorized path against the golden files and the per-codon reference."""

import gzip
import random
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import EXAMPLES, FIXTURES, GOLDEN
from virnucpro_kernel import sequences as S
from virnucpro_kernel.errors import InputError, VirNucProError

GOLDEN_CASES = [
    ("viralverify_test", EXAMPLES / "viralverify_test.fa", 300, None),
    ("viralverify_test", EXAMPLES / "viralverify_test.fa", 500, None),
    ("broad_test_fixed_500bp", GOLDEN / "broad_test_fixed_500bp.fa", 500, "chunked500"),
    ("broad_test_with_orfs", GOLDEN / "broad_test_with_orfs.fa", 500, "chunked500"),
]


@pytest.mark.parametrize("name,src,cs,chunked", GOLDEN_CASES)
def test_golden_files_reproduced(tmp_path, name, src, cs, chunked):
    out = tmp_path / "out"
    S.prepare(src, cs, out)
    prefix = name if chunked else f"{name}_{cs}"
    for ours, theirs in (("identified_nucleotide.fa", f"{prefix}_identified_nucleotide.fa"),
                         ("identified_protein.faa", f"{prefix}_identified_protein.faa")):
        assert S.read_fasta_pairs(out / ours) == S.read_fasta_pairs(GOLDEN / theirs)
        # one sequence per line, as the original writes them
        lines = (out / ours).read_text().splitlines()
        assert len(lines) == 2 * len(S.read_fasta_pairs(out / ours))
    if chunked:
        assert S.read_fasta_pairs(out / "chunks.fa") == S.read_fasta_pairs(GOLDEN / f"{name}_{chunked}.fa")


def test_reference_path_reproduces_golden_too():
    chunks, nucs, prots = S.prepare_reference(EXAMPLES / "viralverify_test.fa", 300)
    assert nucs == S.read_fasta_pairs(GOLDEN / "viralverify_test_300_identified_nucleotide.fa")
    assert prots == S.read_fasta_pairs(GOLDEN / "viralverify_test_300_identified_protein.faa")


@pytest.mark.parametrize("L,expected", [(501, [(0, 500), (250, 501)]), (1200, [(0, 500), (399, 899), (798, 1200)]),
                                        (1001, [(0, 500), (333, 833), (666, 1001)]), (500, [(0, 500)]),
                                        (137, [(0, 137)]), (0, [])])
def test_chunk_layout_matches_reference_examples(L, expected):
    rec, k, start, length = S.chunk_layout(np.array([L]), 500)
    assert [(int(s), int(s + n)) for s, n in zip(start, length)] == expected
    seq = "".join(random.Random(L).choice("ACGT") for _ in range(L))
    assert S.chunk_sequence_reference(seq, 500) == [seq[a:b] for a, b in expected]


def test_chunk_layout_all_lengths_against_reference():
    for cs in S.CHUNK_SIZES:
        lengths = np.arange(0, 3 * cs + 1)
        rec, k, start, length = S.chunk_layout(lengths, cs)
        for L in range(0, 3 * cs + 1, 7):
            seq = "x" * L
            ref = S.chunk_sequence_reference(seq, cs)
            sel = rec == L
            got_starts = start[sel].tolist()
            assert [len(c) for c in ref] == length[sel].tolist()
            # starts implied by the reference
            pos, starts = 0, []
            n = len(ref)
            if n:
                R = n * cs - L
                q = R // n
                m = R - q * (n - 1)
                shifts = [q + 1] * m + [q] * max(0, n - 1 - m) + [0]
                starts = [0] + [kk * cs - sum(shifts[:kk]) for kk in range(1, n)]
            assert got_starts == starts


ALPHABET = "ACGTACGTACGTACGTNNNRYKMSWBDHVUacgtn"


def _random_records(rng, n, max_len):
    records = []
    for i in range(n):
        L = rng.randrange(0, max_len + 1)
        seq = "".join(rng.choice(ALPHABET) for _ in range(L))
        if rng.random() < 0.3 and L > 20:  # a run of N
            a = rng.randrange(0, L - 10)
            seq = seq[:a] + "N" * rng.randrange(1, 10) + seq[a + 10:]
        records.append((f"r{i}", seq))
    return records


def _write_fasta(path, records, width=None, crlf=False, description=True):
    nl = "\r\n" if crlf else "\n"
    with open(path, "w", newline="") as fh:
        for rid, seq in records:
            fh.write(f">{rid}" + (" some description" if description else "") + nl)
            if width:
                for i in range(0, len(seq), width):
                    fh.write(seq[i:i + width] + nl)
            else:
                fh.write(seq + nl)


def _check_against_reference(tmp_path, records, cs, **layout):
    src = tmp_path / "in.fa"
    _write_fasta(src, records, **layout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        S.prepare(src, cs, tmp_path / "out", block_bytes=4096)
    chunks, nucs, prots = S.prepare_reference(src, cs)
    assert S.read_fasta_pairs(tmp_path / "out" / "chunks.fa") == [(i, s) for i, s in chunks]
    assert S.read_fasta_pairs(tmp_path / "out" / "identified_nucleotide.fa") == nucs
    assert S.read_fasta_pairs(tmp_path / "out" / "identified_protein.faa") == prots
    # byte for byte: one '>{id}' line and one sequence line per entry, nothing else
    for name, entries in (("chunks.fa", chunks), ("identified_nucleotide.fa", nucs),
                          ("identified_protein.faa", prots)):
        assert (tmp_path / "out" / name).read_bytes() == "".join(f">{i}\n{q}\n" for i, q in entries).encode()


@pytest.mark.parametrize("cs", S.CHUNK_SIZES)
@pytest.mark.parametrize("layout", [{}, {"width": 60}, {"width": 61, "crlf": True}, {"description": False}])
def test_vectorized_equals_reference_on_random_records(tmp_path, cs, layout):
    rng = random.Random(hash((cs, str(layout))) & 0xFFFF)
    _check_against_reference(tmp_path, _random_records(rng, 60, 3 * cs), cs, **layout)


@settings(max_examples=40, deadline=None)
@given(seqs=st.lists(st.text(alphabet="ACGTNRYacgtn", min_size=0, max_size=1500), min_size=1, max_size=6),
       cs=st.sampled_from(S.CHUNK_SIZES))
def test_vectorized_equals_reference_property(tmp_path_factory, seqs, cs):
    tmp = tmp_path_factory.mktemp("prop")
    records = [(f"s{i}", s) for i, s in enumerate(seqs)]
    if all(len(s) == 0 for s in seqs):
        records.append(("nonempty", "ACGTACGTAAA"))
    _check_against_reference(tmp, records, cs)


@pytest.mark.parametrize("cs", S.CHUNK_SIZES)
def test_vectorized_equals_reference_with_varied_ids_and_many_chunks(tmp_path, cs):
    """IDs of many lengths in one block, chunk numbers of several digits, a record larger than a block."""
    rng = random.Random(cs)
    records = [(f"id{'x' * rng.randrange(0, 40)}{i}", "".join(rng.choice("ACGTACGTNacgt") for _ in range(
        rng.randrange(1, 700)))) for i in range(150)]
    records.insert(75, ("long", "".join(rng.choice("ACGTACGTACGTNRYacgt") for _ in range(12 * cs + 7))))
    _check_against_reference(tmp_path, records, cs)
    _check_against_reference(tmp_path, records, cs, width=70, crlf=True)


def test_duplicate_id_found_among_ids_of_many_lengths(tmp_path):
    records = "".join(f">{'y' * (i % 30)}{i}\nACGTACGT\n" for i in range(200))
    assert "'yyyyy5'" in _err(tmp_path, records + ">yyyyy5\nACGT\n")


def test_gzip_input_and_small_blocks_give_same_output(tmp_path):
    src = EXAMPLES / "viralverify_test.fa"
    gz = tmp_path / "in.fa.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    S.prepare(src, 300, tmp_path / "a")
    S.prepare(gz, 300, tmp_path / "b", block_bytes=1000)
    for name in ("chunks.fa", "identified_nucleotide.fa", "identified_protein.faa"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_frames_carry_record_chunk_and_frame(tmp_path):
    block = S.RecordBlock.concat(list(S.iter_record_blocks(GOLDEN / "broad_test_with_orfs.fa")))
    frames = S.frames_of_chunks(block, S.chunk_block(block, 500))
    ids = block.ids()
    got = [f"{ids[r]}_chunk_{c}{S.FRAME_LABELS[f]}" for r, c, f in zip(frames.record, frames.chunk, frames.frame)]
    assert got == [i for i, _ in S.read_fasta_pairs(GOLDEN / "broad_test_with_orfs_identified_protein.faa")]
    assert frames.proteins() == [s for _, s in S.read_fasta_pairs(GOLDEN / "broad_test_with_orfs_identified_protein.faa")]


def test_record_block_concat_and_take_keep_records():
    blocks = list(S.iter_raw_blocks(EXAMPLES / "jaeger_test_contigs.fa", block_bytes=50_000))
    assert len(blocks) > 1
    whole = S.RecordBlock.concat(blocks)
    assert whole.ids() == [i for b in blocks for i in b.ids()]
    assert whole.record_index.tolist() == list(range(len(whole)))
    sub = whole.take(slice(2, 5))
    assert sub.sequence(0) == whole.sequence(2)


# ---------------------------------------------------------------------------------------------- bad input


def _err(tmp_path, content, name="in.fa", cs=300, mode="w"):
    p = tmp_path / name
    if mode == "wb":
        p.write_bytes(content)
    else:
        p.write_text(content)
    out = tmp_path / "out"
    with pytest.raises(VirNucProError) as exc:
        S.prepare(p, cs, out)
    assert not out.exists(), "nothing may be left in --out"
    assert not list(tmp_path.glob(".out.tmp-*")), "no temporary folder may be left"
    return str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        S.prepare(tmp_path / "nope.fa", 300, tmp_path / "out")


def test_unreadable_file(tmp_path):
    import os
    if os.geteuid() == 0:
        d = tmp_path / "dir.fa"
        d.mkdir()
        with pytest.raises(InputError, match="directory"):
            S.prepare(d, 300, tmp_path / "out")
    else:
        p = tmp_path / "x.fa"
        p.write_text(">a\nACGT\n")
        p.chmod(0)
        with pytest.raises(InputError, match="cannot read"):
            S.prepare(p, 300, tmp_path / "out")


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
    S.prepare(ok, 300, tmp_path / "o1")
    assert "'b'" in _err(tmp_path, ">b\n" + "ACGTACGTA" + "E" + "\n")  # 10%


def test_duplicate_ids_within_and_across_blocks(tmp_path):
    assert "dup" in _err(tmp_path, ">dup x\nACGT\n>other\nACGT\n>dup y\nACGTT\n")
    p = tmp_path / "big.fa"
    p.write_text("".join(f">r{i}\n{'ACGT' * 30}\n" for i in range(3000)) + ">r7\nACGT\n")
    with pytest.raises(InputError, match="'r7'.*duplicate"):
        S.prepare(p, 300, tmp_path / "o", block_bytes=2048)


def test_chunk_size_must_be_300_or_500(tmp_path):
    with pytest.raises(VirNucProError, match="300 or 500"):
        S.prepare(EXAMPLES / "jaeger_short.fa", 400, tmp_path / "out")


def test_empty_records_skipped_with_warning(tmp_path):
    p = tmp_path / "e.fa"
    p.write_text(">empty1\n>a\nATGAAACCCGGGTTT\n>empty2\n\n>b\nATGAAATTT\n")
    with pytest.warns(UserWarning, match="skipped 2 record"):
        stats = S.prepare(p, 300, tmp_path / "out")
    assert stats.records == 4 and stats.empty_records == 2
    ids = [i for i, _ in S.read_fasta_pairs(tmp_path / "out" / "chunks.fa")]
    assert ids == ["a_chunk_1", "b_chunk_1"]


def test_no_stop_free_frame_warns_and_writes_empty_files(tmp_path):
    p = tmp_path / "stops.fa"
    # no frame reads a complete standard codon: nothing is kept
    p.write_text(">only_n\n" + "N" * 40 + "\n>short\nAC\n")
    assert S.frames_reference("AC") == [] and S.frames_reference("N" * 40) == []
    with pytest.warns(UserWarning, match="no chunk has a stop-free frame"):
        S.prepare(p, 300, tmp_path / "out")
    assert (tmp_path / "out" / "identified_nucleotide.fa").read_text() == ""
    assert (tmp_path / "out" / "identified_protein.faa").read_text() == ""


def test_compact_id_set_finds_members():
    s = S.CompactIdSet()
    rng = np.random.default_rng(1)
    seen = []
    for _ in range(20):
        h = rng.integers(0, 2**63, 500, dtype=np.uint64)
        assert not s.contains(h).any()
        s.add(h)
        seen.append(h)
    allh = np.concatenate(seen)
    assert s.contains(allh).all() and len(s) == len(allh)
    assert len(s.levels) <= 10


def test_blanks_after_the_header_marker_are_not_part_of_the_id(tmp_path):
    """``> NC_1 desc`` has the ID ``NC_1``, as Biopython (and so the original) reads it."""
    src = tmp_path / "sp.fa"
    src.write_text("> NC_1 desc\nATGAAACCCGGGTTTAAACCC\n>\tNC_2\nATGAAACCCGGGTTTAAAGGG\n")
    S.prepare(src, 300, tmp_path / "out")
    chunks, nucs, prots = S.prepare_reference(src, 300)
    assert [i for i, _ in chunks] == ["NC_1_chunk_1", "NC_2_chunk_1"]
    assert S.read_fasta_pairs(tmp_path / "out" / "identified_protein.faa") == prots


def test_a_record_much_larger_than_a_block_reads_in_linear_time(tmp_path):
    import time

    src = tmp_path / "big.fa"
    src.write_text(">big\n" + "ACGT" * 2_000_000 + "\n>small\nACGTACGT\n")
    t0 = time.perf_counter()
    # ~8,000 reads of one 8 MB record: re-joining and re-searching what was read before at each read (quadratic)
    # would move and scan ~32 GB here
    blocks = list(S.iter_raw_blocks(src, block_bytes=1024))
    assert time.perf_counter() - t0 < 5
    whole = S.RecordBlock.concat(blocks)
    assert whole.ids() == ["big", "small"] and whole.seq_len.tolist() == [8_000_000, 8]
