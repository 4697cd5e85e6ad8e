"""ESM-2 protein language model (Lin et al. 2023), inference only, on packed batches.

The math is fair-esm's ``esm/model/esm2.py``; the checkpoint key names are Hugging Face's
(``facebook/esm2_*``: ``esm.encoder.layer.N...``). Per sequence ``<cls> residues <eos>``:

    x = 0.88 / (1 - masked fraction) * embed(tokens), <mask> embeddings zeroed      (token dropout)
    for each of the L layers (pre-LayerNorm):
        q, k, v = split(Wqkv LN1(x) + bqkv)           # one fused [3h, h] matmul
        q, k = rotary(q), rotary(k)                   # positions restart at 0 in every sequence
        x = x + Wo attention(q, k, v) + bo            # softmax(q k^T / sqrt(d)) v, per sequence
        x = x + W2 gelu(W1 LN2(x) + b1) + b2           # exact (erf) GELU
    x = LN_after(x)
    embedding = mean of x over residues 1 .. min(1024, len)     (no <cls>, <eos>)

Rotary ``inv_freq`` comes from the checkpoint (its values were rounded through fp16; recomputing
them gives different embeddings). Attention is computed by ``attention.PackedAttention``, which holds
every fast path next to the reference one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CheckpointError
from . import checkpoints
from .attention import PackedAttention
from .encoder import Encoder, packed_positions, pool_segments

__all__ = ["ESM2Config", "ESM2Encoder", "ALPHABET", "tokenize"]

# fair-esm's ESM-1b/ESM-2 alphabet: 4 specials, 27 residue letters, one filler, <mask>.
ALPHABET = ("<cls>", "<pad>", "<eos>", "<unk>", *"LAGVSERTIDPKQNFYMHWCXBUZO.-", "<null_1>", "<mask>")
CLS, PAD, EOS, UNK, MASK = 0, 1, 2, 3, 32
_LOOKUP = np.full(256, UNK, dtype=np.int64)
for _i, _tok in enumerate(ALPHABET):
    if len(_tok) == 1:
        _LOOKUP[ord(_tok)] = _i


def tokenize(proteins) -> list[np.ndarray]:
    """``<cls> residues <eos>`` ids (int64) per protein; a letter outside the alphabet becomes ``<unk>``."""
    out = []
    for protein in proteins:
        codes = np.frombuffer(str(protein).encode("ascii", "replace"), dtype=np.uint8)
        ids = np.empty(codes.size + 2, dtype=np.int64)
        ids[0], ids[-1] = CLS, EOS
        ids[1:-1] = _LOOKUP[codes]
        out.append(ids)
    return out


@dataclass
class ESM2Config:
    num_layers: int = 36
    hidden_size: int = 2560
    num_heads: int = 40
    ffn_size: int = 10240
    vocab_size: int = 33
    layer_norm_eps: float = 1e-5
    token_dropout: bool = True
    pool_residues: int = 1024  # the mean covers residues 1 .. min(pool_residues, len)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def esm2_t36_3B_UR50D(cls) -> "ESM2Config":
        return cls(num_layers=36, hidden_size=2560, num_heads=40, ffn_size=10240, vocab_size=33)

    @classmethod
    def from_hf(cls, config: dict, source="ESM-2 config.json") -> "ESM2Config":
        """From a Hugging Face ``EsmConfig`` dict (config.json), every shape within :data:`LIMITS`.

        Checked before anything is built from it: a config claiming 10 million layers is refused here,
        in microseconds, instead of building per-layer structures (or weights) for each of them."""
        if not isinstance(config, dict):
            raise CheckpointError(f"{source}: not a JSON object")
        lim = LIMITS
        cfg = cls(num_layers=checkpoints.config_int(config, "num_hidden_layers", 1, lim["layers"], source),
                  hidden_size=checkpoints.config_int(config, "hidden_size", 2, lim["hidden"], source),
                  num_heads=checkpoints.config_int(config, "num_attention_heads", 1, lim["heads"], source),
                  ffn_size=checkpoints.config_int(config, "intermediate_size", 1, lim["ffn"], source),
                  vocab_size=checkpoints.config_int(config, "vocab_size", len(ALPHABET), lim["vocab"], source, 33),
                  layer_norm_eps=checkpoints.config_float(config, "layer_norm_eps", 0.0, 1.0, source, 1e-5),
                  token_dropout=config.get("token_dropout", True))
        if not isinstance(cfg.token_dropout, bool):
            raise CheckpointError(f"{source}: field 'token_dropout' is {cfg.token_dropout!r:.40}, not true or false")
        unsupported = {"position_embedding_type": "rotary", "emb_layer_norm_before": False, "hidden_act": "gelu"}
        for key, want in unsupported.items():
            if config.get(key, want) not in (want, None):
                raise CheckpointError(f"{source}: {key}={config[key]!r:.40} is not supported (only {want!r})")
        if cfg.hidden_size % cfg.num_heads or cfg.head_dim % 2:
            raise CheckpointError(f"{source}: hidden_size {cfg.hidden_size} does not split into "
                                  f"{cfg.num_heads} heads of even size")
        if cfg.num_parameters > lim["parameters"]:
            raise CheckpointError(f"{source}: the config describes {cfg.num_parameters:.3g} parameters, more than "
                                  f"the {lim['parameters']:.3g} supported")
        return cfg

    @property
    def num_parameters(self) -> int:
        h, f = self.hidden_size, self.ffn_size
        return self.vocab_size * h + 2 * h + self.num_layers * (4 * h * h + 2 * h * f + 9 * h + f)


#: Bounds on a config.json's shapes, generous (ESM-2 15B: 48 layers, hidden 5120, 40 heads, FFN 20480,
#: vocabulary 33) but finite, checked before anything is built from the config.
LIMITS = {"layers": 256, "hidden": 32768, "heads": 1024, "ffn": 131072, "vocab": 1 << 20, "parameters": 64e9}


def rotary(x, cos, sin):
    """Rotate the two halves of each head: fair-esm's ``x * cos + rotate_half(x) * sin``, in fp32."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)


