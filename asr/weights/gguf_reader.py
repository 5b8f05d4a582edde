"""A strict, memory-mapped GGUF v2/v3 reader.

Every length and count in the header is checked against the bytes left in the file before
anything is allocated or looped over, so a corrupt or hostile file ends in a one-line
:class:`~asr.errors.WeightsError` naming the file and the key or tensor, never in a huge
allocation, a hang or a crash. Tensor data is never read here: :meth:`GGUFFile.tensor` returns
zero-copy views of the mapping (a plain tensor for F32/F16/BF16, a QuantizedTensor otherwise).

Layout (little-endian): magic "GGUF", u32 version, u64 tensor count, u64 metadata count, the
metadata (key string, u32 value type, value), the tensor infos (name, u32 n_dims, u64 ne[n_dims]
innermost first, u32 ggml type, u64 offset from the data start), padding to ``general.alignment``
(default 32), then the tensor data.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from asr.errors import UnsupportedFormat, WeightsError
from asr.quant.tensor import QuantizedTensor
from asr.quant.types import QUANT_TYPES, ggml_type_name, quant_type

GGUF_MAGIC = b"GGUF"
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_KEY_BYTES = 65535  # the GGUF spec's limit on key length
MAX_ARRAY_DEPTH = 2  # arrays of arrays are legal; deeper nesting is only ever corruption
# Element caps far above real files (131 072 tokens, some 10^5..10^6 merges) that keep a corrupt
# count from turning into minutes of parsing or gigabytes of Python objects.
MAX_STRING_ARRAY = 1 << 22
MAX_NUMBER_ARRAY = 1 << 26
DEFAULT_ALIGNMENT = 32

# Metadata value types: id -> (name, struct format of a scalar or None, size in bytes).
_SCALARS = {0: ("uint8", "<B", 1), 1: ("int8", "<b", 1), 2: ("uint16", "<H", 2), 3: ("int16", "<h", 2),
            4: ("uint32", "<I", 4), 5: ("int32", "<i", 4), 6: ("float32", "<f", 4), 7: ("bool", "<?", 1),
            10: ("uint64", "<Q", 8), 11: ("int64", "<q", 8), 12: ("float64", "<d", 8)}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 10: "<u8", 11: "<i8",
          12: "<f8"}
_STRING, _ARRAY = 8, 9
_MIN_VALUE_BYTES = {**{k: v[2] for k, v in _SCALARS.items()}, _STRING: 8, _ARRAY: 12}


@dataclass(frozen=True)
class GGUFTensorInfo:
    name: str
    shape: tuple[int, ...]  # torch order (ggml ``ne`` reversed): (out, in) for a matrix
    ggml_type: int
    offset: int  # absolute byte offset in the file
    nbytes: int


class _Cursor:
    """Bounds-checked little-endian reads from the mapped header."""

    def __init__(self, buf: memoryview, path: str) -> None:
        self.buf, self.pos, self.path = buf, 0, path

    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def need(self, n: int, what: str) -> None:
        if n > self.remaining():
            raise WeightsError(f"GGUF file {self.path} is truncated or corrupt: {what} needs {n} bytes at "
                               f"offset {self.pos} but only {self.remaining()} remain; download the "
                               "file again")

    def unpack(self, fmt: str, size: int, what: str) -> int | float | bool:
        self.need(size, what)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def u32(self, what: str) -> int:
        return int(self.unpack("<I", 4, what))

    def u64(self, what: str) -> int:
        return int(self.unpack("<Q", 8, what))

    def string(self, what: str, limit: int | None = None) -> str:
        length = self.u64(f"the length of {what}")
        if limit is not None and length > limit:
            raise WeightsError(f"GGUF file {self.path} is corrupt: {what} claims {length} bytes "
                               f"(limit {limit}); download the file again")
        self.need(length, what)
        raw = bytes(self.buf[self.pos : self.pos + length])
        self.pos += length
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise WeightsError(f"GGUF file {self.path} is corrupt: {what} is not valid UTF-8 "
                               f"({error.reason} at byte {error.start})") from None


class GGUFFile:
    """A parsed GGUF header plus the memory map its tensors view. Keep it alive while they are used."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        name = str(self.path)
        try:
            with open(self.path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size < 24:
                    raise WeightsError(f"GGUF file {name} is truncated ({size} bytes; a GGUF header alone "
                                       "is 24); download the file again")
                # ACCESS_COPY: private copy-on-write pages, so tensors are writable views (torch
                # warns about read-only buffers) and nothing can ever write back to the file.
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
        except OSError as error:
            raise WeightsError(f"cannot read GGUF file {name}: {error.strerror or error}") from None
        self.file_size = size
        cursor = _Cursor(memoryview(self._map), name)
        try:
            self._parse(cursor)
        finally:
            cursor.buf.release()

    # -- parsing -----------------------------------------------------------------------------

    def _parse(self, cur: _Cursor) -> None:
        name = str(self.path)
        magic = bytes(cur.buf[0:4])
        if magic != GGUF_MAGIC:
            raise UnsupportedFormat(f"{name} is not a GGUF file (magic {magic!r}, expected b'GGUF')")
        cur.pos = 4
        self.version = cur.u32("the version")
        if self.version not in (2, 3):
            hint = " (big-endian GGUF is not supported)" if self.version > 0xFFFF else ""
            raise UnsupportedFormat(f"GGUF file {name} has version {self.version}{hint}; voxcap reads "
                                    "versions 2 and 3: re-convert it with a current gguf writer")
        n_tensors = cur.u64("the tensor count")
        n_kv = cur.u64("the metadata count")
        # Each metadata entry takes >= 13 bytes and each tensor info >= 24, so larger counts are lies.
        if n_kv * 13 > cur.remaining():
            raise WeightsError(f"GGUF file {name} is corrupt: it claims {n_kv} metadata entries, more than "
                               f"its {self.file_size} bytes can hold; download the file again")
        if n_tensors * 24 > cur.remaining():
            raise WeightsError(f"GGUF file {name} is corrupt: it claims {n_tensors} tensors, more than its "
                               f"{self.file_size} bytes can hold; download the file again")
        self.metadata: dict[str, object] = {}
        self.metadata_types: dict[str, int] = {}
        for index in range(n_kv):
            key = cur.string(f"metadata key #{index}", MAX_KEY_BYTES)
            if key in self.metadata:
                raise WeightsError(f"GGUF file {name} is corrupt: metadata key {key} appears twice")
            value_type = cur.u32(f"the type of metadata key {key}")
            self.metadata[key] = self._value(cur, value_type, key, depth=0)
            self.metadata_types[key] = value_type
        self.alignment = self._alignment()
        infos = [self._tensor_info(cur, i) for i in range(n_tensors)]
        self.data_offset = -(-cur.pos // self.alignment) * self.alignment
        self.tensors: dict[str, GGUFTensorInfo] = {}
        for info in infos:
            if info.name in self.tensors:
                raise WeightsError(f"GGUF file {name} is corrupt: tensor {info.name} appears twice")
            self._check_placement(info)
            absolute = GGUFTensorInfo(info.name, info.shape, info.ggml_type, self.data_offset + info.offset,
                                      info.nbytes)
            self.tensors[info.name] = absolute
        self._check_overlaps()

    def _value(self, cur: _Cursor, value_type: int, key: str, depth: int) -> object:
        if value_type in _SCALARS:
            _, fmt, size = _SCALARS[value_type]
            value = cur.unpack(fmt, size, f"the value of metadata key {key}")
            if value_type == 6:
                # the shortest decimal that rounds to this float32 (1e-05, not 9.99999974e-06):
                # what the writer meant, and exactly the same float32 again when cast back
                return float(str(np.float32(value)))
            return bool(value) if value_type == 7 else value
        if value_type == _STRING:
            return cur.string(f"the value of metadata key {key}")
        if value_type == _ARRAY:
            if depth >= MAX_ARRAY_DEPTH:
                raise WeightsError(f"GGUF file {self.path} is corrupt: metadata key {key} nests arrays "
                                   f"more than {MAX_ARRAY_DEPTH} deep")
            elem_type = cur.u32(f"the element type of metadata array {key}")
            count = cur.u64(f"the length of metadata array {key}")
            if elem_type not in _MIN_VALUE_BYTES:
                raise WeightsError(f"GGUF file {self.path} is corrupt: metadata array {key} has unknown "
                                   f"element type {elem_type}")
            cap = MAX_NUMBER_ARRAY if elem_type in _NUMPY or elem_type == 7 else MAX_STRING_ARRAY
            if count > cap:
                raise WeightsError(f"GGUF file {self.path} is corrupt: metadata array {key} claims {count} "
                                   f"elements (limit {cap}); download the file again")
            if count * _MIN_VALUE_BYTES[elem_type] > cur.remaining():
                raise WeightsError(f"GGUF file {self.path} is truncated or corrupt: metadata array {key} "
                                   f"claims {count} elements, more than the file holds; download it again")
            if elem_type in _NUMPY:  # a numpy copy: compact, and it does not pin the mapping
                size = _SCALARS[elem_type][2] * count
                numbers = np.frombuffer(cur.buf, dtype=_NUMPY[elem_type], count=count, offset=cur.pos).copy()
                cur.pos += size
                return numbers
            if elem_type == 7:
                values = [bool(b) for b in bytes(cur.buf[cur.pos : cur.pos + count])]
                cur.pos += count
                return values
            return [self._value(cur, elem_type, f"{key}[{i}]", depth + 1) for i in range(count)]
        raise WeightsError(f"GGUF file {self.path} is corrupt: metadata key {key} has unknown value type "
                           f"{value_type}; download the file again")

    def _alignment(self) -> int:
        value = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0 or value & (value - 1) \
                or value > 1 << 20:
            raise WeightsError(f"GGUF file {self.path} is corrupt: general.alignment is {value!r}, not a "
                               "power of two up to 1 MiB")
        return value

    def _tensor_info(self, cur: _Cursor, index: int) -> GGUFTensorInfo:
        name = cur.string(f"the name of tensor #{index}", MAX_KEY_BYTES)
        n_dims = cur.u32(f"the dimension count of tensor {name}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise WeightsError(f"GGUF file {self.path} is corrupt: tensor {name} has {n_dims} dimensions "
                               f"(1..{MAX_DIMS} allowed)")
        ne = [cur.u64(f"dimension {d} of tensor {name}") for d in range(n_dims)]
        ggml_type = cur.u32(f"the type of tensor {name}")
        offset = cur.u64(f"the data offset of tensor {name}")
        if any(n == 0 for n in ne) or math.prod(ne) > self.file_size * 8:
            raise WeightsError(f"GGUF file {self.path} is corrupt: tensor {name} has impossible dimensions "
                               f"{ne}")
        qtype = QUANT_TYPES.get(ggml_type)
        if qtype is None:
            # Unknown to voxcap: the size cannot be checked, and the tensor could not be used anyway.
            quant_type(ggml_type, tensor=name, file=str(self.path))
            raise AssertionError("unreachable")
        row = qtype.row_bytes(ne[0], tensor=name, file=str(self.path))
        nbytes = row * math.prod(ne[1:])
        return GGUFTensorInfo(name, tuple(reversed(ne)), ggml_type, offset, nbytes)

    def _check_placement(self, info: GGUFTensorInfo) -> None:
        if info.offset % self.alignment:
            raise WeightsError(f"GGUF file {self.path} is corrupt: tensor {info.name} data offset "
                               f"{info.offset} is not a multiple of the alignment {self.alignment}")
        end = self.data_offset + info.offset + info.nbytes
        if end > self.file_size:
            raise WeightsError(f"GGUF file {self.path} is truncated or corrupt: tensor {info.name} "
                               f"({info.nbytes} bytes at data offset {info.offset}) ends at byte {end}, "
                               f"past the end of the file ({self.file_size} bytes); download it again")

    def _check_overlaps(self) -> None:
        previous: GGUFTensorInfo | None = None
        for info in sorted(self.tensors.values(), key=lambda t: t.offset):
            if previous is not None and info.offset < previous.offset + previous.nbytes:
                raise WeightsError(f"GGUF file {self.path} is corrupt: the data of tensors {previous.name} "
                                   f"and {info.name} overlap")
            previous = info

    # -- access ------------------------------------------------------------------------------

    def type_name(self, tensor: str) -> str:
        return ggml_type_name(self.tensors[tensor].ggml_type)

    def tensor(self, name: str) -> torch.Tensor | QuantizedTensor:
        """A zero-copy view of tensor ``name``: plain tensor for float types, else a QuantizedTensor."""
        info = self.tensors[name]
        qtype = quant_type(info.ggml_type, tensor=name, file=str(self.path))
        raw = torch.frombuffer(self._map, dtype=torch.uint8, count=info.nbytes, offset=info.offset)
        if qtype.is_float:
            assert qtype.torch_dtype is not None
            # offsets are multiples of the (>= 32-byte) alignment, so the view is element-aligned
            return raw.view(qtype.torch_dtype).reshape(info.shape)
        rows = math.prod(info.shape[:-1])
        return QuantizedTensor(raw.reshape(rows, info.nbytes // rows), qtype, info.shape)

    def get(self, key: str, default: object = None) -> object:
        return self.metadata.get(key, default)


def is_gguf(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a regular file starting with the GGUF magic."""
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == GGUF_MAGIC
    except OSError:
        return False
