"""Evaluation of a prediction against known labels, and against other tools on the same labels.

``evaluate(run, truth)`` joins a run's per-sequence scores (``sequences.tsv``) and per-frame scores
(``frames.parquet``) with a table of labels (``virus`` / ``others``) and returns an :class:`Evaluation`: ROC and
precision-recall curves, AUROC and AUPRC per sequence and per chunk, the confusion table at any threshold, the
threshold that reaches a target precision or recall, all of it by sequence length, and other tools' results
(read by :mod:`virnucpro_kernel.peers`) on the same records.

Definitions (the same at every level and for every tool):

- **Positive class** ``virus``. A record is *predicted virus* at threshold ``t`` when it has a score and
  ``score >= t`` (the rule ``sequences.tsv`` uses for its ``call``).
- **Records without a score** -- ``no_frames`` records (no chunk has a stop-free frame), chunks without a
  frame, and sequences another tool did not report -- stay in every metric: they are predicted ``others`` at
  every threshold and rank below every scored record, as if their score were lower than any real one. A
  curve therefore ends with a point at threshold ``-inf`` (every record called virus, the unscored ones
  included) that closes it at recall 1; no real threshold reaches that point. They are also counted
  separately (:attr:`Evaluation.no_frames`, the ``unscored`` column) and the summary repeats the
  sequence-level metrics over the scored records alone.
- **AUROC**: the trapezoidal area under the ROC curve, ties between scores grouped into one step (what
  ``sklearn.metrics.roc_auc_score`` computes). **AUPRC**: *average precision*, ``sum_n (R_n - R_{n-1}) P_n``
  over the distinct thresholds in decreasing order (``sklearn.metrics.average_precision_score``); it is not
  the trapezoidal area under the PR curve, which is optimistic. Both are NaN when one class is absent
  (AUROC) or there is no virus (AUPRC).
- **Chunks**: a chunk's score is its highest frame P(virus) in ``frames.parquet``; it inherits the label of
  its sequence. Chunks without a frame (listed in ``sequences.tsv`` as ``chunks - chunks_with_frames``) are
  unscored chunks.
- **Records the labels do not cover** (run records without a label) and **labels the run does not cover**
  are never dropped silently: they are counted (:attr:`Evaluation.counts`), listed
  (:attr:`Evaluation.unlabelled`, :attr:`Evaluation.missing`) and left out of every metric, for every tool,
  so that all tools are compared on the same records.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from .errors import InputError, VirNucProError
from .metrics import LABELS, OTHERS, VIRUS, OperatingPoint, Scores, check_threshold, point
from .outputs import plain
#: Default length bins (left edges, bp): < 500 (short reads), 500-1k, 1-3k, 3-10k, >= 10k (contigs).
DEFAULT_LENGTH_BINS = (0, 500, 1000, 3000, 10000)
LEVELS = ("sequence", "chunk")
DEMO_DIR = Path(__file__).resolve().parent / "data" / "evaluate"
THIS_TOOL = "VirNucPro"


class DemoTruth(NamedTuple):
    """The shipped labelled demo set: a FASTA file and its labels TSV (``sequence_id``, ``label``, ...)."""

    fasta: Path
    labels: Path


def demo_truth() -> DemoTruth:
    """Paths of the labelled demo set (``data/evaluate/``): sequences the demo classifier was not trained on.

    See ``data/evaluate/README.md`` for the source of every sequence. The demo profile's scores on it are
    not biologically meaningful: they exercise the evaluation, not the science.
    """
    return DemoTruth(DEMO_DIR / "demo_eval.fa", DEMO_DIR / "demo_labels.tsv")


# ============================================================================================ labels
def read_truth(truth) -> pd.DataFrame:
    """Labels as a table ``sequence_id``, ``label`` (one row per ID, labels ``virus`` / ``others``).

    ``truth`` is a TSV path (columns ``sequence_id`` and ``label``; other columns are ignored), a pair of
    FASTA paths ``(virus.fa, others.fa)`` (IDs: the first word of each header, as in ``sequences.tsv``), or
    a DataFrame with those two columns. Labels are compared after trimming blanks and lower-casing. A label
    outside {virus, others}, an empty or duplicated ID, or an ID in both FASTA files raises ``InputError``.
    """
    if isinstance(truth, pd.DataFrame):
        return _check_labels(truth, "<labels table>")
    if isinstance(truth, (tuple, list)):
        if len(truth) != 2:
            raise ValueError("truth as FASTA files is a pair (virus.fa, others.fa)")
        parts = [pd.DataFrame({"sequence_id": _fasta_ids(p), "label": lab}) for p, lab in zip(truth, LABELS)]
        both = set(parts[0]["sequence_id"]) & set(parts[1]["sequence_id"])
        if both:
            rid = sorted(both)[0]
            raise InputError(truth[1], f"ID also in the virus file {os.fspath(truth[0])}", record=rid)
        return _check_labels(pd.concat(parts, ignore_index=True), f"{os.fspath(truth[0])} + {os.fspath(truth[1])}")
    if isinstance(truth, (str, os.PathLike)):
        path = Path(truth)
        if not path.is_file():
            raise InputError(path, "labels file not found")
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment=None)
        return _check_labels(table, path)
    raise TypeError("truth must be a TSV path, a (virus.fa, others.fa) pair or a DataFrame, "
                    f"not {type(truth).__name__}")


def _check_labels(table: pd.DataFrame, where) -> pd.DataFrame:
    missing = [c for c in ("sequence_id", "label") if c not in table.columns]
    if missing:
        raise InputError(where, f"labels need columns sequence_id and label; missing {', '.join(missing)}")
    ids = table["sequence_id"].astype(str).str.strip()
    labels = table["label"].astype(str).str.strip().str.lower()
    empty = ids == ""
    if empty.any():
        raise InputError(where, f"empty sequence_id in row {int(np.flatnonzero(empty)[0]) + 1}")
    bad = ~labels.isin(LABELS)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(where, f"label '{table['label'].iloc[i]}' is not virus or others", record=ids.iloc[i])
    dup = ids.duplicated()
    if dup.any():
        raise InputError(where, "sequence_id listed twice", record=ids[dup].iloc[0])
    return pd.DataFrame({"sequence_id": ids.to_numpy(dtype=object), "label": labels.to_numpy(dtype=object)})


def _fasta_ids(path) -> list[str]:
    """The record IDs of a FASTA file (plain or gzip), read as ``predict`` reads them."""
    from .fasta import iter_raw_blocks

    return [rid for block in iter_raw_blocks(path, allow_empty=True) for rid in block.ids()]


# ============================================================================================ the run
def _read_run(run) -> tuple[pd.DataFrame, pd.DataFrame, float | None, str]:
    """(sequences, frames, the run's threshold or None, where) from a run folder or an object with tables."""
    if isinstance(run, (str, os.PathLike)):
        from .outputs import RUN_JSON, SEQUENCES_TSV, frames_file
        import pyarrow.parquet as pq

        out = Path(run)
        if not (out / SEQUENCES_TSV).is_file():
            raise InputError(out, f"not a prediction folder: {SEQUENCES_TSV} missing")
        frames_path = frames_file(out)
        sequences = pd.read_csv(out / SEQUENCES_TSV, sep="\t", dtype={"sequence_id": str, "call": str},
                                keep_default_na=False, na_values={"score": [""], "viral_chunk_fraction": [""]})
        names = pq.read_schema(frames_path).names
        frames = pq.read_table(frames_path,
                               columns=[c for c in ("sequence_id", "chunk", "p_virus") if c in names]).to_pandas()
        info = json.loads((out / RUN_JSON).read_text(encoding="utf-8")) if (out / RUN_JSON).is_file() else {}
        return sequences, frames, _threshold_of(info), str(out)
    sequences = getattr(run, "sequences", None)
    frames = getattr(run, "frames", None)
    if not isinstance(sequences, pd.DataFrame) or not isinstance(frames, pd.DataFrame):
        raise TypeError("run must be a prediction folder or an object with .sequences and .frames DataFrames")
    threshold = getattr(run, "threshold", None)
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool):
        threshold = None
        for attr in ("run", "info", "run_info"):
            info = getattr(run, attr, None)
            if isinstance(info, dict) and _threshold_of(info) is not None:
                threshold = _threshold_of(info)
                break
    where = str(getattr(run, "out", None) or getattr(run, "path", None) or "<run>")
    return sequences, frames, threshold, where


