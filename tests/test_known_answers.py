"""Known answers for every file ``predict`` writes: the expected values come from the fixtures' embeddings (made by
fair-esm and the original DNABERT-S code), a classifier evaluated here in plain NumPy, and the original's rules
written out in this file, never from the package's own code.

Input: three records whose chunks are SARS-CoV-2 chunks 3, 6 and 9 (300 bp, the whole chunk is the DNA of their
F1 frame in the fixture), one record made of chunks 3 and 6 (two chunks), and one record too short for a codon.
The original keeps exactly these frames (golden ``viralverify_test_300_identified_*``): chunk 3: F1; chunk 6: F1
and R1; chunk 9: F1 and R2, all of which the fixtures embed.
"""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from conftest import FIXTURES, run_cli


pytestmark = pytest.mark.slow  # whole runs of the command in subprocesses: `make test` only

DNA = json.loads((FIXTURES / "dnabert_s_tiny_expected.json").read_text())
ESM = json.loads((FIXTURES / "esm2_tiny_expected.json").read_text())


def _embedding(table, frame_id):
    return np.asarray(table["mean"][table["ids"].index(frame_id)], dtype=np.float64)


def _dna(frame_id):
    return DNA["sequences"][DNA["ids"].index(frame_id)]


CHUNK3, CHUNK6, CHUNK9 = (_dna(f"NC_045512.2_chunk_{k}F1") for k in (3, 6, 9))
RECORDS = [("c3", CHUNK3), ("c6 second record", CHUNK6), ("c9", CHUNK9), ("c36", CHUNK3 + CHUNK6), ("tiny", "AC")]
# (record, chunk, frame, genome frame the fixtures embed), in the order the original writes them
FRAMES = [("c3", 1, "F1", "3F1"), ("c6", 1, "F1", "6F1"), ("c6", 1, "R1", "6R1"), ("c9", 1, "F1", "9F1"),
          ("c9", 1, "R2", "9R2"), ("c36", 1, "F1", "3F1"), ("c36", 2, "F1", "6F1"), ("c36", 2, "R1", "6R1")]


def _classifier(path):
    """A 160-512-2 MLP in the classifier file format, with non-trivial BatchNorm statistics; its arrays."""
    g = torch.Generator().manual_seed(11)
    w = {"hidden_layer.weight": torch.randn(512, 160, generator=g) * 0.08,
         "hidden_layer.bias": torch.randn(512, generator=g) * 0.1,
         "bn1.weight": 1 + 0.2 * torch.randn(512, generator=g), "bn1.bias": 0.1 * torch.randn(512, generator=g),
         "bn1.running_mean": 0.3 * torch.randn(512, generator=g),
         "bn1.running_var": 0.5 + torch.rand(512, generator=g),
         "bn1.num_batches_tracked": torch.tensor(100),
         "output_layer.weight": torch.randn(2, 512, generator=g) * 0.1, "output_layer.bias": torch.tensor([0.05, -0.02])}
    header = {"format": "virnucpro-classifier", "format_version": "1", "input_dim": "160", "hidden_dim": "512",
              "num_classes": "2", "metadata": json.dumps({"chunk_size": 300})}
    save_file(w, str(path), metadata=header)
    return {k: v.double().numpy() for k, v in w.items()}


def _probs(w, x):
    """softmax(W2 relu(BN(W1 x + b1)) + b2), BatchNorm in eval mode (eps 1e-5): [P(others), P(virus)]."""
    h = x @ w["hidden_layer.weight"].T + w["hidden_layer.bias"]
    h = (h - w["bn1.running_mean"]) / np.sqrt(w["bn1.running_var"] + 1e-5) * w["bn1.weight"] + w["bn1.bias"]
    logits = np.maximum(h, 0) @ w["output_layer.weight"].T + w["output_layer.bias"]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    base = tmp_path_factory.mktemp("known")
    fasta = base / "in.fa"
    fasta.write_text("".join(f">{name}\n{seq}\n" for name, seq in RECORDS))
    w = _classifier(base / "clf.safetensors")
    out = base / "out"
    r = run_cli("predict", fasta, "--chunk-size", "300", "--out", out, "--profile", "real", "--gpus", "0",
                "--esm", FIXTURES / "esm2_tiny", "--dnabert", FIXTURES / "dnabert_s_tiny",
                "--classifier", base / "clf.safetensors", "--save-features", "--quiet")
    assert r.returncode == 0, r.stderr
    x = np.stack([np.concatenate([_embedding(DNA, f"NC_045512.2_chunk_{g}"), _embedding(ESM, f"NC_045512.2_chunk_{g}")])
                  for *_, g in FRAMES])
    return out, x, _probs(w, x)


