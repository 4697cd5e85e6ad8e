"""A notebook session on the demo profile, as a user would type it: predict, read the run back, call it at two
thresholds, show the tables and figures, evaluate it against labels."""

from __future__ import annotations

import pandas as pd
import pytest

import virnucpro_kernel as vk
from reports_fixtures import png_size
from virnucpro_kernel.evaluation import demo_truth
from virnucpro_kernel.reports import plots, tables


@pytest.mark.slow
def test_predict_load_call_at_two_thresholds_and_draw(tmp_path):
    fasta, labels = demo_truth()
    ids = pd.read_csv(labels, sep="\t")["sequence_id"].head(8).tolist()
    records = open(fasta).read().split(">")[1:]
    small = tmp_path / "small.fa"
    small.write_text("".join(">" + r for r in records if r.split()[0] in ids))

    made = vk.predict(small, chunk_size=300, out=tmp_path / "run", profile="demo", gpus=0, threshold=0.5, force=True,
                      quiet=True)
    run = vk.load_run(tmp_path / "run")
    assert run.threshold == made.threshold == 0.5 and run.profile == "demo" and len(run.sequences) == 8
    assert tables.caveat(run) == "pipeline check (demo profile)"

    scores = run.sequences["score"].dropna().sort_values()
    lower = float(scores.iloc[len(scores) // 2])  # about half the scored records reach it
    counts = {}
    for threshold in (0.5, lower):
        calls = tables.calls_at(run, threshold)
        assert (tables.check_prediction(run, calls, threshold, small)["passed"] != "NO").all()
        hits = tables.viral_hits(run, calls)
        counts[threshold] = len(hits)
        assert set(hits["sequence_id"]) == set(calls.loc[calls["call"] == "virus", "sequence_id"])
        for fig in (plots.score_histogram(run, calls, threshold), plots.calls_per_record(run, calls),
                    plots.chunk_track(run, calls, threshold)):
            assert len(fig.data) and fig.layout.title.text.startswith("[pipeline check (demo profile)]")
            assert png_size(fig.to_png())[0] >= 600 and "Plotly.newPlot" in fig.to_div()
    assert counts[lower] >= counts[0.5] and counts[lower] >= len(scores) // 2
    assert list(run.sequences["call"]) == list(vk.load_run(tmp_path / "run").sequences["call"])  # nothing written

    ev = vk.evaluate(run, labels, threshold=lower)
    assert ev.counts["evaluated"] == 8 and ev.counts["missing"] == len(pd.read_csv(labels, sep="\t")) - 8
    assert (tables.check_evaluation(ev)["passed"] == "yes").all()
    assert len(plots.overview(ev, "chunk", tables.caveat(run)).data)
