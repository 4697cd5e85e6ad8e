"""Evaluation against labels: metrics pinned against scikit-learn, hand-counted cases and brute force."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from conftest import ROOT
from virnucpro_kernel.reports.plots import evaluation as evaluation_plots
from virnucpro_kernel.errors import InputError, VirNucProError
from virnucpro_kernel.evaluation import DEFAULT_LENGTH_BINS, Evaluation, demo_truth, evaluate, read_truth
from virnucpro_kernel.metrics import Scores, average_precision, auroc, curves
from virnucpro_kernel.outputs import write_outputs

# --------------------------------------------------------------------------------------------------- helpers
# A small run, worked out by hand. Chunk maxima of P(virus) (NaN: a chunk without a frame):
#   A (virus,  700 bp): chunk 1 0.9, chunk 2 0.4, chunk 3 none   -> sequence score mean(0.9, 0.4) = 0.65
#   B (others, 1200 bp): chunk 1 0.6, chunk 2 0.4                 -> 0.5
#   C (virus,  300 bp): chunk 1 0.7                               -> 0.7
#   D (others, 250 bp): chunk 1 none                              -> no_frames
#   E (no label, 400 bp): chunk 1 0.8                             -> unlabelled
# and a label for F, which the run does not have (missing).
FRAMES = {  # (sequence, chunk): P(virus) of each kept frame
    ("A", 1): [0.9, 0.2], ("A", 2): [0.4, 0.1],
    ("B", 1): [0.6], ("B", 2): [0.25, 0.4, 0.3],
    ("C", 1): [0.7],
    ("E", 1): [0.8],
}
RECORDS = [("A", 700, 3), ("B", 1200, 2), ("C", 300, 1), ("D", 250, 1), ("E", 400, 1)]
LABELS = pd.DataFrame({"sequence_id": ["A", "B", "C", "D", "F"],
                       "label": ["virus", "others", "virus", "others", "virus"]})


def run_tables(frames_spec=FRAMES, records=RECORDS):
    rec = pd.DataFrame({"record_index": np.arange(len(records)), "sequence_id": [r[0] for r in records],
                        "length": [r[1] for r in records], "chunks": [r[2] for r in records]})
    index = dict(zip(rec["sequence_id"], rec["record_index"]))
    rows = []
    for (sid, chunk), probs in sorted(frames_spec.items(), key=lambda kv: (index[kv[0][0]], kv[0][1])):
        for frame, p in zip(("F1", "F2", "F3", "R1", "R2", "R3"), probs):
            rows.append((index[sid], sid, chunk, frame, 1 - p, p))
    frames = pd.DataFrame(rows, columns=["record_index", "sequence_id", "chunk", "frame", "p_others", "p_virus"])
    return frames, rec


def write_run(path, threshold=0.6, **kwargs):
    frames, rec = run_tables(**kwargs)
    write_outputs(path, frames, rec, threshold=threshold, profile="demo", run_info={"parameters": {"threshold": threshold}})
    return path


class RunObject:
    def __init__(self, sequences, frames, run=None):
        self.sequences, self.frames, self.run = sequences, frames, run or {}


def sk_scores(scores: Scores):
    """The same scores for scikit-learn: unscored records below every score."""
    return scores.y, np.where(np.isnan(scores.score), -1.0, scores.score)


# --------------------------------------------------------------------------------------------------- hand-counted
def test_chunk_curve_matches_hand_computed_points(tmp_path):
    ev = evaluate(write_run(tmp_path / "run"), LABELS)
    # chunks: virus A1 .9, A2 .4, A3 -, C1 .7 (P = 4); others B1 .6, B2 .4, D1 - (N = 3)
    expected = [(0, 0), (0, 1 / 4), (0, 2 / 4), (1 / 3, 2 / 4), (2 / 3, 3 / 4), (1, 1)]  # (FPR, TPR)
    got = list(zip(ev.chunk_roc["fpr"], ev.chunk_roc["tpr"]))
    assert np.allclose(got, expected)
    assert np.allclose(ev.chunk_roc["threshold"].to_numpy()[1:-1], [0.9, 0.7, 0.6, 0.4], atol=1e-6)
    assert ev.chunk_roc["threshold"].iloc[0] == np.inf and ev.chunk_roc["threshold"].iloc[-1] == -np.inf
    # area: 0 + 1/3 * 1/2 + 1/3 * (1/2 + 3/4) / 2 + 1/3 * (3/4 + 1) / 2 = 2/3
    assert ev.chunk_auroc == pytest.approx(2 / 3)
    # average precision: recall steps of 1/4 at precision 1, 1, 3/5 and 4/7 (the last: unscored chunks)
    assert ev.chunk_auprc == pytest.approx(0.25 + 0.25 + 0.25 * 3 / 5 + 0.25 * 4 / 7)
    y, s = sk_scores(ev.scores("chunk"))
    assert ev.chunk_auroc == pytest.approx(roc_auc_score(y, s))
    assert ev.chunk_auprc == pytest.approx(average_precision_score(y, s))


def test_chunks_inherit_labels_and_take_their_best_frame(tmp_path):
    ev = evaluate(write_run(tmp_path / "run"), LABELS)
    chunks = ev.chunks.set_index(["sequence_id", "chunk"])
    assert chunks.loc[("A", 1), "score"] == pytest.approx(0.9)
    assert chunks.loc[("B", 2), "score"] == pytest.approx(0.4)
    assert math.isnan(chunks.loc[("A", 3), "score"]) and math.isnan(chunks.loc[("D", 1), "score"])
    assert chunks["label"].to_dict() == {("A", 1): "virus", ("A", 2): "virus", ("A", 3): "virus", ("B", 1): "others",
                                         ("B", 2): "others", ("C", 1): "virus", ("D", 1): "others"}
    assert ev.counts["chunks_without_frames"] == 2


def test_at_matches_hand_counted_confusion(tmp_path):
    ev = evaluate(write_run(tmp_path / "run", threshold=0.6), LABELS)
    assert ev.threshold == 0.6  # from run.json
    point = ev.at()  # A 0.65 virus, B 0.5 others, C 0.7 virus, D no frame (others)
    assert (point.tp, point.fp, point.fn, point.tn) == (2, 0, 0, 2)
    assert (point.precision, point.recall, point.f1) == (1.0, 1.0, 1.0)
    point = ev.at(0.45)  # B joins
    assert (point.tp, point.fp, point.fn, point.tn) == (2, 1, 0, 1)
    assert point.precision == pytest.approx(2 / 3) and point.f1 == pytest.approx(0.8)
    point = ev.at(0.5, level="chunk")  # A1 TP, A2 FN, A3 FN (no frame), C1 TP, B1 FP, B2 TN, D1 TN
    assert (point.tp, point.fp, point.fn, point.tn) == (2, 1, 2, 2)
    assert point.confusion().loc["virus", "others"] == 2
    point = ev.at(0.0)  # even at 0 the no_frames record is not called virus
    assert (point.tp, point.fp, point.fn, point.tn) == (2, 1, 0, 1)
    point = ev.at(0.95)
    assert (point.tp, point.fp) == (0, 0) and math.isnan(point.precision) and point.recall == 0


def test_unlabelled_and_missing_are_reported_not_dropped(tmp_path):
    ev = evaluate(write_run(tmp_path / "run"), LABELS)
    assert ev.unlabelled["sequence_id"].tolist() == ["E"]
    assert ev.missing["sequence_id"].tolist() == ["F"]
    assert ev.counts == {"run_records": 5, "label_records": 5, "evaluated": 4, "unlabelled": 1, "missing": 1,
                         "no_frames": 1, "chunks": 7, "chunks_without_frames": 2}
    notes = " ".join(ev.notes())
    assert "1 run record(s) have no label" in notes and "1 labelled ID(s) are not in the run" in notes
    assert "E" not in set(ev.chunks["sequence_id"])


def test_no_frames_are_predicted_others_and_reported_separately(tmp_path):
    ev = evaluate(write_run(tmp_path / "run"), LABELS)
    nf = ev.no_frames.set_index("length_bin")
    assert nf.loc["all", "others_no_frames"] == 1 and nf.loc["all", "virus_no_frames"] == 0
    assert nf.loc["<500", "others_no_frames"] == 1 and nf.loc["<500", "others_no_frames_share"] == 1.0
    assert nf.loc["<500", "virus_no_frames_share"] == 0.0 and math.isnan(nf.loc["3k-10k", "virus_no_frames_share"])
    assert ev.no_frames_records["sequence_id"].tolist() == ["D"]
    summary = ev.summary().set_index("level")
    assert summary.loc["sequence", "records"] == 4 and summary.loc["sequence", "unscored"] == 1
    assert summary.loc["sequence (scored only)", "records"] == 3
    # scores A .65 (v), B .5 (o), C .7 (v), D none (o): every virus above every other -> AUROC 1
    assert summary.loc["sequence", "auroc"] == 1.0 and ev.auprc == 1.0
    assert ev.roc["threshold"].iloc[-1] == -np.inf  # the closing point counts D as virus; no real threshold does


# --------------------------------------------------------------------------------------------------- vs scikit-learn
def _random_case(seed, n=200, tie_digits=1, unscored=0.1):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.4
    s = np.round(np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1), tie_digits)  # rounding makes many ties
    s[rng.random(n) < unscored] = np.nan
    return y, s


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("digits", [1, 2, 6])
def test_auroc_and_average_precision_match_sklearn_with_ties(seed, digits):
    y, s = _random_case(seed, tie_digits=digits, unscored=0.1 if seed % 2 else 0.0)
    c = curves(y, s)
    s_sk = np.where(np.isnan(s), -1.0, s)
    assert auroc(c) == pytest.approx(roc_auc_score(y, s_sk), abs=1e-12)
    assert average_precision(c) == pytest.approx(average_precision_score(y, s_sk), abs=1e-12)
    fpr, tpr, _ = roc_curve(y, s_sk, drop_intermediate=False)
    assert np.allclose(c["fpr"], fpr) and np.allclose(c["tpr"], tpr)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.one_of(st.none(), st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.5, 0.75, 1.0]))),
                min_size=2, max_size=40))
def test_metrics_match_sklearn_on_any_small_case(pairs):
    y = np.array([p[0] for p in pairs])
    s = np.array([np.nan if p[1] is None else p[1] for p in pairs], dtype=float)
    c = curves(y, s)
    s_sk = np.where(np.isnan(s), -1.0, s)
    if y.all() or not y.any():
        assert math.isnan(auroc(c))
    else:
        assert auroc(c) == pytest.approx(roc_auc_score(y, s_sk), abs=1e-12)
    if y.any():
        assert average_precision(c) == pytest.approx(average_precision_score(y, s_sk), abs=1e-12)
    else:
        assert math.isnan(average_precision(c))


@pytest.mark.slow
def test_sequence_metrics_on_the_demo_run_match_sklearn(demo_run):
    ev = evaluate(demo_run, demo_truth().labels)
    for level in ("sequence", "chunk"):
        y, s = sk_scores(ev.scores(level))
        assert ev.scores(level).auroc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert ev.scores(level).auprc == pytest.approx(average_precision_score(y, s), abs=1e-12)


# --------------------------------------------------------------------------------------------------- threshold_for
def _brute_force(scores: Scores, precision=None, recall=None):
    best = None
    for t in np.unique(scores.score[~np.isnan(scores.score)]):
        p = scores.at(t)
        if precision is not None and not math.isnan(p.precision) and p.precision >= precision:
            best = t if best is None else min(best, t)
        if recall is not None and p.recall >= recall:
            best = t if best is None else max(best, t)
    return best


@pytest.mark.parametrize("seed", range(4))
def test_threshold_for_matches_brute_force(seed):
    y, s = _random_case(seed, n=120, tie_digits=2, unscored=0.05)
    sc = Scores(pd.DataFrame({"label": np.where(y, "virus", "others"), "score": s}))
    for target in (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0):
        assert sc.threshold_for(precision=target) == _brute_force(sc, precision=target)
        assert sc.threshold_for(recall=target) == _brute_force(sc, recall=target)


def test_threshold_for_returns_none_when_unreachable(tmp_path):
    labels = LABELS.assign(label=["virus", "others", "virus", "virus", "virus"])  # D (no frame) is now a virus
    ev = evaluate(write_run(tmp_path / "run"), labels)
    assert ev.threshold_for(recall=1.0) is None  # D can never be called virus: at most A and C, 2 of 3
    assert ev.threshold_for(recall=0.75) is None
    assert ev.threshold_for(recall=0.6) == pytest.approx(0.65)  # the highest threshold that calls A and C
    sc = Scores(pd.DataFrame({"label": ["others", "virus"], "score": [0.9, 0.2]}))
    assert sc.threshold_for(precision=1.0) is None  # the top record is not a virus, and 1/2 < 1 below it
    assert sc.threshold_for(precision=0.5) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        sc.threshold_for(precision=0.5, recall=0.5)
    with pytest.raises(ValueError):
        sc.threshold_for(recall=1.5)


# --------------------------------------------------------------------------------------------------- length bins
def test_default_and_custom_length_bins(tmp_path):
    run = write_run(tmp_path / "run")
    ev = evaluate(run, LABELS)
    assert DEFAULT_LENGTH_BINS == (0, 500, 1000, 3000, 10000)
    table = ev.by_length()
    assert table["length_bin"].tolist() == ["<500", "500-1k", "1k-3k", "3k-10k", ">=10k"]
    assert table["records"].tolist() == [2, 1, 1, 0, 0]  # C 300 + D 250, A 700, B 1200
    assert table.set_index("length_bin").loc["<500", "unscored"] == 1
    ev = evaluate(run, LABELS, length_bins=[600, 1000])
    table = ev.by_length(threshold=0.6)
    assert table["length_bin"].tolist() == ["<600", "600-1k", ">=1k"]
    assert table["records"].tolist() == [2, 1, 1]
    assert table["tp"].tolist() == [1, 1, 0] and table["tn"].tolist() == [1, 0, 1]
    chunks = ev.by_length(level="chunk")
    assert chunks["records"].tolist() == [2, 3, 2]  # a chunk goes to its sequence's bin
    other = evaluate(run, LABELS).by_length(threshold=0.6, bins=[600, 1000])  # bins chosen for one table
    assert other.equals(table)
    for bad in ([1000, 500], [-5, 100], [float("nan")]):
        with pytest.raises(VirNucProError, match="increasing lengths"):
            evaluate(run, LABELS, length_bins=bad)


def test_thresholds_outside_0_1_are_refused_in_one_line(tmp_path):
    ev = evaluate(write_run(tmp_path / "run"), LABELS)
    for bad in (float("nan"), 2, -0.1, "0.5", True):
        with pytest.raises(VirNucProError, match="between 0 and 1"):
            ev.at(bad)
        with pytest.raises(VirNucProError, match="between 0 and 1"):
            evaluate(tmp_path / "run", LABELS, threshold=bad)


# --------------------------------------------------------------------------------------------------- inputs
def test_run_object_and_threshold_from_its_run_info(tmp_path):
    frames, rec = run_tables()
    from virnucpro_kernel.calls import sequence_calls

    seqs = sequence_calls(frames, rec, 0.5)
    ev = evaluate(RunObject(seqs, frames, run={"parameters": {"threshold": 0.55}}), LABELS)
    assert isinstance(ev, Evaluation) and ev.threshold == 0.55
    folder = evaluate(write_run(tmp_path / "run"), LABELS)
    assert ev.auroc == folder.auroc and ev.chunk_auprc == pytest.approx(folder.chunk_auprc)
    assert evaluate(RunObject(seqs, frames), LABELS).threshold == 0.5  # unknown: 0.5
    assert evaluate(RunObject(seqs, frames), LABELS, threshold=0.3).threshold == 0.3
    with pytest.raises(TypeError):
        evaluate(object(), LABELS)


def test_truth_from_tsv_fasta_pair_and_dataframe(tmp_path):
    tsv = tmp_path / "labels.tsv"
    tsv.write_text("sequence_id\tlabel\tnote\nA\tvirus\tx\nB\t Others \ty\nNA\tothers\tz\n")
    t = read_truth(tsv)
    assert t.to_dict("list") == {"sequence_id": ["A", "B", "NA"], "label": ["virus", "others", "others"]}
    (tmp_path / "v.fa").write_text(">A desc\nACGT\n>C\nAC\n")
    (tmp_path / "o.fa").write_text(">B\nACGT\n")
    t = read_truth((tmp_path / "v.fa", tmp_path / "o.fa"))
    assert dict(zip(t["sequence_id"], t["label"])) == {"A": "virus", "C": "virus", "B": "others"}
    (tmp_path / "o2.fa").write_text(">B\nACGT\n>A\nAC\n")
    with pytest.raises(InputError, match="record 'A'"):
        read_truth((tmp_path / "v.fa", tmp_path / "o2.fa"))


@pytest.mark.parametrize("label", ["viral", "bacteria", "", "1"])
def test_a_label_outside_virus_others_is_a_one_line_input_error(tmp_path, label):
    tsv = tmp_path / "labels.tsv"
    tsv.write_text(f"sequence_id\tlabel\nA\tvirus\nB\t{label}\n")
    with pytest.raises(InputError) as exc:
        read_truth(tsv)
    assert "\n" not in str(exc.value)
    assert str(exc.value).startswith(str(tsv)) and "record 'B'" in str(exc.value)
    assert exc.value.record == "B" and "not virus or others" in str(exc.value)


def test_labels_table_problems_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="sequence_id listed twice"):
        read_truth(pd.DataFrame({"sequence_id": ["A", "A"], "label": ["virus", "virus"]}))
    with pytest.raises(InputError, match="missing label"):
        read_truth(pd.DataFrame({"sequence_id": ["A"]}))
    with pytest.raises(InputError, match="not found"):
        read_truth(tmp_path / "nope.tsv")
    with pytest.raises(InputError, match="not a prediction folder"):
        evaluate(tmp_path, LABELS)


# --------------------------------------------------------------------------------------------------- outputs
def test_summary_comparison_and_json(tmp_path):
    others = {"calls only": pd.DataFrame({"sequence_id": ["A", "B", "Z"], "call": ["virus", "virus", "virus"]}),
              "scores only": pd.DataFrame({"sequence_id": ["A", "B", "C", "D"], "score": [0.9, 0.1, 0.2, 0.3]})}
    ev = evaluate(write_run(tmp_path / "run"), LABELS, others=others)
    table = ev.comparison().set_index("tool")
    assert table.index.tolist() == ["VirNucPro", "calls only", "scores only"]
    row = table.loc["calls only"]  # A TP, B FP, C and D unreported: C FN, D TN; Z is not an evaluated record
    assert (row["tp"], row["fp"], row["fn"], row["tn"], row["reported"]) == (1, 1, 1, 1, 2)
    assert math.isnan(row["auroc"]) and math.isnan(row["threshold"])
    assert ev.peers["calls only"].unknown["sequence_id"].tolist() == ["Z"]
    row = table.loc["scores only"]  # no calls: the 0.5 operating point; virus A .9, C .2; others B .1, D .3
    assert row["threshold"] == 0.5 and (row["tp"], row["fp"]) == (1, 0)
    assert row["auroc"] == pytest.approx(roc_auc_score([1, 0, 1, 0], [0.9, 0.1, 0.2, 0.3]))
    data = json.loads(json.dumps(ev.to_dict(curves=True)))
    assert data["counts"]["unlabelled"] == 1 and data["missing"] == ["F"]
    assert data["comparison"][1]["auroc"] is None
    assert data["curves"]["sequence"]["threshold"][-1] is None  # -inf is not JSON
    assert "peer:scores only" in data["curves"] and "summary" in data and "by_length" in data
    assert "Evaluation(4 labelled sequences" in repr(ev)


def test_figures_draw_and_say_when_empty(tmp_path):
    others = {"calls only": pd.DataFrame({"sequence_id": ["A", "B"], "call": ["virus", "others"]}),
              "scores": pd.DataFrame({"sequence_id": ["A", "B", "C"], "score": [0.9, 0.1, 0.2]})}
    ev = evaluate(write_run(tmp_path / "run"), LABELS, others=others)
    for fig in (evaluation_plots.roc_curve(ev), evaluation_plots.pr_curve(ev), evaluation_plots.metrics_by_length(ev),
                evaluation_plots.score_distributions(ev), evaluation_plots.roc_curve(ev, level="chunk"),
                evaluation_plots.score_distributions(ev, level="chunk"), evaluation_plots.comparison_bars(ev),
                evaluation_plots.overview(ev)):
        assert len(fig.data) > 0
    names = [t.name for t in evaluation_plots.roc_curve(ev).data]
    assert any(n.startswith("VirNucPro (AUROC") for n in names) and any(n.startswith("scores (AUROC") for n in names)
    assert "calls only: own calls" in names
    only_virus = evaluate(write_run(tmp_path / "run2"), LABELS.assign(label="virus"))
    assert "needs both" in evaluation_plots.roc_curve(only_virus).layout.annotations[0].text
    from virnucpro_kernel.reports.figure import to_png

    assert to_png(evaluation_plots.metrics_by_length(ev))[:4] == b"\x89PNG"


# --------------------------------------------------------------------------------------------------- demo set
@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    from conftest import run_cli

    out = tmp_path_factory.mktemp("demo_eval") / "run"
    proc = run_cli("predict", demo_truth().fasta, "--chunk-size", "300", "--out", out, "--gpus", "0",
                   "--profile", "demo")
    assert proc.returncode == 0, proc.stderr
    return out


def test_demo_truth_is_complete_and_valid():
    paths = demo_truth()
    assert paths.fasta.is_file() and paths.labels.is_file() and (paths.fasta.parent / "README.md").is_file()
    labels = read_truth(paths.labels)
    ids = [line[1:].split()[0] for line in paths.fasta.read_text().splitlines() if line.startswith(">")]
    assert sorted(ids) == sorted(labels["sequence_id"])
    table = pd.read_csv(paths.labels, sep="\t")
    assert set(table["label"]) == {"virus", "others"}
    bins = pd.cut(table["length"], [0, 500, 1000, 3000, 10000, np.inf], right=False)
    assert (table.groupby([bins, "label"], observed=False).size() > 0).all()  # both labels in every default bin
    readme = (paths.fasta.parent / "README.md").read_text()
    for acc in table["accession"].unique():
        assert acc.split("_length")[0] in readme


def test_demo_set_is_held_out_of_the_demo_training_data():
    comp = str.maketrans("ACGT", "TGCA")
    k = 24

    def seqs(path):
        out, cur = [], []
        for line in path.read_text().splitlines():
            if line.startswith(">"):
                if cur:
                    out.append("".join(cur).upper())
                cur = []
            else:
                cur.append(line.strip())
        return out + ["".join(cur).upper()] if cur else out

    demo = ROOT / "virnucpro_kernel" / "data" / "demo"
    kmers = set()
    for s in seqs(demo / "virus.fa") + seqs(demo / "host.fa"):
        for t in (s, s.translate(comp)[::-1]):
            kmers.update(t[i:i + k] for i in range(len(t) - k + 1))
    for s in seqs(demo_truth().fasta):
        assert not any(s[i:i + k] in kmers for i in range(len(s) - k + 1))


@pytest.mark.slow
def test_evaluate_the_demo_run(demo_run):
    ev = evaluate(demo_run, demo_truth().labels)
    assert ev.counts["evaluated"] == 38 and ev.counts["unlabelled"] == 0 and ev.counts["missing"] == 0
    table = ev.by_length()
    assert (table["virus"] > 0).all() and (table["others"] > 0).all()
    assert 0.0 <= ev.auroc <= 1.0 and 0.0 <= ev.chunk_auprc <= 1.0
    calls = pd.read_csv(demo_run / "sequences.tsv", sep="\t", keep_default_na=False)
    point = ev.at()  # the run's own calls, recounted
    labels = read_truth(demo_truth().labels).set_index("sequence_id")["label"]
    virus = calls["sequence_id"].map(labels).eq("virus")
    called = calls["call"].eq("virus")
    assert point.tp == int((virus & called).sum()) and point.fp == int((~virus & called).sum())
