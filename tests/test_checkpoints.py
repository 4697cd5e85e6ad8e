"""Classifier weight files: the published pickles read safely (refusals, bounded reading), our safetensors
format, conversion, and every check of what a file holds."""

import collections
import io
import json
import math
import os
import pickle
import re
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from test_classifier import STATE_KEYS
from virnucpro_kernel.errors import CheckpointError, UnsafeCheckpointError
from virnucpro_kernel.models.classifier import MLPClassifier
from virnucpro_kernel.models.classifier_files import (
    convert_checkpoint,
    load_classifier,
    read_classifier_metadata,
    save_classifier,
)

FIXTURES = Path(__file__).parent / "fixtures" / "classifier"
PUBLISHED = FIXTURES / "500_model.pth"
HOSTILE = FIXTURES / "hostile_model.pth"
HOSTILE_MARKER = Path("/tmp/hostile_checkpoint_ran")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The toy problems are tiny: one intra-op thread is faster and immune to a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def expected():
    return load_file(str(FIXTURES / "expected.safetensors"))


@pytest.fixture(scope="module")
def published():
    return load_classifier(PUBLISHED)


# --- hostile files ------------------------------------------------------------------------------------


def test_hostile_fixture_is_refused_and_nothing_runs():
    HOSTILE_MARKER.unlink(missing_ok=True)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_classifier(HOSTILE)
    message = str(info.value)
    assert "posix.system" in message
    assert str(HOSTILE) in message
    assert "\n" not in message
    assert not HOSTILE_MARKER.exists()
    assert isinstance(info.value, CheckpointError)  # callers catching CheckpointError also catch it


