"""The Python API (``api``) as a notebook uses it: predict -> load_run -> call at two thresholds -> evaluate."""

import numpy as np
import pandas as pd
import pytest

import virnucpro_kernel as vk
from conftest import EXAMPLES
from virnucpro_kernel.errors import VirNucProError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "run"
    return vk.predict(EXAMPLES / "viralverify_test.fa", chunk_size=300, out=out, profile="demo", gpus=0, quiet=True)


def test_top_level_names_are_the_api_functions():
    import virnucpro_kernel.evaluation  # noqa: F401  (importing a submodule must not hide an API function)
    import virnucpro_kernel.prediction  # noqa: F401

    for name in ("prepare", "predict", "load_run", "call", "train", "benchmark", "evaluate", "report"):
        assert callable(getattr(vk, name)) and getattr(vk, name).__module__ == "virnucpro_kernel.api", name


def test_a_notebook_session(run, tmp_path):
    assert isinstance(run, vk.Run) and run.profile == "demo" and run.threshold == 0.5 and run.warnings
    assert run.sequences["sequence_id"].tolist()[0] == "NC_045512.2"
    assert len(run.frames) == run.info["counts"]["frames"] and run.features is None
    again = vk.load_run(run.out)
    pd.testing.assert_frame_equal(again.sequences, run.sequences)
    low, high = run.call(0.0), run.call(1.0)
    assert set(low["call"]) == {"virus"} and set(high["call"]) <= {"others", "virus"}
    np.testing.assert_array_equal(low["score"], run.sequences["score"])  # the score does not depend on t
    # written at another threshold into a new folder, the run itself untouched
    before = (run.out / "sequences.tsv").read_bytes()
    strict = vk.call(run, threshold=0.99, out=tmp_path / "strict")
    assert (run.out / "sequences.tsv").read_bytes() == before
    assert strict.threshold == 0.99 and strict.viral_records().empty
    # the folder of calls reads its frames from the run it was called from: the same tables, and it can be
    # called again or evaluated like the run
    pd.testing.assert_frame_equal(strict.frames, run.frames)
    pd.testing.assert_frame_equal(strict.call(0.5), run.call(0.5))
    assert vk.call(strict, threshold=0.5, out=tmp_path / "again").sequences.equals(run.sequences)
    lenient = vk.call(run.out, threshold=0.0)
    assert lenient.threshold == 0.0
    assert lenient.viral_records()["sequence_id"].tolist() == run.sequences["sequence_id"].tolist()
    assert lenient.info["calls"][-1]["threshold"] == 0.0
    ev = vk.evaluate(lenient, pd.DataFrame({"sequence_id": ["NC_045512.2", "NC_001416.1", "CP045262.1"],
                                            "label": ["virus", "virus", "others"]}))
    assert ev.counts["evaluated"] == 3 and ev.counts["unlabelled"] == 2
    assert ev.threshold == 0.0 and vk.evaluate(run.out, ev.sequences[["sequence_id", "label"]]).threshold == 0.0


def test_evaluate_command_prints_what_it_left_out(run, tmp_path):
    from conftest import run_cli

    labels = tmp_path / "labels.tsv"
    labels.write_text("sequence_id\tlabel\nNC_045512.2\tvirus\nCP045262.1\tothers\nabsent_1\tvirus\n")
    other = tmp_path / "dvf.txt"  # DeepVirFinder's output, with a record the labels do not cover
    other.write_text("name\tlen\tscore\tpvalue\nNC_045512.2\t29903\t0.9\t0.01\nunknown_x\t500\t0.2\t0.5\n")
    r = run_cli("evaluate", run.out, "--truth", labels, "--other", f"DeepVirFinder={other}", "--length-bins",
                "0,1000,20000", "--out", tmp_path / "ev")
    assert r.returncode == 0, r.stderr
    assert "DeepVirFinder" in r.stdout and "3 run record(s) have no label" in r.stdout
    assert "1 labelled ID(s) are not in the run and are left out: absent_1" in r.stdout and "unknown_x" in r.stdout
    by_length = pd.read_csv(tmp_path / "ev" / "by_length.tsv", sep="\t")
    assert by_length["length_bin"].drop_duplicates().tolist() == ["<1k", "1k-20k", ">=20k"]
    comparison = pd.read_csv(tmp_path / "ev" / "comparison.tsv", sep="\t")
    assert comparison["tool"].tolist() == ["VirNucPro", "DeepVirFinder"] and comparison["tp"].dtype == np.int64
    import json

    tools = json.loads((tmp_path / "ev" / "evaluation.json").read_text())["other_tools"]
    assert tools["DeepVirFinder"]["unknown_ids"] == ["unknown_x"]
    assert tools["DeepVirFinder"]["not_reported"] == ["CP045262.1"]
    bad = run_cli("evaluate", run.out, "--truth", labels, "--threshold", "nan", "--out", tmp_path / "ev2")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "between 0 and 1" in bad.stderr
    assert not (tmp_path / "ev2").exists()


def test_call_refuses_a_changed_input(run, tmp_path):
    import json
    import shutil

    src = tmp_path / "in.fa"
    shutil.copy(EXAMPLES / "viralverify_test.fa", src)
    out = tmp_path / "r"
    vk.predict(src, chunk_size=300, out=out, profile="demo", gpus=0, quiet=True)
    src.write_text(src.read_text().replace("ACGT", "ACGA", 1))
    with pytest.raises(VirNucProError, match="input changed"):
        vk.call(out, threshold=0.2)
    src.unlink()
    with pytest.raises(VirNucProError, match="is gone"):
        vk.call(out, threshold=0.2)
    assert json.loads((out / "run.json").read_text())["outputs"]["threshold"] == 0.5
    with pytest.raises(VirNucProError, match="no finished run"):
        vk.load_run(tmp_path)
