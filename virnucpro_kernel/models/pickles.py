"""Torch pickle archives, read without running anything from them.

Shared by both kinds of weights file that come as pickles: an encoder's ``pytorch_model.bin`` (a state
dict: :mod:`.checkpoints` checks its archive and pickle with the functions here, then reads it with
``torch.load(weights_only=True)``) and the published classifier ``300_model.pth`` / ``500_model.pth``
(whole pickled ``__main__.MLPClassifier`` modules, read here by :func:`read_torch_zip` for
:mod:`.classifier_files`).

- :func:`open_torch_zip` checks the zip's structure before any member is read: members stored, inside
  the file, ``data.pkl`` small.
- :func:`scan_pickle` reads every opcode without running any: the globals a pickle names must be on an
  allowlist, and what it builds may nest only so deep.
- :func:`read_torch_zip` unpickles ``data.pkl`` with a restricted unpickler whose ``find_class`` resolves
  only :data:`ALLOWED_GLOBALS` (inert stand-ins and our own tensor rebuilders) and whose
  ``persistent_load`` reads each tensor storage once, as raw bytes from the zip. Any other global
  (``posix.system``, ``builtins.eval``, ``subprocess.Popen``, ...) raises
  :class:`~virnucpro_kernel.errors.UnsafeCheckpointError` before anything could call it.
  :func:`module_state_dict` turns a pickled module's stand-in into ``{name: tensor}``.

Why not ``torch.load(weights_only=True)`` with ``safe_globals`` for the classifier: it cannot bound memory
before it allocates. It inflates ``data.pkl`` and each storage whole, as large as the zip declares them;
its allowlist lets a pickle call ``set()`` and other builtins on a tensor (one Python object per
element); and the published files are whole pickled modules it would have to build.
"""

from __future__ import annotations

import _compat_pickle
import collections
import functools
import io
import math
import pickle
import pickletools
import re
import struct
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import CheckpointError, UnsafeCheckpointError

__all__ = ["open_torch_zip", "scan_pickle", "python3_name", "read_torch_zip", "module_state_dict", "PickledObject",
           "ALLOWED_GLOBALS"]

# -- limits ------------------------------------------------------------------------------------------

MAX_PICKLE_DEPTH = 64  # containers inside containers; a state dict or a pickled module needs ~12
MAX_ZIP_DIRECTORY_BYTES = 16 << 20  # a torch zip has ~100 bytes of directory a tensor
_MAX_PICKLE_BYTES = 1 << 20  # a classifier's data.pkl is ~2.3 KB
_MAX_MODULE_DEPTH = 8  # MLPClassifier -> Linear: 2 levels
_MAX_DIMS = 8


def one_line(exc: BaseException) -> str:
    """An exception as one line of at most 300 characters, for error messages."""
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:300]


def short(value) -> str:
    """``repr(value)`` on one line, at most 60 characters (never raises), for error messages."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001  (RecursionError on a deeply nested value, ...)
        text = f"a {type(value).__name__}"
    return " ".join(text.split())[:60]


# -- static checks -----------------------------------------------------------------------------------


def python3_name(module: str, name: str) -> str:
    """The dotted name a standard unpickler would import: Python 2 names (protocol <= 2 pickles write
    ``__builtin__.eval``, ``commands.check_call``) are mapped as ``pickle``'s ``fix_imports`` does."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"}
_UPDATE_OPS = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}  # alter the container below
_REFUSED_OPS = {"EXT1", "EXT2", "EXT4", "NEXT_BUFFER", "READONLY_BUFFER", "PERSID"}


