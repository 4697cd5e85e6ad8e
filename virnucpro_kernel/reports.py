"""Reports: what the notebooks show, and how they become HTML and markdown pages.

The notebooks in ``notebooks/`` hold narrative, parameters and figures; this module holds the rest:

- paths and parameter sets (``params/<notebook>/<set>.yaml``), found from the repository root whatever the
  working directory (papermill runs notebooks from the root, ``pytest --nbval-lax`` from ``notebooks/``);
- running the work a report is about: ``predict`` (in this process on the CPU or one GPU, through the CLI
  in a subprocess on several GPUs) and ``benchmark`` suites (CLI), or reading committed results;
- the tables the figures of ``plots`` are drawn from, and the checks each notebook asserts;
- display helpers: sortable HTML tables that are markdown tables in the markdown pages, warning boxes;
- rendering (``python -m virnucpro_kernel.reports --params demo --out reports/demo``): each notebook executed
  by papermill with the kernel ``virnucpro`` into ``OUT/<notebook>.ipynb``, then rendered to
  ``OUT/html/<notebook>.html`` (input hidden, interactive figures, plotly.js inline: works offline) and
  ``OUT/<notebook>.md`` (figures as PNG files in ``OUT/<notebook>_files/``, tables as markdown), and
  ``OUT/index.html`` / ``OUT/index.md`` linking them with parameters and provenance. A failing cell makes the
  command exit with status 2 and one line per failed notebook: notebook, cell, error.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import html
import io
import json
import logging
import math
import os
import platform
import re
import subprocess
import sys
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

KERNEL = "virnucpro"
PARAMETER_SETS = ("demo", "h200")
PUBLISHED_SAMPLE_ESM_TOKENS = 42_750_000  # the published 1M-read sample (performance anchors)
METADATA_KEY = "virnucpro"
PACKAGES = ("virnucpro-kernel", "torch", "numpy", "pandas", "pyarrow", "plotly", "matplotlib", "papermill",
            "nbconvert", "nbformat", "ipykernel")


# ------------------------------------------------------------------------------------ paths and params
def repo_root(start=None) -> Path:
    """The repository root: the nearest folder holding ``pyproject.toml`` and ``notebooks/``, walking up from
    ``start`` (default: the working directory), else from this package's folder."""
    candidates = [Path(start or os.getcwd()).resolve(), Path(__file__).resolve().parent]
    for origin in candidates:
        for folder in (origin, *origin.parents):
            if (folder / "pyproject.toml").is_file() and (folder / "notebooks").is_dir():
                return folder
    raise FileNotFoundError(f"no repository root (a folder with pyproject.toml and notebooks/) above {candidates[0]}")


def repo_path(path, root=None) -> Path:
    """``path`` as given when absolute, else relative to the repository root."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else repo_root(root) / path


def display_path(path, root=None) -> str:
    """``path`` relative to the repository root when inside it (what a committed report should show)."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(repo_root(root)))
    except ValueError:
        return str(path)


def notebook_paths(root=None) -> list[Path]:
    """The report notebooks, in the order they run (their names start with a number)."""
    return sorted((repo_root(root) / "notebooks").glob("[0-9]*.ipynb"))


def params_path(stem: str, params_set: str, root=None) -> Path:
    return repo_root(root) / "params" / stem / f"{params_set}.yaml"


def load_params(stem: str, params_set: str, root=None) -> dict:
    """Parameters of one notebook from ``params/<stem>/<set>.yaml`` (a mapping; empty file = no parameters)."""
    import yaml

    path = params_path(stem, params_set, root)
    if not path.is_file():
        raise FileNotFoundError(f"no parameter set {params_set!r} for {stem}: {display_path(path, root)} is missing")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of parameter names to values")
    return data


# -------------------------------------------------------------------------------------------- display
def _display(bundle: dict, metadata: dict | None = None) -> None:
    from IPython.display import display

    display(bundle, raw=True, metadata=metadata or {})