class _Evil:
    """Pickles as a call of ``func(*args)``; dumping it runs nothing."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _zip_with_pickle(tmp_path, payload: bytes, name="evil.pth") -> Path:
    """A genuine torch zip checkpoint whose data.pkl is replaced by ``payload``."""
    genuine = tmp_path / "genuine.pth"
    torch.save(MLPClassifier(input_dim=8, hidden_dim=4).state_dict(), genuine)
    out = tmp_path / name
    with zipfile.ZipFile(genuine) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for item in src.infolist():
            data = payload if item.filename.endswith("/data.pkl") else src.read(item)
            dst.writestr(item.filename, data)
    return out


@pytest.mark.parametrize("protocol", [2, 4])  # GLOBAL and STACK_GLOBAL opcodes
@pytest.mark.parametrize(
    "make, imported",
    [
        (lambda m: _Evil(os.system, (f"touch {m}",)), "posix.system"),
        (lambda m: _Evil(eval, (f"open({str(m)!r}, 'w')",)), "builtins.eval"),
        (lambda m: _Evil(subprocess.check_call, (["touch", str(m)],)), "subprocess.check_call"),
        # buried inside an otherwise plausible state-dict container
        (lambda m: {"state_dict": {"hidden_layer.weight": _Evil(os.system, (f"touch {m}",))}}, "posix.system"),
    ],
)
def test_crafted_hostile_pickles_are_refused(tmp_path, protocol, make, imported):
    marker = tmp_path / "ran"
    path = _zip_with_pickle(tmp_path, pickle.dumps(make(marker), protocol=protocol))
    with pytest.raises(UnsafeCheckpointError, match=imported.replace(".", r"\.")) as info:
        load_classifier(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        # BUILD with slot state on allowlisted globals: would alter objects shared by every later load
        b"\x80\x02ctorch\nFloatStorage\nN}X\x0b\x00\x00\x00numpy_dtypeX\x01\x00\x00\x00Os\x86b.",
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}X\x08\x00\x00\x00functionX\x01\x00\x00\x00Os\x86b.",
        b"\x80\x02c__main__\nMLPClassifier\nN}X\x08\x00\x00\x00qualnameX\x01\x00\x00\x00Os\x86b.",
        b"\x80\x02ccollections\nOrderedDict\nN}X\x08\x00\x00\x00fromkeysX\x01\x00\x00\x00Os\x86b.",
    ],
)
def test_pickles_cannot_alter_the_allowlist(tmp_path, payload, expected):
    path = _zip_with_pickle(tmp_path, payload)
    with pytest.raises(CheckpointError, match="malformed"):
        load_classifier(path)
    model = load_classifier(PUBLISHED)  # still loads and computes as before
    assert (model.predict_proba(expected["inputs"]) - expected["probs"]).abs().max().item() < 1e-5


# --- our safetensors format ---------------------------------------------------------------------------


def test_safetensors_round_trip_is_exact(tmp_path, published, expected):
    path = save_classifier(published, tmp_path / "clf.safetensors", metadata={"chunk_size": 500, "training": {"seed": 7}})
    loaded = load_classifier(path)
    assert list(loaded.state_dict()) == STATE_KEYS
    for key, value in published.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert torch.equal(loaded.predict_proba(expected["inputs"]), published.predict_proba(expected["inputs"]))
    assert loaded.metadata["chunk_size"] == 500
    assert loaded.metadata["training"] == {"seed": 7}
    assert loaded.metadata["input_dim"] == 3328
    header = read_classifier_metadata(path)
    assert header["format"] == "virnucpro-classifier" and header["chunk_size"] == 500


def test_small_demo_model_round_trip(tmp_path):
    torch.manual_seed(0)
    model = MLPClassifier(input_dim=160)
    model.train()
    model(torch.randn(64, 160))  # move the BatchNorm statistics away from their defaults
    path = save_classifier(model, tmp_path / "demo.safetensors")
    loaded = load_classifier(path)
    x = torch.randn(10, 160)
    assert loaded.input_dim == 160
    assert torch.equal(loaded.predict_proba(x), model.predict_proba(x))


def test_convert_checkpoint_output_loads_and_matches(tmp_path, expected):
    out = convert_checkpoint(PUBLISHED, tmp_path / "500_model.safetensors")
    model = load_classifier(out)
    assert (model.predict_proba(expected["inputs"]) - expected["probs"]).abs().max().item() < 1e-5
    assert model.metadata["chunk_size"] == 500
    assert model.metadata["converted_from"] == "500_model.pth"
    assert len(model.metadata["source_sha256"]) == 64


def test_plain_torch_state_dict_file_loads(tmp_path, published, expected):
    path = tmp_path / "state.pth"
    torch.save(published.state_dict(), path)
    model = load_classifier(path)
    assert torch.equal(model.predict_proba(expected["inputs"]), published.predict_proba(expected["inputs"]))


# --- malformed files ----------------------------------------------------------------------------------


def _assert_checkpoint_error(path, match):
    with pytest.raises(CheckpointError, match=match) as info:
        load_classifier(path)
    assert not isinstance(info.value, UnsafeCheckpointError)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_wrong_shape_is_a_checkpoint_error(tmp_path):
    sd = MLPClassifier(input_dim=16, hidden_dim=8).state_dict()
    sd["hidden_layer.bias"] = torch.zeros(7)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "bad.safetensors"))
    _assert_checkpoint_error(tmp_path / "bad.safetensors", r"hidden_layer\.bias has shape \[7\], expected \[8\]")
    torch.save(sd, tmp_path / "bad.pth")
    _assert_checkpoint_error(tmp_path / "bad.pth", r"hidden_layer\.bias has shape")


def test_missing_key_is_a_checkpoint_error(tmp_path):
    sd = MLPClassifier(input_dim=16, hidden_dim=8).state_dict()
    del sd["bn1.running_var"]
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "missing.safetensors"))
    _assert_checkpoint_error(tmp_path / "missing.safetensors", r"missing bn1\.running_var")


def test_truncated_and_foreign_files_are_checkpoint_errors(tmp_path, published):
    data = PUBLISHED.read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    _assert_checkpoint_error(tmp_path / "truncated.pth", "not a readable torch checkpoint")
    st = save_classifier(published, tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(st[: len(st) // 2])
    _assert_checkpoint_error(tmp_path / "truncated.safetensors", "malformed safetensors")
    (tmp_path / "notes.txt").write_text("not a model\n")
    _assert_checkpoint_error(tmp_path / "notes.txt", "not a classifier checkpoint")
    _assert_checkpoint_error(tmp_path / "absent.pth", "no such file")
    # a zip that is not a torch checkpoint
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("readme.txt", "hello")
    _assert_checkpoint_error(tmp_path / "other.zip", "data.pkl")


def test_storage_size_lies_are_checkpoint_errors(tmp_path):
    # a pickle that claims more elements than the archive member holds
    genuine = tmp_path / "g.pth"
    torch.save({"x": torch.zeros(4)}, genuine)
    with zipfile.ZipFile(genuine) as zf:
        pkl_name = next(n for n in zf.namelist() if n.endswith("data.pkl"))
        payload = zf.read(pkl_name)
    bad = payload.replace(b"K\x04t", b"M\x00\x10t", 1)  # numel 4 -> 4096 in the persistent id
    assert bad != payload
    path = _zip_with_pickle(tmp_path, bad, name="lies.pth")
    _assert_checkpoint_error(path, "malformed")


# --- bad values ---------------------------------------------------------------------------------------


def _bad_model(change):
    """A small trained-looking classifier with ``change(model)`` applied to it."""
    torch.manual_seed(0)
    model = MLPClassifier(input_dim=16, hidden_dim=8)
    model.train()
    model(torch.randn(32, 16))  # BatchNorm statistics away from their defaults
    model.eval()
    with torch.no_grad():
        change(model)
    return model


def _save_as(model, tmp_path, fmt):
    """``model`` as a whole pickled module (the published format) or in our safetensors format."""
    if fmt == "pickle":
        path = tmp_path / "bad.pth"
        torch.save(model, path)
        return path
    path = tmp_path / "bad.safetensors"
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(path), metadata={"format": "virnucpro-classifier", "metadata": "{}"})
    return path


@pytest.mark.parametrize("fmt", ["pickle", "safetensors"])
def test_negative_running_variance_is_refused(tmp_path, fmt):
    path = _save_as(_bad_model(lambda m: m.bn1.running_var.__setitem__(3, -0.5)), tmp_path, fmt)
    _assert_checkpoint_error(path, r"bn1\.running_var holds negative values")


@pytest.mark.parametrize("fmt", ["pickle", "safetensors"])
@pytest.mark.parametrize("value", [1e38, -3e7, float("inf"), float("nan")])
def test_huge_or_nan_weights_are_refused(tmp_path, fmt, value):
    path = _save_as(_bad_model(lambda m: m.hidden_layer.weight.__setitem__((2, 5), value)), tmp_path, fmt)
    _assert_checkpoint_error(path, r"hidden_layer\.weight holds (NaN or infinite values|a value of magnitude)")


def test_float64_weights_that_overflow_float32_are_refused(tmp_path):
    sd = {k: v.double() if v.is_floating_point() else v for k, v in _bad_model(lambda m: None).state_dict().items()}
    sd["output_layer.weight"][0, 0] = 1e300  # finite in float64, inf in float32
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "f64.safetensors"))
    _assert_checkpoint_error(tmp_path / "f64.safetensors", r"output_layer\.weight holds a value of magnitude 1e\+300")


def _with_bn_eps_metadata(tmp_path, eps_json: str) -> Path:
    """Our safetensors format with ``"bn_eps": <eps_json>`` written into the header's metadata."""
    model = _bad_model(lambda m: None)
    path = tmp_path / "eps.safetensors"
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    meta = '{"bn_eps": %s, "chunk_size": 500}' % eps_json
    save_file(sd, str(path), metadata={"format": "virnucpro-classifier", "metadata": meta})
    return path