def _threshold_of(info: dict) -> float | None:
    for section in ("outputs", "parameters"):  # a later `virnucpro call` records its threshold in outputs
        value = (info.get(section) or {}).get("threshold") if isinstance(info.get(section), dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


# ============================================================================================ length bins
def _bin_edges(length_bins) -> np.ndarray:
    edges = DEFAULT_LENGTH_BINS if length_bins is None else length_bins
    edges = [float(e) for e in edges]
    if not edges or any(b <= a for a, b in zip(edges, edges[1:])) or any(math.isnan(e) or e < 0 for e in edges):
        raise VirNucProError(f"length bins must be increasing lengths in bp (>= 0), not {length_bins!r}")
    if edges[0] > 0:
        edges = [0.0] + edges
    if not math.isinf(edges[-1]):
        edges = edges + [math.inf]
    return np.asarray(edges)


def _bp(value: float) -> str:
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if value >= size and value % (size // 10 or 1) == 0:
            text = f"{value / size:g}"
            return f"{text}{unit}"
    return f"{value:g}"


def _bin_labels(edges: np.ndarray) -> list[str]:
    labels = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        if lo <= 0:
            labels.append(f"<{_bp(hi)}")
        elif math.isinf(hi):
            labels.append(f">={_bp(lo)}")
        else:
            labels.append(f"{_bp(lo)}-{_bp(hi)}")
    return labels


def _assign_bins(lengths, edges: np.ndarray, labels: list[str]) -> pd.Categorical:
    return pd.cut(np.asarray(lengths, dtype=float), bins=edges, right=False, labels=labels)


# ============================================================================================ other tools
@dataclass
class PeerResult:
    """Another tool on the evaluated records: its scores (NaN where it gave none) and calls."""

    name: str
    table: pd.DataFrame  # sequence_id, label, length_bin, score, call, reported
    unknown: pd.DataFrame  # the tool's rows whose ID is not an evaluated record
    has_score: bool = field(init=False)
    has_call: bool = field(init=False)

    def __post_init__(self):
        self.has_score = bool(self.table["score"].notna().any())
        self.has_call = bool(self.table["call"].notna().any())
        self.scores = Scores(self.table)

    @property
    def auroc(self) -> float:
        return self.scores.auroc if self.has_score else math.nan

    @property
    def auprc(self) -> float:
        return self.scores.auprc if self.has_score else math.nan

    def operating_point(self) -> OperatingPoint:
        """The tool's own calls (unreported records count as ``others``); without calls, score >= 0.5."""
        if self.has_call:
            return point(self.scores.y, (self.table["call"] == VIRUS).to_numpy(), None)
        return self.scores.at(0.5)


# ============================================================================================ the evaluation
class Evaluation:
    """A run's calls against labels. Build it with :func:`evaluate`."""

    def __init__(self, sequences: pd.DataFrame, chunks: pd.DataFrame, *, threshold: float, bin_labels: list[str],
                 unlabelled: pd.DataFrame, missing: pd.DataFrame, peers: dict[str, PeerResult], source: str,
                 truth_records: int):
        self.sequences = sequences
        self.chunks = chunks
        self.threshold = threshold
        self.bin_labels = bin_labels
        self.unlabelled = unlabelled
        self.missing = missing
        self.peers = peers
        self.source = source
        self._levels = {"sequence": Scores(sequences), "chunk": Scores(chunks)}
        self._truth_records = truth_records

    # ------------------------------------------------------------------ the scores at each level
    def scores(self, level: str = "sequence") -> Scores:
        if level not in self._levels:
            raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
        return self._levels[level]

    @property
    def roc(self) -> pd.DataFrame:
        """Sequence-level ROC curve: ``threshold, fpr, tpr``."""
        return self.scores("sequence").roc

    @property
    def pr(self) -> pd.DataFrame:
        """Sequence-level precision-recall curve: ``threshold, recall, precision``."""
        return self.scores("sequence").pr

    @property
    def chunk_roc(self) -> pd.DataFrame:
        return self.scores("chunk").roc

    @property
    def chunk_pr(self) -> pd.DataFrame:
        return self.scores("chunk").pr

    @property
    def auroc(self) -> float:
        return self.scores("sequence").auroc

    @property
    def auprc(self) -> float:
        """Sequence-level average precision (see the module docstring)."""
        return self.scores("sequence").auprc

    @property
    def chunk_auroc(self) -> float:
        return self.scores("chunk").auroc

    @property
    def chunk_auprc(self) -> float:
        return self.scores("chunk").auprc

    def at(self, threshold=None, level: str = "sequence") -> OperatingPoint:
        """Confusion table and precision/recall/F1 at ``threshold`` (default: the run's threshold).

        Predicted virus: a score ``>= threshold``; records without a score are predicted ``others``.
        """
        return self.scores(level).at(self.threshold if threshold is None else threshold)

    def threshold_for(self, *, precision=None, recall=None, level: str = "sequence") -> float | None:
        """The threshold that reaches a target precision or recall, or ``None`` when no threshold does.

        Candidates are the distinct scores (a threshold equal to a score calls that record virus).
        ``precision=p``: the *lowest* threshold whose precision is ``>= p`` (the most recall at that
        precision; precision is not monotonic in the threshold, so higher thresholds may fall below ``p``).
        ``recall=r``: the *highest* threshold whose recall is ``>= r`` (the fewest calls that reach it).
        ``None`` when no threshold reaches the target, e.g. ``recall=1`` when a virus has no score.
        """
        return self.scores(level).threshold_for(precision=precision, recall=recall)

    # ------------------------------------------------------------------ breakdowns
    def by_length(self, threshold=None, level: str = "sequence", *, bins=None) -> pd.DataFrame:
        """One row per length bin (the sequence's length, for chunks too): counts, unscored records,
        AUROC, AUPRC and the confusion table with precision/recall/F1 at ``threshold`` (default: the run's).
        ``bins``: other bin edges in bp for this table (default: those given to :func:`evaluate`)."""
        t = self.threshold if threshold is None else check_threshold(threshold)
        table, names = self.scores(level).table, self.bin_labels
        if bins is not None:
            edges = _bin_edges(bins)
            names = _bin_labels(edges)
            table = table.assign(length_bin=_assign_bins(table["length"], edges, names))
        rows = [_metrics_row(name, Scores(table[table["length_bin"] == name]), t) for name in names]
        return pd.DataFrame(rows).rename(columns={"scope": "length_bin"})

    @property
    def no_frames(self) -> pd.DataFrame:
        """Sequences without a frame (``call`` ``no_frames``) by label and length bin: how many, and their
        share of each label. They count as predicted ``others`` in every metric."""
        seq = self.sequences
        nf = seq["score"].isna()
        rows = []
        for name in ["all"] + list(self.bin_labels):
            sel = np.ones(len(seq), dtype=bool) if name == "all" else (seq["length_bin"] == name).to_numpy()
            row = {"length_bin": name}
            for lab in LABELS:
                of_label = sel & (seq["label"] == lab).to_numpy()
                row[f"{lab}"] = int(of_label.sum())
                row[f"{lab}_no_frames"] = int((of_label & nf.to_numpy()).sum())
                row[f"{lab}_no_frames_share"] = (row[f"{lab}_no_frames"] / row[lab]) if row[lab] else math.nan
            rows.append(row)
        return pd.DataFrame(rows)

    @property
    def no_frames_records(self) -> pd.DataFrame:
        """The labelled sequences without a frame."""
        return self.sequences[self.sequences["score"].isna()].reset_index(drop=True)

    @property
    def counts(self) -> dict:
        """How the run and the labels matched up."""
        return {"run_records": len(self.sequences) + len(self.unlabelled), "label_records": self._truth_records,
                "evaluated": len(self.sequences), "unlabelled": len(self.unlabelled), "missing": len(self.missing),
                "no_frames": int(self.sequences["score"].isna().sum()), "chunks": len(self.chunks),
                "chunks_without_frames": int(self.chunks["score"].isna().sum())}

    def notes(self) -> list[str]:
        """Plain sentences about records that are left out or counted specially."""
        c = self.counts
        notes = []
        if c["unlabelled"]:
            notes.append(f"{c['unlabelled']} run record(s) have no label and are left out: "
                         f"{_some(self.unlabelled['sequence_id'])} (all in .unlabelled and evaluation.json).")
        if c["missing"]:
            notes.append(f"{c['missing']} labelled ID(s) are not in the run and are left out: "
                         f"{_some(self.missing['sequence_id'])} (all in .missing and evaluation.json).")
        if c["no_frames"]:
            notes.append(f"{c['no_frames']} sequence(s) have no stop-free frame (no score): predicted others at "
                         "every threshold, also reported in .no_frames.")
        if c["chunks_without_frames"]:
            notes.append(f"{c['chunks_without_frames']} chunk(s) have no frame: unscored chunks, predicted others.")
        for name, peer in self.peers.items():
            missing = int((~peer.table["reported"]).sum())
            if missing:
                notes.append(f"{name} did not report {missing} evaluated record(s): predicted others, no score.")
            if len(peer.unknown):
                notes.append(f"{name} reports {len(peer.unknown)} ID(s) that are not evaluated records, left out: "
                             f"{_some(peer.unknown['sequence_id'])} (all in .peers['{name}'].unknown and "
                             "evaluation.json).")
        return notes

    # ------------------------------------------------------------------ tables
    def summary(self, threshold=None) -> pd.DataFrame:
        """One row per level: records, labels, unscored records, AUROC, AUPRC and the metrics at
        ``threshold`` (default: the run's). ``sequence (scored only)`` leaves out the ``no_frames`` records."""
        t = self.threshold if threshold is None else check_threshold(threshold)
        seq = self.scores("sequence")
        rows = [_metrics_row("sequence", seq, t),
                _metrics_row("sequence (scored only)", Scores(seq.table[seq.table["score"].notna()]), t),
                _metrics_row("chunk", self.scores("chunk"), t)]
        return pd.DataFrame(rows).rename(columns={"scope": "level"})

    def comparison(self) -> pd.DataFrame:
        """This tool and every other tool on the same records: AUROC and AUPRC (tools with scores), and the
        confusion table of each tool's own calls (this tool: at the run's threshold). ``reported``: records
        the tool gave a row for; ``scored``: records with a score."""
        rows = []
        seq = self.scores("sequence")
        own = {"tool": THIS_TOOL, "reported": len(seq.table), "scored": int(seq.table["score"].notna().sum()),
               "auroc": seq.auroc, "auprc": seq.auprc, **_point_columns(seq.at(self.threshold))}
        rows.append(own)
        for name, peer in self.peers.items():
            rows.append({"tool": name, "reported": int(peer.table["reported"].sum()),
                         "scored": int(peer.table["score"].notna().sum()), "auroc": peer.auroc, "auprc": peer.auprc,
                         **_point_columns(peer.operating_point())})
        return pd.DataFrame(rows)

    def to_dict(self, curves: bool = False) -> dict:
        """Everything as plain JSON types (NaN as None); the curves only with ``curves=True``."""
        out = {"threshold": self.threshold, "source": self.source, "counts": self.counts,
               "length_bins": list(self.bin_labels),
               "definitions": {"positive": VIRUS, "auprc": "average precision (sklearn average_precision_score)",
                               "auroc": "trapezoidal ROC area, ties grouped (sklearn roc_auc_score)",
                               "unscored": "no_frames sequences, frameless chunks and unreported records are "
                                           "predicted others at every threshold and rank below every score"},
               "auroc": self.auroc, "auprc": self.auprc, "chunk_auroc": self.chunk_auroc,
               "chunk_auprc": self.chunk_auprc,
               "at_threshold": self.at().to_dict(), "chunk_at_threshold": self.at(level="chunk").to_dict(),
               "summary": self.summary().to_dict(orient="records"),
               "by_length": self.by_length().to_dict(orient="records"),
               "chunk_by_length": self.by_length(level="chunk").to_dict(orient="records"),
               "no_frames": self.no_frames.to_dict(orient="records"),
               "comparison": self.comparison().to_dict(orient="records"),
               "unlabelled": self.unlabelled["sequence_id"].tolist(),
               "missing": self.missing["sequence_id"].tolist(),
               "other_tools": {name: {"reported": int(p.table["reported"].sum()),
                                      "not_reported": p.table.loc[~p.table["reported"], "sequence_id"].tolist(),
                                      "unknown_ids": p.unknown["sequence_id"].astype(str).tolist()}
                               for name, p in self.peers.items()},
               "notes": self.notes()}
        if curves:
            out["curves"] = {"sequence": self.scores("sequence").curve.to_dict(orient="list"),
                             "chunk": self.scores("chunk").curve.to_dict(orient="list"),
                             **{f"peer:{k}": p.scores.curve.to_dict(orient="list")
                                for k, p in self.peers.items() if p.has_score}}
        return plain(out, strict=False)

    def __repr__(self) -> str:
        c = self.counts
        return (f"Evaluation({c['evaluated']} labelled sequences, AUROC {self.auroc:.3f}, AUPRC {self.auprc:.3f}; "
                f"{c['chunks']} chunks, AUROC {self.chunk_auroc:.3f}; threshold {self.threshold:g}; "
                f"{c['unlabelled']} unlabelled, {c['missing']} missing, {len(self.peers)} other tool(s))")


def _some(ids, n: int = 5) -> str:
    ids = [str(i) for i in ids]
    return ", ".join(ids[:n]) + (f" and {len(ids) - n} more" if len(ids) > n else "")


def _point_columns(point: OperatingPoint) -> dict:
    return {"threshold": point.threshold, "tp": point.tp, "fp": point.fp, "fn": point.fn, "tn": point.tn,
            "precision": point.precision, "recall": point.recall, "f1": point.f1}


def _metrics_row(scope: str, sc: Scores, t: float) -> dict:
    c = sc.counts()
    return {"scope": scope, "records": c["records"], "virus": c["virus"], "others": c["others"],
            "unscored": c["unscored"], "auroc": sc.auroc, "auprc": sc.auprc, **_point_columns(sc.at(t))}




# ============================================================================================ entry point
def evaluate(run, truth, *, others: dict | None = None, length_bins=None,
             threshold: float | None = None) -> Evaluation:
    """Evaluate a run's calls against labels (and other tools' outputs on the same labels).

    ``run``: a prediction folder (``sequences.tsv``, ``frames.parquet``, ``run.json``) or an object with
    ``.sequences`` and ``.frames`` DataFrames. ``truth``: a labels TSV, a ``(virus.fa, others.fa)`` pair, or
    a DataFrame (see :func:`read_truth`). ``others``: ``{name: table}`` where a table is a path to another
    tool's output or a DataFrame (see :func:`virnucpro_kernel.peers.load`). ``length_bins``: increasing bin
    edges in bp (default :data:`DEFAULT_LENGTH_BINS`). ``threshold``: the default threshold of ``.at`` and
    the tables (default: the run's, from ``run.json``; 0.5 when unknown).
    """
    sequences, frames, run_threshold, source = _read_run(run)
    labels = read_truth(truth)
    for col in ("sequence_id", "length", "score"):
        if col not in sequences.columns:
            raise InputError(source, f"sequences table lacks column {col}")
    t = check_threshold(threshold if threshold is not None else (run_threshold if run_threshold is not None else 0.5))
    edges = _bin_edges(length_bins)
    bin_labels = _bin_labels(edges)

    seq = sequences.copy()
    seq["sequence_id"] = seq["sequence_id"].astype(str)
    dup = seq["sequence_id"].duplicated()
    if dup.any():
        raise InputError(source, "sequence_id listed twice in the run", record=seq["sequence_id"][dup].iloc[0])
    label_of = dict(zip(labels["sequence_id"], labels["label"]))
    known = seq["sequence_id"].map(label_of)
    unlabelled = seq[known.isna()].reset_index(drop=True)
    seq = seq[known.notna()].assign(label=known[known.notna()]).reset_index(drop=True)
    missing = labels[~labels["sequence_id"].isin(set(sequences["sequence_id"].astype(str)))].reset_index(drop=True)

    seq["score"] = pd.to_numeric(seq["score"], errors="coerce").astype(float)
    seq["length_bin"] = _assign_bins(seq["length"], edges, bin_labels)
    keep = ["sequence_id", "length", "length_bin", "label", "score"] + \
        [c for c in ("call", "chunks", "chunks_with_frames") if c in seq.columns]
    seq_table = seq[keep]

    chunk_table = _chunk_table(seq_table, frames)
    peers = {}
    for name, table in (others or {}).items():
        peers[str(name)] = _peer(str(name), table, seq_table)
    return Evaluation(seq_table, chunk_table, threshold=t, bin_labels=bin_labels, unlabelled=unlabelled,
                      missing=missing, peers=peers, source=source, truth_records=len(labels))


def _chunk_table(seq: pd.DataFrame, frames: pd.DataFrame) -> pd.DataFrame:
    """One row per chunk of the labelled sequences: its highest frame P(virus), NaN for a frameless chunk."""
    cols = ["sequence_id", "chunk", "length", "length_bin", "label", "score"]
    if len(frames):
        for col in ("sequence_id", "chunk", "p_virus"):
            if col not in frames.columns:
                raise ValueError(f"frames table lacks column {col}")
        f = pd.DataFrame({"sequence_id": frames["sequence_id"].astype(str).to_numpy(),
                          "chunk": frames["chunk"].to_numpy(dtype=np.int64),
                          "p_virus": frames["p_virus"].to_numpy(dtype=float)})
        f = f[f["sequence_id"].isin(set(seq["sequence_id"]))]
        scored = f.groupby(["sequence_id", "chunk"], sort=False, as_index=False)["p_virus"].max()
        scored = scored.rename(columns={"p_virus": "score"})
    else:
        scored = pd.DataFrame({"sequence_id": pd.Series([], dtype=object), "chunk": pd.Series([], dtype=np.int64),
                               "score": pd.Series([], dtype=float)})
    if "chunks" in seq.columns:  # every chunk, frameless ones included
        n = seq["chunks"].to_numpy(dtype=np.int64)
        starts = np.repeat(np.cumsum(n) - n, n)  # chunk k of a record: its position minus the record's start
        every = pd.DataFrame({"sequence_id": np.repeat(seq["sequence_id"].to_numpy(dtype=object), n),
                              "chunk": np.arange(int(n.sum()), dtype=np.int64) - starts + 1})
        table = every.merge(scored, on=["sequence_id", "chunk"], how="outer")
    else:
        table = scored
    table = table.merge(seq[["sequence_id", "length", "length_bin", "label"]], on="sequence_id", how="left")
    order = {sid: i for i, sid in enumerate(seq["sequence_id"])}
    table = table.assign(_o=table["sequence_id"].map(order)).sort_values(["_o", "chunk"], kind="mergesort")
    table["score"] = table["score"].astype(float)
    return table[cols].reset_index(drop=True)


def _peer(name: str, table, seq: pd.DataFrame) -> PeerResult:
    from .peers import load

    calls = load(table)
    evaluated = set(seq["sequence_id"])
    inside = calls["sequence_id"].isin(evaluated)
    unknown = calls[~inside].reset_index(drop=True)
    merged = seq[["sequence_id", "length_bin", "label"]].merge(calls[inside][["sequence_id", "score", "call"]],
                                                                on="sequence_id", how="left", indicator=True)
    merged["reported"] = merged.pop("_merge").eq("both").to_numpy()
    merged["score"] = merged["score"].astype(float)
    merged["call"] = merged["call"].astype(object)
    if merged["call"].notna().any():  # a tool with calls: unreported records are its "others"
        merged.loc[merged["call"].isna(), "call"] = OTHERS
    return PeerResult(name, merged, unknown)


def write_evaluation(ev: Evaluation, out) -> list[Path]:
    """The files of ``virnucpro evaluate`` in ``out``: ``evaluation.json`` (everything, curves included),
    ``summary.tsv`` (per level), ``comparison.tsv`` (this tool and every other tool on the same sequences),
    ``by_length.tsv`` (per length bin and level) and ``curves.tsv`` (ROC and precision-recall points per level
    and tool). Each is written atomically."""
    from .outputs import atomic_open

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = ev.summary()
    by_length = pd.concat([ev.by_length().assign(level="sequence"), ev.by_length(level="chunk").assign(level="chunk")],
                          ignore_index=True)
    curves = [ev.scores("sequence").curve.assign(level="sequence", tool=THIS_TOOL),
              ev.scores("chunk").curve.assign(level="chunk", tool=THIS_TOOL)]
    curves += [p.scores.curve.assign(level="sequence", tool=name) for name, p in ev.peers.items() if p.has_score]
    files = {"evaluation.json": json.dumps(ev.to_dict(curves=True), indent=2, allow_nan=False) + "\n",
             "summary.tsv": summary.to_csv(sep="\t", index=False, lineterminator="\n"),
             "comparison.tsv": ev.comparison().to_csv(sep="\t", index=False, lineterminator="\n"),
             "by_length.tsv": by_length.to_csv(sep="\t", index=False, lineterminator="\n"),
             "curves.tsv": pd.concat(curves, ignore_index=True).to_csv(sep="\t", index=False, lineterminator="\n")}
    written = []
    for name, text in files.items():
        with atomic_open(out / name) as fh:
            fh.write(text)
        written.append(out / name)
    return written