def format_value(value) -> str:
    """A table cell for people: thousands separators, 4 significant digits, ``–`` for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return str(v)
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e7):
            return f"{v:.3e}"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.4g}"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value)
    return str(value)


PERCENT_COLUMN = re.compile(r"(^|_)(mfu|efficiency|agreement|fraction)($|_)")


def _percent_columns(df: pd.DataFrame, percent) -> set:
    """Columns shown as percentages: ``percent`` when given, else those named like a share (``mfu``,
    ``efficiency``, ``*_agreement_*``, ``*_fraction``)."""
    if percent is not None:
        return set(percent)
    return {c for c in df.columns if isinstance(c, str) and PERCENT_COLUMN.search(c)
            and pd.api.types.is_numeric_dtype(df[c])}


def _cell_text(value, as_percent: bool) -> str:
    if as_percent and isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
            and math.isfinite(float(value)):
        return f"{100 * float(value):.2f}%" if float(value) < 0.9999 else f"{100 * float(value):.1f}%"
    return format_value(value)


def _sort_key(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    if isinstance(value, (int, float, np.integer, np.floating)) and not missing:
        return repr(float(value))
    return "" if missing else str(value)


def markdown_table(df: pd.DataFrame, max_rows: int | None = None, percent=None) -> str:
    """``df`` as a GitHub markdown table (numbers right-aligned; shares as percentages, see
    ``_percent_columns``), cut at ``max_rows`` with a note."""
    if df is None or len(df.columns) == 0:
        return "_(no data)_\n"
    shown = df if max_rows is None else df.head(max_rows)
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]
    pct = [c in _percent_columns(df, percent) for c in df.columns]

    def cell(v, as_percent=False) -> str:
        return _cell_text(v, as_percent).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in df.columns) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(cell(v, p) for v, p in zip(row, pct)) + " |" for row in shown.itertuples(index=False)]
    if len(shown) < len(df):
        lines += ["", f"_{len(shown)} of {len(df)} rows shown; the HTML page has them all._"]
    return "\n".join(lines) + "\n"


_SORT_SCRIPT = """<script>(function(){var t=document.getElementById("%s");if(!t||!t.tHead)return;
var hs=t.tHead.rows[0].cells;for(let i=0;i<hs.length;i++){hs[i].style.cursor="pointer";hs[i].title="sort";
hs[i].addEventListener("click",function(){var up=this.dataset.dir!=="up";for(const h of hs){h.dataset.dir="";}
this.dataset.dir=up?"up":"down";var b=t.tBodies[0],rows=Array.from(b.rows);rows.sort(function(r,s){
var x=r.cells[i].dataset.sort,y=s.cells[i].dataset.sort,a=parseFloat(x),c=parseFloat(y);
var d=(x!==""&&y!==""&&!isNaN(a)&&!isNaN(c))?a-c:String(x).localeCompare(String(y));return up?d:-d;});
rows.forEach(function(r){b.appendChild(r);});});}})();</script>"""


def html_table(df: pd.DataFrame, caption: str | None = None, max_height: int = 520, percent=None) -> str:
    """``df`` as an HTML table sortable by clicking a column header (a few lines of inline script)."""
    table_id = f"vnp-table-{uuid.uuid4().hex[:12]}"
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
    pct = [c in _percent_columns(df, percent) for c in df.columns]
    head = "".join(f"<th style=\"text-align:{'right' if n else 'left'}\">{html.escape(str(c))}</th>"
                   for c, n in zip(df.columns, numeric))
    body = []
    for row in df.itertuples(index=False):
        cells = "".join(
            f"<td data-sort=\"{html.escape(_sort_key(v), quote=True)}\" "
            f"style=\"text-align:{'right' if n else 'left'}\">{html.escape(_cell_text(v, p))}</td>"
            for v, n, p in zip(row, numeric, pct))
        body.append(f"<tr>{cells}</tr>")
    cap = f"<caption style=\"caption-side:top;text-align:left;font-weight:bold\">{html.escape(caption)}</caption>" \
        if caption else ""
    return (f"<div style=\"max-height:{max_height}px;overflow:auto\"><table id=\"{table_id}\" class=\"dataframe\">{cap}"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>" + _SORT_SCRIPT % table_id)


def show_table(df: pd.DataFrame | None, caption: str | None = None, max_rows_markdown: int = 40,
               empty: str = "no rows", percent=None) -> None:
    """Display a table: sortable HTML (every row) in JupyterLab and the HTML page, a markdown table (the first
    ``max_rows_markdown`` rows) in the markdown page. Shares (MFU, efficiency, agreement, fractions) are
    shown as percentages (``percent``: the columns to show so, instead of those found by name)."""
    if df is None or len(df) == 0:
        show_note(f"{caption + ': ' if caption else ''}{'no data' if df is None else empty}")
        return
    md = (f"**{caption}**\n\n" if caption else "") + markdown_table(df, max_rows_markdown, percent)
    _display({"text/html": html_table(df, caption, percent=percent), "text/markdown": md,
              "text/plain": df.to_string(max_rows=20)})


def show_note(text: str) -> None:
    """A short note (for example: why a figure is empty)."""
    _display({"text/html": f"<p style=\"color:#555\"><em>{html.escape(text)}</em></p>",
              "text/markdown": f"_{text}_\n", "text/plain": text})


def show_warnings(items, source: str = "") -> None:
    """Warning boxes (the demo profile's, for one): yellow boxes in HTML, quotes in markdown. ``items``: a
    list of warnings, a ``run.json`` or benchmark result (its ``warnings`` and its profile's), a
    ``Prediction``, a list of results or ``(file, result)`` pairs, or None. The warnings also go in the output's metadata, where the report index finds
    them."""
    if isinstance(items, Prediction):
        items = items.warnings
    elif isinstance(items, dict):
        items = run_warnings(items)
    elif isinstance(items, (list, tuple)) and any(isinstance(i, (dict, tuple)) for i in items):
        # results, or (file, result) pairs as ``load_results`` gives them
        items = [w for i in items for w in run_warnings(i[-1] if isinstance(i, tuple) else i)]
    items = [str(w) for w in dict.fromkeys(items or [])]
    if not items:
        return
    where = f" ({source})" if source else ""
    boxes = "".join(f"<div style=\"background:#fff4ce;border-left:5px solid #e0a800;padding:8px 12px;margin:6px 0\">"
                    f"<strong>Warning{html.escape(where)}:</strong> {html.escape(w)}</div>" for w in items)
    md = "\n".join(f"> **Warning{where}:** {w}\n" for w in items)
    _display({"text/html": boxes, "text/markdown": md, "text/plain": "\n".join(f"warning: {w}" for w in items)},
             metadata={METADATA_KEY: {"warnings": items}})


def run_warnings(info: dict | None) -> list[str]:
    """Warnings of a ``run.json`` or a benchmark result: its own ``warnings`` and its profile's."""
    if not info:
        return []
    found = list(info.get("warnings") or [])
    profile = info.get("profile")
    if isinstance(profile, dict):
        found += list(profile.get("warnings") or [])
    return list(dict.fromkeys(str(w) for w in found))


def checks_table(rows: list[tuple[str, bool | None, str]], title: str = "checks") -> pd.DataFrame:
    """Each check as ``(what, passed, detail)`` (``passed`` None: skipped) -> a table; raises
    ``AssertionError`` naming every failed check. What a notebook's assertion cell calls."""
    table = pd.DataFrame(rows, columns=["check", "passed", "detail"])
    failed = [f"{r[0]} ({r[2]})" if r[2] else r[0] for r in rows if r[1] is False]
    if failed:
        raise AssertionError(f"{len(failed)} of {len(rows)} {title} failed: " + "; ".join(failed))
    table["passed"] = table["passed"].map({True: "yes", False: "NO", None: "skipped"})
    return table


# ------------------------------------------------------------------------------------------- predict
@dataclass
class Prediction:
    """A ``predict`` output folder read back."""

    out: Path
    run: dict
    sequences: pd.DataFrame
    frames: pd.DataFrame
    viral_headers: list[str] = field(default_factory=list)
    message: str = ""

    @classmethod
    def missing(cls, out, message: str) -> "Prediction":
        """An empty prediction (no rows): what a report shows before the results exist."""
        from .outputs import SEQUENCE_COLUMNS

        frames = pd.DataFrame({c: pd.Series(dtype=t) for c, t in (
            ("record_index", "int64"), ("sequence_id", "str"), ("chunk", "int32"), ("frame", "str"),
            ("p_others", "float32"), ("p_virus", "float32"))})
        return cls(Path(out), {}, pd.DataFrame(columns=list(SEQUENCE_COLUMNS)), frames, [], message)

    @property
    def empty(self) -> bool:
        return not self.run

    @property
    def warnings(self) -> list[str]:
        return run_warnings(self.run)

    @property
    def chunk_size(self) -> int | None:
        return (self.run.get("parameters") or {}).get("chunk_size")

    @property
    def threshold(self) -> float:
        return float((self.run.get("parameters") or {}).get("threshold", 0.5))


def predict_argv(input, out, chunk_size: int = 300, profile: str = "auto", gpus: int | None = None,
                 threshold: float = 0.5, extra=()) -> list[str]:
    """The ``virnucpro predict`` arguments of a notebook run (no progress bar)."""
    argv = ["predict", str(input), "--chunk-size", str(chunk_size), "--out", str(out), "--profile", profile,
            "--threshold", repr(float(threshold)), "--quiet", *map(str, extra)]
    if gpus is not None:
        argv += ["--gpus", str(int(gpus))]
    return argv


def run_predict(input, out, chunk_size: int = 300, profile: str = "auto", gpus: int | None = 0,
                threshold: float = 0.5, extra=()) -> str:
    """Run ``predict`` and return its summary line. On the CPU (``gpus=0``) or one GPU it runs in this process
    (the Python API: ``cli.build_parser`` + ``predict.predict_from_args``); on several GPUs, or all visible
    ones (``gpus=None``), through the CLI in a subprocess, which starts one process per GPU with torchrun.
    Failures raise ``RuntimeError`` with the CLI's one-line error."""
    input, out = repo_path(input), repo_path(out)
    argv = predict_argv(input, out, chunk_size, profile, gpus, threshold, extra)
    if gpus in (0, 1):
        from .cli import build_parser
        from .errors import VirNucProError
        from .predict import predict_from_args

        args = build_parser().parse_args(argv)
        args.argv = argv
        logger = logging.getLogger("virnucpro")
        before = list(logger.handlers)
        buf = io.StringIO()
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
                warnings.simplefilter("ignore")  # the run's warnings are in run.json, shown from there
                predict_from_args(args)
        except VirNucProError as exc:
            raise RuntimeError(f"virnucpro predict: {exc}") from None
        finally:
            for handler in logger.handlers[len(before):]:  # the run's log file: close it
                logger.removeHandler(handler)
                handler.close()
        lines = [line for line in buf.getvalue().splitlines() if line and not line.startswith("warning:")]
        return lines[-1] if lines else ""
    proc = subprocess.run([sys.executable, "-m", "virnucpro_kernel", *argv], capture_output=True, text=True,
                          cwd=repo_root())
    if proc.returncode:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"virnucpro predict --gpus {gpus} failed (exit status {proc.returncode}): {tail}")
    lines = [line for line in proc.stdout.splitlines() if line and not line.startswith("warning:")]
    return lines[-1] if lines else ""


def read_sequences_tsv(path) -> pd.DataFrame:
    """``sequences.tsv`` with IDs kept as written (``NA`` stays a name) and empty scores as NaN."""
    return pd.read_csv(path, sep="\t", dtype={"sequence_id": str, "call": str}, keep_default_na=False,
                       na_values={"score": [""], "viral_chunk_fraction": [""]})


def read_frames(path) -> pd.DataFrame:
    """``frames.parquet`` without its feature column (which can be large)."""
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    return pq.read_table(path, columns=[c for c in names if c != "features"]).to_pandas()


def load_prediction(out, required: bool = True) -> Prediction:
    """Read a ``predict`` output folder. Missing: ``FileNotFoundError`` when ``required``, else a note and an
    empty ``Prediction`` (a report on results that do not exist yet renders with empty sections)."""
    from .outputs import FRAMES_PARQUET, RUN_JSON, SEQUENCES_TSV, VIRAL_FASTA

    out = repo_path(out)
    missing = [name for name in (RUN_JSON, SEQUENCES_TSV, FRAMES_PARQUET) if not (out / name).is_file()]
    if missing:
        message = f"no prediction in {display_path(out)}: {', '.join(missing)} missing"
        if required:
            raise FileNotFoundError(message)
        show_note(message + "; the sections below stay empty until it exists.")
        return Prediction.missing(out, message)
    run = json.loads((out / RUN_JSON).read_text(encoding="utf-8"))
    viral = out / VIRAL_FASTA
    headers = [line[1:].rstrip("\n") for line in open(viral, encoding="utf-8") if line.startswith(">")] \
        if viral.is_file() else []
    return Prediction(out, run, read_sequences_tsv(out / SEQUENCES_TSV), read_frames(out / FRAMES_PARQUET), headers)


def prediction(input, out, chunk_size: int = 300, profile: str = "auto", gpus: int | None = 0,
               threshold: float = 0.5, run: bool = True, required: bool = True) -> Prediction:
    """Run ``predict`` (when ``run``) and read its outputs back; the summary line is kept in ``message``."""
    message = run_predict(input, out, chunk_size, profile, gpus, threshold) if run else ""
    pred = load_prediction(out, required=required)
    if message:
        pred.message = message
    return pred


def run_table(pred: Prediction) -> pd.DataFrame:
    """What was run, on what, how fast: one row per fact of ``run.json``."""
    if pred.empty:
        return pd.DataFrame(columns=["", "value"])
    run = pred.run
    p, t, c = run.get("parameters") or {}, run.get("timings") or {}, run.get("counts") or {}
    inp, prof, hw = run.get("input") or {}, run.get("profile") or {}, run.get("hardware") or {}
    outs = run.get("outputs") or {}
    rows = [("input", display_path(inp["path"]) if inp.get("path") else None), ("records", outs.get("records")),
            ("frames", c.get("frames")),
            ("ESM-2 tokens", c.get("esm_tokens")), ("chunk size", p.get("chunk_size")),
            ("threshold", p.get("threshold")), ("profile", prof.get("name")),
            ("device", f"{hw.get('device')} ({p.get('gpus')} GPU(s), {p.get('world_size')} process(es))"),
            ("dtype", p.get("dtype")), ("models loaded in (s)", t.get("load_models_s")),
            ("compute (s)", t.get("compute_s")), ("frames/s", t.get("frames_per_s")),
            ("ESM-2 tokens/s", t.get("esm_tokens_per_s")),
            ("calls", ", ".join(f"{k} {v}" for k, v in (outs.get("calls") or {}).items())),
            ("version", run.get("virnucpro_version")), ("output folder", display_path(pred.out))]
    if pred.message:
        rows.insert(0, ("summary", pred.message))
    return pd.DataFrame(rows, columns=["", "value"]).astype({"value": object})


def sequences_table(pred: Prediction) -> pd.DataFrame | None:
    """``sequences.tsv``, best score first (None without a prediction)."""
    if pred.empty:
        return None
    return pred.sequences.sort_values("score", ascending=False, na_position="last", kind="stable")


def viral_hits(pred: Prediction) -> pd.DataFrame | None:
    """The records called ``virus``, best score first, with their FASTA description (from ``viral.fa``); None
    without a prediction."""
    if pred.empty:
        return None
    described = {h.split(maxsplit=1)[0]: (h.split(maxsplit=1) + [""])[1] for h in pred.viral_headers if h.strip()}
    hits = pred.sequences[pred.sequences["call"] == "virus"].copy()
    hits.insert(1, "description", hits["sequence_id"].map(described).fillna(""))
    return hits.sort_values("score", ascending=False, kind="stable")[
        ["sequence_id", "description", "length", "chunks", "chunks_with_frames", "score", "viral_chunk_fraction"]]


def input_records(input) -> pd.DataFrame:
    """ID and length of every non-empty record of a FASTA file, in input order."""
    from .sequences import iter_record_blocks

    ids, lengths = [], []
    for block in iter_record_blocks(repo_path(input)):
        ids += block.ids()
        lengths += [int(x) for x in block.lengths]
    return pd.DataFrame({"sequence_id": ids, "length": lengths})


def check_prediction(pred: Prediction, input=None) -> pd.DataFrame:
    """The assertions of the prediction notebook (see ``checks_table``): every input record has one row in
    ``sequences.tsv``, in input order; scores are probabilities; each call follows from its score and the
    threshold; frames, run.json and viral.fa agree."""
    if pred.empty:
        return checks_table([("prediction present", None, pred.message or "no results to check")])
    seqs, frames, rows = pred.sequences, pred.frames, []
    if input is not None and repo_path(input).is_file():
        records = input_records(input)
        same = len(records) == len(seqs) and all(
            (records[c].to_numpy() == seqs[c].to_numpy()).all() for c in ("sequence_id", "length"))
        rows.append(("every input record has one row in sequences.tsv, in input order", bool(same),
                     f"{len(records)} records in the input, {len(seqs)} rows"))
    else:
        rows.append(("every input record has one row in sequences.tsv", None, f"input {input} not available here"))
    scores = seqs["score"].dropna()
    rows.append(("record scores lie in [0, 1]", bool(scores.between(0, 1).all()),
                 f"{scores.min():.4g}..{scores.max():.4g}" if len(scores) else "no score"))
    expected = np.where(seqs["chunks_with_frames"] == 0, "no_frames",
                        np.where(seqs["score"] >= pred.threshold, "virus", "others"))
    bad = int((expected != seqs["call"].to_numpy()).sum())
    rows.append((f"calls follow the scores at threshold {pred.threshold:g}", bad == 0, f"{bad} disagree"))
    total = float(np.abs(frames["p_virus"].astype(np.float64) + frames["p_others"] - 1).max()) if len(frames) else 0.0
    rows.append(("P(virus) + P(others) = 1 per frame", total < 1e-3, f"largest deviation {total:.2e}"))
    rows.append(("frames per record add up to frames.parquet", int(seqs["frames"].sum()) == len(frames),
                 f"{int(seqs['frames'].sum())} vs {len(frames)}"))
    counted = (pred.run.get("counts") or {}).get("frames")
    rows.append(("run.json counts the same frames", counted == len(frames), f"{counted} vs {len(frames)}"))
    n_virus = int((seqs["call"] == "virus").sum())
    rows.append(("viral.fa holds the records called virus", len(pred.viral_headers) == n_virus,
                 f"{len(pred.viral_headers)} records, {n_virus} calls"))
    return checks_table(rows, "prediction checks")


# ----------------------------------------------------------------------------------------- benchmarks
def run_benchmark(suite: str, out, data_size: str = "tiny", quick: bool = True, gpu_counts=None,
                  extra=()) -> Path:
    """``virnucpro benchmark --suite SUITE`` in a subprocess; returns ``OUT/SUITE.json``. Failures raise
    ``RuntimeError`` with the CLI's one-line error."""
    out = repo_path(out)
    argv = ["benchmark", "--suite", suite, "--data-size", data_size, "--out", display_path(out), *map(str, extra)]
    if quick:
        argv.append("--quick")
    if gpu_counts:
        argv += ["--gpu-counts", ",".join(str(c) for c in (gpu_counts if isinstance(gpu_counts, (list, tuple))
                                                            else str(gpu_counts).split(",")))]
    proc = subprocess.run([sys.executable, "-m", "virnucpro_kernel", *argv], capture_output=True, text=True,
                          cwd=repo_root())
    if proc.returncode not in (0, 1):  # 1: a regression against --compare-to, the result is written
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"virnucpro {' '.join(argv[:3])} failed (exit status {proc.returncode}): {tail}")
    return out / f"{suite}.json"


