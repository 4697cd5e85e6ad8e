"""ESM-2 and DNABERT-S encoders: fixtures of the original models, every attention path against the
reference path, input order, and checkpoints that must be refused."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from virnucpro_kernel.errors import CheckpointError, UnsafeCheckpointError, VirNucProError
from virnucpro_kernel.models.attention import PackedAttention, choose_attention
from virnucpro_kernel.models.checkpoints import resolve_checkpoint
from virnucpro_kernel.models.dnabert_s import DNABERTSConfig, DNABERTSEncoder, alibi_slopes
from virnucpro_kernel.models.esm2 import ALPHABET, ESM2Config, ESM2Encoder, tokenize

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CPU_PATHS = ("sdpa-padded", "sdpa-blockmask", "flex", "reference-padded")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # flex_attention without compile on the CPU


def rel_err(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def rows_rel_err(a, b):
    return ((a.double() - b.double()).norm(dim=1) / b.double().norm(dim=1)).max().item()


@pytest.fixture(scope="module")
def esm_tiny():
    return ESM2Encoder.from_pretrained(FIXTURES / "esm2_tiny")


@pytest.fixture(scope="module")
def esm_expected():
    return json.loads((FIXTURES / "esm2_tiny_expected.json").read_text())


@pytest.fixture(scope="module")
def dnabert_tiny():
    return DNABERTSEncoder.from_pretrained(FIXTURES / "dnabert_s_tiny")


@pytest.fixture(scope="module")
def dnabert_expected():
    return json.loads((FIXTURES / "dnabert_s_tiny_expected.json").read_text())


def with_path(model, path):
    model.attention = path
    model._paths.clear()
    return model


# -- the fixtures of the original models -------------------------------------------------------


def test_esm_alphabet():
    assert len(ALPHABET) == 33 and ALPHABET[32] == "<mask>" and ALPHABET[31] == "<null_1>"
    ids = tokenize(["LAGVSERTIDPKQNFYMHWCXBUZO.-", "J*"])
    assert ids[0].tolist() == [0, *range(4, 31), 2]
    assert ids[1].tolist() == [0, 3, 3, 2]  # letters outside the alphabet are <unk>


@pytest.mark.parametrize("path", ["auto", "reference", "varlen", "sdpa-padded"])
def test_esm_fixture_embeddings(esm_tiny, esm_expected, path):
    model = with_path(esm_tiny, path)
    got = model.embed(esm_expected["sequences"])
    expected = torch.tensor(esm_expected["mean"])
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert rows_rel_err(got, expected) < 1e-5
    with_path(esm_tiny, "auto")


def test_esm_fixture_long_sequence_pools_first_1024_residues(esm_tiny, esm_expected):
    # The 1100-residue sequence runs whole through the model; only the mean stops at residue 1024.
    i = [len(s) for s in esm_expected["sequences"]].index(1100)
    expected = torch.tensor(esm_expected["mean"][i])
    whole = esm_tiny.embed([esm_expected["sequences"][i]])[0]
    truncated_input = esm_tiny.embed([esm_expected["sequences"][i][:1024]])[0]
    assert rel_err(whole, expected) < 1e-5
    assert rel_err(truncated_input, expected) > 1e-3


def test_esm_fixture_rotary_comes_from_the_checkpoint(esm_tiny):
    d = esm_tiny.config.head_dim
    recomputed = 1.0 / (10000 ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    assert not torch.equal(esm_tiny.inv_freq, recomputed)
    assert torch.equal(esm_tiny.inv_freq, recomputed.half().float())


def test_dnabert_fixture_tokens_and_embeddings(dnabert_tiny, dnabert_expected):
    assert dnabert_tiny.tokenize(dnabert_expected["sequences"]) == dnabert_expected["input_ids"]
    expected = torch.tensor(dnabert_expected["mean"])
    for path in ("auto", "reference", "varlen", "flex"):
        got = with_path(dnabert_tiny, path).embed(dnabert_expected["sequences"])
        assert rows_rel_err(got, expected) < 1e-5, path
    with_path(dnabert_tiny, "auto")


def test_dnabert_tokenizer_has_no_padding_or_truncation(dnabert_tiny):
    rng = np.random.default_rng(1)
    long = "".join(rng.choice(list("ACGT"), size=12000))
    short = "ACGTACGTAA"
    ids = dnabert_tiny.tokenize([long, short])
    assert len(ids[0]) > 2000  # the tokenizer.json truncates at 2000 unless told not to
    assert ids[1][0] == 1 and ids[1][-1] == 2 and 3 not in ids[1] and len(ids[1]) < 10


def test_alibi_slopes_for_any_head_count():
    assert alibi_slopes(8) == [2.0 ** -(i + 1) for i in range(8)]
    s12 = alibi_slopes(12)
    assert s12[:8] == alibi_slopes(8) and s12[8:] == alibi_slopes(16)[0:8:2]
    assert s12[8] == pytest.approx(2 ** -0.5)
    assert len(alibi_slopes(6)) == 6 and alibi_slopes(6)[:4] == alibi_slopes(4)


def test_real_shapes_and_flops():
    with torch.device("meta"):
        esm = ESM2Encoder(ESM2Config.esm2_t36_3B_UR50D())
        dna = DNABERTSEncoder(DNABERTSConfig.dnabert_s())
    assert esm.config.head_dim == 64
    assert esm.flops_per_token == pytest.approx(24 * 2560**2 * 36)  # 5.66 GFLOP
    assert sum(p.numel() for p in esm.parameters()) == pytest.approx(2.84e9, rel=0.01)
    assert dna.flops_per_token == pytest.approx(0.23e9, rel=0.03)
    assert sum(p.numel() for p in dna.parameters()) == pytest.approx(117e6, rel=0.02)


# -- every path against the reference, on fresh random models and lengths -------------------------

ODD_ESM = ESM2Config(num_layers=2, hidden_size=40, num_heads=5, ffn_size=72)
ODD_DNA = DNABERTSConfig(num_layers=2, hidden_size=48, num_heads=6, intermediate_size=80)


@pytest.fixture(scope="module")
def odd_models():
    return ESM2Encoder.from_config(ODD_ESM, seed=3), DNABERTSEncoder.from_config(ODD_DNA, seed=4)


def packed(token_lists):
    lengths = [len(t) for t in token_lists]
    cu = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int32)
    return torch.tensor(np.concatenate(token_lists)), cu, max(lengths)


@settings(max_examples=4, deadline=None)
@given(st.lists(st.integers(1, 140), min_size=1, max_size=9), st.integers(0, 2**31 - 1))
def test_packed_paths_equal_reference_and_single_sequences(odd_models, residues, seed):
    rng = np.random.default_rng(seed)
    esm, dna = odd_models
    esm_tokens = [np.array([0, *rng.integers(4, 31, size=n), 2]) for n in residues]
    dna_tokens = [np.array([1, *rng.integers(5, 4096, size=n), 2]) for n in residues]
    for model, tokens in ((esm, esm_tokens), (dna, dna_tokens)):
        ref = with_path(model, "reference").forward_packed(*packed(tokens))
        alone = torch.cat([model.forward_packed(*packed([t])) for t in tokens])
        assert rows_rel_err(alone, ref) < 1e-5
        for path in ("sdpa-padded", "sdpa-blockmask"):  # flex (slow uncompiled on a CPU): below
            got = with_path(model, path).forward_packed(*packed(tokens))
            assert rows_rel_err(got, ref) < 1e-5, (type(model).__name__, path)
        with_path(model, "auto")


def naive_esm(model, tokens):
    """fair-esm's forward for one sequence, written out plainly (padding-free, unfused weights)."""
    c = model.config
    t = torch.as_tensor(tokens)
    x = model.embed_tokens.weight[t]
    is_mask = t == 32
    x = x.masked_fill(is_mask[:, None], 0) * (1 - 0.15 * 0.8) / (1 - is_mask.float().mean())
    pos = torch.arange(len(t)).float()
    freqs = torch.einsum("i,j->ij", pos, model.inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()

    def rot(u):
        u1, u2 = u.chunk(2, dim=-1)
        return u * cos + torch.cat((-u2, u1), dim=-1) * sin

    for layer in model.layers:
        h = F.layer_norm(x, (c.hidden_size,), layer.attn_norm.weight, layer.attn_norm.bias, c.layer_norm_eps)
        q, k, v = (F.linear(h, w, b).view(len(t), c.num_heads, -1).transpose(0, 1)
                   for w, b in zip(layer.qkv.weight.chunk(3), layer.qkv.bias.chunk(3)))
        q, k = rot(q * c.head_dim**-0.5), rot(k)
        a = torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v
        x = x + layer.out(a.transpose(0, 1).reshape(len(t), -1))
        h = F.layer_norm(x, (c.hidden_size,), layer.ffn_norm.weight, layer.ffn_norm.bias, c.layer_norm_eps)
        x = x + layer.fc2(F.gelu(layer.fc1(h)))
    x = model.final_norm(x)
    return x[1:min(1024, len(t) - 2) + 1].mean(0)


def test_flex_path_on_odd_models(odd_models):
    rng = np.random.default_rng(9)
    for model, lo, hi, cls, eos in ((odd_models[0], 4, 31, 0, 2), (odd_models[1], 5, 4096, 1, 2)):
        tokens = [np.array([cls, *rng.integers(lo, hi, size=n), eos]) for n in (3, 130, 1, 47)]
        ref = with_path(model, "reference").forward_packed(*packed(tokens))
        assert rows_rel_err(with_path(model, "flex").forward_packed(*packed(tokens)), ref) < 1e-5
        with_path(model, "auto")


def test_esm_token_dropout_with_mask_tokens(odd_models):
    esm = odd_models[0]
    rng = np.random.default_rng(7)
    tokens = [np.array([0, *rng.integers(4, 31, size=n), 2]) for n in (12, 30, 5)]
    tokens[0][3] = 32
    tokens[1][[2, 9, 10, 20]] = 32
    got = esm.forward_packed(*packed(tokens))
    with torch.no_grad():
        expected = torch.stack([naive_esm(esm, t) for t in tokens])
    assert rows_rel_err(got, expected) < 1e-5


def test_from_config_is_deterministic_and_dtype_independent():
    a = ESM2Encoder.from_config(ODD_ESM, seed=11)
    b = ESM2Encoder.from_config(ODD_ESM, seed=11)
    c = ESM2Encoder.from_config(ODD_ESM, seed=12)
    h = ESM2Encoder.from_config(ODD_ESM, seed=11, dtype=torch.bfloat16)
    for (name, x), y, z, w in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values(),
                                  h.state_dict().values()):
        assert torch.equal(x, y), name
        if name != "inv_freq":
            assert not torch.equal(x, z), name
            assert torch.equal(x.to(torch.bfloat16), w), name
    assert h.dtype == torch.bfloat16 and h.inv_freq.dtype == torch.float32


