"""Records -> chunks -> frames -> the three files: the vectorized path against the golden files and the
per-codon reference path."""

import io
import random
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import EXAMPLES, GOLDEN
from virnucpro_kernel import frames as F
from virnucpro_kernel.errors import VirNucProError
from virnucpro_kernel.fasta import DEFAULT_BLOCK_BYTES, RecordBlock, iter_record_blocks, read_fasta_pairs


GOLDEN_CASES = [
    ("viralverify_test", EXAMPLES / "viralverify_test.fa", 300, None),
    ("viralverify_test", EXAMPLES / "viralverify_test.fa", 500, None),
    ("broad_test_fixed_500bp", GOLDEN / "broad_test_fixed_500bp.fa", 500, "chunked500"),
    ("broad_test_with_orfs", GOLDEN / "broad_test_with_orfs.fa", 500, "chunked500"),
]
OUTPUTS = ("chunks.fa", "identified_nucleotide.fa", "identified_protein.faa")


@pytest.mark.parametrize("name,src,cs,chunked", GOLDEN_CASES)
def test_golden_files_reproduced(tmp_path, name, src, cs, chunked):
    out = tmp_path / "out"
    F.prepare(src, cs, out)
    prefix = name if chunked else f"{name}_{cs}"
    for ours, theirs in (("identified_nucleotide.fa", f"{prefix}_identified_nucleotide.fa"),
                         ("identified_protein.faa", f"{prefix}_identified_protein.faa")):
        assert (out / ours).read_bytes() == (GOLDEN / theirs).read_bytes()
    if chunked:
        assert (out / "chunks.fa").read_bytes() == (GOLDEN / f"{name}_{chunked}.fa").read_bytes()


EDGE_CASES = sorted(p.name for p in (GOLDEN / "edge").iterdir())


@pytest.mark.parametrize("block_bytes", [DEFAULT_BLOCK_BYTES, 1000])
@pytest.mark.parametrize("cs", F.CHUNK_SIZES)
@pytest.mark.parametrize("case", EDGE_CASES)
def test_edge_cases_byte_identical_to_the_original(tmp_path, case, cs, block_bytes):
    """IUPAC and lowercase, CRLF, chunk-boundary lengths, bare CR, gaps, RNA: all three files as the original
    writes them, ``chunks.fa`` 60 letters per line included."""
    (src,) = (GOLDEN / "edge" / case / "in").iterdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        F.prepare(src, cs, tmp_path / "out", block_bytes=block_bytes)
    for name in OUTPUTS:
        expected = (GOLDEN / "edge" / case / f"gold{cs}" / name).read_bytes()
        assert (tmp_path / "out" / name).read_bytes() == expected, name


def test_reference_path_reproduces_golden_too():
    chunks, nucs, prots = F.prepare_reference(EXAMPLES / "viralverify_test.fa", 300)
    assert nucs == read_fasta_pairs(GOLDEN / "viralverify_test_300_identified_nucleotide.fa")
    assert prots == read_fasta_pairs(GOLDEN / "viralverify_test_300_identified_protein.faa")


@pytest.mark.parametrize("L,expected", [(501, [(0, 500), (250, 501)]), (1200, [(0, 500), (399, 899), (798, 1200)]),
                                        (1001, [(0, 500), (333, 833), (666, 1001)]), (500, [(0, 500)]),
                                        (137, [(0, 137)]), (0, [])])
def test_chunk_layout_matches_reference_examples(L, expected):
    rec, k, start, length = F.chunk_layout(np.array([L]), 500)
    assert [(int(s), int(s + n)) for s, n in zip(start, length)] == expected
    seq = "".join(random.Random(L).choice("ACGT") for _ in range(L))
    assert F.chunk_sequence_reference(seq, 500) == [seq[a:b] for a, b in expected]


def test_chunk_layout_all_lengths_against_reference():
    for cs in F.CHUNK_SIZES:
        lengths = np.arange(0, 3 * cs + 1)
        rec, k, start, length = F.chunk_layout(lengths, cs)
        for L in range(0, 3 * cs + 1, 7):
            seq = "x" * L
            ref = F.chunk_sequence_reference(seq, cs)
            sel = rec == L
            got_starts = start[sel].tolist()
            assert [len(c) for c in ref] == length[sel].tolist()
            # starts implied by the reference
            starts = []
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
        F.prepare(src, cs, tmp_path / "out", block_bytes=4096)
    chunks, nucs, prots = F.prepare_reference(src, cs)
    assert read_fasta_pairs(tmp_path / "out" / "chunks.fa") == [(i, s) for i, s in chunks]
    assert read_fasta_pairs(tmp_path / "out" / "identified_nucleotide.fa") == nucs
    assert read_fasta_pairs(tmp_path / "out" / "identified_protein.faa") == prots
    # byte for byte: chunks.fa as Biopython writes it, the identified files one '>{id}' line and one sequence
    # line per entry
    assert (tmp_path / "out" / "chunks.fa").read_bytes() == _biopython_fasta(chunks)
    for name, entries in (("identified_nucleotide.fa", nucs), ("identified_protein.faa", prots)):
        assert (tmp_path / "out" / name).read_bytes() == "".join(f">{i}\n{q}\n" for i, q in entries).encode()