def load_result_file(path, required: bool = True) -> dict | None:
    """A benchmark result (validated against ``bench.schema``). Missing: ``FileNotFoundError`` when
    ``required``, else a note and ``None``."""
    from .bench.schema import load_result

    path = repo_path(path)
    if not path.is_file():
        if required:
            raise FileNotFoundError(f"no benchmark result at {display_path(path)}")
        show_note(f"no benchmark result at {display_path(path)} yet; the sections that need it stay empty.")
        return None
    return load_result(path)


def benchmark_result(suite: str, results_dir, run: bool = False, required: bool = True, data_size: str = "tiny",
                     quick: bool = True, gpu_counts=None) -> dict | None:
    """Run a suite into ``results_dir`` (when ``run``), then read ``results_dir/<suite>.json``."""
    if run:
        run_benchmark(suite, results_dir, data_size=data_size, quick=quick, gpu_counts=gpu_counts)
    return load_result_file(repo_path(results_dir) / f"{suite}.json", required=required)


def result_table(result: dict | None) -> pd.DataFrame:
    """Who, when, what and on what of a benchmark result."""
    if not result:
        return pd.DataFrame(columns=["", "value"])
    hw, wl = result.get("hardware") or {}, result.get("workload") or {}
    commit = str(result.get("git_commit", ""))[:12] + (" (uncommitted changes)" if result.get("git_dirty") else "")
    gpus = f"{hw.get('n_gpus', 0)} x {hw.get('gpu_name')}" if hw.get("n_gpus") else "none"
    rows = [("suite", result.get("suite")), ("commit", commit), ("time (UTC)", result.get("timestamp")),
            ("command", result.get("command")), ("GPUs", gpus),
            ("CPU", f"{hw.get('cpu')} ({hw.get('cpu_count')} threads)"),
            ("torch / CUDA", f"{hw.get('torch')} / {hw.get('cuda')}"),
            ("workload", f"{wl.get('name', '–')}: {format_value(wl.get('reads'))} reads, "
                         f"{format_value(wl.get('frames'))} frames, {format_value(wl.get('tokens'))} ESM-2 tokens")]
    rows += [("note", n) for n in result.get("notes") or []]
    return pd.DataFrame(rows, columns=["", "value"]).astype({"value": object})


