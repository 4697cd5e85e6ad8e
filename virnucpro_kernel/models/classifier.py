"""The VirNucPro MLP classifier: model, safe checkpoint loading, our safetensors format, training.

Model (reference section 4)::

    Linear(input_dim, 512) -> BatchNorm1d(512) -> ReLU -> Dropout(0.5) -> Linear(512, 2)

evaluated in eval mode; softmax gives ``[P(others), P(virus)]`` (label 1 = virus, 0 = others).
Submodule names are the original's (``hidden_layer``, ``bn1``, ``output_layer``, ``dropout``), so
state-dict keys match the published checkpoints.

Checkpoints. The published ``300_model.pth`` / ``500_model.pth`` are whole pickled ``__main__.MLPClassifier``
modules in torch's zip format. :func:`load_classifier` never unpickles them with a general unpickler:
it checks the zip's structure (members stored, inside the file, ``data.pkl`` at most 1 MiB), scans
``data.pkl`` without running it (the globals it names, how deeply it nests), and reads it with
:class:`_RestrictedUnpickler`, whose ``find_class`` resolves only an allowlist (:data:`ALLOWED_GLOBALS`)
to inert stand-ins or to our own tensor rebuilders, and whose ``persistent_load`` reads each tensor
storage once, as raw bytes from the zip. Any other global (``posix.system``, ``builtins.eval``,
``subprocess.Popen``, ...) raises :class:`~virnucpro_kernel.errors.UnsafeCheckpointError` before
anything could call it. The parameters and buffers found are checked (shapes, finite values of sane
magnitude, a non-negative running variance, a BatchNorm eps in [1e-12, 1)) and become the weights of
an :class:`MLPClassifier`. Our own format is safetensors (:func:`save_classifier`), with the shapes and
the training/provenance metadata in the header, checked the same way. Loading takes at most a few
times the file's tensor bytes (the published files: about 1.3x).
"""

from __future__ import annotations

import collections
import functools
import hashlib
import io
import json
import math
import os
import pickle
import random
import re
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import CheckpointError, UnsafeCheckpointError, VirNucProError
from . import checkpoints

FORMAT_NAME = "virnucpro-classifier"
FORMAT_VERSION = 1
LABELS = ("others", "virus")  # index 0, 1

__all__ = [
    "MLPClassifier",
    "load_classifier",
    "save_classifier",
    "convert_checkpoint",
    "read_classifier_metadata",
    "train_classifier",
    "roc_auc",
    "binary_metrics",
    "ALLOWED_GLOBALS",
    "LABELS",
]


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------


class MLPClassifier(nn.Module):
    """``Linear -> BatchNorm1d -> ReLU -> Dropout -> Linear``; logits of ``[others, virus]``."""

    def __init__(self, input_dim: int = 3328, hidden_dim: int = 512, num_classes: int = 2, dropout: float = 0.5):
        super().__init__()
        self.input_dim = int(input_dim)
        self.hidden_dim = int(hidden_dim)
        self.num_classes = int(num_classes)
        # Registration order as in the original (also the state-dict key order).
        self.hidden_layer = nn.Linear(self.input_dim, self.hidden_dim)
        self.bn1 = nn.BatchNorm1d(self.hidden_dim)
        self.output_layer = nn.Linear(self.hidden_dim, self.num_classes)
        self.dropout = nn.Dropout(dropout)
        self.metadata: dict = {}  # provenance from the file it was loaded from (not part of the state dict)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.hidden_layer(x)
        x = self.bn1(x)
        x = torch.relu(x)
        x = self.dropout(x)
        return self.output_layer(x)

    @property
    def device(self) -> torch.device:
        return self.hidden_layer.weight.device

    def predict_proba(self, features) -> torch.Tensor:
        """Softmax probabilities ``(N, num_classes)`` (float32, on the model's device), in eval mode, no grad.

        ``features`` is a tensor or array ``(N, input_dim)``; it is moved to the model's device and dtype.
        The module's train/eval mode is restored afterwards.
        """
        x = torch.as_tensor(features)
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"features must have shape (N, {self.input_dim}), got {tuple(x.shape)}")
        weight = self.hidden_layer.weight
        x = x.to(device=weight.device, dtype=weight.dtype)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                logits = self(x)
                return torch.softmax(logits.float(), dim=1)
        finally:
            self.train(was_training)


# --------------------------------------------------------------------------------------------------
# Safe reading of the published pickled checkpoints
# --------------------------------------------------------------------------------------------------