def test_embed_returns_input_order_whatever_the_packing(odd_models):
    esm, dna = odd_models
    rng = np.random.default_rng(5)
    proteins = ["".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), size=n)) for n in rng.integers(1, 90, size=11)]
    frames = ["".join(rng.choice(list("ACGT"), size=3 * len(p) + 1)) for p in proteins]
    for model, seqs in ((esm, proteins), (dna, frames)):
        one_by_one = torch.cat([model.embed([s]) for s in seqs])
        for budget in (1, 120, 100000):
            assert rows_rel_err(model.embed(seqs, token_budget=budget), one_by_one) < 1e-5
        order = rng.permutation(len(seqs))
        shuffled = model.embed([seqs[i] for i in order], token_budget=120)
        assert rows_rel_err(shuffled, one_by_one[order]) < 1e-5
        assert model.embed([]).shape == (0, model.config.hidden_size)


def test_attention_settings_on_cpu():
    assert choose_attention("auto", "cpu", torch.float32) == "sdpa-padded"
    assert choose_attention("reference", "cpu") == "reference-padded"
    assert choose_attention("varlen", "cpu") == "sdpa-blockmask"
    assert choose_attention("flex", "cpu") == "flex"
    with pytest.raises(VirNucProError):
        choose_attention("flash", "cpu")
    with pytest.raises(VirNucProError):
        choose_attention("varlen-flash", "cpu")
    with pytest.raises(VirNucProError):
        choose_attention("fastest", "cpu")


