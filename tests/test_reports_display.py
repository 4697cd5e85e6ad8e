"""``reports.display``: what a notebook shows, as HTML for the HTML page and markdown for the markdown page."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reports_fixtures import DEMO_WARNING, fake_result, write_run
from virnucpro_kernel.reports import display


@pytest.fixture
def shown(monkeypatch):
    """What the display functions display: ``(bundle, metadata)`` pairs."""
    bundles = []
    monkeypatch.setattr(display, "_display", lambda bundle, metadata=None: bundles.append((bundle, metadata)))
    return bundles


def test_markdown_and_html_tables():
    df = pd.DataFrame({"name": ["a|b", "c"], "n": [1234567, 2], "x": [0.000012345, np.nan], "ok": [True, False]})
    lines = display.markdown_table(df).splitlines()
    assert lines[0] == "| name | n | x | ok |" and lines[1] == "|---|---:|---:|---|"
    assert lines[2] == "| a\\|b | 1,234,567 | 1.234e-05 | yes |" and lines[3] == "| c | 2 | – | no |"
    assert "1 of 2 rows shown" in display.markdown_table(df, max_rows=1)
    shares = display.markdown_table(pd.DataFrame({"mfu": [0.55], "efficiency": [1.0], "ratio": [0.5]}))
    assert shares.splitlines()[2] == "| 55.00% | 100.0% | 0.5 |"
    page = display.html_table(df, "caption")
    assert page.count("<tr>") == 3 and 'data-sort="1234567.0"' in page and "addEventListener" in page
    assert "a|b" in page and "<caption" in page


def test_table_ids_follow_the_order_of_the_page_not_chance():
    df = pd.DataFrame({"a": [1]})
    first, second = display.html_table(df, "t"), display.html_table(df, "t")
    ids = [page.split('id="', 1)[1].split('"', 1)[0] for page in (first, second)]
    assert ids[0] != ids[1]  # two tables on a page: two IDs
    assert ids[0].split("-")[3] == ids[1].split("-")[3]  # the same content: the same digest
    assert int(ids[1].split("-")[2]) == int(ids[0].split("-")[2]) + 1


def test_show_table_and_note(shown):
    display.show_table(pd.DataFrame({"a": [1]}), "cap")
    assert shown[-1][0]["text/markdown"].startswith("**cap**") and "<table" in shown[-1][0]["text/html"]
    display.show_table(None, "cap", empty="nothing yet")
    assert shown[-1][0]["text/markdown"] == "_cap: nothing yet_\n"


def test_warnings_go_to_the_page_and_its_metadata(shown):
    display.show_warnings([("a.json", {"warnings": ["w1"]}), ("b.json", {"warnings": ["w1", "w2"]})], "history")
    bundle, metadata = shown[-1]
    assert metadata == {"virnucpro": {"warnings": ["w1", "w2"]}}
    assert bundle["text/markdown"].startswith("> **Warning (history):** w1") and "fff4ce" in bundle["text/html"]
    display.show_warnings(None)
    display.show_warnings([])
    assert len(shown) == 1  # nothing shown without warnings
    display.show_warnings(["plain text"])
    assert shown[-1][1] == {"virnucpro": {"warnings": ["plain text"]}}


def test_provenance_of_a_demo_run_says_pipeline_check(shown, tmp_path):
    run = write_run(tmp_path / "run")
    display.show_provenance(run, "prediction")
    (box, _), (table, metadata) = shown
    assert box["text/markdown"].startswith("> **Pipeline check (demo profile):** The demo profile's encoders")
    assert "not biological" in box["text/html"]
    assert "**Provenance of the prediction" in table["text/markdown"] and "| commit | not recorded in run.json |" \
        in table["text/markdown"]
    assert metadata["virnucpro"]["provenance"][0].startswith("prediction:")
    display.show_warnings(run)
    assert DEMO_WARNING in shown[-1][0]["text/markdown"]


def test_provenance_of_cpu_benchmarks_says_timings_are_not_gpu_performance(shown):
    cpu = fake_result(counts=(1,), tokens_per_s=(10.0,), gpu_name=None)
    display.show_provenance([cpu, fake_result()], "benchmark results")
    (box, _), (table, metadata) = shown
    assert "Pipeline check (CPU)" in box["text/markdown"] and "not GPU performance" in box["text/markdown"]
    assert table["text/markdown"].count("| scaling |") == 2 and len(metadata["virnucpro"]["provenance"]) == 2
    shown.clear()
    display.show_provenance(fake_result(), "scaling result")  # GPU, random profile: no box
    assert len(shown) == 1
    display.show_provenance(None, "results")
    assert shown[-1][0]["text/markdown"].startswith("_no results here yet")


def test_quiet_keeps_output_off_the_page(capsys):
    with display.quiet():
        print("wrote /some/absolute/path")
    assert capsys.readouterr().out == ""
