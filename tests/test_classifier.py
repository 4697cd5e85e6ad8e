"""The MLP classifier: layout, parity with the published checkpoint, predict_proba."""

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from virnucpro_kernel.models.classifier import LABELS, MLPClassifier
from virnucpro_kernel.models.classifier_files import load_classifier

FIXTURES = Path(__file__).parent / "fixtures" / "classifier"
PUBLISHED = FIXTURES / "500_model.pth"

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


def test_fresh_model_has_the_published_layout_and_labels():
    model = MLPClassifier(input_dim=160)
    assert list(model.state_dict()) == STATE_KEYS
    assert tuple(model.hidden_layer.weight.shape) == (512, 160)
    assert tuple(model.output_layer.weight.shape) == (2, 512)
    assert LABELS == ("others", "virus")  # column 1 of predict_proba is P(virus)
    model.train()
    x = torch.randn(8, 160)
    assert torch.equal(model.predict_proba(x), model.predict_proba(x))  # eval mode: no dropout
    assert model.training