@pytest.mark.parametrize("eps_json", ["NaN", "-10", '"abc"', "0", "1.5", "Infinity", "true"])
def test_bad_bn_eps_in_safetensors_metadata_is_refused(tmp_path, eps_json):
    path = _with_bn_eps_metadata(tmp_path, eps_json)
    _assert_checkpoint_error(path, r"bn_eps in the metadata is .*(not a number|a BatchNorm eps must be)")
    with pytest.raises(CheckpointError, match="bn_eps"):
        read_classifier_metadata(path)


def test_good_bn_eps_in_safetensors_metadata_is_used(tmp_path):
    model = load_classifier(_with_bn_eps_metadata(tmp_path, "0.001"))
    assert model.bn1.eps == 0.001 and model.metadata["chunk_size"] == 500


@pytest.mark.parametrize("eps", [float("nan"), -10.0, "abc", 0.0, float("inf")])
def test_bad_bn_eps_in_pickled_batchnorm_is_refused(tmp_path, eps):
    model = _bad_model(lambda m: None)
    model.bn1.eps = eps
    path = tmp_path / "eps.pth"
    torch.save(model, path)
    _assert_checkpoint_error(path, r"bn1\.eps \(the pickled BatchNorm's\) is .*(not a number|a BatchNorm eps must be)")


