"""Classifier weight files: the published pickles and our safetensors format, read with every check.

The published ``300_model.pth`` / ``500_model.pth`` are whole pickled ``__main__.MLPClassifier`` modules
in torch's zip format. :func:`load_classifier` never unpickles them with a general unpickler: it reads
them with :func:`.pickles.read_torch_zip` (archive checked, pickle scanned without running it, then
unpickled with an allowlist of inert stand-ins: :data:`.pickles.ALLOWED_GLOBALS`). Our own format is
safetensors (:func:`save_classifier`), with the shapes and the training/provenance metadata in the
header. Either way the parameters and buffers found are checked (shapes, finite values of sane
magnitude, a non-negative running variance, a BatchNorm eps in [1e-12, 1)) before they become the
weights of an :class:`~.classifier.MLPClassifier`. Loading takes at most a few times the file's tensor
bytes (the published files: about 1.3x).

:func:`convert_checkpoint` turns a published file into our format; :func:`read_classifier_metadata`
reads a file's header without its weights.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from ..errors import CheckpointError
from .checkpoints import LazyTensor, check_values
from .classifier import MLPClassifier
from .pickles import PickledObject, module_state_dict, one_line, read_torch_zip, short

__all__ = ["load_classifier", "save_classifier", "convert_checkpoint", "read_classifier_metadata"]

FORMAT_NAME = "virnucpro-classifier"
FORMAT_VERSION = 1
_MIN_BN_EPS = 1e-12  # below ~1e-38 eps vanishes next to a float32 variance: a zero variance divides by 0
_MAX_CHUNK_SIZE = 1 << 20


# -- what a file holds -------------------------------------------------------------------------------


def _check_eps(value, path: Path, what: str) -> float:
    """A BatchNorm eps: a finite number in [1e-12, 1). NaN gives NaN scores, a negative one NaN where a
    variance is small, a string a crash in the middle of a run."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CheckpointError(f"{path}: {what} is {short(value)}, not a number")
    eps = float(value)
    if not (math.isfinite(eps) and _MIN_BN_EPS <= eps < 1):
        raise CheckpointError(f"{path}: {what} is {eps!r}; a BatchNorm eps must be a finite number in "
                              f"[{_MIN_BN_EPS:g}, 1)")
    return eps


def _extract_state_dict(obj: Any, path: Path, depth: int = 0) -> tuple[dict[str, torch.Tensor], dict]:
    """Find the classifier's tensors in what the pickle held: a whole module or a (nested) state dict."""
    if isinstance(obj, PickledObject):
        sd = module_state_dict(obj, path)
        extra = {}
        modules = obj.state.get("_modules")
        bn = modules.get("bn1") if isinstance(modules, dict) else None
        if isinstance(bn, PickledObject) and isinstance(bn.state, dict) and "eps" in bn.state:
            extra["bn_eps"] = _check_eps(bn.state["eps"], path, "bn1.eps (the pickled BatchNorm's)")
        return sd, extra
    if isinstance(obj, dict) and depth < 4:
        if obj and all(isinstance(k, str) for k in obj) and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj), {}
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj:
                return _extract_state_dict(obj[key], path, depth + 1)
    raise CheckpointError(f"{path}: holds no classifier (found {type(obj).__name__}, not a module or state dict)")


# -- loading, saving, converting ---------------------------------------------------------------------


def _sniff(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a directory, not a classifier file") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({one_line(exc)})") from None
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"
    if len(head) == 9 and head[8:9] == b"{":
        (header_len,) = struct.unpack("<Q", head[:8])
        if 0 < header_len < 100_000_000:
            return "safetensors"
    if head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):
        raise CheckpointError(f"{path}: legacy (pre-zip) torch checkpoint; not supported, re-save it with torch >= 1.6")
    raise CheckpointError(f"{path}: not a classifier checkpoint (neither a torch .pth zip nor safetensors)")