def test_prediction_results_rows(known):
    out, _, p = known
    table = pd.read_csv(out / "prediction_results.txt", sep="\t", dtype=str, keep_default_na=False)
    assert list(table.columns) == ["Sequence_ID", "Prediction", "score1", "score2"]
    assert table["Sequence_ID"].tolist() == [f"{r}_chunk_{c}{f}" for r, c, f, _ in FRAMES]
    assert table["Prediction"].tolist() == ["virus" if pv > po else "others" for po, pv in p]
    got = table[["score1", "score2"]].astype(float).to_numpy()
    np.testing.assert_allclose(got, p, rtol=0, atol=2e-6)  # score1 = P(others), score2 = P(virus)
    for text in table["score1"].tolist() + table["score2"].tolist():  # float32 written as str(numpy.float32(x))
        assert text == str(np.float32(text))


def test_highestscore_rows(known):
    out, _, p = known
    chunks = {}
    for (r, c, _, _), (po, pv) in zip(FRAMES, p):
        mo, mv = chunks.get(f"{r}_chunk_{c}", (-1.0, -1.0))
        chunks[f"{r}_chunk_{c}"] = (max(mo, po), max(mv, pv))
    expected = "Modified_ID\tIs_Virus\n" + "".join(f"{k}\t{mv >= mo}\n" for k, (mo, mv) in sorted(chunks.items()))
    assert (out / "prediction_results_highestscore.csv").read_text() == expected


def test_sequences_tsv_rows(known):
    out, _, p = known
    seqs = pd.read_csv(out / "sequences.tsv", sep="\t", dtype={"sequence_id": str}, keep_default_na=False)
    assert list(seqs.columns) == ["sequence_id", "length", "chunks", "chunks_with_frames", "frames", "score",
                                  "viral_chunk_fraction", "call", "profile"]
    assert seqs["sequence_id"].tolist() == ["c3", "c6", "c9", "c36", "tiny"]
    assert seqs["length"].tolist() == [300, 300, 300, 600, 2]
    assert seqs["chunks"].tolist() == [1, 1, 1, 2, 1]
    assert seqs["chunks_with_frames"].tolist() == [1, 1, 1, 2, 0]
    assert seqs["frames"].tolist() == [1, 2, 2, 3, 0]
    assert seqs["profile"].tolist() == ["real"] * 5
    expected_score, expected_fraction = [], []
    for rec in ("c3", "c6", "c9", "c36"):
        per_chunk = {}
        for (r, c, _, _), (po, pv) in zip(FRAMES, p.astype(np.float32).astype(np.float64)):
            if r == rec:
                mo, mv = per_chunk.get(c, (-1.0, -1.0))
                per_chunk[c] = (max(mo, po), max(mv, pv))
        expected_score.append(np.mean([mv for _, mv in per_chunk.values()]))
        expected_fraction.append(np.mean([mv >= mo for mo, mv in per_chunk.values()]))
    np.testing.assert_allclose(seqs["score"][:4].astype(float), expected_score, rtol=0, atol=2e-6)
    np.testing.assert_allclose(seqs["viral_chunk_fraction"][:4].astype(float), expected_fraction)
    assert seqs["score"][4] == "" and seqs["viral_chunk_fraction"][4] == ""
    assert seqs["call"].tolist() == ["virus" if s >= 0.5 else "others" for s in expected_score] + ["no_frames"]


def test_saved_features_are_dnabert_then_esm(known):
    from virnucpro_kernel.outputs import read_frames_parquet

    out, x, p = known
    frames, features = read_frames_parquet(out / "frames.parquet")
    assert features.shape == (len(FRAMES), 160)
    rel = np.linalg.norm(features - x, axis=1) / np.linalg.norm(x, axis=1)
    assert rel.max() < 1e-5, rel  # [DNABERT-S 96 | ESM-2 64], as the fixtures give them in fp32
    np.testing.assert_allclose(frames[["p_others", "p_virus"]].to_numpy(), p, rtol=0, atol=2e-6)
    assert frames["frame_id"].tolist() == [f"{r}_chunk_{c}{f}" for r, c, f, _ in FRAMES]


def test_viral_fasta_holds_the_virus_calls(known):
    out, _, p = known
    seqs = pd.read_csv(out / "sequences.tsv", sep="\t", dtype={"sequence_id": str}, keep_default_na=False)
    viral = set(seqs.loc[seqs["call"] == "virus", "sequence_id"])
    text = (out / "viral.fa").read_text()
    headers = [line[1:] for line in text.splitlines() if line.startswith(">")]
    assert [h.split()[0] for h in headers] == [name.split()[0] for name, _ in RECORDS if name.split()[0] in viral]
    if "c6" in viral:
        assert "c6 second record" in headers  # the whole header line, as in the input