# Why not torch.load(weights_only=True) with safe_globals: it cannot bound memory before it allocates.
# It inflates data.pkl and each storage whole, as large as the zip declares them; its allowlist lets a
# pickle call set() and other builtins on a tensor (one Python object per element); and the published
# files are whole pickled modules (``__main__.MLPClassifier``) it would have to build. This reader checks
# the archive first (checkpoints.open_torch_zip: members stored, inside the file, data.pkl small), scans
# the pickle without running it (checkpoints.scan_pickle: globals, nesting depth), then unpickles with
# inert stand-ins, reading each storage once and counting every byte it copies out of them.

_MAX_PICKLE_BYTES = 1 << 20  # a classifier's data.pkl is ~2.3 KB
_MAX_MODULE_DEPTH = 8  # MLPClassifier -> Linear: 2 levels
_MAX_DIMS = 8
_MIN_BN_EPS = 1e-12  # below ~1e-38 eps vanishes next to a float32 variance: a zero variance divides by 0
_MAX_CHUNK_SIZE = 1 << 20


class _PickledObject:
    """Inert stand-in for an allowlisted class found in a pickle: it only records its state.

    NEWOBJ calls ``cls.__new__(cls)``, REDUCE calls ``cls(*args)``, BUILD calls ``__setstate__``; none of
    these run anything from the file.
    """

    qualname = "?"

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            if not all(part is None or isinstance(part, dict) for part in state):
                raise pickle.UnpicklingError(f"malformed state of a pickled {self.qualname}")
            merged = dict(state[0] or {})
            merged.update(state[1] or {})
            state = merged
        self.state = state

    def __repr__(self):
        return f"<pickled {self.qualname}>"


def _stand_in(qualname: str) -> type:
    return type(f"PickledStandIn[{qualname}]", (_PickledObject,), {"qualname": qualname})


# Legacy typed storages as torch.save writes them (GLOBAL 'torch FloatStorage' ...): name -> (torch dtype, numpy dtype).
_STORAGE_DTYPES = {
    "DoubleStorage": (torch.float64, np.float64),
    "FloatStorage": (torch.float32, np.float32),
    "HalfStorage": (torch.float16, np.float16),
    "BFloat16Storage": (torch.bfloat16, np.int16),  # numpy has no bfloat16: read the bits, view in torch
    "LongStorage": (torch.int64, np.int64),
    "IntStorage": (torch.int32, np.int32),
    "ShortStorage": (torch.int16, np.int16),
    "CharStorage": (torch.int8, np.int8),
    "ByteStorage": (torch.uint8, np.uint8),
    "BoolStorage": (torch.bool, np.bool_),
}


class _Frozen:
    """Base of the objects the allowlist hands to the unpickler: without ``__dict__`` and refusing
    ``setattr``, so a pickle's BUILD opcode cannot alter them (they are shared by every load)."""

    __slots__ = ()

    def __setattr__(self, key, value):
        raise pickle.UnpicklingError(f"the pickle tried to set attribute {key!r} of {self!r}")

    __delattr__ = __setattr__


class _StorageType(_Frozen):
    """What ``torch.FloatStorage`` etc. resolve to in the restricted unpickler: just a dtype tag."""

    __slots__ = ("name", "torch_dtype", "numpy_dtype")

    def __init__(self, name: str):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "torch_dtype", _STORAGE_DTYPES[name][0])
        object.__setattr__(self, "numpy_dtype", _STORAGE_DTYPES[name][1])

    def __call__(self, *args, **kwargs):
        raise pickle.UnpicklingError(f"storage type torch.{self.name} called directly")

    def __repr__(self):
        return f"torch.{self.name}"


class _Rebuilder(_Frozen):
    """One of our tensor-rebuilding functions, as the unpickler sees it."""

    __slots__ = ("name", "function")

    def __init__(self, name: str, function: Callable):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "function", function)

    def __call__(self, *args):
        return self.function(*args)

    def __repr__(self):
        return self.name


