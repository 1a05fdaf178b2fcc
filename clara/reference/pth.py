"""A restricted reader for PyTorch `.pth` files (the zip format of `torch.save`).

Nothing pickled is executed: the unpickler resolves only tensor-rebuilding functions (which
it implements itself), storage types and plain containers, and refuses any other global with
an error naming it. Tensors come back as `mx.array` (bfloat16 stays bfloat16); torch is not
needed.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from clara.errors import CheckpointError

# torch storage class name -> (numpy dtype of the raw elements, mlx dtype to view them as)
_STORAGES = {
    "FloatStorage": (np.float32, None),
    "DoubleStorage": (np.float64, None),
    "HalfStorage": (np.float16, None),
    "BFloat16Storage": (np.uint16, mx.bfloat16),
    "LongStorage": (np.int64, None),
    "IntStorage": (np.int32, None),
    "ShortStorage": (np.int16, None),
    "CharStorage": (np.int8, None),
    "ByteStorage": (np.uint8, None),
    "BoolStorage": (np.bool_, None),
}


class _Sealed:
    """What the unpickler hands out for a global: no `__dict__` and no attribute assignment,
    so a pickle's BUILD opcode cannot change objects that every later load shares."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise CheckpointError("malformed .pth: it sets attributes on a torch global")

    def __delattr__(self, name: str) -> None:
        raise CheckpointError("malformed .pth: it deletes attributes of a torch global")


class _StorageType(_Sealed):
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "name", name)


class _TensorType(_Sealed):
    __slots__ = ("name",)  # "Tensor" or "Parameter": both load as plain arrays

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "name", name)


class _Rebuild(_Sealed):
    __slots__ = ("fn",)

    def __init__(self, fn: Any) -> None:
        object.__setattr__(self, "fn", fn)

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)


class _Storage(_Sealed):
    """One storage's elements: sealed too, as the pickle holds it (BUILD could swap `data`)."""

    __slots__ = ("view", "data")

    def __init__(self, view: Any, data: np.ndarray) -> None:
        object.__setattr__(self, "view", view)  # mx dtype to reinterpret as (bfloat16), or None
        object.__setattr__(self, "data", data)  # (numel,) raw elements


def _rebuild_tensor(storage: _Storage, offset: int, size, stride, *_ignored) -> mx.array:
    if not isinstance(storage, _Storage):
        raise CheckpointError("malformed .pth: a tensor without a storage")
    if not isinstance(offset, int) or not isinstance(size, tuple) or not isinstance(stride, tuple):
        raise CheckpointError("malformed .pth: a tensor's offset, size or stride is not integers")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    # as_strided reads wherever the strides point: negative strides or a view larger than its
    # storage (which torch never writes for a state dict) would read outside it or exhaust memory
    if len(size) != len(stride) or min(size + stride, default=0) < 0:
        raise CheckpointError("malformed .pth: a tensor with negative or mismatched size/stride")
    count = math.prod(size)
    span = 1 + sum((n - 1) * s for n, s in zip(size, stride)) if count else 0
    if offset < 0 or offset + span > storage.data.size or count > storage.data.size:
        raise CheckpointError("malformed .pth: a tensor reaches past its storage")
    item = storage.data.itemsize
    arr = np.lib.stride_tricks.as_strided(
        storage.data[offset:], shape=size, strides=[s * item for s in stride], writeable=False
    )
    out = mx.array(np.ascontiguousarray(arr))
    return out.view(storage.view) if storage.view is not None else out


def _rebuild_parameter(data: mx.array, *_ignored) -> mx.array:
    return data


def _rebuild_from_type(func, new_type, args, state) -> mx.array:
    if func is not _REBUILD_TENSOR or not isinstance(new_type, _TensorType):
        raise CheckpointError("malformed .pth: unsupported tensor subclass")
    return func(*args)


_REBUILD_TENSOR = _Rebuild(_rebuild_tensor)
_GLOBALS = {
    ("collections", "OrderedDict"): OrderedDict,  # a built-in type: BUILD cannot change it
    ("torch._utils", "_rebuild_tensor_v2"): _REBUILD_TENSOR,
    ("torch._utils", "_rebuild_parameter"): _Rebuild(_rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"): _Rebuild(_rebuild_parameter),
    ("torch._tensor", "_rebuild_from_type_v2"): _Rebuild(_rebuild_from_type),
    ("torch", "Tensor"): _TensorType("Tensor"),
    ("torch.nn.parameter", "Parameter"): _TensorType("Parameter"),
    **{("torch", name): _StorageType(name) for name in _STORAGES},
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, path: Path) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.path = archive, prefix, path
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        found = _GLOBALS.get((module, name))
        if found is None:
            raise CheckpointError(
                f"{self.path} holds a pickled {module}.{name}; only tensors and plain "
                "containers are read (nothing pickled is executed)"
            )
        return found

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self.path}: unsupported persistent object {pid!r:.80}")
        _, kind, key, _location, numel = pid
        if not isinstance(kind, _StorageType):
            raise CheckpointError(f"{self.path}: unsupported storage type {kind!r:.80}")
        if not isinstance(key, str) or not isinstance(numel, int):
            raise CheckpointError(f"{self.path}: malformed storage reference {pid!r:.80}")
        if key not in self.storages:
            np_dtype, view = _STORAGES[kind.name]
            try:
                raw = self.archive.read(f"{self.prefix}data/{key}")
            except KeyError as exc:
                raise CheckpointError(f"{self.path}: storage {key} is missing") from exc
            data = np.frombuffer(raw, dtype=np_dtype)
            if data.size < int(numel):
                raise CheckpointError(f"{self.path}: storage {key} is truncated")
            self.storages[key] = _Storage(view, data)
        return self.storages[key]


def load_pth(path: str | os.PathLike) -> Any:
    """The object `torch.save` wrote to `path`, with every tensor as an `mx.array`."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is not a zip-format .pth (torch >= 1.6 `torch.save`); the legacy format "
            "is not supported: re-save it with a recent torch"
        )
    with zipfile.ZipFile(path) as archive:
        pkls = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(pkls) != 1:
            raise CheckpointError(f"{path}: expected one data.pkl in the archive, found {pkls}")
        prefix = pkls[0][: -len("data.pkl")]
        order = f"{prefix}byteorder"
        if order in archive.namelist() and archive.read(order).strip() != b"little":
            raise CheckpointError(f"{path}: big-endian tensors are not supported")
        try:
            return _Unpickler(archive.read(pkls[0]), archive, prefix, path).load()
        except CheckpointError:
            raise
        except (
            pickle.UnpicklingError,
            EOFError,
            TypeError,
            ValueError,
            KeyError,
            AttributeError,
            OverflowError,
        ) as exc:
            raise CheckpointError(f"{path}: not a readable .pth ({exc})") from exc