class ESM2Layer(nn.Module):
    """One pre-LayerNorm transformer layer, in four steps around the attention kernel::

        x, q, k, v = attention_inputs(x, f, cos, sin)   # x += f (last layer's FFN output); LN; QKV; rotary
        a = attention(q, k, v)
        x, h = attention_output(x, a)                   # x += out(a); h = LN(x)
        f = ffn(h)                                      # fc2(GELU(fc1(h))), added by the next layer

    The residual sum ``x + f`` is deferred to the next layer's ``attention_inputs`` (or ``finish``), where it
    is fused with that layer's LayerNorm: the same sum, one pass over the tokens fewer.
    ``gelu_epilogue``: on CUDA in fp16/bf16, bias and GELU are applied in the fc1 product's cuBLAS epilogue
    (tanh approximation of GELU; see the README's BF16 notes) instead of a separate pass over the 4h-wide
    activations; elsewhere GELU is the exact (erf) one.
    """

    def __init__(self, cfg: ESM2Config):
        super().__init__()
        h = cfg.hidden_size
        self.num_heads = cfg.num_heads
        self.attn_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.qkv = nn.Linear(h, 3 * h)  # rows: query, key, value (fused at load time)
        self.out = nn.Linear(h, h)
        self.ffn_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.fc1 = nn.Linear(h, cfg.ffn_size)
        self.fc2 = nn.Linear(cfg.ffn_size, h)

    def attention_inputs(self, x, f, cos, sin):
        if f is not None:
            x = x + f
        q, k, v = self.qkv(self.attn_norm(x)).unflatten(-1, (3, self.num_heads, -1)).unbind(-3)
        return x, rotary(q, cos, sin), rotary(k, cos, sin), v

    def attention_output(self, x, a):
        x = x + self.out(a.flatten(-2))
        return x, self.ffn_norm(x)

    def ffn(self, h, gelu_epilogue: bool = False):
        if gelu_epilogue:
            g = torch._addmm_activation(self.fc1.bias, h, self.fc1.weight.t(), use_gelu=True)
        else:
            g = F.gelu(self.fc1(h))
        return self.fc2(g)


def _finish(x, f, norm_w, norm_b, eps: float):
    return F.layer_norm(x + f, (x.shape[-1],), norm_w, norm_b, eps)