def _biopython_fasta(entries) -> bytes:
    """FASTA text as the original writes ``chunks.fa``: SeqRecords with an ID and no description, through
    Biopython's writer."""
    from Bio import SeqIO
    from Bio.Seq import Seq
    from Bio.SeqRecord import SeqRecord

    buf = io.StringIO()
    SeqIO.write([SeqRecord(Seq(s), id=i, description="") for i, s in entries], buf, "fasta")
    return buf.getvalue().encode()


@pytest.mark.parametrize("cs", F.CHUNK_SIZES)
@pytest.mark.parametrize("layout", [{}, {"width": 60}, {"width": 61, "crlf": True}, {"description": False}])
def test_vectorized_equals_reference_on_random_records(tmp_path, cs, layout):
    rng = random.Random(hash((cs, str(layout))) & 0xFFFF)
    _check_against_reference(tmp_path, _random_records(rng, 60, 3 * cs), cs, **layout)


@settings(max_examples=40, deadline=None)
@given(seqs=st.lists(st.text(alphabet="ACGTNRYacgtn", min_size=0, max_size=1500), min_size=1, max_size=6),
       cs=st.sampled_from(F.CHUNK_SIZES))
def test_vectorized_equals_reference_property(tmp_path_factory, seqs, cs):
    tmp = tmp_path_factory.mktemp("prop")
    records = [(f"s{i}", s) for i, s in enumerate(seqs)]
    if all(len(s) == 0 for s in seqs):
        records.append(("nonempty", "ACGTACGTAAA"))
    _check_against_reference(tmp, records, cs)


@pytest.mark.parametrize("cs", F.CHUNK_SIZES)
def test_vectorized_equals_reference_with_varied_ids_and_many_chunks(tmp_path, cs):
    """IDs of many lengths in one block, chunk numbers of several digits, a record larger than a block."""
    rng = random.Random(cs)
    records = [(f"id{'x' * rng.randrange(0, 40)}{i}", "".join(rng.choice("ACGTACGTNacgt") for _ in range(
        rng.randrange(1, 700)))) for i in range(150)]
    records.insert(75, ("long", "".join(rng.choice("ACGTACGTACGTNRYacgt") for _ in range(12 * cs + 7))))
    _check_against_reference(tmp_path, records, cs)
    _check_against_reference(tmp_path, records, cs, width=70, crlf=True)


def test_frames_carry_record_chunk_and_frame(tmp_path):
    block = RecordBlock.concat(list(iter_record_blocks(GOLDEN / "broad_test_with_orfs.fa")))
    frames = F.frames_of_chunks(block, F.chunk_block(block, 500))
    ids = block.ids()
    got = [f"{ids[r]}_chunk_{c}{F.FRAME_LABELS[f]}" for r, c, f in zip(frames.record, frames.chunk, frames.frame)]
    assert got == [i for i, _ in read_fasta_pairs(GOLDEN / "broad_test_with_orfs_identified_protein.faa")]
    assert frames.proteins() == [s for _, s in read_fasta_pairs(GOLDEN / "broad_test_with_orfs_identified_protein.faa")]


def test_chunk_size_must_be_300_or_500(tmp_path):
    with pytest.raises(VirNucProError, match="300 or 500"):
        F.prepare(EXAMPLES / "jaeger_short.fa", 400, tmp_path / "out")


def test_empty_records_skipped_with_warning(tmp_path):
    p = tmp_path / "e.fa"
    p.write_text(">empty1\n>a\nATGAAACCCGGGTTT\n>empty2\n\n>b\nATGAAATTT\n")
    with pytest.warns(UserWarning, match=r"skipped 2 record\(s\) of length 0 \(empty1, empty2\)"):
        stats = F.prepare(p, 300, tmp_path / "out")
    assert stats.records == 4 and stats.empty_records == 2
    ids = [i for i, _ in read_fasta_pairs(tmp_path / "out" / "chunks.fa")]
    assert ids == ["a_chunk_1", "b_chunk_1"]


def test_no_stop_free_frame_warns_and_writes_empty_files(tmp_path):
    p = tmp_path / "stops.fa"
    # no frame reads a complete standard codon: nothing is kept
    p.write_text(">only_n\n" + "N" * 40 + "\n>short\nAC\n")
    assert F.frames_reference("AC") == [] and F.frames_reference("N" * 40) == []
    with pytest.warns(UserWarning, match="no chunk has a stop-free frame"):
        F.prepare(p, 300, tmp_path / "out")
    assert (tmp_path / "out" / "identified_nucleotide.fa").read_text() == ""
    assert (tmp_path / "out" / "identified_protein.faa").read_text() == ""
