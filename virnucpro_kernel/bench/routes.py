"""Where ESM-2's time goes, and what each speed route gains: a one-GPU probe.

    python -m virnucpro_kernel.bench.routes --out DIR

Runs the ESM-2 3B shape (random weights) on the encoders suite's mixed-length workload in BF16 and times
variants side by side, each with its pooled embeddings held against the fp32 reference path (relative norm):
the layer layout before the current one (free functions, residual add as its own pass, GELU as its own
pass), the current layout eager and compiled, and the current layout with one route switched off or another
attention kernel; then a kernel-time profile by category.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..batching import pack_by_tokens, pack_tokens
from ..models import attention as attention_mod
from ..models import encoder as encoder_mod
from ..models.esm2 import ESM2Config, ESM2Encoder, rotary, tokenize
from .encoders import make_workload, matmul_ceiling_tflops


# -- the previous layout, kept here to measure what the current one gains ---------------------------

def _prev_inputs(x, norm_w, norm_b, qkv_w, qkv_b, cos, sin, num_heads: int, eps: float):
    h = F.layer_norm(x, (x.shape[-1],), norm_w, norm_b, eps)
    q, k, v = F.linear(h, qkv_w, qkv_b).unflatten(-1, (3, num_heads, -1)).unbind(-3)
    return rotary(q, cos, sin), rotary(k, cos, sin), v


def _prev_output_and_ffn(x, a, out_w, out_b, norm_w, norm_b, fc1_w, fc1_b, fc2_w, fc2_b, eps: float):
    x = x + F.linear(a.flatten(-2), out_w, out_b)
    h = F.gelu(F.linear(F.layer_norm(x, (x.shape[-1],), norm_w, norm_b, eps), fc1_w, fc1_b))
    return x + F.linear(h, fc2_w, fc2_b)


_PREV = {}


def previous_forward(model: ESM2Encoder, input_ids, cu, max_seqlen):
    if not _PREV:
        _PREV["fns"] = (torch.compile(_prev_inputs), torch.compile(_prev_output_and_ffn))
    pre, post = _PREV["fns"]
    cfg = model.config
    T = input_ids.numel()
    lengths, seq_id, pos = encoder_mod.packed_positions(cu, T)
    x = model.embed_tokens(input_ids) * 0.88
    freqs = pos[:, None].float() * model.inv_freq[None, :]
    cos, sin = freqs.cos()[:, None, :], freqs.sin()[:, None, :]
    dyn = encoder_mod.mark_tokens_dynamic
    cos, sin = dyn(cos), dyn(sin)
    attn = attention_mod.PackedAttention(model.attention_path, cu, max_seqlen, cfg.num_heads, total_tokens=T)
    for layer in model.layers:
        q, k, v = pre(dyn(x), layer.attn_norm.weight, layer.attn_norm.bias, layer.qkv.weight, layer.qkv.bias,
                      cos, sin, cfg.num_heads, cfg.layer_norm_eps)
        x = post(dyn(x), dyn(attn(q, k, v)), layer.out.weight, layer.out.bias, layer.ffn_norm.weight,
                 layer.ffn_norm.bias, layer.fc1.weight, layer.fc1.bias, layer.fc2.weight, layer.fc2.bias,
                 cfg.layer_norm_eps)
    x = model.final_norm(x)
    return encoder_mod.pool_segments(x, cu, max_seqlen, 1, torch.clamp(lengths - 2, min=0, max=1024))


# -- cuDNN's varlen attention, probed as an extra path ---------------------------------------------

def _cudnn_varlen(self, q, k, v):
    out = torch.ops.aten._cudnn_attention_forward(q, k, v, None, self.cu_seqlens, self.cu_seqlens, self.max_seqlen,
                                                  self.max_seqlen, False, 0.0, False, False)
    return out[0]


def _time(fn, repeats=3):
    fn()
    if not torch.cuda.is_available():
        out = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return statistics.median(out), out
    torch.cuda.synchronize()
    out = []
    for _ in range(repeats):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        out.append(s.elapsed_time(e) / 1e3)
    return statistics.median(out), out


def _rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def _categories(prof):
    cats, kernels = {}, {}
    for ev in prof.key_averages():
        t = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
        if not t:
            continue
        low = ev.key.lower()
        if "flash" in low or "fmha" in low or "attention" in low or "cudnn" in low:
            cat = "attention"
        elif any(s in low for s in ("gemm", "xmma", "cutlass", "nvjet", "cublas")):
            cat = "matmul"
        elif "triton" in low:
            cat = "fused pointwise and norms (compiled)"
        else:
            cat = "other"
        cats[cat] = cats.get(cat, 0) + t
        kernels[ev.key[:90]] = kernels.get(ev.key[:90], 0) + t
    total = sum(cats.values())
    return ({k: v / total for k, v in sorted(cats.items(), key=lambda kv: -kv[1])},
            [(k, v / total) for k, v in sorted(kernels.items(), key=lambda kv: -kv[1])[:14]])


def kernel_time(model, packed) -> dict:
    """Where the GPU's time goes in one pass of ``model`` over ``packed`` batches: shares by kernel category
    and the largest kernels (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        for ids, cu, m in packed:
            model.forward_packed(ids, cu, m)
        if cuda:
            torch.cuda.synchronize()
    cats, top = _categories(prof)
    return {"categories": cats, "top_kernels": [{"kernel": k, "share": v} for k, v in top]}


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--budget", type=int, default=65536)
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="a tiny ESM-2 shape (a check of this script on the CPU)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(args.device)
    cfg = ESM2Config(num_layers=2, hidden_size=64, num_heads=4, ffn_size=128) if args.tiny else \
        ESM2Config.esm2_t36_3B_UR50D()
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    ceiling = matmul_ceiling_tflops(dev, n=8192 if dev.type == "cuda" else 256, dtype=dtype)
    proteins, _ = make_workload(args.n)
    tokens = tokenize(proteins)
    n_tok = sum(len(t) for t in tokens)
    report = {"ceiling_tflops": ceiling, "tokens": n_tok, "budget": args.budget, "torch": torch.__version__}
    try:
        from torch.nn.attention import list_flash_attention_impls
        report["flash_impls"] = list(list_flash_attention_impls())
    except Exception as exc:  # older torch
        report["flash_impls"] = repr(exc)

    def packs(budget):
        return [pack_tokens(tokens, b).to(dev) for b in pack_by_tokens([len(t) for t in tokens], budget)]

    sub = tokens[:: max(1, len(tokens) // 256)][:256]

    def embed(fwd, budget=8192):
        res = torch.empty(len(sub), cfg.hidden_size)
        with torch.inference_mode():
            for b in pack_by_tokens([len(t) for t in sub], budget):
                res[torch.from_numpy(b)] = fwd(*pack_tokens(sub, b).to(dev)).cpu()
        return res

    ref_model = ESM2Encoder.from_config(cfg, seed=1, device=dev, dtype=torch.float32)
    ref = embed(ref_model.forward_packed)
    report["fp32_previous_vs_current"] = _rel(embed(lambda *a: previous_forward(ref_model, *a)), ref)
    del ref_model
    torch.cuda.empty_cache()

    models = {}

    def model(compile=True, attention="auto", gelu_epilogue=None):
        key = (compile, attention, gelu_epilogue)
        if key not in models:
            base = next(iter(models.values()))
            with torch.device("meta"):
                m = ESM2Encoder(cfg, attention=attention, compile=compile)
            m.load_state_dict(base.state_dict(), assign=True)  # the same tensors, no copy
            models[key] = m.eval()._setup()
            models[key].gelu_epilogue = gelu_epilogue
        return models[key]

    models[(True, "auto", None)] = ESM2Encoder.from_config(cfg, seed=1, device=dev, dtype=dtype, compile=True)
    packed = packs(args.budget)
    m_comp, m_eager = model(), model(compile=False)
    m_exact, m_flex = model(gelu_epilogue=False), model(attention="flex")
    variants = {
        "previous layout (compiled)": lambda *a: previous_forward(m_comp, *a),
        "current, eager": m_eager.forward_packed,
        "current, compiled": m_comp.forward_packed,
        "current, compiled, exact GELU pass": m_exact.forward_packed,
        "current, compiled, flex attention": m_flex.forward_packed,
    }
    rows = {}

    def measure(name, fwd, pk, err=True):
        try:
            t0 = time.perf_counter()
            with torch.inference_mode():
                fwd(*pk[0])
            if dev.type == "cuda":
                torch.cuda.synchronize()
            first = time.perf_counter() - t0

            def run():
                with torch.inference_mode():
                    for ids, cu, m in pk:
                        fwd(ids, cu, m)

            sec, all_s = _time(run)
            row = {"tokens_per_s": n_tok / sec, "mfu": n_tok / sec * m_comp.flops_per_token / (ceiling * 1e12),
                   "seconds": all_s, "first_call_s": first}
            if err:
                e1 = embed(fwd)
                row["bf16_vs_fp32"] = _rel(e1, ref)
                row["repeatable_bits"] = bool(torch.equal(e1, embed(fwd)))
                row["same_bits_other_batching"] = bool(torch.equal(e1, embed(fwd, 2048)))
        except Exception as exc:  # a route this build cannot run
            row = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        rows[name] = row
        print(name, row, flush=True)

    for name, fwd in variants.items():
        measure(name, fwd, packed)
    # compiled without Inductor's deterministic mode
    encoder_mod._COMPILED.clear()
    saved = encoder_mod._compile_options
    encoder_mod._compile_options = lambda: {}
    m_nd = model(compile=True, attention="varlen-flash")  # a new instance: compiled without the option
    measure("current, compiled, autotuned reductions (not deterministic)", m_nd.forward_packed, packed)
    encoder_mod._compile_options = saved
    encoder_mod._COMPILED.clear()
    # cuDNN varlen attention in place of the flash kernel
    attention_mod.PackedAttention._varlen_flash_saved = attention_mod.PackedAttention._varlen_flash
    attention_mod.PackedAttention._varlen_flash = _cudnn_varlen
    measure("current, compiled, cuDNN varlen attention", m_comp.forward_packed, packed)
    attention_mod.PackedAttention._varlen_flash = attention_mod.PackedAttention._varlen_flash_saved
    for budget in (32768, 131072):
        measure(f"current, compiled, {budget}-token batches", m_comp.forward_packed, packs(budget), err=False)
    report["variants"] = rows

    from torch.profiler import ProfilerActivity, profile

    for name, fwd in (("previous layout (compiled)", variants["previous layout (compiled)"]),
                      ("current, compiled", m_comp.forward_packed)):
        activity = ProfilerActivity.CUDA if dev.type == "cuda" else ProfilerActivity.CPU
        with torch.inference_mode(), profile(activities=[activity]) as prof:
            for ids, cu, m in packed:
                fwd(ids, cu, m)
            if dev.type == "cuda":
                torch.cuda.synchronize()
        cats, top = _categories(prof)
        report[f"profile: {name}"] = {"categories": cats, "top_kernels": top}
        print(name, json.dumps(cats), flush=True)
        for k, v in top:
            print(f"   {v:6.1%}  {k}")
    (out / "routes.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"ceiling {ceiling:.0f} TFLOP/s; fp32 previous vs current {report['fp32_previous_vs_current']:.2e}")
    print(f"{'variant':62s} {'tok/s':>8s} {'MFU':>6s} {'bf16 err':>9s} rep  batch")
    for k, r in rows.items():
        if "error" in r:
            print(f"{k:62s} {r['error'][:80]}")
            continue
        print(f"{k:62s} {r['tokens_per_s']:8.0f} {r['mfu']:6.1%} {r.get('bf16_vs_fp32', 0):9.2e} "
              f"{str(r.get('repeatable_bits', '')):5s} {r.get('same_bits_other_batching', '')}")


if __name__ == "__main__":
    main()
