"""Encoder benchmark: packed ESM-2 3B and DNABERT-S against the padded transformers peer, on one GPU.

Random weights of the real shapes (the compute is that of the real weights) on a mixed-length workload:
3,000 proteins with lengths uniform in 30-166 residues (the frames of 100-500-bp chunks), and their DNA
frames (3 * len + 1 bp of random DNA) for DNABERT-S. MFU is measured against a dense bf16
matrix product (8192^3) timed in the same run. Each stage: one untimed warm-up pass over the whole
workload (it also triggers any compilation), then ``repeats`` timed passes; the median is reported
with min and max. ``tiny=True`` runs small shapes (for tests on the CPU).

    from virnucpro_kernel.bench.encoders import run_encoder_benchmark
    result = run_encoder_benchmark("cuda")
    result["esm2_packed_bfloat16_compiled"]["tokens_per_s"], result["ratios"], result["relative_error"]

On a GPU the compiled ESM-2 stage is followed by ``esm2_route_*`` rows, each the compiled model with one speed
route switched off or another attention kernel (``_route_rows``), and ``kernel_time``: where its GPU time goes.
"""

from __future__ import annotations

import gc
import logging
import statistics
import time

import numpy as np
import torch

from ..batching import pack_by_tokens, pack_tokens
from ..models.dnabert_s import DNABERTSConfig, DNABERTSEncoder
from ..models.esm2 import ESM2Config, ESM2Encoder, tokenize as esm_tokenize

__all__ = ["run_encoder_benchmark", "matmul_ceiling_tflops", "make_workload"]

log = logging.getLogger(__name__)

AMINO = np.frombuffer(b"ACDEFGHIKLMNPQRSTVWY", dtype=np.uint8)
DNA = np.frombuffer(b"ACGT", dtype=np.uint8)


