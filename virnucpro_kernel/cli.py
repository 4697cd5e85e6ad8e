"""The ``virnucpro`` command. Every subcommand has ``--help``; errors are one line, exit status 2.

Subcommands import what they need when they run, so ``prepare`` and ``--help`` start fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from . import __version__
from .errors import VirNucProError

PROG = "virnucpro"


class _Parser(argparse.ArgumentParser):
    """argparse with the project's error format: ``virnucpro: error: ...`` on one line, exit 2."""

    def error(self, message):  # noqa: D401
        fail(message)


def _int_at_least(minimum: int):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, not {value}")
        return value
    return parse


_positive_int, _count = _int_at_least(1), _int_at_least(0)


def fail(message: str, status: int = 2):
    sys.stderr.write(f"{PROG}: error: {' '.join(str(message).split())}\n")
    sys.exit(status)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(f"{PROG}: warning: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Find viral sequences with DNABERT-S + ESM-2 features (VirNucPro), fast.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    s = sub.add_parser("prepare", help="chunk FASTA and keep the stop-free frames (no models needed)",
                       description="Write DIR/chunks.fa, DIR/identified_nucleotide.fa and DIR/identified_protein.faa.")
    s.add_argument("input", help="FASTA file (plain or .gz)")
    s.add_argument("--chunk-size", type=int, required=True, help="300 or 500 (must match the model)")
    s.add_argument("--out", required=True, help="output folder")
    s.set_defaults(run=_cmd_prepare)

    s = sub.add_parser("predict", help="classify sequences as viral or not",
                       description="FASTA -> chunks -> frames -> DNABERT-S + ESM-2 features -> classifier -> calls.")
    s.add_argument("input", help="FASTA file (plain or .gz)")
    s.add_argument("--chunk-size", type=int, required=True, help="300 or 500 (must match the classifier)")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--profile", choices=["auto", "real", "demo", "random"], default="auto",
                   help="models: real (DNABERT-S, ESM-2 3B, published classifier; auto is the same and says "
                        "which files are missing), demo (small and offline; calls not biologically meaningful), "
                        "random (random weights of the real shapes: benchmarks)")
    s.add_argument("--esm", help="ESM-2 directory or Hugging Face id (overrides the profile)")
    s.add_argument("--dnabert", help="DNABERT-S directory or Hugging Face id (overrides the profile)")
    s.add_argument("--classifier", help="classifier .pth or .safetensors (overrides the profile)")
    s.add_argument("--gpus", type=_count, default=None, help="GPUs to use (default: all visible; 0 = CPU)")
    s.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None,
                   help="default: bf16 on GPUs that have it, fp32 on CPU")
    s.add_argument("--token-budget", type=_positive_int, default=None,
                   help="tokens per packed batch (default 65,536 on GPUs, 8,192 on the CPU)")
    s.add_argument("--threshold", type=float, default=0.5, help="score at or above which a sequence is called virus")
    s.add_argument("--save-features", action="store_true", help="store the 3,328 features per frame in frames.parquet")
    s.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out (only unfinished work units run; a finished run is "
                        "left as it is)")
    s.add_argument("--force", action="store_true",
                   help="start over in an --out that holds an earlier run (removes what that run wrote, nothing else)")
    s.add_argument("--attention", choices=["auto", "flash", "varlen", "reference"], default="auto",
                   help="attention kernel (reference: padded with explicit masks)")
    s.add_argument("--no-packing", action="store_true",
                   help="attention over padded batches (each padded to its longest frame) instead of packed "
                        "sequences; token-wise layers are unaffected by padding and stay unpadded")
    comp = s.add_mutually_exclusive_group()
    comp.add_argument("--compile", action="store_true",
                      help="torch.compile the encoder layers whatever the input's size (GPU; default: only when the "
                           "input holds enough work to repay the seconds compiling takes, about 5M ESM-2 tokens or "
                           "a 10-MB FASTA per GPU)")
    comp.add_argument("--no-compile", action="store_true", help="never torch.compile the encoder layers")
    s.add_argument("--no-dedup", action="store_true",
                   help="embed every frame, also frames identical to another of the same work unit")
    s.add_argument("--no-gelu-epilogue", action="store_true",
                   help="ESM-2 FFN: exact (erf) GELU as its own pass instead of in the fc1 product's epilogue "
                        "(GPU, fp16/bf16)")
    s.add_argument("--threads", type=_positive_int, default=None,
                   help="CPU threads per process (default: OMP_NUM_THREADS, else this process's CPUs over the "
                        "processes of this machine)")
    s.add_argument("--unit-records", type=_positive_int, default=None,
                   help="input records per work unit (default 4096; a resumed run must use the same)")
    s.add_argument("--log-dir", default=None, help="where the run log and GPU log go (default: OUT/logs)")
    s.add_argument("--quiet", action="store_true",
                   help="no progress bar and no log lines on the console (warnings, errors and the result line "
                        "stay; the run's log file keeps everything)")
    s.set_defaults(run=_cmd_predict)

    s = sub.add_parser("train", help="train a classifier on labelled FASTA (original recipe)",
                       description="Features through the predict path, then the original training recipe.")
    s.add_argument("--virus", required=True, help="viral sequences (FASTA or GenBank)")
    s.add_argument("--host", required=True, help="host sequences (FASTA or GenBank)")
    s.add_argument("--chunk-size", type=int, required=True)
    s.add_argument("--out", required=True, help="MODEL.safetensors; metrics go to MODEL.metrics.json")
    s.add_argument("--profile", choices=["auto", "real", "demo"], default="auto")
    s.add_argument("--esm")
    s.add_argument("--dnabert")
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--gpus", type=int, default=None)
    s.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None)
    s.add_argument("--max-epochs", type=int, default=200)
    s.add_argument("--cds-filter", action="store_true",
                   help="GenBank input: keep only frames whose protein is a substring of an annotated CDS")
    s.set_defaults(run=_cmd_train)

    s = sub.add_parser("call", help="call a finished run again at another threshold (no GPU work)",
                       description="Write sequences.tsv and viral.fa of RUN_DIR at --threshold (in RUN_DIR, or in "
                                   "--out); prediction_results* and frames.parquet are not touched. viral.fa needs "
                                   "the input named in run.json, unchanged.")
    s.add_argument("run_dir", metavar="RUN_DIR", help="output folder of a finished predict run")
    s.add_argument("--threshold", type=float, required=True, help="score at or above which a sequence is virus")
    s.add_argument("--out", default=None, help="write the two files (and a copy of run.json) here instead")
    s.set_defaults(run=_cmd_call)

    s = sub.add_parser("evaluate", help="measure a run against known labels, beside other tools",
                       description="ROC and precision-recall curves, AUROC/AUPRC per sequence and chunk, metrics at "
                                   "the run's threshold, by length; other tools' outputs on the same labels.")
    s.add_argument("run_dir", metavar="RUN_DIR", help="output folder of a finished predict run")
    s.add_argument("--truth", help="labels: TSV with columns sequence_id and label (virus or others)")
    s.add_argument("--truth-virus", help="labels as FASTA: the viral sequences")
    s.add_argument("--truth-others", help="labels as FASTA: the other sequences")
    s.add_argument("--other", action="append", metavar="TOOL=FILE",
                   help="another tool's output (geNomad, VirSorter2, DeepVirFinder, Jaeger), repeatable")
    s.add_argument("--threshold", type=float, default=None, help="operating point (default: the run's threshold)")
    s.add_argument("--length-bins", default=None, metavar="EDGES",
                   help="length bins' left edges in bp, comma-separated (default 0,500,1000,3000,10000)")
    s.add_argument("--out", required=True,
                   help="folder for evaluation.json, summary.tsv, comparison.tsv, by_length.tsv, curves.tsv")
    s.set_defaults(run=_cmd_evaluate)

    s = sub.add_parser("report", help="run every notebook with a parameter set and render HTML/markdown reports")
    s.add_argument("--params", default="demo", help="a parameter set under params/ (demo, h200) or a YAML file")
    s.add_argument("--out", default=None, help="folder for the pages (default reports/<set>)")
    s.add_argument("--only", action="append", help="only this notebook (e.g. 01_predict), repeatable")
    s.set_defaults(run=_cmd_report)

    s = sub.add_parser("models", help="download, verify, convert and list model files")
    msub = s.add_subparsers(dest="models_command", metavar="ACTION", parser_class=_Parser)
    msub.required = True
    m = msub.add_parser("download", help="fetch DNABERT-S, ESM-2 3B and the published classifiers")
    m.add_argument("--dir", default=None, help="where to put them (default: the Hugging Face cache and ~/.cache/virnucpro)")
    m.add_argument("--only", choices=["dnabert", "esm", "classifier"], action="append")
    m.set_defaults(run=_cmd_models)
    m = msub.add_parser("verify", help="check shapes and checksums of the model files")
    m.add_argument("--profile", choices=["real", "demo"], default="real")
    m.add_argument("--chunk-size", type=int, default=None)
    m.set_defaults(run=_cmd_models)
    m = msub.add_parser("convert", help="convert a published .pth classifier to safetensors (no code runs)")
    m.add_argument("src", metavar="IN.pth")
    m.add_argument("dst", metavar="OUT.safetensors")
    m.set_defaults(run=_cmd_models)
    m = msub.add_parser("list", help="show which model files are present")
    m.set_defaults(run=_cmd_models)

    s = sub.add_parser("benchmark", help="measure speed, scaling and equivalence; track regressions")
    s.add_argument("--suite", choices=["prepare", "encoders", "engine", "scaling", "equivalence", "predict", "all"],
                   required=True)
    s.add_argument("--data-size", choices=["tiny", "small", "medium", "large", "xl"], default="tiny")
    s.add_argument("--gpu-counts", default=None, help="comma-separated, e.g. 1,2,4 (scaling suite)")
    s.add_argument("--out", required=True, help="folder for result JSON and markdown")
    s.add_argument("--compare-to", default=None, help="baseline JSON: exit 1 on a regression over 10%%")
    s.add_argument("--save-baseline", default=None, help="write this run as a baseline")
    s.add_argument("--no-reference", action="store_true", help="skip the reference path")
    s.add_argument("--quick", action="store_true", help="fewer repetitions")
    s.add_argument("--profile", choices=["demo", "random"], default=None,
                   help="weights (default: random weights of the real shapes on a GPU, demo on a CPU)")
    s.add_argument("--per-gpu-reads", type=int, default=None,
                   help="scaling: reads per GPU for the smaller GPU counts (default 65536 on GPUs, all on CPU)")
    s.add_argument("--max-reads", type=int, default=None,
                   help="use only the first N reads of the --data-size preset")
    s.add_argument("--chunk-size", type=int, default=300, choices=[300, 500])
    s.set_defaults(run=_cmd_benchmark)
    return p


