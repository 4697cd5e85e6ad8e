"""Rendering: every notebook executed with a parameter set, turned into HTML and markdown pages, and an index.

``build_reports(params, out=None, only=None)`` (``vk.report``, ``virnucpro report``, ``make report``):

- ``params`` names a parameter set, ``params/<notebook>/<set>.yaml`` for each notebook (a notebook without that
  file is listed as not rendered; a file holding only ``not_rendered: <why>`` says why), or is a YAML file
  that maps notebook names to their parameters (``01_predict: {threshold: 0.9}``; the notebooks it names are
  rendered, parameters it leaves out keep the notebook's defaults, the demo set). Parameter names the
  notebook's ``parameters`` cell does not declare are refused before anything runs.
- each notebook is executed by papermill with the kernel ``virnucpro``, working directory the repository
  root, into ``OUT/<notebook>.ipynb``, then rendered to ``OUT/html/<notebook>.html`` (input hidden,
  interactive figures, no request to the network: see ``templates/page.html.j2``) and ``OUT/<notebook>.md``
  (figures as PNG files in ``OUT/<notebook>_files/``, tables as markdown), each page opening with a link
  back to the index;
- ``OUT/index.html`` and ``OUT/index.md`` (``templates/index.*.j2``) list the pages, their status, the
  provenance and warnings they showed, and their parameters.

Nothing in the pages depends on when, where or into which folder they were rendered. A failing notebook is
recorded in the index and rendering goes on; at the end a :class:`ReportError` names every failure.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import VirNucProError
from .display import METADATA_KEY
from .paths import display_path, repo_path, repo_root

KERNEL = "virnucpro"
TEMPLATES = Path(__file__).resolve().parent / "templates"
NOT_RENDERED = "not_rendered"
MARKDOWN_PRIORITY = ["image/png", "image/jpeg", "image/svg+xml", "text/markdown", "text/html", "text/latex",
                     "text/plain"]
log = logging.getLogger("virnucpro")


class ReportError(VirNucProError):
    """One or more notebooks failed; the pages and the index were written nonetheless."""


@dataclass
class Page:
    """What rendering one notebook produced."""

    stem: str
    title: str
    params: dict = field(default_factory=dict)
    status: str = "ok"  # ok, failed, not rendered
    detail: str = ""  # the error, or why it was not rendered
    files: dict = field(default_factory=dict)  # kind (HTML, markdown, notebook) -> path
    warnings: list = field(default_factory=list)
    provenance: list = field(default_factory=list)


# ------------------------------------------------------------------------------------------ parameters
def notebook_paths(root=None) -> list[Path]:
    """The report notebooks, in the order they run (their names start with a number)."""
    return sorted((repo_root(root) / "notebooks").glob("[0-9]*.ipynb"))


def _yaml_mapping(path: Path) -> dict:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise VirNucProError(f"{path}: expected a mapping")
    return data


def parameter_sets(params: str, root=None) -> tuple[str, str, dict]:
    """``(name, where from, {notebook: parameters, or {"not_rendered": why}})`` for every notebook, from a set
    name or a YAML file (see the module docstring)."""
    root = repo_root(root)
    stems = [p.stem for p in notebook_paths(root)]
    as_file = Path(params).expanduser()
    if str(params).endswith((".yaml", ".yml")) or as_file.is_file():
        path = as_file if as_file.is_absolute() else Path.cwd() / as_file
        if not path.is_file():
            raise VirNucProError(f"parameter file {params} not found")
        data = _yaml_mapping(path)
        unknown = sorted(set(data) - set(stems))
        if unknown:
            raise VirNucProError(f"{params}: no notebook named {', '.join(unknown)} (notebooks: {', '.join(stems)})")
        for stem, values in data.items():
            if not isinstance(values, dict):
                raise VirNucProError(f"{params}: the parameters of {stem} must be a mapping")
        sets = {stem: data.get(stem, {NOT_RENDERED: f"not in {as_file.name}"}) for stem in stems}
        return path.stem, f"`{display_path(path, root)}`", sets
    sets = {}
    for stem in stems:
        path = root / "params" / stem / f"{params}.yaml"
        sets[stem] = _yaml_mapping(path) if path.is_file() else {NOT_RENDERED: f"no parameter set {params!r} "
                                                                              f"(params/{stem}/{params}.yaml)"}
    if all(NOT_RENDERED in s for s in sets.values()):
        raise VirNucProError(f"no parameter set {params!r}: no params/<notebook>/{params}.yaml, and no such file")
    return params, f"`params/<notebook>/{params}.yaml`", sets


def check_parameters(src: Path, params: dict) -> None:
    """``VirNucProError`` naming the parameters the notebook's ``parameters`` cell does not declare."""
    import papermill as pm

    logging.getLogger("papermill").setLevel(logging.ERROR)
    declared = set(pm.inspect_notebook(str(src)))
    unknown = sorted(set(params) - declared)
    if unknown:
        raise VirNucProError(f"{src.stem}: unknown parameter(s) {', '.join(unknown)} "
                             f"(declared: {', '.join(sorted(declared))})")


