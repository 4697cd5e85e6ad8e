"""``reports.render`` and the notebooks: parameter sets, the committed notebooks, the index, and rendering end to
end (pages offline, linked to the index, the same from one render to the next).

The notebooks themselves run under nbval (``make test``: ``pytest --nbval-lax notebooks``).
"""

from __future__ import annotations

import ast
import filecmp
import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import papermill as pm
import pytest
import yaml

from virnucpro_kernel.errors import VirNucProError
from virnucpro_kernel.reports import render

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
MAX_CELL_LINES = 12
REMOTE = re.compile(r"^\s*(https?:)?//", re.IGNORECASE)


def parameters_cell(nb) -> nbformat.NotebookNode:
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{len(cells)} cells tagged 'parameters'"
    return cells[0]


def cell_values(source: str) -> dict:
    """Names assigned in a parameters cell and their literal values."""
    values = {}
    for node in ast.parse(source).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, f"not a plain assignment: {ast.unparse(node)}"
        values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


class _RemoteFinder(HTMLParser):
    """Scripts, styles, fonts, images and frames an HTML page would load from the network."""

    def __init__(self):
        super().__init__()
        self.remote, self._in_style = [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href", "data"):
            value = attrs.get(key) or ""
            if REMOTE.match(value) and (key != "href" or tag == "link"):
                self.remote.append(f"<{tag} {key}={value}>")
        if REMOTE.search(attrs.get("style") or "") or "url(http" in (attrs.get("style") or ""):
            self.remote.append(f"<{tag} style>")
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.remote += re.findall(r"@import[^;]*https?://[^;]*|url\(\s*['\"]?(?:https?:)?//[^)]*\)", data)


def remote_resources(page: str) -> list[str]:
    finder = _RemoteFinder()
    finder.feed(page)
    return finder.remote + re.findall(r"import\(\s*['\"]https?://[^'\"]*", page)


# --------------------------------------------------------------------------------------------- notebooks
def test_the_six_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == ["01_predict", "02_scaling", "03_equivalence", "04_regression",
                                           "05_evaluate", "06_speed"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"cell {i + 1} has outputs"
    assert nb.metadata.kernelspec.name == "virnucpro"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_equals_demo_set_and_papermill_sees_every_parameter(path):
    values = cell_values(parameters_cell(nbformat.read(path, as_version=4)).source)
    assert values == yaml.safe_load((ROOT / "params" / path.stem / "demo.yaml").read_text())
    assert set(pm.inspect_notebook(str(path))) == set(values)  # else papermill warns "unknown parameter"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_parameter_set_names_the_cells_parameters(path):
    names = set(cell_values(parameters_cell(nbformat.read(path, as_version=4)).source))
    sets = sorted((ROOT / "params" / path.stem).glob("*.yaml"))
    assert {"demo", "h200"} <= {p.stem for p in sets}
    for file in sets:
        data = yaml.safe_load(file.read_text())
        if render.NOT_RENDERED in data:
            assert set(data) == {render.NOT_RENDERED} and data[render.NOT_RENDERED]
            continue
        assert set(data) == names, f"{file.relative_to(ROOT)}: {sorted(set(data) ^ names)}"
        for key in ("out", "results_dir"):
            if file.stem == "h200" and key in data:
                assert str(data[key]).startswith("reports/h200"), f"h200 reads reports/h200/, not {data[key]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_cells_are_short_and_use_the_public_api(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "display.setup()" in code[1].source  # before anything is shown
    for cell in code:
        assert len(cell.source.splitlines()) <= MAX_CELL_LINES, cell.source
        for word in ("build_parser", "argv", "subprocess", "sys.executable", "PredictSettings"):
            assert word not in cell.source, f"{word} in {path.stem}: {cell.source}"


def test_the_evaluation_page_has_no_h200_set_and_says_why():
    name, _, sets = render.parameter_sets("h200", ROOT)
    assert name == "h200" and "until the real weights have been run" in sets["05_evaluate"][render.NOT_RENDERED]
    assert render.NOT_RENDERED not in sets["02_scaling"] and sets["02_scaling"]["gpu_logs"] is False


# --------------------------------------------------------------------------------------------- parameters
def test_a_parameter_file_maps_notebooks_to_parameters(tmp_path):
    file = tmp_path / "mine.yaml"
    file.write_text("01_predict:\n  threshold: 0.9\n")
    name, source, sets = render.parameter_sets(str(file), ROOT)
    assert name == "mine" and sets["01_predict"] == {"threshold": 0.9}
    assert sets["02_scaling"] == {render.NOT_RENDERED: "not in mine.yaml"}
    file.write_text("99_nothing:\n  x: 1\n")
    with pytest.raises(VirNucProError, match="no notebook named 99_nothing"):
        render.parameter_sets(str(file), ROOT)
    with pytest.raises(VirNucProError, match="not found"):
        render.parameter_sets(str(tmp_path / "missing.yaml"), ROOT)
    with pytest.raises(VirNucProError, match="no parameter set 'nosuchset'"):
        render.parameter_sets("nosuchset", ROOT)


def test_unknown_parameters_are_refused_before_anything_runs():
    with pytest.raises(VirNucProError, match="01_predict: unknown parameter.s. gpu_count"):
        render.check_parameters(ROOT / "notebooks" / "01_predict.ipynb", {"threshold": 0.5, "gpu_count": 2})
    render.check_parameters(ROOT / "notebooks" / "01_predict.ipynb", {"threshold": 0.5, "gpus": 2})


# --------------------------------------------------------------------------------------------- index
def test_index_lists_pages_status_provenance_and_parameters(tmp_path):
    (tmp_path / "html").mkdir()
    for name in ("01_a.md", "html/01_a.html", "01_a.ipynb"):
        (tmp_path / name).write_text("x")
    ok = render.Page("01_a", "First notebook", {"input": "x.fa", "gpus": 0},
                     files={"HTML": tmp_path / "html/01_a.html", "markdown": tmp_path / "01_a.md",
                            "notebook": tmp_path / "01_a.ipynb"},
                     warnings=["demo profile: beware"], provenance=["scaling result: commit abc, 4 x H200"])
    bad = render.Page("02_b", "Second", {"x": 1}, status="failed",
                      detail="notebooks/02_b.ipynb cell 4: ValueError: a|b")
    skipped = render.Page("03_c", "Third", status="not rendered", detail="no h200 parameter set for this page")
    html_path, md_path = render.write_index(tmp_path, "demo", "`params/<notebook>/demo.yaml`", [ok, bad, skipped])
    page, md = html_path.read_text(), md_path.read_text()
    assert 'href="html/01_a.html"' in page and 'href="01_a.md"' in page and "First notebook" in page
    assert "demo profile: beware" in page and "ValueError: a|b" in page and "scaling result: commit abc" in page
    assert "[markdown](01_a.md) · [HTML](html/01_a.html) · [notebook](01_a.ipynb)" in md
    assert "| failed: notebooks/02_b.ipynb cell 4: ValueError: a\\|b |" in md and "input: x.fa" in md
    assert "| not rendered: no h200 parameter set for this page |" in md and "## Third" not in md
    assert "> **Warning:** demo profile: beware" in md and "- scaling result: commit abc, 4 x H200" in md
    assert render.write_index(tmp_path, "demo", "`params/<notebook>/demo.yaml`", [ok, bad, skipped]) \
        and md_path.read_text() == md  # no time, host or path in it
    assert not remote_resources(page)


def test_execution_error_names_notebook_cell_and_error(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# t"), nbformat.v4.new_code_cell("a = 1"),
                                         nbformat.v4.new_code_cell("a = 2"),
                                         nbformat.v4.new_code_cell("assert a == 3, 'a is not 3'")])
    nb.cells[2].metadata["tags"] = ["injected-parameters"]
    executed = tmp_path / "x.ipynb"
    nbformat.write(nb, executed)

    class Failure(Exception):
        cell_index, ename, evalue, source = 3, "AssertionError", "a is\nnot 3", "assert a == 3, 'a is not 3'"

    line = render.execution_error(Failure(), executed, Path("notebooks/02_scaling.ipynb"))
    assert line == "notebooks/02_scaling.ipynb cell 3 [assert a == 3, 'a is not 3']: AssertionError: a is not 3"


# --------------------------------------------------------------------------------------------- rendering
def _scratch_repository(root: Path) -> None:
    """Two tiny notebooks (one fails) with a figure, a table and a warning, in a repository of their own."""
    (root / "pyproject.toml").write_text("")
    (root / "notebooks").mkdir()
    setup = "from virnucpro_kernel.reports import display, figure\ndisplay.setup()"
    for stem, code in (("01_ok", "figure.empty_figure('hello', 'a title')"),
                       ("02_fail", "x = 1\nassert x == 2, 'x is not 2'")):
        nb = nbformat.v4.new_notebook(cells=[
            nbformat.v4.new_markdown_cell(f"# Notebook {stem}"),
            nbformat.v4.new_code_cell("marker_param = 0  # a parameter", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell(setup), nbformat.v4.new_code_cell(code),
            nbformat.v4.new_code_cell("display.show_warnings(['demo profile: beware'])"),
            nbformat.v4.new_code_cell("display.show_table(__import__('pandas').DataFrame({'a': [1, 2]}), 'tbl')")])
        nb.metadata["kernelspec"] = {"name": "virnucpro", "display_name": "Python (virnucpro)", "language": "python"}
        nbformat.write(nb, root / "notebooks" / f"{stem}.ipynb")
        (root / "params" / stem).mkdir(parents=True)
        (root / "params" / stem / "demo.yaml").write_text("marker_param: 7\n")


@pytest.mark.slow
def test_rendering_end_to_end_and_a_failing_notebook(tmp_path, monkeypatch, capsys):
    """papermill + nbconvert on two tiny notebooks; the CLI exits with status 2 naming the failed cell."""
    _scratch_repository(tmp_path)
    out = tmp_path / "reports" / "demo"
    with pytest.raises(render.ReportError, match=r"1 of 2 notebook\(s\) failed .*notebooks/02_fail.ipynb cell 4 "
                                                 r"\[x = 1\]: AssertionError: x is not 2"):
        render.build_reports("demo", out, root=tmp_path)
    html = (out / "html" / "01_ok.html").read_text()
    assert html.count("Plotly.newPlot") == 1  # the figure; plotly.js inline once
    assert "marker_param" not in html and 'href="../index.html"' in html  # input hidden, a way back
    assert not remote_resources(html) and "init_mathjax" not in html and "require.min.js" not in html
    md = (out / "01_ok.md").read_text()
    pngs = list((out / "01_ok_files").glob("*.png"))
    assert md.startswith("[← all reports](index.md)") and len(pngs) == 1 and f"({pngs[0].parent.name}/" in md
    assert "| a |" in md and "> **Warning:** demo profile: beware" in md and "<script" not in md
    assert "demo profile: beware" in (out / "index.html").read_text()
    assert "| failed: notebooks/02_fail.ipynb cell 4" in (out / "index.md").read_text()

    from virnucpro_kernel import cli

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_status:
        cli.main(["report", "--params", "demo", "--only", "02_fail"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_status.value.code == 2 and len(err) == 1
    assert err[0].startswith("virnucpro: error: 1 of 1 notebook(s) failed") and "x is not 2" in err[0]


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.suffix != ".ipynb")


@pytest.mark.slow
def test_h200_pages_are_offline_and_the_same_from_one_render_to_the_next(tmp_path):
    """``make report PARAMS=h200`` on the committed results, twice: the same pages, byte for byte (so rendering
    on a clean clone changes no committed file), none loading anything from the network."""
    import virnucpro_kernel as vk

    first = vk.report("h200", out=tmp_path / "a")
    assert first == tmp_path / "a" / "index.html"
    render.build_reports("h200", out=tmp_path / "b", root=ROOT)
    a, b = tmp_path / "a", tmp_path / "b"
    assert _tree(a) == _tree(b)
    _, mismatch, errors = filecmp.cmpfiles(a, b, _tree(a), shallow=False)
    assert not mismatch and not errors, mismatch
    for name in _tree(a):  # no path of the machine or of the output folder
        text = (a / name).read_bytes()
        assert b"/tmp" not in text and str(ROOT).encode() not in text, name
    for page in (a / "html").glob("*.html"):
        assert not remote_resources(page.read_text()), page.name
        assert 'href="../index.html"' in page.read_text()
    index = (a / "index.md").read_text()
    assert "| not rendered: no h200 parameter set for this page until the real weights" in index
    for md in sorted(a.glob("0*.md")):
        text = md.read_text()
        assert text.startswith("[← all reports](index.md)"), md.name
        assert "**Provenance of the" in text or "no prediction here yet" in text, md.name
