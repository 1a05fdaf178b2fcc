"""The restricted `.pth` reader against crafted pickles: nothing executes, nothing outside a
tensor's storage is read, and one malicious file cannot change how later files load.

The pickles are written opcode by opcode (no torch needed), in the layout `torch.save` uses:
`archive/data.pkl` plus one file per storage under `archive/data/`.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from clara.errors import CheckpointError
from clara.reference.pth import load_pth


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"  # GLOBAL


def _str(s: str) -> bytes:
    return b"X" + struct.pack("<I", len(s.encode())) + s.encode()  # BINUNICODE


def _int(i: int) -> bytes:
    return b"J" + struct.pack("<i", i)  # BININT


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"  # MARK ... TUPLE


def _storage(kind: str = "FloatStorage", key: str = "0", numel: int = 4) -> bytes:
    # persistent id ("storage", torch.<kind>, key, location, numel), then BINPERSID
    return (
        _tuple(_str("storage"), _global("torch", kind), _str(key), _str("cpu"), _int(numel)) + b"Q"
    )


def _tensor(size: tuple[int, ...], stride: tuple[int, ...], offset: int = 0) -> bytes:
    # torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)
    args = _tuple(
        _storage(),
        _int(offset),
        _tuple(*map(_int, size)),
        _tuple(*map(_int, stride)),
        b"\x89",  # NEWFALSE
        _global("collections", "OrderedDict") + b")R",  # OrderedDict()
    )
    return _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"  # REDUCE


def _write(path: Path, body: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02" + body + b".")
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/data/0", np.arange(4, dtype=np.float32).tobytes())
    return path


def test_hand_written_tensor_reads(tmp_path: Path) -> None:
    got = load_pth(_write(tmp_path / "ok.pth", _tensor((2, 2), (1, 2))))
    np.testing.assert_array_equal(np.array(got), [[0.0, 2.0], [1.0, 3.0]])


@pytest.mark.parametrize(
    "size, stride, offset",
    [
        ((2,), (-1000,), 0),  # a negative stride would read memory before the storage
        ((2,), (-1,), 1),
        ((1 << 30, 1 << 4), (0, 0), 0),  # a stride-0 view would allocate 64 GiB
        ((5,), (1,), 0),  # past the end
        ((2,), (1,), -1),
        ((2, 2), (1,), 0),  # size and stride of different ranks
    ],
)
def test_tensor_outside_its_storage_is_refused(tmp_path: Path, size, stride, offset) -> None:
    path = _write(tmp_path / "bad.pth", _tensor(size, stride, offset))
    with pytest.raises(CheckpointError, match="malformed .pth"):
        load_pth(path)


def test_build_cannot_change_globals_shared_by_later_loads(tmp_path: Path) -> None:
    # BUILD with a __dict__ state, then with a slot state, on torch.FloatStorage: were the
    # reader's global changed, the next (honest) file would be read as float16
    as_dict = _global("torch", "FloatStorage") + b"}" + _str("name") + _str("HalfStorage") + b"sb"
    as_slots = _global("torch", "FloatStorage") + b"N}" + _str("name") + _str("HalfStorage")
    as_slots += b"s\x86b"  # (None, {...}) TUPLE2, BUILD
    for i, body in enumerate([as_dict, as_slots]):
        with pytest.raises(CheckpointError):
            load_pth(_write(tmp_path / f"evil{i}.pth", body))
    got = load_pth(_write(tmp_path / "ok.pth", _tensor((4,), (1,))))
    np.testing.assert_array_equal(np.array(got), [0.0, 1.0, 2.0, 3.0])


def test_build_cannot_swap_a_storage(tmp_path: Path) -> None:
    # BUILD on the storage a tensor is about to read (its `data` and its dtype view)
    for state in (b"}" + _str("data") + b"N" + b"sb", b"N}" + _str("view") + b"Ns\x86b"):
        with pytest.raises(CheckpointError):
            load_pth(_write(tmp_path / "evil.pth", _storage() + state))


@pytest.mark.parametrize(
    "body",
    [
        _global("os", "system") + _tuple(_str("touch pwned")) + b"R",  # GLOBAL + REDUCE
        b"(" + _str("touch pwned") + b"ios\nsystem\n",  # INST
        b"(" + _global("subprocess", "Popen") + _str("true") + b"o",  # OBJ
        _global("builtins", "eval") + _tuple(_str("1")) + b"R",
        _global("torch", "load") + _tuple(_str("/etc/passwd")) + b"R",
        _str("posix") + _str("system") + b"\x93",  # STACK_GLOBAL
        _global("torch._utils", "_rebuild_tensor_v2.__globals__"),  # dotted attribute path
    ],
)
def test_globals_outside_the_allow_list_are_refused(tmp_path: Path, body: bytes) -> None:
    with pytest.raises(CheckpointError, match="holds a pickled"):
        load_pth(_write(tmp_path / "evil.pth", body))
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


@pytest.mark.parametrize(
    "body",
    [
        _str("not a storage id") + b"Q",  # persistent id of the wrong shape
        _tuple(
            _str("storage"), _global("collections", "OrderedDict"), _str("0"), _str("cpu"), _int(4)
        )
        + b"Q",  # a class where the storage type belongs
        _storage(key="../../../etc/passwd"),  # a storage the archive does not hold
        _storage(numel=1 << 20),  # more elements than stored
        _global("collections", "OrderedDict") + b"(" + _global("os", "getcwd") + b"tR",
        _global("collections", "OrderedDict") + b"N)\x81",  # NEWOBJ with a non-type
    ],
)
def test_malformed_structure_gives_a_checkpoint_error(tmp_path: Path, body: bytes) -> None:
    with pytest.raises(CheckpointError):
        load_pth(_write(tmp_path / "bad.pth", body))
