"""The Python API: one typed function per command. The ``virnucpro`` CLI and the notebooks call these.

    import virnucpro_kernel as vk

    run = vk.predict("reads.fa", chunk_size=300, out="run1", profile="demo", gpus=0)
    run.sequences                      # per-sequence calls (pandas)
    strict = run.call(0.9)             # the same table at another threshold, nothing recomputed
    vk.call("run1", threshold=0.9)     # ... and written: sequences.tsv and viral.fa of run1
    ev = vk.evaluate(run, "labels.tsv")

Errors a user can fix (bad input, missing models, a folder in use) raise :class:`~virnucpro_kernel.errors.VirNucProError`
with a one-line message; the CLI prints it as ``virnucpro: error: ...`` and exits with status 2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import VirNucProError

if TYPE_CHECKING:
    from .evaluation import Evaluation

__all__ = ["prepare", "predict", "load_run", "call", "Run", "train", "benchmark", "evaluate", "report"]


# --------------------------------------------------------------------------------------------- runs


@dataclass
class Run:
    """A finished ``predict`` run, read from its output folder (tables are read when first asked for)."""

    out: Path

    def __post_init__(self):
        self.out = Path(self.out)
        if not (self.out / "run.json").is_file():
            what = "an unfinished run (resume it with --resume)" if (self.out / ".work").is_dir() else "no finished run"
            raise VirNucProError(f"{self.out}: {what} (no run.json)")

    @cached_property
    def info(self) -> dict:
        """``run.json``: versions, parameters, models, timings, counts, warnings."""
        return json.loads((self.out / "run.json").read_text())

    @cached_property
    def sequences(self):
        """``sequences.tsv`` as a DataFrame (one row per input record)."""
        from .outputs import read_sequences_tsv

        return read_sequences_tsv(self.out / "sequences.tsv")

    @cached_property
    def frames(self):
        """``frames.parquet`` without the features: one row per frame with ``p_others`` and ``p_virus``."""
        return self._frames_and_features[0]

    @property
    def features(self):
        """The 3,328 features per frame (float32 array), or None when the run did not save them."""
        return self._frames_and_features[1]

    @cached_property
    def _frames_and_features(self):
        from .outputs import frames_file, read_frames_parquet

        return read_frames_parquet(frames_file(self.out))

    @property
    def threshold(self) -> float:
        return float((self.info.get("outputs") or {}).get("threshold", self.info["parameters"]["threshold"]))

    @property
    def chunk_size(self) -> int:
        return int(self.info["parameters"]["chunk_size"])

    @property
    def profile(self) -> str:
        return self.info["profile"]["name"]

    @property
    def warnings(self) -> list[str]:
        return list(self.info.get("warnings") or [])

    def call(self, threshold: float):
        """The per-sequence table at another ``threshold``, from the per-frame scores (nothing is recomputed
        on a GPU, nothing is written)."""
        from .calls import recall

        return recall(self.frames, self.sequences, threshold)

    def viral_records(self):
        """The records of ``viral.fa``: a DataFrame of ``sequence_id``, ``description``, ``sequence``."""
        import pandas as pd

        from .fasta import read_fasta_records
        from .calls import DEMO_HEADER_MARK

        rows = [(rid, desc.removesuffix(DEMO_HEADER_MARK), seq)
                for rid, desc, seq in read_fasta_records(self.out / "viral.fa")]
        return pd.DataFrame(rows, columns=["sequence_id", "description", "sequence"])

    def __repr__(self):
        n = len(self.sequences)
        virus = int((self.sequences["call"] == "virus").sum())
        return f"Run({str(self.out)!r}: {n} sequences, {virus} called virus at {self.threshold}, {self.profile} profile)"


def load_run(out) -> Run:
    """Read the finished run in ``out``."""
    return Run(Path(out))


# --------------------------------------------------------------------------------------------- commands


def prepare(input, *, chunk_size: int, out):
    """Chunk ``input`` and keep the stop-free frames: ``out/chunks.fa``, ``identified_nucleotide.fa``,
    ``identified_protein.faa`` (the original's three files, byte for byte). Returns the counts and timing."""
    from .frames import prepare as _prepare

    return _prepare(input, chunk_size, out)


def predict(input, *, chunk_size: int, out, profile: str = "auto", gpus: int | None = None, threshold: float = 0.5,
            esm: str | None = None, dnabert: str | None = None, classifier: str | None = None,
            dtype: str | None = None, token_budget: int | None = None, attention: str = "auto", packing: bool = True,
            compile: bool | None = None, dedup: bool = True, gelu_epilogue: bool | None = None, save_features: bool = False,
            resume: bool = False, force: bool = False, unit_records: int | None = None, threads: int | None = None,
            log_dir: str | None = None, quiet: bool = False) -> Run | None:
    """Classify the sequences of ``input`` (FASTA, plain or gzip) and write the run into ``out``; returns it.

    ``gpus``: None uses every visible GPU (one process per GPU under torchrun when more than one), 0 the CPU.
    ``profile``: ``auto``/``real`` (the published models; says which files are missing), ``demo`` (small,
    offline, not biologically meaningful) or ``random`` (benchmarks). ``out`` must be empty or absent unless
    ``resume`` (continue the run there) or ``force`` (start over). See ``virnucpro predict --help`` for the rest.
    ``compile``: None compiles the encoder layers (GPU) only when the input holds enough work to repay the
    seconds compiling takes (about 5M ESM-2 tokens per GPU); True or False decide.
    Under a ``torchrun`` you started yourself, only rank 0 returns the run (the others return None).
    """
    from .prediction import PredictSettings, predict as _predict

    settings = PredictSettings(input=str(input), chunk_size=chunk_size, out=str(out), profile=profile, gpus=gpus,
                               threshold=threshold, esm=esm, dnabert=dnabert, classifier=classifier, dtype=dtype,
                               token_budget=token_budget, attention=attention, packing=packing, compile=compile,
                               dedup=dedup, gelu_epilogue=gelu_epilogue, save_features=save_features, resume=resume,
                               force=force, unit_records=unit_records, threads=threads, log_dir=log_dir, quiet=quiet)
    from .distributed import rank_info

    _predict(settings)
    return load_run(out) if rank_info().is_main else None


def call(run, *, threshold: float, out=None) -> Run:
    """Write ``sequences.tsv`` and ``viral.fa`` of a finished run at another ``threshold`` (no GPU work): in the
    run's folder (under its lock; ``prediction_results*`` and ``frames.parquet`` untouched; the threshold is
    recorded in ``run.json``), or in ``out``. ``viral.fa`` needs the input's sequences: the input named in
    ``run.json`` is read again and must still have its recorded SHA-256."""
    from .calls import write_calls

    run = run if isinstance(run, Run) else load_run(run)
    target = write_calls(run.out, threshold=threshold, out=None if out is None else Path(out))
    return load_run(target)


def train(*, virus, host, chunk_size: int, out, profile: str = "auto", esm: str | None = None,
          dnabert: str | None = None, seed: int = 42, gpus: int | None = None, dtype: str | None = None,
          max_epochs: int = 200, cds_filter: bool = False) -> dict:
    """Train a classifier on labelled sequences (FASTA or GenBank) with the original recipe; writes
    ``out`` (.safetensors) and ``out`` with ``.metrics.json``; returns the metrics."""
    from .training import train as _train

    return _train(virus=virus, host=host, chunk_size=chunk_size, out=out, profile=profile, esm=esm, dnabert=dnabert,
                  seed=seed, gpus=gpus, dtype=dtype, max_epochs=max_epochs, cds_filter=cds_filter)


def benchmark(*, suite: str, out, data_size: str = "tiny", gpu_counts: str | None = None, compare_to=None,
              save_baseline=None, no_reference: bool = False, quick: bool = False, profile: str | None = None,
              per_gpu_reads: int | None = None, max_reads: int | None = None, chunk_size: int = 300) -> int:
    """Run benchmark suites into ``out`` (JSON + markdown per suite). Returns 1 when ``compare_to`` finds a
    regression, else 0."""
    from .bench.suites import run_benchmark

    return run_benchmark(suite=suite, out=out, data_size=data_size, gpu_counts=gpu_counts, compare_to=compare_to,
                         save_baseline=save_baseline, no_reference=no_reference, quick=quick, profile=profile,
                         per_gpu_reads=per_gpu_reads, max_reads=max_reads, chunk_size=chunk_size)


def evaluate(run, truth, *, others: dict | None = None, length_bins=None, threshold: float | None = None,
             out=None) -> "Evaluation":
    """Evaluate a run (a ``Run`` or its folder) against known labels, and other tools' outputs on the same labels
    (``others``: ``{name: output file or folder}``): see :func:`virnucpro_kernel.evaluation.evaluate`. With
    ``out``, also write ``evaluation.json``, ``summary.tsv``, ``comparison.tsv``, ``by_length.tsv`` and
    ``curves.tsv`` there (``virnucpro evaluate``)."""
    from .evaluation import evaluate as _evaluate, write_evaluation

    ev = _evaluate(run, truth, others=others, length_bins=length_bins, threshold=threshold)
    if out is not None:
        write_evaluation(ev, out)
    return ev


def report(params: str = "demo", out=None, only=None) -> Path:
    """Execute every notebook with a parameter set (a name under ``params/`` or a YAML file) and render HTML and
    markdown pages with an index into ``out`` (default ``reports/<set>``). Returns the index page."""
    from .reports.render import build_reports

    return build_reports(params, out=out, only=only)