class ESM2Encoder(Encoder):
    COMPILED = (ESM2Layer, ("attention_inputs", "attention_output"))

    def __init__(self, config: ESM2Config, attention: str = "auto", compile: bool = False,
                 gelu_epilogue: bool | None = None):
        super().__init__(config, attention=attention, compile=compile)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(ESM2Layer(config) for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.register_buffer("inv_freq", torch.zeros(config.head_dim // 2))
        self.gelu_epilogue = gelu_epilogue  # None: on CUDA in fp16/bf16

    # -- construction ----------------------------------------------------------------------------

    @classmethod
    def _hf_shapes(cls, cfg: ESM2Config) -> dict:
        h, f = cfg.hidden_size, cfg.ffn_size
        shapes = {"embeddings.word_embeddings.weight": (cfg.vocab_size, h),
                  "encoder.emb_layer_norm_after.weight": (h,), "encoder.emb_layer_norm_after.bias": (h,)}
        for i in range(cfg.num_layers):
            p = f"encoder.layer.{i}."
            for name in ("query", "key", "value"):
                shapes[p + f"attention.self.{name}.weight"] = (h, h)
                shapes[p + f"attention.self.{name}.bias"] = (h,)
            shapes[p + "attention.self.rotary_embeddings.inv_freq"] = (cfg.head_dim // 2,)
            shapes.update({p + "attention.output.dense.weight": (h, h), p + "attention.output.dense.bias": (h,),
                           p + "attention.LayerNorm.weight": (h,), p + "attention.LayerNorm.bias": (h,),
                           p + "intermediate.dense.weight": (f, h), p + "intermediate.dense.bias": (f,),
                           p + "output.dense.weight": (h, f), p + "output.dense.bias": (h,),
                           p + "LayerNorm.weight": (h,), p + "LayerNorm.bias": (h,)})
        return shapes

    @classmethod
    def from_state_dict(cls, state, config: ESM2Config, device="cpu", dtype=torch.float32, attention="auto",
                        compile=False, source="checkpoint") -> "ESM2Encoder":
        """From a Hugging Face-named state dict (``esm.`` prefix optional; heads ignored)."""
        w = checkpoints.select_weights(state, cls._hf_shapes(config), prefixes=("esm.",),
                                       ignore=("lm_head.", "contact_head.", "pooler."), source=source)

        def get(key, dt=dtype):
            return checkpoints.to_device(w[key], device, dt)

        ours = {"embed_tokens.weight": get("embeddings.word_embeddings.weight"),
                "final_norm.weight": get("encoder.emb_layer_norm_after.weight"),
                "final_norm.bias": get("encoder.emb_layer_norm_after.bias"),
                "inv_freq": get("encoder.layer.0.attention.self.rotary_embeddings.inv_freq", torch.float32)}
        for i in range(config.num_layers):
            p, o = f"encoder.layer.{i}.", f"layers.{i}."
            if not torch.equal(checkpoints.to_device(w[p + "attention.self.rotary_embeddings.inv_freq"], device,
                                                     torch.float32), ours["inv_freq"]):
                raise CheckpointError(f"{source}: layer {i} has a rotary inv_freq different from layer 0's")
            for part in ("weight", "bias"):
                ours[o + f"qkv.{part}"] = torch.cat([get(p + f"attention.self.{n}.{part}")
                                                     for n in ("query", "key", "value")])
                ours[o + f"out.{part}"] = get(p + f"attention.output.dense.{part}")
                ours[o + f"attn_norm.{part}"] = get(p + f"attention.LayerNorm.{part}")
                ours[o + f"fc1.{part}"] = get(p + f"intermediate.dense.{part}")
                ours[o + f"fc2.{part}"] = get(p + f"output.dense.{part}")
                ours[o + f"ffn_norm.{part}"] = get(p + f"LayerNorm.{part}")
        with torch.device("meta"):
            model = cls(config, attention=attention, compile=compile)
        model.load_state_dict(ours, strict=True, assign=True)
        return model.eval()._setup()

    @classmethod
    def from_pretrained(cls, path, device="cpu", dtype=torch.float32, attention="auto", compile=False):
        """From a folder, weights file or locally cached Hugging Face id (e.g. ``facebook/esm2_t36_3B_UR50D``).

        The config is checked first (:meth:`ESM2Config.from_hf`), then its layer count against the
        weights' keys (read from the file's header: no tensor is loaded), then every shape; each tensor
        is checked (finite, of sane magnitude) as it is converted."""
        folder = checkpoints.resolve_checkpoint(path)
        where = folder if folder.is_dir() else folder.parent
        config = ESM2Config.from_hf(checkpoints.read_config(folder), source=where / "config.json")
        state = checkpoints.read_state_dict(folder)
        checkpoints.check_layer_count(state, config.num_layers, str(folder), prefixes=("esm.",))
        return cls.from_state_dict(state, config, device, dtype, attention, compile, source=str(folder))

    @classmethod
    def from_config(cls, config: ESM2Config, seed=0, device="cpu", dtype=torch.float32, attention="auto",
                    compile=False) -> "ESM2Encoder":
        """Deterministic random weights (same seed and device -> same weights, whatever ``dtype``).

        Every tensor is drawn in fp32 on ``device`` and then cast, so a bf16 and an fp32 model of one
        seed hold the same weights up to rounding. ``inv_freq`` is the standard rotary one rounded
        through fp16, as in the published checkpoints.
        """
        with torch.device("meta"):
            model = cls(config, attention=attention, compile=compile)
        state = checkpoints.random_weights(model, seed, device, dtype)
        d = config.head_dim
        inv = 1.0 / (10000 ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
        state["inv_freq"] = inv.half().float().to(device)
        model.load_state_dict(state, strict=True, assign=True)
        return model.eval()._setup()

    # -- properties ------------------------------------------------------------------------------

    @property
    def uses_gelu_epilogue(self) -> bool:
        if self.gelu_epilogue is not None:
            return bool(self.gelu_epilogue) and self.device.type == "cuda"
        return self.device.type == "cuda" and self.dtype in (torch.float16, torch.bfloat16)

    @property
    def flops_per_token(self) -> float:
        """Forward FLOPs per token in the matrix products: ``2 * (4 h^2 + 2 h f) * L`` (= 24 h^2 L for
        f = 4h; 5.66 GFLOP for ESM-2 3B). Attention adds ``4 h n L`` for a sequence of n tokens
        (``attention_flops_per_token(n)``): about 0.7% at n = 100 for the 3B model."""
        c = self.config
        return 2.0 * (4 * c.hidden_size**2 + 2 * c.hidden_size * c.ffn_size) * c.num_layers

    # -- the forward pass ------------------------------------------------------------------------

    tokenize = staticmethod(tokenize)

    @torch.inference_mode()
    def forward_packed(self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int) -> torch.Tensor:
        """Mean embeddings ``[B, hidden]`` (float32) of the packed sequences ``<cls> residues <eos>``.

        The whole sequence runs through the model; only the mean stops at residue ``pool_residues``
        (1024), as in the original. A protein of no residues pools to zeros (the original gives NaN)."""
        cfg = self.config
        device = self.device
        input_ids = input_ids.to(device).long()
        cu = cu_seqlens.to(device)
        T = input_ids.numel()
        lengths, seq_id, pos = packed_positions(cu, T)

        x = self.embed_tokens(input_ids)
        if cfg.token_dropout:  # x * (1 - 0.15 * 0.8) / (1 - fraction of <mask> in the sequence)
            is_mask = input_ids == MASK
            x = x.masked_fill(is_mask[:, None], 0.0)
            n_mask = torch.zeros(lengths.numel(), device=device).index_add_(0, seq_id, is_mask.float())  # exact
            scale = (1 - 0.15 * 0.8) / (1 - n_mask / lengths)
            x = (x * scale[seq_id, None]).to(x.dtype)

        freqs = pos[:, None].float() * self.inv_freq[None, :]  # [T, d/2]
        cos, sin = self._dynamic(freqs.cos()[:, None, :]), self._dynamic(freqs.sin()[:, None, :])
        attn = PackedAttention(self.attention_path, cu, max_seqlen, cfg.num_heads, total_tokens=T)
        inputs, output = self._methods["attention_inputs"], self._methods["attention_output"]
        epilogue = self.uses_gelu_epilogue
        f = None
        for layer in self.layers:
            x, q, k, v = inputs(layer, self._dynamic(x), f if f is None else self._dynamic(f), cos, sin)
            x, h = output(layer, self._dynamic(x), self._dynamic(attn(q, k, v)))
            f = layer.ffn(h, epilogue)
        x = _finish(x, f, self.final_norm.weight, self.final_norm.bias, cfg.layer_norm_eps)
        # Mean over residues 1 .. min(pool_residues, len): drop <cls> (pos 0) and <eos> (pos len+1).
        return pool_segments(x, cu, max_seqlen, 1, torch.clamp(lengths - 2, min=0, max=cfg.pool_residues))