def stage_table(result: dict | None) -> pd.DataFrame | None:
    """One row per stage of a result: timing (median, min, max), throughput, MFU, memory."""
    if not result or not result.get("stages"):
        return None
    rows = []
    for name, st in result["stages"].items():
        rows.append({"stage": name, "path": st.get("path"), "n_gpus": st.get("n_gpus"),
                     "seconds": st.get("seconds"), "seconds_min": st.get("seconds_min"),
                     "seconds_max": st.get("seconds_max"), "repetitions": st.get("repetitions"),
                     "tokens_per_s": st.get("tokens_per_s"), "sequences_per_s": st.get("sequences_per_s"),
                     "mfu": st.get("mfu"), "peak_memory_gb": st.get("peak_memory_gb")})
    return pd.DataFrame(rows)


_GPU_SUFFIX = re.compile(r"[_@ -]*(\d+)\s*(gpus?|procs?|processes)?$", re.IGNORECASE)


def scaling_table(result: dict | None) -> pd.DataFrame | None:
    """Throughput per GPU count of a scaling result: ``label`` (the stage name without its GPU count),
    ``n_gpus``, ``tokens_per_s``, ``sequences_per_s`` (frames/s), ``mfu``, ``seconds``, ``efficiency`` (the
    result's ``scaling_efficiency``, else rate(N) / (N x rate(smallest N) / smallest N))."""
    if not result or not result.get("stages"):
        return None
    rows = []
    for name, st in result["stages"].items():
        n = st.get("n_gpus")
        if n is None:
            continue
        rows.append({"label": _GPU_SUFFIX.sub("", name) or name, "stage": name, "n_gpus": int(n),
                     "tokens_per_s": st.get("tokens_per_s"), "sequences_per_s": st.get("sequences_per_s"),
                     "mfu": st.get("mfu"), "seconds": st.get("seconds"), "wall_seconds": st.get("wall_seconds"),
                     "reads": st.get("reads"), "gpu_busy_fraction": st.get("gpu_busy_fraction")})
    if not rows:
        return None
    df = pd.DataFrame(rows).sort_values(["label", "n_gpus"], kind="stable").reset_index(drop=True)
    df.attrs["unit"] = "GPUs" if (result.get("hardware") or {}).get("n_gpus") else "CPU processes"
    given = result.get("scaling_efficiency") or {}
    eff = []
    for _, r in df.iterrows():
        if str(r["n_gpus"]) in given and df["label"].nunique() == 1:
            eff.append(given[str(r["n_gpus"])])
            continue
        base = df[(df["label"] == r["label"]) & (df["n_gpus"] > 0)].sort_values("n_gpus").head(1)
        if len(base) and base["tokens_per_s"].iloc[0] and r["n_gpus"] > 0 and r["tokens_per_s"] is not None:
            per_gpu = base["tokens_per_s"].iloc[0] / base["n_gpus"].iloc[0]
            eff.append(r["tokens_per_s"] / (r["n_gpus"] * per_gpu))
        else:
            eff.append(None)
    df["efficiency"] = pd.array(eff, dtype="Float64").astype(float)
    return df


def run_phases(result: dict | None) -> pd.DataFrame | None:
    """Where the wall time of each scaling run went: loading models, warm-up, compute and the rest
    (start-up, reading, merging, writing), per GPU count, in seconds."""
    if not result or not result.get("stages"):
        return None
    rows = []
    for name, st in result["stages"].items():
        if st.get("wall_seconds") is None:
            continue
        load, warm, compute = (st.get("load_models_s") or 0.0), (st.get("warmup_s") or 0.0), st.get("seconds") or 0.0
        rows.append({"stage": name, "n_gpus": st.get("n_gpus"), "load models": load, "warm-up": warm,
                     "compute": compute, "start-up, I/O, merge": max(0.0, st["wall_seconds"] - load - warm - compute),
                     "wall": st["wall_seconds"]})
    return pd.DataFrame(rows) if rows else None


