"""What the encoders suite needs to show what each ESM-2 speed route gains: the previous layer layout (free
functions, the residual add and GELU as passes of their own), kept here to be measured beside the current one,
and where a model's GPU time goes by kernel category (``kernel_time``)."""

from __future__ import annotations


import torch
import torch.nn.functional as F

from ..models import attention as attention_mod
from ..models import encoder as encoder_mod
from ..models.esm2 import ESM2Encoder, rotary


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
