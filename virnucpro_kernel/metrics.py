"""Scores against labels: ROC and precision-recall points, AUROC, average precision, confusion tables.

The definitions (the positive class, records without a score, AUROC and AUPRC as scikit-learn computes them)
are set out in :mod:`virnucpro_kernel.evaluation`, which applies them to runs and other tools' outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import VirNucProError
from .outputs import plain

VIRUS = "virus"
OTHERS = "others"
LABELS = (VIRUS, OTHERS)


# ============================================================================================ curves
def curves(y_true, score) -> pd.DataFrame:
    """ROC and precision-recall points of scores against labels, one row per distinct threshold.

    ``y_true``: booleans (True = virus). ``score``: floats, NaN for a record without a score (predicted
    ``others`` at every threshold, ranked below every scored record). Rows go from the highest threshold
    (``+inf``: nothing called virus) down; a last row at ``-inf`` (everything called virus) appears when
    some records have no score. Columns: ``threshold, tp, fp, fn, tn, tpr, fpr, precision, recall``
    (precision is NaN where nothing is called virus).
    """
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(score, dtype=float)
    if y.shape != s.shape:
        raise ValueError("y_true and score differ in length")
    scored = ~np.isnan(s)
    ss, yy = s[scored], y[scored]
    order = np.argsort(-ss, kind="mergesort")
    ss, yy = ss[order], yy[order]
    if len(ss):
        last = np.append(np.flatnonzero(np.diff(ss) != 0), len(ss) - 1)
        thresholds = ss[last]
        tp = np.cumsum(yy)[last]
        fp = np.cumsum(~yy)[last]
    else:
        thresholds = tp = fp = np.zeros(0)
    positives, negatives = int(y.sum()), int((~y).sum())
    thresholds = np.concatenate(([np.inf], thresholds))
    tp = np.concatenate(([0], tp)).astype(np.int64)
    fp = np.concatenate(([0], fp)).astype(np.int64)
    if not scored.all():
        thresholds = np.append(thresholds, -np.inf)
        tp = np.append(tp, positives)
        fp = np.append(fp, negatives)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = tp / positives if positives else np.full(len(tp), np.nan)
        fpr = fp / negatives if negatives else np.full(len(fp), np.nan)
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), np.nan)
    return pd.DataFrame({"threshold": thresholds, "tp": tp, "fp": fp, "fn": positives - tp,
                         "tn": negatives - fp, "tpr": tpr, "fpr": fpr, "precision": precision, "recall": tpr})


def auroc(curve: pd.DataFrame) -> float:
    """Trapezoidal area under the ROC curve of :func:`curves` (NaN when a class is absent)."""
    fpr, tpr = curve["fpr"].to_numpy(), curve["tpr"].to_numpy()
    if len(fpr) < 2 or np.isnan(fpr).any() or np.isnan(tpr).any():
        return math.nan
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def average_precision(curve: pd.DataFrame) -> float:
    """Average precision ``sum_n (R_n - R_{n-1}) P_n`` over the points of :func:`curves` (NaN without a virus)."""
    recall, precision = curve["recall"].to_numpy(), curve["precision"].to_numpy()
    if len(recall) < 2 or np.isnan(recall).any():
        return math.nan
    return float(np.nansum(np.diff(recall) * precision[1:]))


# ============================================================================================ operating points
@dataclass(frozen=True)
class OperatingPoint:
    """The confusion table at one threshold (or of one tool's own calls) and the metrics from it."""

    threshold: float | None
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else math.nan

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else math.nan

    @property
    def specificity(self) -> float:
        return self.tn / (self.tn + self.fp) if self.tn + self.fp else math.nan

    @property
    def fpr(self) -> float:
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else math.nan

    @property
    def f1(self) -> float:
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp else (0.0 if self.fp + self.fn else math.nan)

    @property
    def accuracy(self) -> float:
        return (self.tp + self.tn) / self.n if self.n else math.nan

    def confusion(self) -> pd.DataFrame:
        """2 x 2 table: rows the true label, columns the prediction."""
        return pd.DataFrame([[self.tp, self.fn], [self.fp, self.tn]],
                            index=pd.Index(["virus", "others"], name="label"),
                            columns=pd.Index(["virus", "others"], name="predicted"))

    def to_dict(self) -> dict:
        return plain({"threshold": self.threshold, "tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn,
                      "precision": self.precision, "recall": self.recall, "f1": self.f1,
                      "specificity": self.specificity, "accuracy": self.accuracy}, strict=False)


def point(y: np.ndarray, predicted: np.ndarray, threshold) -> OperatingPoint:
    y = np.asarray(y, dtype=bool)
    predicted = np.asarray(predicted, dtype=bool)
    return OperatingPoint(None if threshold is None else float(threshold), int((y & predicted).sum()),
                          int((~y & predicted).sum()), int((y & ~predicted).sum()), int((~y & ~predicted).sum()))


def check_threshold(t) -> float:
    """``t`` as a float; a threshold that is not a number between 0 and 1 is refused (one line)."""
    if isinstance(t, bool) or not isinstance(t, (int, float, np.number)) or not 0.0 <= t <= 1.0:
        raise VirNucProError(f"threshold must be a number between 0 and 1, not {t!r}")
    return float(t)


class Scores:
    """Labelled scores at one level (sequences or chunks): curves, AUROC/AUPRC, operating points."""

    def __init__(self, table: pd.DataFrame):
        self.table = table.reset_index(drop=True)
        self.y = (self.table["label"] == VIRUS).to_numpy()
        self.score = self.table["score"].to_numpy(dtype=float)
        self._curve = None

    @property
    def curve(self) -> pd.DataFrame:
        if self._curve is None:
            self._curve = curves(self.y, self.score)
        return self._curve

    @property
    def roc(self) -> pd.DataFrame:
        return self.curve[["threshold", "fpr", "tpr"]]

    @property
    def pr(self) -> pd.DataFrame:
        return self.curve[["threshold", "recall", "precision"]]

    @property
    def auroc(self) -> float:
        return auroc(self.curve)

    @property
    def auprc(self) -> float:
        return average_precision(self.curve)

    def at(self, threshold) -> OperatingPoint:
        t = check_threshold(threshold)
        with np.errstate(invalid="ignore"):
            predicted = ~np.isnan(self.score) & (self.score >= t)
        return point(self.y, predicted, t)

    def threshold_for(self, precision=None, recall=None) -> float | None:
        if (precision is None) == (recall is None):
            raise ValueError("give exactly one of precision= or recall=")
        target = precision if precision is not None else recall
        if isinstance(target, bool) or not isinstance(target, (int, float, np.number)) or not 0 <= target <= 1:
            raise ValueError(f"the target must be a number in [0, 1], not {target!r}")
        points = self.curve[np.isfinite(self.curve["threshold"])]
        if precision is not None:
            reach = points["precision"].to_numpy() >= precision  # NaN (nothing called) never reaches
            return float(points["threshold"].to_numpy()[reach].min()) if reach.any() else None
        reach = points["recall"].to_numpy() >= recall
        return float(points["threshold"].to_numpy()[reach].max()) if reach.any() else None

    def counts(self) -> dict:
        scored = ~np.isnan(self.score)
        return {"records": len(self.y), "virus": int(self.y.sum()), "others": int((~self.y).sum()),
                "unscored": int((~scored).sum()), "unscored_virus": int((~scored & self.y).sum()),
                "unscored_others": int((~scored & ~self.y).sum())}
