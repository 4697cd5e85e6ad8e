"""Other virus identification tools' outputs, read into one shape for :func:`virnucpro_kernel.evaluation.evaluate`.

Every importer returns one row per *input* sequence the tool reported, with the columns

- ``sequence_id``: the input record's ID (the first word of its FASTA header, as in ``sequences.tsv``),
  recovered from the tool's own name for it by the rule documented on each importer;
- ``score``: the tool's virus score in [0, 1], NaN where the tool gives none;
- ``call``: ``virus`` or ``others`` (the tool's own decision);
- ``tool_ids``: the tool's names that mapped to this sequence (``;``-joined), ``rows``: how many.

When several of the tool's rows map to one input sequence (proviruses, VirSorter2 partial sequences), the
sequence takes the highest score and is called ``virus`` when any of its rows is. Input sequences a tool does
not list are handled by ``evaluate``: predicted ``others``, no score.

Formats were taken from each tool's own documentation and source:

- geNomad (apcamargo/genomad): ``docs/_source/quickstart.md`` ("Understanding the outputs") and
  ``genomad/modules/summary.py`` for ``<prefix>_virus_summary.tsv``; ``genomad/modules/aggregated_classification.py``
  for ``<prefix>_aggregated_classification.tsv``; ``genomad/sequence.py`` (``Sequence.accession``) and
  ``genomad/modules/find_proviruses.py`` (``Provirus.provirus_name``) for the names.
- VirSorter2 (jiarong/VirSorter2): ``README.md`` ("Detailed description on output files" and the note on
  ``||full`` / ``||lt2gene`` / ``||{i}_partial``), ``virsorter/rules/classify.smk`` (rule ``finalize``) and
  ``virsorter/scripts/circular-linear-split.py`` (names cut at the first blank).
- DeepVirFinder (jessieren/DeepVirFinder): ``dvf.py`` (output ``<input>_gt<L>bp_dvfpred.txt``, columns
  ``name, len, score, pvalue``; ``name`` is the whole header line) and its test output
  ``deepvirfinder/test/crAssphage.fa_gt0bp_dvfpred.txt``.
- Jaeger (Yasas1994/Jaeger): ``docs/_source/usage.md`` ("What is in the output?"), ``README.md`` (v1.1
  column names), ``jaegeraa/preprocessing.py`` (``fasta_gen``: the whole header, commas removed) and the
  repository's output ``ERZ773086_FASTA.fasta/ERZ773086_FASTA.fasta_default_jaeger.tsv`` (current names).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError

VIRUS = "virus"
OTHERS = "others"
COLUMNS = ("sequence_id", "score", "call", "tool_ids", "rows")

_PROVIRUS = re.compile(r"\|provirus_\d+_\d+$")
_VS2_SUFFIX = re.compile(r"\|\|(?:full|lt2gene|\d+_partial)$")


# ============================================================================================ shared
def _read_table(path, what: str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{what} not found")
    try:
        return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read the {what} as a tab-separated table ({exc.__class__.__name__})") from None


def _need(table: pd.DataFrame, columns, path, what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(path, f"not a {what}: column(s) {', '.join(missing)} missing "
                               f"(found: {', '.join(map(str, table.columns[:8]))})")


def _numbers(values, path, column: str) -> np.ndarray:
    text = pd.Series(values, dtype=object).astype(str).str.strip().str.strip("[]")
    text = text.where(~text.isin(["", "NA", "nan", "NaN", "None"]), None)
    out = pd.to_numeric(text, errors="coerce")
    bad = out.isna() & text.notna()
    if bad.any():
        raise InputError(path, f"column {column}: '{values[int(np.flatnonzero(bad)[0])]}' is not a number")
    return out.to_numpy(dtype=float)


def _first_word(names) -> pd.Series:
    s = pd.Series(names, dtype=object).astype(str).str.strip()
    return s.str.split(n=1).str[0].fillna("")


def _collapse(tool_ids, sequence_ids, score, call) -> pd.DataFrame:
    """One row per input sequence: the highest score, virus when any row is, the tool's names joined."""
    rows = pd.DataFrame({"sequence_id": pd.Series(sequence_ids, dtype=object).to_numpy(),
                         "tool_id": pd.Series(tool_ids, dtype=object).astype(str).to_numpy(),
                         "score": np.asarray(score, dtype=float),
                         "virus": pd.Series(call, dtype=object).eq(VIRUS).to_numpy()})
    rows = rows[rows["sequence_id"] != ""]
    g = rows.groupby("sequence_id", sort=False)
    out = pd.DataFrame({"score": g["score"].max(), "virus": g["virus"].any(),
                        "tool_ids": g["tool_id"].agg(";".join), "rows": g.size()}).reset_index()
    out["call"] = np.where(out.pop("virus"), VIRUS, OTHERS)
    out["score"] = out["score"].astype(float)
    return out[list(COLUMNS)]


