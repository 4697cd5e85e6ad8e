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
wrong raises :class:`~virnucpro_kernel.errors.CheckpointError` with one line naming the file.
"""

from __future__ import annotations

import _compat_pickle
import json
import math
import os
import pickle
import pickletools
import struct
import zipfile
from pathlib import Path
from typing import Iterable, Mapping

import torch

from ..errors import CheckpointError, UnsafeCheckpointError

__all__ = [
    "resolve_checkpoint", "read_config", "weights_files", "read_state_dict", "select_weights", "to_device",
    "check_values", "check_layer_count", "config_int", "config_float", "scan_pickle", "open_torch_zip", "LazyTensor",
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
MAX_PICKLE_DEPTH = 64  # containers inside containers; a state dict or a pickled module needs ~12
MAX_ZIP_DIRECTORY_BYTES = 16 << 20  # a torch zip has ~100 bytes of directory a tensor
MAX_ABS_VALUE = 1e6  # |weight|: real ones stay below ~100 (the published classifier's largest is 1.94)
#: Tensors of a pickled weights file may share storage (tied weights), but all of them together may not
#: view more than this many times the file's own bytes (each would be copied when converted).
MAX_VIEW_FACTOR = 2


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:300]


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
        raise CheckpointError(f"{source}: field '{key}' is {_short(value)}, not an integer")
    if not lo <= value <= hi:
        raise CheckpointError(f"{source}: field '{key}' is {value}, outside the supported range [{lo}, {hi}]")
    return value


def config_float(config: Mapping, key: str, lo: float, hi: float, source, default=_MISSING) -> float:
    """``config[key]`` as a finite float with ``lo < value < hi``."""
    value = config.get(key, default)
    if value is _MISSING:
        raise CheckpointError(f"{source}: missing field '{key}'")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CheckpointError(f"{source}: field '{key}' is {_short(value)}, not a number")
    value = float(value)
    if not (math.isfinite(value) and lo < value < hi):
        raise CheckpointError(f"{source}: field '{key}' is {value!r}, not a finite number in ({lo:g}, {hi:g})")
    return value


def _short(value) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001  (RecursionError on a deeply nested value, ...)
        text = f"a {type(value).__name__}"
    return " ".join(text.split())[:60]


def _read_json(path: Path, limit: int, what: str):
    try:
        size = path.stat().st_size
        if size > limit:
            raise CheckpointError(f"{path}: {size} bytes, more than the {limit} bytes a {what} may take")
        return json.loads(path.read_bytes())
    except CheckpointError:
        raise
    except (OSError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: not a readable {what} ({_one_line(exc)})") from None


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
            raise CheckpointError(f"{first}: not a readable shard index (no weight_map: {_one_line(exc)})") from None
        for shard in shards:  # plain file names beside the index: never a path elsewhere
            if not isinstance(shard, str) or not shard or "/" in shard or "\\" in shard or shard.startswith("."):
                raise CheckpointError(f"{first}: shard name {_short(shard)} is not a file name in the same folder")
        missing = [s for s in shards if not (first.parent / s).is_file()]
        if missing:
            raise CheckpointError(f"{first}: shard file {missing[0]} is missing")
        return [first.parent / s for s in shards]
    return [first]


# -- pickles -----------------------------------------------------------------------------------------


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
        raise CheckpointError(f"{source}: malformed pickle ({_one_line(exc)})") from None
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
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({_one_line(exc)})") from None
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
            raise CheckpointError(f"{file}: not a readable safetensors file ({_one_line(exc)})") from None
    kind = "an encoder weights file"
    try:
        with open(file, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise CheckpointError(f"{file}: cannot read ({_one_line(exc)})") from None
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
                raise CheckpointError(f"{file}: not a readable PyTorch checkpoint ({_one_line(exc)})") from None
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
                              f"{_one_line(exc)})") from None
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
        raise CheckpointError(f"{what}: cannot be read ({_one_line(exc)})") from None
    if not isinstance(tensor, torch.Tensor):
        raise CheckpointError(f"{what}: expected a tensor, found {type(tensor).__name__}")
    if dtype is not None and tensor.is_floating_point():
        tensor = tensor.to(dtype)
    tensor = tensor.to(device)
    check_values(tensor, what)
    return tensor


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
