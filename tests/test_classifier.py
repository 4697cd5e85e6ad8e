"""MLP classifier: published-checkpoint parity, safe loading, our safetensors format, training."""

import io
import os
import pickle
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from virnucpro_kernel.errors import CheckpointError, UnsafeCheckpointError
from virnucpro_kernel.models.classifier import (
    MLPClassifier,
    binary_metrics,
    convert_checkpoint,
    load_classifier,
    read_classifier_metadata,
    roc_auc,
    save_classifier,
    train_classifier,
)

FIXTURES = Path(__file__).parent / "fixtures" / "classifier"
PUBLISHED = FIXTURES / "500_model.pth"
HOSTILE = FIXTURES / "hostile_model.pth"
HOSTILE_MARKER = Path("/tmp/hostile_checkpoint_ran")

STATE_KEYS = [
    "hidden_layer.weight",
    "hidden_layer.bias",
    "bn1.weight",
    "bn1.bias",
    "bn1.running_mean",
    "bn1.running_var",
    "bn1.num_batches_tracked",
    "output_layer.weight",
    "output_layer.bias",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The toy problems are tiny: one intra-op thread is faster and immune to a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def expected():
    return load_file(str(FIXTURES / "expected.safetensors"))


@pytest.fixture(scope="module")
def published():
    return load_classifier(PUBLISHED)


# --- published checkpoint ---------------------------------------------------------------------------


def test_published_checkpoint_reproduces_expected_probabilities(published, expected):
    assert list(published.state_dict()) == STATE_KEYS
    assert (published.input_dim, published.hidden_dim, published.num_classes) == (3328, 512, 2)
    assert not published.training
    probs = published.predict_proba(expected["inputs"])
    assert probs.dtype == torch.float32 and probs.shape == (64, 2)
    assert (probs - expected["probs"]).abs().max().item() < 1e-5
    assert torch.allclose(probs.sum(dim=1), torch.ones(64))
    # The checkpoint holds real BatchNorm statistics, not defaults: the parity above is not vacuous.
    assert not torch.allclose(published.bn1.running_var, torch.ones(512))


def test_predict_proba_accepts_numpy_restores_mode_and_checks_width(published, expected):
    model = MLPClassifier(input_dim=3328)
    model.load_state_dict(published.state_dict())
    model.train()
    probs = model.predict_proba(expected["inputs"].numpy().astype(np.float64))
    assert model.training  # mode restored
    assert (probs - expected["probs"]).abs().max().item() < 1e-5
    with pytest.raises(ValueError, match="3328"):
        model.predict_proba(torch.zeros(2, 160))


# --- hostile files ------------------------------------------------------------------------------------


def test_hostile_fixture_is_refused_and_nothing_runs():
    HOSTILE_MARKER.unlink(missing_ok=True)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_classifier(HOSTILE)
    message = str(info.value)
    assert "posix.system" in message
    assert str(HOSTILE) in message
    assert "\n" not in message
    assert not HOSTILE_MARKER.exists()
    assert isinstance(info.value, CheckpointError)  # callers catching CheckpointError also catch it


class _Evil:
    """Pickles as a call of ``func(*args)``; dumping it runs nothing."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _zip_with_pickle(tmp_path, payload: bytes, name="evil.pth") -> Path:
    """A genuine torch zip checkpoint whose data.pkl is replaced by ``payload``."""
    genuine = tmp_path / "genuine.pth"
    torch.save(MLPClassifier(input_dim=8, hidden_dim=4).state_dict(), genuine)
    out = tmp_path / name
    with zipfile.ZipFile(genuine) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for item in src.infolist():
            data = payload if item.filename.endswith("/data.pkl") else src.read(item)
            dst.writestr(item.filename, data)
    return out


@pytest.mark.parametrize("protocol", [2, 4])  # GLOBAL and STACK_GLOBAL opcodes
@pytest.mark.parametrize(
    "make, imported",
    [
        (lambda m: _Evil(os.system, (f"touch {m}",)), "posix.system"),
        (lambda m: _Evil(eval, (f"open({str(m)!r}, 'w')",)), "builtins.eval"),
        (lambda m: _Evil(subprocess.check_call, (["touch", str(m)],)), "subprocess.check_call"),
        # buried inside an otherwise plausible state-dict container
        (lambda m: {"state_dict": {"hidden_layer.weight": _Evil(os.system, (f"touch {m}",))}}, "posix.system"),
    ],
)
def test_crafted_hostile_pickles_are_refused(tmp_path, protocol, make, imported):
    marker = tmp_path / "ran"
    path = _zip_with_pickle(tmp_path, pickle.dumps(make(marker), protocol=protocol))
    with pytest.raises(UnsafeCheckpointError, match=imported.replace(".", r"\.")) as info:
        load_classifier(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        # BUILD with slot state on allowlisted globals: would alter objects shared by every later load
        b"\x80\x02ctorch\nFloatStorage\nN}X\x0b\x00\x00\x00numpy_dtypeX\x01\x00\x00\x00Os\x86b.",
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}X\x08\x00\x00\x00functionX\x01\x00\x00\x00Os\x86b.",
        b"\x80\x02c__main__\nMLPClassifier\nN}X\x08\x00\x00\x00qualnameX\x01\x00\x00\x00Os\x86b.",
        b"\x80\x02ccollections\nOrderedDict\nN}X\x08\x00\x00\x00fromkeysX\x01\x00\x00\x00Os\x86b.",
    ],
)
def test_pickles_cannot_alter_the_allowlist(tmp_path, payload, expected):
    path = _zip_with_pickle(tmp_path, payload)
    with pytest.raises(CheckpointError, match="malformed"):
        load_classifier(path)
    model = load_classifier(PUBLISHED)  # still loads and computes as before
    assert (model.predict_proba(expected["inputs"]) - expected["probs"]).abs().max().item() < 1e-5


# --- our safetensors format ---------------------------------------------------------------------------


def test_safetensors_round_trip_is_exact(tmp_path, published, expected):
    path = save_classifier(published, tmp_path / "clf.safetensors", metadata={"chunk_size": 500, "training": {"seed": 7}})
    loaded = load_classifier(path)
    assert list(loaded.state_dict()) == STATE_KEYS
    for key, value in published.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert torch.equal(loaded.predict_proba(expected["inputs"]), published.predict_proba(expected["inputs"]))
    assert loaded.metadata["chunk_size"] == 500
    assert loaded.metadata["training"] == {"seed": 7}
    assert loaded.metadata["input_dim"] == 3328
    header = read_classifier_metadata(path)
    assert header["format"] == "virnucpro-classifier" and header["chunk_size"] == 500


def test_small_demo_model_round_trip(tmp_path):
    torch.manual_seed(0)
    model = MLPClassifier(input_dim=160)
    model.train()
    model(torch.randn(64, 160))  # move the BatchNorm statistics away from their defaults
    path = save_classifier(model, tmp_path / "demo.safetensors")
    loaded = load_classifier(path)
    x = torch.randn(10, 160)
    assert loaded.input_dim == 160
    assert torch.equal(loaded.predict_proba(x), model.predict_proba(x))


def test_convert_checkpoint_output_loads_and_matches(tmp_path, expected):
    out = convert_checkpoint(PUBLISHED, tmp_path / "500_model.safetensors")
    model = load_classifier(out)
    assert (model.predict_proba(expected["inputs"]) - expected["probs"]).abs().max().item() < 1e-5
    assert model.metadata["chunk_size"] == 500
    assert model.metadata["converted_from"] == "500_model.pth"
    assert len(model.metadata["source_sha256"]) == 64


def test_plain_torch_state_dict_file_loads(tmp_path, published, expected):
    path = tmp_path / "state.pth"
    torch.save(published.state_dict(), path)
    model = load_classifier(path)
    assert torch.equal(model.predict_proba(expected["inputs"]), published.predict_proba(expected["inputs"]))


# --- malformed files ----------------------------------------------------------------------------------


def _assert_checkpoint_error(path, match):
    with pytest.raises(CheckpointError, match=match) as info:
        load_classifier(path)
    assert not isinstance(info.value, UnsafeCheckpointError)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_wrong_shape_is_a_checkpoint_error(tmp_path):
    sd = MLPClassifier(input_dim=16, hidden_dim=8).state_dict()
    sd["hidden_layer.bias"] = torch.zeros(7)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "bad.safetensors"))
    _assert_checkpoint_error(tmp_path / "bad.safetensors", r"hidden_layer\.bias has shape \[7\], expected \[8\]")
    torch.save(sd, tmp_path / "bad.pth")
    _assert_checkpoint_error(tmp_path / "bad.pth", r"hidden_layer\.bias has shape")


def test_missing_key_is_a_checkpoint_error(tmp_path):
    sd = MLPClassifier(input_dim=16, hidden_dim=8).state_dict()
    del sd["bn1.running_var"]
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "missing.safetensors"))
    _assert_checkpoint_error(tmp_path / "missing.safetensors", r"missing bn1\.running_var")


def test_truncated_and_foreign_files_are_checkpoint_errors(tmp_path, published):
    data = PUBLISHED.read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    _assert_checkpoint_error(tmp_path / "truncated.pth", "not a readable torch checkpoint")
    st = save_classifier(published, tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(st[: len(st) // 2])
    _assert_checkpoint_error(tmp_path / "truncated.safetensors", "malformed safetensors")
    (tmp_path / "notes.txt").write_text("not a model\n")
    _assert_checkpoint_error(tmp_path / "notes.txt", "not a classifier checkpoint")
    _assert_checkpoint_error(tmp_path / "absent.pth", "no such file")
    # a zip that is not a torch checkpoint
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("readme.txt", "hello")
    _assert_checkpoint_error(tmp_path / "other.zip", "data.pkl")


def test_storage_size_lies_are_checkpoint_errors(tmp_path):
    # a pickle that claims more elements than the archive member holds
    genuine = tmp_path / "g.pth"
    torch.save({"x": torch.zeros(4)}, genuine)
    with zipfile.ZipFile(genuine) as zf:
        pkl_name = next(n for n in zf.namelist() if n.endswith("data.pkl"))
        payload = zf.read(pkl_name)
    bad = payload.replace(b"K\x04t", b"M\x00\x10t", 1)  # numel 4 -> 4096 in the persistent id
    assert bad != payload
    path = _zip_with_pickle(tmp_path, bad, name="lies.pth")
    _assert_checkpoint_error(path, "malformed")


# --- metrics ------------------------------------------------------------------------------------------


def test_roc_auc_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 6, size=200) / 5.0  # many ties
    labels = rng.integers(0, 2, size=200)
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairwise = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (pos.size * neg.size)
    assert roc_auc(scores, labels) == pytest.approx(pairwise, abs=1e-12)
    assert roc_auc([0.1, 0.2], [1, 1]) is None
    m = binary_metrics(np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3]]), [0, 1, 0, 1])
    assert m["confusion"] == {"tp": 1, "fp": 1, "tn": 1, "fn": 1}
    assert m["accuracy"] == 0.5 and m["precision"] == 0.5 and m["recall"] == 0.5 and m["f1"] == 0.5


# --- training -----------------------------------------------------------------------------------------


def _two_clouds(n=400, dim=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    features = torch.randn(n, dim, generator=g)
    features[labels == 1] += 1.5  # distance 1.5*sqrt(24) ~ 7.3 sd between the means
    return features, labels


@pytest.fixture(scope="module")
def trained():
    features, labels = _two_clouds()
    calls = []
    model, metrics = train_classifier(features, labels, seed=11, progress=lambda *a: calls.append(a))
    return model, metrics, calls


def test_training_separates_two_clouds(trained):
    model, metrics, calls = trained
    for key in (
        "accuracy", "precision", "recall", "f1", "roc_auc", "epochs_run", "best_epoch",
        "n_train", "n_val", "n_test", "class_counts",
    ):
        assert key in metrics, key
    assert metrics["accuracy"] >= 0.95
    assert metrics["roc_auc"] >= 0.95 and metrics["f1"] >= 0.95
    assert (metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (320, 40, 40)
    assert metrics["class_counts"]["test"] == {"others": 20, "virus": 20}
    assert 1 <= metrics["best_epoch"] <= metrics["epochs_run"] <= 200
    assert len(calls) == metrics["epochs_run"]
    epoch, train_loss, val_loss = calls[-1]
    assert epoch == metrics["epochs_run"] and train_loss > 0 and val_loss > 0
    # the restored weights are the best epoch's: their validation loss is the best recorded
    assert metrics["best_val_loss"] == min(h["val_loss"] for h in metrics["history"])
    assert metrics["val_loss"] == pytest.approx(metrics["best_val_loss"], abs=1e-7)
    assert not model.training
    # fresh data from the same clouds
    features, labels = _two_clouds(n=200, seed=99)
    accuracy = (model.predict_proba(features).argmax(dim=1) == labels).float().mean().item()
    assert accuracy >= 0.95


def test_training_is_deterministic_for_a_seed():
    features, labels = _two_clouds(n=120, dim=8)
    runs = [train_classifier(features, labels, seed=5, max_epochs=8)[0] for _ in range(2)]
    other = train_classifier(features, labels, seed=6, max_epochs=8)[0]
    sd0, sd1, sd2 = (m.state_dict() for m in (*runs, other))
    assert all(torch.equal(sd0[k], sd1[k]) for k in sd0)
    assert not torch.equal(sd0["hidden_layer.weight"], sd2["hidden_layer.weight"])


def test_training_on_a_tiny_set_reports_empty_splits():
    features, labels = torch.randn(5, 4), torch.tensor([0, 1, 0, 1, 1])
    model, metrics = train_classifier(features, labels, max_epochs=3)
    assert metrics["n_test"] == 0 and metrics["accuracy"] is None
    assert any("test split is empty" in note for note in metrics["notes"])
    assert metrics["epochs_run"] == 3
    assert model.predict_proba(features).shape == (5, 2)