def scan_pickle(data: bytes, source, allowed, kind: str, max_depth: int = MAX_PICKLE_DEPTH) -> int:
    """Check a pickle without running it; returns its length in bytes (up to and including STOP).

    Every opcode is read (``pickletools.genops``) and the stack is simulated symbolically: each global
    named (``GLOBAL``, ``INST``, and ``STACK_GLOBAL`` whose two strings must be constants of the pickle)
    must be in ``allowed``, else :class:`UnsafeCheckpointError`; every object built may nest at most
    ``max_depth`` containers deep, else :class:`CheckpointError`. The depth bound matters because
    CPython hashes nested tuples recursively in C, without a recursion check: a pickle of a few
    hundred KB that uses a tuple nested a million deep as a dict key crashes the interpreter.
    """
    stack: list[tuple[int, object]] = []  # (nesting depth, the string when it is a known constant)
    marks: list[int] = []
    memo: dict[int, tuple[int, object]] = {}
    end = 0

    def refuse(qualname: str, written: str):
        also = f" (written {written})" if written != qualname else ""
        raise UnsafeCheckpointError(
            f"{source}: refusing to load: the checkpoint imports {qualname}{also}, which is not an allowed "
            f"global of {kind} (nothing in the file was run)"
        )

    def check_global(module: str, name: str):
        qualname = python3_name(module, name)
        if qualname not in allowed:
            refuse(qualname, f"{module}.{name}")

    try:
        for op, arg, pos in pickletools.genops(data):
            name = op.name
            end = pos + 1
            if name in _REFUSED_OPS:
                raise CheckpointError(f"{source}: malformed pickle: opcode {name} is not used by torch.save")
            if name == "MARK":
                marks.append(len(stack))
                continue
            if name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                if not stack:
                    raise ValueError(f"{name} on an empty stack")
                memo[len(memo) if name == "MEMOIZE" else int(arg)] = stack[-1]
                continue
            if name in ("GET", "BINGET", "LONG_BINGET"):
                if int(arg) not in memo:
                    raise ValueError(f"memo entry {arg} read before it was written")
                stack.append(memo[int(arg)])
                continue
            if name == "DUP":
                stack.append(stack[-1])
                continue
            if name == "POP" and (not stack or (marks and marks[-1] == len(stack))):
                marks.pop()
                continue
            if name in ("GLOBAL", "INST"):
                module, _, qual = str(arg).partition(" ")
                check_global(module, qual)
            elif name == "STACK_GLOBAL":
                if len(stack) < 2 or not isinstance(stack[-2][1], str) or not isinstance(stack[-1][1], str):
                    raise UnsafeCheckpointError(
                        f"{source}: refusing to load: the pickle imports a global whose name it computes "
                        f"(nothing in the file was run)"
                    )
                check_global(stack[-2][1], stack[-1][1])
            popped: list[tuple[int, object]] = []
            before = op.stack_before
            if pickletools.markobject in before:
                if not marks:
                    raise ValueError(f"{name} without a MARK")
                at = marks.pop()
                popped = stack[at:]
                del stack[at:]
                below = before.index(pickletools.markobject)
            else:
                below = len(before)
            if below:
                if len(stack) < below:
                    raise ValueError(f"{name} on a stack of {len(stack)}")
                popped = stack[len(stack) - below:] + popped
                del stack[len(stack) - below:]
            if not op.stack_after:
                continue
            if name in _UPDATE_OPS:
                depth = max([popped[0][0]] + [d + 1 for d, _ in popped[1:]])
            elif popped:
                depth = 1 + max(d for d, _ in popped)
            else:
                depth = 0
            if depth > max_depth:
                raise CheckpointError(f"{source}: objects in the pickle are nested deeper than {max_depth} levels")
            value = arg if name in _STRING_OPS and isinstance(arg, str) else None
            stack.extend([(depth, value)] * len(op.stack_after))
    except CheckpointError:
        raise
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{source}: malformed pickle ({one_line(exc)})") from None
    return end


def _zip_directory_size(fh, size: int) -> tuple[int, int]:
    """``(entries, bytes)`` of a zip's central directory, from its end record (zip64 included)."""
    tail_len = min(size, 22 + 65535 + 20)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        raise zipfile.BadZipFile("no end of central directory record")
    entries, cd_size = struct.unpack("<HI", tail[at + 10: at + 16])
    if (entries == 0xFFFF or cd_size == 0xFFFFFFFF) and at >= 20 and tail[at - 20: at - 16] == b"PK\x06\x07":
        (offset,) = struct.unpack("<Q", tail[at - 12: at - 4])
        fh.seek(offset)
        record = fh.read(56)
        if len(record) < 56 or record[:4] != b"PK\x06\x06":
            raise zipfile.BadZipFile("bad zip64 end of central directory record")
        entries, cd_size = struct.unpack("<QQ", record[32:48])
    return entries, cd_size