def _cmd_prepare(args):
    from . import api

    stats = api.prepare(args.input, chunk_size=args.chunk_size, out=args.out)
    print(f"{stats.records} records, {stats.bases:,} bp -> {stats.chunks} chunks, {stats.frames} frames "
          f"in {stats.seconds:.2f} s ({stats.mbp_per_s:.1f} Mbp/s); wrote {args.out}/")


def _cmd_predict(args):
    from . import api

    api.predict(args.input, chunk_size=args.chunk_size, out=args.out, profile=args.profile, gpus=args.gpus,
                threshold=args.threshold, esm=args.esm, dnabert=args.dnabert, classifier=args.classifier,
                dtype=args.dtype, token_budget=args.token_budget, attention=args.attention,
                packing=not args.no_packing, compile=True if args.compile else False if args.no_compile else None,
                dedup=not args.no_dedup,
                gelu_epilogue=False if args.no_gelu_epilogue else None, save_features=args.save_features,
                resume=args.resume, force=args.force, unit_records=args.unit_records, threads=args.threads,
                log_dir=args.log_dir, quiet=args.quiet)


def _cmd_call(args):
    from . import api

    run = api.call(args.run_dir, threshold=args.threshold, out=args.out)
    counts = run.sequences["call"].value_counts()
    print(f"{len(run.sequences)} sequences at threshold {args.threshold}: {int(counts.get('virus', 0))} virus, "
          f"{int(counts.get('others', 0))} others, {int(counts.get('no_frames', 0))} without frames; wrote "
          f"{run.out}/sequences.tsv and viral.fa")