class _Budget:
    """Bytes one load may still copy out of storages (tensors that are not a whole storage)."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int):
        self.limit, self.used = int(limit), 0

    def take(self, nbytes: int) -> None:
        if self.used + nbytes > self.limit:
            raise pickle.UnpicklingError(
                f"its tensors would copy more than {self.limit} bytes out of the storages (twice the file's "
                f"tensor bytes): a storage rebuilt over and over"
            )
        self.used += nbytes


def _int_tuple(value, what: str) -> tuple:
    if not isinstance(value, tuple) or len(value) > _MAX_DIMS or any(type(v) is not int or v < 0 for v in value):
        raise pickle.UnpicklingError(f"bad tensor {what}: {checkpoints._short(value)}")
    return value


def _contiguous_strides(size: tuple) -> tuple:
    strides, step = [], 1
    for n in reversed(size):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None,
                       *, budget: _Budget):
    """Our own version of ``torch._utils._rebuild_tensor_v2``: a tensor on a flat storage. A tensor that is
    the whole storage (all the published files hold) is a view of it, nothing copied; any other is
    copied out, each copy counted against ``budget``."""
    if not isinstance(storage, torch.Tensor) or storage.dim() != 1:
        raise pickle.UnpicklingError("tensor rebuilt from something that is not a storage")
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if type(storage_offset) is not int or storage_offset < 0 or len(size) != len(stride):
        raise pickle.UnpicklingError(f"bad tensor geometry: size {size}, stride {stride}, offset {storage_offset!r:.40}")
    numel = math.prod(size)
    if numel > storage.numel():  # only expanded (stride-0) views exceed their storage
        raise pickle.UnpicklingError(f"tensor of size {list(size)} is larger than its storage")
    if numel == 0:
        return torch.empty(size, dtype=storage.dtype)
    extent = storage_offset + sum((n - 1) * st for n, st in zip(size, stride)) + 1
    if extent > storage.numel():
        raise pickle.UnpicklingError(
            f"tensor of size {list(size)} reaches element {extent} of a storage of {storage.numel()}"
        )
    if storage_offset == 0 and numel == storage.numel() and stride == _contiguous_strides(size):
        return storage.view(size)
    budget.take(numel * storage.element_size())
    return torch.as_strided(storage, size, stride, storage_offset).clone()


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("parameter rebuilt from something that is not a tensor")
    return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
    return _rebuild_parameter(data, requires_grad, backward_hooks)


def _string_set(items=()):
    """What ``builtins.set`` resolves to: a set of a few short names (a module's
    ``_non_persistent_buffers_set``), never of a tensor's elements or anything else iterable."""
    if not isinstance(items, (list, tuple)) or len(items) > 256 or not all(
        isinstance(item, str) and len(item) <= 256 for item in items
    ):
        raise pickle.UnpicklingError(f"set() of {checkpoints._short(items)}: only a short list of names is allowed")
    return set(items)


def _empty_ordered_dict(*args, **kwargs):
    """What ``collections.OrderedDict`` resolves to: an empty one (torch.save fills it item by item)."""
    if args or kwargs:
        raise pickle.UnpicklingError("OrderedDict() called with arguments")
    return collections.OrderedDict()


_MODULE_CLASSES = (
    "__main__.MLPClassifier",
    "virnucpro_kernel.models.classifier.MLPClassifier",
    "torch.nn.modules.linear.Linear",
    "torch.nn.modules.batchnorm.BatchNorm1d",
    "torch.nn.modules.dropout.Dropout",
    "torch.nn.modules.activation.ReLU",
)

_TENSOR_REBUILDER = "torch._utils._rebuild_tensor_v2"

#: Every global a classifier checkpoint may name, and what it resolves to. Nothing here runs code from the
#: file: module classes become inert stand-ins, storages become dtype tags, tensors are rebuilt by our
#: own functions above (``_rebuild_tensor_v2`` bound to each load's byte budget), ``OrderedDict`` only
#: makes an empty one and ``set`` only a set of a few names. None of these objects can be altered by a
#: pickle (:class:`_Frozen`; BUILD on a stand-in class fails).
ALLOWED_GLOBALS: dict[str, Any] = {
    **{name: _stand_in(name) for name in _MODULE_CLASSES},
    "collections.OrderedDict": _Rebuilder("collections.OrderedDict", _empty_ordered_dict),
    "builtins.set": _Rebuilder("builtins.set", _string_set),  # protocol 2 writes __builtin__.set (python3_name)
    **{
        f"torch._utils.{fn.__name__}": _Rebuilder(f"torch._utils.{fn.__name__}", fn)
        for fn in (_rebuild_tensor_v2, _rebuild_parameter, _rebuild_parameter_with_state)
    },
    **{f"torch.{name}": _StorageType(name) for name in _STORAGE_DTYPES},
}

