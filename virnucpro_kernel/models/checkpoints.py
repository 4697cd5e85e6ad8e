"""Reading encoder checkpoints: safely, from disk or the LOCAL Hugging Face cache, with clear errors.

    directory = resolve_checkpoint("facebook/esm2_t36_3B_UR50D")   # or a folder, or a weights file
    config = read_config(directory)                                # config.json as a dict
    tensors = read_state_dict(directory)                           # {key: (lazy) CPU tensor}
    weights = select_weights(tensors, expected_shapes, prefixes=("esm.",), ignore=("lm_head.",))

Nothing here downloads, and nothing here runs code from a file: ``pytorch_model.bin`` is read with
``torch.load(weights_only=True)`` after a static scan of its pickle (nothing executed) has checked every
global it names, and a file that needs code to unpickle raises ``UnsafeCheckpointError`` without running
it. ``model.safetensors`` (and sharded ``*.safetensors.index.json`` / ``pytorch_model.bin.index.json``)
are read lazily, so converting the weights to the target dtype and device happens one tensor at a time
(``to_device``), and every tensor is checked there (finite, of sane magnitude) before a model holds it.

Every read is bounded before anything is allocated: JSON files and pickles by size, pickles by nesting
depth and by the globals they may name, zip archives by their directory and member sizes, and a
config's shapes by :func:`config_int` limits (the models check their own configs with it). Whatever is
wrong raises :class:`~virnucpro_kernel.errors.CheckpointError` with one line naming the file. The checks
of pickles and torch zip archives themselves are in :mod:`.pickles`.

Without a checkpoint, :func:`random_weights` gives an encoder deterministic random weights of its real
shapes (the offline demo encoders, benchmarks).
"""

from __future__ import annotations

import json
import math
import os
import pickle
from pathlib import Path
from typing import Iterable, Mapping

import torch

from ..errors import CheckpointError, UnsafeCheckpointError
from .pickles import one_line, open_torch_zip, scan_pickle, short

__all__ = [
    "resolve_checkpoint", "read_config", "weights_files", "read_state_dict", "select_weights", "to_device",
    "check_values", "check_layer_count", "config_int", "config_float", "LazyTensor", "random_weights",
]

WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
)

# -- limits ------------------------------------------------------------------------------------------
# Generous for every real checkpoint, small enough that a hostile file cannot take more than a bounded
# amount of memory or time before it is refused.

MAX_JSON_BYTES = 1 << 20  # config.json is ~1 KB
MAX_INDEX_BYTES = 16 << 20  # a shard index names every tensor once: ~60 KB for ESM-2 3B
MAX_STATE_PICKLE_BYTES = 4 << 20  # data.pkl of a state dict: ~100 bytes a tensor (ESM-2 15B: ~100 KB)
MAX_ABS_VALUE = 1e6  # |weight|: real ones stay below ~100 (the published classifier's largest is 1.94)
#: Tensors of a pickled weights file may share storage (tied weights), but all of them together may not
#: view more than this many times the file's own bytes (each would be copied when converted).
MAX_VIEW_FACTOR = 2


# -- configs -----------------------------------------------------------------------------------------

_MISSING = object()


def config_int(config: Mapping, key: str, lo: int, hi: int, source, default=_MISSING) -> int:
    """``config[key]`` as an int in ``[lo, hi]``, or a ``CheckpointError`` naming ``source`` and the field."""
    value = config.get(key, default)
    if value is _MISSING:
        raise CheckpointError(f"{source}: missing field '{key}'")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(f"{source}: field '{key}' is {short(value)}, not an integer")
    if not lo <= value <= hi:
        raise CheckpointError(f"{source}: field '{key}' is {value}, outside the supported range [{lo}, {hi}]")
    return value


def config_float(config: Mapping, key: str, lo: float, hi: float, source, default=_MISSING) -> float:
    """``config[key]`` as a finite float with ``lo < value < hi``."""
    value = config.get(key, default)
    if value is _MISSING:
        raise CheckpointError(f"{source}: missing field '{key}'")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CheckpointError(f"{source}: field '{key}' is {short(value)}, not a number")
    value = float(value)
    if not (math.isfinite(value) and lo < value < hi):
        raise CheckpointError(f"{source}: field '{key}' is {value!r}, not a finite number in ({lo:g}, {hi:g})")
    return value