def test_pickled_batchnorm_eps_is_kept(tmp_path):
    model = _bad_model(lambda m: None)
    model.bn1.eps = 1e-3
    torch.save(model, tmp_path / "eps.pth")
    loaded = load_classifier(tmp_path / "eps.pth")
    x = torch.randn(5, 16)
    assert loaded.bn1.eps == 1e-3
    assert torch.allclose(loaded.predict_proba(x), model.predict_proba(x), atol=1e-6)


@pytest.mark.parametrize("chunk", ["0", "-500", '"500"', "1e9", "true"])
def test_bad_chunk_size_in_metadata_is_refused(tmp_path, chunk):
    model = _bad_model(lambda m: None)
    path = tmp_path / "chunk.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"metadata": '{"chunk_size": %s}' % chunk})
    _assert_checkpoint_error(path, "chunk_size in the metadata")


# --- bounded reading of pickled checkpoints -----------------------------------------------------------
#
# The files below are built by hand: a pickle naming torch's own rebuild functions (what torch.save
# writes) and a zip whose members may be compressed, which torch.save never does.


class _Storage:
    """A storage of the archive, as the pickle refers to it (persistent id)."""

    def __init__(self, key, numel, kind=torch.FloatStorage):
        self.key, self.numel, self.kind = key, numel, kind


class _Tensor:
    def __init__(self, storage, size, stride=None, offset=0):
        self.storage, self.size, self.offset = storage, tuple(size), offset
        self.stride = tuple(stride) if stride is not None else tuple(
            math.prod(self.size[i + 1:]) for i in range(len(self.size)))

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, (self.storage, self.offset, self.size, self.stride, False,
                                                 collections.OrderedDict())


class _Call:
    """Pickles as ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class _TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", obj.kind, obj.key, "cpu", obj.numel)
        return None


def _torch_pickle(obj) -> bytes:
    out = io.BytesIO()
    _TorchPickler(out, protocol=2).dump(obj)
    return out.getvalue()


def _zeros_deflated(nbytes: int) -> tuple[bytes, int]:
    """Raw deflate of ``nbytes`` zero bytes (a multiple of 1 MiB) and its CRC-32, without ever holding them:
    one 1-MiB block flushed to a byte boundary is the same every time, so it is repeated."""
    mib = bytes(1 << 20)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = packer.compress(mib) + packer.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(nbytes >> 20):
        crc = zlib.crc32(mib, crc)
    return block * (nbytes >> 20) + packer.flush(), crc


def _write_zip(path: Path, members) -> Path:
    """A zip of ``(name, data)`` (stored) and ``(name, (deflated, crc, size))`` (compressed) members."""
    local, central = bytearray(), bytearray()
    for name, data in members:
        if isinstance(data, tuple):
            payload, crc, size = data
            method = 8
        else:
            payload, crc, size, method = data, zlib.crc32(data), len(data), 0
        raw = name.encode()
        offset = len(local)
        local += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(payload), size, len(raw), 0)
        local += raw + payload
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(payload), size,
                               len(raw), 0, 0, 0, 0, 0, offset) + raw
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(local), 0)
    path.write_bytes(bytes(local + central + end))
    return path


def _torch_zip(path: Path, obj, storages=None, *, pickle_bytes=None) -> Path:
    """A torch zip checkpoint holding ``obj`` (pickled as torch.save would) and ``storages``
    (``{key: bytes or (deflated, crc, size)}``)."""
    members = [("archive/data.pkl", pickle_bytes if pickle_bytes is not None else _torch_pickle(obj)),
               ("archive/byteorder", b"little")]
    members += [(f"archive/data/{key}", data) for key, data in (storages or {}).items()]
    members.append(("archive/version", b"3\n"))
    return _write_zip(path, members)


_CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(1)
from virnucpro_kernel.errors import CheckpointError
what, target, warm = sys.argv[1:4]
if what == "classifier":
    from virnucpro_kernel.models.classifier_files import load_classifier as load
elif what == "esm2":
    from virnucpro_kernel.models.esm2 import ESM2Encoder
    load = ESM2Encoder.from_pretrained
else:
    from virnucpro_kernel.models.dnabert_s import DNABERTSEncoder
    load = DNABERTSEncoder.from_pretrained
load(warm)  # the same code path once on a good file: lazy imports and caches are not counted below

def status(field):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(field + ":"))

# A loader that does not bound what it reads fails here instead of taking the machine's memory.
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
cap = status("VmSize") + (1 << 30)
resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # the peak RSS (VmHWM) starts again from the current RSS
before = status("VmRSS")
error = message = None
refused = False
try:
    load(target)
except BaseException as exc:
    error, message, refused = type(exc).__name__, str(exc), isinstance(exc, CheckpointError)
print(json.dumps({"error": error, "is_checkpoint_error": refused, "message": message,
                  "peak_increase": status("VmHWM") - before}))
"""


