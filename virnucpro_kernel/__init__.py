"""VirNucPro toolkit: viral sequence identification with DNABERT-S and ESM-2 features, fast and trustworthy.

The Python API (the CLI and the notebooks call the same functions)::

    import virnucpro_kernel as vk
    run = vk.predict("reads.fa", chunk_size=300, out="run1", profile="demo", gpus=0)
    run.sequences, run.frames, run.info, run.viral_records(), run.call(0.9)
    vk.call("run1", threshold=0.9); vk.load_run("run1"); vk.evaluate(run, "labels.tsv"); vk.report("demo")

Data path, one module per step: ``fasta`` (read, validate, write) -> ``frames`` (chunks, six frames) ->
``batching`` (token-budget packing) -> ``models`` (DNABERT-S, ESM-2, classifier) -> ``engine`` (one device) /
``distributed`` + ``units`` (1..N GPUs, resume) -> ``calls`` (per chunk and sequence) -> ``outputs`` (files)
-> ``evaluate`` / ``reports``. ``predict`` ties them together; ``api`` and ``cli`` are the front doors.
"""

__version__ = "0.2.0"

_API = ("prepare", "predict", "load_run", "call", "Run", "train", "benchmark", "evaluate", "report")


def __getattr__(name):  # imports on first use: `import virnucpro_kernel` stays light
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [*_API, "__version__"]
