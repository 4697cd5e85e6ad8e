"""The command line as a user meets it: one-line errors, exit status 2, nothing half-written."""

from conftest import EXAMPLES, FIXTURES


def test_help_for_every_command(cli):
    for args in (["--help"], ["prepare", "--help"], ["predict", "--help"], ["train", "--help"],
                 ["models", "--help"], ["models", "convert", "--help"], ["benchmark", "--help"], ["call", "--help"],
                 ["evaluate", "--help"], ["report", "--help"]):
        r = cli(*args)
        assert r.returncode == 0, (args, r.stderr)
        assert "usage:" in r.stdout


def test_prepare_writes_three_files(cli, tmp_path):
    r = cli("prepare", EXAMPLES / "viralverify_test.fa", "--chunk-size", "500", "--out", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "chunks.fa", "identified_nucleotide.fa", "identified_protein.faa"]
    assert "Mbp/s" in r.stdout


def _assert_one_line_error(r, *needles):
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("virnucpro: error: ")
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0]


def test_bad_inputs_one_line_exit_2(cli, tmp_path):
    out = tmp_path / "out"
    _assert_one_line_error(cli("prepare", tmp_path / "missing.fa", "--chunk-size", "300", "--out", out), "missing.fa")
    _assert_one_line_error(cli("prepare", EXAMPLES / "jaeger_empty.fa", "--chunk-size", "300", "--out", out), "empty")
    fq = tmp_path / "r.fq"
    fq.write_text("@r1\nACGT\n+\nIIII\n")
    _assert_one_line_error(cli("prepare", fq, "--chunk-size", "300", "--out", out), "FASTQ")
    prot = tmp_path / "p.fa"
    prot.write_text(">myprotein\nMKLVVAGGHHEEQQ\n")
    _assert_one_line_error(cli("prepare", prot, "--chunk-size", "300", "--out", out), "myprotein")
    _assert_one_line_error(cli("prepare", EXAMPLES / "jaeger_short.fa", "--chunk-size", "250", "--out", out), "300 or 500")
    _assert_one_line_error(cli("prepare", FIXTURES / "classifier" / "500_model.pth", "--chunk-size", "300", "--out", out))
    _assert_one_line_error(cli("prepare", "--chunk-size", "300"), "required")
    assert not out.exists()


def test_call_and_evaluate_refuse_what_is_not_a_run(cli, tmp_path):
    _assert_one_line_error(cli("call", tmp_path, "--threshold", "0.3"), "no finished run")
    _assert_one_line_error(cli("evaluate", tmp_path, "--truth", tmp_path / "x.tsv", "--out", tmp_path / "e"),
                           "no finished run")
    _assert_one_line_error(cli("evaluate", tmp_path, "--out", tmp_path / "e"), "--truth")
    assert not (tmp_path / "e").exists()


def test_quiet_predict_keeps_the_console_to_the_result_and_warnings(cli, tmp_path):
    for quiet in ((), ("--quiet",)):
        out = tmp_path / f"run{len(quiet)}"
        r = cli("predict", EXAMPLES / "refseq_viral_frames_298bp.fa", "--chunk-size", "300", "--out", out,
                "--profile", "demo", "--gpus", "0", *quiet)
        assert r.returncode == 0, r.stderr
        assert r.stdout.count("called virus") == 1 and "called virus" not in r.stderr  # the result line, once
        assert "warning: demo profile" in r.stdout
        assert ("models on cpu" in r.stderr) == (not quiet)  # a log line: on the console unless --quiet
        log = "".join(p.read_text() for p in (out / "logs").glob("predict_*.log"))
        assert "models on cpu" in log and "called virus" in log  # the log file keeps everything
