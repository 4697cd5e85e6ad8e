"""DNABERT-S (Zhou et al. 2024; DNABERT-2 architecture), inference only, on packed batches.

No ``trust_remote_code``: this is the hub's ``bert_layers.py`` math written out. Per sequence
``[CLS] BPE tokens [SEP]``:

    x = LN_emb(word_embedding(tokens) + token_type_embedding[0])       (no position embeddings)
    for each of the 12 layers (post-LayerNorm BERT):
        q, k, v = split(Wqkv x + bqkv)
        x = LN1(x + Wo attention(q, k, v) + bo)        # softmax(q k^T / sqrt(d) - slope_h |i - j|) v
        g, u = split(W_gated x)                        # bias-free h -> 2f projection
        x = LN2(x + W_wo (gelu(g) * u) + b_wo)         # exact (erf) GELU on the first f values
    embedding = mean of x over ALL tokens, [CLS] and [SEP] included

ALiBi slopes: for a power of two n heads ``s, s^2, ..., s^n`` with ``s = 2^(-8/n)``; otherwise the
slopes of the nearest lower power of two c, then every second slope of 2c heads for the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CheckpointError
from . import checkpoints
from .attention import PackedAttention
from .encoder import Encoder, pool_segments

__all__ = ["DNABERTSConfig", "DNABERTSEncoder", "alibi_slopes", "load_tokenizer", "DEFAULT_TOKENIZER"]

DEFAULT_TOKENIZER = Path(__file__).resolve().parent.parent / "data" / "dnabert-s"


def alibi_slopes(n_heads: int) -> list[float]:
    """DNABERT-2's (and the ALiBi paper's) head slopes, also for head counts that are not powers of two."""

    def power_of_2(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))  # = 2^(-8/n)
        return [start * start**i for i in range(n)]

    if math.log2(n_heads).is_integer():
        return power_of_2(n_heads)
    c = 2 ** math.floor(math.log2(n_heads))
    return power_of_2(c) + alibi_slopes(2 * c)[0::2][: n_heads - c]


def load_tokenizer(path=None):
    """The BPE tokenizer (``tokenizers`` library) with the baked-in padding and truncation turned off."""
    from tokenizers import Tokenizer

    path = Path(path) if path is not None else DEFAULT_TOKENIZER
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise CheckpointError(f"{path}: no tokenizer.json")
    tokenizer = Tokenizer.from_file(str(file))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


@dataclass
class DNABERTSConfig:
    num_layers: int = 12
    hidden_size: int = 768
    num_heads: int = 12
    intermediate_size: int = 3072
    vocab_size: int = 4096
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def dnabert_s(cls) -> "DNABERTSConfig":
        """The published ``zhihan1996/DNABERT-S`` shape (117M parameters)."""
        return cls()

    @classmethod
    def from_hf(cls, config: dict, source="DNABERT-S config.json") -> "DNABERTSConfig":
        """From a Hugging Face config dict (config.json), every shape within :data:`LIMITS`, checked
        before anything is built from it."""
        if not isinstance(config, dict):
            raise CheckpointError(f"{source}: not a JSON object")
        lim = LIMITS
        cfg = cls(num_layers=checkpoints.config_int(config, "num_hidden_layers", 1, lim["layers"], source),
                  hidden_size=checkpoints.config_int(config, "hidden_size", 1, lim["hidden"], source),
                  num_heads=checkpoints.config_int(config, "num_attention_heads", 1, lim["heads"], source),
                  intermediate_size=checkpoints.config_int(config, "intermediate_size", 1, lim["ffn"], source),
                  vocab_size=checkpoints.config_int(config, "vocab_size", 1, lim["vocab"], source, 4096),
                  type_vocab_size=checkpoints.config_int(config, "type_vocab_size", 1, lim["type_vocab"], source, 2),
                  layer_norm_eps=checkpoints.config_float(config, "layer_norm_eps", 0.0, 1.0, source, 1e-12))
        if cfg.hidden_size % cfg.num_heads:
            raise CheckpointError(f"{source}: hidden_size {cfg.hidden_size} does not split into "
                                  f"{cfg.num_heads} heads")
        if cfg.num_parameters > lim["parameters"]:
            raise CheckpointError(f"{source}: the config describes {cfg.num_parameters:.3g} parameters, more than "
                                  f"the {lim['parameters']:.3g} supported")
        return cfg

    @property
    def num_parameters(self) -> int:
        h, f = self.hidden_size, self.intermediate_size
        return (self.vocab_size + self.type_vocab_size + 2) * h + self.num_layers * (4 * h * h + 3 * h * f + 9 * h)


#: Bounds on a config.json's shapes, generous (DNABERT-S: 12 layers, hidden 768, 12 heads, FFN 3072,
#: vocabulary 4096) but finite, checked before anything is built from the config.
LIMITS = {"layers": 256, "hidden": 32768, "heads": 1024, "ffn": 131072, "vocab": 1 << 20, "type_vocab": 1024,
          "parameters": 64e9}


class DNABERTSLayer(nn.Module):
    """One post-LayerNorm BERT layer with ALiBi attention and a gated-GELU MLP::

        q, k, v = attention_inputs(x)          # one fused QKV product
        a = attention(q, k, v)                 # ALiBi biases inside the attention path
        x = attention_output_and_mlp(x, a)     # LN(x + out(a)); LN(x + wo(gelu(g) * u)), [g | u] = gated(x)
    """

    def __init__(self, cfg: DNABERTSConfig):
        super().__init__()
        h, f = cfg.hidden_size, cfg.intermediate_size
        self.num_heads = cfg.num_heads
        self.qkv = nn.Linear(h, 3 * h)
        self.out = nn.Linear(h, h)
        self.attn_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.gated = nn.Linear(h, 2 * f, bias=False)  # rows: gated half (GELU), then linear half
        self.wo = nn.Linear(f, h)
        self.mlp_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)

    def attention_inputs(self, x):
        return self.qkv(x).unflatten(-1, (3, self.num_heads, -1)).unbind(-3)

    def attention_output_and_mlp(self, x, a):
        x = self.attn_norm(x + self.out(a.flatten(-2)))
        gated, linear = self.gated(x).chunk(2, dim=-1)
        return self.mlp_norm(x + self.wo(F.gelu(gated) * linear))


class DNABERTSEncoder(Encoder):
    COMPILED = (DNABERTSLayer, ("attention_output_and_mlp",))

    def __init__(self, config: DNABERTSConfig, attention: str = "auto", compile: bool = False, tokenizer_path=None):
        super().__init__(config, attention=attention, compile=compile)
        h = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, h)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, h)
        self.embed_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(DNABERTSLayer(config) for _ in range(config.num_layers))
        self._slopes = {}  # device -> fp32 ALiBi slopes (not a buffer: .half() must not round them)
        self.tokenizer_path = tokenizer_path
        self._tokenizer = None

    # -- construction ----------------------------------------------------------------------------

    @staticmethod
    def _shapes(cfg: DNABERTSConfig) -> dict:
        h, f = cfg.hidden_size, cfg.intermediate_size
        shapes = {"embeddings.word_embeddings.weight": (cfg.vocab_size, h),
                  "embeddings.token_type_embeddings.weight": (cfg.type_vocab_size, h),
                  "embeddings.LayerNorm.weight": (h,), "embeddings.LayerNorm.bias": (h,)}
        for i in range(cfg.num_layers):
            p = f"encoder.layer.{i}."
            shapes.update({p + "attention.self.Wqkv.weight": (3 * h, h), p + "attention.self.Wqkv.bias": (3 * h,),
                           p + "attention.output.dense.weight": (h, h), p + "attention.output.dense.bias": (h,),
                           p + "attention.output.LayerNorm.weight": (h,), p + "attention.output.LayerNorm.bias": (h,),
                           p + "mlp.gated_layers.weight": (2 * f, h), p + "mlp.wo.weight": (h, f),
                           p + "mlp.wo.bias": (h,), p + "mlp.layernorm.weight": (h,), p + "mlp.layernorm.bias": (h,)})
        return shapes

    _OURS = {"attention.self.Wqkv": "qkv", "attention.output.dense": "out", "attention.output.LayerNorm": "attn_norm",
             "mlp.gated_layers": "gated", "mlp.wo": "wo", "mlp.layernorm": "mlp_norm"}

    @classmethod
    def from_state_dict(cls, state, config: DNABERTSConfig, device="cpu", dtype=torch.float32, attention="auto",
                        compile=False, tokenizer_path=None, source="checkpoint") -> "DNABERTSEncoder":
        """From a DNABERT-2-named state dict (``bert.`` prefix optional; MLM/pooler heads ignored)."""
        w = checkpoints.select_weights(state, cls._shapes(config), prefixes=("bert.",),
                                       ignore=("cls.", "pooler.", "lm_head."), source=source)
        ours = {"word_embeddings.weight": w["embeddings.word_embeddings.weight"],
                "token_type_embeddings.weight": w["embeddings.token_type_embeddings.weight"],
                "embed_norm.weight": w["embeddings.LayerNorm.weight"],
                "embed_norm.bias": w["embeddings.LayerNorm.bias"]}
        for key, value in w.items():
            if key.startswith("encoder.layer."):
                i, rest = key[len("encoder.layer."):].split(".", 1)
                module, part = rest.rsplit(".", 1)
                ours[f"layers.{i}.{cls._OURS[module]}.{part}"] = value
        ours = {k: checkpoints.to_device(v, device, dtype) for k, v in ours.items()}
        with torch.device("meta"):
            model = cls(config, attention=attention, compile=compile, tokenizer_path=tokenizer_path)
        model.load_state_dict(ours, strict=True, assign=True)
        return model.eval()._setup()

    @classmethod
    def from_pretrained(cls, path, device="cpu", dtype=torch.float32, attention="auto", compile=False,
                        tokenizer_path=None):
        """From a folder (config.json + weights [+ tokenizer.json]) or a locally cached Hugging Face id.
        The tokenizer is the folder's own ``tokenizer.json`` if it has one, else the shipped one.

        The config is checked first (:meth:`DNABERTSConfig.from_hf`), then its layer count against the
        weights' keys (no tensor is loaded), then every shape, and the tokenizer's vocabulary against
        the embedding's rows; each tensor is checked (finite, of sane magnitude) as it is converted."""
        folder = checkpoints.resolve_checkpoint(path)
        where = folder if folder.is_dir() else folder.parent
        config = DNABERTSConfig.from_hf(checkpoints.read_config(folder), source=where / "config.json")
        state = checkpoints.read_state_dict(folder)
        checkpoints.check_layer_count(state, config.num_layers, str(folder), prefixes=("bert.",))
        if tokenizer_path is None:
            own = where / "tokenizer.json"
            tokenizer_path = own if own.is_file() else None
        try:
            n_tokens = load_tokenizer(tokenizer_path).get_vocab_size()
        except CheckpointError:
            raise
        except Exception as exc:  # tokenizers' own parse errors
            raise CheckpointError(f"{tokenizer_path or DEFAULT_TOKENIZER}: not a readable tokenizer "
                                  f"({' '.join(str(exc).split())[:200]})") from None
        if n_tokens > config.vocab_size:
            raise CheckpointError(f"{where / 'config.json'}: vocab_size {config.vocab_size} is smaller than the "
                                  f"tokenizer's {n_tokens} tokens")
        return cls.from_state_dict(state, config, device, dtype, attention, compile, tokenizer_path, str(folder))

    @classmethod
    def from_config(cls, config: DNABERTSConfig, seed=0, device="cpu", dtype=torch.float32, attention="auto",
                    compile=False, tokenizer_path=None) -> "DNABERTSEncoder":
        """Deterministic random weights (drawn in fp32 on ``device``, then cast); shipped tokenizer by default."""
        with torch.device("meta"):
            model = cls(config, attention=attention, compile=compile, tokenizer_path=tokenizer_path)
        state = checkpoints.random_weights(model, seed, device, dtype)
        model.load_state_dict(state, strict=True, assign=True)
        return model.eval()._setup()

    # -- properties ------------------------------------------------------------------------------

    @property
    def slopes(self) -> torch.Tensor:
        """ALiBi slopes, fp32, on the model's device."""
        key = str(self.device)
        if key not in self._slopes:
            self._slopes[key] = torch.tensor(alibi_slopes(self.config.num_heads), dtype=torch.float32,
                                             device=self.device)
        return self._slopes[key]

    def _alibi(self):
        return self.slopes

    @property
    def flops_per_token(self) -> float:
        """Forward FLOPs per token in the matrix products: ``2 * (4 h^2 + 3 h f) * L`` (0.23 GFLOP for
        DNABERT-S); attention adds ``4 h n L`` for n tokens (``attention_flops_per_token(n)``)."""
        c = self.config
        return 2.0 * (4 * c.hidden_size**2 + 3 * c.hidden_size * c.intermediate_size) * c.num_layers

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_path)
        return self._tokenizer

    def tokenize(self, sequences) -> list[list[int]]:
        """``[CLS] BPE ids [SEP]`` per DNA sequence, no padding, no truncation."""
        return [e.ids for e in self.tokenizer.encode_batch([str(s) for s in sequences])]

    # -- the forward pass ------------------------------------------------------------------------

    @torch.inference_mode()
    def forward_packed(self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int) -> torch.Tensor:
        """Mean embeddings ``[B, hidden]`` (float32) over all tokens of each packed sequence."""
        device = self.device
        input_ids = input_ids.to(device).long()
        cu = cu_seqlens.to(device)
        T = input_ids.numel()
        lengths = (cu[1:] - cu[:-1]).long()
        x = self.embed_norm(self.word_embeddings(input_ids) + self.token_type_embeddings.weight[0])
        attn = PackedAttention(self.attention_path, cu, max_seqlen, self.config.num_heads, self.slopes,
                               total_tokens=T)
        mlp = self._methods["attention_output_and_mlp"]
        for layer in self.layers:
            q, k, v = layer.attention_inputs(x)
            x = mlp(layer, self._dynamic(x), self._dynamic(attn(q, k, v)))
        return pool_segments(x, cu, max_seqlen, 0, lengths)