def make_workload(n=3000, low=30, high=166, seed=0):
    """Random proteins with lengths uniform in [low, high] and a random DNA frame of 3 * len + 1 bp each."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(low, high + 1, size=n)
    proteins = [AMINO[rng.integers(0, 20, size=int(n_))].tobytes().decode() for n_ in lengths]
    frames = [DNA[rng.integers(0, 4, size=3 * int(n_) + 1)].tobytes().decode() for n_ in lengths]
    return proteins, frames


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device):
    """Seconds of one call, by CUDA events on a GPU (wall clock elsewhere)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        _sync(device)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def matmul_ceiling_tflops(device, n=8192, dtype=torch.bfloat16, repeats=10) -> float:
    """Dense matrix-product rate measured here: the MFU denominator."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    seconds = _timed(lambda: [a @ b for _ in range(repeats)], device) / repeats
    del a, b
    return 2.0 * n**3 / seconds / 1e12


def _stage(run_pass, device, tokens, sequences, flops_per_token, ceiling_tflops, repeats, **info) -> dict:
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    run_pass()  # warm-up (and compilation)
    times = [_timed(run_pass, device) for _ in range(repeats)]
    seconds = statistics.median(times)
    result = {
        "tokens_per_s": tokens / seconds,
        "sequences_per_s": sequences / seconds,
        "mfu": tokens / seconds * flops_per_token / (ceiling_tflops * 1e12),
        "seconds": seconds,
        "seconds_min": min(times),
        "seconds_max": max(times),
        "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else 0.0,
        "reserved_memory_gb": torch.cuda.max_memory_reserved(device) / 1e9 if device.type == "cuda" else 0.0,
        "tokens": tokens,
        "sequences": sequences,
        "ceiling_tflops": ceiling_tflops,
    }
    result.update(info)
    log.info("%s: %.0f tok/s, MFU %.1f%%", info.get("name", "stage"), result["tokens_per_s"], 100 * result["mfu"])
    return result


def _packed_batches(tokens, token_budget, device):
    batches = pack_by_tokens([len(t) for t in tokens], token_budget)
    return [pack_tokens(tokens, b).to(device) for b in batches]


def _run_packed(model, packed):
    def run():
        for batch in packed:
            model.forward_packed(*batch)

    return run


def _embed_packed(model, tokens, token_budget, device):
    batches = pack_by_tokens([len(t) for t in tokens], token_budget)
    out = torch.empty(len(tokens), model.config.hidden_size)
    for b in batches:
        out[torch.from_numpy(b)] = model.forward_packed(*pack_tokens(tokens, b).to(device)).cpu()
    return out


def _rel(a, b) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


# -- speed routes, each switched off or swapped alone -------------------------------------------------


class _Previous:
    """The layer layout before the current one (residual add and GELU as passes of their own)."""

    def __init__(self, model):
        self.model = model
        self.config = model.config

    def forward_packed(self, ids, cu, max_seqlen):
        from .routes import previous_forward

        with torch.inference_mode():
            return previous_forward(self.model, ids, cu, max_seqlen)


def _route_rows(esm, esm_c, cname, packed, sub_tokens, ref, budget, device, tokens, n, ceiling, repeats, results, errors):
    """``esm2_route_*`` rows: the compiled model with one route switched off or another attention kernel, the
    previous layer layout, and where the compiled model's kernel time goes."""
    from ..models import encoder as encoder_mod
    from .routes import kernel_time

    def variant(attention="auto", gelu_epilogue=None, deterministic=True):
        saved = encoder_mod._compile_options
        if not deterministic:
            encoder_mod._compile_options = lambda: {}
            encoder_mod._COMPILED.clear()
        try:
            with torch.device("meta"):
                m = ESM2Encoder(esm.config, attention=attention, compile=True)
            m.load_state_dict(esm.state_dict(), assign=True)  # the same tensors, no copy
            m = m.eval()._setup()
        finally:
            if not deterministic:
                encoder_mod._compile_options = saved
                encoder_mod._COMPILED.clear()
        m.gelu_epilogue = gelu_epilogue
        return m

    routes = {
        "esm2_route_previous_layout": (lambda: _Previous(esm_c), "previous layout: residual add and GELU as passes"),
        "esm2_route_exact_gelu_pass": (lambda: variant(gelu_epilogue=False), "GELU as its own pass (exact erf)"),
        "esm2_route_autotuned_reductions": (lambda: variant(deterministic=False),
                                            "Inductor's default reduction autotuning (not deterministic)"),
        "esm2_route_cudnn_attention": (lambda: variant(attention="varlen-cudnn"), "cuDNN varlen attention"),
        "esm2_route_flex_attention": (lambda: variant(attention="flex"), "FlexAttention"),
    }
    for name, (make, what) in routes.items():
        try:
            m = make()
            results[name] = _stage(_run_packed(m, packed), device, tokens, n, esm.flops_per_token, ceiling, repeats,
                                   name=name, dtype="bfloat16", route=what, batches=len(packed),
                                   attention=getattr(m, "attention_path", esm_c.attention_path))
            got = _embed_packed(m, sub_tokens, budget, device)
            errors[name + "_vs_fp32"] = _rel(got, ref)
            results[name]["repeatable_bits"] = bool(torch.equal(got, _embed_packed(m, sub_tokens, budget, device)))
            del m
        except Exception as exc:  # a route this build cannot run is reported, not fatal
            log.warning("%s skipped: %s: %s", name, type(exc).__name__, str(exc)[:300])
            results.setdefault("skipped_routes", {})[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
    got = _embed_packed(esm_c, sub_tokens, budget, device)
    results[cname]["repeatable_bits"] = bool(
        torch.equal(got, _embed_packed(esm_c, sub_tokens, budget, device)))
    results["kernel_time"] = kernel_time(esm_c, packed)


# -- the transformers peer (optional) -------------------------------------------------------------


def _hf_esm(cfg: ESM2Config, device, seed):
    """A transformers ``EsmModel`` of this shape, random weights, SDPA attention; None without transformers."""
    try:
        from transformers import EsmConfig, EsmModel
    except Exception as exc:  # not installed, or broken
        log.info("transformers peer skipped: %s", exc)
        return None
    kwargs = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                  num_attention_heads=cfg.num_heads, intermediate_size=cfg.ffn_size, hidden_act="gelu",
                  position_embedding_type="rotary", token_dropout=True, mask_token_id=32, pad_token_id=1,
                  emb_layer_norm_before=False, layer_norm_eps=cfg.layer_norm_eps, max_position_embeddings=1026,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    try:
        hf_cfg = EsmConfig(attn_implementation="sdpa", **kwargs)
    except TypeError:
        hf_cfg = EsmConfig(**kwargs)
    try:
        hf_cfg._attn_implementation = "sdpa"
    except Exception:
        pass
    torch.manual_seed(seed)
    with torch.device(device):
        model = EsmModel(hf_cfg, add_pooling_layer=False)
    return model.eval()


def _hf_padded_batches(tokens, token_budget, device):
    """Length-sorted padded batches of at most ``token_budget`` tokens (padding included)."""
    order = np.argsort([-len(t) for t in tokens], kind="stable")
    batches, i = [], 0
    while i < len(order):
        width = len(tokens[order[i]])
        count = max(1, token_budget // width)
        idx = order[i:i + count]
        ids = torch.full((len(idx), width), 1, dtype=torch.long)  # <pad> = 1
        for row, j in enumerate(idx):
            ids[row, :len(tokens[j])] = torch.from_numpy(tokens[j])
        mask = (ids != 1).long()
        batches.append((idx, ids.to(device), mask.to(device)))
        i += count
    return batches


def _hf_pool(hidden, mask, pool_residues=1024):
    """Mean over residues 1 .. min(pool_residues, len), as the packed path (and the original) does."""
    residues = mask.sum(1) - 2
    pos = torch.arange(hidden.shape[1], device=hidden.device)[None, :]
    n = residues.clamp(max=pool_residues)
    keep = ((pos >= 1) & (pos <= n[:, None])).float()
    return (hidden.float() * keep[..., None]).sum(1) / n.clamp(min=1)[:, None].float()


def _hf_run(model, batches):
    @torch.inference_mode()
    def run():
        for _, ids, mask in batches:
            _hf_pool(model(input_ids=ids, attention_mask=mask).last_hidden_state, mask)

    return run


@torch.inference_mode()
def _hf_embed(model, batches, n, hidden):
    out = torch.empty(n, hidden)
    for idx, ids, mask in batches:
        out[torch.from_numpy(np.asarray(idx))] = _hf_pool(model(input_ids=ids, attention_mask=mask).last_hidden_state,
                                                          mask).cpu()
    return out


def _hf_state(model, cfg: ESM2Config):
    """The peer's weights under checkpoint names; its rotary inv_freq (a buffer that transformers may keep
    out of the state dict, or in one place for all layers) is copied to every layer's checkpoint key."""
    state = dict(model.state_dict())
    inv = [v for k, v in model.named_buffers() if k.endswith("inv_freq")]
    if inv:
        inv_freq = inv[0].float()
    else:  # what transformers computes (fp32, not rounded through fp16)
        d = cfg.head_dim
        inv_freq = 1.0 / (10000 ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    for i in range(cfg.num_layers):
        state.setdefault(f"encoder.layer.{i}.attention.self.rotary_embeddings.inv_freq", inv_freq)
    return state


# -- the benchmark --------------------------------------------------------------------------------


def run_encoder_benchmark(device="cuda", quick=False, seed=0, tiny=False, repeats=3, token_budget=65536,
                          compile=None, error_sample=None, routes=False) -> dict:
    """Benchmark the encoders; returns ``{stage: {...}, "ratios": {...}, "relative_error": {...}}``.

    Stages (absent when they cannot run here): ``esm2_packed_bf16`` (our packed forward, eager),
    ``esm2_packed_bf16_compiled`` (each layer's pointwise work under torch.compile; CUDA, not quick),
    ``esm2_transformers_sdpa_bf16`` (transformers ``EsmModel``, SDPA, length-sorted padded batches of
    ``token_budget`` tokens; needs transformers), ``dnabert_s_packed_bf16`` (on the DNA frames of the
    same proteins). Each stage has tokens_per_s, sequences_per_s, mfu, seconds (median), seconds_min,
    seconds_max, peak_memory_gb, reserved_memory_gb, plus tokens, sequences, ceiling_tflops, dtype and
    attention. ``ratios``: speed-ups and the DNABERT-S time as a fraction of the ESM-2 time;
    ``relative_error``: ||bf16 - fp32|| / ||fp32|| of pooled embeddings on a subsample (same weights).
    On a CPU (or with ``tiny=True``) the shapes are small and the dtype is fp32 (errors then compare bf16
    against fp32 on the CPU as well).
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    tiny = tiny or not cuda
    compute = torch.bfloat16 if cuda else torch.float32
    if tiny:
        esm_cfg = ESM2Config(num_layers=2, hidden_size=64, num_heads=4, ffn_size=128)
        dna_cfg = DNABERTSConfig(num_layers=2, hidden_size=96, num_heads=12, intermediate_size=192)
        n, budget, sample = (60 if quick else 200), min(token_budget, 4096), 16
    else:
        esm_cfg, dna_cfg = ESM2Config.esm2_t36_3B_UR50D(), DNABERTSConfig.dnabert_s()
        n, budget, sample = (600 if quick else 3000), token_budget, (64 if quick else 256)
    sample = error_sample or sample
    compile = (cuda and not quick and not tiny) if compile is None else compile

    proteins, frames = make_workload(n, seed=seed)
    esm_tokens = esm_tokenize(proteins)
    esm_n_tokens = int(sum(len(t) for t in esm_tokens))
    ceiling = matmul_ceiling_tflops(device, n=8192 if not tiny else 512, dtype=compute, repeats=10 if not tiny else 3)
    results, ratios, errors = {}, {"matmul_ceiling_tflops": ceiling}, {}
    dtype_name = str(compute).replace("torch.", "")
    sub = list(range(0, n, max(1, n // sample)))[:sample]
    sub_tokens = [esm_tokens[i] for i in sub]
    hidden = esm_cfg.hidden_size

    # ESM-2: one set of random weights for fp32 reference, our bf16 path and (if present) the peer.
    hf = _hf_esm(esm_cfg, device, seed) if (cuda or tiny) else None
    if hf is not None:
        state = _hf_state(hf, esm_cfg)
        try:
            esm_ref = ESM2Encoder.from_state_dict(state, esm_cfg, device, torch.float32,
                                                  source="transformers EsmModel")
        except Exception as exc:  # a transformers version with other key names: no shared weights then
            log.warning("cannot share the peer's weights (%s); keys: %s", exc, sorted(state)[:12])
            esm_ref = None
    if hf is not None and esm_ref is not None:
        hf_batches_sub = _hf_padded_batches(sub_tokens, budget, device)
        ref = _embed_packed(esm_ref, sub_tokens, budget, device)
        errors["esm2_transformers_fp32_vs_ours_fp32"] = _rel(_hf_embed(hf, hf_batches_sub, len(sub), hidden), ref)
        esm = ESM2Encoder.from_state_dict(state, esm_cfg, device, compute)
        del state
        hf = hf.to(compute)
        errors[f"esm2_transformers_{dtype_name}_vs_fp32"] = _rel(_hf_embed(hf, hf_batches_sub, len(sub), hidden), ref)
    else:
        esm_ref = ESM2Encoder.from_config(esm_cfg, seed=seed, device=device, dtype=torch.float32)
        ref = _embed_packed(esm_ref, sub_tokens, budget, device)
        esm = ESM2Encoder.from_config(esm_cfg, seed=seed, device=device, dtype=compute)
        if hf is not None:
            hf = hf.to(compute)
    errors[f"esm2_{dtype_name}_vs_fp32"] = _rel(_embed_packed(esm, sub_tokens, budget, device), ref)
    del esm_ref
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()

    packed = _packed_batches(esm_tokens, budget, device)
    name = f"esm2_packed_{dtype_name}"
    results[name] = _stage(_run_packed(esm, packed), device, esm_n_tokens, n, esm.flops_per_token, ceiling, repeats,
                           name=name, dtype=dtype_name, attention=esm.attention_path, batches=len(packed))
    esm_seconds = results[name]["seconds"]
    if compile:
        try:
            with torch.device("meta"):
                esm_c = ESM2Encoder(esm_cfg, attention=esm.attention, compile=True)
            esm_c.load_state_dict(esm.state_dict(), assign=True)  # the same tensors, no copy
            esm_c = esm_c.eval()._setup()
            cname = name + "_compiled"
            results[cname] = _stage(_run_packed(esm_c, packed), device, esm_n_tokens, n, esm.flops_per_token, ceiling,
                                    repeats, name=cname, dtype=dtype_name, attention=esm_c.attention_path,
                                    batches=len(packed))
            errors[f"esm2_compiled_{dtype_name}_vs_fp32"] = _rel(_embed_packed(esm_c, sub_tokens, budget, device),
                                                                 ref)
            esm_seconds = min(esm_seconds, results[cname]["seconds"])
            if (cuda and not tiny) or routes:
                _route_rows(esm, esm_c, cname, packed, sub_tokens, ref, budget, device, esm_n_tokens, n, ceiling,
                            repeats, results, errors)
            del esm_c
        except Exception as exc:  # compilation is an optional speed-up
            log.warning("compiled ESM-2 stage skipped: %s: %s", type(exc).__name__, exc)
    if hf is not None:
        hf_batches = _hf_padded_batches(esm_tokens, budget, device)
        pname = f"esm2_transformers_sdpa_{dtype_name}"
        results[pname] = _stage(_hf_run(hf, hf_batches), device, esm_n_tokens, n, esm.flops_per_token, ceiling,
                                repeats, name=pname, dtype=dtype_name, attention="sdpa-padded (transformers)",
                                batches=len(hf_batches))
        ratios["esm2_packed_speedup_vs_transformers"] = results[pname]["seconds"] / results[name]["seconds"]
        if name + "_compiled" in results:
            ratios["esm2_packed_compiled_speedup_vs_transformers"] = (
                results[pname]["seconds"] / results[name + "_compiled"]["seconds"])
        del hf, hf_batches
    del esm, packed, ref
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()

    # DNABERT-S on the DNA frames of the same proteins.
    dna = DNABERTSEncoder.from_config(dna_cfg, seed=seed, device=device, dtype=compute)
    dna_tokens = [np.asarray(t, dtype=np.int64) for t in dna.tokenize(frames)]
    dna_n_tokens = int(sum(len(t) for t in dna_tokens))
    dna_sub = [dna_tokens[i] for i in sub]
    dna_ref = DNABERTSEncoder.from_config(dna_cfg, seed=seed, device=device, dtype=torch.float32)
    errors[f"dnabert_s_{dtype_name}_vs_fp32"] = _rel(_embed_packed(dna, dna_sub, budget, device),
                                                     _embed_packed(dna_ref, dna_sub, budget, device))
    del dna_ref
    dpacked = _packed_batches(dna_tokens, budget, device)
    dname = f"dnabert_s_packed_{dtype_name}"
    results[dname] = _stage(_run_packed(dna, dpacked), device, dna_n_tokens, n, dna.flops_per_token, ceiling, repeats,
                            name=dname, dtype=dtype_name, attention=dna.attention_path, batches=len(dpacked))
    dna_seconds = results[dname]["seconds"]
    variants = []
    if compile:
        variants.append((dname + "_compiled", dna.attention, True))
    if cuda and not quick and dna.attention_path != "sdpa-padded":
        variants.append((dname + "_sdpa_padded", "sdpa-padded", False))
    for vname, attention, compiled in variants:
        try:
            with torch.device("meta"):
                variant = DNABERTSEncoder(dna_cfg, attention=attention, compile=compiled)
            variant.load_state_dict(dna.state_dict(), assign=True)  # the same tensors, no copy
            variant = variant.eval()._setup()
            results[vname] = _stage(_run_packed(variant, dpacked), device, dna_n_tokens, n, dna.flops_per_token,
                                    ceiling, repeats, name=vname, dtype=dtype_name, attention=variant.attention_path,
                                    batches=len(dpacked))
            if attention == dna.attention:
                dna_seconds = min(dna_seconds, results[vname]["seconds"])
            del variant
        except Exception as exc:  # optional variants
            log.warning("%s stage skipped: %s: %s", vname, type(exc).__name__, exc)
    ratios["dnabert_s_seconds_fraction_of_esm2"] = dna_seconds / esm_seconds
    ratios["dnabert_s_tokens_per_frame"] = dna_n_tokens / n
    ratios["esm2_tokens_per_protein"] = esm_n_tokens / n
    del dna, dpacked
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()

    results["ratios"] = ratios
    results["relative_error"] = errors
    return results