_python3_name = checkpoints.python3_name


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for torch's ``data.pkl``: allowlisted globals only, storages read from the zip as bytes."""

    def __init__(self, data: bytes, path: Path, load_storage: Callable[[_StorageType, str, int], torch.Tensor],
                 budget: _Budget):
        super().__init__(io.BytesIO(data))
        self._path = path
        self._load_storage = load_storage
        self._storages: dict[str, torch.Tensor] = {}
        self._rebuild_tensor = _Rebuilder(_TENSOR_REBUILDER, functools.partial(_rebuild_tensor_v2, budget=budget))

    def find_class(self, module, name):  # GLOBAL, STACK_GLOBAL, INST, OBJ and EXT* all come here
        qualname = _python3_name(module, name)
        if qualname == _TENSOR_REBUILDER:
            return self._rebuild_tensor
        try:
            return ALLOWED_GLOBALS[qualname]
        except KeyError:
            pass
        written = f"{module}.{name}"
        also = f" (written {written})" if written != qualname else ""
        raise UnsafeCheckpointError(
            f"{self._path}: refusing to load: the checkpoint imports {qualname}{also}, which is not an allowed "
            f"global of a classifier checkpoint (nothing in the file was run)"
        )

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or len(pid) != 5:
            raise pickle.UnpicklingError(f"unexpected persistent id {checkpoints._short(pid)}")
        typename, storage_type, key, location, numel = pid
        if isinstance(typename, bytes):
            typename = typename.decode("ascii", "replace")
        if (typename != "storage" or not isinstance(storage_type, _StorageType) or not isinstance(key, str)
                or not re.fullmatch(r"[A-Za-z0-9_]{1,64}", key) or type(numel) is not int or numel < 0):
            raise pickle.UnpicklingError(f"unexpected persistent id {checkpoints._short(pid)}")
        if key not in self._storages:  # each storage is read once, however many tensors use it
            self._storages[key] = self._load_storage(storage_type, key, numel)
        storage = self._storages[key]
        if storage.dtype != storage_type.torch_dtype:
            raise pickle.UnpicklingError(f"storage {key} used with two dtypes")
        return storage


