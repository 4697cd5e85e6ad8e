"""Benchmark workloads: committed, seeded presets of reads sampled from the genomes shipped in the package.

Presets (``workloads.json`` beside this file): tiny 10, small 100, medium 1,000, large 10,000 and xl 1,000,000
reads. A read is a window of ``read_length`` bases whose start is uniform over every window that fits in the
genomes of ``data/examples/`` (so longer genomes give proportionally more reads); half of the reads, chosen
at random, are reverse-complemented. Output is FASTA, one line per sequence, records ``read_0``, ``read_1``...

Determinism: start positions and strands come from two streams spawned from the preset's seed, so the file
depends only on (preset, read_length) and not on how many reads are generated at a time; the committed
``sha256`` of each preset at 150 bp lets any machine check that it generated the same bytes.
Reads are generated and written in chunks, so xl never holds more than one chunk in memory.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import VirNucProError
from ..fasta import read_fasta_pairs

PRESETS_FILE = Path(__file__).with_name("workloads.json")
GENOME_DIR = Path(__file__).resolve().parent.parent / "data" / "examples"
DEFAULT_READ_LENGTH = 150
DEFAULT_CHUNK_READS = 65_536

_COMPLEMENT = np.arange(256, dtype=np.uint8)
for _a, _b in zip(b"ACGTRYKMBVDHSWN", b"TGCAYRMKVBHDSWN"):
    _COMPLEMENT[_a] = _b


# --------------------------------------------------------------------------------------------- presets
@functools.lru_cache(maxsize=1)
def _load_spec() -> dict:
    with open(PRESETS_FILE, "r", encoding="utf-8") as fh:
        return json.load(fh)


def preset_names() -> list[str]:
    """Preset names, smallest first."""
    presets = _load_spec()["presets"]
    return sorted(presets, key=lambda n: presets[n]["reads"])


def get_preset(name: str) -> dict:
    """The committed preset ``{"reads", "seed", "sha256"?}`` of ``name``."""
    presets = _load_spec()["presets"]
    if name not in presets:
        raise VirNucProError(f"unknown data size '{name}' (choose from {', '.join(preset_names())})")
    return dict(presets[name])


def genome_files() -> list[Path]:
    return [GENOME_DIR / f for f in _load_spec()["genomes"]]


@functools.lru_cache(maxsize=1)
def _genome_array() -> tuple[np.ndarray, tuple[str, ...], np.ndarray]:
    """All genomes concatenated as uint8 bytes, their names and start offsets."""
    names, seqs = [], []
    for path in genome_files():
        for rid, seq in read_fasta_pairs(path):
            names.append(f"{path.name}:{rid}")
            seqs.append(seq.upper().encode("ascii"))
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(s) for s in seqs])
    return np.frombuffer(b"".join(seqs), dtype=np.uint8), tuple(names), offsets


# ------------------------------------------------------------------------------------------- sampling
def iter_read_blocks(
    name: str, read_length: int = DEFAULT_READ_LENGTH, chunk_reads: int = DEFAULT_CHUNK_READS
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(first_index, reads, reverse)`` blocks: reads as a (n, read_length) uint8 array of bases.

    ``reverse`` says which reads were reverse-complemented. The concatenation of all blocks does not depend on
    ``chunk_reads``.
    """
    if read_length < 1:
        raise VirNucProError(f"read length must be positive, got {read_length}")
    if chunk_reads < 1:
        raise VirNucProError(f"chunk_reads must be positive, got {chunk_reads}")
    spec = get_preset(name)
    genome, _, offsets = _genome_array()
    lengths = np.diff(offsets)
    windows = np.maximum(lengths - read_length + 1, 0)
    if windows.sum() == 0:
        raise VirNucProError(f"no genome is at least {read_length} bp long")
    cum = np.concatenate([[0], np.cumsum(windows)])
    total = int(cum[-1])
    all_windows = np.lib.stride_tricks.sliding_window_view(genome, read_length)

    pos_rng, strand_rng = (np.random.Generator(np.random.PCG64(s))
                           for s in np.random.SeedSequence(spec["seed"]).spawn(2))
    done, n_total = 0, int(spec["reads"])
    while done < n_total:
        n = min(chunk_reads, n_total - done)
        g = pos_rng.integers(0, total, size=n, dtype=np.int64)
        rec = np.searchsorted(cum, g, side="right") - 1
        start = offsets[rec] + (g - cum[rec])
        reads = all_windows[start]  # fancy indexing copies: (n, read_length)
        reverse = strand_rng.integers(0, 2, size=n, dtype=np.int64).astype(bool)
        if reverse.any():
            reads[reverse] = _COMPLEMENT[reads[reverse][:, ::-1]]
        yield done, reads, reverse
        done += n