def _model_from_state_dict(sd: Mapping[str, Any], path: Path, bn_eps: Optional[float] = None) -> MLPClassifier:
    """Check keys, shapes and values, then build an :class:`MLPClassifier` (float32) holding them.

    ``sd`` maps keys to tensors or lazy safetensors entries: every key and shape is checked before any
    tensor is read. Each floating-point tensor must be finite and of sane magnitude
    (:func:`.checkpoints.check_values`) and the running variance non-negative. The model is built on the
    meta device and takes the checked tensors as they are (no second copy of the weights)."""
    for key in ("hidden_layer.weight", "output_layer.weight"):
        if key not in sd:
            raise CheckpointError(f"{path}: missing key {key} (found: {', '.join(list(sd)[:8]) or 'nothing'})")
    hw, ow = tuple(sd["hidden_layer.weight"].shape), tuple(sd["output_layer.weight"].shape)
    if len(hw) != 2 or len(ow) != 2 or ow[1] != hw[0] or min(hw) < 1 or ow[0] < 2:
        raise CheckpointError(
            f"{path}: hidden_layer.weight {list(hw)} and output_layer.weight {list(ow)} do not form an MLP classifier"
        )
    with torch.device("meta"):
        model = MLPClassifier(input_dim=hw[1], hidden_dim=hw[0], num_classes=ow[0])
    expected = model.state_dict()
    optional = {"bn1.num_batches_tracked"}
    missing = [k for k in expected if k not in sd and k not in optional]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing))
        if unexpected:
            parts.append("unexpected " + ", ".join(unexpected[:8]))
        raise CheckpointError(f"{path}: not an MLPClassifier state dict ({'; '.join(parts)})")
    for key, ref in expected.items():
        if key in sd and tuple(sd[key].shape) != tuple(ref.shape):
            raise CheckpointError(f"{path}: {key} has shape {list(sd[key].shape)}, expected {list(ref.shape)}")
    clean = {}
    seen = set()
    for key, ref in expected.items():
        if key not in sd:
            clean[key] = torch.zeros((), dtype=ref.dtype)
            continue
        value = sd[key]
        if isinstance(value, LazyTensor):
            try:
                value = value.load()
            except Exception as exc:
                raise CheckpointError(f"{path}: {key} cannot be read ({one_line(exc)})") from None
        if ref.is_floating_point():
            if not value.is_floating_point():
                raise CheckpointError(f"{path}: {key} has dtype {value.dtype}, expected a floating-point tensor")
            check_values(value, f"{path}: {key}")  # |value| <= 1e6: float32 holds it
        value = value.to(ref.dtype)
        if value.numel() and value.data_ptr() in seen:  # two entries on one storage: each its own copy
            value = value.clone()
        seen.add(value.data_ptr())
        clean[key] = value
    if bool((clean["bn1.running_var"] < 0).any()):
        raise CheckpointError(f"{path}: bn1.running_var holds negative values (a variance is never negative)")
    model.load_state_dict(clean, assign=True)
    if bn_eps is not None:
        model.bn1.eps = bn_eps
    model.eval()
    return model


def read_classifier_metadata(path) -> dict:
    """The header of a classifier file without loading weights: dims, format and saved metadata.

    For our safetensors files this is what :func:`save_classifier` wrote; for a published ``.pth``
    the weights are read (safely) to learn the dims.
    """
    path = Path(path)
    if _sniff(path) == "torch-zip":
        return dict(load_classifier(path).metadata)
    _, header = _read_safetensors(path)
    return _metadata_from_header(header, path)


def _metadata_from_header(header: Mapping[str, str], path: Path) -> dict:
    meta: dict = {}
    if "metadata" in header:
        try:
            loaded = json.loads(header["metadata"])
        except (ValueError, RecursionError):
            raise CheckpointError(f"{path}: metadata in the header is not JSON") from None
        if isinstance(loaded, dict):
            meta.update(loaded)
    for key in ("input_dim", "hidden_dim", "num_classes"):
        if key in header:
            try:
                meta[key] = int(header[key])
            except ValueError:
                raise CheckpointError(f"{path}: header field {key}={header[key]!r:.40} is not an integer") from None
    if "bn_eps" in meta:
        meta["bn_eps"] = _check_eps(meta["bn_eps"], path, "bn_eps in the metadata")
    if "chunk_size" in meta:
        chunk = meta["chunk_size"]
        if isinstance(chunk, bool) or not isinstance(chunk, int) or not 1 <= chunk <= _MAX_CHUNK_SIZE:
            raise CheckpointError(f"{path}: chunk_size in the metadata is {short(chunk)}, not a "
                                  f"whole number of bases in [1, {_MAX_CHUNK_SIZE}]")
    meta["format"] = header.get("format", "safetensors")
    if "format_version" in header:
        meta["format_version"] = header["format_version"]
    return meta


