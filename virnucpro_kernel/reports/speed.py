"""Tables of one GPU's speed, from the ``encoders`` and ``predict`` benchmark results: what each ESM-2 speed route
gains, where the GPU time goes, the time around the compute of a whole run, and what embedding identical frames
once gains."""

from __future__ import annotations

import pandas as pd

from .tables import _titled

ROUTE_ORDER = ("esm2_transformers_sdpa", "esm2_packed", "esm2_route_previous_layout", "esm2_route_exact_gelu_pass",
               "esm2_route_flex_attention", "esm2_route_cudnn_attention", "esm2_route_autotuned_reductions")
STARTUP_PARTS = (("python_and_imports_s", "Python and imports"), ("input_scan_s", "input scan (beside)"),
                 ("compiler_import_s", "compiler import (beside)"), ("cuda_context_s", "GPU context (beside)"),
                 ("load_models_s", "models"), ("warmup_s", "compiling (first batches)"))


def _what(name: str, stage: dict) -> str:
    if stage.get("route"):
        return stage["route"]
    if "transformers" in name:
        return "transformers EsmModel, SDPA, padded batches (peer)"
    if name.endswith("_compiled"):
        return "packed, compiled: every route on (the default)"
    return "packed, eager (no compilation)"


def route_table(result: dict | None) -> pd.DataFrame | None:
    """One row per ESM-2 stage of an ``encoders`` result: ``stage``, ``what`` it runs, ``tokens_per_s``, ``mfu``,
    ``vs_default`` (its rate over the compiled default's), ``bf16_error`` (pooled embeddings against fp32),
    ``repeatable_bits`` (two passes gave the same bits)."""
    stages = (result or {}).get("stages") or {}
    errors = (result or {}).get("relative_error") or {}
    names = [n for n in stages if n.startswith("esm2_")]
    if not names:
        return None
    default = next((stages[n]["tokens_per_s"] for n in names if n.endswith("_compiled") and "route" not in n), None)

    def error(name):
        for key in (f"{name}_vs_fp32", name.replace("packed_", "").replace("_sdpa", "") + "_vs_fp32",
                    name.replace("esm2_packed_", "esm2_compiled_").replace("_compiled", "") + "_vs_fp32"):
            if key in errors:
                return errors[key]
        if name.endswith("_compiled"):
            return next((v for k, v in errors.items() if k.startswith("esm2_compiled_")), None)
        return next((v for k, v in errors.items() if k.startswith(name.rsplit("_", 1)[0]) and "route" not in k
                     and "transformers" not in k and "compiled" not in k), None)

    order = {p: i for i, p in enumerate(ROUTE_ORDER)}
    rows = [{"stage": n, "what": _what(n, stages[n]), "tokens_per_s": stages[n].get("tokens_per_s"),
             "mfu": stages[n].get("mfu"),
             "vs_default": stages[n]["tokens_per_s"] / default if default and stages[n].get("tokens_per_s") else None,
             "bf16_error": error(n), "repeatable_bits": stages[n].get("repeatable_bits")} for n in names]
    rows.sort(key=lambda r: min((order[p] for p in order if r["stage"].startswith(p)), default=len(order)))
    return _titled(pd.DataFrame(rows), result)


def kernel_time(result: dict | None) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Where the compiled ESM-2's GPU time goes (an ``encoders`` result measured on a GPU): shares by kernel
    category, and the largest kernels."""
    found = (result or {}).get("kernel_time") or {}
    if not found.get("categories"):
        return None, None
    cats = pd.DataFrame([{"category": k, "share": v} for k, v in found["categories"].items()])
    top = pd.DataFrame(found.get("top_kernels") or [], columns=["kernel", "share"])
    return _titled(cats, result), _titled(top, result)


def run_overhead(result: dict | None) -> pd.DataFrame | None:
    """One row per whole ``predict`` run of a ``predict`` result: compute seconds and rate, the time before the
    first batch and after the last, and the parts of the start (some run beside each other, marked so)."""
    stages = (result or {}).get("stages") or {}
    rows = []
    for name, st in stages.items():
        row = {"run": name.removeprefix("predict_"), "tokens": st.get("tokens"), "compute_s": st.get("seconds"),
               "tokens_per_s": st.get("tokens_per_s"), "frames_per_s": st.get("frames_per_s"),
               "before_first_batch_s": st.get("before_first_batch_s"),
               "after_last_batch_s": st.get("after_last_batch_s"), "wall_s": st.get("wall_seconds"),
               "gpu_busy_fraction": st.get("gpu_busy_fraction")}
        for key, _ in STARTUP_PARTS:
            row[key] = (st.get("startup") or {}).get(key)
        rows.append(row)
    return _titled(pd.DataFrame(rows), result) if rows else None


def compile_policy(result: dict | None) -> pd.DataFrame | None:
    """Whether ``predict``'s rule (compile the encoder layers only when the input repays it) picked the faster
    way: per input, the wall seconds of whole runs compiled and not, and the rule's choice (GPU results only)."""
    rows = (result or {}).get("compile_policy")
    if not rows:
        return None
    df = pd.DataFrame(rows)
    df["estimated_esm_tokens"] = df["estimated_esm_tokens"].round()
    return _titled(df, result)


def dedup_summary(result: dict | None) -> pd.DataFrame | None:
    """What embedding identical frames once gave on the duplicated-reads workload: speed-up in input frames/s,
    the share of ESM-2 tokens computed, and whether the calls and files stayed the same."""
    d = (result or {}).get("dedup")
    if not d:
        return None
    rows = [("reads", d.get("reads")), ("reads replaced by copies", d.get("duplicated")),
            ("work unit (reads)", d.get("window")), ("speed-up, input frames/s", d.get("speedup_input_frames")),
            ("ESM-2 tokens computed / asked for", d.get("esm_tokens_computed_fraction")),
            ("sequence calls identical", d.get("sequence_calls_identical")),
            ("frame calls identical", d.get("frame_calls_identical")),
            ("largest score difference", d.get("max_score_difference")),
            ("output files identical", all((d.get("files_identical") or {}).values()) if d.get("files_identical")
             else None)]
    return _titled(pd.DataFrame(rows, columns=["what", "value"]), result)