def _read_torch_zip(path: Path) -> Any:
    """Unpickle ``data.pkl`` of a torch zip checkpoint with :class:`_RestrictedUnpickler`.

    Memory: each storage is read once, in 1-MiB pieces, into a tensor of its own size (the members'
    sizes are checked against the archive first), and copies out of storages are limited to twice the
    storages' bytes; so a load takes at most ~3x the file's tensor bytes, plus a pickle of 1 MiB."""
    zf, prefix = checkpoints.open_torch_zip(path, _MAX_PICKLE_BYTES)
    with zf:
        infos = {info.filename: info for info in zf.infolist()}
        storage_bytes = sum(i.file_size for n, i in infos.items() if n.startswith(prefix + "data/"))
        budget = _Budget(2 * storage_bytes + (1 << 16))
        byteorder = "little"
        if prefix + "byteorder" in infos:
            if infos[prefix + "byteorder"].file_size > 16:
                raise CheckpointError(f"{path}: malformed byteorder record")
            byteorder = zf.read(prefix + "byteorder").decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise CheckpointError(f"{path}: unknown byte order {byteorder!r}")

        def load_storage(storage_type: _StorageType, key: str, numel: int) -> torch.Tensor:
            member = f"{prefix}data/{key}"
            info = infos.get(member)
            if info is None:
                raise pickle.UnpicklingError(f"storage {key} is missing from the archive")
            itemsize = np.dtype(storage_type.numpy_dtype).itemsize
            if info.file_size != numel * itemsize:
                raise pickle.UnpicklingError(
                    f"storage {key}: {info.file_size} bytes for {numel} elements of {storage_type.name}"
                )
            raw = torch.empty(info.file_size, dtype=torch.uint8)
            buffer = raw.numpy()
            with zf.open(info) as fh:
                got = 0
                while got < info.file_size:
                    piece = fh.read(min(1 << 20, info.file_size - got))
                    if not piece:
                        raise pickle.UnpicklingError(f"storage {key} is truncated")
                    buffer[got: got + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
                    got += len(piece)
            if byteorder != sys.byteorder and itemsize > 1:
                buffer.view(storage_type.numpy_dtype).byteswap(inplace=True)
            return raw.view(storage_type.torch_dtype)

        try:
            data = zf.read(prefix + "data.pkl")
        except Exception as exc:  # bad CRC, truncated member
            raise CheckpointError(f"{path}: not a readable torch checkpoint ({_one_line(exc)})") from None
        checkpoints.scan_pickle(data, path, ALLOWED_GLOBALS, "a classifier checkpoint")
        try:
            return _RestrictedUnpickler(data, path, load_storage, budget).load()
        except CheckpointError:
            raise
        except (Exception, RecursionError, MemoryError) as exc:  # malformed pickle, truncated member, bad CRC, ...
            raise CheckpointError(f"{path}: malformed torch checkpoint ({_one_line(exc)})") from None


def _module_state_dict(obj: _PickledObject, path: Path, prefix: str = "", depth: int = 0) -> dict[str, torch.Tensor]:
    """Flatten a pickled nn.Module stand-in into ``{dotted.name: tensor}`` like ``Module.state_dict``."""
    if depth > _MAX_MODULE_DEPTH:
        raise CheckpointError(f"{path}: modules nested deeper than {_MAX_MODULE_DEPTH} levels ({prefix[:80]}...)")
    state = getattr(obj, "state", None)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: pickled module {obj.qualname} has no state")
    out: dict[str, torch.Tensor] = {}
    non_persistent = state.get("_non_persistent_buffers_set")
    if non_persistent is None:
        non_persistent = set()
    if not isinstance(non_persistent, (set, frozenset)):
        raise CheckpointError(f"{path}: pickled module {obj.qualname} has a malformed _non_persistent_buffers_set")
    for field in ("_parameters", "_buffers"):
        entries = state.get(field)
        entries = {} if entries is None else entries
        if not isinstance(entries, dict) or not all(isinstance(k, str) for k in entries):
            raise CheckpointError(f"{path}: pickled module {obj.qualname} has a malformed {field}")
        for name, value in entries.items():
            if value is None or (field == "_buffers" and name in non_persistent):
                continue
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(f"{path}: {prefix}{name} is not a tensor")
            out[f"{prefix}{name}"] = value
    modules = state.get("_modules")
    modules = {} if modules is None else modules
    if not isinstance(modules, dict) or not all(isinstance(k, str) for k in modules):
        raise CheckpointError(f"{path}: pickled module {obj.qualname} has malformed submodules")
    for name, sub in modules.items():
        if sub is None:
            continue
        if not isinstance(sub, _PickledObject):
            raise CheckpointError(f"{path}: submodule {prefix}{name} is not a module")
        out.update(_module_state_dict(sub, path, f"{prefix}{name}.", depth + 1))
    return out


def _check_eps(value, path: Path, what: str) -> float:
    """A BatchNorm eps: a finite number in [1e-12, 1). NaN gives NaN scores, a negative one NaN where a
    variance is small, a string a crash in the middle of a run."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CheckpointError(f"{path}: {what} is {checkpoints._short(value)}, not a number")
    eps = float(value)
    if not (math.isfinite(eps) and _MIN_BN_EPS <= eps < 1):
        raise CheckpointError(f"{path}: {what} is {eps!r}; a BatchNorm eps must be a finite number in "
                              f"[{_MIN_BN_EPS:g}, 1)")
    return eps


def _extract_state_dict(obj: Any, path: Path, depth: int = 0) -> tuple[dict[str, torch.Tensor], dict]:
    """Find the classifier's tensors in what the pickle held: a whole module or a (nested) state dict."""
    if isinstance(obj, _PickledObject):
        sd = _module_state_dict(obj, path)
        extra = {}
        modules = obj.state.get("_modules")
        bn = modules.get("bn1") if isinstance(modules, dict) else None
        if isinstance(bn, _PickledObject) and isinstance(bn.state, dict) and "eps" in bn.state:
            extra["bn_eps"] = _check_eps(bn.state["eps"], path, "bn1.eps (the pickled BatchNorm's)")
        return sd, extra
    if isinstance(obj, dict) and depth < 4:
        if obj and all(isinstance(k, str) for k in obj) and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj), {}
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj:
                return _extract_state_dict(obj[key], path, depth + 1)
    raise CheckpointError(f"{path}: holds no classifier (found {type(obj).__name__}, not a module or state dict)")


# --------------------------------------------------------------------------------------------------
# Loading, saving, converting
# --------------------------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:300]


def _sniff(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a directory, not a classifier file") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({_one_line(exc)})") from None
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"
    if len(head) == 9 and head[8:9] == b"{":
        (header_len,) = struct.unpack("<Q", head[:8])
        if 0 < header_len < 100_000_000:
            return "safetensors"
    if head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):
        raise CheckpointError(f"{path}: legacy (pre-zip) torch checkpoint; not supported, re-save it with torch >= 1.6")
    raise CheckpointError(f"{path}: not a classifier checkpoint (neither a torch .pth zip nor safetensors)")