def _cmd_train(args):
    from . import api

    m = api.train(virus=args.virus, host=args.host, chunk_size=args.chunk_size, out=args.out, profile=args.profile,
                  esm=args.esm, dnabert=args.dnabert, seed=args.seed, gpus=args.gpus, dtype=args.dtype,
                  max_epochs=args.max_epochs, cds_filter=args.cds_filter)
    print(f"trained on {m['training_data']['virus']['frames']} virus and {m['training_data']['host']['frames']} "
          f"host frames: test accuracy {m.get('accuracy')}, F1 {m.get('f1')}, ROC AUC {m.get('roc_auc')}; wrote "
          f"{m['model']} and {m['metrics_file']}")


def _cmd_models(args):
    from .models.profiles import models_command

    models_command(args)


def _cmd_benchmark(args):
    from . import api

    return api.benchmark(suite=args.suite, out=args.out, data_size=args.data_size, gpu_counts=args.gpu_counts,
                         compare_to=args.compare_to, save_baseline=args.save_baseline,
                         no_reference=args.no_reference, quick=args.quick, profile=args.profile,
                         per_gpu_reads=args.per_gpu_reads, max_reads=args.max_reads, chunk_size=args.chunk_size)


def _cmd_evaluate(args):
    from . import api

    others = {}
    for item in args.other or ():
        tool, sep, path = item.partition("=")
        if not sep or not tool or not path:
            raise VirNucProError(f"--other {item!r}: write TOOL=FILE (e.g. geNomad=out/x_virus_summary.tsv)")
        others[tool] = path
    if (args.truth is None) == (args.truth_virus is None and args.truth_others is None):
        raise VirNucProError("give the labels either as --truth LABELS.tsv or as --truth-virus V.fa --truth-others H.fa")
    if args.truth is None and (args.truth_virus is None or args.truth_others is None):
        raise VirNucProError("--truth-virus and --truth-others go together")
    truth = args.truth if args.truth is not None else (args.truth_virus, args.truth_others)
    bins = None
    if args.length_bins is not None:
        try:
            bins = [float(x) for x in args.length_bins.split(",")]
        except ValueError:
            raise VirNucProError(f"--length-bins {args.length_bins!r}: write bin edges in bp, e.g. 0,1000,5000") \
                from None
    ev = api.evaluate(api.load_run(args.run_dir), truth, others=others or None, threshold=args.threshold,
                      length_bins=bins, out=args.out)
    print(ev.summary().to_string(index=False))
    if others:
        print(ev.comparison().to_string(index=False))
    for note in ev.notes():
        print(f"note: {note}")
    print(f"wrote evaluation.json, summary.tsv, comparison.tsv, by_length.tsv and curves.tsv in {args.out}")


def _cmd_report(args):
    from . import api

    index = api.report(args.params, out=args.out, only=args.only)
    print(f"wrote {index}")


def main(argv=None) -> int:
    warnings.showwarning = _show_warning
    logging.basicConfig(level=logging.INFO, format=f"{PROG}: %(message)s", stream=sys.stderr)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    for handler in logging.getLogger().handlers:  # the console: --quiet keeps warnings and errors only
        handler.addFilter(lambda record: not getattr(record, "file_only", False))
        if getattr(args, "quiet", False):
            handler.setLevel(logging.WARNING)
    try:
        status = args.run(args)
    except VirNucProError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except MemoryError:
        fail("out of host memory")
    except OSError as exc:  # disk full, permissions, a file where a folder should be: the user's to fix
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        fail(f"{where}{exc.strerror or exc}")
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
