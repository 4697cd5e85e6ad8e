"""Importers of other tools' outputs: small files in each tool's own format, IDs mapped back to the input's."""

import math

import numpy as np
import pandas as pd
import pytest

from virnucpro_kernel import peers
from virnucpro_kernel.errors import InputError
from virnucpro_kernel.evaluation import evaluate


def write(path, header, rows):
    """A tab-separated file exactly as the tools write them: header line, one line per row, final newline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    return path


def by_id(table):
    return table.set_index("sequence_id")


# --------------------------------------------------------------------------------------------------- geNomad
GENOMAD_SUMMARY = ["seq_name", "length", "topology", "coordinates", "n_genes", "genetic_code", "virus_score", "fdr",
                   "n_hallmarks", "marker_enrichment", "taxonomy"]
GENOMAD_AGGREGATED = ["seq_name", "chromosome_score", "plasmid_score", "virus_score"]


def genomad_summary(path):
    return write(path, GENOMAD_SUMMARY, [
        ("ctg1|provirus_2885510_2934610", 49101, "Provirus", "2885510-2934610", 69, 11, "0.9776", "NA", 13, "76.0892",
         "Viruses;Duplodnaviria;Heunggongvirae;Uroviricota;Caudoviricetes"),
        ("ctg1|provirus_3855947_3906705", 50759, "Provirus", "3855947-3906705", 79, 11, "0.9801", "NA", 14, "75.1552",
         "Viruses;Duplodnaviria;Heunggongvirae;Uroviricota;Caudoviricetes"),
        ("phage_2", 51887, "No terminal repeats", "NA", 57, 11, "0.9774", "NA", 14, "67.7749", "Unclassified"),
        ("read|with|bars", 3000, "DTR", "NA", 4, 11, "0.8100", "NA", 1, "3.0000", "NA"),
    ])


def genomad_aggregated(path):
    return write(path, GENOMAD_AGGREGATED, [
        ("ctg1", "0.9012", "0.0123", "0.0865"),
        ("phage_2", "0.0100", "0.0200", "0.9700"),
        ("plasmid_3", "0.1000", "0.8000", "0.1000"),
        ("weak_4", "0.3000", "0.1000", "0.6000"),  # virus is the top class but below geNomad's 0.7
        ("read|with|bars", "0.1000", "0.1100", "0.7900"),
    ])


def test_genomad_virus_summary_maps_proviruses_back_to_their_sequence(tmp_path):
    table = by_id(peers.genomad(genomad_summary(tmp_path / "x_summary" / "x_virus_summary.tsv")))
    assert sorted(table.index) == ["ctg1", "phage_2", "read|with|bars"]  # only the suffix is removed
    assert table.loc["ctg1", "score"] == pytest.approx(0.9801)  # the higher of its two proviruses
    assert table.loc["ctg1", "rows"] == 2
    assert table.loc["ctg1", "tool_ids"] == "ctg1|provirus_2885510_2934610;ctg1|provirus_3855947_3906705"
    assert (table["call"] == "virus").all()


def test_genomad_aggregated_classification_calls_the_top_class_above_min_score(tmp_path):
    path = genomad_aggregated(tmp_path / "x_aggregated_classification.tsv")
    table = by_id(peers.genomad(path))
    assert table["call"].to_dict() == {"ctg1": "others", "phage_2": "virus", "plasmid_3": "others", "weak_4": "others",
                                       "read|with|bars": "virus"}
    assert table.loc["ctg1", "score"] == pytest.approx(0.0865)
    assert by_id(peers.genomad(path, min_score=0.0)).loc["weak_4", "call"] == "virus"  # like --relaxed


def test_genomad_output_folder_takes_scores_from_aggregated_and_calls_from_summary(tmp_path):
    out = tmp_path / "genomad_output"
    genomad_summary(out / "x_summary" / "x_virus_summary.tsv")
    genomad_aggregated(out / "x_aggregated_classification" / "x_aggregated_classification.tsv")
    write(out / "x_aggregated_classification" / "x_provirus_aggregated_classification.tsv", GENOMAD_AGGREGATED,
          [("ctg1|provirus_2885510_2934610", "0.01", "0.01", "0.98")])
    table = by_id(peers.genomad(out))
    assert sorted(table.index) == ["ctg1", "phage_2", "plasmid_3", "read|with|bars", "weak_4"]
    assert table["call"].to_dict() == {"ctg1": "virus", "phage_2": "virus", "plasmid_3": "others", "weak_4": "others",
                                       "read|with|bars": "virus"}
    assert table.loc["ctg1", "score"] == pytest.approx(0.9801)  # called through a provirus: its score
    assert table.loc["plasmid_3", "score"] == pytest.approx(0.1)
    assert peers.detect(out) == "genomad"


# --------------------------------------------------------------------------------------------------- VirSorter2
VS2 = ["seqname", "dsDNAphage", "ssDNA", "max_score", "max_score_group", "length", "hallmark", "viral", "cellular"]


def vs2_table(path):
    return write(path, VS2, [
        ("ctg1_len=102949||full", "0.993", "0.153", "0.993", "dsDNAphage", 101294, 64, "75.800", "0.600"),
        ("ctg6||lt2gene", "0.967", "0.733", "0.967", "dsDNAphage", 3585, 1, "50.000", "0.000"),
        ("host_7||0_partial", "0.873", "0.120", "0.873", "dsDNAphage", 40311, 5, "20.000", "4.000"),
        ("host_7||1_partial", "0.951", "nan", "0.951", "dsDNAphage", 30100, 7, "30.000", "2.000"),
        ("plain_name", "0.700", "0.600", "0.700", "dsDNAphage", 9000, 0, "10.000", "0.000"),
    ])


def test_virsorter2_suffixes_are_removed_and_partials_merged(tmp_path):
    table = by_id(peers.virsorter2(vs2_table(tmp_path / "final-viral-score.tsv")))
    assert sorted(table.index) == ["ctg1_len=102949", "ctg6", "host_7", "plain_name"]
    assert table.loc["host_7", "score"] == pytest.approx(0.951) and table.loc["host_7", "rows"] == 2
    assert table.loc["ctg6", "tool_ids"] == "ctg6||lt2gene"
    assert (table["call"] == "virus").all()
    folder = tmp_path / "vs2-out"
    vs2_table(folder / "final-viral-score.tsv")
    assert by_id(peers.virsorter2(folder)).equals(table)
    assert peers.detect(folder) == "virsorter2" and peers.detect(folder / "final-viral-score.tsv") == "virsorter2"


# --------------------------------------------------------------------------------------------------- DeepVirFinder
def test_deepvirfinder_keeps_the_whole_header_and_matches_its_first_word(tmp_path):
    path = write(tmp_path / "contigs.fa_gt1bp_dvfpred.txt", ["name", "len", "score", "pvalue"], [
        ("gi|674660337|ref|NC_024711.1| Uncultured phage crAssphage, complete genome", 97065, "0.9978806972503662",
         "0.004702016768638115"),
        ("read_2 some description", 300, "0.41", "0.31"),
        ("read_3", 1000, "0.62", "0.08"),
    ])
    table = by_id(peers.deepvirfinder(path))
    assert sorted(table.index) == ["gi|674660337|ref|NC_024711.1|", "read_2", "read_3"]
    assert table.loc["read_2", "tool_ids"] == "read_2 some description"
    assert table["call"].to_dict() == {"gi|674660337|ref|NC_024711.1|": "virus", "read_2": "others", "read_3": "virus"}
    assert table.loc["read_3", "score"] == pytest.approx(0.62)
    strict = by_id(peers.deepvirfinder(path, threshold=0.5, max_pvalue=0.05))
    assert strict.loc["read_3", "call"] == "others"
    assert by_id(peers.deepvirfinder(path, threshold=0.9))["call"].tolist().count("virus") == 1
    assert peers.detect(path) == "deepvirfinder"


# --------------------------------------------------------------------------------------------------- Jaeger
JAEGER_V11 = ["contig_id", "length", "prediction", "entropy", "realiability_score", "host_contam", "prophage_contam",
              "#_Bacteria_windows", "#_Phage_windows", "#_Eukarya_windows", "#_Archaea_windows", "Bacteria_score",
              "Bacteria_var", "Phage_score", "Phage_var", "Eukarya_score", "Eukarya_var", "Archaea_score",
              "Archaea_var", "window_summary"]
JAEGER_NOW = ["contig_id", "length", "prediction", "entropy", "reliability_score", "host_contam", "prophage_contam",
              "G+C", "N%", "prediction_2", "#_bacteria_windows", "#_phage_windows", "#_eukarya_windows",
              "#_archaea_windows", "bacteria_score", "bacteria_var", "phage_score", "phage_var", "eukarya_score",
              "eukarya_var", "archaea_score", "archaea_var", "window_summary", "terminal_repeats", "repeat_length"]


def softmax_phage(bacteria, phage, eukarya, archaea):
    e = np.exp(np.array([bacteria, phage, eukarya, archaea]) - max(bacteria, phage, eukarya, archaea))
    return e[1] / e.sum()


def test_jaeger_v1_1_table(tmp_path):
    path = write(tmp_path / "contigs_default_jaeger.tsv", JAEGER_V11, [
        ("NODE_94_length_44776_cov_27.159388", 44776, "Phage", 0.385, 0.719, "False", "False", 2, 19, 0, 0, 0.966,
         1.27, 3.66, 1.679, -5.832, 2.477, -3.199, 1.619, "5V1n14V1n"),
        ("seq_2 Escherichia coli chromosome part", 30000, "Non-phage", 0.1, 0.9, "False", "True", 14, 0, 0, 0, 5.1,
         0.4, -1.2, 0.3, -6.0, 1.0, -3.0, 0.5, "14n"),
    ])
    table = by_id(peers.jaeger(path))
    assert table["call"].to_dict() == {"NODE_94_length_44776_cov_27.159388": "virus", "seq_2": "others"}
    assert table.loc["NODE_94_length_44776_cov_27.159388", "score"] == pytest.approx(
        softmax_phage(0.966, 3.66, -5.832, -3.199))
    assert table.loc["seq_2", "score"] == pytest.approx(softmax_phage(5.1, -1.2, -6.0, -3.0))
    assert peers.detect(path) == "jaeger"


def test_jaeger_current_table(tmp_path):
    path = write(tmp_path / "ERZ_FASTA.fasta_default_jaeger.tsv", JAEGER_NOW, [
        ("ERZ773086.38-NODE-38-length-126097-cov-67.097571", 126097, "phage", "0.025", "0.944", "False", "False",
         "0.426", "0.000", "bacteria", 0, 61, 0, 0, "-1.965", "1.341", "6.703", "2.453", "-7.020", "3.678", "-5.344",
         "1.307", "61V", "ITR", "13.000"),
        ("ERZ773086.13-NODE-13-length-187045-cov-10.251874", 187045, "non-phage", "0.076", "0.976", "False", "True",
         "0.656", "0.000", "", 91, 0, 0, 0, "6.285", "1.172", "0.247", "0.727", "-7.461", "2.764", "-3.883", "0.464",
         "91n", "", ""),
    ])
    table = peers.jaeger(path)
    assert table["call"].tolist() == ["virus", "others"]
    assert table["score"].iloc[0] == pytest.approx(softmax_phage(-1.965, 6.703, -7.020, -5.344))
    assert table["score"].iloc[0] > 0.99 and table["score"].iloc[1] < 0.01


# --------------------------------------------------------------------------------------------------- any tool
def test_load_dispatches_and_rejects_unknown_tables(tmp_path):
    vs2 = vs2_table(tmp_path / "final-viral-score.tsv")
    assert peers.load(vs2).equals(peers.virsorter2(vs2))
    assert peers.load(vs2, tool="VirSorter2").equals(peers.virsorter2(vs2))
    other = write(tmp_path / "other.tsv", ["id", "value"], [("a", 1)])
    with pytest.raises(InputError, match="not a recognised"):
        peers.load(other)
    with pytest.raises(InputError, match="column.*max_score.*missing"):
        peers.virsorter2(write(tmp_path / "bad" / "final-viral-score.tsv", ["seqname", "score"], [("a", 1)]))
    with pytest.raises(InputError, match="outside"):
        peers.deepvirfinder(write(tmp_path / "x_dvfpred.txt", ["name", "len", "score", "pvalue"], [("a", 5, 1.5, 0)]))
    with pytest.raises(InputError, match="not a number"):
        peers.deepvirfinder(write(tmp_path / "y_dvfpred.txt", ["name", "len", "score", "pvalue"], [("a", 5, "x", 0)]))
    with pytest.raises(ValueError, match="unknown tool"):
        peers.load(vs2, tool="vibrant")
    with pytest.raises(InputError, match="not virus or others"):
        peers.load(pd.DataFrame({"sequence_id": ["a"], "call": ["phage"]}))
    frame = peers.load(pd.DataFrame({"sequence_id": ["a", "b"], "score": [0.2, None]}))
    assert frame["call"].isna().all() and math.isnan(frame["score"].iloc[1])


def test_tools_side_by_side_on_the_same_labels(tmp_path):
    from test_evaluation import LABELS, write_run

    run = write_run(tmp_path / "run")  # A (virus) .65, B (others) .5, C (virus) .7, D (others) no frames
    gen = write(tmp_path / "g" / "x_virus_summary.tsv", GENOMAD_SUMMARY, [
        ("A|provirus_10_500", 491, "Provirus", "10-500", 3, 11, "0.91", "NA", 1, "2.0", "NA"),
        ("D", 250, "No terminal repeats", "NA", 1, 11, "0.75", "NA", 1, "1.0", "NA"),
        ("Q", 999, "No terminal repeats", "NA", 1, 11, "0.99", "NA", 1, "1.0", "NA"),  # not an evaluated record
    ])
    vs2 = write(tmp_path / "v" / "final-viral-score.tsv", VS2, [
        ("C||full", "0.95", "0.1", "0.95", "dsDNAphage", 300, 1, "10", "0"),
        ("B||0_partial", "0.60", "0.1", "0.60", "dsDNAphage", 900, 0, "5", "1"),
    ])
    dvf = write(tmp_path / "d" / "in.fa_gt1bp_dvfpred.txt", ["name", "len", "score", "pvalue"],
                [("A desc", 700, 0.8, 0.01), ("B", 1200, 0.3, 0.2), ("C", 300, 0.6, 0.1), ("D", 250, 0.1, 0.9)])
    ev = evaluate(run, LABELS, others={"geNomad": gen, "VirSorter2": vs2, "DeepVirFinder": dvf})
    table = ev.comparison().set_index("tool")
    assert table.index.tolist() == ["VirNucPro", "geNomad", "VirSorter2", "DeepVirFinder"]
    g = table.loc["geNomad"]  # A virus (provirus), D virus; B and C not listed -> others
    assert (g["tp"], g["fp"], g["fn"], g["tn"], g["reported"], g["scored"]) == (1, 1, 1, 1, 2, 2)
    assert ev.peers["geNomad"].unknown["sequence_id"].tolist() == ["Q"]
    v = table.loc["VirSorter2"]  # C virus, B virus (partial)
    assert (v["tp"], v["fp"], v["fn"], v["tn"]) == (1, 1, 1, 1)
    d = table.loc["DeepVirFinder"]  # at 0.5: A .8 TP, C .6 TP, B .3 TN, D .1 TN; perfectly ranked
    assert (d["tp"], d["fp"], d["fn"], d["tn"]) == (2, 0, 0, 2) and d["auroc"] == 1.0 and d["auprc"] == 1.0
    # geNomad ranks: A .91 (v), D .75 (o), then B and C unscored (one virus, one others)
    from sklearn.metrics import roc_auc_score

    assert g["auroc"] == pytest.approx(roc_auc_score([1, 0, 1, 0], [0.91, -1, -1, 0.75]))
    assert any("geNomad did not report 2" in n for n in ev.notes())