def test_attention_paths_direct():
    g = torch.Generator().manual_seed(0)
    lengths = [1, 7, 300, 64, 129, 2]
    T, H, D = sum(lengths), 6, 16
    q, k, v = (torch.randn(T, H, D, generator=g) for _ in range(3))
    cu = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int32)
    slopes = torch.tensor(alibi_slopes(H))
    for s in (None, slopes):
        ref = PackedAttention("reference-padded", cu, max(lengths), H, s)(q, k, v)
        # per-sequence attention written out
        for (a, b) in zip(cu[:-1].tolist(), cu[1:].tolist()):
            i = torch.arange(b - a)
            bias = 0 if s is None else -s[:, None, None] * (i[:, None] - i[None, :]).abs()
            w = torch.softmax(q[a:b].transpose(0, 1) @ k[a:b].permute(1, 2, 0) / math.sqrt(D) + bias, -1)
            assert torch.allclose((w @ v[a:b].transpose(0, 1)).transpose(0, 1), ref[a:b], atol=1e-5)
        for path in CPU_PATHS:
            out = PackedAttention(path, cu, max(lengths), H, s, block_tokens=200)(q, k, v)
            assert rel_err(out, ref) < 1e-5, path


# -- checkpoints ---------------------------------------------------------------------------------


def copy_fixture(tmp_path, name):
    target = tmp_path / name
    shutil.copytree(FIXTURES / name, target)
    return target


