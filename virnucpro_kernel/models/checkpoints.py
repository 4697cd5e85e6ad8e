"""Reading encoder checkpoints: safely, from disk or the LOCAL Hugging Face cache, with clear errors.

    directory = resolve_checkpoint("facebook/esm2_t36_3B_UR50D")   # or a folder, or a weights file
    config = read_config(directory)                                # config.json as a dict
    tensors = read_state_dict(directory)                           # {key: CPU tensor}, lazily read
    weights = select_weights(tensors, expected_shapes, prefixes=("esm.",), ignore=("lm_head.",))

Nothing here downloads, and nothing here runs code from a file: ``pytorch_model.bin`` is read with
``torch.load(weights_only=True)`` and a file that needs code to unpickle raises
``UnsafeCheckpointError`` without running it. ``model.safetensors`` (and sharded
``*.safetensors.index.json`` / ``pytorch_model.bin.index.json``) are read lazily, so converting the
weights to the target dtype and device happens one tensor at a time (``to_device``).
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Iterable, Mapping

import torch

from ..errors import CheckpointError, UnsafeCheckpointError

__all__ = ["resolve_checkpoint", "read_config", "weights_files", "read_state_dict", "select_weights", "to_device"]

WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
)


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
    """``config.json`` of a checkpoint folder (or of the folder holding a weights file)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    config = folder / "config.json"
    if not config.is_file():
        raise CheckpointError(f"{folder}: no config.json")
    try:
        return json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{config}: not a readable JSON config ({exc})") from None


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
        try:
            shards = sorted(set(json.loads(first.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise CheckpointError(f"{first}: not a readable shard index ({exc})") from None
        missing = [s for s in shards if not (first.parent / s).is_file()]
        if missing:
            raise CheckpointError(f"{first}: shard file {missing[0]} is missing")
        return [first.parent / s for s in shards]
    return [first]


def _read_file(file: Path) -> dict:
    if file.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            handle = safe_open(str(file), framework="pt", device="cpu")
            return {key: _LazyTensor(handle, key) for key in handle.keys()}
        except Exception as exc:
            raise CheckpointError(f"{file}: not a readable safetensors file ({exc})") from None
    try:
        kwargs = {"map_location": "cpu", "weights_only": True}
        try:
            state = torch.load(str(file), mmap=True, **kwargs)
        except RuntimeError as exc:  # mmap needs the zip format; the legacy format is read whole
            if "mmap" not in str(exc):
                raise
            state = torch.load(str(file), **kwargs)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsafeCheckpointError(
            f"{file}: refused: it needs code to unpickle, and checkpoints are loaded without running code ({first})"
        ) from None
    except Exception as exc:
        raise CheckpointError(f"{file}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{file}: holds a {type(state).__name__}, not a state dict of tensors")
    return dict(state)


class _LazyTensor:
    """A safetensors entry read only when asked for (keeps peak host memory at one tensor)."""

    def __init__(self, handle, key):
        self.handle, self.key = handle, key
        self.shape = tuple(handle.get_slice(key).get_shape())

    def load(self) -> torch.Tensor:
        return self.handle.get_tensor(self.key)


def read_state_dict(path) -> dict:
    """``{key: tensor or lazy tensor}`` from a checkpoint folder or weights file (CPU, nothing converted)."""
    state = {}
    for file in weights_files(path):
        state.update(_read_file(file))
    return state


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


def to_device(value, device, dtype=None) -> torch.Tensor:
    """Materialise one (lazy) tensor, converted to ``dtype`` on the host before it moves to ``device``,
    so no full-precision copy ever lands on the GPU."""
    tensor = value.load() if isinstance(value, _LazyTensor) else value
    if not isinstance(tensor, torch.Tensor):
        raise CheckpointError(f"expected a tensor, found {type(tensor).__name__}")
    if dtype is not None and tensor.is_floating_point():
        tensor = tensor.to(dtype)
    return tensor.to(device)


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