def iter_workload(name: str, read_length: int = DEFAULT_READ_LENGTH) -> Iterator[tuple[str, str]]:
    """``(read_id, sequence)`` of every read of a preset, in file order."""
    for first, reads, _ in iter_read_blocks(name, read_length):
        for i, row in enumerate(reads):
            yield f"read_{first + i}", row.tobytes().decode("ascii")


def write_workload(name: str, path, read_length: int = DEFAULT_READ_LENGTH, *,
                   chunk_reads: int = DEFAULT_CHUNK_READS) -> dict:
    """Write preset ``name`` as FASTA to ``path`` (atomically, streaming) and describe what was written.

    Returns ``dict(name, reads, seed, read_length, bases, sha256, path, reverse_complemented,
    committed_sha256_match)``; the last is None when the preset has no committed checksum for this read length.
    """
    spec = get_preset(name)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    digest = hashlib.sha256()
    n_reads = n_reverse = 0
    with open(tmp, "wb") as fh:
        for first, reads, reverse in iter_read_blocks(name, read_length, chunk_reads):
            seq_bytes = reads.tobytes()
            out = bytearray()
            for i in range(reads.shape[0]):
                out += b">read_%d\n" % (first + i)
                out += seq_bytes[i * read_length:(i + 1) * read_length]
                out += b"\n"
            fh.write(out)
            digest.update(out)
            n_reads += reads.shape[0]
            n_reverse += int(reverse.sum())
    os.replace(tmp, path)
    sha = digest.hexdigest()
    committed = spec.get("sha256") if read_length == _load_spec().get("read_length") else None
    return {
        "name": name,
        "reads": n_reads,
        "seed": int(spec["seed"]),
        "read_length": int(read_length),
        "bases": n_reads * int(read_length),
        "sha256": sha,
        "path": str(path),
        "reverse_complemented": n_reverse,
        "committed_sha256_match": None if committed is None else committed == sha,
    }


def write_with_duplicates(src, dst, fraction: float = 0.2, window: int = 4096, seed: int = 7) -> dict:
    """Copy the two-line FASTA ``src`` to ``dst`` with ``fraction`` of the reads replaced by exact copies of other
    reads of the same ``window`` consecutive reads (as PCR and optical duplicates of a read set: the same
    sequence under another ID). Returns counts. ``window`` matches ``predict``'s work unit, within which
    identical frames are embedded once."""
    rng = np.random.default_rng(seed)
    lines = Path(src).read_text().splitlines()
    ids, seqs = lines[0::2], lines[1::2]
    n = len(seqs)
    dup = np.zeros(n, dtype=bool)
    out_seqs = list(seqs)
    for start in range(0, n, window):
        stop = min(start + window, n)
        k = int(round(fraction * (stop - start)))
        if k == 0 or stop - start < 2:
            continue
        targets = rng.choice(np.arange(start, stop), size=k, replace=False)
        originals = np.setdiff1d(np.arange(start, stop), targets)
        for t, o in zip(targets, rng.choice(originals, size=k)):
            out_seqs[t] = seqs[o]
            dup[t] = True
    tmp = Path(dst).with_name(Path(dst).name + ".tmp")
    with open(tmp, "w") as fh:
        for i in range(n):
            fh.write(f"{ids[i]}{'_dup' if dup[i] else ''}\n{out_seqs[i]}\n")
    os.replace(tmp, dst)
    return {"reads": n, "duplicated": int(dup.sum()), "fraction": float(dup.mean()), "window": window}