def _read_json(path: Path, limit: int, what: str):
    try:
        size = path.stat().st_size
        if size > limit:
            raise CheckpointError(f"{path}: {size} bytes, more than the {limit} bytes a {what} may take")
        return json.loads(path.read_bytes())
    except CheckpointError:
        raise
    except (OSError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: not a readable {what} ({one_line(exc)})") from None


def resolve_checkpoint(path_or_id) -> Path:
    """A folder or weights file on disk, or a Hugging Face model id found in the local cache only."""
    path = Path(os.path.expanduser(str(path_or_id)))
    if path.exists():
        return path
    text = str(path_or_id)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(text, local_files_only=True))
        except Exception as exc:  # LocalEntryNotFoundError and friends: not in the cache
            raise CheckpointError(
                f"{text}: not a folder here and not in the local Hugging Face cache "
                f"(nothing is downloaded; fetch it first, e.g. `hf download {text}`) [{type(exc).__name__}]"
            ) from None
    raise CheckpointError(f"{text}: no such checkpoint folder or file")


def read_config(path) -> dict:
    """``config.json`` of a checkpoint folder (or of the folder holding a weights file), at most 1 MiB."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    config = folder / "config.json"
    if not config.is_file():
        raise CheckpointError(f"{folder}: no config.json")
    value = _read_json(config, MAX_JSON_BYTES, "JSON config")
    if not isinstance(value, dict):
        raise CheckpointError(f"{config}: holds a JSON {type(value).__name__}, not an object")
    return value


def weights_files(path) -> list[Path]:
    """The weight file(s) of a checkpoint folder, safetensors preferred; a file path is taken as is."""
    path = Path(path)
    if path.is_file():
        candidates = [path]
    else:
        candidates = [path / name for name in WEIGHT_FILES if (path / name).is_file()]
        if not candidates:
            raise CheckpointError(f"{path}: no weights file (looked for {', '.join(WEIGHT_FILES)})")
    first = candidates[0]
    if first.name.endswith(".index.json"):
        index = _read_json(first, MAX_INDEX_BYTES, "shard index")
        try:
            shards = sorted(set(index["weight_map"].values()))
        except (KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{first}: not a readable shard index (no weight_map: {one_line(exc)})") from None
        for shard in shards:  # plain file names beside the index: never a path elsewhere
            if not isinstance(shard, str) or not shard or "/" in shard or "\\" in shard or shard.startswith("."):
                raise CheckpointError(f"{first}: shard name {short(shard)} is not a file name in the same folder")
        missing = [s for s in shards if not (first.parent / s).is_file()]
        if missing:
            raise CheckpointError(f"{first}: shard file {missing[0]} is missing")
        return [first.parent / s for s in shards]
    return [first]


# -- weight files ------------------------------------------------------------------------------------

#: Globals a state-dict pickle (``torch.save(model.state_dict())``) names: containers, tensor rebuilders
#: and storage types. Checked statically before torch's own weights-only unpickler runs, because that
#: one also allows ``set``, ``list``-like calls and other builtins that a pickle can apply to a tensor
#: (``set(tensor)`` makes one Python object per element: gigabytes from a small file).
STATE_DICT_GLOBALS = frozenset({
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch.UntypedStorage",
    *(f"torch.{t}Storage" for t in ("Double", "Float", "Half", "BFloat16", "Long", "Int", "Short", "Char",
                                     "Byte", "Bool")),
})


def _scan_legacy(file: Path, kind: str) -> None:
    """The pre-zip format is five pickles in a row (magic number, protocol, system info, the object,
    storage keys) followed by raw storages: scan the pickles."""
    with open(file, "rb") as fh:
        for _ in range(5):
            start = fh.tell()
            chunk = fh.read(MAX_STATE_PICKLE_BYTES + 1)
            if not chunk:
                raise CheckpointError(f"{file}: truncated legacy torch checkpoint")
            used = scan_pickle(chunk, file, STATE_DICT_GLOBALS, kind)
            if used > MAX_STATE_PICKLE_BYTES:
                raise CheckpointError(f"{file}: a pickle of more than {MAX_STATE_PICKLE_BYTES} bytes")
            fh.seek(start + used)


def _read_file(file: Path) -> dict:
    if file.suffix == ".safetensors":
        from safetensors import safe_open

        # Lazy: safe_open maps the file and checks that every tensor lies inside it; a tensor is copied
        # out only when asked for (to_device), so memory stays within the file's own bytes.
        try:
            handle = safe_open(str(file), framework="pt", device="cpu")
            return {key: LazyTensor(handle, key, file) for key in handle.keys()}
        except Exception as exc:
            raise CheckpointError(f"{file}: not a readable safetensors file ({one_line(exc)})") from None
    kind = "an encoder weights file"
    try:
        with open(file, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise CheckpointError(f"{file}: cannot read ({one_line(exc)})") from None
    # torch.load(weights_only=True) cannot be told to bound what it reads: it inflates data.pkl whole,
    # and its allowlist lets a pickle call set() and friends on tensors. So the archive and its pickle
    # are checked first (open_torch_zip, scan_pickle: nothing is run); then mmap=True makes every
    # storage a view of the mapped file (file-backed pages, never more than the file's own bytes).
    if head == b"PK\x03\x04":
        zf, prefix = open_torch_zip(file, MAX_STATE_PICKLE_BYTES)
        with zf:
            try:
                data = zf.read(prefix + "data.pkl")
            except Exception as exc:  # bad CRC, truncated member
                raise CheckpointError(f"{file}: not a readable PyTorch checkpoint ({one_line(exc)})") from None
        scan_pickle(data, file, STATE_DICT_GLOBALS, kind)
        mmap = True
    elif head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):
        _scan_legacy(file, kind)  # legacy format: read whole (torch cannot map it), at most the file's bytes
        mmap = False
    else:
        raise CheckpointError(f"{file}: not a readable PyTorch checkpoint (neither a torch zip nor a pickle)")
    try:
        state = torch.load(str(file), map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsafeCheckpointError(
            f"{file}: refused: it needs code to unpickle, and checkpoints are loaded without running code ({first})"
        ) from None
    except (Exception, RecursionError, MemoryError) as exc:
        raise CheckpointError(f"{file}: not a readable PyTorch checkpoint ({type(exc).__name__}: "
                              f"{one_line(exc)})") from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{file}: holds a {type(state).__name__}, not a state dict of tensors")
    viewed = sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, torch.Tensor))
    size = file.stat().st_size
    if viewed > MAX_VIEW_FACTOR * size + (1 << 20):
        raise CheckpointError(f"{file}: its tensors view {viewed} bytes, more than {MAX_VIEW_FACTOR} times the "
                              f"file's {size} bytes (storages shared by many or expanded tensors)")
    return {key: LazyTensor(None, key, file, value) if isinstance(value, torch.Tensor) else value
            for key, value in state.items()}


class LazyTensor:
    """A tensor of a weights file, read only when asked for (keeps peak host memory at one tensor), and
    named by its file and key in errors."""

    def __init__(self, handle, key, file=None, tensor=None):
        self.handle, self.key, self.file, self.tensor = handle, key, file, tensor
        self.shape = tuple(tensor.shape) if tensor is not None else tuple(handle.get_slice(key).get_shape())

    def load(self) -> torch.Tensor:
        return self.tensor if self.tensor is not None else self.handle.get_tensor(self.key)

    def __repr__(self):
        return f"<{self.file}: {self.key} {list(self.shape)}>"


def read_state_dict(path) -> dict:
    """``{key: lazy tensor}`` from a checkpoint folder or weights file (CPU, nothing converted)."""
    state = {}
    for file in weights_files(path):
        state.update(_read_file(file))
    return state


# -- selecting and checking weights ------------------------------------------------------------------


def check_layer_count(state: Mapping, num_layers: int, source, *, prefixes: Iterable[str] = (),
                      layer_prefix: str = "encoder.layer.") -> None:
    """The weights must hold exactly layers ``0 .. num_layers - 1`` (keys ``[prefix]encoder.layer.N.``):
    checked from the keys alone, before anything is built per layer or any tensor is read."""
    prefixes = tuple(prefixes)
    found = set()
    for key in state:
        name = key
        for prefix in prefixes:
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        if name.startswith(layer_prefix):
            index = name[len(layer_prefix):].split(".", 1)[0]
            if index.isdigit() and len(index) <= 7:
                found.add(int(index))
    if found != set(range(num_layers)):
        held = f"{len(found)} (numbered {min(found)} to {max(found)})" if found else "none"
        raise CheckpointError(f"{source}: config.json says {num_layers} layers but the weights hold {held}")


def _shape(value) -> tuple:
    return tuple(value.shape) if hasattr(value, "shape") else ()


def select_weights(state: Mapping, expected: Mapping[str, tuple], *, prefixes: Iterable[str] = (),
                   ignore: Iterable[str] = (), source="checkpoint") -> dict:
    """Pick the ``expected`` keys out of ``state`` after stripping ``prefixes``, checking every shape.

    Keys starting with one of ``ignore`` (heads the encoder does not use) are dropped silently; a
    missing key or a wrong shape raises ``CheckpointError`` naming the key, the expected shape and
    what was found. Unknown extra keys are ignored too (they are reported by nothing: heads vary).
    """
    prefixes, ignore = tuple(prefixes), tuple(ignore)
    stripped = {}
    for key, value in state.items():
        if ignore and key.startswith(ignore):
            continue
        name = key
        for prefix in prefixes:
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        if not (ignore and name.startswith(ignore)):
            stripped.setdefault(name, value)
    out = {}
    for name, shape in expected.items():
        if name not in stripped:
            raise CheckpointError(f"{source}: missing weight '{name}' (expected shape {list(shape)})")
        found = _shape(stripped[name])
        if found != tuple(shape):
            raise CheckpointError(f"{source}: weight '{name}' has shape {list(found)}, expected {list(shape)}")
        out[name] = stripped[name]
    return out


def check_values(tensor: torch.Tensor, what: str) -> None:
    """A floating-point tensor must be finite with every ``|value| <= MAX_ABS_VALUE``: NaN, infinite or
    absurdly large weights (1e38 overflows the first matrix product) would give NaN scores without
    any error. ``what`` names the tensor (and its file) in the ``CheckpointError``."""
    if not tensor.is_floating_point() or tensor.numel() == 0:
        return
    lo, hi = (float(v) for v in torch.aminmax(tensor))  # NaN propagates into both
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise CheckpointError(f"{what} holds NaN or infinite values")
    if max(-lo, hi) > MAX_ABS_VALUE:
        raise CheckpointError(f"{what} holds a value of magnitude {max(-lo, hi):.3g}, above the "
                              f"{MAX_ABS_VALUE:g} no real weight comes near")


def to_device(value, device, dtype=None) -> torch.Tensor:
    """Materialise one (lazy) tensor, converted to ``dtype`` on the host before it moves to ``device``,
    so no full-precision copy ever lands on the GPU; then check its values (:func:`check_values`, on
    the device: cheap there, and after the conversion that could overflow)."""
    what = f"{value.file}: weight '{value.key}'" if isinstance(value, LazyTensor) else "a weight"
    try:
        tensor = value.load() if isinstance(value, LazyTensor) else value
    except Exception as exc:
        raise CheckpointError(f"{what}: cannot be read ({one_line(exc)})") from None
    if not isinstance(tensor, torch.Tensor):
        raise CheckpointError(f"{what}: expected a tensor, found {type(tensor).__name__}")
    if dtype is not None and tensor.is_floating_point():
        tensor = tensor.to(dtype)
    tensor = tensor.to(device)
    check_values(tensor, what)
    return tensor


# -- random weights ----------------------------------------------------------------------------------


def counter_uniform(n: int, key: int, device) -> torch.Tensor:
    """``n`` float32 values, uniform in (0, 1), from a counter-based integer hash of ``(key, index)``.

    Only integer arithmetic (no product reaches 2**63) and exactly rounded float steps: the same values on
    every device, CPU or GPU, and whatever else ran before (unlike a device generator, whose stream depends
    on the device and its state)."""
    x = torch.arange(n, device=device, dtype=torch.int64)
    x = (x * 0x9E3779B1 + (key * 0x85EBCA77 & 0xFFFFFFFF)) & 0xFFFFFFFF
    for mult in (0x7FEB352D, 0x6B43A9B5, 0x5BD1E995):  # xorshift-multiply rounds; constants below 2**31
        x ^= x >> 16
        x = (x * mult) & 0xFFFFFFFF
    x ^= x >> 15
    return (x.to(torch.float32) + 0.5) / 4294967296.0


def random_weights(model: torch.nn.Module, seed: int, device, dtype) -> dict:
    """Deterministic random weights for ``model``'s parameters: norm weights uniform in 1 +- 0.17, the rest
    uniform with standard deviation 0.02, from :func:`counter_uniform` keyed by ``seed`` and the parameter's
    position, then cast to ``dtype``. Same seed, same weights on every device and for every ``dtype`` (up to
    its rounding). For benchmarks (real shapes, random values) and the offline demo encoders."""
    state = {}
    root3 = 3.0 ** 0.5
    for i, (name, p) in enumerate(model.named_parameters()):
        u = counter_uniform(p.numel(), seed * 1000003 + i, device).reshape(p.shape)
        r = (u - 0.5) * (2 * root3)  # mean 0, standard deviation 1
        state[name] = (1.0 + 0.1 * r if name.endswith("norm.weight") else 0.02 * r).to(dtype)
    return state