def project_hours(table: pd.DataFrame | None, sample_esm_tokens: float = PUBLISHED_SAMPLE_ESM_TOKENS,
                  max_gpus: int = 8, label: str | None = None) -> pd.DataFrame | None:
    """Hours per sample of ``sample_esm_tokens`` ESM-2 tokens (default: the published 1M-read sample) on
    1..``max_gpus`` GPUs. Measured GPU counts use their measured rate; others the per-GPU rate of the
    smallest count times N times the efficiency of the nearest measured count at or below N (the largest
    measured efficiency is held beyond it). Compare samples by ESM-2 tokens, not reads: tokens per read
    depend on the reads."""
    if table is None or len(table) == 0:
        return None
    label = label or table["label"].value_counts().index[0]
    g = table[(table["label"] == label) & table["tokens_per_s"].notna()].sort_values("n_gpus")
    if g.empty:
        return None
    if (g["n_gpus"] == 0).all():  # a CPU run: nothing to project onto GPUs
        rate = float(g["tokens_per_s"].iloc[0])
        out = pd.DataFrame({"n_gpus": [0], "tokens_per_s": [rate], "efficiency": [None],
                            "hours": [sample_esm_tokens / rate / 3600], "measured": [True]})
        out["minutes"] = out["hours"] * 60
        out.attrs.update(table.attrs)
        return out
    g = g[g["n_gpus"] > 0]
    base_n, base_rate = int(g["n_gpus"].iloc[0]), float(g["tokens_per_s"].iloc[0])
    per_gpu = base_rate / base_n
    measured = {int(n): float(r) for n, r in zip(g["n_gpus"], g["tokens_per_s"])}
    eff_at = {n: r / (n * per_gpu) for n, r in measured.items()}
    rows = []
    for n in sorted(set(range(1, max(max_gpus, max(measured)) + 1)) | set(measured)):
        if n in measured:
            rate, eff, is_measured = measured[n], eff_at[n], True
        else:
            below = [m for m in eff_at if m <= n]
            eff = eff_at[max(below)] if below else 1.0
            rate, is_measured = per_gpu * n * eff, False
        rows.append({"n_gpus": n, "tokens_per_s": rate, "efficiency": eff, "hours": sample_esm_tokens / rate / 3600,
                     "measured": is_measured})
    out = pd.DataFrame(rows)
    out.insert(4, "minutes", out["hours"] * 60)
    out.attrs.update(table.attrs)
    return out


def gpu_log(result: dict | None, results_dir=None) -> tuple[pd.DataFrame | None, str]:
    """The GPU monitoring log of a result as a DataFrame (``bench.monitor.read_gpu_log``), found where the
    result says, else by its name under ``results_dir``; ``(None, why)`` when there is none."""
    from .bench.monitor import read_gpu_log

    if not result:
        return None, "no result"
    mon = result.get("gpu_monitor") or {}
    logs = [st.get("gpu_log") for st in (result.get("stages") or {}).values() if st.get("gpu_log")]
    if not mon.get("log") and not logs:
        reason = mon.get("reason") or ("the run used no GPU" if not (result.get("hardware") or {}).get("n_gpus")
                                       else "the result names no log")
        return None, f"no GPU monitoring log: {reason}"
    name = mon.get("log") or logs[-1]
    candidates = [Path(name), repo_path(name)]
    if results_dir is not None:
        base = repo_path(results_dir)
        candidates += [base / Path(name).name, base / "logs" / Path(name).name]
        candidates += sorted(base.rglob(Path(name).name))
    for path in candidates:
        if path.is_file():
            return read_gpu_log(path), display_path(path)
    return None, f"GPU monitoring log {Path(name).name} not found (looked beside the result too)"


def check_scaling(table: pd.DataFrame | None) -> pd.DataFrame:
    """Assertions of the scaling notebook: positive, finite throughput; efficiency in (0, 1.2]."""
    if table is None or len(table) == 0:
        return checks_table([("scaling results present", None, "no results to check")])
    tps = table["tokens_per_s"].astype(float)
    eff = table["efficiency"].dropna().astype(float)
    rows = [("throughput is positive and finite", bool((np.isfinite(tps) & (tps > 0)).all()),
             f"{tps.min():,.0f}..{tps.max():,.0f} tokens/s"),
            ("scaling efficiency in (0, 1.2]", bool(((eff > 0) & (eff <= 1.2)).all()) if len(eff) else None,
             ", ".join(f"{n}: {e:.3f}" for n, e in zip(table.loc[eff.index, "n_gpus"], eff)) or "none measured")]
    mfu = table["mfu"].dropna().astype(float) if "mfu" in table else pd.Series(dtype=float)
    rows.append(("MFU in (0, 1]", bool(((mfu > 0) & (mfu <= 1)).all()) if len(mfu) else None,
                 f"{mfu.min():.1%}..{mfu.max():.1%}" if len(mfu) else "not measured (CPU or no FLOP count)"))
    return checks_table(rows, "scaling checks")


# ---------------------------------------------------------------------------------------- equivalence
def equivalence_errors(results_dir) -> pd.DataFrame | None:
    """Per-frame relative errors beside an equivalence result (``equivalence_errors.parquet``: ``model,
    frame_index, relative_error`` and, when several configurations were measured, ``variant``)."""
    path = repo_path(results_dir) / "equivalence_errors.parquet"
    return pd.read_parquet(path) if path.is_file() else None


def error_summary(errors: pd.DataFrame | None, result: dict | None = None) -> pd.DataFrame | None:
    """Per model (and configuration): frames, median, 99th percentile and largest relative error; without
    per-frame errors, the result's one figure per model."""
    if errors is not None and len(errors):
        keys = [k for k in ("variant", "model") if k in errors]
        g = errors.groupby(keys, sort=False)["relative_error"]
        return g.agg(frames="size", median="median", p99=lambda s: s.quantile(0.99), max="max").reset_index()
    summary = (result or {}).get("relative_error")
    if isinstance(summary, dict):
        return pd.DataFrame({"model": list(summary), "relative_error": list(summary.values())})
    if isinstance(summary, (int, float)):
        return pd.DataFrame({"model": ["all"], "relative_error": [summary]})
    return None


def switch_table(result: dict | None) -> pd.DataFrame | None:
    """One row per configuration measured against the reference (the optimized path, then each
    optimization switched on alone): its options, relative error per model and call agreement per frame and
    per chunk."""
    if not result:
        return None
    switches = result.get("switches") or {}
    if not switches:  # only the top-level figures
        agreement = result.get("call_agreement")
        if result.get("relative_error") is None and agreement is None:
            return None
        switches = {"optimized": {"relative_error": result.get("relative_error"),
                                  "call_agreement_frame": agreement if not isinstance(agreement, dict)
                                  else agreement.get("frame"),
                                  "call_agreement_chunk": result.get("call_agreement_chunk")}}
    rows = []
    for name, sw in switches.items():
        opts = sw.get("options") or {}
        row = {"configuration": name,
               "options": ", ".join(f"{k}={v}" for k, v in opts.items() if k != "save_features")}
        errs = sw.get("relative_error")
        for model, value in (errs.items() if isinstance(errs, dict) else [("all", errs)]):
            row[f"relative_error.{model}"] = value
        row["call_agreement_frame"] = sw.get("call_agreement_frame")
        row["call_agreement_chunk"] = sw.get("call_agreement_chunk")
        row["seconds"] = sw.get("seconds")
        rows.append(row)
    return pd.DataFrame(rows)


