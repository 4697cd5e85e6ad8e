"""The VirNucPro MLP classifier (the published model)::

    Linear(input_dim, 512) -> BatchNorm1d(512) -> ReLU -> Dropout(0.5) -> Linear(512, 2)

evaluated in eval mode; softmax gives ``[P(others), P(virus)]`` (label 1 = virus, 0 = others, as
:data:`LABELS`). Submodule names are the original's (``hidden_layer``, ``bn1``, ``output_layer``,
``dropout``), so state-dict keys match the published checkpoints.

Reading and writing its weight files is :mod:`.classifier_files` (``load_classifier``,
``save_classifier``); training it is :mod:`virnucpro_kernel.training` (``train_classifier``).
"""

from __future__ import annotations

import torch
from torch import nn

LABELS = ("others", "virus")  # index 0, 1

__all__ = ["MLPClassifier", "LABELS"]


class MLPClassifier(nn.Module):
    """``Linear -> BatchNorm1d -> ReLU -> Dropout -> Linear``; logits of ``[others, virus]``."""

    def __init__(self, input_dim: int = 3328, hidden_dim: int = 512, num_classes: int = 2, dropout: float = 0.5):
        super().__init__()
        self.input_dim = int(input_dim)
        self.hidden_dim = int(hidden_dim)
        self.num_classes = int(num_classes)
        # Registration order as in the original (also the state-dict key order).
        self.hidden_layer = nn.Linear(self.input_dim, self.hidden_dim)
        self.bn1 = nn.BatchNorm1d(self.hidden_dim)
        self.output_layer = nn.Linear(self.hidden_dim, self.num_classes)
        self.dropout = nn.Dropout(dropout)
        self.metadata: dict = {}  # provenance from the file it was loaded from (not part of the state dict)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.hidden_layer(x)
        x = self.bn1(x)
        x = torch.relu(x)
        x = self.dropout(x)
        return self.output_layer(x)

    def predict_proba(self, features) -> torch.Tensor:
        """Softmax probabilities ``(N, num_classes)`` (float32, on the model's device), in eval mode, no grad.

        ``features`` is a tensor or array ``(N, input_dim)``; it is moved to the model's device and dtype.
        The module's train/eval mode is restored afterwards.
        """
        x = torch.as_tensor(features)
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"features must have shape (N, {self.input_dim}), got {tuple(x.shape)}")
        weight = self.hidden_layer.weight
        x = x.to(device=weight.device, dtype=weight.dtype)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                logits = self(x)
                return torch.softmax(logits.float(), dim=1)
        finally:
            self.train(was_training)