def _check_scores(out: pd.DataFrame, path, what: str) -> pd.DataFrame:
    s = out["score"].to_numpy(dtype=float)
    bad = ~np.isnan(s) & ((s < 0) | (s > 1))
    if bad.any():
        raise InputError(path, f"{what}: score {s[bad][0]} is outside [0, 1]", record=out["sequence_id"][bad].iloc[0])
    return out


# ============================================================================================ geNomad
def genomad(path, *, min_score: float = 0.7) -> pd.DataFrame:
    """geNomad: ``<prefix>_virus_summary.tsv``, ``<prefix>_aggregated_classification.tsv``, or the output folder.

    - Virus summary (columns ``seq_name, length, topology, coordinates, n_genes, genetic_code, virus_score,
      fdr, n_hallmarks, marker_enrichment, taxonomy``): lists only what geNomad called virus, after its
      post-classification filters. ``score`` = ``virus_score``, ``call`` = ``virus`` for every row.
    - Aggregated classification (``seq_name, chromosome_score, plasmid_score, virus_score``): every input
      sequence. ``score`` = ``virus_score``; ``call`` = ``virus`` when ``virus_score`` is the highest of the three
      and ``>= min_score`` (geNomad's default ``--min-score`` is 0.7). The summary's other filters (hallmark
      counts, marker enrichment, USCGs) need files this table does not have, so these calls can include
      sequences the summary leaves out.
    - A folder (``genomad end-to-end`` output): scores from
      ``*_aggregated_classification/*_aggregated_classification.tsv`` for every sequence and calls from
      ``*_summary/*_virus_summary.tsv`` (geNomad's final calls; a called sequence whose summary score, e.g. a
      provirus's, is higher than its aggregated score takes the higher one); either alone when only one is there.

    IDs: geNomad names a sequence by the first word of its header (``Sequence.accession``), the input ID
    itself. A provirus is named ``<sequence>|provirus_<start>_<end>``: the suffix is removed, so a sequence
    with a provirus is called virus with the provirus's score (the highest, with several).
    """
    if isinstance(path, (str, os.PathLike)) and Path(path).is_dir():
        folder = Path(path)
        summary = sorted(folder.glob("*_summary/*_virus_summary.tsv")) or sorted(folder.glob("*_virus_summary.tsv"))
        aggregated = [p for p in sorted(folder.glob("*_aggregated_classification/*_aggregated_classification.tsv"))
                      + sorted(folder.glob("*_aggregated_classification.tsv")) if "provirus" not in p.name]
        if not summary and not aggregated:
            raise InputError(folder, "no geNomad *_virus_summary.tsv or *_aggregated_classification.tsv in this folder")
        if not aggregated:
            return genomad(summary[0], min_score=min_score)
        scores = genomad(aggregated[0], min_score=min_score)
        if not summary:
            return scores
        calls = genomad(summary[0]).set_index("sequence_id")
        out = scores.set_index("sequence_id")
        out = pd.concat([out, calls[~calls.index.isin(out.index)]])  # listed in the summary only
        out["call"] = np.where(out.index.isin(calls.index), VIRUS, OTHERS)
        both = out.index.intersection(calls.index)
        # a provirus's own score can exceed its whole sequence's: a called sequence keeps the higher one
        out.loc[both, "score"] = np.fmax(out.loc[both, "score"].to_numpy(float),
                                         calls.loc[both, "score"].to_numpy(float))
        return out.reset_index()[list(COLUMNS)]
    table = _read_table(path, "geNomad table")
    _need(table, ["seq_name", "virus_score"], path, "geNomad table")
    ids = table["seq_name"].astype(str).str.strip()
    input_ids = ids.str.replace(_PROVIRUS, "", regex=True)
    score = _numbers(table["virus_score"].to_numpy(), path, "virus_score")
    if {"chromosome_score", "plasmid_score"} <= set(table.columns):
        chrom = _numbers(table["chromosome_score"].to_numpy(), path, "chromosome_score")
        plasmid = _numbers(table["plasmid_score"].to_numpy(), path, "plasmid_score")
        call = np.where((score >= chrom) & (score >= plasmid) & (score >= min_score), VIRUS, OTHERS)
    else:
        call = np.full(len(table), VIRUS, dtype=object)
    return _check_scores(_collapse(ids, input_ids, score, call), path, "geNomad")