def _shape(value) -> tuple:
    return tuple(value.shape)


def _model_from_state_dict(sd: Mapping[str, Any], path: Path, bn_eps: Optional[float] = None) -> MLPClassifier:
    """Check keys, shapes and values, then build an :class:`MLPClassifier` (float32) holding them.

    ``sd`` maps keys to tensors or lazy safetensors entries: every key and shape is checked before any
    tensor is read. Each floating-point tensor must be finite and of sane magnitude
    (:func:`checkpoints.check_values`) and the running variance non-negative. The model is built on the
    meta device and takes the checked tensors as they are (no second copy of the weights)."""
    for key in ("hidden_layer.weight", "output_layer.weight"):
        if key not in sd:
            raise CheckpointError(f"{path}: missing key {key} (found: {', '.join(list(sd)[:8]) or 'nothing'})")
    hw, ow = _shape(sd["hidden_layer.weight"]), _shape(sd["output_layer.weight"])
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
        if key in sd and _shape(sd[key]) != tuple(ref.shape):
            raise CheckpointError(f"{path}: {key} has shape {list(_shape(sd[key]))}, expected {list(ref.shape)}")
    clean = {}
    seen = set()
    for key, ref in expected.items():
        if key not in sd:
            clean[key] = torch.zeros((), dtype=ref.dtype)
            continue
        value = sd[key]
        if isinstance(value, checkpoints.LazyTensor):
            try:
                value = value.load()
            except Exception as exc:
                raise CheckpointError(f"{path}: {key} cannot be read ({_one_line(exc)})") from None
        if ref.is_floating_point():
            if not value.is_floating_point():
                raise CheckpointError(f"{path}: {key} has dtype {value.dtype}, expected a floating-point tensor")
            checkpoints.check_values(value, f"{path}: {key}")  # |value| <= 1e6: float32 holds it
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
    header = _safetensors_header(path)
    return _metadata_from_header(header, path)


def _safetensors_header(path: Path) -> dict:
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except Exception as exc:
        raise CheckpointError(f"{path}: malformed safetensors file ({_one_line(exc)})") from None


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
            raise CheckpointError(f"{path}: chunk_size in the metadata is {checkpoints._short(chunk)}, not a "
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
        return {key: checkpoints.LazyTensor(handle, key, path) for key in handle.keys()}, header
    except Exception as exc:
        raise CheckpointError(f"{path}: malformed safetensors file ({_one_line(exc)})") from None


def load_classifier(path, device="cpu") -> MLPClassifier:
    """Load a classifier from a published ``.pth`` (read without running anything) or our safetensors.

    The format is told by the file's first bytes, not its name. Returns the model in eval mode on
    ``device``, with ``model.metadata`` holding dims, source format and any saved metadata (``chunk_size``
    when the file says it). Raises :class:`UnsafeCheckpointError` for a pickle naming a global outside
    :data:`ALLOWED_GLOBALS`, :class:`CheckpointError` for anything else wrong with the file: malformed,
    too large for what it holds (see ``_read_torch_zip``), NaN/infinite/absurd weights, a negative running
    variance, a BatchNorm eps outside [1e-12, 1).
    """
    path = Path(path)
    kind = _sniff(path)
    try:
        if kind == "torch-zip":
            obj = _read_torch_zip(path)
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


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------


def roc_auc(scores, labels) -> Optional[float]:
    """Area under the ROC curve via the rank (Mann-Whitney U) statistic, ties counted half.

    ``labels`` are 0/1 (1 = positive). Returns None when only one class is present.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    if scores.shape != labels.shape:
        raise ValueError("scores and labels differ in length")
    n_pos = int(labels.sum())
    n_neg = int(labels.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # 1-based rank of each distinct score's last occurrence
    average_rank = ends - (counts - 1) / 2.0
    ranks = average_rank[inverse]
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def binary_metrics(probs, labels) -> dict:
    """Accuracy, precision, recall, F1 (positive = 1 = virus), ROC AUC and the confusion counts.

    ``probs`` is ``(N, 2)`` softmax output (the call is the argmax, ties to 0, as the original) or a
    1-D array of P(positive) (the call is ``P > 0.5``). Precision/recall with an empty denominator are 0.0.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 2:
        pred = np.argmax(p, axis=1).astype(np.int64)
        p = p[:, 1]
    else:
        p = p.ravel()
        pred = (p > 0.5).astype(np.int64)
    y = np.asarray(labels).ravel().astype(np.int64)
    if y.shape != p.shape:
        raise ValueError("probabilities and labels differ in length")
    tp = int(((pred == 1) & (y == 1)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    n = tp + fp + tn + fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / n if n else None,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": roc_auc(p, y) if n else None,
        "confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
    }


# --------------------------------------------------------------------------------------------------
# Training (original train.py recipe, generalised)
# --------------------------------------------------------------------------------------------------


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _split_indices(labels: np.ndarray, split: Sequence[float], seed: int, stratify: bool):
    """Shuffle with ``seed`` and cut into train/val/test, per class when ``stratify``."""
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)] if stratify else [np.arange(labels.size)]
    parts = ([], [], [])
    for idx in groups:
        idx = idx[rng.permutation(idx.size)]
        n = idx.size
        n_val = int(math.floor(n * split[1] + 0.5))
        n_test = int(math.floor(n * split[2] + 0.5))
        while n - n_val - n_test < 1 and (n_val or n_test):  # keep at least one training example
            if n_test >= n_val and n_test:
                n_test -= 1
            else:
                n_val -= 1
        n_train = n - n_val - n_test
        parts[0].append(idx[:n_train])
        parts[1].append(idx[n_train : n_train + n_val])
        parts[2].append(idx[n_train + n_val :])
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) for p in parts)


