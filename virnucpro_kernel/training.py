"""Training the classifier: the original training recipe, its metrics, and the ``virnucpro train`` command.

- :func:`train_classifier`: an :class:`~.models.classifier.MLPClassifier` trained on features and labels
  with the original recipe (split, shuffled batches, SGD with a step schedule, early stopping on the
  validation loss); its test metrics come from :func:`binary_metrics` and :func:`roc_auc`.
- :func:`train`: ``virnucpro train``, features through the same path as ``predict``, then the recipe.
  Virus = label 1, host = label 0. FASTA input trains on every stop-free frame. GenBank input (``LOCUS``)
  with ``--cds-filter`` keeps, as the original's training did, only frames whose protein is a substring
  of an annotated CDS translation of the same record.
"""

from __future__ import annotations

import io
import json
import logging
import math
import random
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from .errors import InputError, VirNucProError
from .frames import check_chunk_size
from .models.classifier import LABELS, MLPClassifier

log = logging.getLogger("virnucpro")


# -- metrics -----------------------------------------------------------------------------------------


def roc_auc(scores, labels) -> Optional[float]:
    """Area under the ROC curve via the rank (Mann-Whitney U) statistic, ties counted half.

    ``labels`` are 0/1 (1 = positive). Returns None when only one class is present.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    if scores.shape != labels.shape:
        raise ValueError("scores and labels differ in length")
    n_pos = int(labels.sum())
    n_neg = int(labels.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # 1-based rank of each distinct score's last occurrence
    average_rank = ends - (counts - 1) / 2.0
    ranks = average_rank[inverse]
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def binary_metrics(probs, labels) -> dict:
    """Accuracy, precision, recall, F1 (positive = 1 = virus), ROC AUC and the confusion counts.

    ``probs`` is ``(N, 2)`` softmax output (the call is the argmax, ties to 0, as the original) or a
    1-D array of P(positive) (the call is ``P > 0.5``). Precision/recall with an empty denominator are 0.0.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 2:
        pred = np.argmax(p, axis=1).astype(np.int64)
        p = p[:, 1]
    else:
        p = p.ravel()
        pred = (p > 0.5).astype(np.int64)
    y = np.asarray(labels).ravel().astype(np.int64)
    if y.shape != p.shape:
        raise ValueError("probabilities and labels differ in length")
    tp = int(((pred == 1) & (y == 1)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    n = tp + fp + tn + fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / n if n else None,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": roc_auc(p, y) if n else None,
        "confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
    }


# -- the recipe --------------------------------------------------------------------------------------


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _split_indices(labels: np.ndarray, split: Sequence[float], seed: int, stratify: bool):
    """Shuffle with ``seed`` and cut into train/val/test, per class when ``stratify``."""
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)] if stratify else [np.arange(labels.size)]
    parts = ([], [], [])
    for idx in groups:
        idx = idx[rng.permutation(idx.size)]
        n = idx.size
        n_val = int(math.floor(n * split[1] + 0.5))
        n_test = int(math.floor(n * split[2] + 0.5))
        while n - n_val - n_test < 1 and (n_val or n_test):  # keep at least one training example
            if n_test >= n_val and n_test:
                n_test -= 1
            else:
                n_val -= 1
        n_train = n - n_val - n_test
        parts[0].append(idx[:n_train])
        parts[1].append(idx[n_train : n_train + n_val])
        parts[2].append(idx[n_train + n_val :])
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) for p in parts)