def check_equivalence(errors: pd.DataFrame | None, switches: pd.DataFrame | None,
                      max_relative_error: float | None = None, min_call_agreement: float | None = None) -> pd.DataFrame:
    """Assertions of the equivalence notebook: errors finite and non-negative, agreements within [0, 1], and
    the optional bounds of the parameter set."""
    if switches is None or len(switches) == 0:
        return checks_table([("equivalence results present", None, "no results to check")])
    rows = []
    if errors is not None and len(errors):
        e = errors["relative_error"].astype(float)
        rows.append(("per-frame errors finite and >= 0", bool((np.isfinite(e) & (e >= 0)).all()),
                     f"{len(e)} values, largest {e.max():.3e}"))
    else:
        rows.append(("per-frame errors finite and >= 0", None, "no per-frame errors file"))
    err_cols = [c for c in switches if c.startswith("relative_error.")]
    errs = switches[err_cols].astype(float).to_numpy()
    rows.append(("summary errors finite and >= 0", bool(np.all(np.isfinite(errs) & (errs >= 0))),
                 f"largest {np.nanmax(errs):.3e}" if errs.size else "none"))
    agree = switches[["call_agreement_frame", "call_agreement_chunk"]].astype(float).to_numpy()
    present = agree[~np.isnan(agree)]
    rows.append(("call agreements within [0, 1]", bool(((present >= 0) & (present <= 1)).all()),
                 f"lowest {present.min():.4f}" if present.size else "none"))
    if max_relative_error is not None:
        worst = float(np.nanmax(errs)) if errs.size else float("nan")
        rows.append((f"relative errors <= {max_relative_error:g}", bool(worst <= max_relative_error),
                     f"largest {worst:.3e}"))
    if min_call_agreement is not None and present.size:
        rows.append((f"call agreement >= {min_call_agreement:g}", bool(present.min() >= min_call_agreement),
                     f"lowest {present.min():.4f}"))
    return checks_table(rows, "equivalence checks")


# ----------------------------------------------------------------------------------------- regression
def committed_results(directory, root=None, cache=None) -> list[Path]:
    """Every committed version of the result JSON files under ``directory`` (``git log``), written to
    ``cache/<commit>/<path>`` (default: a ``.history`` folder in the system temp dir) so they can be read
    like any file. Outside git, or with nothing committed: an empty list."""
    import tempfile

    root = repo_root(root)
    rel = os.path.relpath(repo_path(directory, root), root)
    cache = Path(cache) if cache else Path(tempfile.gettempdir()) / "virnucpro-history"

    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60)

    log = git("log", "--format=%H", "--", rel)
    if log.returncode != 0:
        return []
    paths = []
    for commit in log.stdout.split():
        listing = git("ls-tree", "-r", "--name-only", commit, "--", rel)
        for name in listing.stdout.splitlines():
            if not name.endswith(".json"):
                continue
            dst = cache / commit[:12] / name
            if not dst.is_file():
                shown = git("show", f"{commit}:{name}")
                if shown.returncode != 0:
                    continue
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_text(shown.stdout, encoding="utf-8")
            paths.append(dst)
    return paths


def _hardware_label(gpu_name, n_gpus) -> str:
    return f"{int(n_gpus)}x {gpu_name}" if n_gpus and gpu_name else "CPU"


def history_files(dirs, git: bool = False, root=None) -> list[Path]:
    """The JSON files under ``dirs`` (folders or files, relative to the repository root; missing ones
    skipped) and, with ``git``, every committed version of those under them (``committed_results``)."""
    files: list[Path] = []
    for item in (repo_path(d, root) for d in dirs):
        if item.is_dir():
            files += sorted(item.rglob("*.json"))
        elif item.is_file():
            files.append(item)
    if git:
        for d in dirs:
            files += committed_results(d, root)
    return files


def load_results(files) -> list[tuple[str, dict]]:
    """``(file, result)`` for every benchmark result among ``files`` (other JSON files skipped), one per
    identity (suite, time, commit, hardware): a file and its committed copy count once."""
    found, seen = [], set()
    from .bench.regression import read_result_file

    for path in files:
        data = read_result_file(path)
        if data is None:
            continue
        hw = data.get("hardware") or {}
        key = (data.get("suite"), data.get("timestamp"), data.get("git_commit"), hw.get("gpu_name"), hw.get("n_gpus"))
        if key not in seen:
            seen.add(key)
            found.append((str(path), data))
    return found


def history_table(files) -> pd.DataFrame:
    """``bench.regression.load_history`` of ``files``, duplicates dropped, with ``metric`` (``tokens_per_s``,
    ``relative_error``...) and ``series`` (suite/stage or figure [hardware]) columns for plotting."""
    from .bench.regression import HISTORY_COLUMNS, load_history

    history = load_history(list(files)) if files else pd.DataFrame(columns=HISTORY_COLUMNS)
    history = history.drop_duplicates(subset=["suite", "timestamp", "git_commit", "gpu_name", "n_gpus", "stage",
                                              "figure"]).reset_index(drop=True)
    stage = [None if pd.isna(v) else v for v in history["stage"]]
    hw = [_hardware_label(g, n) for g, n in zip(history["gpu_name"], history["n_gpus"])]
    history["metric"] = [f if s is not None else f.split(".", 1)[0] for f, s in zip(history["figure"], stage)]
    history["series"] = [f"{suite}/{s if s is not None else f} [{h}]"
                         for suite, s, f, h in zip(history["suite"], stage, history["figure"], hw)]
    return history


def regression_table(results: list[tuple[str, dict]], threshold: float | None = None) -> pd.DataFrame:
    """Each result compared with the previous one of the same suite, hardware and workload, by the rule of
    ``virnucpro benchmark --compare-to`` (``bench.regression.compare``, threshold 10% by default): a figure
    is a ``REGRESSION`` when it slowed by more than the threshold and the noise of both runs; figures with
    too few repetitions or too short to time are listed with the reason and not judged. Columns:
    ``timestamp, series, metric, baseline, current, change_pct, noise_pct, verdict, reason, commit,
    baseline_commit``."""
    from .bench.regression import DEFAULT_THRESHOLD, compare

    threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    groups: dict[tuple, list] = {}
    for source, res in results:
        hw, wl = res.get("hardware") or {}, res.get("workload") or {}
        key = (res.get("suite"), hw.get("gpu_name"), hw.get("n_gpus"), wl.get("name"), wl.get("reads"),
               wl.get("sha256"))
        groups.setdefault(key, []).append(res)
    rows = []
    for (suite, gpu, n, *_), items in groups.items():
        items.sort(key=lambda r: str(r.get("timestamp")))
        for prev, cur in zip(items, items[1:]):
            for row in compare(cur, prev, threshold):
                figure = row["stage"] if row["stage"] is not None else row["figure"]
                rows.append({"timestamp": pd.to_datetime(cur.get("timestamp"), utc=True),
                             "series": f"{suite}/{figure} [{_hardware_label(gpu, n)}]", "metric": row["metric"],
                             "baseline": row["baseline"], "current": row["current"],
                             "change_pct": row["change_pct"], "noise_pct": row["noise_pct"], "verdict": row["verdict"],
                             "reason": row["reason"], "commit": str(cur.get("git_commit"))[:12],
                             "baseline_commit": str(prev.get("git_commit"))[:12]})
    columns = ["timestamp", "series", "metric", "baseline", "current", "change_pct", "noise_pct", "verdict", "reason",
               "commit", "baseline_commit"]
    return pd.DataFrame(rows, columns=columns)


def run_history_demo(out, suite: str = "prepare", runs: int = 2, data_size: str = "tiny") -> list[Path]:
    """A small benchmark history made here: ``runs`` runs of one suite, one folder each (``OUT/run-<k>``);
    nothing with ``runs=0``."""
    return [run_benchmark(suite, repo_path(out) / f"run-{k + 1}", data_size=data_size, quick=True)
            for k in range(runs)]