# ------------------------------------------------------------------------------------------- execution
def check_kernel() -> None:
    """``VirNucProError`` with the command that installs it when the ``virnucpro`` kernel is missing."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        raise VirNucProError(f"no Jupyter kernel named {KERNEL!r}: run `make setup`, or `python -m ipykernel install "
                             f"--sys-prefix --name {KERNEL} --display-name \"Python ({KERNEL})\"`") from None


@contextlib.contextmanager
def _stderr_into(fh):
    """File descriptor 2 pointed at ``fh`` for the block: the kernel process inherits it, so its own log lines
    stay out of the command's output."""
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
    """papermill: ``src`` executed with ``params`` and the ``virnucpro`` kernel from the repository root into
    ``dst`` (written also when a cell fails). When the kernel fails before any cell runs, the error names its
    last log line."""
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
            raise RuntimeError(f"{type(exc).__name__}: {exc}" + (f" (kernel: {lines[-1].strip()})" if lines else ""))


def execution_error(exc, executed: Path | None = None, source: Path | None = None) -> str:
    """One line naming the notebook, the cell (its number in ``notebooks/``) and the error."""
    import nbformat

    name = f"{source.parent.name}/{source.name}" if source else "notebook"
    cell = getattr(exc, "cell_index", None)
    if cell is not None and executed is not None and executed.is_file():
        # cell_index counts the cells as executed: papermill's injected-parameters cell is one of them
        cells = [c for c in nbformat.read(executed, as_version=4).cells
                 if "papermill-error-cell-tag" not in c.metadata.get("tags", [])]
        cell -= sum(1 for i, c in enumerate(cells) if "injected-parameters" in c.metadata.get("tags", []) and i < cell)
    first = (getattr(exc, "source", "") or "").strip().splitlines()
    where = f"cell {cell + 1}" if cell is not None else "start-up"
    hint = f" [{first[0][:60]}]" if first else ""
    evalue = " ".join(str(getattr(exc, "evalue", str(exc))).split())
    return f"{name} {where}{hint}: {getattr(exc, 'ename', type(exc).__name__)}: {evalue}"


# ------------------------------------------------------------------------------------------- rendering
def notebook_title(nb) -> str:
    """The first markdown heading of a notebook."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return ""


def collected(nb, key: str) -> list[str]:
    """What the notebook's outputs recorded under ``key`` (``warnings``, ``provenance``) in their metadata."""
    found = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            found += (output.get("metadata", {}).get(METADATA_KEY) or {}).get(key, [])
    return list(dict.fromkeys(found))


def _page_notebook(nb, index_href: str):
    """A copy of the executed notebook for a page: stderr output dropped, a link to the index first, cells
    numbered in order (papermill's injected cell has a random ID, which HTML pages show)."""
    import nbformat

    nb = copy.deepcopy(nb)
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(f"[← all reports]({index_href})"))
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
        if cell.get("outputs"):
            cell.outputs = [o for o in cell.outputs
                            if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    return nb


def render_html(nb, path: Path, title: str) -> None:
    """The executed notebook as one HTML page: input hidden, figures interactive, nothing loaded from the
    network (``templates/page.html.j2``)."""
    from jinja2 import FileSystemLoader
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", extra_loaders=[FileSystemLoader(str(TEMPLATES))],
                            template_file="page.html.j2", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(_page_notebook(nb, "../index.html"), resources={"metadata": {"name": title}})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body, encoding="utf-8")


def render_markdown(nb, path: Path) -> None:
    """The executed notebook as markdown: figures as PNG files in ``<stem>_files/`` (earlier ones removed),
    tables as markdown tables, input hidden."""
    from nbconvert import MarkdownExporter
    from traitlets.config import Config

    config = Config()
    config.NbConvertBase.display_data_priority = MARKDOWN_PRIORITY
    exporter = MarkdownExporter(config=config, exclude_input=True, exclude_input_prompt=True,
                                exclude_output_prompt=True)
    files_dir = f"{path.stem}_files"
    body, resources = exporter.from_notebook_node(_page_notebook(nb, "index.md"), resources={
        "unique_key": path.stem, "output_files_dir": files_dir})
    target = path.parent / files_dir
    if target.is_dir():
        for old in target.iterdir():
            old.unlink()
    for name, data in sorted((resources.get("outputs") or {}).items()):
        (path.parent / name).parent.mkdir(parents=True, exist_ok=True)
        (path.parent / name).write_bytes(data)
    body = re.sub(r"[ \t]+(?=\n)", "", body)  # trailing blanks, the template's indented blank lines
    path.write_text(re.sub(r"\n{3,}", "\n\n", body).strip() + "\n", encoding="utf-8")