# ============================================================================================ VirSorter2
def virsorter2(path) -> pd.DataFrame:
    """VirSorter2: ``final-viral-score.tsv`` (or a ``virsorter run -w`` folder holding it).

    Columns: ``seqname``, one score column per viral group (``dsDNAphage``, ``ssDNA``, ...), ``max_score``,
    ``max_score_group``, ``length``, ``hallmark``, ``viral``, ``cellular``. The table lists only the sequences
    VirSorter2 calls viral (``max_score`` at or above ``--min-score``): ``score`` = ``max_score``,
    ``call`` = ``virus`` for every row.

    IDs: VirSorter2 cuts each header at its first blank and appends ``||full`` (the whole sequence is viral),
    ``||lt2gene`` (short sequence with a hallmark gene) or ``||{i}_partial`` (a viral region of a longer
    sequence, i.e. a provirus). The suffix is removed; several partial regions of one sequence give it
    their highest score. Names without such a suffix (``--seqname-suffix-off``) are kept as they are.
    """
    p = Path(path)
    if p.is_dir():
        found = sorted(p.glob("*final-viral-score.tsv"))
        if not found:
            raise InputError(p, "no final-viral-score.tsv in this folder")
        p = found[0]
    table = _read_table(p, "VirSorter2 final-viral-score.tsv")
    _need(table, ["seqname", "max_score"], p, "VirSorter2 final-viral-score.tsv")
    ids = table["seqname"].astype(str).str.strip()
    input_ids = ids.str.replace(_VS2_SUFFIX, "", regex=True)
    score = _numbers(table["max_score"].to_numpy(), p, "max_score")
    return _check_scores(_collapse(ids, input_ids, score, [VIRUS] * len(table)), p, "VirSorter2")


# ============================================================================================ DeepVirFinder
def deepvirfinder(path, *, threshold: float = 0.5, max_pvalue: float | None = None) -> pd.DataFrame:
    """DeepVirFinder: ``<input>_gt<L>bp_dvfpred.txt`` (columns ``name, len, score, pvalue``).

    ``score`` = DeepVirFinder's score (in [0, 1]). DeepVirFinder makes no call of its own; ``call`` is
    ``virus`` at ``score >= threshold`` (default 0.5) and, when ``max_pvalue`` is given, ``pvalue <= max_pvalue``
    too. It skips sequences shorter than ``-l`` or with more than 30% N: those are not reported.

    IDs: ``name`` is the whole header line without ``>`` (``line.strip()[1:]``); the input ID is its first word.
    """
    table = _read_table(path, "DeepVirFinder prediction table")
    _need(table, ["name", "score"], path, "DeepVirFinder *_dvfpred.txt table")
    ids = table["name"].astype(str)
    score = _numbers(table["score"].to_numpy(), path, "score")
    virus = score >= threshold
    if max_pvalue is not None:
        _need(table, ["pvalue"], path, "DeepVirFinder table with p-values")
        virus &= _numbers(table["pvalue"].to_numpy(), path, "pvalue") <= max_pvalue
    call = np.where(virus, VIRUS, OTHERS)
    return _check_scores(_collapse(ids.str.strip(), _first_word(ids), score, call), path, "DeepVirFinder")


# ============================================================================================ Jaeger
def jaeger(path) -> pd.DataFrame:
    """Jaeger: ``<input>_jaeger.tsv`` / ``<input>_default_jaeger.tsv`` (``jaeger predict`` / ``Jaeger -i``).

    ``call``: ``virus`` when ``prediction`` is ``phage`` (any case; ``Phage`` in v1.1), else ``others``.
    ``score``: Jaeger reports per-class means of the window logits (``phage_score``, ``bacteria_score``,
    ``eukarya_score``, ``archaea_score``; capitalised in v1.1), not a probability; the score here is the
    softmax of those class means, phage entry -- a number in [0, 1] that ranks like Jaeger's own class
    decision but is not calibrated. ``reliability_score`` (``realiability_score`` in v1.1) is a confidence
    in whichever class was predicted, not a virus score, and is not used. Without class score columns the
    score is NaN. Sequences shorter than ``--fsize`` (2,048 bp by default) are not reported.

    IDs: ``contig_id`` is the whole header with commas removed; the input ID is its first word (an input ID
    that itself contains a comma does not match).
    """
    table = _read_table(path, "Jaeger table")
    _need(table, ["contig_id", "prediction"], path, "Jaeger *_jaeger.tsv table")
    ids = table["contig_id"].astype(str)
    prediction = table["prediction"].astype(str).str.strip().str.lower()
    call = np.where(prediction.isin(["phage", "virus", "viral"]), VIRUS, OTHERS)
    classes = [c for c in table.columns
               if re.fullmatch(r"[A-Za-z]+_score", str(c)) and str(c).lower() not in
               ("reliability_score", "realiability_score")]
    phage = [c for c in classes if c.lower() in ("phage_score", "virus_score", "viral_score")]
    if phage and len(classes) >= 2:
        logits = np.column_stack([_numbers(table[c].to_numpy(), path, c) for c in classes])
        logits = logits - np.nanmax(logits, axis=1, keepdims=True)
        p = np.exp(logits)
        p = p / p.sum(axis=1, keepdims=True)
        score = p[:, classes.index(phage[0])]
    else:
        score = np.full(len(table), np.nan)
    return _check_scores(_collapse(ids.str.strip(), _first_word(ids), score, call), path, "Jaeger")


