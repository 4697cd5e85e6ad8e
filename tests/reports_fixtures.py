"""Small inputs for the tests of ``virnucpro_kernel.reports``: a finished run written from made-up scores (no
models), benchmark results and a GPU monitoring log."""

from __future__ import annotations

import struct

import numpy as np
import pandas as pd

from virnucpro_kernel.bench import schema

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DEMO_WARNING = "demo profile: not biologically meaningful"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC
    return struct.unpack(">II", data[16:24])


def write_run(out, threshold: float = 0.5):
    """A run folder (``outputs.write_outputs``): virA (viral, its chunk 2 without a frame), no_frame (no frame at
    all), hostB (not viral); read back with ``vk.load_run``."""
    from virnucpro_kernel import load_run
    from virnucpro_kernel.outputs import write_outputs

    rng = np.random.default_rng(0)
    records = pd.DataFrame({"record_index": [0, 1, 2], "sequence_id": ["virA", "no_frame", "hostB"],
                            "length": [1200, 250, 900], "chunks": [4, 1, 3]})
    rows = []
    for rec, sid, chunks, bias in ((0, "virA", 4, 0.8), (2, "hostB", 3, 0.2)):
        for chunk in range(1, chunks + 1):
            if (rec, chunk) == (0, 2):
                continue
            for frame in ("F1", "R2") if chunk != 3 else ("F3",):
                p = float(np.clip(bias + rng.normal(0, 0.1), 0.01, 0.99))
                rows.append((rec, sid, chunk, frame, 1 - p, p))
    frames = pd.DataFrame(rows, columns=["record_index", "sequence_id", "chunk", "frame", "p_others", "p_virus"])
    seqs = {"virA": "ACGT" * 300, "no_frame": "ACGT" * 62 + "AC", "hostB": "ACGT" * 225}
    out.mkdir(parents=True, exist_ok=True)
    (out / "input.fa").write_text("".join(f">{k} description of {k}\n{v}\n" for k, v in seqs.items()))
    write_outputs(out, frames, records, threshold=threshold, profile="demo",
                  records_iter=((k, f"{k} description of {k}", v) for k, v in seqs.items()),
                  run_info={"virnucpro_version": "0.2.0", "command": "virnucpro predict",
                            "input": {"path": str(out / "input.fa"), "sha256": "ab" * 32},
                            "parameters": {"chunk_size": 300, "threshold": threshold, "gpus": 0, "world_size": 1},
                            "counts": {"frames": len(frames)}, "hardware": {"device": "x86_64", "gpus": 0},
                            "versions": {"python": "3.11", "torch": "2.13"},
                            "profile": {"name": "demo", "warnings": [DEMO_WARNING]}, "warnings": [DEMO_WARNING]})
    return load_run(out)


def fake_result(suite="scaling", tokens_per_s=(1000.0, 1900.0, 3600.0), counts=(1, 2, 4), spread=0.0,
                timestamp="2026-01-01T00:00:00Z", commit="a" * 40, mfu=0.5, gpu_name="NVIDIA H200"):
    n_gpus = max(counts) if gpu_name else 0
    result = schema.new_result(suite, "virnucpro benchmark", hardware={
        "gpu_name": gpu_name, "n_gpus": n_gpus, "cpu": "x", "cpu_count": 2}, workload={
        "name": "tiny", "reads": 10, "frames": 14, "tokens": 719})
    result.update(timestamp=timestamp, git_commit=commit, git_dirty=False)
    for n, tps in zip(counts, tokens_per_s):
        seconds = 719 / tps
        result["stages"][f"engine_{n}gpu"] = {
            "tokens_per_s": tps, "sequences_per_s": tps / 50, "mfu": mfu, "seconds": seconds,
            "seconds_min": seconds * (1 - spread), "seconds_max": seconds * (1 + spread), "repetitions": 3,
            "peak_memory_gb": 1.0,
            "n_gpus": n, "path": "optimized", "wall_seconds": seconds + 3, "load_models_s": 1.0, "warmup_s": 0.5}
    result["scaling_efficiency"] = {str(n): t / (n * tokens_per_s[0]) for n, t in zip(counts, tokens_per_s)}
    result["warnings"] = ["random profile: meaningless calls"]
    return schema.validate_result(schema.json_safe(result))


def gpu_log_frame() -> pd.DataFrame:
    t = np.arange(0, 5, 0.5)
    return pd.DataFrame([{"timestamp": pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(seconds=s),
                          "elapsed_s": s, "gpu": g, "util_pct": 90.0 - 10 * int(g), "mem_used_gb": 20.0 + s,
                          "sm_clock_mhz": 1900.0, "power_w": 500.0} for s in t for g in ("0", "1")])