def _class_counts(labels: np.ndarray) -> dict:
    return {name: int((labels == i).sum()) for i, name in enumerate(LABELS)}


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A shuffled epoch; a last batch of one is merged into the one before (BatchNorm needs two rows)."""
    order = torch.randperm(n, generator=generator)
    chunks = list(torch.split(order, batch_size))
    if len(chunks) > 1 and chunks[-1].numel() == 1:
        chunks[-2] = torch.cat([chunks[-2], chunks[-1]])
        chunks.pop()
    return chunks


def _mean_loss(model: MLPClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float(F.cross_entropy(model(x), y).item())


def train_classifier(
    features,
    labels,
    *,
    seed: int = 42,
    max_epochs: int = 200,
    patience: int = 5,
    batch_size: int = 32,
    lr: float = 2e-4,
    momentum: float = 0.9,
    step_size: int = 10,
    gamma: float = 0.85,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    stratify: bool = True,
    hidden_dim: int = 512,
    device="cpu",
    progress: Optional[Callable[[int, float, Optional[float]], None]] = None,
) -> tuple[MLPClassifier, dict]:
    """Train an :class:`MLPClassifier` with the original recipe; returns ``(model, metrics)``.

    Cross-entropy, SGD(lr, momentum), StepLR(step_size, gamma) stepped per epoch, shuffled batches of
    ``batch_size``, up to ``max_epochs`` with early stopping on validation loss (stop after ``patience``
    epochs without improvement; the best epoch's weights are restored). The data are split
    train/validation/test by ``split`` (per class when ``stratify``) with ``seed``; python ``random``,
    NumPy and torch are seeded with ``seed``. ``labels``: 1 = virus, 0 = others.

    Metrics (JSON-serialisable) are on the test split: accuracy, precision, recall, f1, roc_auc,
    confusion, test_loss; plus epochs_run, best_epoch, best_val_loss, val_loss (of the returned model), stopped_early, n_train/n_val/n_test,
    class_counts, history, hyperparameters and notes (e.g. an empty test split gives None metrics
    and a note). ``progress(epoch, train_loss, val_loss)`` is called after each epoch (val_loss None
    without a validation split).
    """
    x_all = torch.as_tensor(features)
    y_all = torch.as_tensor(labels)
    if x_all.dim() != 2:
        raise ValueError(f"features must be 2-D (N, D), got shape {tuple(x_all.shape)}")
    if y_all.dim() != 1 or y_all.shape[0] != x_all.shape[0]:
        raise ValueError(f"labels must be 1-D with {x_all.shape[0]} entries, got shape {tuple(y_all.shape)}")
    if y_all.is_floating_point():
        if not torch.equal(y_all, y_all.round()):
            raise ValueError("labels must be integers 0 (others) or 1 (virus)")
    y_all = y_all.to(torch.int64)
    if y_all.numel() and not bool(((y_all == 0) | (y_all == 1)).all()):
        raise ValueError("labels must be 0 (others) or 1 (virus)")
    x_all = x_all.to(torch.float32)
    if not bool(torch.isfinite(x_all).all()):
        raise VirNucProError("training features contain NaN or infinite values")
    split = tuple(float(s) for s in split)
    if len(split) != 3 or any(s < 0 for s in split) or abs(sum(split) - 1.0) > 1e-6 or split[0] <= 0:
        raise ValueError(f"split must be three non-negative fractions summing to 1 with train > 0, got {split}")
    for name, value in (("max_epochs", max_epochs), ("patience", patience), ("batch_size", batch_size)):
        if int(value) < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")

    n = int(x_all.shape[0])
    y_np = y_all.numpy()
    train_idx, val_idx, test_idx = _split_indices(y_np, split, seed, stratify)
    if train_idx.size < 2:
        raise VirNucProError(f"training needs at least 2 training examples; got {n} examples in all")
    notes: list[str] = []
    if np.unique(y_np[train_idx]).size < 2:
        notes.append("the training split holds only one class; the model cannot learn to separate classes")

    _seed_everything(seed)
    device = torch.device(device)
    model = MLPClassifier(input_dim=x_all.shape[1], hidden_dim=hidden_dim, num_classes=2).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
    shuffle = torch.Generator().manual_seed(seed)

    x_dev, y_dev = x_all.to(device), y_all.to(device)
    to_dev = lambda idx: torch.from_numpy(idx).to(device)  # noqa: E731
    x_tr, y_tr = x_dev[to_dev(train_idx)], y_dev[to_dev(train_idx)]
    x_va, y_va = x_dev[to_dev(val_idx)], y_dev[to_dev(val_idx)]
    x_te, y_te = x_dev[to_dev(test_idx)], y_dev[to_dev(test_idx)]
    if val_idx.size == 0:
        notes.append("validation split is empty: no early stopping; the last epoch's weights are kept")

    best_val = math.inf
    best_epoch = 0
    best_state = None
    bad_epochs = 0
    stopped_early = False
    history = []
    epoch = 0
    for epoch in range(1, int(max_epochs) + 1):
        model.train()
        total = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device: no sync per batch
        count = 0
        for batch in _batches(x_tr.shape[0], int(batch_size), shuffle):
            batch = batch.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x_tr[batch]), y_tr[batch])
            loss.backward()
            optimizer.step()
            total += loss.detach().double() * batch.numel()
            count += batch.numel()
        scheduler.step()
        train_loss = float(total) / count
        val_loss = _mean_loss(model, x_va, y_va) if val_idx.size else None
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
        if progress is not None:
            progress(epoch, train_loss, val_loss)
        if val_loss is None:
            best_epoch = epoch
            continue
        if val_loss < best_val:
            best_val, best_epoch, bad_epochs = val_loss, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
            if bad_epochs >= patience:
                stopped_early = True
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()

    metrics: dict = {
        "accuracy": None,
        "precision": None,
        "recall": None,
        "f1": None,
        "roc_auc": None,
        "confusion": None,
        "test_loss": None,
    }
    if test_idx.size:
        probs = model.predict_proba(x_te).cpu().numpy()
        metrics.update(binary_metrics(probs, y_te.cpu().numpy()))
        metrics["test_loss"] = _mean_loss(model, x_te, y_te)
        if metrics["roc_auc"] is None:
            notes.append("the test split holds only one class: ROC AUC is undefined")
    else:
        notes.append(f"test split is empty ({n} examples, split {list(split)}): no test metrics")
    metrics.update(
        epochs_run=epoch,
        best_epoch=best_epoch,
        best_val_loss=best_val if best_state is not None else None,
        val_loss=_mean_loss(model, x_va, y_va) if val_idx.size else None,  # of the returned (restored) model
        stopped_early=stopped_early,
        n_train=int(train_idx.size),
        n_val=int(val_idx.size),
        n_test=int(test_idx.size),
        class_counts={
            "all": _class_counts(y_np),
            "train": _class_counts(y_np[train_idx]),
            "val": _class_counts(y_np[val_idx]),
            "test": _class_counts(y_np[test_idx]),
        },
        input_dim=int(x_all.shape[1]),
        seed=int(seed),
        hyperparameters={
            "max_epochs": int(max_epochs),
            "patience": int(patience),
            "batch_size": int(batch_size),
            "lr": float(lr),
            "momentum": float(momentum),
            "step_size": int(step_size),
            "gamma": float(gamma),
            "split": list(split),
            "stratify": bool(stratify),
            "hidden_dim": int(hidden_dim),
        },
        history=history,
        notes=notes,
    )
    return model, metrics
