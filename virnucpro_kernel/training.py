"""``virnucpro train``: features through the same path as ``predict``, then the original training recipe.

Virus = label 1, host = label 0. FASTA input trains on every stop-free frame. GenBank input (``LOCUS``)
with ``--cds-filter`` keeps, as the original's training did, only frames whose protein is a substring of
an annotated CDS translation of the same record.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from .errors import InputError, VirNucProError
from .frames import check_chunk_size

log = logging.getLogger("virnucpro")


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
    import torch

    from .engine import EngineOptions, FramePipeline, default_dtype
    from .models.classifier import save_classifier, train_classifier
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
