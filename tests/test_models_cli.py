"""``virnucpro models`` and ``virnucpro train`` as users run them."""

import json

import pytest

from conftest import EXAMPLES, FIXTURES, ROOT, run_cli
from virnucpro_kernel.models.profiles import git_blob_sha1

pytestmark = pytest.mark.slow  # whole runs of the command in subprocesses: `make test` only


def test_models_convert_and_load(tmp_path):
    out = tmp_path / "500_model.safetensors"
    r = run_cli("models", "convert", FIXTURES / "classifier" / "500_model.pth", out)
    assert r.returncode == 0, r.stderr
    from virnucpro_kernel.models import load_classifier
    assert load_classifier(out).hidden_layer.in_features == 3328


def test_models_convert_refuses_hostile_file(tmp_path):
    marker = "/tmp/hostile_checkpoint_ran"
    import os
    if os.path.exists(marker):
        os.remove(marker)
    r = run_cli("models", "convert", FIXTURES / "classifier" / "hostile_model.pth", tmp_path / "x.safetensors")
    assert r.returncode == 2 and "refusing" in r.stderr and "Traceback" not in r.stderr
    assert not os.path.exists(marker)
    assert not (tmp_path / "x.safetensors").exists()


def test_models_list_and_verify(tmp_path):
    env = {"VIRNUCPRO_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    r = run_cli("models", "list", env=env)
    assert r.returncode == 0 and "demo classifier 300" in r.stdout and "absent" in r.stdout
    r = run_cli("models", "verify", "--profile", "demo", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_cli("models", "verify", env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    for said in ("missing", "virnucpro models download", "VIRNUCPRO_DNABERT", "VIRNUCPRO_ESM", "VIRNUCPRO_CLASSIFIER_DIR", "--profile demo",
                 str(tmp_path / "classifiers")):
        assert said in last, last


def test_train_without_real_models_says_how_to_get_them_in_its_own_options(tmp_path):
    env = {"VIRNUCPRO_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    demo = ROOT / "virnucpro_kernel" / "data" / "demo"
    r = run_cli("train", "--virus", demo / "virus.fa", "--host", demo / "host.fa", "--chunk-size", "500",
                "--out", tmp_path / "m.safetensors", env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    for said in ("DNABERT-S", "ESM-2 3B", "virnucpro models download", "--dnabert DIR --esm DIR", "--profile demo"):
        assert said in last, last
    assert "--classifier" not in last  # train makes the classifier; it takes no --classifier
    assert not (tmp_path / "m.safetensors").exists()


def test_verify_checks_the_published_checksum(tmp_path):
    cdir = tmp_path / "classifiers"
    cdir.mkdir()
    (cdir / "500_model.pth").write_bytes((FIXTURES / "classifier" / "500_model.pth").read_bytes())
    env = {"VIRNUCPRO_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    r = run_cli("models", "verify", "--chunk-size", "500", env=env)
    assert "CHECKSUM MISMATCH" in r.stdout  # the fixture is not the published file
    # git blob id, as git computes it
    import hashlib
    data = (FIXTURES / "classifier" / "500_model.pth").read_bytes()
    assert git_blob_sha1(cdir / "500_model.pth") == hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_train_cli_learns_and_writes_metrics(tmp_path):
    out = tmp_path / "m.safetensors"
    demo = ROOT / "virnucpro_kernel" / "data" / "demo"
    r = run_cli("train", "--virus", demo / "virus.fa", "--host", demo / "host.fa", "--chunk-size", "500",
                "--out", out, "--profile", "demo", "--max-epochs", "30")
    assert r.returncode == 0, r.stderr
    metrics = json.loads(out.with_suffix(".metrics.json").read_text())
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc"):
        assert key in metrics
    assert metrics["accuracy"] > 0.6
    r = run_cli("predict", EXAMPLES / "viralverify_test.fa", "--chunk-size", "500", "--out", tmp_path / "p",
                "--profile", "demo", "--classifier", out, "--gpus", "0", "--quiet")
    assert r.returncode == 0, r.stderr


def test_shipped_demo_classifier_is_reproduced_by_train(tmp_path):
    """The committed demo classifier is what `virnucpro train` makes from the shipped data (same seed)."""
    from virnucpro_kernel.models import load_classifier

    out = tmp_path / "demo500.safetensors"
    demo = ROOT / "virnucpro_kernel" / "data" / "demo"
    r = run_cli("train", "--virus", demo / "virus.fa", "--host", demo / "host.fa", "--chunk-size", "500",
                "--out", out, "--profile", "demo")
    assert r.returncode == 0, r.stderr
    import torch
    a, b = load_classifier(out), load_classifier(demo / "demo_classifier_500.safetensors")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb
        torch.testing.assert_close(va, vb, atol=1e-5, rtol=1e-4)


def test_train_on_genbank_with_cds_filter(tmp_path):
    """GenBank input: --cds-filter keeps only frames whose protein lies in an annotated CDS translation."""
    from Bio.Seq import Seq
    from Bio.SeqFeature import FeatureLocation, SeqFeature
    from Bio.SeqIO import write
    from Bio.SeqRecord import SeqRecord

    from virnucpro_kernel.fasta import read_fasta_pairs

    demo = ROOT / "virnucpro_kernel" / "data" / "demo"
    paths = {}
    for name in ("virus", "host"):
        recs = []
        for rid, seq in read_fasta_pairs(demo / f"{name}.fa")[:2]:
            seq = seq[:6000]
            rec = SeqRecord(Seq(seq), id=rid, name=rid[:16], annotations={"molecule_type": "DNA"})
            for start in range(0, len(seq) - 900, 900):  # annotate a few CDS with their forward translations
                prot = str(Seq(seq[start:start + 900]).translate())
                rec.features.append(SeqFeature(FeatureLocation(start, start + 900), type="CDS",
                                               qualifiers={"translation": [prot]}))
            recs.append(rec)
        paths[name] = tmp_path / f"{name}.gb"
        write(recs, paths[name], "genbank")
    out = tmp_path / "m.safetensors"
    r = run_cli("train", "--virus", paths["virus"], "--host", paths["host"], "--chunk-size", "300", "--out", out,
                "--profile", "demo", "--max-epochs", "5", "--cds-filter")
    assert r.returncode == 0, r.stderr
    metrics = json.loads(out.with_suffix(".metrics.json").read_text())
    unfiltered = run_cli("train", "--virus", paths["virus"], "--host", paths["host"], "--chunk-size", "300",
                         "--out", tmp_path / "all.safetensors", "--profile", "demo", "--max-epochs", "5")
    assert unfiltered.returncode == 0, unfiltered.stderr
    full = json.loads((tmp_path / "all.metrics.json").read_text())
    assert 0 < metrics["training_data"]["virus"]["frames"] < full["training_data"]["virus"]["frames"]