def _read_safetensors(path: Path) -> tuple[dict, dict]:
    """``({key: lazy tensor}, header)``: keys, shapes and header only; safetensors checks on opening that
    every tensor lies inside the file, so reading them later takes at most the file's own bytes."""
    try:
        from safetensors import safe_open

        handle = safe_open(str(path), framework="pt", device="cpu")
        header = dict(handle.metadata() or {})
        return {key: LazyTensor(handle, key, path) for key in handle.keys()}, header
    except Exception as exc:
        raise CheckpointError(f"{path}: malformed safetensors file ({one_line(exc)})") from None


def load_classifier(path, device="cpu") -> MLPClassifier:
    """Load a classifier from a published ``.pth`` (read without running anything) or our safetensors.

    The format is told by the file's first bytes, not its name. Returns the model in eval mode on
    ``device``, with ``model.metadata`` holding dims, source format and any saved metadata (``chunk_size``
    when the file says it). Raises :class:`UnsafeCheckpointError` for a pickle naming a global outside
    :data:`.pickles.ALLOWED_GLOBALS`, :class:`CheckpointError` for anything else wrong with the file:
    malformed, too large for what it holds (see :func:`.pickles.read_torch_zip`), NaN/infinite/absurd
    weights, a negative running variance, a BatchNorm eps outside [1e-12, 1).
    """
    path = Path(path)
    kind = _sniff(path)
    try:
        if kind == "torch-zip":
            obj = read_torch_zip(path)
            sd, extra = _extract_state_dict(obj, path)
            del obj
            model = _model_from_state_dict(sd, path, bn_eps=extra.get("bn_eps"))
            model.metadata = {"format": "torch-pickle", "source": path.name}
        else:
            sd, header = _read_safetensors(path)
            meta = _metadata_from_header(header, path)
            model = _model_from_state_dict(sd, path, bn_eps=meta.get("bn_eps"))
            for key in ("input_dim", "hidden_dim", "num_classes"):
                if key in meta and meta[key] != getattr(model, key):
                    raise CheckpointError(
                        f"{path}: header says {key}={meta[key]} but the weights have {getattr(model, key)}"
                    )
            model.metadata = meta
    except RecursionError:
        raise CheckpointError(f"{path}: malformed classifier checkpoint (nested too deeply)") from None
    except MemoryError:
        raise CheckpointError(f"{path}: out of memory while reading the classifier checkpoint") from None
    model.metadata.update(input_dim=model.input_dim, hidden_dim=model.hidden_dim, num_classes=model.num_classes)
    return model.to(device)


def save_classifier(model: MLPClassifier, path, metadata: Optional[Mapping[str, Any]] = None) -> Path:
    """Write ``model`` as safetensors (weights and BatchNorm statistics) with JSON metadata in the header.

    ``metadata`` (JSON-serialisable: chunk_size, training metrics, provenance, ...) is stored under the
    header key ``metadata``; ``input_dim``/``hidden_dim``/``num_classes``/``format`` are stored as
    header fields of their own. The file is written atomically.
    """
    from safetensors.torch import save_file

    path = Path(path)
    meta = dict(metadata or {})
    if model.bn1.eps != 1e-5:
        meta.setdefault("bn_eps", model.bn1.eps)
    try:
        meta_json = json.dumps(meta, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"classifier metadata must be JSON-serialisable: {exc}") from None
    header = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "input_dim": str(model.input_dim),
        "hidden_dim": str(model.hidden_dim),
        "num_classes": str(model.num_classes),
        "metadata": meta_json,
    }
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=header)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_checkpoint(in_path, out_path, *, chunk_size: Optional[int] = None, metadata: Optional[Mapping] = None) -> Path:
    """Published ``.pth`` (or any file :func:`load_classifier` reads) -> our safetensors format.

    ``chunk_size`` defaults to the number in a published name (``500_model.pth`` -> 500). The output's
    metadata records the source file name and its SHA-256.
    """
    in_path = Path(in_path)
    model = load_classifier(in_path)
    if chunk_size is None:
        match = re.fullmatch(r"(\d+)_model\.pth", in_path.name)
        chunk_size = int(match.group(1)) if match else model.metadata.get("chunk_size")
    meta = {k: v for k, v in model.metadata.items() if k not in ("format", "format_version", "source")}
    meta.update(
        converted_from=in_path.name,
        source_format=model.metadata.get("format"),
        source_sha256=_sha256(in_path),
    )
    if chunk_size is not None:
        meta["chunk_size"] = int(chunk_size)
    meta.update(metadata or {})
    return save_classifier(model, out_path, metadata=meta)


