"""Showing tables, notes, warnings and provenance in a notebook, for both pages a report makes of it.

Each ``show_*`` function displays one bundle with a ``text/html`` part (JupyterLab and the HTML page: tables
sortable by clicking a column header) and a ``text/markdown`` part (the markdown page). Nothing displayed
depends on the time, the host or a random number, so rendering the same results twice gives the same pages.
Warnings and provenance lines also go into the output's metadata, where the report index finds them.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import io
import itertools
import math
import os
import re

import numpy as np
import pandas as pd

from . import tables
from .paths import repo_root

METADATA_KEY = "virnucpro"
PERCENT_COLUMN = re.compile(r"(^|_)(mfu|efficiency|agreement|fraction)($|_)")
_TABLE_NUMBERS = itertools.count(1)  # table IDs: the same sequence in every run of a notebook


def _display(bundle: dict, metadata: dict | None = None) -> None:
    from IPython.display import display

    display(bundle, raw=True, metadata=metadata or {})


def setup() -> None:
    """Call once, in the first code cell: the working directory becomes the repository root (parameters name
    files relative to it, whether the notebook runs under papermill, nbval or JupyterLab), and plotly.js is put
    into the page once, inline (the HTML page needs no network); the markdown page gets nothing."""
    from plotly.offline import get_plotlyjs

    os.chdir(repo_root())
    # plotly.js registers as an AMD module instead of setting window.Plotly when an AMD `define` is present
    # (JupyterLab extensions may add one): hide it while plotly.js loads.
    script = ("<script type=\"text/javascript\">window.__vnpDefine = window.define; window.define = undefined;"
              f"</script>\n<script type=\"text/javascript\">{get_plotlyjs()}</script>\n"
              "<script type=\"text/javascript\">window.define = window.__vnpDefine;</script>")
    _display({"text/html": script, "text/markdown": "", "text/plain": ""})


@contextlib.contextmanager
def quiet():
    """Run a block without its console output (paths, progress): what it made is shown from its files."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


# ----------------------------------------------------------------------------------------------- tables
def format_value(value) -> str:
    """A table cell for people: thousands separators, 4 significant digits, ``–`` for missing."""
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
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
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _percent_columns(df: pd.DataFrame) -> set:
    """Columns named like a share (``mfu``, ``efficiency``, ``*_agreement_*``, ``*_fraction``), shown as %."""
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


def markdown_table(df: pd.DataFrame, max_rows: int | None = None) -> str:
    """``df`` as a GitHub markdown table (numbers right-aligned, shares as percentages), cut at ``max_rows``."""
    shown = df if max_rows is None else df.head(max_rows)
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]
    pct = [c in _percent_columns(df) for c in df.columns]

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


def html_table(df: pd.DataFrame, caption: str | None = None, max_height: int = 520) -> str:
    """``df`` as an HTML table sortable by clicking a column header (a few lines of inline script)."""
    digest = hashlib.sha1(f"{caption}\n{df.to_csv()}".encode()).hexdigest()[:8]
    table_id = f"vnp-table-{next(_TABLE_NUMBERS)}-{digest}"
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
    pct = [c in _percent_columns(df) for c in df.columns]
    align = ["right" if n else "left" for n in numeric]
    head = "".join(f"<th style=\"text-align:{a}\">{html.escape(str(c))}</th>" for c, a in zip(df.columns, align))
    body = "".join("<tr>" + "".join(
        f"<td data-sort=\"{html.escape(_sort_key(v), quote=True)}\" style=\"text-align:{a}\">"
        f"{html.escape(_cell_text(v, p))}</td>" for v, a, p in zip(row, align, pct)) + "</tr>"
        for row in df.itertuples(index=False))
    cap = f"<caption style=\"caption-side:top;text-align:left;font-weight:bold\">{html.escape(caption)}</caption>" \
        if caption else ""
    return (f"<div style=\"max-height:{max_height}px;overflow:auto\"><table id=\"{table_id}\" class=\"dataframe\">"
            f"{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>" + _SORT_SCRIPT % table_id)


def show_table(df: pd.DataFrame | None, caption: str | None = None, max_rows_markdown: int = 40,
               empty: str = "no data") -> None:
    """A table: sortable HTML (every row) in JupyterLab and the HTML page, a markdown table (the first
    ``max_rows_markdown`` rows) in the markdown page; ``empty`` as a note when there is no row."""
    if df is None or len(df) == 0:
        show_note(f"{caption + ': ' if caption else ''}{empty}")
        return
    md = (f"**{caption}**\n\n" if caption else "") + markdown_table(df, max_rows_markdown)
    _display({"text/html": html_table(df, caption), "text/markdown": md, "text/plain": df.to_string(max_rows=20)})


def show_note(text: str) -> None:
    """A short note (for example: why a section is empty)."""
    _display({"text/html": f"<p style=\"color:#555\"><em>{html.escape(text)}</em></p>",
              "text/markdown": f"_{text}_\n", "text/plain": text})


def _boxes(kind: str, items: list[str], color: str, border: str) -> tuple[str, str]:
    boxes = "".join(f"<div style=\"background:{color};border-left:5px solid {border};padding:8px 12px;margin:6px 0\">"
                    f"<strong>{html.escape(kind)}:</strong> {html.escape(w)}</div>" for w in items)
    return boxes, "\n".join(f"> **{kind}:** {w}\n" for w in items)


def show_warnings(obj, source: str = "") -> None:
    """The warnings recorded with a Run, a result or a list of results (``tables.warnings_of``), or a list of
    strings: yellow boxes in HTML, quotes in markdown."""
    items = [str(w) for w in obj] if isinstance(obj, list) and all(isinstance(w, str) for w in obj) \
        else tables.warnings_of(obj)
    items = list(dict.fromkeys(items))
    if not items:
        return
    html_part, md = _boxes(f"Warning ({source})" if source else "Warning", items, "#fff4ce", "#e0a800")
    _display({"text/html": html_part, "text/markdown": md, "text/plain": "\n".join(f"warning: {w}" for w in items)},
             metadata={METADATA_KEY: {"warnings": items}})


def show_provenance(obj, what: str = "results") -> None:
    """Where the results on this page were made, as recorded with them (``run.json`` or the benchmark JSON:
    commit, time, command, hardware, versions, parameters, profile), and, when they are pipeline checks (demo
    profile, CPU timings), a box that says so. ``obj``: a Run, a result, a list of results, or None (a note that
    there are no results yet)."""
    table = tables.provenance(obj)
    if table is None:
        show_note(f"no {what} here yet: the sections below stay empty until they exist.")
        return
    reasons = tables.caveats(obj)
    if reasons:
        label = tables.caveat(obj)
        text = " ".join(tables.CAVEATS[r][0].upper() + tables.CAVEATS[r][1:] + "." for r in reasons)
        html_part, md = _boxes(label[0].upper() + label[1:], [text], "#e8f0fe", "#3b6fd8")
        _display({"text/html": html_part, "text/markdown": md, "text/plain": label})
    items = obj if isinstance(obj, list) else [obj]
    lines = [tables.provenance_line(i[-1] if isinstance(i, tuple) else i) for i in items]
    caption = f"Provenance of the {what} (as recorded with them)"
    _display({"text/html": html_table(table, caption), "text/markdown": f"**{caption}**\n\n" + markdown_table(table),
              "text/plain": table.to_string()}, metadata={METADATA_KEY: {"provenance": lines}})