def regressions(comparisons: pd.DataFrame) -> pd.DataFrame:
    """The comparisons flagged ``REGRESSION`` (``bench.regression``'s verdict), worst first."""
    flagged = comparisons[comparisons["verdict"] == "REGRESSION"]
    return flagged.sort_values("change_pct", key=lambda c: -c.abs(), kind="stable")


def check_history(history: pd.DataFrame, comparisons: pd.DataFrame, required: bool = True) -> pd.DataFrame:
    """Assertions of the regression notebook: a history exists, its values are finite, every comparison has a
    verdict of ``bench.regression`` and every figure left out of the verdict says why (flagged regressions are
    reported, not failed)."""
    from .bench.regression import JUDGED, VERDICTS

    if history is None or len(history) == 0:
        return checks_table([("benchmark history present", False if required else None, "no result files found")])
    values = history["value"].astype(float)
    left_out = comparisons[~comparisons["verdict"].isin(JUDGED)]
    reasons = left_out["reason"] if "reason" in comparisons else pd.Series([""] * len(left_out), dtype=object)
    rows = [("history values finite", bool(np.isfinite(values).all()), f"{len(values)} values from "
             f"{history['file'].nunique()} result file(s)"),
            ("every comparison has a verdict", bool(comparisons["verdict"].isin(VERDICTS).all()),
             f"{len(comparisons)} comparisons, {len(comparisons) - len(left_out)} judged"),
            ("figures left out of the verdict say why", bool(reasons.fillna("").astype(str).str.len().gt(0).all()),
             f"{len(left_out)} left out")]
    if required:
        rows.append(("at least one comparison made", len(comparisons) > 0, f"{len(comparisons)} comparisons"))
    return checks_table(rows, "history checks")


# ------------------------------------------------------------------------------------------ rendering
@dataclass
class NotebookReport:
    """What rendering one notebook produced."""

    stem: str
    title: str
    params: dict
    status: str = "ok"
    error: str = ""
    seconds: float = 0.0
    ipynb: str | None = None
    html: str | None = None
    markdown: str | None = None
    warnings: list[str] = field(default_factory=list)


def provenance(root=None) -> dict:
    """Git commit, time, host and package versions of a report."""
    from importlib import metadata

    from . import __version__
    from .bench.schema import git_commit

    commit, dirty = git_commit(root or repo_root())
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = __version__ if name == "virnucpro-kernel" else None
    return {"git_commit": commit, "git_dirty": dirty,
            "time_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "host": platform.node(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "versions": versions}


def notebook_title(nb) -> str:
    """The first markdown heading of a notebook."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return ""


def collected_warnings(nb) -> list[str]:
    """Warnings the notebook displayed through ``show_warnings`` (kept in output metadata)."""
    found = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            found += (output.get("metadata", {}).get(METADATA_KEY) or {}).get("warnings", [])
    return list(dict.fromkeys(found))


def execution_error(exc, executed_path: Path | None = None, source_path: Path | None = None) -> str:
    """One line naming the notebook, the cell and the error of a papermill failure."""
    name = f"{source_path.parent.name}/{source_path.name}" if source_path else "notebook"
    cell = getattr(exc, "cell_index", None)
    if cell is not None and executed_path is not None and executed_path.is_file():
        import nbformat

        # cell_index counts the cells as executed: papermill's injected-parameters cell is one of them, the
        # error banner it adds afterwards is not. Without the injected cell: the cell's number in notebooks/.
        nb = nbformat.read(executed_path, as_version=4)
        cells = [c for c in nb.cells if "papermill-error-cell-tag" not in c.metadata.get("tags", [])]
        cell -= sum(1 for i, c in enumerate(cells) if "injected-parameters" in c.metadata.get("tags", []) and i < cell)
    ename, evalue = getattr(exc, "ename", type(exc).__name__), getattr(exc, "evalue", str(exc))
    first = (getattr(exc, "source", "") or "").strip().splitlines()
    where = f"cell {cell + 1}" if cell is not None else "start-up"
    hint = f" [{first[0][:60]}]" if first else ""
    evalue = " ".join(str(evalue).split())
    return f"{name} {where}{hint}: {ename}: {evalue}"


@contextlib.contextmanager
def _stderr_into(fh):
    """Point file descriptor 2 at ``fh`` for the block: the kernel process inherits it, so its own log lines
    (start-up notices, shutdown messages) stay out of the command's output."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(fh.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def execute_notebook(src: Path, dst: Path, params: dict, root: Path) -> None:
    """papermill: execute ``src`` with ``params`` and the ``virnucpro`` kernel, working directory the
    repository root, into ``dst`` (written also when a cell fails). When the kernel fails before any cell
    runs, the error names the kernel's last log line."""
    import tempfile

    import papermill as pm

    logging.getLogger("papermill").setLevel(logging.ERROR)
    with tempfile.TemporaryFile() as kernel_log:
        try:
            with _stderr_into(kernel_log):
                pm.execute_notebook(str(src), str(dst), parameters=params, kernel_name=KERNEL, cwd=str(root),
                                    progress_bar=False, log_output=False, request_save_on_cell_execute=False)
        except Exception as exc:
            if getattr(exc, "cell_index", None) is not None:
                raise
            kernel_log.seek(0)
            lines = kernel_log.read().decode("utf-8", "replace").strip().splitlines()
            last = f" (kernel: {lines[-1].strip()})" if lines else ""
            raise RuntimeError(f"{type(exc).__name__}: {exc}{last}") from exc


def check_kernel() -> None:
    """``FileNotFoundError`` with the command that installs it when the ``virnucpro`` kernel is missing."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        raise FileNotFoundError(f"no Jupyter kernel named {KERNEL!r}: run `make setup`, or `python -m ipykernel "
                                f"install --sys-prefix --name {KERNEL} --display-name \"Python ({KERNEL})\"`") from None


_HTML_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
"""
MARKDOWN_PRIORITY = ["image/png", "image/jpeg", "image/svg+xml", "text/markdown", "text/html", "text/latex",
                     "text/plain"]


def _drop_stderr(nb):
    for cell in nb.cells:
        if cell.get("outputs"):
            cell.outputs = [o for o in cell.outputs
                            if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    return nb


def render_html(nb, path: Path, title: str) -> None:
    """The executed notebook as one HTML page: input hidden, figures interactive, plotly.js inline once
    (no request to the network needed; nbconvert's require.js is left out, nothing here needs it)."""
    import copy

    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", extra_loaders=[DictLoader({"virnucpro.html.j2": _HTML_TEMPLATE})],
                            template_file="virnucpro.html.j2", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(_drop_stderr(copy.deepcopy(nb)), resources={"metadata": {"name": title}})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body, encoding="utf-8")


def render_markdown(nb, path: Path) -> list[Path]:
    """The executed notebook as markdown: figures as PNG files in ``<stem>_files/``, tables as markdown
    tables, input hidden. Returns the image files written."""
    import copy

    from nbconvert import MarkdownExporter
    from traitlets.config import Config

    config = Config()
    config.NbConvertBase.display_data_priority = MARKDOWN_PRIORITY
    exporter = MarkdownExporter(config=config, exclude_input=True, exclude_input_prompt=True,
                                exclude_output_prompt=True)
    files_dir = f"{path.stem}_files"
    body, resources = exporter.from_notebook_node(_drop_stderr(copy.deepcopy(nb)), resources={
        "unique_key": path.stem, "output_files_dir": files_dir})
    target = path.parent / files_dir
    if target.is_dir():
        for old in target.iterdir():
            old.unlink()
    written = []
    for name, data in (resources.get("outputs") or {}).items():
        out = path.parent / name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        written.append(out)
    body = re.sub(r"\n[ \t]+(?=\n)", "\n", body)  # the template's indented blank lines around images
    body = re.sub(r"\n{3,}", "\n\n", body).strip() + "\n"
    path.write_text(body, encoding="utf-8")
    return written


def _relative(path: str | None, out: Path) -> str | None:
    return os.path.relpath(path, out) if path else None


def write_index(out, params_set: str, reports: list[NotebookReport], info: dict) -> tuple[Path, Path]:
    """``OUT/index.html`` and ``OUT/index.md``: every notebook's page(s), status, time, parameters and the
    warnings they showed, with the provenance of the whole report (commit, time, host, versions)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    commit = info.get("git_commit", "unknown") + (" (uncommitted changes)" if info.get("git_dirty") else "")
    versions = ", ".join(f"{k} {v}" for k, v in (info.get("versions") or {}).items() if v)
    all_warnings = list(dict.fromkeys(w for r in reports for w in r.warnings))
    failed = [r for r in reports if r.status != "ok"]

    md = [f"# VirNucPro reports: parameter set `{params_set}`", "",
          f"- commit: `{commit}`", f"- rendered (UTC): {info.get('time_utc')} on {info.get('host')} "
          f"({info.get('platform')}, {info.get('cpu_count')} CPUs)", f"- versions: {versions}", ""]
    md += [f"> **Warning:** {w}" for w in all_warnings] + ([""] if all_warnings else [])
    md += [f"> **Failed:** {r.error}" for r in failed] + ([""] if failed else [])
    md += ["| notebook | pages | status | seconds |", "|---|---|---|---:|"]
    for r in reports:
        pages = " · ".join(f"[{kind}]({_relative(p, out)})" for kind, p in (("markdown", r.markdown), ("HTML", r.html),
                                                                             ("notebook", r.ipynb)) if p)
        md.append(f"| {r.title or r.stem} (`{r.stem}`) | {pages} | {r.status} | {r.seconds:.1f} |")
    md += [""]
    for r in reports:
        md += [f"## Parameters of `{r.stem}`", "", "```yaml", _yaml(r.params).rstrip(), "```", ""]

    def links(r) -> str:
        return " · ".join(f"<a href=\"{html.escape(_relative(p, out))}\">{kind}</a>"
                          for kind, p in (("HTML", r.html), ("markdown", r.markdown), ("notebook", r.ipynb)) if p)

    rows = "".join(
        f"<tr><td>{html.escape(r.title or r.stem)}<br><code>{html.escape(r.stem)}</code></td><td>{links(r)}</td>"
        f"<td class=\"{'ok' if r.status == 'ok' else 'bad'}\">{html.escape(r.status)}"
        f"{'<br><small>' + html.escape(r.error) + '</small>' if r.error else ''}</td>"
        f"<td style=\"text-align:right\">{r.seconds:.1f}</td>"
        f"<td><pre>{html.escape(_yaml(r.params))}</pre></td></tr>" for r in reports)
    warn_html = "".join(f"<div class=\"warn\"><strong>Warning:</strong> {html.escape(w)}</div>" for w in all_warnings)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>VirNucPro reports: {html.escape(params_set)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;width:100%}}
td,th{{border:1px solid #ddd;padding:6px 8px;vertical-align:top;text-align:left}}
th{{background:#f4f4f4}}pre{{margin:0;font-size:12px}}.ok{{color:#18794e}}.bad{{color:#b42318;font-weight:bold}}
.warn{{background:#fff4ce;border-left:5px solid #e0a800;padding:8px 12px;margin:6px 0}}dt{{font-weight:bold}}</style>
</head><body>
<h1>VirNucPro reports: parameter set <code>{html.escape(params_set)}</code></h1>
{warn_html}
<table><thead><tr><th>notebook</th><th>pages</th><th>status</th><th>seconds</th><th>parameters</th></tr></thead>
<tbody>{rows}</tbody></table>
<h2>Provenance</h2><dl>
<dt>commit</dt><dd><code>{html.escape(commit)}</code></dd>
<dt>rendered (UTC)</dt><dd>{html.escape(str(info.get('time_utc')))} on {html.escape(str(info.get('host')))}
({html.escape(str(info.get('platform')))}, {info.get('cpu_count')} CPUs)</dd>
<dt>versions</dt><dd>{html.escape(versions)}</dd></dl>
</body></html>
"""
    index_html, index_md = out / "index.html", out / "index.md"
    index_html.write_text(page, encoding="utf-8")
    index_md.write_text("\n".join(md).rstrip() + "\n", encoding="utf-8")
    return index_html, index_md


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False) if data else "{}\n"