def test_missing_key_is_named(tmp_path):
    folder = copy_fixture(tmp_path, "esm2_tiny")
    state = load_file(folder / "model.safetensors")
    del state["esm.encoder.layer.1.attention.self.key.bias"]
    save_file(state, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing weight 'encoder\.layer\.1\.attention\.self\.key\.bias'"):
        ESM2Encoder.from_pretrained(folder)


def test_wrong_shape_is_named(tmp_path):
    folder = copy_fixture(tmp_path, "esm2_tiny")
    state = load_file(folder / "model.safetensors")
    state["esm.encoder.layer.0.intermediate.dense.weight"] = torch.zeros(255, 64)
    save_file(state, folder / "model.safetensors")
    with pytest.raises(CheckpointError) as info:
        ESM2Encoder.from_pretrained(folder)
    message = str(info.value)
    assert "encoder.layer.0.intermediate.dense.weight" in message and "[255, 64]" in message and "[256, 64]" in message
    assert "\n" not in message


class Hostile:
    """Unpickling this creates a file: what a malicious checkpoint would do, harmlessly."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("zipfile", [True, False])
def test_pickle_that_runs_code_is_refused_without_running(tmp_path, dnabert_tiny, zipfile):
    folder = copy_fixture(tmp_path, "dnabert_s_tiny")
    marker = tmp_path / "code_ran"
    state = torch.load(FIXTURES / "dnabert_s_tiny" / "pytorch_model.bin", weights_only=True)
    state["payload"] = Hostile(marker)
    torch.save(state, folder / "pytorch_model.bin", _use_new_zipfile_serialization=zipfile)
    with pytest.raises(UnsafeCheckpointError) as info:
        DNABERTSEncoder.from_pretrained(folder)
    assert "pytorch_model.bin" in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, CheckpointError)
    assert not marker.exists()


def test_dnabert_weights_with_bert_prefix_and_heads(tmp_path, dnabert_tiny, dnabert_expected):
    folder = tmp_path / "prefixed"
    folder.mkdir()
    shutil.copy(FIXTURES / "dnabert_s_tiny" / "config.json", folder / "config.json")
    state = torch.load(FIXTURES / "dnabert_s_tiny" / "pytorch_model.bin", weights_only=True)
    state = {"bert." + k: v for k, v in state.items()}
    state["cls.predictions.bias"] = torch.zeros(4096)
    state["bert.pooler.dense.weight"] = torch.zeros(96, 96)
    save_file(state, folder / "model.safetensors")
    model = DNABERTSEncoder.from_pretrained(folder)  # shipped tokenizer: the folder has none
    got = model.embed(dnabert_expected["sequences"][:3])
    assert rows_rel_err(got, torch.tensor(dnabert_expected["mean"][:3])) < 1e-5


def test_unknown_checkpoint_locations(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        resolve_checkpoint(tmp_path / "nothing-here")
    with pytest.raises(CheckpointError, match="local Hugging Face cache"):
        resolve_checkpoint("nobody-at-all/no-such-model-here")
    shutil.copy(FIXTURES / "esm2_tiny" / "config.json", tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="no weights file"):
        ESM2Encoder.from_pretrained(tmp_path)


def edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("what, name", [("esm2", "esm2_tiny"), ("dnabert", "dnabert_s_tiny")])
def test_config_with_ten_million_layers_is_refused_with_little_memory(tmp_path, what, name):
    from test_checkpoints import load_in_child

    folder = edit_config(copy_fixture(tmp_path, name), num_hidden_layers=10_000_000)
    result = load_in_child(what, folder, FIXTURES / name)
    assert result["is_checkpoint_error"], result
    message = result["message"]
    assert str(folder / "config.json") in message and "num_hidden_layers" in message and "10000000" in message
    assert "\n" not in message
    assert result["peak_increase"] < 32 << 20, result  # nothing was built per layer


@pytest.mark.parametrize("cls, name", [(ESM2Encoder, "esm2_tiny"), (DNABERTSEncoder, "dnabert_s_tiny")])
def test_config_layer_count_is_checked_against_the_weights(tmp_path, cls, name):
    folder = copy_fixture(tmp_path, name)
    layers = json.loads((folder / "config.json").read_text())["num_hidden_layers"]
    edit_config(folder, num_hidden_layers=200)
    with pytest.raises(CheckpointError, match=rf"config\.json says 200 layers but the weights hold {layers} "):
        cls.from_pretrained(folder)


@pytest.mark.parametrize("changes, match", [
    ({"hidden_size": "64"}, r"field 'hidden_size' is '64', not an integer"),
    ({"hidden_size": 1 << 20}, r"field 'hidden_size' is 1048576, outside the supported range"),
    ({"num_attention_heads": 0}, r"field 'num_attention_heads' is 0, outside"),
    ({"intermediate_size": -1}, r"field 'intermediate_size' is -1, outside"),
    ({"vocab_size": 20}, r"field 'vocab_size' is 20, outside"),  # the alphabet has 33 tokens
    ({"vocab_size": 1 << 30}, r"field 'vocab_size' is 1073741824, outside"),
    ({"layer_norm_eps": float("nan")}, r"field 'layer_norm_eps' is nan, not a finite number"),
    ({"layer_norm_eps": -1.0}, r"field 'layer_norm_eps' is -1.0, not a finite number"),
    ({"token_dropout": "yes"}, r"field 'token_dropout' is 'yes', not true or false"),
    ({"num_hidden_layers": 256, "hidden_size": 32768, "num_attention_heads": 256, "intermediate_size": 131072},
     r"describes \d\.\d+e\+12 parameters"),
])
def test_esm_config_fields_are_checked(tmp_path, changes, match):
    folder = edit_config(copy_fixture(tmp_path, "esm2_tiny"), **changes)
    with pytest.raises(CheckpointError, match=match) as info:
        ESM2Encoder.from_pretrained(folder)
    assert str(folder / "config.json") in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("changes, match", [
    ({"num_hidden_layers": 2.5}, r"field 'num_hidden_layers' is 2\.5, not an integer"),
    ({"type_vocab_size": 0}, r"field 'type_vocab_size' is 0, outside"),
    ({"vocab_size": 100}, r"vocab_size 100 is smaller than the tokenizer's 4096 tokens"),
    ({"layer_norm_eps": "1e-12"}, r"field 'layer_norm_eps' is '1e-12', not a number"),
])
def test_dnabert_config_fields_are_checked(tmp_path, changes, match):
    folder = edit_config(copy_fixture(tmp_path, "dnabert_s_tiny"), **changes)
    with pytest.raises(CheckpointError, match=match) as info:
        DNABERTSEncoder.from_pretrained(folder)
    assert str(folder / "config.json") in str(info.value)


def test_unreadable_configs_are_checkpoint_errors(tmp_path):
    folder = copy_fixture(tmp_path, "esm2_tiny")
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)  # RecursionError in json
    with pytest.raises(CheckpointError, match="not a readable JSON config"):
        ESM2Encoder.from_pretrained(folder)
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="not an object"):
        ESM2Encoder.from_pretrained(folder)
    (folder / "config.json").write_text(" " * (2 << 20) + "{}")
    with pytest.raises(CheckpointError, match="more than the 1048576 bytes"):
        ESM2Encoder.from_pretrained(folder)


@pytest.mark.parametrize("value, match", [(float("nan"), "NaN or infinite"), (float("inf"), "NaN or infinite"),
                                          (1e38, "magnitude 1e\\+38")])
def test_encoder_weights_must_be_finite_and_sane(tmp_path, value, match):
    folder = copy_fixture(tmp_path, "esm2_tiny")
    state = load_file(folder / "model.safetensors")
    state["esm.encoder.layer.2.output.dense.weight"][7, 3] = value
    save_file(state, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=rf"model\.safetensors: weight 'esm\.encoder\.layer\.2\.output\.dense"
                                              rf"\.weight' holds .*{match}"):
        ESM2Encoder.from_pretrained(folder)
    folder = copy_fixture(tmp_path / "dna", "dnabert_s_tiny")
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    state["encoder.layer.1.mlp.wo.weight"][0, 0] = value
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=rf"pytorch_model\.bin: weight 'encoder\.layer\.1\.mlp\.wo\.weight' "
                                              rf"holds .*{match}"):
        DNABERTSEncoder.from_pretrained(folder)


def test_weights_that_overflow_the_target_dtype_are_refused(tmp_path):
    folder = copy_fixture(tmp_path, "esm2_tiny")
    state = load_file(folder / "model.safetensors")
    state["esm.encoder.layer.0.intermediate.dense.weight"][0, 0] = 1e5  # fine in float32, inf in float16
    save_file(state, folder / "model.safetensors")
    ESM2Encoder.from_pretrained(folder)
    with pytest.raises(CheckpointError, match=r"intermediate\.dense\.weight' holds NaN or infinite values"):
        ESM2Encoder.from_pretrained(folder, dtype=torch.float16)


class Reduce:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def test_weights_file_calling_set_on_a_tensor_is_refused(tmp_path):
    # torch's weights-only unpickler allows set(); over a tensor it makes one object per element
    folder = copy_fixture(tmp_path, "dnabert_s_tiny")
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    state["payload"] = Reduce(set, torch.zeros(1 << 16))
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(UnsafeCheckpointError, match=r"pytorch_model\.bin: refusing to load: the checkpoint imports "
                                                    r"builtins\.set"):
        DNABERTSEncoder.from_pretrained(folder)


def test_weights_file_with_a_compressed_member_is_refused(tmp_path):
    import zipfile as zf

    folder = copy_fixture(tmp_path, "dnabert_s_tiny")
    source = FIXTURES / "dnabert_s_tiny" / "pytorch_model.bin"
    with zf.ZipFile(source) as src, zf.ZipFile(folder / "pytorch_model.bin", "w") as dst:
        for item in src.infolist():
            kind = zf.ZIP_DEFLATED if item.filename.endswith("/data/0") else zf.ZIP_STORED
            dst.writestr(item.filename, src.read(item), compress_type=kind)
    with pytest.raises(CheckpointError, match=r"member pytorch_model/data/0 is stored compressed"):
        DNABERTSEncoder.from_pretrained(folder)


def test_weights_file_whose_tensors_view_one_storage_many_times_is_refused(tmp_path):
    folder = copy_fixture(tmp_path, "dnabert_s_tiny")
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    big = torch.zeros(1 << 18)
    for i in range(40):  # 40 views of one 1-MiB storage in a 3-MiB file
        state[f"cls.view{i}"] = big[1:]
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"its tensors view \d+ bytes, more than 2 times the file's"):
        DNABERTSEncoder.from_pretrained(folder)


def test_deeply_nested_weights_pickle_is_refused(tmp_path):
    folder = copy_fixture(tmp_path, "dnabert_s_tiny")
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    nested = ()
    for _ in range(200):
        nested = (nested,)
    state["deep"] = nested
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="nested deeper than 64 levels"):
        DNABERTSEncoder.from_pretrained(folder)


def test_shard_index_may_only_name_files_beside_it(tmp_path):
    folder = copy_fixture(tmp_path, "esm2_tiny")
    (folder / "model.safetensors").rename(tmp_path / "elsewhere.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"esm.embeddings.word_embeddings.weight": "../elsewhere.safetensors"}}))
    with pytest.raises(CheckpointError, match="is not a file name in the same folder"):
        ESM2Encoder.from_pretrained(folder)


# -- the benchmark, tiny, on the CPU --------------------------------------------------------------


def test_encoder_benchmark_tiny_on_cpu():
    from virnucpro_kernel.bench.encoders import run_encoder_benchmark

    result = run_encoder_benchmark("cpu", quick=True, tiny=True, repeats=1)
    stages = {k: v for k, v in result.items() if k not in ("ratios", "relative_error")}
    assert {"esm2_packed_float32", "dnabert_s_packed_float32"} <= set(stages)
    keys = {"tokens_per_s", "sequences_per_s", "mfu", "seconds", "seconds_min", "seconds_max", "peak_memory_gb",
            "reserved_memory_gb"}
    for stage in stages.values():
        assert keys <= set(stage) and stage["tokens_per_s"] > 0 and 0 < stage["mfu"]
    assert result["ratios"]["dnabert_s_seconds_fraction_of_esm2"] > 0
    assert all(v < 1e-5 for v in result["relative_error"].values())


def test_random_weights_are_a_counter_hash_identical_everywhere():
    """counter_uniform is the documented integer hash (checked against NumPy's uint64 arithmetic), so the
    random and demo profiles hold the same weights on every device and whatever ran before."""
    import numpy as np

    from virnucpro_kernel.models.checkpoints import counter_uniform

    key, n = 123456789 * 1000003 + 7, 5000
    x = np.arange(n, dtype=np.uint64)
    x = (x * np.uint64(0x9E3779B1) + np.uint64(key * 0x85EBCA77 & 0xFFFFFFFF)) & np.uint64(0xFFFFFFFF)
    for mult in (0x7FEB352D, 0x6B43A9B5, 0x5BD1E995):
        x ^= x >> np.uint64(16)
        x = (x * np.uint64(mult)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(15)
    expected = (x.astype(np.float32) + np.float32(0.5)) / np.float32(4294967296.0)
    got = counter_uniform(n, key, "cpu").numpy()
    assert np.array_equal(got, expected)
    assert 0.0 < got.min() and got.max() < 1.0 and abs(got.mean() - 0.5) < 0.02