def write_index(out: Path, name: str, source: str, pages: list[Page]) -> tuple[Path, Path]:
    """``OUT/index.html`` and ``OUT/index.md`` from ``templates/index.*.j2``."""
    import yaml
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]),
                      keep_trailing_newline=True)
    rows = []
    for p in pages:
        links = {kind: os.path.relpath(f, out).replace(os.sep, "/") for kind, f in p.files.items()}
        rows.append({**p.__dict__, "params_yaml": yaml.safe_dump(p.params, sort_keys=False) if p.params else "{}\n",
                     "links": [(k, links[k]) for k in ("markdown", "HTML", "notebook") if k in links],
                     "html_links": [(k, links[k]) for k in ("HTML", "markdown", "notebook") if k in links]})
    context = {"name": name, "source": source, "pages": rows,
               "warnings": list(dict.fromkeys(w for p in pages for w in p.warnings))}
    paths = out / "index.html", out / "index.md"
    for path in paths:
        text = env.get_template(f"{path.name}.j2").render(**context)
        path.write_text(re.sub(r"\n{3,}", "\n\n", text).strip() + "\n", encoding="utf-8")
    return paths


def build_reports(params: str = "demo", out=None, only=None, root=None) -> Path:
    """Execute and render every notebook (or those named in ``only``: the index then lists only them) with a
    parameter set (a name under ``params/`` or a YAML file), write the index, and return the index page. Raises
    :class:`ReportError` naming every notebook that failed (after writing everything else)."""
    import nbformat

    root = repo_root(root)
    only = [only] if isinstance(only, str) else only
    name, source, sets = parameter_sets(params, root)
    out = repo_path(out or f"reports/{name}", root)
    sources = {p.stem: p for p in notebook_paths(root)}
    unknown = sorted(set(only or []) - set(sources))
    if unknown:
        raise VirNucProError(f"no notebook named {', '.join(unknown)} (notebooks: {', '.join(sources)})")
    chosen = [stem for stem in sources if not only or stem in only]
    for stem in chosen:  # every parameter is checked before anything runs
        if NOT_RENDERED not in sets[stem]:
            check_parameters(sources[stem], sets[stem])
    check_kernel()
    out.mkdir(parents=True, exist_ok=True)
    pages = []
    for stem in chosen:
        src, params = sources[stem], sets[stem]
        page = Page(stem, notebook_title(nbformat.read(src, as_version=4)), params)
        pages.append(page)
        if NOT_RENDERED in params:
            page.status, page.detail, page.params = "not rendered", str(params[NOT_RENDERED]), {}
            log.info(f"report: {stem}: not rendered ({page.detail})")
            continue
        dst = out / f"{stem}.ipynb"
        dst.unlink(missing_ok=True)  # never render an earlier run's notebook
        t0 = time.perf_counter()
        try:
            execute_notebook(src, dst, params, root)
        except Exception as exc:  # a failing cell, a kernel that died: recorded, rendering goes on
            page.status, page.detail = "failed", execution_error(exc, dst, src)
        if dst.is_file():
            nb = nbformat.read(dst, as_version=4)
            page.warnings, page.provenance = collected(nb, "warnings"), collected(nb, "provenance")
            render_html(nb, out / "html" / f"{stem}.html", page.title or stem)
            render_markdown(nb, out / f"{stem}.md")
            page.files = {"HTML": out / "html" / f"{stem}.html", "markdown": out / f"{stem}.md", "notebook": dst}
        log.info(f"report: {stem}: {page.status} in {time.perf_counter() - t0:.1f} s"
                 + (f" ({page.detail})" if page.detail else ""))
    index_html, index_md = write_index(out, name, source, pages)
    log.info(f"report: index {display_path(index_html, root)}, {display_path(index_md, root)}")
    failed = [p.detail for p in pages if p.status == "failed"]
    if failed:
        raise ReportError(f"{len(failed)} of {len(pages)} notebook(s) failed (pages and index written to "
                          f"{display_path(out, root)}): " + "; ".join(failed))
    return index_html