def build_reports(params_set: str = "demo", out=None, only=None, root=None, log=print) -> list[NotebookReport]:
    """Execute and render every notebook (or those in ``only``, by stem) with a parameter set, then write the
    index. Returns what each produced; failures are recorded, not raised."""
    import nbformat

    root = repo_root(root)
    out = repo_path(out or f"reports/{params_set}", root)
    origin = provenance(root)  # before rendering: the report's own files must not count as changes
    check_kernel()
    sources = [src for src in notebook_paths(root) if not only or src.stem in only]
    for src in sources:  # every parameter file first: a missing one fails before anything runs
        load_params(src.stem, params_set, root)
    out.mkdir(parents=True, exist_ok=True)
    reports = []
    for src in sources:
        stem = src.stem
        params = load_params(stem, params_set, root)
        report = NotebookReport(stem, notebook_title(nbformat.read(src, as_version=4)), params)
        dst = out / f"{stem}.ipynb"
        t0 = time.perf_counter()
        dst.unlink(missing_ok=True)  # never render an earlier run's notebook
        try:
            execute_notebook(src, dst, params, root)
        except Exception as exc:  # a failing cell, a missing kernel: recorded, rendering goes on
            report.status, report.error = "failed", execution_error(exc, dst, src)
        report.seconds = time.perf_counter() - t0
        if dst.is_file():
            nb = nbformat.read(dst, as_version=4)
            report.ipynb, report.warnings = str(dst), collected_warnings(nb)
            html_path, md_path = out / "html" / f"{stem}.html", out / f"{stem}.md"
            render_html(nb, html_path, report.title or stem)
            render_markdown(nb, md_path)
            report.html, report.markdown = str(html_path), str(md_path)
        log(f"{stem}: {report.status} in {report.seconds:.1f} s"
            + (f" -> {display_path(report.html, root)}, {display_path(report.markdown, root)}" if report.html else ""))
        reports.append(report)
    write_index(out, params_set, reports, {**provenance(root), "git_commit": origin["git_commit"],
                                           "git_dirty": origin["git_dirty"]})
    log(f"index: {display_path(out / 'index.html', root)}, {display_path(out / 'index.md', root)}")
    return reports


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m virnucpro_kernel.reports",
                                     description="execute every notebook with a parameter set and render "
                                                 "HTML + markdown pages and an index")
    parser.add_argument("--params", default="demo", help="parameter set: params/<notebook>/<set>.yaml (demo, h200)")
    parser.add_argument("--out", default=None, help="output folder (default reports/<set>)")
    parser.add_argument("--only", action="append", metavar="NOTEBOOK",
                        help="render only this notebook (stem, e.g. 01_predict); repeatable")
    args = parser.parse_args(argv)
    try:
        reports = build_reports(args.params, args.out, args.only)
    except (FileNotFoundError, ValueError) as exc:
        sys.stderr.write(f"virnucpro: error: report: {' '.join(str(exc).split())}\n")
        return 2
    failed = [r for r in reports if r.status != "ok"]
    for r in failed:
        sys.stderr.write(f"virnucpro: error: report: {r.error}\n")
    if not reports:
        sys.stderr.write("virnucpro: error: report: no notebook matched\n")
        return 2
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
