"""PredictSettings: what the CLI and the API hand to a run, and the rule that decides whether to compile."""

import gzip

import pytest

from virnucpro_kernel.cli import build_parser
from virnucpro_kernel.prediction import PredictSettings, compile_pays_off, estimated_esm_tokens


def _sized(path, size, head=b">r\n"):
    with open(path, "wb") as fh:
        fh.write(head)
        fh.truncate(size)  # sparse: the rule reads the size and the first bytes only
    return path


def test_estimate_from_size_and_gzip(tmp_path):
    # 0.5 ESM-2 tokens per byte of plain FASTA; gzip counted 4-fold
    assert estimated_esm_tokens(_sized(tmp_path / "a.fa", 1_000_000)) == 500_000
    gz = tmp_path / "a.fa.gz"
    gz.write_bytes(gzip.compress(b">r\nACGT\n"))
    assert estimated_esm_tokens(gz) == gz.stat().st_size * 4 * 0.5


def test_compile_only_when_it_repays_its_seconds(tmp_path):
    big = _sized(tmp_path / "big.fa", 10_000_000)  # about 5M ESM-2 tokens: the break-even
    small = _sized(tmp_path / "small.fa", 9_999_998)
    assert compile_pays_off(big, 1) and not compile_pays_off(small, 1)
    assert not compile_pays_off(big, 2)  # the same input over two GPUs: half the work each
    assert compile_pays_off(_sized(tmp_path / "huge.fa", 40_000_000), 4)


@pytest.mark.parametrize("flags, expected", [([], None), (["--compile"], True), (["--no-compile"], False)])
def test_compile_flag_reaches_the_settings_and_back(flags, expected, monkeypatch):
    seen = {}
    monkeypatch.setattr("virnucpro_kernel.api.predict", lambda *a, **kw: seen.update(kw))
    args = build_parser().parse_args(["predict", "x.fa", "--chunk-size", "300", "--out", "o", *flags])
    args.run(args)
    assert seen["compile"] is expected
    settings = PredictSettings(input="x.fa", chunk_size=300, out="o", compile=expected)
    argv = settings.to_argv()
    assert ("--compile" in argv, "--no-compile" in argv) == (expected is True, expected is False)
    again = build_parser().parse_args(argv)
    assert (again.compile, again.no_compile) == (expected is True, expected is False)


def test_compile_and_no_compile_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["predict", "x.fa", "--chunk-size", "300", "--out", "o", "--compile",
                                   "--no-compile"])
    assert exc.value.code == 2 and "not allowed with" in capsys.readouterr().err