def _class_counts(labels: np.ndarray) -> dict:
    return {name: int((labels == i).sum()) for i, name in enumerate(LABELS)}


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A shuffled epoch; a last batch of one is merged into the one before (BatchNorm needs two rows)."""
    order = torch.randperm(n, generator=generator)
    chunks = list(torch.split(order, batch_size))
    if len(chunks) > 1 and chunks[-1].numel() == 1:
        chunks[-2] = torch.cat([chunks[-2], chunks[-1]])
        chunks.pop()
    return chunks


def _mean_loss(model: MLPClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float(F.cross_entropy(model(x), y).item())


def train_classifier(
    features,
    labels,
    *,
    seed: int = 42,
    max_epochs: int = 200,
    patience: int = 5,
    batch_size: int = 32,
    lr: float = 2e-4,
    momentum: float = 0.9,
    step_size: int = 10,
    gamma: float = 0.85,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    stratify: bool = True,
    hidden_dim: int = 512,
    device="cpu",
    progress: Optional[Callable[[int, float, Optional[float]], None]] = None,
) -> tuple[MLPClassifier, dict]:
    """Train an :class:`MLPClassifier` with the original recipe; returns ``(model, metrics)``.

    Cross-entropy, SGD(lr, momentum), StepLR(step_size, gamma) stepped per epoch, shuffled batches of
    ``batch_size``, up to ``max_epochs`` with early stopping on validation loss (stop after ``patience``
    epochs without improvement; the best epoch's weights are restored). The data are split
    train/validation/test by ``split`` (per class when ``stratify``) with ``seed``; python ``random``,
    NumPy and torch are seeded with ``seed``. ``labels``: 1 = virus, 0 = others.

    Metrics (JSON-serialisable) are on the test split: accuracy, precision, recall, f1, roc_auc,
    confusion, test_loss; plus epochs_run, best_epoch, best_val_loss, val_loss (of the returned model), stopped_early, n_train/n_val/n_test,
    class_counts, history, hyperparameters and notes (e.g. an empty test split gives None metrics
    and a note). ``progress(epoch, train_loss, val_loss)`` is called after each epoch (val_loss None
    without a validation split).
    """
    x_all = torch.as_tensor(features)
    y_all = torch.as_tensor(labels)
    if x_all.dim() != 2:
        raise ValueError(f"features must be 2-D (N, D), got shape {tuple(x_all.shape)}")
    if y_all.dim() != 1 or y_all.shape[0] != x_all.shape[0]:
        raise ValueError(f"labels must be 1-D with {x_all.shape[0]} entries, got shape {tuple(y_all.shape)}")
    if y_all.is_floating_point():
        if not torch.equal(y_all, y_all.round()):
            raise ValueError("labels must be integers 0 (others) or 1 (virus)")
    y_all = y_all.to(torch.int64)
    if y_all.numel() and not bool(((y_all == 0) | (y_all == 1)).all()):
        raise ValueError("labels must be 0 (others) or 1 (virus)")
    x_all = x_all.to(torch.float32)
    if not bool(torch.isfinite(x_all).all()):
        raise VirNucProError("training features contain NaN or infinite values")
    split = tuple(float(s) for s in split)
    if len(split) != 3 or any(s < 0 for s in split) or abs(sum(split) - 1.0) > 1e-6 or split[0] <= 0:
        raise ValueError(f"split must be three non-negative fractions summing to 1 with train > 0, got {split}")
    for name, value in (("max_epochs", max_epochs), ("patience", patience), ("batch_size", batch_size)):
        if int(value) < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")

    n = int(x_all.shape[0])
    y_np = y_all.numpy()
    train_idx, val_idx, test_idx = _split_indices(y_np, split, seed, stratify)
    if train_idx.size < 2:
        raise VirNucProError(f"training needs at least 2 training examples; got {n} examples in all")
    notes: list[str] = []
    if np.unique(y_np[train_idx]).size < 2:
        notes.append("the training split holds only one class; the model cannot learn to separate classes")

    _seed_everything(seed)
    device = torch.device(device)
    model = MLPClassifier(input_dim=x_all.shape[1], hidden_dim=hidden_dim, num_classes=2).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
    shuffle = torch.Generator().manual_seed(seed)

    x_dev, y_dev = x_all.to(device), y_all.to(device)
    to_dev = lambda idx: torch.from_numpy(idx).to(device)  # noqa: E731
    x_tr, y_tr = x_dev[to_dev(train_idx)], y_dev[to_dev(train_idx)]
    x_va, y_va = x_dev[to_dev(val_idx)], y_dev[to_dev(val_idx)]
    x_te, y_te = x_dev[to_dev(test_idx)], y_dev[to_dev(test_idx)]
    if val_idx.size == 0:
        notes.append("validation split is empty: no early stopping; the last epoch's weights are kept")

    best_val = math.inf
    best_epoch = 0
    best_state = None
    bad_epochs = 0
    stopped_early = False
    history = []
    epoch = 0
    for epoch in range(1, int(max_epochs) + 1):
        model.train()
        total = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device: no sync per batch
        count = 0
        for batch in _batches(x_tr.shape[0], int(batch_size), shuffle):
            batch = batch.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x_tr[batch]), y_tr[batch])
            loss.backward()
            optimizer.step()
            total += loss.detach().double() * batch.numel()
            count += batch.numel()
        scheduler.step()
        train_loss = float(total) / count
        val_loss = _mean_loss(model, x_va, y_va) if val_idx.size else None
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
        if progress is not None:
            progress(epoch, train_loss, val_loss)
        if val_loss is None:
            best_epoch = epoch
            continue
        if val_loss < best_val:
            best_val, best_epoch, bad_epochs = val_loss, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
            if bad_epochs >= patience:
                stopped_early = True
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()

    metrics: dict = {
        "accuracy": None,
        "precision": None,
        "recall": None,
        "f1": None,
        "roc_auc": None,
        "confusion": None,
        "test_loss": None,
    }
    if test_idx.size:
        probs = model.predict_proba(x_te).cpu().numpy()
        metrics.update(binary_metrics(probs, y_te.cpu().numpy()))
        metrics["test_loss"] = _mean_loss(model, x_te, y_te)
        if metrics["roc_auc"] is None:
            notes.append("the test split holds only one class: ROC AUC is undefined")
    else:
        notes.append(f"test split is empty ({n} examples, split {list(split)}): no test metrics")
    metrics.update(
        epochs_run=epoch,
        best_epoch=best_epoch,
        best_val_loss=best_val if best_state is not None else None,
        val_loss=_mean_loss(model, x_va, y_va) if val_idx.size else None,  # of the returned (restored) model
        stopped_early=stopped_early,
        n_train=int(train_idx.size),
        n_val=int(val_idx.size),
        n_test=int(test_idx.size),
        class_counts={
            "all": _class_counts(y_np),
            "train": _class_counts(y_np[train_idx]),
            "val": _class_counts(y_np[val_idx]),
            "test": _class_counts(y_np[test_idx]),
        },
        input_dim=int(x_all.shape[1]),
        seed=int(seed),
        hyperparameters={
            "max_epochs": int(max_epochs),
            "patience": int(patience),
            "batch_size": int(batch_size),
            "lr": float(lr),
            "momentum": float(momentum),
            "step_size": int(step_size),
            "gamma": float(gamma),
            "split": list(split),
            "stratify": bool(stratify),
            "hidden_dim": int(hidden_dim),
        },
        history=history,
        notes=notes,
    )
    return model, metrics


# -- virnucpro train ---------------------------------------------------------------------------------


def _is_genbank(path) -> bool:
    from .fasta import open_input

    with open_input(path) as fh:
        head = fh.read(4096).lstrip()
    return head.startswith(b"LOCUS")


def _genbank_to_fasta(path, tmpdir: Path) -> tuple[Path, dict[str, list[str]]]:
    """A FASTA copy of a GenBank file and each record's CDS translations."""
    from Bio import SeqIO

    from .fasta import open_input

    fasta = tmpdir / (Path(path).name + ".fa")
    cds: dict[str, list[str]] = {}
    try:
        with open_input(path) as raw, io.TextIOWrapper(raw, encoding="ascii", errors="replace") as handle, \
                open(fasta, "w") as out:
            for rec in SeqIO.parse(handle, "genbank"):
                out.write(f">{rec.id}\n{rec.seq}\n")
                cds[rec.id] = [f.qualifiers["translation"][0] for f in rec.features
                               if f.type == "CDS" and "translation" in f.qualifiers]
    except ValueError as exc:
        raise InputError(path, f"cannot read GenBank: {exc}") from None
    return fasta, cds


def featurize(path, pipeline, unit_records: int = 4096):
    """Features of every frame of ``path`` (in input order) and each frame's (record ID, protein)."""
    from .distributed import iter_units
    from .fasta import RecordValidator

    feats, keys = [], []
    for unit, records in iter_units(path, unit_records, RecordValidator(path)):
        result = pipeline.run(pipeline.prepare(unit, records))
        if len(result.frames):
            ids = np.asarray(records.ids(), dtype=object)
            feats.append(result.features)
            keys.extend(zip(ids[result.frames.record], result.frames.proteins()))
    if not feats:
        raise InputError(path, "no chunk has a stop-free frame: nothing to train on")
    return np.concatenate(feats), keys


def train(*, virus, host, chunk_size: int, out, profile: str = "auto", esm: str | None = None,
          dnabert: str | None = None, seed: int = 42, gpus: int | None = None, dtype: str | None = None,
          max_epochs: int = 200, cds_filter: bool = False) -> dict:
    """Features of every frame of ``virus`` (label 1) and ``host`` (label 0) through the ``predict`` path, then
    the original training recipe; writes ``out`` (.safetensors) and its ``.metrics.json``; returns the metrics."""
    from .engine import EngineOptions, FramePipeline, default_dtype
    from .models.classifier_files import save_classifier
    from .models.profiles import resolve_profile

    check_chunk_size(chunk_size)
    out = Path(out)
    if out.suffix != ".safetensors":
        raise VirNucProError(f"--out must end in .safetensors, not {out.name}")
    profile = resolve_profile(profile, chunk_size, esm=esm, dnabert=dnabert,
                              need_classifier=False)
    gpus = gpus if gpus is not None else (1 if torch.cuda.is_available() else 0)
    device = "cuda:0" if gpus else "cpu"
    options = EngineOptions(chunk_size=chunk_size, device=device, dtype=dtype or default_dtype(device),
                            compile=False, save_features=True)
    pipeline = FramePipeline(profile, options)
    xs, ys, sources = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, path in ((1, virus), (0, host)):
            cds = None
            src = path
            if _is_genbank(path):
                src, cds = _genbank_to_fasta(path, Path(tmp))
            elif cds_filter:
                raise VirNucProError(f"--cds-filter needs GenBank input with CDS translations; {path} is FASTA")
            x, keys = featurize(src, pipeline)
            if cds is not None and cds_filter:
                keep = np.array([any(prot in t for t in cds.get(rid, ())) for rid, prot in keys], dtype=bool)
                log.info("%s: CDS filter keeps %d of %d frames", path, keep.sum(), len(keep))
                x = x[keep]
            if len(x) == 0:
                raise InputError(path, "no frame left to train on")
            xs.append(x)
            ys.append(np.full(len(x), label, dtype=np.int64))
            sources["virus" if label else "host"] = {"path": str(path), "frames": int(len(x))}
    features = torch.from_numpy(np.concatenate(xs)).float()
    labels = torch.from_numpy(np.concatenate(ys))
    model, metrics = train_classifier(features, labels, seed=seed, max_epochs=max_epochs)
    metadata = {"chunk_size": chunk_size, "profile": profile.describe(), "training_data": sources,
                "metrics": {k: metrics[k] for k in ("accuracy", "precision", "recall", "f1", "roc_auc")
                            if k in metrics}, "seed": seed}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_classifier(model, out, metadata=metadata)
    metrics_path = out.with_suffix(".metrics.json")
    metrics_path.write_text(json.dumps({"training_data": sources, **metrics}, indent=2, default=str) + "\n")
    log.info("trained on %d virus and %d host frames: test accuracy %s, F1 %s, ROC AUC %s; wrote %s and %s",
             sources["virus"]["frames"], sources["host"]["frames"], metrics.get("accuracy"), metrics.get("f1"),
             metrics.get("roc_auc"), out, metrics_path)
    return {"model": str(out), "metrics_file": str(metrics_path), "training_data": sources, **metrics}
