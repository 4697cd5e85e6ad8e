"""Training the classifier: the recipe (split, early stopping, determinism) and its metrics."""

import numpy as np
import pytest
import torch

from virnucpro_kernel.training import binary_metrics, roc_auc, train_classifier


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The toy problems are tiny: one intra-op thread is faster and immune to a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


def test_metrics_known_answer_with_ties():
    # positives 0.5 and 0.9, negatives 0.2 and 0.5: pairs (0.5, 0.2) 1, (0.5, 0.5) 1/2, (0.9, *) 1 + 1
    assert roc_auc([0.2, 0.5, 0.5, 0.9], [0, 1, 0, 1]) == 0.875
    assert roc_auc([0.1, 0.35, 0.4, 0.8], [0, 1, 0, 1]) == 0.75
    assert roc_auc([0.3, 0.3, 0.3], [0, 1, 1]) == 0.5
    # 1-D P(virus): the call is P > 0.5, so both 0.5s are called others
    m = binary_metrics([0.2, 0.5, 0.5, 0.9], [0, 1, 0, 1])
    assert m["confusion"] == {"tp": 1, "fp": 0, "tn": 2, "fn": 1}
    assert (m["accuracy"], m["precision"], m["recall"], m["roc_auc"]) == (0.75, 1.0, 0.5, 0.875)
    assert m["f1"] == pytest.approx(2 / 3, abs=1e-15)
    # (N, 2) softmax output: the call is the argmax, a tie goes to others
    m2 = binary_metrics([[0.8, 0.2], [0.5, 0.5], [0.5, 0.5], [0.1, 0.9]], [0, 1, 0, 1])
    assert m2 == m
    # nothing called virus: precision and F1 are 0.0 (empty denominator); one class only: no ROC AUC
    m = binary_metrics([0.1, 0.2, 0.3], [1, 1, 1])
    assert m["confusion"] == {"tp": 0, "fp": 0, "tn": 0, "fn": 3}
    assert (m["accuracy"], m["precision"], m["recall"], m["f1"], m["roc_auc"]) == (0.0, 0.0, 0.0, 0.0, None)
    with pytest.raises(ValueError, match="differ in length"):
        binary_metrics([0.1, 0.2], [1])


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