def load_in_child(what, target, warm, timeout=300) -> dict:
    """Load ``target`` in a fresh interpreter whose address space is capped at 1 GiB above what it had after a
    warm-up load of ``warm``; returns the error (if any) and the increase of peak RSS while loading."""
    done = subprocess.run([sys.executable, "-c", _CHILD, what, str(target), str(warm)], capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"child died ({done.returncode}): {done.stderr[-2000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def small_pickled(tmp_path_factory):
    """A small whole pickled classifier module, for warming up the child interpreters."""
    path = tmp_path_factory.mktemp("warm") / "small.pth"
    torch.save(_bad_model(lambda m: None), path)
    return path


def _refused_in_child(path, warm, match, limit=64 << 20):
    result = load_in_child("classifier", path, warm)
    assert result["is_checkpoint_error"], result
    assert str(path) in result["message"] and "\n" not in result["message"]
    assert re.search(match, result["message"]), result["message"]
    assert result["peak_increase"] < limit, result
    return result


def test_published_checkpoint_peak_memory_is_a_small_multiple_of_its_tensor_bytes(small_pickled):
    with zipfile.ZipFile(PUBLISHED) as zf:
        tensor_bytes = sum(i.file_size for i in zf.infolist() if "/data/" in i.filename)
    result = load_in_child("classifier", PUBLISHED, small_pickled)
    assert result["error"] is None, result
    assert result["peak_increase"] <= 2 * tensor_bytes, (result["peak_increase"], tensor_bytes)


def test_storage_rebuilt_a_thousand_times_from_a_compressed_member_is_refused(tmp_path, small_pickled):
    # ~140 KB on disk: one 64-MiB storage, deflated, and 1000 tensors rebuilt from all of it
    storage = _Storage("0", 16 << 20)
    obj = {f"t{i}": _Tensor(storage, (16 << 20,)) for i in range(1000)}
    path = _torch_zip(tmp_path / "thousand.pth", obj, {"0": (*_zeros_deflated(64 << 20), 64 << 20)})
    assert path.stat().st_size < 200_000
    _refused_in_child(path, small_pickled, r"member archive/data/0 is stored compressed")


def test_storage_copied_out_over_and_over_is_refused(tmp_path):
    # stored as torch.save would: 256 KiB, but 1000 tensors each copying all of it but one element
    storage = _Storage("0", 1 << 16)
    obj = {f"t{i}": _Tensor(storage, ((1 << 16) - 1,), offset=1) for i in range(1000)}
    path = _torch_zip(tmp_path / "copies.pth", obj, {"0": bytes(1 << 18)})
    _assert_checkpoint_error(path, r"would copy more than \d+ bytes out of the storages")


def test_small_file_declaring_a_gigabyte_storage_is_refused(tmp_path, small_pickled):
    storage = _Storage("0", 1 << 28)  # 1 GiB of float32
    obj = {"hidden_layer.weight": _Tensor(storage, (1 << 14, 1 << 14))}
    path = _torch_zip(tmp_path / "gib.pth", obj, {"0": (*_zeros_deflated(1 << 30), 1 << 30)})
    assert path.stat().st_size < 1_200_000
    _refused_in_child(path, small_pickled, r"member archive/data/0 is stored compressed \(\d+ bytes for 1073741824\)")


def test_stored_member_larger_than_the_file_is_refused(tmp_path):
    storage = _Storage("0", 4)
    path = _torch_zip(tmp_path / "lie.pth", {"x": _Tensor(storage, (4,))}, {"0": bytes(16)})
    data = bytearray(path.read_bytes())
    at = data.index(b"PK\x01\x02", 0)
    while not data[at + 46:].startswith(b"archive/data/0"):
        at = data.index(b"PK\x01\x02", at + 4)
    data[at + 20: at + 28] = struct.pack("<II", 1 << 30, 1 << 30)  # central directory: 1 GiB, stored
    path.write_bytes(bytes(data))
    _assert_checkpoint_error(path, "beyond the end of the")


def test_gigabyte_data_pkl_is_refused(tmp_path, small_pickled):
    path = _torch_zip(tmp_path / "bigpickle.pth", None, pickle_bytes=(*_zeros_deflated(1 << 30), 1 << 30))
    assert path.stat().st_size < 1_200_000
    _refused_in_child(path, small_pickled, r"(data\.pkl is 1073741824 bytes|data\.pkl is stored compressed)")


def test_set_of_a_tensor_is_refused(tmp_path):
    # set() is allowed for a module's _non_persistent_buffers_set; over a tensor it makes one object per element
    storage = _Storage("0", 1 << 20)
    obj = {"x": _Call(set, _Tensor(storage, (1 << 20,)))}
    path = _torch_zip(tmp_path / "set.pth", obj, {"0": bytes(4 << 20)})
    _assert_checkpoint_error(path, r"set\(\) of .*only a short list of names is allowed")


def test_ordered_dict_of_a_tensor_is_refused(tmp_path):
    storage = _Storage("0", 1 << 16)
    obj = {"x": _Call(collections.OrderedDict, _Tensor(storage, (1 << 15, 2)))}
    path = _torch_zip(tmp_path / "od.pth", obj, {"0": bytes(1 << 18)})
    _assert_checkpoint_error(path, r"OrderedDict\(\) called with arguments")


def _nested_modules(depth: int) -> bytes:
    """A pickled Linear inside a Linear inside ... ``depth`` levels, by hand (pickle's own writer recurses)."""
    out = bytearray(b"\x80\x02ctorch.nn.modules.linear\nLinear\nq\x00")
    out += b"h\x00)\x81}b"  # the innermost module, with an empty state
    for _ in range(depth):
        out += b"q\x010"  # memo[1] = the module built so far; pop it
        out += b"h\x00)\x81}X\x08\x00\x00\x00_modules}X\x01\x00\x00\x00mh\x01ssb"
    return bytes(out + b".")


def test_deeply_nested_modules_are_refused(tmp_path):
    path = _zip_with_pickle(tmp_path, _nested_modules(5000), name="deep.pth")
    _assert_checkpoint_error(path, "nested deeper than")
    # shallow enough for the pickle scan, still too deep for a classifier
    _assert_checkpoint_error(_zip_with_pickle(tmp_path, _nested_modules(12), name="twelve.pth"),
                             "modules nested deeper than 8 levels")


def test_deeply_nested_tuple_as_dict_key_is_refused_without_crashing(tmp_path, small_pickled):
    # CPython hashes nested tuples recursively in C with no recursion check: a million levels crash it
    payload = b"\x80\x02}(N" + b"\x85" * 1_000_000 + b"Nu."
    path = _zip_with_pickle(tmp_path, payload, name="tuple.pth")
    _refused_in_child(path, small_pickled, "nested deeper than 64 levels")