# ============================================================================================ any of them
IMPORTERS = {"genomad": genomad, "virsorter2": virsorter2, "deepvirfinder": deepvirfinder, "jaeger": jaeger}


def detect(path) -> str:
    """Which tool wrote ``path`` (a file or an output folder), from its columns or file names."""
    p = Path(path)
    if p.is_dir():
        if any(p.glob("*final-viral-score.tsv")):
            return "virsorter2"
        if any(p.glob("*_summary/*_virus_summary.tsv")) or any(p.glob("*_aggregated_classification*")):
            return "genomad"
        raise InputError(p, "not a geNomad or VirSorter2 output folder")
    table = _read_table(p, "tool output")
    cols = set(table.columns)
    if "seq_name" in cols and "virus_score" in cols:
        return "genomad"
    if "seqname" in cols and "max_score" in cols:
        return "virsorter2"
    if {"name", "score"} <= cols and ("pvalue" in cols or "len" in cols):
        return "deepvirfinder"
    if {"contig_id", "prediction"} <= cols:
        return "jaeger"
    raise InputError(p, "not a recognised geNomad, VirSorter2, DeepVirFinder or Jaeger table "
                        f"(columns: {', '.join(map(str, table.columns[:8]))})")


def load(source, tool: str | None = None) -> pd.DataFrame:
    """Another tool's calls in the common shape: from a path (``tool`` named or detected) or a DataFrame.

    A DataFrame needs ``sequence_id`` and at least one of ``score`` (in [0, 1]) and ``call``
    (``virus``/``others``); it is taken as already matched to input IDs (one row per ID).
    """
    if isinstance(source, pd.DataFrame):
        return _from_frame(source)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"another tool's output is a path or a DataFrame, not {type(source).__name__}")
    name = (tool or detect(source)).lower().replace("-", "").replace("_", "")
    if name not in IMPORTERS:
        raise ValueError(f"unknown tool {tool!r}; known: {', '.join(IMPORTERS)}")
    return IMPORTERS[name](source)


def _from_frame(table: pd.DataFrame) -> pd.DataFrame:
    where = "<table of another tool>"
    if "sequence_id" not in table.columns or not ({"score", "call"} & set(table.columns)):
        raise InputError(where, "needs a sequence_id column and a score or call column")
    ids = table["sequence_id"].astype(str).str.strip()
    if ids.duplicated().any():
        raise InputError(where, "sequence_id listed twice", record=ids[ids.duplicated()].iloc[0])
    score = (_numbers(table["score"].to_numpy(), where, "score") if "score" in table.columns
             else np.full(len(table), np.nan))
    if "call" in table.columns:
        call = table["call"].astype(object).where(table["call"].notna(), None)
        call = pd.Series([None if c is None else str(c).strip().lower() for c in call], dtype=object)
        bad = call.notna() & ~call.isin([VIRUS, OTHERS])
        if bad.any():
            raise InputError(where, f"call '{call[bad].iloc[0]}' is not virus or others", record=ids[bad].iloc[0])
    else:
        call = pd.Series([None] * len(table), dtype=object)
    out = pd.DataFrame({"sequence_id": ids.to_numpy(dtype=object), "score": score, "call": call.to_numpy(),
                        "tool_ids": table.get("tool_ids", ids).astype(str).to_numpy(dtype=object),
                        "rows": table["rows"].to_numpy() if "rows" in table.columns else 1})
    return _check_scores(out, where, "table")