def open_torch_zip(path: Path, max_pickle_bytes: int) -> tuple[zipfile.ZipFile, str]:
    """Open a torch zip checkpoint after checking its structure; returns ``(zip, prefix)`` (the caller
    closes the zip). ``<prefix>data.pkl`` is the pickle, ``<prefix>data/<key>`` the storages.

    Checked before any member is read: a directory of sane size, no name twice, every member stored
    uncompressed (``torch.save`` never compresses; a compressed member is how a small file declares
    gigabytes), every member inside the archive and all of them together no larger than the archive
    (no overlapping members), and ``data.pkl`` at most ``max_pickle_bytes``. So no read of a member can
    produce more bytes than the file holds."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            entries, cd_size = _zip_directory_size(fh, size)
        if cd_size > MAX_ZIP_DIRECTORY_BYTES or entries > MAX_ZIP_DIRECTORY_BYTES // 46:
            raise CheckpointError(f"{path}: zip directory of {entries} entries and {cd_size} bytes is too large "
                                  f"for a checkpoint")
        zf = zipfile.ZipFile(path)
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, struct.error, EOFError) as exc:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({one_line(exc)})") from None
    try:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise CheckpointError(f"{path}: the zip holds a member name twice")
        pkl = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise CheckpointError(f"{path}: not a torch zip checkpoint (no single <archive>/data.pkl in it)")
        total = 0
        for info in infos:
            if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
                raise CheckpointError(
                    f"{path}: member {info.filename} is stored compressed ({info.compress_size} bytes for "
                    f"{info.file_size}); torch.save never compresses, so this is not a torch checkpoint"
                )
            if info.header_offset + info.file_size > size:
                raise CheckpointError(f"{path}: member {info.filename} declares {info.file_size} bytes, beyond "
                                      f"the end of the {size}-byte file")
            total += info.file_size
        if total > size:
            raise CheckpointError(f"{path}: its members declare {total} bytes in a {size}-byte file "
                                  f"(overlapping members)")
        pkl_size = zf.getinfo(pkl[0]).file_size
        if pkl_size > max_pickle_bytes:
            raise CheckpointError(f"{path}: data.pkl is {pkl_size} bytes, more than the {max_pickle_bytes} "
                                  f"a checkpoint of this kind needs")
    except BaseException:
        zf.close()
        raise
    return zf, pkl[0][: -len("data.pkl")]


# -- the restricted unpickler ------------------------------------------------------------------------


class PickledObject:
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
    return type(f"PickledStandIn[{qualname}]", (PickledObject,), {"qualname": qualname})


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
        raise pickle.UnpicklingError(f"bad tensor {what}: {short(value)}")
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
        raise pickle.UnpicklingError(f"set() of {short(items)}: only a short list of names is allowed")
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
        qualname = python3_name(module, name)
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
            raise pickle.UnpicklingError(f"unexpected persistent id {short(pid)}")
        typename, storage_type, key, location, numel = pid
        if isinstance(typename, bytes):
            typename = typename.decode("ascii", "replace")
        if (typename != "storage" or not isinstance(storage_type, _StorageType) or not isinstance(key, str)
                or not re.fullmatch(r"[A-Za-z0-9_]{1,64}", key) or type(numel) is not int or numel < 0):
            raise pickle.UnpicklingError(f"unexpected persistent id {short(pid)}")
        if key not in self._storages:  # each storage is read once, however many tensors use it
            self._storages[key] = self._load_storage(storage_type, key, numel)
        storage = self._storages[key]
        if storage.dtype != storage_type.torch_dtype:
            raise pickle.UnpicklingError(f"storage {key} used with two dtypes")
        return storage


def read_torch_zip(path: Path) -> Any:
    """Unpickle ``data.pkl`` of a torch zip checkpoint with :class:`_RestrictedUnpickler`: what the pickle
    held, with every allowlisted module class as a :class:`PickledObject` stand-in.

    Memory: each storage is read once, in 1-MiB pieces, into a tensor of its own size (the members'
    sizes are checked against the archive first), and copies out of storages are limited to twice the
    storages' bytes; so a load takes at most ~3x the file's tensor bytes, plus a pickle of 1 MiB."""
    zf, prefix = open_torch_zip(path, _MAX_PICKLE_BYTES)
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
            raise CheckpointError(f"{path}: not a readable torch checkpoint ({one_line(exc)})") from None
        scan_pickle(data, path, ALLOWED_GLOBALS, "a classifier checkpoint")
        try:
            return _RestrictedUnpickler(data, path, load_storage, budget).load()
        except CheckpointError:
            raise
        except (Exception, RecursionError, MemoryError) as exc:  # malformed pickle, truncated member, bad CRC, ...
            raise CheckpointError(f"{path}: malformed torch checkpoint ({one_line(exc)})") from None


def module_state_dict(obj: PickledObject, path: Path, prefix: str = "", depth: int = 0) -> dict[str, torch.Tensor]:
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
        if not isinstance(sub, PickledObject):
            raise CheckpointError(f"{path}: submodule {prefix}{name} is not a module")
        out.update(module_state_dict(sub, path, f"{prefix}{name}.", depth + 1))
    return out

